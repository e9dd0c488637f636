"""The README's tour stays true: its Python snippets run, in order, and its command lines parse."""
import re
import shlex
from pathlib import Path

import pytest
import torch

from graphattn.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def command_lines() -> list[list[str]]:
    """Every ``graphattn ...`` (or ``-m graphattn.cli ...``) command of the bash blocks, as argv."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if word in ("graphattn", "graphattn.cli"):
                    out.append(words[start + 1:])
                    break
    return out


def test_python_snippets_run_in_order():
    snippets = blocks("python")
    assert len(snippets) >= 5
    namespace: dict = {}
    torch.manual_seed(0)
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 -- running the README is the test
    # the shapes the comments promise
    assert namespace["x_flat"].shape == (12, 32)
    assert namespace["tokens"].shape == (10,)
    assert namespace["out"].shape == (60, 8)  # 4 trees of 15 nodes
    assert namespace["logits"].shape == (2000, 10)


@pytest.mark.parametrize("argv", command_lines(), ids=lambda argv: " ".join(argv[:2]))
def test_command_lines_parse(argv):
    args = build_parser().parse_args(argv)
    assert args.func is not None

"""The package's architecture, checked from its source with ``ast``.

* Imports run one way: a module imports only from its own package or from layers below it
  (``RANKS``), never from an application beside it or a layer above.
* No module imports another module's private (underscore) name, or reaches into one through
  an imported module (``patterns._layouts``).
* Files stay readable: no library file over ~500 lines, no function over ~80.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "graphattn"

#: the layers, bottom up: a module may import from its own package and from lower ranks only
RANKS = {
    "version": 0,
    "utils": 0,
    "loader": 1,
    "patterns": 1,
    "ops": 2,
    "transforms": 2,
    "nn": 3,
    "distributed": 4,
    "text": 5,
    "graphs": 5,
    "compare": 5,
    "cli": 6,
    "__init__": 7,  # graphattn/__init__.py exports the main names of every layer
}
MAX_FILE_LINES = 520
MAX_FUNCTION_LINES = 80


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def part_of(path: Path) -> str:
    """The top-level package (or module) of graphattn that ``path`` belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported(tree: ast.AST, path: Path):
    """(imported graphattn module, name or None, line) for every import of graphattn."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("graphattn"):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphattn"):
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def target_part(module: str, name) -> str:
    parts = module.split(".")
    if len(parts) > 1:
        return parts[1]
    return name  # "from graphattn import patterns"


def test_every_module_has_a_rank():
    assert {part_of(p) for p in modules()} == set(RANKS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    tree = ast.parse(path.read_text())
    mine = part_of(path)
    for module, name, line in imported(tree, path):
        other = target_part(module, name)
        if other == mine:
            continue
        assert RANKS[other] < RANKS[mine], (
            f"{path.relative_to(PACKAGE)}:{line} imports graphattn.{other} (rank {RANKS[other]}) "
            f"from {mine} (rank {RANKS[mine]}): imports must run downwards")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_cross_modules(path):
    tree = ast.parse(path.read_text())
    aliases = set()  # names bound to graphattn modules: `from graphattn import patterns as P`
    for module, name, line in imported(tree, path):
        assert name is None or not name.startswith("_") or name == "__version__", (
            f"{path.relative_to(PACKAGE)}:{line} imports the private {name} from {module}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphattn"):
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("graphattn")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            assert not (node.attr.startswith("_") and not node.attr.startswith("__")), (
                f"{path.relative_to(PACKAGE)}:{node.lineno} reaches into {node.value.id}.{node.attr}")


def test_no_private_torch_api():
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id == "torch":
                    pytest.fail(f"{path.relative_to(PACKAGE)}:{node.lineno} calls torch's private {node.attr}")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_and_functions_stay_short(path):
    source = path.read_text()
    assert source.count("\n") <= MAX_FILE_LINES, f"{path.relative_to(PACKAGE)} has {source.count(chr(10))} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body_start = node.body[0]
            if isinstance(body_start, ast.Expr) and isinstance(getattr(body_start, "value", None), ast.Constant):
                body_start = node.body[1] if len(node.body) > 1 else body_start  # the docstring does not count
            length = node.end_lineno - body_start.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} has {length} lines of code")


def test_no_assert_for_user_input():
    # ``python -O`` strips asserts: library code validates with exceptions.
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not isinstance(node, ast.Assert), f"{path.relative_to(PACKAGE)}:{node.lineno} uses assert"


def test_the_package_exports_its_main_names():
    import graphattn

    for name in ("GraphMultiheadAttention", "Transformer", "Seq2Seq", "GraphTransformer", "patterns", "Pattern"):
        assert hasattr(graphattn, name) and name in graphattn.__all__

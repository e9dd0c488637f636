r"""What ``"auto"`` means for :class:`~graphattn.nn.GraphTransformer`'s arguments that the task
decides, in one table, chosen on the public benchmarks of docs/real_graphs.md."""
from __future__ import annotations

from graphattn.utils.checks import check_choice

__all__ = ["TASKS", "TASK_DEFAULTS", "task_defaults"]

TASKS = ("node", "graph")
#: Node tasks: 8 blocks, dropout 0.2 and a degree embedding gained minesweeper 1.9 points of ROC-AUC
#: and chameleon/squirrel 0.5 of accuracy each (10 splits), and cost Cora 1.2; no positional encoding
#: (random walks cost Cora 5.8 points and scale worst to large graphs). Graph tasks: depth and
#: dropout cost the MoleculeNet sets, random-walk encodings gained two of three.
TASK_DEFAULTS = {
    "node": {"num_layers": 8, "dropout": 0.2, "max_degree": 16, "pe": None},
    "graph": {"num_layers": 4, "dropout": 0.0, "max_degree": None, "pe": "random_walk"},
}


def task_defaults(task: str, **options) -> dict:
    """``options`` with every ``"auto"`` replaced by ``task``'s value in :data:`TASK_DEFAULTS`.

    >>> task_defaults("node", num_layers="auto", dropout=0.5)
    {'num_layers': 8, 'dropout': 0.5}
    """
    check_choice("task", task, TASKS)
    unknown = set(options) - set(TASK_DEFAULTS[task])
    if unknown:
        raise TypeError(f"task_defaults() has no task default for {sorted(unknown)}; "
                        f"choices: {sorted(TASK_DEFAULTS[task])}")
    for key, value in options.items():
        if isinstance(value, str) and value != "auto" and not isinstance(TASK_DEFAULTS["graph"][key], str):
            raise TypeError(f"{key} must be a number, None or \"auto\", got {value!r}")
    return {k: TASK_DEFAULTS[task][k] if isinstance(v, str) and v == "auto" else v for k, v in options.items()}

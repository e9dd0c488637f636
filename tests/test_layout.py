"""The package's architecture, checked from its source with ``ast``.

* Imports run one way: a module imports only from its own package or from layers below it
  (``RANKS``), never from an application beside it or a layer above.
* No module imports another module's private (underscore) name, or reaches into one through
  an imported module (``patterns._layouts``).
* Files stay readable: no library file over ~500 lines, no function over ~80.
* Patterns answer for themselves: outside ``graphattn/patterns/`` no module tests a pattern's
  concrete class (``isinstance(p, P.Band)``, ``type(p) is Cross``); it asks the pattern's hooks.
"""
import ast
import functools
import importlib
import inspect
import pkgutil
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


# --- patterns answer for themselves -------------------------------------------------------------


@functools.cache
def concrete_pattern_classes() -> frozenset:
    """Names of every subclass of Pattern defined in graphattn.patterns (exported or not)."""
    import graphattn.patterns as package
    from graphattn.patterns import Pattern

    names = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        names |= {name for name, obj in vars(module).items()
                  if inspect.isclass(obj) and issubclass(obj, Pattern) and obj is not Pattern}
    return frozenset(names)


def _dotted(node):
    """``a.b.c`` of a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id] + parts[::-1]) if isinstance(node, ast.Name) else None


def class_tests(source: str, classes: set) -> list:
    """``(line, class name)`` of every test of one of ``classes`` in ``source``: ``isinstance`` /
    ``issubclass`` (tuples too), ``type(x) is / == / is not / != C`` and ``case C():``, where ``C``
    is a name imported from graphattn (aliases followed) or an attribute of an imported
    graphattn.patterns module (``P.Band``, ``graphattn.patterns.Cross``)."""
    tree = ast.parse(source)
    names, modules = {}, {"graphattn.patterns"}  # local name -> class; local names of pattern modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphattn"):
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name in classes:
                    names[local] = alias.name
                elif node.module.startswith("graphattn.patterns") or alias.name == "patterns":
                    modules.add(local)
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.asname and a.name.startswith("graphattn.patterns")}

    def named(node) -> list:
        if isinstance(node, ast.Tuple):
            return [c for element in node.elts for c in named(element)]
        if isinstance(node, ast.Name) and node.id in names:
            return [names[node.id]]
        dotted = _dotted(node) if isinstance(node, ast.Attribute) else None
        if dotted and dotted.rsplit(".", 1)[0] in modules and node.attr in classes:
            return [node.attr]
        return []

    def is_type_call(node) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type"

    found = []
    for node in ast.walk(tree):
        is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if is_call and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            found += [(node.lineno, c) for c in named(node.args[1])]
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq))
                                                   for op in node.ops):
            sides = [node.left] + node.comparators
            if any(is_type_call(side) for side in sides):
                found += [(node.lineno, c) for side in sides for c in named(side)]
        elif isinstance(node, ast.MatchClass):
            found += [(node.lineno, c) for c in named(node.cls)]
    return sorted(found)


OLD_SITES = """
import graphattn.patterns as patterns_module
from graphattn import patterns as P
from graphattn.patterns import Cross, Pattern, Union as UnionPattern
from graphattn.patterns.graph import GraphPattern
from graphattn.patterns.sparse import GlobalTokens
from typing import Union
from torch import Tensor

if isinstance(pattern, Cross):                                   # line 10
    pass
if isinstance(pattern, UnionPattern) or isinstance(rest, GraphPattern) and rest.k > 1:
    pass
jobs = [p for p in ps if not (isinstance(p, P.Band) and p.is_dense)]
ok = isinstance(p, (Tensor, P.Intersection)) or type(p) is GlobalTokens
ok = type(p) == patterns_module.Expander or issubclass(type(p), P.VirtualNodes)
match p:
    case P.RangePattern():
        pass
# not tests of a concrete pattern class:
ok = isinstance(p, Pattern) or isinstance(x, Tensor) or isinstance(u, Union) or p.as_band() is None
ok = type(p).__name__ == "Band" or type(x) is int
"""


def test_the_class_test_finder_catches_the_old_sites():
    found = class_tests(OLD_SITES, concrete_pattern_classes())
    assert found == [(10, "Cross"), (12, "GraphPattern"), (12, "Union"), (14, "Band"), (15, "GlobalTokens"),
                     (15, "Intersection"), (16, "Expander"), (16, "VirtualNodes"), (18, "RangePattern")]


@pytest.mark.parametrize("path", [p for p in modules() if part_of(p) != "patterns"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outside_patterns_tests_a_pattern_class(path):
    found = class_tests(path.read_text(), concrete_pattern_classes())
    assert not found, (f"{path.relative_to(PACKAGE)} tests concrete pattern classes at (line, class) {found}: ask the "
                       "pattern instead (as_band, is_causal_band, is_dense, block_sparsity, graph_radius, hop_pairs, "
                       "expands; graphattn/patterns/base.py), or add such a hook")

"""The package's shape, as docs/architecture.md draws it: imports go one way (commands on top, nothing
imports them; no circle), the run folder's file names live in run/layout.py, the loop is short."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cifarbench"
MODULES = {(".".join(path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): path
           for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The cifarbench modules `name` imports, at the top or inside a function (`from pkg import mod` names mod)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]):
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " → ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_nothing_outside_the_commands_imports_them():
    outside = {name: sorted(t for t in targets if t.startswith("cifarbench.commands"))
               for name, targets in GRAPH.items()
               if not name.startswith("cifarbench.commands") and name != "cifarbench.__main__"}
    assert {name: targets for name, targets in outside.items() if targets} == {}


@pytest.mark.parametrize("package", ["cifarbench.models", "cifarbench.data", "cifarbench.aug"])
def test_a_family_file_never_imports_its_packages_face(package):
    """The registry lives in its own module (models/registry.py, data/datasets.py), so family files import
    it rather than the package's __init__, which imports them."""
    upward = [name for name in GRAPH if name.startswith(f"{package}.") and package in GRAPH[name]]
    assert upward == []


def string_literals(path: Path) -> list[str]:
    """The string constants of a module but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_run_folders_file_names_are_named_in_one_module():
    names = ("summary.json", "metrics.csv", "last.pt", "best.pt")
    holders = {name: sorted(module for module, path in MODULES.items()
                            if any(name in text for text in string_literals(path)))
               for name in names}
    assert holders == {name: ["cifarbench.run.layout"] for name in names}


def test_train_reads_in_one_sitting():
    tree = ast.parse(MODULES["cifarbench.engine.loop"].read_text())
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    assert train.end_lineno - train.lineno + 1 <= 60


def test_no_document_a_user_does_not_have_is_cited():
    root = SRC.parent
    citing = [str(path.relative_to(root)) for folder in ("src", "conf") for path in (root / folder).rglob("*")
              if path.suffix in (".py", ".yaml") and "SPEC" in path.read_text()]
    assert citing == []


def test_every_test_the_readme_names_exists():
    """The README backs its promises with tests it names (`tests/engine/test_interrupt.py::test_…`, a file
    alone, or the start of a test's name in backquotes ending in "…"): each file exists and defines each
    named test, and each start begins some test's name, so a renamed or deleted test shows here."""
    import re

    root = SRC.parent
    named = re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", (root / "README.md").read_text())
    assert len({test for _, test in named if test}) >= 30  # the promises' table, at least
    missing = []
    for file, test in sorted(set(named)):
        path = root / file
        defined = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
                   } if path.is_file() else set()
        if not path.is_file() or (test and test not in defined):
            missing.append(f"{file}::{test}" if test else file)
    # A test cited by the start of its name (`test_with_chdir_…`) must still start some test's name.
    every_test = {node.name for path in (root / "tests").rglob("test_*.py")
                  for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    prefixes = set(re.findall(r"`(test_\w+)…`", (root / "README.md").read_text()))
    assert len(prefixes) >= 5
    missing += sorted(f"{prefix}…" for prefix in prefixes if not any(name.startswith(prefix) for name in every_test))
    assert not missing, f"the README names tests that do not exist: {missing}"

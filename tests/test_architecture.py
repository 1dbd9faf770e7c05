"""The house rules of the package src/dropout_risk, read from its source with `ast` (nothing is
imported):

1. no import cycle between modules, counting module-level and function-level imports;
2. nothing outside dropout_risk.cli imports dropout_risk.cli (the pipelines/ scripts may);
3. no module is over 400 lines;
4. every subpackage __init__.py holds only its docstring (the root one imports nothing), which is
   why an import of one's own ancestor package is not counted as an edge;
5. only the sweep, reproduce and pitfalls packages (and training itself) import
   dropout_risk.training.train, the module that pulls in torch, Lightning and MLflow.

Each checker takes (src folder, package name) and returns one line per offence naming the module,
file and line; the tests at the bottom run each checker on a small synthetic package that breaks
its rule, so every rule is known to be able to fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "dropout_risk"
MAX_LINES = 400
TRAIN_IMPORTERS = ("sweep", "reproduce", "pitfalls", "training")  # subpackages that may import training.train


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    file: str  # relative to the src folder
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.file}:{self.line})"


def modules(src: Path, pkg: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under src/pkg (a package is its __init__.py)."""
    out = {}
    for f in sorted((src / pkg).rglob("*.py")):
        parts = f.relative_to(src).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement may load: `import a.b` -> a.b; `from a import b` -> a and
    a.b (a submodule, if b is one); relative imports resolved against `module`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
        base = ".".join([*parts, *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]


def import_edges(src: Path, pkg: str) -> list[Edge]:
    """Every import of a module of the package by another, at module or function level (any
    `import` statement anywhere in the file); edges to one's own ancestor packages are left out."""
    mods = modules(src, pkg)
    edges = set()
    for module, file in mods.items():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            for target in _targets(module, file.name == "__init__.py", node):
                while target and target not in mods:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != module and _is_within(target, pkg) and not _is_within(module, target):
                    edges.add(Edge(module, target, str(file.relative_to(src)), node.lineno))
    return sorted(edges, key=lambda e: (e.importer, e.imported, e.line))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member (a cycle each)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _shortest_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """start -> ... -> start, fewest edges, within one strongly connected component."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        step = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    step.append(w)
        frontier = step
    raise AssertionError(f"{start} is in no cycle")  # not reached for a component's member


def import_cycles(src: Path, pkg: str) -> list[str]:
    """One line per cycle (strongly connected component): a shortest loop through its first
    module, then every import inside it with file and line."""
    edges = import_edges(src, pkg)
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        loop = " -> ".join(_shortest_cycle(graph, members, component[0]))
        inside = "; ".join(str(e) for e in edges if e.importer in members and e.imported in members)
        lines.append(f"import cycle {loop} (among {', '.join(component)}); the imports: {inside}")
    return lines


def cli_importers(src: Path, pkg: str) -> list[str]:
    cli = f"{pkg}.cli"
    return [f"{e} imports the CLI package from outside it" for e in import_edges(src, pkg)
            if _is_within(e.imported, cli) and not _is_within(e.importer, cli)]


def big_modules(src: Path, pkg: str, limit: int = MAX_LINES) -> list[str]:
    out = []
    for module, file in modules(src, pkg).items():
        n = len(file.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{module} ({file.relative_to(src)}) has {n} lines, over {limit}: split it by concern")
    return out


def init_files_with_code(src: Path, pkg: str) -> list[str]:
    """A subpackage __init__.py holds its docstring only; the root __init__.py imports nothing
    (it may set __version__)."""
    out = []
    for module, file in modules(src, pkg).items():
        if file.name != "__init__.py":
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        where = file.relative_to(src)
        if module == pkg:
            bad = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
            rule = "the root __init__.py imports nothing"
        else:
            body = tree.body
            docstring = body[:1] if body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str) else []
            bad = body[len(docstring):]
            rule = "a subpackage __init__.py holds only its docstring"
        out += [f"{where}:{n.lineno}: {ast.unparse(n).splitlines()[0][:80]} ({rule})" for n in bad]
    return out


def train_importers(src: Path, pkg: str) -> list[str]:
    train = f"{pkg}.training.train"
    allowed = tuple(f"{pkg}.{sub}" for sub in TRAIN_IMPORTERS)
    return [f"{e}: only {', '.join(allowed)} may import {train}" for e in import_edges(src, pkg)
            if e.imported == train and not any(_is_within(e.importer, a) for a in allowed)]


# --- the rules, on the real package ------------------------------------------------------------


def test_the_package_is_where_the_rules_look():
    mods = modules(SRC, PKG)
    assert len(mods) > 50 and f"{PKG}.training.train" in mods and f"{PKG}.cli" in mods, sorted(mods)
    assert len(import_edges(SRC, PKG)) > 100  # the parser sees the imports (absolute and relative)


@pytest.mark.parametrize(
    "checker",
    [import_cycles, cli_importers, big_modules, init_files_with_code, train_importers],
    ids=lambda f: f.__name__,
)
def test_house_rule(checker):
    offences = checker(SRC, PKG)
    assert not offences, "\n".join(offences)


# --- each rule can fail: synthetic packages ------------------------------------------------------


def _package(root: Path, files: dict[str, str], pkg: str = "toy") -> Path:
    """Write files (paths relative to the package, e.g. "a/b.py") under root/src/pkg, with an
    __init__.py holding a docstring in every folder that lacks one; returns root/src."""
    src = root / "src"
    for rel, text in {"__init__.py": '"""toy."""\n', **files}.items():
        path = src / pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [p for p in (src / pkg).rglob("*") if p.is_dir()]:
        if not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text(f'"""{folder.name}."""\n')
    return src


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    src = _package(tmp_path, {
        "x/a.py": "from toy.x.b import helper\n",
        "x/b.py": "def helper():\n    from . import c\n",
        "x/c.py": "import toy.x.a\n",
        "y/d.py": "from ..x import a\nfrom toy import x\n",  # into the cycle, not part of it
    })
    assert import_cycles(src, "toy") == [
        "import cycle toy.x.a -> toy.x.b -> toy.x.c -> toy.x.a (among toy.x.a, toy.x.b, toy.x.c); the imports: "
        "toy.x.a -> toy.x.b (toy/x/a.py:1); toy.x.b -> toy.x.c (toy/x/b.py:2); toy.x.c -> toy.x.a (toy/x/c.py:1)"]


def test_imports_resolve_to_modules_and_ancestors_are_not_edges(tmp_path):
    src = _package(tmp_path, {
        "p/__init__.py": '"""p."""\n',
        "p/m.py": "from toy.p import n, CONSTANT\nfrom . import n as again\nfrom .. import q\nimport toy.p\n",
        "p/n.py": "from toy.q.r import thing\n",
        "q/r.py": "thing = 1\n",
        "p/deep/s.py": "from ...q import r\nfrom .. import m\n",
    })
    got = {(e.importer, e.imported) for e in import_edges(src, "toy")}
    assert got == {("toy.p.m", "toy.p.n"), ("toy.p.m", "toy.q"), ("toy.p.n", "toy.q.r"),
                   ("toy.p.deep.s", "toy.q"), ("toy.p.deep.s", "toy.q.r"), ("toy.p.deep.s", "toy.p.m")}
    assert import_cycles(src, "toy") == []


def test_an_import_of_the_cli_from_the_library_is_named(tmp_path):
    src = _package(tmp_path, {
        "cli/run.py": "from toy.cli.printing import show\n",  # inside the CLI: fine
        "cli/printing.py": "def show():\n    pass\n",
        "model/fit.py": "def fit():\n    from toy.cli import printing\n",
    })
    assert cli_importers(src, "toy") == [
        "toy.model.fit -> toy.cli (toy/model/fit.py:2) imports the CLI package from outside it",
        "toy.model.fit -> toy.cli.printing (toy/model/fit.py:2) imports the CLI package from outside it"]


def test_a_module_over_the_limit_is_named(tmp_path):
    src = _package(tmp_path, {"ok.py": "x = 1\n" * MAX_LINES, "big.py": "x = 1\n" * (MAX_LINES + 1)})
    assert big_modules(src, "toy") == [f"toy.big (toy/big.py) has {MAX_LINES + 1} lines, over {MAX_LINES}: "
                                       "split it by concern"]


def test_code_in_an_init_file_is_named(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": '"""toy."""\n\n__version__ = "1"\nimport os\n',
        "a/__init__.py": '"""a."""\n\nfrom toy.a.m import f\n',
        "b/__init__.py": "X = 1\n",
        "c/__init__.py": '"""c: fine."""\n',
        "a/m.py": "def f():\n    pass\n",
    })
    assert init_files_with_code(src, "toy") == [
        "toy/__init__.py:4: import os (the root __init__.py imports nothing)",
        "toy/a/__init__.py:3: from toy.a.m import f (a subpackage __init__.py holds only its docstring)",
        "toy/b/__init__.py:1: X = 1 (a subpackage __init__.py holds only its docstring)",
    ]


def test_an_import_of_training_train_from_elsewhere_is_named(tmp_path):
    src = _package(tmp_path, {
        "training/train.py": "def train():\n    pass\n",
        "training/evaluate.py": "from .train import train\n",
        "sweep/trial.py": "def run():\n    from toy.training.train import train\n",
        "pitfalls/run.py": "import toy.training.train\n",
        "reproduce/run.py": "from toy.training import train\n",
        "compare/run.py": "\n\nfrom toy.training import train\n",
        "plots/flow.py": "def draw():\n    from ..training.train import train\n",
    })
    assert train_importers(src, "toy") == [
        "toy.compare.run -> toy.training.train (toy/compare/run.py:3): only toy.sweep, toy.reproduce, "
        "toy.pitfalls, toy.training may import toy.training.train",
        "toy.plots.flow -> toy.training.train (toy/plots/flow.py:2): only toy.sweep, toy.reproduce, "
        "toy.pitfalls, toy.training may import toy.training.train",
    ]

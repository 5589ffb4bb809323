"""Layering: a package imports its own modules and packages of strictly lower layers only.

The layers are the table under "## Layers" in docs/architecture.md; this test reads them
from there, so the document and the code cannot drift apart. Every module under
src/taxoclip is parsed with ``ast`` (nothing is imported): ``import`` and ``from … import``
statements anywhere in a file (top level, inside functions, under ``TYPE_CHECKING``), with
relative imports resolved, plus the two dynamic forms the code uses with a constant
name: ``importlib.import_module("taxoclip.…")`` and a stage config's lazy
``run="taxoclip.…:function"``. A "package" is the first name under ``taxoclip``
(``taxoclip.curate.fetch`` belongs to ``curate``; ``taxoclip.errors`` is its own);
``taxoclip`` itself is the package's ``__init__``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TOP = "taxoclip"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    path: Path
    line: int

    def where(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


# --- the layer table ------------------------------------------------------------------------


def _table_rows(markdown: str, first_header: str) -> list[list[str]]:
    """Cells of the rows of the first markdown table whose first header cell is
    ``first_header`` (case-insensitive); [] when there is none."""
    rows: list[list[str]] = []
    inside = False
    for line in markdown.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if inside:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not inside:
            inside = cells[0].lower() == first_header
            continue
        if set("".join(cells)) <= set("-: "):  # the |---|---| line
            continue
        rows.append(cells)
    return rows


def read_layers(markdown: str) -> dict[str, int]:
    """``{package: layer}`` from the ``| layer | packages | … |`` table; packages are the
    backticked names of the second column."""
    layers: dict[str, int] = {}
    for cells in _table_rows(markdown, "layer"):
        layer = int(cells[0])
        for package in re.findall(r"`([\w.]+)`", cells[1]):
            assert package not in layers, f"{package} is in two layers of the table"
            layers[package] = layer
    assert layers, "no `| layer | packages |` table found"
    return layers


def read_allowed(markdown: str) -> set[tuple[str, str]]:
    """Same-layer imports allowed by name: rows ``| `a` -> `b` | why |`` of a table whose
    first header is "allowed import" (none when there is no such table)."""
    allowed = set()
    for cells in _table_rows(markdown, "allowed import"):
        names = re.findall(r"`([\w.]+)`", cells[0])
        if len(names) == 2:
            allowed.add((names[0], names[1]))
    return allowed


# --- the imports ----------------------------------------------------------------------------


def find_modules(src: Path, top: str = TOP) -> dict[str, tuple[Path, bool]]:
    """``{dotted module: (file, is_package)}`` for every .py file under ``src/top``."""
    modules = {}
    for path in sorted((src / top).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_target(node: ast.AST) -> str | None:
    """The constant module name of ``import_module("…")`` / ``__import__("…")`` or of a
    ``run="module:function"`` keyword."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
    if isinstance(node, ast.keyword) and node.arg == "run":
        value = node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value.split(":", 1)[0]
    return None


def imports_of(
    module: str, path: Path, is_package: bool, known: set[str], source: str | None = None
) -> list[Import]:
    """Every import of a ``taxoclip`` module in one file; ``from X import name`` counts as
    an import of ``X.name`` when that is a module."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        elif (target := _dynamic_target(node)) is not None and not target.startswith("."):
            targets = [target]
        for target in targets:
            if target == TOP or target.startswith(TOP + "."):
                found.append(Import(module, target, path, getattr(node, "lineno", 0)))
    return found


def all_imports(src: Path, top: str = TOP) -> tuple[dict[str, tuple[Path, bool]], list[Import]]:
    modules = find_modules(src, top)
    known = set(modules)
    imports = [
        imp
        for module, (path, is_package) in modules.items()
        for imp in imports_of(module, path, is_package, known)
    ]
    return modules, imports


# --- the rules ------------------------------------------------------------------------------


def unlisted_packages(modules: dict[str, tuple[Path, bool]], layers: dict[str, int]) -> list[str]:
    return sorted({package_of(m) for m in modules} - set(layers))


def layer_violations(
    imports: list[Import], layers: dict[str, int], allowed: set[tuple[str, str]] = frozenset()
) -> list[str]:
    """One line per import that goes up a layer or sideways to another package of its own
    layer: ``file:line: a (layer i) imports taxoclip.b.x (b, layer j): upward``."""
    problems = []
    for imp in imports:
        here, there = package_of(imp.source), package_of(imp.target)
        if here == there or here not in layers or there not in layers:
            continue  # unlisted packages are reported on their own
        if (here, there) in allowed:
            continue
        if layers[there] > layers[here]:
            kind = "upward"
        elif layers[there] == layers[here]:
            kind = "sideways (same layer)"
        else:
            continue
        problems.append(
            f"{imp.where()}: {here} (layer {layers[here]}) imports {imp.target} "
            f"({there}, layer {layers[there]}): {kind}"
        )
    return problems


def package_cycles(imports: list[Import]) -> list[str]:
    """One cycle per group of packages that import each other (a strongly connected
    component of the package graph), as ``a -> b -> a (file:line, file:line)``."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        here, there = package_of(imp.source), package_of(imp.target)
        if here != there:
            edges.setdefault(here, {}).setdefault(there, imp)

    def reachable(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def path(start: str, goal: str) -> list[str]:
        """Shortest path ``start -> … -> goal`` (breadth first)."""
        before: dict[str, str] = {}
        todo = [start]
        while todo:
            node = todo.pop(0)
            for nxt in sorted(edges.get(node, {})):
                if nxt not in before:
                    before[nxt] = node
                    todo.append(nxt)
        steps = [goal]
        while steps[-1] != start or len(steps) == 1:
            steps.append(before[steps[-1]])
        return steps[::-1]

    cycles, done = [], set()
    for package in sorted(edges):
        if package in done:
            continue
        group = {p for p in reachable(package) if package in reachable(p)}
        done |= group
        if len(group) > 1:
            cycle = path(package, package)
            steps = [edges[a][b].where() for a, b in zip(cycle[:-1], cycle[1:], strict=True)]
            cycles.append(" -> ".join(cycle) + " (" + ", ".join(steps) + ")")
    return cycles


# --- the repository -------------------------------------------------------------------------


def test_every_package_is_in_the_layer_table():
    modules, _ = all_imports(SRC)
    missing = unlisted_packages(modules, read_layers(ARCHITECTURE.read_text()))
    assert not missing, f"packages missing from the layer table of {ARCHITECTURE.name}: {missing}"


def test_imports_go_only_to_lower_layers():
    markdown = ARCHITECTURE.read_text()
    _, imports = all_imports(SRC)
    problems = layer_violations(imports, read_layers(markdown), read_allowed(markdown))
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_no_import_cycle_between_packages():
    _, imports = all_imports(SRC)
    cycles = package_cycles(imports)
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


# --- the checker itself ---------------------------------------------------------------------

TABLE = """
## Layers

| layer | packages | what |
|---|---|---|
| 0 | `taxoclip`, `errors` | foundation |
| 1 | `taxonomy` | names |
| 2 | `models`, `data` | models |
| 3 | `demo` | top |

| allowed import | why |
|---|---|
| `models` -> `data` | a test of the allow-list |
"""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "taxoclip" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_table_is_read_with_its_allow_list():
    assert read_layers(TABLE) == {
        "taxoclip": 0,
        "errors": 0,
        "taxonomy": 1,
        "models": 2,
        "data": 2,
        "demo": 3,
    }
    assert read_allowed(TABLE) == {("models", "data")}


def test_checker_reports_upward_and_sideways_imports_with_file_and_line(tmp_path):
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "taxonomy/__init__.py": "from taxoclip import errors\n",
            "taxonomy/lineage.py": (
                "import os\n"
                "from . import text\n"  # own package: fine
                "def late():\n"
                "    from ..demo import pipeline\n"  # upward, relative, inside a function
                "    return pipeline\n"
            ),
            "taxonomy/text.py": "import importlib\nimportlib.import_module('taxoclip.models')\n",
            "models/__init__.py": "from taxoclip.data import shards\n",  # allowed by the table
            "data/__init__.py": "",
            "data/shards.py": "from taxoclip.models import io\n",  # sideways, not allowed
            "models/io.py": "from taxoclip.taxonomy.lineage import late\n",  # downward
            "demo/__init__.py": "",
            "demo/pipeline.py": "from taxoclip.taxonomy import lineage\n",
        },
    )
    modules, imports = all_imports(src)
    problems = layer_violations(imports, read_layers(TABLE), read_allowed(TABLE))
    files = ("taxonomy/lineage.py", "taxonomy/text.py", "data/shards.py")
    lineage, text, shards = (src / "taxoclip" / name for name in files)
    assert problems == [
        f"{shards}:1: data (layer 2) imports taxoclip.models.io (models, layer 2): "
        "sideways (same layer)",
        f"{lineage}:4: taxonomy (layer 1) imports taxoclip.demo.pipeline (demo, layer 3): upward",
        f"{text}:2: taxonomy (layer 1) imports taxoclip.models (models, layer 2): upward",
    ]
    assert unlisted_packages(modules, read_layers(TABLE)) == []
    assert unlisted_packages(modules, {"taxoclip": 0}) == [
        "data",
        "demo",
        "errors",
        "models",
        "taxonomy",
    ]


def test_checker_finds_a_cycle_between_packages(tmp_path):
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "from taxoclip.data import shards\n",
            "data/__init__.py": "",
            "data/shards.py": "def f():\n    import taxoclip.models\n",
        },
    )
    _, imports = all_imports(src)
    (cycle,) = package_cycles(imports)
    assert cycle.startswith("data -> models -> data (")
    assert f"{src / 'taxoclip' / 'data' / 'shards.py'}:2" in cycle


def test_run_keyword_and_relative_package_imports_are_resolved():
    known = {"taxoclip", "taxoclip.study", "taxoclip.study.scaling", "taxoclip.analyze"}
    source = (
        "from .. import analyze\nfrom . import scaling\ncommand('x', run='taxoclip.analyze:run')\n"
    )
    found = imports_of(
        "taxoclip.study.config", Path("study/config.py"), False, known, source=source
    )
    assert [(i.target, i.line) for i in found] == [
        ("taxoclip.analyze", 1),
        ("taxoclip.study.scaling", 2),
        ("taxoclip.analyze", 3),
    ]

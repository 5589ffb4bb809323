"""Every repository path a docstring or comment under src/ names exists.

A path is recognised when it starts at the repository root (``docs/``, ``src/taxoclip/``,
``bench/``, ``tests/``) and ends in a file name with an extension, or is a module named
from a package of ``src/taxoclip`` (``study/claims.py``); ``#anchors`` are not part of it.
Paths in other repositories (BioCLIP 2's ``src/evaluation/…``) and in a stage's output
(``train/metadata.csv``) are not recognised.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "taxoclip"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
_START = r"(?<![\w./<-])"  # not inside a longer path, a URL or a <placeholder>
REPO_PATH = re.compile(_START + r"((?:docs|src/taxoclip|bench|tests)/[\w./-]*\.\w+)")
PACKAGE_PATH = re.compile(_START + r"((?:" + "|".join(PACKAGES) + r")/[\w/]*\.py)\b")


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "lineno", 1), doc
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def broken_references(src: Path = SRC) -> list[str]:
    broken = []
    for path in sorted(src.rglob("*.py")):
        for line, text in prose(path):
            for pattern, base in ((REPO_PATH, ROOT), (PACKAGE_PATH, SRC)):
                for match in pattern.finditer(text):
                    reference = match.group(1).rstrip(".")
                    if not (base / reference).exists():
                        broken.append(f"{path.relative_to(src.parent)}:{line}: {reference}")
    return broken


def test_every_path_named_in_src_prose_exists():
    assert broken_references() == []


def test_the_scan_sees_what_it_should(tmp_path):
    package = tmp_path / "taxoclip" / "train"
    package.mkdir(parents=True)
    (package / "x.py").write_text(
        '"""See docs/training.md#resume, docs/nope.md and study/claims.py; BioCLIP 2 reads\n'
        'src/evaluation/data.py, and for docs/tests prose is no path."""\n'
        "# bench/missing_bench.py is gone\n"
    )
    found = broken_references(tmp_path / "taxoclip")
    assert [f.rsplit(": ", 1)[1] for f in found] == ["docs/nope.md", "bench/missing_bench.py"]

"""The threat tables in docs/ name tests that exist: every `tests/test_x.py::test_name` (and
every `::test_name` after it in the same row) is a test function in that file, and every
THREATS.md line the issues require has its row (installer: 1-7, 13-18, 21-24, 31-36, 44-53;
builder: 26-30, 37-43, 54-58)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLES = {"docs/installer.md": [*range(1, 8), *range(13, 19), *range(21, 25), *range(31, 37),
                                *range(44, 54)],
          "docs/builder-trust.md": [*range(26, 31), *range(37, 44), *range(54, 59)]}
_REF = re.compile(r"`((?:tests/)?test_[\w]+\.py)?::(\w+)(?:\[[^\]`]*\])?`"
                  r"|`((?:tests/)?test_[\w]+\.py)`|`\[[^\]`]*\]`")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _rows(doc: str) -> list[str]:
    return [line for line in (REPO / doc).read_text().splitlines()
            if re.match(r"\| \d+ \|", line)]


def test_pattern_reads_a_row() -> None:
    row = ("| 9 | x | `tests/test_a.py::test_one[c]`, `::test_two`, `[d]`; "
           "`test_b.py::test_three` |")
    found = [(m.group(1) or m.group(3), m.group(2)) for m in _REF.finditer(row)]
    assert found == [("tests/test_a.py", "test_one"), (None, "test_two"), (None, None),
                     ("test_b.py", "test_three")]


@pytest.mark.parametrize("doc", list(TABLES))
def test_every_named_test_exists(doc: str) -> None:
    missing = []
    for row in _rows(doc):
        current: Path | None = None
        for m in _REF.finditer(row):
            file, name = m.group(1) or m.group(3), m.group(2)
            if file:
                current = REPO / (file if file.startswith("tests/") else "tests/" + file)
                if not current.is_file():
                    missing.append(f"{row.split('|')[1].strip()}: {file} does not exist")
                    current = None
                    continue
            if name and current is not None and name not in _functions(current):
                missing.append(f"{row.split('|')[1].strip()}: {current.name}::{name}")
    assert not missing, missing


@pytest.mark.parametrize("doc", list(TABLES))
def test_every_required_threat_line_has_a_row(doc: str) -> None:
    numbers = {int(row.split("|")[1]) for row in _rows(doc)}
    assert not set(TABLES[doc]) - numbers, sorted(set(TABLES[doc]) - numbers)

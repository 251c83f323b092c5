"""House rules checked over the source (issue 9): a function with more than three parameters
takes the rest by keyword, so a call site names what it passes."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_POSITIONAL = 3
# Overrides the standard library calls positionally (urllib.request.HTTPRedirectHandler).
STDLIB_OVERRIDES = {"redirect_request"}


def _too_positional() -> list[str]:
    found = []
    for package in ("bundler", "installer"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                args = node.args.posonlyargs + node.args.args
                positional = [a for a in args if a.arg not in ("self", "cls")]
                if len(positional) > MAX_POSITIONAL and node.name not in STDLIB_OVERRIDES:
                    where = path.relative_to(REPO)
                    found.append(f"{where}:{node.lineno} {node.name} ({len(positional)})")
    return found


def test_functions_take_more_than_three_parameters_by_keyword() -> None:
    found = _too_positional()
    assert not found, ("put `*` before the fourth parameter (click callbacks: first) of:\n  "
                       + "\n  ".join(found))

"""Module structure: no import cycle among bundler/ and installer/ modules, every CLI module
importable on its own, and installer/ importing nothing of bundler/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bundler", "installer")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules imported by ``path`` (relative imports resolved)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only=top_level_only) if i in files and i != m}
            for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_at_module_level() -> None:
    graph = _graph(top_level_only=True)
    # a package importing its own submodules in __init__ is not a cycle of its own
    for m in graph:
        graph[m] = {n for n in graph[m] if not m.startswith(n + ".") and not n.startswith(m + ".")}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_installer_never_imports_bundler() -> None:
    graph = _graph(top_level_only=False)
    offenders = {m: sorted(i for i in deps if i.startswith("bundler"))
                 for m, deps in graph.items() if m.startswith("installer")}
    assert {m: d for m, d in offenders.items() if d} == {}


@pytest.mark.parametrize("module", sorted(
    _module_name(p) for p in (REPO / "bundler" / "cli").glob("*.py")))
def test_each_cli_module_imports_on_its_own(module: str) -> None:
    p = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# The layers (docs/code-map.md): a module imports only modules of its own folder or of a
# lower layer. The builder may use any installer module (format, trust and the device's
# readers are the one definition both sides share); the installer imports nothing of bundler.
LAYERS = {
    "installer": 0, "installer.errors": 0,
    "installer.fsio": 1, "installer.policy": 1,
    "installer.format": 2,
    "installer.arch": 3, "installer.trust": 3,
    "installer.sources": 4,
    "installer.host": 5,
    "installer.commands": 6,
    "installer.cli": 7, "installer.zipapp": 7,
    "installer.__main__": 8,
    "bundler": 0, "bundler.errors": 0,
    "bundler.limits": 1,
    "bundler.safeyaml": 2,
    "bundler.spec": 3, "bundler.keys": 3,
    "bundler.discover": 4, "bundler.fetch": 4,
    "bundler.lock": 5,
    "bundler.assemble": 6,
    "bundler.repo": 7, "bundler.registry": 7,  # repo publishes deltas (assemble's writer)
    "bundler.fleet": 8,  # reads the ring repository (repo)
    "bundler.cli": 9,
    "bundler.__main__": 10,
}
LOOSE_LIMIT = 8


def _unit(module: str) -> str:
    """The folder (``installer.trust``) or loose module (``installer.fsio``) a module is in."""
    return ".".join(module.split(".")[:2])


def test_every_unit_has_a_layer() -> None:
    units = {_unit(m) for m in _graph(top_level_only=False)}
    assert sorted(units - set(LAYERS)) == []


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for m, deps in _graph(top_level_only=False).items():
        src = _unit(m)
        for d in deps:
            dst = _unit(d)
            if dst == src or (src.startswith("bundler") and dst.startswith("installer")):
                continue
            if LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{m} -> {d}")
    assert sorted(wrong) == []


def test_the_layer_check_catches_an_upward_import() -> None:
    assert LAYERS[_unit("installer.format.bundlefmt")] < LAYERS[_unit("installer.host.state")]
    assert LAYERS[_unit("installer.trust.verify")] < LAYERS[_unit("installer.sources.remote")]
    assert LAYERS[_unit("bundler.spec.lockfile")] < LAYERS[_unit("bundler.fetch.oci")]


def test_builder_cli_is_imported_by_nothing_but_its_entry_points() -> None:
    graph = _graph(top_level_only=False)
    users = sorted(m for m, deps in graph.items()
                   if not m.startswith("bundler.cli") and m != "bundler.__main__"
                   and any(d.startswith("bundler.cli") for d in deps))
    assert users == []


@pytest.mark.parametrize("package", PACKAGES)
def test_few_modules_are_left_loose(package: str) -> None:
    loose = sorted(p.name for p in (REPO / package).glob("*.py"))
    assert len(loose) <= LOOSE_LIMIT, loose

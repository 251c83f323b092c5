#!/usr/bin/env python3
"""A small, repeatable mutation run over ``ast`` (not part of CI).

For each module given, every single mutation of these kinds is tried, one at a time:

- comparison: ``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``in``/``not in``, ``is``/``is not``
  swapped for their neighbour;
- ``max`` <-> ``min``; ``and`` <-> ``or``; ``not x`` -> ``x``; ``+`` <-> ``-``;
- a ``raise`` statement replaced by ``pass``;
- an integer constant ``n`` -> ``n + 1``, ``True`` <-> ``False``.

Strings, docstrings, annotations and f-string parts are never mutated. Each mutant is written
into a throw-away copy of the repository (so the CLI tests' child processes import it too) and
the tests are run with ``pytest -x``: the tests that reached the mutated line in-process (found
once by tracing the given test subset), or the whole subset when no in-process test reaches
it (the line may only run in a CLI child). A mutant is killed when the tests fail or time out.

    python3 tools/mutate.py installer/trust/rootmeta.py --tests tests/test_trust.py
    python3 tools/mutate.py installer/trust/verify.py --tests tests/test_trust_verify.py \\
        --json /tmp/verify-mutants.json

Prints the kill score per module and every survivor (line, mutation, source line); judging
which survivors are equivalent is left to a human (see the issue's closing note).
"""

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parent.parent

_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
             ast.Is: ast.IsNot, ast.IsNot: ast.Is}


@dataclass
class Mutant:
    index: int        # position of the node in ast.walk order
    lineno: int
    kind: str
    detail: str
    status: str = "pending"   # killed | survived | timeout | error
    seconds: float = 0.0


def _skipped_nodes(tree: ast.AST) -> Set[int]:
    """ids of nodes never mutated: annotations, docstrings, f-strings and their subtrees."""
    skip: Set[int] = set()

    def mark(node: Optional[ast.AST]) -> None:
        if node is not None:
            for sub in ast.walk(node):
                skip.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                mark(a.annotation)
        if isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        if isinstance(node, ast.JoinedStr):
            mark(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant):
                mark(body[0])
    return skip


def _pragma_lines(source: str) -> Set[int]:
    return {n for n, line in enumerate(source.splitlines(), 1) if "pragma: no cover" in line}


def enumerate_mutants(source: str) -> List[Mutant]:
    tree = ast.parse(source)
    skip = _skipped_nodes(tree)
    pragma = _pragma_lines(source)
    out: List[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip or getattr(node, "lineno", 0) in pragma:
            continue
        for kind, detail in _mutations(node):
            out.append(Mutant(index, node.lineno, kind, detail))  # type: ignore[attr-defined]
    return out


def _mutations(node: ast.AST) -> Iterator[Tuple[str, str]]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                yield "compare", f"{i}:{type(op).__name__}->{_CMP_SWAP[type(op)].__name__}"
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in ("max", "min"):
        yield "maxmin", f"{node.func.id}->{'min' if node.func.id == 'max' else 'max'}"
    elif isinstance(node, ast.BoolOp):
        yield "boolop", "and->or" if isinstance(node.op, ast.And) else "or->and"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", "drop not"
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        yield "arith", "+->-" if isinstance(node.op, ast.Add) else "-->+"
    elif isinstance(node, ast.Raise):
        yield "raise", "raise->pass"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield "const", f"{node.value}->{not node.value}"
    elif isinstance(node, ast.Constant) and isinstance(node.value, int):
        yield "const", f"{node.value}->{node.value + 1}"


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, mutant: Mutant) -> None:
        self.target = target
        self.mutant = mutant

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if node is not self.target:
            return node
        m = self.mutant
        if m.kind == "compare":
            assert isinstance(node, ast.Compare)
            i = int(m.detail.split(":")[0])
            node.ops[i] = _CMP_SWAP[type(node.ops[i])]()
        elif m.kind == "maxmin":
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            node.func.id = "min" if node.func.id == "max" else "max"
        elif m.kind == "boolop":
            assert isinstance(node, ast.BoolOp)
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif m.kind == "not":
            assert isinstance(node, ast.UnaryOp)
            return node.operand
        elif m.kind == "arith":
            assert isinstance(node, ast.BinOp)
            node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        elif m.kind == "raise":
            return ast.copy_location(ast.Pass(), node)
        elif m.kind == "const":
            assert isinstance(node, ast.Constant)
            node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
        return node


def mutate_source(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    target = list(ast.walk(tree))[mutant.index]
    tree = _Apply(target, mutant).visit(copy.copy(tree))
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


# ---------------------------------------------------------------------------- running

_TRACE_PLUGIN = '''
import json, os, sys
_targets = set(json.loads(os.environ["MUTATE_TARGETS"]))
_hits = {}
_current = [None]
def _local(frame, event, arg):
    if event == "line":
        _hits.setdefault(_current[0], set()).add((frame.f_code.co_filename, frame.f_lineno))
    return _local
def _global(frame, event, arg):
    if frame.f_code.co_filename in _targets:
        _hits.setdefault(_current[0], set()).add((frame.f_code.co_filename,
                                                 frame.f_code.co_firstlineno))
        return _local
    return None
def pytest_runtest_call(item):
    _current[0] = item.nodeid
    sys.settrace(_global)
def pytest_runtest_teardown(item):
    sys.settrace(None)
def pytest_sessionfinish(session):
    out = {k: sorted(v) for k, v in _hits.items() if k}
    with open(os.environ["MUTATE_TRACE_OUT"], "w") as f:
        json.dump(out, f)
'''


def _copy_repo(dest: Path) -> None:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.pyc",
        "dist", "build", "*.egg-info"))


def _pytest(work: Path, args: List[str], timeout: float,
            env: Optional[Dict[str, str]] = None) -> Tuple[str, float]:
    full = dict(os.environ)
    full.update(env or {})
    full["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            "-p", "no:randomly"] + args, cwd=str(work), env=full,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    status = {0: "survived", 1: "killed"}.get(p.returncode, "error")
    return status, time.monotonic() - start


def _prime(work: Path, tests: List[str]) -> None:
    """Import pytest, the third-party libraries and the tests once, in this process, from
    ``work``: each mutant then runs in a fork that re-imports only the project's modules."""
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.chdir(work)
    sys.path.insert(0, str(work))
    import pytest
    with open(os.devnull, "w") as null:
        saved = os.dup(1), os.dup(2)
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"] + tests)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def _ours(name: str, work: Path) -> bool:
    if name.split(".")[0] in ("installer", "bundler", "tests"):
        return True
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None) or ""
    return path.startswith(str(work))


def _forked(work: Path, args: List[str], timeout: float) -> Tuple[str, float]:
    """Run pytest ARGS in a fork of the primed process (the mutant is already on disk)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: forget our modules so they are imported from disk, mutant included
        code = 3
        try:
            for name in [n for n in list(sys.modules) if _ours(n, work)]:
                del sys.modules[name]
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            import pytest
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider"] + args))
        finally:
            os._exit(code)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    return {0: "survived", 1: "killed"}.get(code, "error"), time.monotonic() - start


def trace(work: Path, module_path: Path, tests: List[str]) -> Dict[int, List[str]]:
    """line -> node ids of tests that executed it in-process."""
    plugin_dir = work / ".mutate"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "mutate_trace.py").write_text(_TRACE_PLUGIN)
    out = plugin_dir / "trace.json"
    env = {"MUTATE_TARGETS": json.dumps([str(module_path)]), "MUTATE_TRACE_OUT": str(out),
           "PYTHONPATH": str(plugin_dir) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full = dict(os.environ)
    full.update(env)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "mutate_trace"] + tests, cwd=str(work), env=full,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    by_line: Dict[int, List[str]] = {}
    for nodeid, hits in json.loads(out.read_text()).items():
        for _, line in hits:
            by_line.setdefault(line, []).append(nodeid)
    return by_line


def run_module(module: str, tests: List[str], *, limit: Optional[int],
               timeout_factor: float) -> List[Mutant]:
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp) / "repo"
        _copy_repo(work)
        target = work / module
        original = target.read_text()
        status, base = _pytest(work, tests, timeout=3600)
        if status != "survived":
            raise SystemExit(f"the tests fail without any mutation ({status}): {tests}")
        by_line = trace(work, target, tests)
        mutants = enumerate_mutants(original)[:limit]
        here = os.getcwd()
        _prime(work, tests)
        print(f"{module}: {len(mutants)} mutants; unmutated run {base:.1f} s", flush=True)
        try:
            for n, m in enumerate(mutants, 1):
                target.write_text(mutate_source(original, m))
                selected = sorted(set(by_line.get(m.lineno, []))) or tests
                m.status, m.seconds = _forked(work, selected,
                                              timeout=base * timeout_factor + 30)
                if m.status == "survived" and selected is not tests:
                    # reached in-process but maybe checked only by a CLI test: run them all
                    m.status, extra = _forked(work, tests, timeout=base * timeout_factor + 30)
                    m.seconds += extra
                print(f"  [{n}/{len(mutants)}] line {m.lineno} {m.kind} {m.detail}: "
                      f"{m.status} ({m.seconds:.1f} s)", flush=True)
        finally:
            target.write_text(original)
            os.chdir(here)
    return mutants


def report(module: str, mutants: List[Mutant], source: str) -> Dict[str, object]:
    killed = sum(1 for m in mutants if m.status in ("killed", "timeout", "error"))
    lines = source.splitlines()
    survivors = [dict(asdict(m), source=lines[m.lineno - 1].strip())
                 for m in mutants if m.status == "survived"]
    score = 100.0 * killed / len(mutants) if mutants else 100.0
    print(f"\n{module}: {killed}/{len(mutants)} killed ({score:.1f} %), "
          f"{len(survivors)} survived")
    for s in survivors:
        print(f"  line {s['lineno']}: {s['kind']} {s['detail']}: {s['source']}")
    return {"module": module, "mutants": len(mutants), "killed": killed, "score": score,
            "survivors": survivors}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="+", help="files to mutate, relative to the repository")
    ap.add_argument("--tests", nargs="+", default=[],
                    help="the test subset (files or node ids) to run against each mutant")
    ap.add_argument("--limit", type=int, help="only the first N mutants (a quick look)")
    ap.add_argument("--timeout-factor", type=float, default=3.0,
                    help="a mutant times out after this many unmutated runs (+30 s)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--list", action="store_true", help="only list the mutants")
    args = ap.parse_args(argv)
    results = []
    for module in args.modules:
        source = (REPO / module).read_text()
        if args.list:
            for m in enumerate_mutants(source):
                print(f"line {m.lineno}: {m.kind} {m.detail}")
            continue
        if not args.tests:
            ap.error("--tests is required (except with --list)")
        mutants = run_module(module, args.tests, limit=args.limit,
                             timeout_factor=args.timeout_factor)
        results.append(report(module, mutants, source))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

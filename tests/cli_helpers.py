"""Run the `bundle` CLI in-process (fast) or as a subprocess (real), capturing its outcome."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from bundler.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def bundle(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``bundle ARGS`` in this process; returns exit code and captured output."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return Result(code, cap.out, cap.err)


def bundle_proc(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 300) -> Result:
    """``bundle ARGS`` as a real process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


@dataclass(frozen=True)
class Outcome:
    """A child's exit code, output, wall time and peak RSS (MiB)."""

    code: int
    out: str
    err: str
    seconds: float
    rss_mb: float


# Runs `bundle ARGS` and, at exit, writes the peak RSS of the bundle process and of the
# children it waited for (the chart render child) to $AIRGAP_TEST_RSS_FILE, in KiB. Linux
# starts a child's ``ru_maxrss`` at its parent's peak (exec keeps the forking process's high
# water mark), so wait4's figure is at least the test runner's own size, which grows over a
# long suite; ``VmHWM`` is the new program's own memory only.
_RSS_WRAPPER = """
import os, resource, runpy, sys
def _peak():
    own = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1])
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(os.environ["AIRGAP_TEST_RSS_FILE"], "w") as f:
        f.write(str(max(own, kids)))
sys.argv = ["bundle"] + sys.argv[1:]
try:
    runpy.run_module("bundler", run_name="__main__")
finally:
    _peak()
"""


def bundle_child(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300,
                 limits: Callable[[], None] | None = None) -> Outcome:
    """``python3 -m bundler ARGS`` as a child in its own session, ``limits`` (setrlimit calls)
    applied in it before exec; killed with its process group after ``timeout``. The peak RSS
    is the bundle program's own high-water mark and that of the children it waited for (such
    as the chart render child), as the child reports it at exit (``_RSS_WRAPPER``); wait4's
    ``ru_maxrss`` only when the child was killed before it could say."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss:
        start = time.monotonic()
        p = subprocess.Popen([sys.executable, "-c", _RSS_WRAPPER, *args], cwd=cwd,
                             env={**env, "AIRGAP_TEST_RSS_FILE": rss.name},
                             stdout=out, stderr=err, preexec_fn=limits,
                             start_new_session=True)
        killer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
        killer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        reported = rss.read().strip()
        peak_kib = int(reported) if reported.isdigit() else usage.ru_maxrss
        return Outcome(os.waitstatus_to_exitcode(status), out.read().decode(errors="replace"),
                       err.read().decode(errors="replace"), seconds, peak_kib / 1024)


def bundle_proc_rss(*args: str, cwd: Path, env: dict[str, str] | None = None,
                    timeout: float = 300) -> tuple[Result, float]:
    """:func:`bundle_proc`, plus the peak RSS in MiB (see :func:`bundle_child`)."""
    o = bundle_child(list(args), cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)
    return Result(o.code, o.out, o.err), o.rss_mb

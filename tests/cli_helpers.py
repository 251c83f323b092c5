"""Run the `bundle` CLI in-process (fast) or as a subprocess (real), capturing its outcome."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

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


def bundle_proc_rss(*args: str, cwd: Path, env: dict[str, str] | None = None,
                    timeout: float = 300) -> tuple[Result, float]:
    """:func:`bundle_proc`, plus the process's peak RSS in MiB (``ru_maxrss`` from wait4)."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "bundler", *args], cwd=cwd, env=full_env,
                             stdout=out, stderr=err)
        killer = threading.Timer(timeout, p.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (Result(p.returncode, out.read().decode(errors="replace"),
                       err.read().decode(errors="replace")), usage.ru_maxrss / 1024)

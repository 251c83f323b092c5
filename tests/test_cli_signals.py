"""Both CLIs, run as real processes, on a closed stdout (``| head -1``) and on Ctrl-C (SIGINT):
a quiet exit, no traceback, nothing half-written.

- closed pipe: exit 141 (128 + SIGPIPE, what a shell shows for a tool killed by SIGPIPE), empty
  stderr;
- SIGINT: exit 130 (128 + SIGINT), one short line on stderr, no temp files left; an install
  interrupted in the middle of its transaction is finished or undone by the next command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.bundles import REPO, KeyDir, cli, default_spec, write_spec
from tests.world import World

PIPE_CLOSED, INTERRUPTED = 141, 130


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AIRGAP_INSTALL_FAILPOINT", None)
    return {**env, **extra}


def _closed_stdout(args: list[str], *, cwd: Path) -> tuple[int, str]:
    """Run ``python3 ARGS`` with its stdout a pipe whose reader is already gone."""
    p = subprocess.Popen([sys.executable, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # like `| head -1` once head has exited
    err = p.stderr.read()
    return p.wait(timeout=120), err


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def stick(tmp_path_factory: pytest.TempPathFactory, keys: KeyDir) -> Path:
    folder = tmp_path_factory.mktemp("stick")
    write_spec(default_spec("1.0.0"), keys, folder)
    return folder


@pytest.fixture
def root(tmp_path: Path, keys: KeyDir) -> Path:
    root = tmp_path / "root"
    assert cli("trust", keys.root_json, "--root", root).returncode == 0
    return root


# argparse writes --help itself and ignores a write error (then exits 0): quiet as well
@pytest.mark.parametrize(("args", "expected"), [(["status"], PIPE_CLOSED),
                                                (["status", "--json"], PIPE_CLOSED),
                                                (["--help"], 0)])
def test_installer_exits_quietly_on_a_closed_pipe(root: Path, args: list[str],
                                                  expected: int) -> None:
    code, err = _closed_stdout(["-m", "installer", *args, *(["--root", str(root)]
                                                           if args[0] == "status" else [])],
                               cwd=root.parent)
    assert code == expected and err == "", (code, err)


@pytest.mark.parametrize("args", [["inspect"], ["inspect", "--json"], ["--help"]])
def test_bundle_exits_quietly_on_a_closed_pipe(stick: Path, tmp_path: Path,
                                               args: list[str]) -> None:
    bundles = [str(p) for p in stick.glob("*.tar")] if args[0] == "inspect" else []
    code, err = _closed_stdout(["-m", "bundler", *args, *bundles], cwd=tmp_path)
    assert code == PIPE_CLOSED and err == "", (code, err)


def _stopped(p: subprocess.Popen[str], *, timeout: float = 120) -> None:
    """Wait until ``p`` stopped itself (a ``:stop`` fail point) or exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError(f"the child did not reach its fail point (exit {p.poll()})")


def _blocked_in_flock(p: subprocess.Popen[str], *, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        with open(f"/proc/{p.pid}/wchan") as f:
            if "lock" in f.read():
                return
        time.sleep(0.05)
    raise AssertionError(f"the child did not wait for the lock (exit {p.poll()})")


def _interrupt(p: subprocess.Popen[str]) -> tuple[int, str]:
    p.send_signal(signal.SIGINT)  # pending while stopped, delivered on SIGCONT
    p.send_signal(signal.SIGCONT)
    _, err = p.communicate(timeout=120)
    return p.returncode, err


@pytest.mark.parametrize("point", ["after-stage-member", "after-journal", "after-placed"])
def test_installer_ctrl_c_mid_install(root: Path, stick: Path, point: str) -> None:
    """Ctrl-C while staging, and inside the transaction (journal written, files being placed):
    exit 130 with one line; no temp file left; the next install completes the same bundle."""
    p = subprocess.Popen([sys.executable, "-m", "installer", "install", str(stick), "--root",
                          str(root), "--server", "--skip-start"], cwd=root.parent,
                         env=_env(AIRGAP_INSTALL_FAILPOINT=f"{point}:stop"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stopped(p)
    code, err = _interrupt(p)
    assert code == INTERRUPTED, (code, err)
    assert "Traceback" not in err and err.splitlines()[-1] == (
        "airgap-install: interrupted (exit 130); run the command again"), err
    assert _temp_files(root) == []
    again = cli("install", stick, "--root", root, "--server", "--skip-start", "--json")
    assert again.returncode == 0, again.stderr
    status = cli("status", "--root", root, "--verify")
    assert status.returncode == 0 and "installed: edge 1.0.0" in status.stdout, status


def test_installer_ctrl_c_while_waiting_for_the_lock(root: Path, keys: KeyDir,
                                                    stick: Path) -> None:
    """``--wait`` queues behind another run (here: an install stopped at its fail point)."""
    holder = subprocess.Popen([sys.executable, "-m", "installer", "install", str(stick),
                               "--root", str(root), "--server"], env=_env(
                                   AIRGAP_INSTALL_FAILPOINT="after-lock:stop"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stopped(holder)
    try:
        waiter = subprocess.Popen([sys.executable, "-m", "installer", "trust", "--wait",
                                   str(keys.root_json), "--root", str(root)], env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _blocked_in_flock(waiter)
        waiter.send_signal(signal.SIGINT)
        _, err = waiter.communicate(timeout=60)
        assert waiter.returncode == INTERRUPTED and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def stalled() -> Iterator[str]:
    """An HTTP server on loopback that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.mark.world
def test_bundle_ctrl_c_while_a_download_hangs(world: World, stalled: str,
                                              tmp_path: Path) -> None:
    """``bundle lock`` stuck on a server that never answers: Ctrl-C ends it at once with 130,
    one line, no traceback, nothing written beside the spec."""
    project = tmp_path / "project"
    world.write_spec(project, releases=stalled + "/releases", endpoint=stalled)
    before = sorted(p.name for p in project.iterdir())
    p = subprocess.Popen([sys.executable, "-m", "bundler", "-q", "lock", "--cache",
                          str(tmp_path / "cache")], cwd=project, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # started, connected, waiting for an answer
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == INTERRUPTED and "Traceback" not in err, (p.returncode, err)
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in project.iterdir()) == before
    assert _temp_files(tmp_path) == []

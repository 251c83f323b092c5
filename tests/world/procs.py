"""Process and port helpers for the test world.

What it does: picks free loopback ports, polls an HTTP endpoint until it answers, and runs
external servers (``docker-registry``, ...) as managed subprocesses whose output goes to a log
file, stopped by PID (SIGTERM, then SIGKILL).

What it does not do: it never binds or contacts anything but 127.0.0.1, and it never kills a
process it did not start itself.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import weakref
from pathlib import Path
from typing import Mapping, Sequence

LOOPBACK = "127.0.0.1"

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _check_loopback(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in (LOOPBACK, "localhost"):
        raise ValueError(f"the test world only talks to 127.0.0.1, not {url!r}")
    return parts


def http_status(url: str, *, timeout: float = 2.0, ca_file: str | None = None) -> int:
    """Send one GET and return the status code (any status counts as an answer).

    TLS servers are accepted without verification unless ``ca_file`` is given: readiness is
    about the socket answering, not about trust.
    """
    parts = _check_loopback(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = (ssl.create_default_context(cafile=ca_file) if ca_file
               else ssl._create_unverified_context())
        conn = http.client.HTTPSConnection(parts.hostname or LOOPBACK, parts.port, timeout=timeout,
                                           context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname or LOOPBACK, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def wait_until_http_ready(url: str, timeout: float = 10.0, *,
                          process: ManagedProcess | None = None,
                          ca_file: str | None = None) -> int:
    """Poll ``url`` until it answers with any HTTP status; return that status.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``RuntimeError`` at once if
    ``process`` exits meanwhile (with the tail of its log in the message).
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    last_error: Exception | None = None
    while True:
        if process is not None and not process.running:
            raise RuntimeError(f"{process.name} exited with {process.returncode} before {url} "
                               f"answered; log tail:\n{process.log_tail()}")
        try:
            return http_status(url, timeout=1.0, ca_file=ca_file)
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s: {last_error}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class ManagedProcess:
    """One external server process: started with its output in ``log_path``, stopped by PID.

    The process gets its own session so a Ctrl-C in the terminal does not reach it before we
    stop it in order; ``stop()`` signals only this PID. An ``atexit`` hook stops anything still
    running when the interpreter exits, and, when started from the main thread on Linux with
    ``setpriv`` available, the kernel sends it SIGTERM if this Python process dies without
    running ``atexit`` (kill -9, ``os._exit``): a crashed test run leaves no orphans. (Not from
    other threads: the parent-death signal fires when the *thread* that forked exits.)
    """

    def __init__(self, argv: Sequence[str], *, log_path: Path, name: str | None = None,
                 cwd: Path | None = None, env: Mapping[str, str] | None = None,
                 die_with_parent: bool = True) -> None:
        self.die_with_parent = die_with_parent
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.name = name or Path(self.argv[0]).name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def start(self) -> ManagedProcess:
        """Start the process (non-blocking); readiness is the caller's business."""
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            argv = self.argv
            if (self.die_with_parent and sys.platform == "linux" and shutil.which("setpriv")
                    and threading.current_thread() is threading.main_thread()):
                argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
            with open(self.log_path, "ab") as log:
                self._popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.cwd, env=self.env, start_new_session=True)
            _LIVE.add(self)
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the PID, wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        with self._lock:
            popen = self._popen
            if popen is None:
                return None
            if popen.poll() is None:
                try:
                    os.kill(popen.pid, signal.SIGTERM)
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(popen.pid, signal.SIGKILL)
                    popen.wait(timeout)
                except ProcessLookupError:
                    pass
            _LIVE.discard(self)
            return popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.running})"


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        try:
            proc.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass

"""A real Docker engine (``dockerd`` from Debian's ``docker.io``) on a private unix socket.

What it does: starts ``dockerd`` with its data, exec root, pidfile and socket in a short folder
under ``/tmp`` (unix socket paths are limited to 108 bytes), with no networking of its own
(no iptables, no bridge, no masquerading) and the ``vfs`` storage driver (works in any
container), the flags of TEST-WORLD.md; waits until ``GET /_ping`` answers on the socket; stops
it by PID (SIGTERM stops its containerd child too). It pulls from the loopback registry over
plain http (127.0.0.0/8 is an insecure registry by default).

What it does not do: listen on TCP, touch ``/var/run/docker.sock``, or stop any engine it did
not start.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

from .procs import ManagedProcess

DOCKERD_BINARY = "dockerd"


def _ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False


class Dockerd:
    """One ``dockerd``. ``host`` is the ``DOCKER_HOST`` value (``unix://.../docker.sock``)."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="dkd-"))
        self.sock = self.dir / "docker.sock"
        self.process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 60.0) -> Dockerd:
        binary = shutil.which(DOCKERD_BINARY)
        if binary is None:
            raise RuntimeError("dockerd is not installed: apt-get install docker.io "
                               "(.ci/setup installs it)")
        d = self.dir
        self.process = ManagedProcess(
            [binary, "--iptables=false", "--ip6tables=false", "--ip-masq=false",
             "--bridge=none", "--storage-driver=vfs", "--data-root", str(d / "data"),
             "--exec-root", str(d / "exec"), "--pidfile", str(d / "dockerd.pid"),
             "-H", self.host],
            log_path=d / "dockerd.log", name="dockerd").start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running:
                raise RuntimeError(f"dockerd exited with {self.process.returncode}; log tail:\n"
                                   f"{self.process.log_tail()}")
            if self.sock.exists() and _ping(self.sock):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"dockerd did not answer on {self.sock} within {timeout}s; see "
                           f"{d}/dockerd.log")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20.0)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

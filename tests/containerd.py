"""A real containerd on a private socket: the stand-in for K3s's image import (TEST-WORLD.md)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path


class Containerd:
    def __init__(self) -> None:
        # unix socket paths must stay short: use a fresh folder under /tmp
        self.dir = Path(tempfile.mkdtemp(prefix="ctrd-"))
        self.sock = self.dir / "c.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Containerd:
        (self.dir / "config.toml").write_text(
            'version = 2\n'
            f'root = "{self.dir}/root"\n'
            f'state = "{self.dir}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            '[grpc]\n'
            f'  address = "{self.sock}"\n')
        log = open(self.dir / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(self.dir / "config.toml")],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.sock.exists() and self.ctr("version").returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"containerd did not start; see {self.dir}/containerd.log")

    def ctr(self, *args: str, stdin: bytes | None = None,
            namespace: str = "k8s.io") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ctr", "-a", str(self.sock), "-n", namespace, *args],
                              input=stdin, capture_output=True, timeout=120)

    def import_zst(self, archive: Path) -> subprocess.CompletedProcess[bytes]:
        """``zstd -dc ARCHIVE | ctr images import --all-platforms -`` (K3s's own path)."""
        z = subprocess.Popen(["zstd", "-dc", str(archive)], stdout=subprocess.PIPE)
        assert z.stdout is not None
        p = subprocess.run(["ctr", "-a", str(self.sock), "-n", "k8s.io", "images", "import",
                            "--all-platforms", "-"], stdin=z.stdout, capture_output=True,
                           timeout=300)
        z.stdout.close()
        z.wait()
        return p

    def import_tar(self, archive: Path) -> subprocess.CompletedProcess[bytes]:
        """``ctr images import --all-platforms ARCHIVE`` (a plain ``.tar``, as K3s reads it)."""
        return subprocess.run(["ctr", "-a", str(self.sock), "-n", "k8s.io", "images", "import",
                               "--all-platforms", str(archive)], capture_output=True,
                              timeout=300)

    def images(self) -> dict[str, str]:
        """name -> target digest, from ``ctr images ls``."""
        out = self.ctr("images", "ls").stdout.decode().splitlines()[1:]
        result = {}
        for line in out:
            parts = line.split()
            if len(parts) >= 3:
                result[parts[0]] = parts[2]
        return result

    def remove_all(self) -> None:
        names = list(self.images())
        if names:
            self.ctr("images", "rm", *names)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

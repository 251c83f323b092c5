"""``tests/conformance/tuf_client.py``, the client-under-test CLI for tuf-conformance, run as
the suite runs it (``python3 -s -S``, a fresh process per command) against an in-memory
repository served on 127.0.0.1: the flag order, exit codes 0/1 only, flat quoted file names
in the metadata folder, targets verified before they land, and the cache by hash."""

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.bundles import REPO
from tests.tufrepo import Repo

CLI = REPO / "tests" / "conformance" / "tuf_client.py"


class _Served:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.targets: List[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.lstrip("/")     # names as sent: quoted once
                if path.startswith("metadata/"):
                    data = outer.repo.fetch(path[len("metadata/"):])
                else:
                    outer.targets.append(path)
                    data = outer.repo.served.get(path)
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def served() -> Iterator[_Served]:
    repo = Repo(now=int(time.time()))   # the CLI reads the real clock
    s = _Served(repo)
    yield s
    s.server.shutdown()


def _run(*args: str) -> "subprocess.CompletedProcess[str]":
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "AIRGAP_ED25519_BACKEND": "python"}
    return subprocess.run([sys.executable, "-s", "-S", str(CLI), *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.world
def test_init_refresh_download_and_cache(served: _Served, tmp_path: Path) -> None:
    repo = served.repo
    repo.delegate("targets", "?/x", paths=["dir/*"])
    repo.add_target("?/x", "dir/file.txt", b"payload", ("sha256", "sha512"))
    repo.publish(["?/x", "targets"])
    md, td = tmp_path / "md", tmp_path / "td"
    (tmp_path / "root.json").write_bytes(repo.root_bytes(1))
    assert _run("--metadata-dir", str(md), "init", str(tmp_path / "root.json")).returncode == 0
    meta = ["--metadata-url", served.base + "metadata/", "--metadata-dir", str(md)]
    r = _run(*meta, "refresh")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in md.glob("*.json")) == ["root.json", "snapshot.json",
                                                         "targets.json", "timestamp.json"]
    dl = [*meta, "--target-name", "dir/file.txt", "--target-dir", str(td),
          "--target-base-url", served.base + "targets/", "download"]
    r = _run(*dl)
    assert r.returncode == 0, r.stderr
    assert [p.read_bytes() for p in td.iterdir()] == [b"payload"]
    assert (md / "%3F%2Fx.json").is_file() and len(list(md.glob("*.json"))) == 5
    assert _run(*dl).returncode == 0 and len(served.targets) == 1      # cached by hash
    # a substituted artifact never lands, and the exit code is 1 (not argparse's 2)
    for name in list(repo.served):
        if name.startswith("targets/"):
            repo.served[name] = b"evil!!!"
    (td / "dir%2Ffile.txt").unlink()
    r = _run(*dl)
    assert r.returncode == 1 and "does not match" in r.stderr + r.stdout
    assert list(td.iterdir()) == []
    assert _run(*meta, "--bogus", "refresh").returncode == 1
    assert _run(*meta[:2], "--metadata-dir", str(tmp_path / "empty"), "refresh").returncode == 1

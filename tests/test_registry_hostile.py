"""`bundle push`, `bundle repo push` and `bundle pull` against a hostile registry
(``tests.world.hostile.HostileUpstream`` on 127.0.0.1): endless answers to POST and PUT,
artifacts declaring 10^13 bytes, `a` beside `a/b`, drips and kills. THREATS 54, issue 25 rows
1-3. Every run is a child process under RLIMIT_AS (2 GiB), a file-size and a CPU limit; its exit
code, message, time, peak RSS and the files it leaves are asserted."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from installer.sources import remote
from tests.cli_helpers import Outcome, bundle_child
from tests.world.hostile import HostileUpstream, Reply, Route

MAX_RSS_MB = 512
REPO = "edge/ring"
UPLOADS = f"/v2/{REPO}/blobs/uploads/"
SESSION = f"{UPLOADS}session-1"
EMPTY_CONFIG = hashlib.sha256(b"{}").hexdigest()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    with HostileUpstream(tmp_path_factory.mktemp("hostile-registry-tls")) as server:
        yield server


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    for sub in ("home", "tmp", "xdg"):
        (tmp / sub).mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
            "TMPDIR": str(tmp / "tmp"), "XDG_CACHE_HOME": str(tmp / "xdg"),
            "XDG_CONFIG_HOME": str(tmp / "xdg"), "XDG_DATA_HOME": str(tmp / "xdg"),
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **extra}


def _run(args: list[str], tmp: Path, *, timeout: float = 90, **env: str) -> Outcome:
    return bundle_child(args, cwd=tmp, env=_env(tmp, **env), timeout=timeout, limits=_limits)


def _bounded(o: Outcome, *, code: int, says: str, seconds: float = 30) -> None:
    text = o.out + o.err
    assert o.code == code, text[-2000:]
    assert says in text, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    assert o.seconds < seconds, o.seconds
    assert o.rss_mb < MAX_RSS_MB, o.rss_mb


# ---------------------------------------------------------------- row 1: endless answers

def _folder(tmp: Path) -> tuple[Path, str]:
    folder = tmp / "rings"
    (folder / "metadata").mkdir(parents=True)
    data = b'{"signed": {}}\n'
    (folder / "metadata" / "1.root.json").write_bytes(data)
    return folder, hashlib.sha256(data).hexdigest()


def _upload_routes(file_sha: str, stage: str) -> dict[str, Route]:
    """A registry that holds nothing and answers the upload ``stage`` (``post``, ``put`` or
    ``manifest``) with an endless body; the stages before it behave."""
    endless = Reply(status=202 if stage == "post" else 201, endless=True,
                    headers={"Location": SESSION})
    routes: dict[str, Route] = {
        UPLOADS: endless if stage == "post" else Reply(status=202,
                                                       headers={"Location": SESSION}),
        SESSION: endless if stage == "put" else Reply(status=201),
    }
    if stage == "manifest":
        for sha in (file_sha, EMPTY_CONFIG):   # the blobs are there: straight to the PUT
            routes[f"/v2/{REPO}/blobs/sha256:{sha}"] = Reply(status=200)
        routes[f"/v2/{REPO}/manifests/latest"] = endless
    return routes


@pytest.mark.world
@pytest.mark.parametrize("stage", ["post", "put", "manifest"])
@pytest.mark.parametrize("command", ["repo-push", "push"])
def test_an_endless_answer_to_an_upload_is_capped(up: HostileUpstream, tmp_path: Path,
                                                  command: str, stage: str) -> None:
    folder, file_sha = _folder(tmp_path)
    bundle = tmp_path / "h-1.0.0-amd64.tar"
    bundle.write_bytes(b"not really a bundle, the registry does not care\n")
    if command == "push":
        file_sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    routes = _upload_routes(file_sha, stage)
    up.reset(routes)
    target = f"oci://{up.url.split('://')[1]}/{REPO}:latest"
    args = ["repo", "push", str(folder), target] if command == "repo-push" else \
        ["push", str(bundle), target]
    o = _run(args, tmp_path)
    _bounded(o, code=3, says="more than the response cap")


# ---------------------------------------------------------------- rows 2-3: pull

def _artifact(up: HostileUpstream, files: dict[str, tuple[bytes, int | None]], *,
              trickle: float = 0.0, endless: bool = False) -> str:
    """Serve a folder artifact tagged ``latest``: path -> (bytes, declared size or None)."""
    entries = {}
    routes: dict[str, Route] = {}
    for path, (data, declared) in files.items():
        sha = hashlib.sha256(data).hexdigest()
        size = len(data) if declared is None else declared
        entries[path] = (sha, size, remote.FILE_MEDIA_TYPE)
        routes[f"/v2/{REPO}/blobs/sha256:{sha}"] = Reply(body=data, trickle=trickle,
                                                         endless=endless)
    manifest = remote.folder_manifest(entries, artifact_type=remote.FOLDER_ARTIFACT)
    routes[f"/v2/{REPO}/manifests/latest"] = Reply(
        body=manifest, headers={"Content-Type": remote.MANIFEST_MEDIA_TYPE})
    up.reset(routes)
    return f"oci://{up.url.split('://')[1]}/{REPO}:latest"


def _left(out: Path) -> list[str]:
    """Files under ``out`` and under any pull stage beside it."""
    roots = [out, *out.parent.glob(f".{out.name}.pull-*")]
    return sorted(p.relative_to(out.parent).as_posix() for r in roots if r.exists()
                  for p in r.rglob("*") if p.is_file())


@pytest.mark.world
def test_pull_of_a_file_declared_as_ten_tera_bytes_writes_nothing(up: HostileUpstream,
                                                                  tmp_path: Path) -> None:
    url = _artifact(up, {"huge.bin": (b"x", 10 ** 13)}, endless=True)
    out = tmp_path / "out"
    o = _run(["pull", url, "--out", str(out)], tmp_path)
    _bounded(o, code=3, says="over the layer cap")
    assert not out.exists() or not any(out.iterdir())
    assert not [r for r in up.log if "/blobs/" in r.path], "not a byte was asked for"


@pytest.mark.world
def test_pull_of_a_file_and_a_folder_of_the_same_name_is_refused(up: HostileUpstream,
                                                                tmp_path: Path) -> None:
    url = _artifact(up, {"a": (b"one\n", None), "a/b": (b"two\n", None)})
    out = tmp_path / "out"
    o = _run(["pull", url, "--out", str(out)], tmp_path)
    _bounded(o, code=3, says="both a file and the folder")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.world
def test_a_dripping_pull_ends_with_exit_5_and_leaves_nothing(up: HostileUpstream,
                                                            tmp_path: Path) -> None:
    """One byte every half second: the minimum-rate rule (`speed_time=1` here) ends it with
    exit 5, no ChunkedEncodingError traceback; --out holds nothing, nor does its parent."""
    url = _artifact(up, {"ok.txt": (b"fine\n", None), "slow.bin": (b"y" * 4096, None)},
                    trickle=0.0)
    up.routes[f"/v2/{REPO}/blobs/sha256:{hashlib.sha256(b'y' * 4096).hexdigest()}"] = Reply(
        body=b"y" * 4096, trickle=0.5)
    out = tmp_path / "out"
    o = _run(["pull", url, "--out", str(out)], tmp_path, BUNDLE_LIMITS="speed_time=1")
    _bounded(o, code=5, says="fewer than 1024 bytes arrived in 1 s", seconds=20)
    assert _left(out) == []


@pytest.mark.world
def test_a_pull_killed_mid_file_leaves_nothing_unverified_in_out(up: HostileUpstream,
                                                                 tmp_path: Path) -> None:
    """kill -9 while a file drips in: --out holds no `.tmp-*` (the bytes are staged beside
    it); the next pull clears the stage and gets every file."""
    slow = b"z" * 2048
    url = _artifact(up, {"first.txt": (b"first\n", None), "slow.bin": (slow, None)})
    up.routes[f"/v2/{REPO}/blobs/sha256:{hashlib.sha256(slow).hexdigest()}"] = Reply(
        body=slow, trickle=0.05)
    out = tmp_path / "out"
    env = _env(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "bundler", "pull", url, "--out", str(out)],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not any(r.path.endswith(hashlib.sha256(slow).hexdigest()) for r in up.log):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert [f for f in _left(out) if f.startswith("out/")] == []
    up.routes[f"/v2/{REPO}/blobs/sha256:{hashlib.sha256(slow).hexdigest()}"] = Reply(body=slow)
    o = _run(["pull", url, "--out", str(out)], tmp_path)
    assert o.code == 0, o.err
    assert _left(out) == ["out/first.txt", "out/slow.bin"]
    assert (out / "slow.bin").read_bytes() == slow

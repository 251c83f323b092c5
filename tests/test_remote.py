"""Sources a device reads from (installer/sources/remote.py): a folder, and a folder artifact in the
world's real registry (pushed with the test world's push helper)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from installer.errors import ConfigError, DigestMismatch, FormatError, TransferError
from installer.sources import remote
from tests.world import World
from tests.world.push import push_folder_artifact

FILES = {"timestamp.json": b'{"signed": 1}',
         "targets/abc.edge-1.0.0-arm64.tar": os.urandom(300_000)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pushed(world: World) -> str:
    push_folder_artifact(requests.Session(), world.registry.url, "site/ring", files=FILES,
                         tag="stable")
    return f"oci://{world.registry.host}/site/ring:stable"


def test_oci_folder_artifact_read_and_fetch(pushed: str, tmp_path: Path) -> None:
    src = remote.open_source(pushed)
    assert isinstance(src, remote.OciSource)
    assert set(src.entries()) == set(FILES)
    assert src.read("timestamp.json", max_size=1024) == FILES["timestamp.json"]
    big = FILES["targets/abc.edge-1.0.0-arm64.tar"]
    dest = tmp_path / "bundle.tar"
    src.fetch("targets/abc.edge-1.0.0-arm64.tar", str(dest), sha256=_sha(big), size=len(big))
    assert dest.read_bytes() == big
    with pytest.raises(FormatError, match="over 10"):
        src.read("targets/abc.edge-1.0.0-arm64.tar", max_size=10)
    with pytest.raises(TransferError, match="no file"):
        src.read("snapshot.json", max_size=1024)


def test_oci_fetch_refuses_what_the_metadata_does_not_pin(pushed: str, tmp_path: Path) -> None:
    src = remote.open_source(pushed)
    with pytest.raises(DigestMismatch, match="another publication"):
        src.fetch("timestamp.json", str(tmp_path / "t"), sha256="0" * 64, size=13)
    assert not (tmp_path / "t").exists()


def test_folder_source_reads_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    for path, data in FILES.items():
        (tmp_path / path).write_bytes(data)
    os.mkfifo(tmp_path / "fifo.json")
    src = remote.open_source(str(tmp_path))
    assert src.read("timestamp.json", max_size=100) == FILES["timestamp.json"]
    with pytest.raises(FormatError, match="not a regular file"):
        src.read("fifo.json", max_size=100)
    (tmp_path / "link.json").symlink_to(tmp_path / "timestamp.json")
    with pytest.raises(TransferError):
        src.read("link.json", max_size=100)
    for bad in ("../x", "/etc/passwd", ".hidden", "a//b"):
        with pytest.raises(FormatError):
            src.read(bad, max_size=100)
    big = FILES["targets/abc.edge-1.0.0-arm64.tar"]
    with pytest.raises(DigestMismatch):
        src.fetch("targets/abc.edge-1.0.0-arm64.tar", str(tmp_path / "out"),
                  sha256="1" * 64, size=len(big))
    assert not (tmp_path / "out").exists()


def test_folder_manifest_rules() -> None:
    good = remote.folder_manifest({"a.json": ("0" * 64, 1, remote.FILE_MEDIA_TYPE)},
                                  artifact_type=remote.FOLDER_ARTIFACT)
    assert set(remote.parse_folder_manifest(good, what="x")) == {"a.json"}
    with pytest.raises(FormatError):
        remote.folder_manifest({"../a": ("0" * 64, 1, remote.FILE_MEDIA_TYPE)},
                               artifact_type=remote.FOLDER_ARTIFACT)
    with pytest.raises(FormatError, match="not a k3s-airgap"):
        remote.parse_folder_manifest(b'{"layers": []}', what="x")
    with pytest.raises(ConfigError, match="expected a folder"):
        remote.open_source("ftp://example.invalid/x")

"""installer/sources/remote.py picks a source by the URL's scheme from one table: a folder
without a scheme, http(s) mirrors, oci registries; an unknown scheme is refused before any
connection; a new transport is one entry (installer/sources/base.py ``Source``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.errors import ConfigError
from installer.sources import remote
from installer.sources.base import Options, Source
from installer.sources.folder import FolderSource
from installer.sources.mirror import HttpSource
from installer.sources.ociregistry import OciSource


def test_each_scheme_opens_its_transport(tmp_path: Path) -> None:
    assert isinstance(remote.open_source(str(tmp_path)), FolderSource)
    assert isinstance(remote.open_source("http://127.0.0.1:9/rings/"), HttpSource)
    assert isinstance(remote.open_source("https://mirror.invalid/rings/"), HttpSource)
    assert isinstance(remote.open_source("oci://127.0.0.1:9/rings:latest"), OciSource)
    assert sorted(remote.TRANSPORTS) == ["http", "https", "oci"]


@pytest.mark.parametrize("spec", ["ftp://host/rings", "OCI://host/repo", "file:///tmp/x"])
def test_an_unknown_scheme_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected a folder"):
        remote.open_source(spec)


def test_credentials_go_only_to_a_registry() -> None:
    with pytest.raises(ConfigError, match="oci:// sources"):
        remote.open_source("https://mirror.invalid/", credentials=("user", "pw"))  # type: ignore[arg-type]


def test_a_new_transport_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Memory:
        label = "mem://x"

        def read(self, path: str, *, max_size: int) -> bytes:
            return b"{}"

        def fetch(self, path: str, dest: str, *, sha256: str, size: int) -> None:
            raise remote.Missing(path)

    def open_memory(spec: str, options: Options) -> Source:
        assert options.plain_http
        return Memory()

    monkeypatch.setitem(remote.TRANSPORTS, "mem", open_memory)
    src = remote.open_source("mem://x", plain_http=True)
    assert src.read("metadata/1.root.json", max_size=10) == b"{}"

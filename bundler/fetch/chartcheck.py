"""Is this file really the chart it is locked as? (pure over a file's bytes)

A chart repository's ``index.yaml`` may point a chart anywhere, so what comes back is checked
before it is cached or locked as a chart: a gzip-compressed tar (read as a stream, at most
``Limits.chart_unpacked`` bytes decompressed: Helm's own limit) holding ``<name>/Chart.yaml``
(at most ``Limits.chart_file`` bytes) whose ``name`` and ``version`` are the locked ones.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bundler import safeyaml
from bundler.errors import UpstreamError
from bundler.limits import DEFAULT, Limits


class _Capped(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes were read from it."""

    def __init__(self, inner: Any, limit: int, what: str) -> None:
        self.inner, self.limit, self.what, self.count = inner, limit, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.inner.read(len(b))
        self.count += len(data)
        if self.count > self.limit:
            raise UpstreamError(f"{self.what}: decompresses to more than {self.limit} bytes",
                                hint="a compression bomb or not a chart; nothing was kept")
        b[:len(data)] = data
        return len(data)


def check_chart(path: Path, *, name: str, version: str, what: str,
                limits: Limits = DEFAULT) -> None:
    """Raise ``UpstreamError`` unless ``path`` is the chart archive of ``name`` ``version``."""
    found: Any = None
    wanted = (f"{name}/Chart.yaml", f"./{name}/Chart.yaml")
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise UpstreamError(f"{what}: the download is not a gzip archive, so not a "
                                    "chart", hint="the repository's index points at something "
                                    "else; nothing was cached or locked")
            f.seek(0)
            with gzip.GzipFile(fileobj=f) as gz:
                stream = io.BufferedReader(_Capped(gz, limits.chart_unpacked, what))
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        if member.name in wanted and member.isfile():
                            if member.size > limits.chart_file:
                                raise UpstreamError(f"{what}: {member.name} is {member.size} "
                                                    "bytes, over Helm's per-file limit")
                            fobj = tar.extractfile(member)
                            data = fobj.read() if fobj is not None else b""
                            found = safeyaml.load(data.decode("utf-8", "replace"),
                                                  what=f"{what}: {member.name}", limits=limits)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise UpstreamError(f"{what}: the download is not a valid gzip tar archive: "
                            f"{str(e)[:200]}", hint="nothing was cached or locked") from None
    if found is None:
        raise UpstreamError(f"{what}: the archive holds no {name}/Chart.yaml, so it is not "
                            f"chart {name}", hint="the repository's index points at something "
                            "else; nothing was cached or locked")
    got = (found.get("name"), found.get("version")) if isinstance(found, dict) else (None, None)
    if got != (name, version):
        raise UpstreamError(f"{what}: the archive's Chart.yaml says name {str(got[0])[:80]!r} "
                            f"version {str(got[1])[:80]!r}, not {name} {version}",
                            hint="the repository serves another chart under this entry; "
                                 "nothing was cached or locked")


def chart_checker(name: str, version: str, *, what: str,
                  limits: Limits = DEFAULT) -> Callable[[Path], None]:
    return lambda p: check_chart(p, name=name, version=version, what=what, limits=limits)

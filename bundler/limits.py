"""Every cap the builder puts on what upstream sends, in one table (pure).

Upstream hosts are not trusted with the build host's disk, memory or time: every download has a
size cap for its kind (``unpinned`` bodies stop at the cap; pinned sizes an upstream document
declares, or a HEAD ``Content-Length``, over the cap are refused before a byte is fetched), and
every request has an overall deadline of ``deadline_floor + expected bytes / min_rate`` on top
of the between-bytes ``--timeout``. The defaults below are documented in
docs/builder-trust.md; override any of them with ``BUNDLE_LIMITS``, a comma-separated list of
``key=value`` (sizes take ``KiB``/``MiB``/``GiB``/``TiB`` suffixes, durations are seconds)::

    BUNDLE_LIMITS="chart=64MiB,index_yaml=128MiB,min_rate=16KiB" bundle lock
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from typing import Mapping

from bundler.errors import SpecError, UpstreamError

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
ENV_VAR = "BUNDLE_LIMITS"


@dataclass(frozen=True)
class Limits:
    # bytes, per kind of download
    manifest: int = 4 * MiB          # an image manifest or index (registries cap at 4 MiB)
    config: int = 8 * MiB            # an image config blob (usually a few KiB)
    layer: int = 16 * GiB            # one image layer
    chart: int = 32 * MiB            # a chart archive (.tgz)
    chart_unpacked: int = 100 * MiB  # a chart archive decompressed (Helm's own limit)
    chart_file: int = 5 * MiB        # one file in a chart archive (Helm's own limit)
    index_yaml: int = 64 * MiB       # a chart repository's index.yaml
    checksums: int = 1 * MiB         # a K3s sha256sum-<arch>.txt
    install_script: int = 1 * MiB    # install.sh (get.k3s.io is ~40 KiB)
    k3s_binary: int = 512 * MiB      # the K3s binary (~70 MiB)
    airgap_images: int = 4 * GiB     # k3s-airgap-images-<arch>.tar.zst (~200 MiB)
    token: int = 1 * MiB             # a registry token response
    response: int = 1 * MiB          # any other answer read whole (upload, PUT, HEAD)
    pull_total: int = 64 * GiB       # all files of one `bundle pull`
    engine_export: int = 64 * GiB    # one image export from the Docker engine, all members
    # untrusted YAML (index.yaml, Chart.yaml)
    yaml_depth: int = 64             # nesting of mappings/sequences
    yaml_nodes: int = 20_000_000     # scalars + collections in one document
    # what discovery reads (manifest files, rendered templates, YAML embedded in strings)
    manifest_bytes: int = 64 * MiB   # one YAML text
    manifest_nodes: int = 1_000_000  # scalars + collections in one such text
    render_output: int = 64 * MiB    # everything one chart render prints
    render_memory: int = 512 * MiB   # data segment of the process that renders one chart
    render_seconds: float = 300.0    # wall time of one chart render
    helmchart_renders: int = 64      # HelmChart charts rendered per bundle (nested ones too)
    discovery_nodes: int = 20_000_000  # YAML nodes parsed by discovery in all texts of a lock
    discovery_seconds: float = 1800.0  # wall time of discovery for a lock, renders included
    # requests
    redirects: int = 5               # hops followed per request
    deadline_floor: float = 60.0     # seconds every request gets, whatever its size
    min_rate: int = 64 * KiB         # bytes/s: the deadline grows by expected size / min_rate
    speed_limit: int = 1 * KiB       # bytes/s a download must bring over every window ...
    speed_time: float = 30.0         # ... of this many seconds (or --timeout, if shorter)

    def cap(self, kind: str) -> int:
        value = getattr(self, kind)
        assert isinstance(value, int), kind
        return value

    def check_size(self, kind: str, size: object, *, what: str, source: str) -> int:
        """A size declared by upstream (``source`` says where): an int within the cap."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UpstreamError(f"{what}: {source} declares size {size!r}, not a byte count",
                                hint="the upstream document is malformed; nothing was fetched")
        cap = self.cap(kind)
        if size > cap:
            raise UpstreamError(
                f"{what}: {source} declares {size} bytes, over the {kind} cap of "
                f"{human(cap)}", hint=f"if that is real, raise it: {ENV_VAR}=\"{kind}="
                f"<size>\" (docs/builder-trust.md)")
        return size

    def deadline(self, expected: int | None) -> float:
        """Seconds a request that should bring ``expected`` bytes may take in all."""
        return self.deadline_floor + max(0, expected or 0) / self.min_rate

    @classmethod
    def parse(cls, text: str, *, source: str = ENV_VAR) -> Limits:
        """``key=value,key=value`` over the defaults; a bad key or value is a SpecError."""
        known = {f.name: f.type for f in fields(cls)}
        changes: dict[str, int | float] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise SpecError(f"{source}: {item!r} is not key=value with a known key",
                                hint=f"keys: {', '.join(sorted(known))}")
            try:
                changes[key] = (float(value) if known[key] == "float"
                                else parse_size(value))
            except ValueError:
                raise SpecError(f"{source}: {key}={value!r} is not a valid value",
                                hint="sizes like 64MiB or 1048576; seconds like 30") from None
            if changes[key] <= 0:
                raise SpecError(f"{source}: {key} must be positive")
        return replace(cls(), **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        text = (os.environ if env is None else env).get(ENV_VAR, "")
        return cls.parse(text) if text.strip() else cls()


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)?\s*$")
_UNITS = {None: 1, "B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": 1024 * GiB}


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _UNITS[m.group(2)]


def human(n: int) -> str:
    """A cap spelled exactly, as BUNDLE_LIMITS takes it back ("4 MiB", "4000000 bytes"); sizes
    for reading are ``installer.policy.human_bytes``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


DEFAULT = Limits()

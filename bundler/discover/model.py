"""Discovery's data model: what a finding is, what a chart input is (no I/O).

A ``Finding`` is one place where a manifest or a rendered chart asks for an image, or one
thing discovery could not look into. ``kind`` says which:

- ``image``: an image reference, fully qualified by :func:`bundler.spec.refs.normalize`.
- ``local_only``: an image that looks built on the user's machine and not pullable from any
  registry (see :mod:`bundler.discover.localonly` for the rule); it still has to be in the
  bundle, but the builder cannot fetch it: the user has to supply it.
- ``declared``: an image a chart lists in a ``Chart.yaml`` annotation
  (``artifacthub.io/images``) that the render with the given values does not use. A hint,
  never a requirement.
- ``unrendered``: a chart (K3s ``HelmChart``, Flux ``HelmRelease``, an explicit chart input)
  that could not be rendered; ``detail`` says why. Its images are unknown.
- ``invalid``: a field that should hold an image but holds something that is not a valid
  reference (an unknown ``%{...}%`` placeholder, a template left over), or a YAML document
  that could not be parsed. ``image`` is empty or the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "image"
LOCAL_ONLY = "local_only"
DECLARED = "declared"
UNRENDERED = "unrendered"
INVALID = "invalid"

KINDS = (IMAGE, LOCAL_ONLY, DECLARED, UNRENDERED, INVALID)
#: Kinds whose ``image`` a bundle must carry.
REQUIRED_KINDS = (IMAGE, LOCAL_ONLY)
#: Kinds that mean "discovery could not see everything here": a gate must fail closed on them.
BLIND_KINDS = (UNRENDERED, INVALID)


@dataclass(frozen=True)
class Finding:
    """One image reference (or one blind spot) and where it comes from."""

    image: str
    source: str
    location: str
    kind: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r} (one of {', '.join(KINDS)})")


@dataclass(frozen=True)
class ChartInput:
    """A chart the bundle ships, rendered like ``helm template NAME CHART -n NAMESPACE -f ...``.

    ``archive_or_dir`` is a chart directory or a ``.tgz``; ``values_files`` are merged in order,
    later files winning (Helm's own ``-f`` semantics).
    """

    name: str
    archive_or_dir: Path
    values_files: tuple[Path, ...] = field(default_factory=tuple)
    namespace: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "archive_or_dir", Path(self.archive_or_dir))
        object.__setattr__(self, "values_files", tuple(Path(p) for p in self.values_files))

"""What every image source gives the builder (``ImageSource``), and which one serves a
reference: its transport prefix (``docker-daemon:`` or none) is the key of
``Sources.image_sources``. A new kind of source is one new module implementing this protocol
plus one entry in that table; ``lock`` and ``build`` never ask which kind they hold.

Implementations: ``registrysource.RegistrySource`` (OCI registries) and
``daemon.EngineSource`` (the local Docker engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bundler.errors import SpecError
from bundler.fetch.oci import Fetched
from bundler.spec.lockfile import ImageLock
from bundler.spec.refs import ImageRef


class ImageSource(Protocol):
    def lock(self, ref: ImageRef, arches: tuple[str, ...], *, what: str) -> ImageLock:
        """Lock time: pin ``ref`` for every arch (a lookup: refused with ``--frozen``)."""

    def manifest(self, ref: ImageRef, digest: str, *, size: int, what: str) -> Fetched:
        """Build time: the locked platform manifest ``digest`` of ``ref``."""

    def blob(self, ref: ImageRef, *, manifest: str, digest: str, declared: object,
             what: str, kind: str) -> Path:
        """Build time: a blob of the locked platform manifest ``manifest``, in the cache;
        ``declared`` is checked against the ``kind``'s cap first."""


def frozen_refusal(what: str) -> SpecError:
    """The one wording of a lookup ``--frozen`` forbids."""
    return SpecError(f"--frozen: {what} would need a network lookup",
                     hint="drop --frozen, or run `bundle lock` first")

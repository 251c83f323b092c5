"""`bundles.lock`: the model, its stable JSON form, and drift between two locks (pure).

The file is pretty-printed JSON with sorted keys and sorted lists, so the same resolution
always gives the same bytes and a change shows as a small diff. Every artifact is pinned by
sha256 (or OCI digest) and size, per architecture.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import SpecError
from bundler.spec.refs import MEDIA_TYPES
from installer.format import canonjson

LOCK_VERSION = 1


@dataclass(frozen=True)
class FileLock:
    url: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "sha256": self.sha256, "size": self.size}

    @staticmethod
    def from_json(d: dict[str, Any]) -> FileLock:
        return FileLock(url=d["url"], sha256=d["sha256"], size=d["size"])


@dataclass(frozen=True)
class PlatformLock:
    digest: str        # platform manifest digest
    size: int
    media_type: str
    config: str        # config blob digest (checked for architecture at lock time)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "media_type": self.media_type,
                "config": self.config}

    @staticmethod
    def from_json(d: dict[str, Any], *, where: str = "image") -> PlatformLock:
        return PlatformLock(d["digest"], d["size"], _media_type(d, where=where), d["config"])


@dataclass(frozen=True)
class ImageLock:
    ref: str           # normalised reference as in the spec
    digest: str        # what the tag resolved to (index or single manifest)
    media_type: str
    platforms: dict[str, PlatformLock]

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "media_type": self.media_type,
                "platforms": {a: p.to_json() for a, p in sorted(self.platforms.items())}}

    @staticmethod
    def from_json(d: dict[str, Any]) -> ImageLock:
        ref = d["ref"]
        return ImageLock(ref, d["digest"], _media_type(d, where=f"image {str(ref)[:200]!r}"),
                         {a: PlatformLock.from_json(p, where=f"image {str(ref)[:200]!r} "
                                                             f"platform {str(a)[:50]!r}")
                          for a, p in d["platforms"].items()})


def _media_type(d: dict[str, Any], *, where: str) -> str:
    """A locked media type, which must be one of the OCI/Docker types the builder knows
    (bundler.spec.refs.MEDIA_TYPES): the lock is edited by hand and signed into bundles."""
    value = d["media_type"]
    if not isinstance(value, str) or value not in MEDIA_TYPES:
        raise SpecError(f"bundles.lock: {where}: field media_type {str(value)[:100]!r} is not "
                        "an OCI or Docker image index/manifest media type",
                        hint="restore the lock from version control or re-run `bundle lock`")
    return value


@dataclass(frozen=True)
class ChartLock:
    name: str
    version: str
    repo: str
    url: str           # archive URL (http repos) or oci://host/repo@manifest-digest
    sha256: str        # of the .tgz
    size: int
    namespace: str
    release: str
    values: tuple[FileLock, ...] = ()   # values files: url is the path relative to the spec

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "repo": self.repo, "url": self.url,
                "sha256": self.sha256, "size": self.size, "namespace": self.namespace,
                "release": self.release, "values": [v.to_json() for v in self.values]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> ChartLock:
        return ChartLock(d["name"], d["version"], d["repo"], d["url"], d["sha256"], d["size"],
                         d["namespace"], d["release"],
                         tuple(FileLock.from_json(v) for v in d.get("values", [])))


@dataclass(frozen=True)
class K3sLock:
    version: str
    install_script: FileLock
    binaries: dict[str, FileLock]
    airgap_images: dict[str, FileLock]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "install_script": self.install_script.to_json(),
                "binaries": {a: f.to_json() for a, f in sorted(self.binaries.items())},
                "airgap_images": {a: f.to_json() for a, f in sorted(self.airgap_images.items())}}

    @staticmethod
    def from_json(d: dict[str, Any]) -> K3sLock:
        return K3sLock(d["version"], FileLock.from_json(d["install_script"]),
                       {a: FileLock.from_json(f) for a, f in d["binaries"].items()},
                       {a: FileLock.from_json(f) for a, f in d["airgap_images"].items()})


@dataclass(frozen=True)
class BundleLock:
    name: str
    version: str
    arch: tuple[str, ...]
    roles: tuple[str, ...]
    k3s: K3sLock
    images: tuple[ImageLock, ...]
    charts: tuple[ChartLock, ...]
    manifests: tuple[FileLock, ...]   # url = path relative to the spec folder
    allow_k3s_minor_skip: bool = False
    allow_k3s_downgrade: bool = False
    discovered: tuple[str, ...] = ()  # images added by `lock --add-discovered`, not in spec

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "arch": list(self.arch), "roles": list(self.roles),
            "discovered": sorted(self.discovered),
            "k3s": self.k3s.to_json(),
            "images": [i.to_json() for i in sorted(self.images, key=lambda i: i.ref)],
            "charts": [c.to_json() for c in sorted(self.charts, key=lambda c: c.name)],
            "manifests": [m.to_json() for m in sorted(self.manifests, key=lambda m: m.url)],
            "upgrade": {"allow_k3s_minor_skip": self.allow_k3s_minor_skip,
                        "allow_k3s_downgrade": self.allow_k3s_downgrade},
        }

    @staticmethod
    def from_json(name: str, d: dict[str, Any]) -> BundleLock:
        up = d.get("upgrade", {})
        return BundleLock(
            name=name, version=d["version"], arch=tuple(d["arch"]), roles=tuple(d["roles"]),
            k3s=K3sLock.from_json(d["k3s"]),
            images=tuple(ImageLock.from_json(i) for i in d["images"]),
            charts=tuple(ChartLock.from_json(c) for c in d["charts"]),
            manifests=tuple(FileLock.from_json(m) for m in d["manifests"]),
            allow_k3s_minor_skip=up.get("allow_k3s_minor_skip", False),
            allow_k3s_downgrade=up.get("allow_k3s_downgrade", False),
            discovered=tuple(d.get("discovered", [])))

    def digest(self) -> str:
        """Identity of this bundle's pinned content (goes into the bundle manifest)."""
        return "sha256:" + hashlib.sha256(canonjson.encode(self.to_json())).hexdigest()

    def image(self, ref: str) -> ImageLock:
        for i in self.images:
            if i.ref == ref:
                return i
        raise KeyError(ref)


@dataclass(frozen=True)
class Lock:
    spec_digest: str
    source_date_epoch: int
    bundles: dict[str, BundleLock] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"lock_version": LOCK_VERSION, "spec_digest": self.spec_digest,
                "source_date_epoch": self.source_date_epoch,
                "bundles": {n: b.to_json() for n, b in sorted(self.bundles.items())}}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @staticmethod
    def loads(text: str, *, path: Path) -> Lock:
        try:
            d = json.loads(text)
            if d.get("lock_version") != LOCK_VERSION:
                raise SpecError(f"{path}: lock_version {d.get('lock_version')!r} is not "
                                f"supported (expected {LOCK_VERSION})",
                                hint="re-run `bundle lock` with this version of the tool")
            return Lock(spec_digest=d["spec_digest"],
                        source_date_epoch=int(d["source_date_epoch"]),
                        bundles={n: BundleLock.from_json(n, b)
                                 for n, b in d["bundles"].items()})
        except SpecError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"{path}: not a valid bundles.lock ({type(e).__name__}: {e})",
                            hint="restore it from version control or re-run `bundle lock`") \
                from None


def read_lock(path: Path) -> Lock:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"lock file {path} not found",
                        hint="run `bundle lock` first (it writes bundles.lock)") from None
    return Lock.loads(text, path=path)


def drift(old: Lock, new: Lock) -> list[str]:
    """Human-readable differences between a lock on disk and a fresh resolution."""
    out: list[str] = []
    if old.spec_digest != new.spec_digest:
        out.append("spec changed since the lock was written (bundles.toml or its files)")
    for name in sorted(set(old.bundles) | set(new.bundles)):
        if name not in new.bundles:
            out.append(f"bundle {name}: in the lock but no longer in the spec")
            continue
        if name not in old.bundles:
            out.append(f"bundle {name}: in the spec but not in the lock")
            continue
        _diff(f"bundle {name}", old.bundles[name].to_json(), new.bundles[name].to_json(), out=out)
    return out


def _key_of(item: Any) -> str | None:
    if isinstance(item, dict):
        for k in ("ref", "name", "url"):
            if k in item:
                return str(item[k])
    return None


def _diff(where: str, a: Any, b: Any, *, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{where}.{k}: gone (was {_short(a[k])})")
            elif k not in a:
                out.append(f"{where}.{k}: new ({_short(b[k])})")
            else:
                _diff(f"{where}.{k}", a[k], b[k], out=out)
    elif isinstance(a, list) and isinstance(b, list) and all(_key_of(x) for x in a + b):
        ka = {str(_key_of(x)): x for x in a}
        kb = {str(_key_of(x)): x for x in b}
        for k in sorted(set(ka) | set(kb)):
            if k not in kb:
                out.append(f"{where}[{k}]: no longer resolvable or removed")
            elif k not in ka:
                out.append(f"{where}[{k}]: added")
            else:
                _diff(f"{where}[{k}]", ka[k], kb[k], out=out)
    elif a != b:
        out.append(f"{where}: {_short(a)} -> {_short(b)}")


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 100 else text[:97] + "..."

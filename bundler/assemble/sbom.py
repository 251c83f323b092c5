"""The bundle's software bill of materials: CycloneDX 1.6 JSON, built with
cyclonedx-python-lib. Pure: bytes from the bundle's own description, nothing read or fetched.

One document per bundle file (so per architecture). Components:

- every payload member with its SHA-256 and size: the K3s binary (``application``, purl
  ``pkg:github/k3s-io/k3s@<version>``), ``install.sh``, image archives, charts
  (``application`` with name and version), manifests (``file``);
- every image, by the digest of its platform manifest for this arch (``container``, purl
  ``pkg:oci/<name>@<digest>?arch=..&repository_url=..&tag=..``), listed as a dependency of
  the archive that carries it.

Reproducible like the bundle: the timestamp is the lock's ``source_date_epoch`` and the serial
number a UUID derived from the bundle's identity and content, so the same lock gives the same
bytes. The document is itself a signed member (``sbom/bom.cdx.json``): the manifest pins it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from bundler.spec.refs import parse_image_ref
from installer.format.bundlefmt import ChartEntry, ImageEntry, Member

SBOM_PATH = "sbom/bom.cdx.json"
SBOM_KIND = "sbom"
SPEC_VERSION = "1.6"
_PROP = "k3s-airgap"   # property namespace
_SERIAL_NS = uuid.UUID("0b6f3f3e-6a55-4d7e-9d0c-2f1c5b1a7e10")


def _sha256(hex_digest: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=hex_digest)]


def _props(**values: str) -> list[Property]:
    return [Property(name=f"{_PROP}:{k}", value=v) for k, v in sorted(values.items()) if v]


def _member(m: Member, *, k3s_version: str, charts: dict[str, ChartEntry]) -> Component:
    ref = f"member:{m.path}"
    props = _props(member=m.path, kind=m.kind, size=str(m.size))
    file_name = m.path.split("/", 1)[1]
    if m.kind == "k3s-binary":
        return Component(name="k3s", version=k3s_version, type=ComponentType.APPLICATION,
                         bom_ref=ref, hashes=_sha256(m.sha256), properties=props,
                         purl=PackageURL("github", "k3s-io", "k3s", k3s_version))
    if m.kind == "chart" and m.path in charts:
        c = charts[m.path]
        return Component(name=c.name, version=c.version, type=ComponentType.APPLICATION,
                         bom_ref=ref, hashes=_sha256(m.sha256),
                         properties=props + _props(namespace=c.namespace))
    return Component(name=file_name, type=ComponentType.FILE, bom_ref=ref,
                     hashes=_sha256(m.sha256), properties=props)


def _image(img: ImageEntry, arch: str) -> Component:
    r = parse_image_ref(img.ref)
    algo, _, hex_digest = img.digest.partition(":")
    qualifiers = {"arch": arch, "repository_url": r.name}
    if r.tag:
        qualifiers["tag"] = r.tag
    return Component(
        name=r.name, version=r.tag or img.digest, type=ComponentType.CONTAINER,
        bom_ref=f"image:{img.ref}",
        hashes=_sha256(hex_digest) if algo == "sha256" else None,
        purl=PackageURL("oci", None, r.repository.rsplit("/", 1)[-1], img.digest,
                        qualifiers=qualifiers),
        properties=_props(ref=img.ref, digest=img.digest, index_digest=img.index_digest,
                          archive=img.archive))


def serial_number(*, name: str, version: str, arch: str, members: Sequence[Member]) -> uuid.UUID:
    """A serial number that changes exactly when the bundle's content does."""
    content = "\n".join(f"{m.path} {m.sha256}" for m in members)
    seed = f"{name} {version} {arch}\n{hashlib.sha256(content.encode()).hexdigest()}"
    return uuid.uuid5(_SERIAL_NS, seed)


def bom_json(*, name: str, version: str, arch: str, k3s_version: str, created: int,
             members: Sequence[Member], images: Sequence[ImageEntry],
             charts: Sequence[ChartEntry]) -> bytes:
    """The CycloneDX document for one bundle file, as UTF-8 JSON bytes (ends in a newline)."""
    bom = Bom(serial_number=serial_number(name=name, version=version, arch=arch,
                                          members=members))
    bom.metadata.timestamp = datetime.fromtimestamp(created, UTC)
    bundle = Component(name=name, version=version, type=ComponentType.APPLICATION,
                       bom_ref=f"bundle:{name}-{version}-{arch}",
                       properties=_props(arch=arch, k3s=k3s_version))
    bom.metadata.component = bundle
    by_path = {c.path: c for c in charts}
    parts = {m.path: _member(m, k3s_version=k3s_version, charts=by_path) for m in members}
    pictures = {i.ref: _image(i, arch) for i in images}
    for comp in [*parts.values(), *pictures.values()]:
        bom.components.add(comp)
    bom.dependencies.add(Dependency(ref=bundle.bom_ref, dependencies=[
        Dependency(ref=c.bom_ref) for c in parts.values()]))
    for path, comp in parts.items():
        inside = [pictures[i.ref] for i in images if i.archive == path]
        if inside:
            bom.dependencies.add(Dependency(ref=comp.bom_ref, dependencies=[
                Dependency(ref=c.bom_ref) for c in inside]))
    return (JsonV1Dot6(bom).output_as_string(indent=1) + "\n").encode()


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What `bundle inspect` shows of an SBOM: format, version, and component counts."""
    components = doc.get("components")
    counts: dict[str, int] = {}
    for c in components if isinstance(components, list) else []:
        kind = str(c.get("type")) if isinstance(c, dict) else "?"
        counts[kind] = counts.get(kind, 0) + 1
    return {"format": f"{doc.get('bomFormat')} {doc.get('specVersion')}",
            "serial_number": doc.get("serialNumber"), "components": counts}

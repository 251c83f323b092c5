"""Airgap lint: what in a bundle's manifests and charts works online but fails on a cluster
with no registry (run by `bundle check` and `bundle lock`; docs/user-guide.md, "Airgap lint").

Codes (each warning names the file, the object and, for containers, the container):

- ``pull-always``: a container with ``imagePullPolicy: Always``. The kubelet then asks a
  registry every time the pod starts, although the image is in containerd already; with no
  registry reachable the pod never starts.
- ``latest-tag`` / ``untagged-image``: an image ``:latest`` or with no tag (which means
  ``:latest``). Kubernetes defaults such a container to ``imagePullPolicy: Always``, and the
  tag names different bytes tomorrow. An image pinned by digest is fine either way.
- ``undefined-kind``: a custom resource whose kind no CustomResourceDefinition in the bundle
  (a manifest, a chart's ``crds/`` or templates) or aggregated ``APIService`` defines, and that
  K3s itself does not ship: applying it fails until something installs the CRD, and in an
  airgap nothing will (e.g. a MetalLB ``IPAddressPool`` without MetalLB).

:func:`lint_documents` is pure (objects in, warnings out); :func:`bundle_documents` reads the
manifest files and renders the charts (offline, in a capped child process) the way discovery
does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.discover import ChartInput, yamldocs
from bundler.discover import k3s as k3s_placeholders

# discovery's own file walk, reader and renderer, so lint sees exactly what discovery sees
from bundler.discover.core import manifest_paths, read_manifest
from bundler.discover.helm import compose_values, open_chart, render_loaded
from bundler.errors import SpecError, UpstreamError

PULL_ALWAYS = "pull-always"
LATEST_TAG = "latest-tag"
UNTAGGED = "untagged-image"
UNDEFINED_KIND = "undefined-kind"
CODES = (PULL_ALWAYS, LATEST_TAG, UNTAGGED, UNDEFINED_KIND)

#: API groups the Kubernetes API server of K3s v1.34 serves itself (no CRD needed).
#: ``metrics.k8s.io`` is K3s's packaged metrics-server (an aggregated API).
BUILTIN_GROUPS = frozenset({
    "", "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io",
    "apps", "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch",
    "certificates.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io",
    "flowcontrol.apiserver.k8s.io", "internal.apiserver.k8s.io", "networking.k8s.io",
    "node.k8s.io", "policy", "rbac.authorization.k8s.io", "resource.k8s.io",
    "scheduling.k8s.io", "storage.k8s.io", "storagemigration.k8s.io", "metrics.k8s.io",
})

#: Custom resource kinds K3s's server registers itself, by (group, kind):
#: - helm.cattle.io HelmChart, HelmChartConfig: helm-controller's CRDs, registered by the
#:   server unless --disable-helm-controller (``crds()`` in
#:   https://github.com/k3s-io/k3s/blob/master/pkg/server/server.go: helmcrd.List());
#: - k3s.cattle.io Addon, ETCDSnapshotFile: ``List()`` in
#:   https://github.com/k3s-io/k3s/blob/master/pkg/crd/crds.go (addoncrd.List() there).
K3S_KINDS = frozenset({
    ("helm.cattle.io", "HelmChart"), ("helm.cattle.io", "HelmChartConfig"),
    ("k3s.cattle.io", "Addon"), ("k3s.cattle.io", "ETCDSnapshotFile"),
})

#: Groups whose every kind K3s ships while its packaged Traefik is enabled (the default): the
#: ``traefik-crd`` HelmChart of https://github.com/k3s-io/k3s/blob/master/manifests/traefik.yaml
#: installs the upstream traefik chart's ``crds/`` folder (K3s's scripts/download fetches
#: ``traefik-crd-<version>.tgz`` beside ``traefik-<version>.tgz``). At chart 37.1.0 that folder
#: holds the traefik.io and hub.traefik.io CRDs and Gateway API's standard install
#: (traefik/traefik-helm-chart traefik/crds/, copied in ../shared/fixtures/real/charts/);
#: traefik.containo.us is the group of Traefik v2, still served by older K3s releases.
#: A cluster installed with ``--disable traefik`` does not have these.
K3S_TRAEFIK_GROUPS = frozenset({
    "traefik.io", "traefik.containo.us", "hub.traefik.io", "gateway.networking.k8s.io",
})

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_CRD_GROUP = "apiextensions.k8s.io"


@dataclass(frozen=True)
class LintWarning:
    """One airgap lint finding; ``object`` is ``Kind namespace/name`` (plus the container)."""

    code: str
    file: str
    object: str
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "file": self.file, "object": self.object,
                "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return f"[{self.code}] {self.file}: {self.object}: {self.message} ({self.hint})"


@dataclass(frozen=True)
class Document:
    """One parsed Kubernetes object and the file (or chart template) it came from."""

    source: str
    obj: Mapping[str, Any]


def _group(api_version: object) -> str | None:
    if not isinstance(api_version, str) or not api_version:
        return None
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _label(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, ns = meta.get("name") or "?", meta.get("namespace")
    return f"{obj.get('kind') or '?'} {ns}/{name}" if ns else f"{obj.get('kind') or '?'} {name}"


def _containers(node: Any, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """Every container mapping of any pod spec inside ``node`` (custom resources included)."""
    if depth > 64:
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in _CONTAINER_LISTS and isinstance(value, list):
                yield from (c for c in value if isinstance(c, Mapping))
            else:
                yield from _containers(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item, depth + 1)


def image_tag(image: str) -> tuple[str | None, bool]:
    """``(tag, pinned)`` of an image reference as written: the tag (``None`` if absent) and
    whether it is pinned by digest."""
    name, at, _digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else None
    return tag, bool(at)


def defined_kinds(docs: Iterable[Document]) -> tuple[set[tuple[str, str]], set[str]]:
    """``(kinds, groups)`` the documents define: (group, kind) of each CRD, and each group an
    ``APIService`` serves (every kind of it)."""
    kinds: set[tuple[str, str]] = set()
    groups: set[str] = set()
    for d in docs:
        spec = d.obj.get("spec")
        if not isinstance(spec, Mapping):
            continue
        group = _group(d.obj.get("apiVersion"))
        if d.obj.get("kind") == "CustomResourceDefinition" and group == _CRD_GROUP:
            names = spec.get("names")
            if isinstance(names, Mapping) and isinstance(spec.get("group"), str):
                kinds.add((spec["group"], str(names.get("kind"))))
        elif d.obj.get("kind") == "APIService" and group == "apiregistration.k8s.io" \
                and isinstance(spec.get("group"), str) and spec.get("service"):
            groups.add(spec["group"])
    return kinds, groups


def _image_warnings(d: Document) -> Iterator[LintWarning]:
    label = _label(d.obj)
    for c in _containers(d.obj.get("spec")):
        where = f"{label} container {c.get('name') or '?'}"
        image = c.get("image")
        if c.get("imagePullPolicy") == "Always":
            yield LintWarning(
                PULL_ALWAYS, d.source, where,
                f"imagePullPolicy: Always ({image}): the kubelet asks a registry each time "
                "the pod starts, so with none reachable it never starts",
                "set imagePullPolicy: IfNotPresent (the image is already on the node)")
        if not isinstance(image, str) or not image or k3s_placeholders.unknown_placeholders(
                image) or "{{" in image or any(ch.isspace() for ch in image):
            continue  # no image, or not a reference: discovery reports it
        tag, pinned = image_tag(image)
        if pinned:
            continue
        if tag is None:
            yield LintWarning(
                UNTAGGED, d.source, where,
                f"image {image} has no tag: that means :latest, pulled with "
                "imagePullPolicy: Always unless set, and it names other bytes tomorrow",
                "pin a version tag (or a digest: name:tag@sha256:...)")
        elif tag == "latest":
            yield LintWarning(
                LATEST_TAG, d.source, where,
                f"image {image} uses :latest: pulled with imagePullPolicy: Always unless "
                "set, and it names other bytes tomorrow",
                "pin a version tag (or a digest: name:tag@sha256:...)")


def lint_documents(docs: Iterable[Document]) -> list[LintWarning]:
    """Every airgap lint warning for one bundle's objects (manifests and rendered charts,
    chart ``crds/`` included), in document order. Pure."""
    docs = list(docs)
    kinds, groups = defined_kinds(docs)
    out: list[LintWarning] = []
    for d in docs:
        out += _image_warnings(d)
        group, kind = _group(d.obj.get("apiVersion")), d.obj.get("kind")
        if group is None or not isinstance(kind, str) or group in BUILTIN_GROUPS:
            continue
        if (group, kind) in kinds or group in groups or (group, kind) in K3S_KINDS \
                or group in K3S_TRAEFIK_GROUPS:
            continue
        out.append(LintWarning(
            UNDEFINED_KIND, d.source, _label(d.obj),
            f"{kind} ({group}) is a custom resource that no manifest or chart of the bundle "
            "defines and K3s does not ship: applying it fails until its CRD is installed",
            "add the manifest or chart that defines it (its CRDs) to the bundle, or drop "
            "this object"))
    return out


def _parsed(texts: Iterable[str], source: str) -> list[Document]:
    docs: list[Document] = []
    for text in texts:
        try:
            loaded = yamldocs.load_all(text, what=source)
        except UpstreamError:
            continue  # discovery reports documents that do not parse or are refused
        for obj in loaded:
            items = obj.get("items") if isinstance(obj, Mapping) and str(
                obj.get("kind", "")).endswith("List") else None
            for item in items if isinstance(items, list) else [obj]:
                if isinstance(item, Mapping):
                    docs.append(Document(source, item))
    return docs


def bundle_documents(manifests: list[Path], charts: list[ChartInput], *,
                     base: Path | None = None) -> list[Document]:
    """The objects of a bundle: each manifest file (K3s placeholders substituted, split like
    Kubernetes does; ``<file>.skip`` honoured), then each chart rendered with its values like
    ``helm template`` (sources ``name@version:template``) plus the chart's ``crds/``. A chart
    that does not render adds nothing (discovery reports it). Paths are shown relative to
    ``base`` when under it."""
    docs: list[Document] = []
    for path in manifest_paths(manifests):
        shown = str(path)
        if base is not None:
            try:
                shown = str(path.relative_to(base))
            except ValueError:
                pass
        text = k3s_placeholders.substitute(read_manifest(path))
        docs += _parsed(yamldocs.split_manifest(text), shown)
    for chart in charts:
        try:
            loaded = open_chart(chart.archive_or_dir)
        except SpecError:
            continue
        try:
            ident = f"{loaded.name}@{loaded.version}"
            values = compose_values(chart.values_files)
            for template, text in render_loaded(loaded, values, release=chart.name,
                                                namespace=chart.namespace):
                docs += _parsed(yamldocs.split_helm(text), f"{ident}:{template}")
            for crd in loaded.crds:
                docs += _parsed(yamldocs.split_helm(str(crd.get("data", ""))),
                                f"{ident}:{crd.get('filename') or crd.get('name')}")
        except SpecError:
            continue
        finally:
            loaded.close()
    return docs


def lint_text(by_bundle: Mapping[str, list[LintWarning]]) -> str:
    """The warnings as lines for stderr, per bundle (empty when there are none)."""
    lines = []
    for name, warnings in sorted(by_bundle.items()):
        for w in warnings:
            lines.append(f"warning: bundle {name}: {w}")
    return "\n".join(lines)


def lint_json(by_bundle: Mapping[str, list[LintWarning]]) -> list[dict[str, str]]:
    """The warnings as the ``warnings`` list of ``--json`` output (each with its bundle)."""
    return [{"bundle": name, **w.to_json()}
            for name, warnings in sorted(by_bundle.items()) for w in warnings]


def lint_error(by_bundle: Mapping[str, list[LintWarning]]) -> SpecError:
    """What ``--strict`` raises when there is any warning (exit 2); ``details`` carries the
    ``warnings`` list for the ``--json`` error object."""
    count = sum(len(w) for w in by_bundle.values())
    error = SpecError(f"airgap lint: {count} problem(s) (--strict makes them errors):\n"
                      + lint_text(by_bundle).replace("warning: ", "  "),
                      hint="fix each as its hint says, or drop --strict to only warn")
    error.details = {"warnings": lint_json(by_bundle)}
    return error

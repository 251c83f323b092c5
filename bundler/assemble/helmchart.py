"""Generate K3s `HelmChart` manifests (helm.cattle.io/v1) for bundled charts (pure).

The chart archive is placed in ``/var/lib/rancher/k3s/server/static/charts/`` and served by
the apiserver, so ``spec.chart`` is ``https://%{KUBERNETES_API}%/static/charts/<file>``:
the helm-controller installs it with no network beyond the cluster
(https://docs.k3s.io/add-ons/helm#using-the-helm-controller). Values files are merged in
order with Helm's rules (maps merge, everything else replaces, null deletes a key) into one
``valuesContent``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bundler.errors import SpecError
from bundler.spec.lockfile import ChartLock

_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def file_name(release: str) -> str:
    return f"helmchart-{release}.yaml"


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = v
    return out


def load_values(files: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise SpecError(f"values file {f} is not valid YAML: {e}") from None
        if not isinstance(doc, dict):
            raise SpecError(f"values file {f} must hold a YAML mapping")
        merged = merge_values(merged, doc)
    return merged


def render(chart: ChartLock, archive_name: str, values_files: list[Path]) -> bytes:
    if not _RFC1123.match(chart.release) or len(chart.release) > 53:
        raise SpecError(f"chart release name {chart.release!r} is not a valid Helm release "
                        "name (lowercase RFC 1123, at most 53 characters)")
    spec: dict[str, Any] = {
        "chart": f"https://%{{KUBERNETES_API}}%/static/charts/{archive_name}",
        "version": chart.version,
        "targetNamespace": chart.namespace,
        "createNamespace": True,
    }
    values = load_values(values_files)
    if values:
        spec["valuesContent"] = yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
    doc = {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": chart.release, "namespace": "kube-system"},
        "spec": spec,
    }
    text: str = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    return text.encode()

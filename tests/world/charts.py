"""Small but real Helm charts, packaged like ``helm package``, and a Helm repo ``index.yaml``.

What it does: builds the ``demo-app`` chart (versions 0.1.0 and 0.2.0) as deterministic
``.tgz`` archives, and writes an HTTP chart repository folder (``index.yaml`` in Helm's
``apiVersion: v1`` index format plus the archives). The chart exercises image discovery:

- the main image is split over ``image.repository`` and ``image.tag``, the tag defaulting to
  ``.Chart.AppVersion`` (0.1.0 -> ``docker.io/library/nginx:1.27``, 0.2.0 -> ``:1.28``);
- the init container image is set only in values (``initImage``,
  ``docker.io/library/busybox:1.37``);
- ``extra.image`` (``docker.io/library/alpine:3.20``) is disabled by default: a correct
  renderer does not report it.

What it does not do: render templates (that is the project's job, or Helm's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .oci import LayerFile, targz_bytes

CREATED = "2023-11-14T22:13:20Z"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-demo-app
  labels:
    app.kubernetes.io/name: demo-app
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      initContainers:
        - name: init
          image: {{ .Values.initImage }}
          command: ["sh", "-c", "true"]
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          ports:
            - containerPort: 80
        {{- if .Values.extra.enabled }}
        - name: extra
          image: {{ .Values.extra.image | quote }}
        {{- end }}
"""  # noqa: E501 - the main image line is the idiom real charts use

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-demo-app
spec:
  selector:
    app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
    - port: {{ .Values.service.port }}
      targetPort: 80
"""

VALUES = """\
replicaCount: 1
image:
  repository: docker.io/library/nginx
  # empty: the template falls back to .Chart.AppVersion
  tag: ""
  pullPolicy: IfNotPresent
# only set here, used verbatim by the template
initImage: docker.io/library/busybox:1.37
extra:
  enabled: false
  image: docker.io/library/alpine:3.20
service:
  port: 80
"""


@dataclass(frozen=True)
class ChartArchive:
    """A packaged chart: ``data`` is the ``.tgz``; ``digest`` the sha256 hex Helm indexes."""

    name: str
    version: str
    app_version: str
    data: bytes = field(repr=False)
    metadata: Mapping[str, Any] = field(repr=False)
    expected_images: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def demo_app(version: str = "0.1.0", app_version: str | None = None) -> ChartArchive:
    """The ``demo-app`` chart; 0.1.0 runs nginx 1.27, 0.2.0 runs nginx 1.28."""
    app_version = app_version or {"0.1.0": "1.27", "0.2.0": "1.28"}.get(version, "1.27")
    meta: dict[str, Any] = {
        "apiVersion": "v2", "name": "demo-app", "version": version, "appVersion": app_version,
        "description": "A small chart for the k3s airgap test world", "type": "application"}
    files = [
        LayerFile("demo-app/Chart.yaml", data=yaml.safe_dump(meta, sort_keys=False).encode()),
        LayerFile("demo-app/values.yaml", data=VALUES.encode()),
        LayerFile("demo-app/templates/deployment.yaml", data=DEPLOYMENT.encode()),
        LayerFile("demo-app/templates/service.yaml", data=SERVICE.encode()),
    ]
    images = (f"docker.io/library/nginx:{app_version}", "docker.io/library/busybox:1.37")
    return ChartArchive("demo-app", version, app_version, targz_bytes(files, with_dirs=False),
                        meta, images)


def index_yaml(charts: Iterable[ChartArchive], *, base_url: str | None = None) -> bytes:
    """Helm repository ``index.yaml``; chart URLs relative unless ``base_url`` is given."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for chart in charts:
        url = f"{base_url.rstrip('/')}/{chart.filename}" if base_url else chart.filename
        entries.setdefault(chart.name, []).append({
            **chart.metadata, "created": CREATED, "digest": chart.digest, "urls": [url]})
    for versions in entries.values():  # Helm lists newest first
        versions.sort(key=lambda e: tuple(int(p) for p in e["version"].split(".")), reverse=True)
    doc = {"apiVersion": "v1", "entries": entries, "generated": CREATED}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def write_chart_repo(folder: Path, charts: Iterable[ChartArchive], *,
                     base_url: str | None = None) -> Path:
    """Write ``index.yaml`` and every ``<name>-<version>.tgz`` into ``folder``."""
    charts = list(charts)
    folder.mkdir(parents=True, exist_ok=True)
    for chart in charts:
        (folder / chart.filename).write_bytes(chart.data)
    (folder / "index.yaml").write_bytes(index_yaml(charts, base_url=base_url))
    return folder

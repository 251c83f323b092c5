"""The whole test world: every loopback server the project's tests and README demo use.

What it does: :class:`World` starts, under one base folder, a plain registry (``registry``), a
TLS + htpasswd registry (``tls_registry``), a Bearer-token front (``token_front``) over its own
registry (``token_registry``), a fault proxy over the plain registry (``fault_proxy``) and the
release/install.sh/Helm-repo server (``release``); pushes a standard image set and the demo
charts; and renders a ``bundles.toml`` pointing at all of it (:meth:`World.spec_text`).
Stopping it stops every process it started, by PID.

What it does not do: run containerd or dockerd (tests needing them start their own, see
TEST-WORLD.md), or reach anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from .charts import ChartArchive
from .faultproxy import FaultProxy
from .images import AMD64, ARM64, ARM_V7, ChartArtifact, Image, ImageFactory, push_image
from .k3s import K3S_VERSION, K3sRelease
from .registry import Registry
from .release import ReleaseServer
from .tokenauth import TokenAuthFront

# public reference -> factory.image() keyword arguments; pushed to the plain registry under the
# reference's path (docker.io/library/nginx -> library/nginx, quay.io/metallb/x -> metallb/x).
STANDARD_IMAGES: dict[str, dict[str, Any]] = {
    "docker.io/library/nginx:1.27": {},
    "docker.io/library/nginx:1.28": {},
    "docker.io/library/alpine:3.20": {},
    "docker.io/library/busybox:1.37": {},
    "quay.io/metallb/controller:v0.16.1": {},
    "quay.io/metallb/speaker:v0.16.1": {},
    "docker.io/library/amd64only:1.0": {"platforms": [AMD64, ARM_V7]},
    "docker.io/library/badarch:1.0": {"config_platform": {ARM64: AMD64}},
    "docker.io/library/single:1.0": {"platforms": [AMD64], "single": True},
    "docker.io/library/dockerlist:1.0": {"style": "docker"},
}
TLS_IMAGES = ("library/nginx:1.27", "internal/app:1.0")
TOKEN_PUBLIC_IMAGE, TOKEN_PRIVATE_IMAGE = "library/hello:1.0", "private/secret:1.0"
# Everything the default spec's manifests and chart reference, so discovery passes: the sample
# manifest runs alpine, demo-app 0.1.0 runs nginx 1.27 and busybox (set only in its values).
DEFAULT_BUNDLE_IMAGES = ("docker.io/library/nginx:1.27", "quay.io/metallb/controller:v0.16.1",
                         "docker.io/library/alpine:3.20", "docker.io/library/busybox:1.37")
SAMPLE_MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: world-sample
  namespace: default
spec:
  selector:
    matchLabels: {app: world-sample}
  template:
    metadata:
      labels: {app: world-sample}
    spec:
      containers:
        - name: sample
          image: docker.io/library/alpine:3.20
          command: ["sleep", "infinity"]
"""


def split_public_ref(ref: str) -> tuple[str, str]:
    """``"docker.io/library/nginx:1.27"`` -> ``("library/nginx", "1.27")`` (local repo, tag)."""
    name, _, tag = ref.rpartition(":")
    return name.split("/", 1)[1], tag


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(header: str, values: Mapping[str, Any]) -> str:
    return "\n".join([header, *(f"{k} = {_toml(v)}" for k, v in values.items())]) + "\n"


class World:
    """Every server of the test world. Use as a context manager, or ``start()``/``stop()``.

    Attributes after start: ``registry``, ``tls_registry``, ``token_registry``, ``token_front``,
    ``fault_proxy``, ``release`` (see their modules); ``images`` (public reference -> Image,
    pushed to ``registry``), ``tls_images`` / ``token_images`` (local ``repo:tag`` -> Image),
    ``charts`` (``"demo-app:0.1.0"`` -> ChartArchive, also in the Helm repo), ``chart_artifacts``
    (``"charts/demo-app:0.1.0"`` -> ChartArtifact in ``registry``), ``k3s_release``,
    ``factory`` (an ImageFactory whose base layers the standard images share).
    """

    def __init__(self, base_dir: Path, *, populate: bool = True) -> None:
        self.base_dir = Path(base_dir)
        self.populate = populate
        self.tls_credentials = ("world-user", "pw-" + secrets.token_hex(8))
        self.token_credentials = ("token-user", "pw-" + secrets.token_hex(8))
        self.registry = Registry(self.base_dir / "registry", name="registry")
        self.tls_registry = Registry(self.base_dir / "tls-registry", tls=True,
                                     htpasswd=self.tls_credentials, name="tls-registry")
        self.token_registry = Registry(self.base_dir / "token-registry", name="token-registry")
        self.factory = ImageFactory(self.base_dir / "work")
        self.images: dict[str, Image] = {}
        self.tls_images: dict[str, Image] = {}
        self.token_images: dict[str, Image] = {}
        self.charts: dict[str, ChartArchive] = {}
        self.chart_artifacts: dict[str, ChartArtifact] = {}
        self._started: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> World:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        registries = [self.registry, self.tls_registry, self.token_registry]
        for reg in registries:  # processes boot while Python builds content
            reg.launch()
            self._started.append(reg)
        self.release = ReleaseServer(self.base_dir / "release-root").start()
        self._started.append(self.release)
        self.k3s_release: K3sRelease = self.release.add_k3s_release(K3S_VERSION)
        self.charts = {f"{c.name}:{c.version}": c for c in self.release.add_charts()}
        jobs = self._build_content() if self.populate else []
        for reg in registries:
            reg.wait_ready()
        self.token_front = TokenAuthFront(self.token_registry.url, public=("library/*",),
                                          username=self.token_credentials[0],
                                          password=self.token_credentials[1]).start()
        self._started.append(self.token_front)
        self.fault_proxy = FaultProxy(self.registry.url).start()
        self._started.append(self.fault_proxy)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda job: job(), jobs))

    def _build_content(self) -> list[Any]:
        """Build every image now; return push jobs to run once the registries answer."""
        jobs: list[Any] = []
        for ref, options in STANDARD_IMAGES.items():
            repo, tag = split_public_ref(ref)
            self.images[ref] = self.factory.image(repo, tag, **options)
        for chart in self.charts.values():
            artifact = self.factory.chart(chart)
            self.chart_artifacts[artifact.ref] = artifact
        for ref in TLS_IMAGES:
            repo, _, tag = ref.partition(":")
            self.tls_images[ref] = self.factory.image(repo, tag)
        for ref in (TOKEN_PUBLIC_IMAGE, TOKEN_PRIVATE_IMAGE):
            repo, _, tag = ref.partition(":")
            self.token_images[ref] = self.factory.image(repo, tag)

        reg, tls, tok = self.registry, self.tls_registry, self.token_registry
        for item in [*self.images.values(), *self.chart_artifacts.values()]:
            jobs.append(lambda item=item: push_image(item, reg.url))
        for item in self.tls_images.values():
            jobs.append(lambda item=item: push_image(item, tls.url, auth=tls.auth,
                                                     verify=tls.verify))
        for item in self.token_images.values():
            jobs.append(lambda item=item: push_image(item, tok.url))
        return jobs

    def stop(self) -> None:
        for server in reversed(self._started):
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        self._started.clear()

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------
    def image(self, ref: str) -> Image:
        """The standard image for a public reference (``docker.io/library/nginx:1.27``)."""
        return self.images[ref]

    def push(self, image: Image, *, registry: Registry | None = None, tag: str | None = None
             ) -> Image:
        """Push an extra image (e.g. to move a tag) to the plain registry or ``registry``."""
        target = registry or self.registry
        pushed = push_image(image, target.url, tag=tag, auth=target.auth, verify=target.verify)
        assert isinstance(pushed, Image)
        return pushed

    def describe(self) -> dict[str, Any]:
        """URLs, credentials and digests as plain JSON-able data (for the demo and logs)."""
        return {
            "registry": self.registry.url, "fault_proxy": self.fault_proxy.url,
            "tls_registry": {"url": self.tls_registry.url,
                             "ca_file": str(self.tls_registry.ca_file),
                             "username": self.tls_credentials[0],
                             "password": self.tls_credentials[1]},
            "token_front": {"url": self.token_front.url, "realm": self.token_front.realm,
                            "username": self.token_credentials[0],
                            "password": self.token_credentials[1],
                            "public": TOKEN_PUBLIC_IMAGE, "private": TOKEN_PRIVATE_IMAGE},
            "releases": self.release.releases_url,
            "install_script": self.release.install_script_url,
            "charts": self.release.charts_url,
            "images": {ref: {"digest": img.digest, "manifests": dict(img.manifests)}
                       for ref, img in self.images.items()},
        }

    def spec_text(self, *, bundle: str = "demo",
                  bundle_images: Sequence[str] = DEFAULT_BUNDLE_IMAGES,
                  arch: Sequence[str] = ("amd64", "arm64"), k3s: str = K3S_VERSION,
                  version: str = "1.0.0", manifests: Sequence[str] = ("manifests/*.yaml",),
                  charts: Sequence[Mapping[str, Any]] | None = None,
                  endpoint: str | None = None, releases: str | None = None,
                  install_script: str | None = None,
                  registries: Mapping[str, Mapping[str, Any]] | None = None,
                  extra: str = "") -> str:
        """A ``bundles.toml`` pointing at this world.

        ``endpoint`` replaces the plain registry as where docker.io and quay.io are pulled from
        (e.g. ``world.fault_proxy.url``); ``registries`` replaces that whole table
        (``{"docker.io": {"endpoint": ...}, ...}``, rendered verbatim); ``charts`` defaults to
        demo-app 0.1.0 from the Helm repo into namespace ``demo``; ``extra`` is appended.
        """
        endpoint = endpoint or self.registry.url
        if registries is None:
            registries = {"docker.io": {"endpoint": endpoint}, "quay.io": {"endpoint": endpoint}}
        if charts is None:
            charts = [{"name": "demo-app", "repo": self.release.charts_url, "version": "0.1.0",
                       "namespace": "demo"}]
        parts = [_table("[k3s]", {"releases": releases or self.release.releases_url,
                                  "install_script": install_script
                                  or self.release.install_script_url})]
        for name, table in registries.items():
            parts.append(_table(f"[registries.{json.dumps(name)}]", table))
        parts.append(_table(f"[bundles.{bundle}]", {
            "version": version, "arch": list(arch), "k3s": k3s, "images": list(bundle_images),
            "manifests": list(manifests)}))
        for chart in charts:
            parts.append(_table(f"[[bundles.{bundle}.charts]]", chart))
        if extra:
            parts.append(extra.rstrip("\n") + "\n")
        return "\n".join(parts)

    def write_spec(self, folder: Path, **spec: Any) -> Path:
        """Write ``bundles.toml`` (see :meth:`spec_text`) and a sample ``manifests/`` folder
        (one Deployment using ``docker.io/library/alpine:3.20``) into ``folder``."""
        folder = Path(folder)
        (folder / "manifests").mkdir(parents=True, exist_ok=True)
        (folder / "manifests" / "world-sample.yaml").write_text(SAMPLE_MANIFEST)
        path = folder / "bundles.toml"
        path.write_text(self.spec_text(**spec))
        return path

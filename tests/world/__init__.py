"""The test world: real servers on 127.0.0.1, started and stopped by code.

Used by every test of the project (through the fixtures in ``tests/conftest.py``) and by the
README demo (``python -m tests.world``). Modules:

- ``procs``: free ports, HTTP readiness polling, managed subprocesses (stop by PID);
- ``registry``: CNCF distribution (``docker-registry``), optionally TLS + htpasswd;
- ``tokenauth``: Bearer-token service + auth front (the docker.io/ghcr.io/quay.io flow);
- ``faultproxy``: HTTP proxy injecting 5xx, resets, stalls, truncation, corruption, slowness;
- ``oci`` / ``images`` / ``push``: deterministic multi-arch OCI images, Helm chart artifacts,
  OCI layouts, and pushing them;
- ``charts``: the ``demo-app`` Helm chart and an HTTP chart repository;
- ``k3s`` / ``release``: a stand-in K3s release, install.sh, and a static server with Range;
- ``dockerd``: a real Docker engine on a private unix socket (``docker-daemon:`` images);
- ``world``: all of the above together, plus ``bundles.toml`` generation.

Nothing here binds or contacts anything but 127.0.0.1.
"""

from .charts import ChartArchive, demo_app
from .faultproxy import FaultProxy, LoggedRequest
from .images import (
    ALL_PLATFORMS,
    AMD64,
    ARM64,
    ARM_V7,
    ChartArtifact,
    Image,
    ImageFactory,
    Platform,
    push_image,
)
from .k3s import K3S_IMAGES, K3S_VERSION, K3sRelease, make_k3s_release, read_install_records
from .procs import ManagedProcess, free_port, wait_until_http_ready
from .registry import Registry
from .release import ReleaseServer, StaticServer
from .tokenauth import TokenAuthFront
from .world import DEFAULT_BUNDLE_IMAGES, STANDARD_IMAGES, World

__all__ = [
    "ALL_PLATFORMS", "AMD64", "ARM64", "ARM_V7", "ChartArchive", "ChartArtifact",
    "DEFAULT_BUNDLE_IMAGES", "FaultProxy", "Image", "ImageFactory", "K3S_IMAGES", "K3S_VERSION",
    "K3sRelease", "LoggedRequest", "ManagedProcess", "Platform", "Registry", "ReleaseServer",
    "STANDARD_IMAGES", "StaticServer", "TokenAuthFront", "World", "demo_app", "free_port",
    "make_k3s_release", "push_image", "read_install_records", "wait_until_http_ready",
]

"""The device's stdlib OCI client (installer/sources/ocidist.py) against the test world's real
registries: plain, TLS + htpasswd, Bearer token service, and the fault proxy in front of the
plain registry. One tiny stdlib server plays a registry whose token realm is on another host,
a fault a real registry cannot be configured into."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest

from installer.errors import ConfigError, DigestMismatch, TransferError
from installer.sources import ocidist
from tests.world import FaultProxy, World
from tests.world.images import ARM64

NGINX = "docker.io/library/nginx:1.27"


@pytest.fixture(scope="module")
def big(world: World) -> tuple[str, int]:
    """The largest layer of an image with a 2 MiB (incompressible) app layer."""
    img = world.push(world.factory.image("library/ocibig", "1.0", app_size=2 << 20))
    digest = max(img.layers[ARM64], key=lambda d: img.sizes[d])
    assert img.sizes[digest] > 1 << 20
    return digest, img.sizes[digest]


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_and_blob_from_the_plain_registry(world: World, big: tuple[str, int],
                                                   tmp_path: Path) -> None:
    client = ocidist.Client(world.registry.host)
    assert client.scheme == "http"  # loopback: plain http, as Docker does
    img = world.image(NGINX)
    data, media_type, digest = client.manifest("library/nginx", "1.27")
    assert digest == img.digest and media_type == img.media_type
    by_digest, _, _ = client.manifest("library/nginx", img.digest)
    assert by_digest == data
    layer, size = big
    dest = tmp_path / "layer"
    client.blob_to("library/ocibig", layer, size, dest=str(dest))
    assert _sha(dest) == layer
    assert [p.name for p in tmp_path.iterdir()] == ["layer"]   # no partial file left


def test_missing_tag_is_a_transfer_error_naming_it(world: World) -> None:
    client = ocidist.Client(world.registry.host)
    with pytest.raises(TransferError, match="library/nginx:9.9") as e:
        client.manifest("library/nginx", "9.9")
    assert e.value.exit_code == 5 and "404" in str(e.value)


def test_tls_registry_needs_its_ca_and_credentials(world: World) -> None:
    reg = world.tls_registry
    assert reg.ca_file is not None
    with pytest.raises(TransferError):   # plain http to a TLS port
        ocidist.Client(reg.host).manifest("library/nginx", "1.27")
    no_creds = ocidist.Client(reg.host, ca_file=str(reg.ca_file))
    with pytest.raises(TransferError, match="needs credentials"):
        no_creds.manifest("library/nginx", "1.27")
    user, password = world.tls_credentials
    client = ocidist.Client(reg.host, ca_file=str(reg.ca_file),
                            credentials=ocidist.Credentials(user, password))
    _, _, digest = client.manifest("library/nginx", "1.27")
    assert digest.startswith("sha256:")
    wrong = ocidist.Client(reg.host, ca_file=str(reg.ca_file),
                           credentials=ocidist.Credentials(user, "wrong"))
    with pytest.raises(TransferError, match="refused the credentials"):
        wrong.manifest("library/nginx", "1.27")


def test_bearer_token_flow_public_and_private(world: World) -> None:
    front = world.token_front
    anonymous = ocidist.Client(front.host)
    _, _, digest = anonymous.manifest("library/hello", "1.0")
    assert digest.startswith("sha256:")
    with pytest.raises(TransferError):
        anonymous.manifest("private/secret", "1.0")
    user, password = world.token_credentials
    client = ocidist.Client(front.host, credentials=ocidist.Credentials(user, password))
    client.manifest("private/secret", "1.0")
    client.manifest("private/secret", "1.0")   # the token is reused
    assert sum(1 for t in front.token_log if "private/secret" in str(t)) >= 1


def test_interrupted_blob_resumes_with_range(
        big: tuple[str, int], world: World, fault_proxy: FaultProxy,
        tmp_path: Path) -> None:
    layer, size = big
    fault_proxy.add_rule(f"/blobs/{layer}", ("reset", size // 3), count=1, method="GET")
    client = ocidist.Client(fault_proxy.host)
    dest = tmp_path / "layer"
    client.blob_to("library/ocibig", layer, size, dest=str(dest))
    assert _sha(dest) == layer
    gets = fault_proxy.requests(f"/blobs/{layer}", method="GET")
    assert len(gets) == 2 and gets[0].fault is not None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=")
    assert int(gets[1].range[len("bytes="):].rstrip("-")) > 0


def test_a_partial_file_from_a_killed_run_is_resumed(
        big: tuple[str, int], world: World, fault_proxy: FaultProxy,
        tmp_path: Path) -> None:
    layer, size = big
    full = tmp_path / "full"
    ocidist.Client(world.registry.host).blob_to("library/ocibig", layer, size, dest=str(full))
    dest = tmp_path / "layer"
    (tmp_path / ".layer.partial").write_bytes(full.read_bytes()[:size // 2])
    ocidist.Client(fault_proxy.host).blob_to("library/ocibig", layer, size, dest=str(dest))
    assert _sha(dest) == layer
    (get,) = fault_proxy.requests(f"/blobs/{layer}", method="GET")
    assert get.range == f"bytes={size // 2}-"


def test_corrupted_blob_is_never_moved_into_place(
        big: tuple[str, int], world: World, fault_proxy: FaultProxy,
        tmp_path: Path) -> None:
    layer, size = big
    fault_proxy.add_rule(f"/blobs/{layer}", ("corrupt",), count=1, method="GET")
    dest = tmp_path / "layer"
    with pytest.raises(DigestMismatch):
        ocidist.Client(fault_proxy.host).blob_to("library/ocibig", layer, size, dest=str(dest))
    assert list(tmp_path.iterdir()) == []


def test_5xx_is_retried_then_given_up(world: World, fault_proxy: FaultProxy) -> None:
    client = ocidist.Client(fault_proxy.host)
    fault_proxy.add_rule("/manifests/1.27", ("status", 503), count=2)
    client.manifest("library/nginx", "1.27")
    fault_proxy.add_rule("/manifests/1.27", ("status", 503), count=None)
    with pytest.raises(TransferError, match="HTTP 503"):
        client.manifest("library/nginx", "1.27")
    assert len(fault_proxy.requests("/manifests/1.27")) == 3 + ocidist.ATTEMPTS


class _ForeignRealm(http.server.BaseHTTPRequestHandler):
    """A registry whose token realm is another host (127.0.0.2): credentials must stay."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(f"{self.path} {self.headers.get('Authorization')}")
        self.send_response(401)
        self.send_header("WWW-Authenticate",
                         'Bearer realm="http://127.0.0.2:9/token",service="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign_realm() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignRealm)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_are_not_sent_to_a_realm_on_another_host(foreign_realm: str) -> None:
    client = ocidist.Client(foreign_realm, credentials=ocidist.Credentials("u", "secret"))
    with pytest.raises(ConfigError, match="not sent"):
        client.manifest("library/nginx", "1.27")
    assert all("None" in line for line in _ForeignRealm.seen)  # never an Authorization


@pytest.mark.parametrize("text,expected", [
    ("oci://reg.site:5000/edge/ring", ("reg.site:5000", "edge/ring", None)),
    ("oci://127.0.0.1:5000/edge/ring:stable", ("127.0.0.1:5000", "edge/ring", "stable")),
    ("oci://reg/edge@sha256:" + "a" * 64, ("reg", "edge", "sha256:" + "a" * 64)),
])
def test_parse_oci_url(text: str, expected: tuple[str, str, str | None]) -> None:
    ref = ocidist.parse_oci_url(text)
    assert (ref.host, ref.repository, ref.reference) == expected
    assert ref.url == text


@pytest.mark.parametrize("text", ["https://reg/x", "oci://reg", "oci://reg/UPPER",
                                  "oci://reg/x@sha256:12", "oci://reg/x:bad tag"])
def test_bad_oci_urls_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        ocidist.parse_oci_url(text)


def test_credentials_from_file_or_env(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    f.write_text('{"username": "a", "password": "b"}')
    assert ocidist.credentials_from(str(f), {}) == ocidist.Credentials("a", "b")
    f.write_text("user:pa:ss\n")
    assert ocidist.credentials_from(str(f), {}) == ocidist.Credentials("user", "pa:ss")
    f.write_text("nocolon")
    with pytest.raises(ConfigError):
        ocidist.credentials_from(str(f), {})
    env = {ocidist.USER_ENV: "e", ocidist.PASSWORD_ENV: "p"}
    assert ocidist.credentials_from(None, env) == ocidist.Credentials("e", "p")
    assert ocidist.credentials_from(None, {}) is None


@pytest.mark.parametrize("host,loop", [("127.0.0.1:5000", True), ("localhost", True),
                                       ("127.9.9.9", True), ("[::1]:5000", True),
                                       ("10.0.0.1:5000", False), ("reg.site", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert ocidist.is_loopback(host) is loop

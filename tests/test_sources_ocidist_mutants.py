"""installer/sources/ocidist.py in-process against a scripted loopback registry
(tests/world/hostile.py) and the fault proxy: the size limits at their bounds, every answer of
a token service, each challenge, each HTTP status family, the retry counts and backoff, a
server that ignores Range or sends too much, and the option checks of the client and of
``parse_oci_url`` / ``credentials_from``. Mutation survivors of issue #24's run
(tools/MUTATION.md)."""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import ipaddress
import json
import os
import socket
import stat
from pathlib import Path
from typing import Iterator, List

import pytest

from installer.errors import ConfigError, DigestMismatch, FormatError, TransferError
from installer.sources import ocidist
from tests.world.faultproxy import FaultProxy
from tests.world.hostile import OCI_MANIFEST, HostileUpstream, Reply, Seen

pytestmark = pytest.mark.world

MiB = 1 << 20
REPO = "edge/ring"
SCOPE = f"repository:{REPO}:pull"
ATTEMPTS = 5             # written out: a mutant of ocidist.ATTEMPTS must not move the test
USER, PASSWORD = "dev", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    with HostileUpstream(tmp_path_factory.mktemp("oci-tls")) as up:
        yield up


@pytest.fixture
def up(upstream: HostileUpstream) -> HostileUpstream:
    upstream.reset({})
    return upstream


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    seen: List[float] = []
    monkeypatch.setattr(ocidist.time, "sleep", seen.append)
    return seen


def _client(up: HostileUpstream, **kw: object) -> ocidist.Client:
    return ocidist.Client(up.host, proxies={}, **kw)  # type: ignore[arg-type]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest_path(ref: str) -> str:
    return f"/v2/{REPO}/manifests/{ref}"


def _blob_path(data: bytes) -> str:
    return f"/v2/{REPO}/blobs/{_sha(data)}"


def _requests(up: HostileUpstream, path: str) -> List[Seen]:
    return [s for s in up.log if s.path.split("?", 1)[0] == path]


# ---------------------------------------------------------------- pure parts

def test_records_are_frozen_and_references_print_back() -> None:
    ref = ocidist.parse_oci_url("oci://reg:5000/a/b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.host = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ocidist.Credentials("a", "b").username = "c"  # type: ignore[misc]
    assert ref.url == "oci://reg:5000/a/b" and ref.reference is None
    assert ocidist.OciRef("h", "r", "t").url == "oci://h/r:t"
    assert ocidist.OciRef("h", "r", "sha256:" + "0" * 64).url == "oci://h/r@sha256:" + "0" * 64


def test_oci_urls_edge_cases() -> None:
    assert ocidist.parse_oci_url("oci://h/a/b:v1").reference == "v1"
    assert ocidist.parse_oci_url("oci://h:5000/x").host == "h:5000"
    with pytest.raises(ConfigError, match="is not an oci:// reference") as e:
        ocidist.parse_oci_url("abc://reg/edge")
    assert e.value.hint and "oci://" in e.value.hint
    for bad in ("oci:///edge", "oci://h/", "oci://h/a:b/c", "oci://h/x@latest",
                "oci://h/x:" + "t" * 129, "oci://h/x@sha256:" + "A" * 64):
        with pytest.raises(ConfigError):
            ocidist.parse_oci_url(bad)


def test_credentials_from_bad_files_and_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    with pytest.raises(ConfigError, match="does not exist"):
        ocidist.credentials_from(str(f), {})
    f.write_bytes(b"\xff\xfe:x")
    with pytest.raises(ConfigError, match="cannot read"):
        ocidist.credentials_from(str(f), {})
    for text in ('{"username": "a"}', "{not json", '{"username": 1, "password": 2}x',
                 ":password"):
        f.write_text(text)
        with pytest.raises(ConfigError, match="expected"):
            ocidist.credentials_from(str(f), {})
    f.write_text("user:pa:ss\n")
    assert ocidist.credentials_from(str(f), {}) == ocidist.Credentials("user", "pa:ss")
    f.write_text("nocolon")
    with pytest.raises(ConfigError, match="one line user:password"):
        ocidist.credentials_from(str(f), {})
    f.write_text('{"username": 1, "password": 2}')
    assert ocidist.credentials_from(str(f), {}) == ocidist.Credentials("1", "2")
    assert ocidist.credentials_from(None, {ocidist.USER_ENV: ""}) is None
    assert ocidist.credentials_from(None, {ocidist.USER_ENV: "u"}) == \
        ocidist.Credentials("u", "")
    assert ocidist.credentials_from("", {ocidist.USER_ENV: "u"}) == ocidist.Credentials("u", "")


def test_the_scheme_a_client_picks(upstream: HostileUpstream) -> None:
    assert ocidist.Client("reg.site:5000", proxies={}).scheme == "https"
    assert ocidist.Client("reg.site", plain_http=True, proxies={}).scheme == "http"
    assert ocidist.Client("127.0.0.1:5000", proxies={}).scheme == "http"
    assert ocidist.Client("127.0.0.1:5000", ca_file=str(upstream.ca_file),
                          proxies={}).scheme == "https"
    assert ocidist.Client("127.0.0.1:5000", scheme="https", proxies={}).base_url == \
        "https://127.0.0.1:5000"


def test_routes_and_credentials_refused_before_any_connection() -> None:
    with pytest.raises(ConfigError, match="http://reg.site"):
        ocidist.Client("reg.site", scheme="http", proxies={})
    creds = ocidist.Credentials(USER, PASSWORD)
    with pytest.raises(ConfigError, match="credentials not sent"):
        ocidist.Client("reg.site", plain_http=True, credentials=creds, proxies={})
    assert ocidist.Client("reg.site", credentials=creds, proxies={}).credentials == creds
    assert ocidist.Client("reg.site", plain_http=True, proxies={}).credentials is None


# ---------------------------------------------------------------- manifests

def test_a_manifest_of_exactly_the_limit_is_read_one_byte_more_is_not(up: HostileUpstream
                                                                      ) -> None:
    body = b"{" + b" " * (ocidist.MAX_MANIFEST - 2) + b"}"
    assert len(body) == 4 * MiB
    up.routes[_manifest_path("big")] = Reply(
        body=body, headers={"Content-Type": OCI_MANIFEST + "; charset=utf-8"})
    up.routes[_manifest_path("bigger")] = Reply(body=body + b" ")
    data, media_type, digest = _client(up).manifest(REPO, "big")
    assert data == body and media_type == OCI_MANIFEST and digest == _sha(body)
    with pytest.raises(FormatError, match="over 4194304 bytes"):
        _client(up).manifest(REPO, "bigger")


def test_a_manifest_by_digest_is_checked(up: HostileUpstream) -> None:
    good, bad = b'{"a":1}', b'{"a":2}'
    up.routes[_manifest_path(_sha(good))] = Reply(body=good)
    up.routes[_manifest_path(_sha(bad))] = Reply(body=good)
    up.routes[_manifest_path("v1")] = Reply(body=good, headers={"Content-Type": ""})
    assert _client(up).manifest(REPO, _sha(good))[0] == good
    with pytest.raises(DigestMismatch, match=_sha(good)):
        _client(up).manifest(REPO, _sha(bad))
    assert _client(up).manifest(REPO, "v1")[1:] == ("", _sha(good))
    seen = _requests(up, _manifest_path("v1"))[0]
    assert seen.headers["Accept"] == ", ".join(ocidist.MANIFEST_TYPES)
    assert "Authorization" not in seen.headers


# ---------------------------------------------------------------- status codes and retries

@pytest.mark.parametrize("code,words", [(401, "refused the credentials (HTTP 401)"),
                                        (403, "refused the credentials (HTTP 403)"),
                                        (404, "does not exist (HTTP 404)"),
                                        (400, "answered HTTP 400"), (499, "answered HTTP 499")])
def test_a_refusal_is_named_and_not_retried(up: HostileUpstream, sleeps: List[float],
                                            code: int, words: str) -> None:
    up.routes[_manifest_path("v1")] = Reply(status=code)
    with pytest.raises(TransferError) as e:
        _client(up).manifest(REPO, "v1")
    assert words in e.value.message and not isinstance(e.value, ocidist.Unavailable)
    assert len(_requests(up, _manifest_path("v1"))) == 1 and sleeps == []


@pytest.mark.parametrize("code", [500, 503])
def test_5xx_is_retried_five_times_with_backoff(up: HostileUpstream, sleeps: List[float],
                                                code: int) -> None:
    up.routes[_manifest_path("v1")] = Reply(status=code)
    with pytest.raises(ocidist.Unavailable, match=f"HTTP {code}"):
        _client(up).manifest(REPO, "v1")
    assert len(_requests(up, _manifest_path("v1"))) == ATTEMPTS
    assert sleeps == [0.25, 0.5, 1.0, 2.0]


def test_a_closed_port_is_unavailable(up: HostileUpstream, sleeps: List[float]) -> None:
    client = ocidist.Client("127.0.0.1:9", proxies={})
    with pytest.raises(ocidist.Unavailable, match="127.0.0.1:9"):
        client.manifest(REPO, "v1")
    assert len(sleeps) == ATTEMPTS - 1


def test_tls_without_its_ca_is_named(up: HostileUpstream) -> None:
    host = up.tls_url[len("https://"):]
    client = ocidist.Client(host, scheme="https", proxies={})
    with pytest.raises(TransferError, match="TLS failed") as e:
        client.manifest(REPO, "v1")
    assert e.value.hint and "--ca-file" in e.value.hint


# ---------------------------------------------------------------- challenges and tokens

def _basic_registry(up: HostileUpstream, body: bytes) -> None:
    def answer(seen: Seen) -> Reply:
        if seen.headers.get("Authorization") == BASIC:
            return Reply(body=body)
        return Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    up.routes[_manifest_path("v1")] = answer


def test_basic_auth_only_after_the_challenge_and_only_to_its_host(up: HostileUpstream) -> None:
    _basic_registry(up, b"{}")
    client = _client(up, credentials=ocidist.Credentials(USER, PASSWORD))
    assert client.manifest(REPO, "v1")[0] == b"{}"
    first, second = _requests(up, _manifest_path("v1"))
    assert "Authorization" not in first.headers and second.headers["Authorization"] == BASIC
    assert client.manifest(REPO, "v1")[0] == b"{}"   # the challenge is remembered
    assert len(_requests(up, _manifest_path("v1"))) == 3
    resp = client.send(f"{up.url}{_manifest_path('v1')}", what="again", scope=SCOPE)
    with resp:
        assert resp.read() == b"{}"
    with pytest.raises(ConfigError, match="credentials not sent"):
        client.send(f"http://127.0.0.2:{up.port}/v2/", what="elsewhere", scope=SCOPE)


def test_a_basic_challenge_without_credentials_asks_for_them(up: HostileUpstream) -> None:
    _basic_registry(up, b"{}")
    with pytest.raises(TransferError, match="needs credentials") as e:
        _client(up).manifest(REPO, "v1")
    assert e.value.hint == ocidist.Client.credentials_hint
    assert len(_requests(up, _manifest_path("v1"))) == 1


def test_wrong_basic_credentials_are_refused_after_one_retry(up: HostileUpstream) -> None:
    _basic_registry(up, b"{}")
    client = _client(up, credentials=ocidist.Credentials(USER, "wrong"))
    with pytest.raises(TransferError, match="refused the credentials"):
        client.manifest(REPO, "v1")
    assert len(_requests(up, _manifest_path("v1"))) == 2


@pytest.mark.parametrize("challenge", ["", 'Digest realm="x"'])
def test_a_401_without_a_usable_challenge(up: HostileUpstream, challenge: str) -> None:
    headers = {"WWW-Authenticate": challenge} if challenge else {}
    up.routes[_manifest_path("v1")] = Reply(status=401, headers=headers)
    with pytest.raises(TransferError) as e:
        _client(up, credentials=ocidist.Credentials(USER, PASSWORD)).manifest(REPO, "v1")
    assert ("needs credentials" if challenge else "HTTP 401") in e.value.message


def _token_registry(up: HostileUpstream, token_reply: Reply, *, realm: str = "") -> None:
    realm = realm or f"{up.url}/token"

    def answer(seen: Seen) -> Reply:
        if seen.headers.get("Authorization") == "Bearer T0k":
            return Reply(body=b"{}")
        return Reply(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})
    up.routes[_manifest_path("v1")] = answer
    up.routes["/token"] = token_reply


@pytest.mark.parametrize("doc", [{"token": "T0k"}, {"access_token": "T0k"},
                                 {"token": "", "access_token": "T0k"}])
def test_a_bearer_token_is_fetched_once_per_scope(up: HostileUpstream, doc: object) -> None:
    _token_registry(up, Reply(body=json.dumps(doc).encode()))
    client = _client(up)
    assert client.manifest(REPO, "v1")[0] == b"{}"
    assert client.manifest(REPO, "v1")[0] == b"{}"
    (token,) = _requests(up, "/token")
    assert "scope=repository%3Aedge%2Fring%3Apull" in token.path and "service=reg" in token.path
    assert "Authorization" not in token.headers


def test_a_token_realm_with_a_query_and_credentials(up: HostileUpstream) -> None:
    _token_registry(up, Reply(body=b'{"token": "T0k"}'), realm=f"{up.url}/token?x=1")
    client = _client(up, credentials=ocidist.Credentials(USER, PASSWORD))
    assert client.manifest(REPO, "v1")[0] == b"{}"
    (token,) = _requests(up, "/token")
    assert token.path.startswith("/token?x=1&service=reg&scope=")
    assert token.headers["Authorization"] == BASIC


def test_a_token_realm_on_another_port_of_the_registry_host_gets_the_credentials(
        up: HostileUpstream) -> None:
    _token_registry(up, Reply(body=b'{"token": "T0k"}'), realm=f"{up.other_url}/token")
    client = _client(up, credentials=ocidist.Credentials(USER, PASSWORD))
    assert client.manifest(REPO, "v1")[0] == b"{}"
    (token,) = [s for s in _requests(up, "/token") if s.port == up.other_port()]
    assert token.headers["Authorization"] == BASIC


def test_credentials_never_go_to_a_realm_on_another_host(up: HostileUpstream,
                                                        sleeps: List[float]) -> None:
    _token_registry(up, Reply(body=b'{"token": "T0k"}'),
                    realm=f"http://127.0.0.2:{up.port}/token")
    client = _client(up, credentials=ocidist.Credentials(USER, PASSWORD))
    with pytest.raises(ConfigError, match="asks for credentials at .*: not sent") as e:
        client.manifest(REPO, "v1")
    assert e.value.hint and "own host" in e.value.hint
    assert _requests(up, "/token") == []


def test_a_token_body_of_exactly_the_limit_is_read_one_byte_more_is_not(
        up: HostileUpstream) -> None:
    doc = b'{"token": "T0k", "pad": "'
    body = doc + b"x" * (ocidist.MAX_TOKEN_BODY - len(doc) - 2) + b'"}'
    assert len(body) == 64 * 1024
    _token_registry(up, Reply(body=body))
    assert _client(up).manifest(REPO, "v1")[0] == b"{}"
    _token_registry(up, Reply(body=body[:-2] + b'x"}'))
    with pytest.raises(TransferError, match="over 65536 bytes"):
        _client(up).manifest(REPO, "v1")


@pytest.mark.parametrize("body", [b"[]", b"not json", b'{"token": ""}', b'{"token": 5}',
                                  b"{}"])
def test_a_token_answer_without_a_token(up: HostileUpstream, body: bytes) -> None:
    _token_registry(up, Reply(body=body))
    with pytest.raises(TransferError, match="without a token"):
        _client(up).manifest(REPO, "v1")


@pytest.mark.parametrize("code", [401, 403])
def test_a_token_service_refusing_access(up: HostileUpstream, code: int) -> None:
    _token_registry(up, Reply(status=code))
    with pytest.raises(TransferError, match=f"refused access to {SCOPE} \\(HTTP {code}\\)") as e:
        _client(up).manifest(REPO, "v1")
    assert e.value.hint and ocidist.USER_ENV in e.value.hint


def test_a_failing_token_service_is_retried(up: HostileUpstream, sleeps: List[float]) -> None:
    _token_registry(up, Reply(status=500))
    with pytest.raises(ocidist.Unavailable, match="HTTP 500"):
        _client(up).manifest(REPO, "v1")
    assert len(_requests(up, "/token")) == ATTEMPTS


def test_an_https_registry_never_sends_clients_to_a_plain_http_realm(
        up: HostileUpstream) -> None:
    """The realm is on loopback (a clear route is allowed there), but TLS is never answered
    in clear: refused by the redirect rule alone."""
    host = up.tls_url[len("https://"):]
    _token_registry(up, Reply(body=b'{"token": "T0k"}'), realm=f"{up.url}/token")
    client = ocidist.Client(host, ca_file=str(up.ca_file), proxies={})
    with pytest.raises(TransferError, match="token realm") as e:
        client.manifest(REPO, "v1")
    assert e.value.hint and "https" in e.value.hint
    assert _requests(up, "/token") == []


@pytest.fixture
def far_connects(monkeypatch: pytest.MonkeyPatch) -> List[object]:
    """Connections to a non-loopback address, refused in this process (a mutant that lets one
    through must never reach the network)."""
    tried: List[object] = []
    real = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and not ipaddress.ip_address(address[0]).is_loopback:
            tried.append(address)
            raise OSError(errno.ENETUNREACH, f"no connection to {address!r} in tests")
        real(sock, address)  # type: ignore[arg-type]
    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


def test_a_realm_through_a_far_proxy_is_refused(up: HostileUpstream,
                                                far_connects: List[object]) -> None:
    """The registry is reached directly (``no_proxy``), its realm on another loopback address
    would go through a non-loopback proxy in clear: refused before any connection."""
    realm = f"http://127.0.0.2:{up.port}/token"
    _token_registry(up, Reply(body=b'{"token": "T0k"}'), realm=realm)
    client = ocidist.Client(up.host, proxies={"http": "http://10.0.0.1:3128",
                                              "no": "127.0.0.1"})
    with pytest.raises(TransferError, match="token realm"):
        client.manifest(REPO, "v1")
    assert far_connects == []


# ---------------------------------------------------------------- blobs

def test_a_blob_lands_with_progress(up: HostileUpstream, sleeps: List[float],
                                    tmp_path: Path) -> None:
    data = os.urandom(MiB + 5000)
    up.routes[_blob_path(data)] = Reply(body=data)
    dest = tmp_path / "blob"
    seen: List[int] = []
    _client(up).blob_to(REPO, _sha(data), len(data), dest=str(dest), on_bytes=seen.append)
    assert dest.read_bytes() == data and sum(seen) == len(data)
    assert os.listdir(tmp_path) == ["blob"]
    assert sleeps == [] and len(_requests(up, _blob_path(data))) == 1   # no retry at all


def test_a_blob_beside_the_working_folder(up: HostileUpstream, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"relative"
    up.routes[_blob_path(data)] = Reply(body=data)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".blob.partial").write_bytes(data[:3])
    _client(up).blob_to(REPO, _sha(data), len(data), dest="blob")
    assert (tmp_path / "blob").read_bytes() == data
    assert _requests(up, _blob_path(data))[0].headers["Range"] == "bytes=3-"


def test_a_bad_blob_digest_is_refused_before_any_request(up: HostileUpstream,
                                                         tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not sha256"):
        _client(up).blob_to(REPO, "sha256:" + "A" * 64, 1, dest=str(tmp_path / "b"))
    assert up.log == []


def test_a_complete_partial_file_needs_no_request(up: HostileUpstream, tmp_path: Path) -> None:
    data = b"all of it"
    (tmp_path / ".blob.partial").write_bytes(data)
    _client(up).blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    assert (tmp_path / "blob").read_bytes() == data and up.log == []


def test_a_server_that_ignores_range_is_read_from_the_start(up: HostileUpstream,
                                                            tmp_path: Path) -> None:
    data = os.urandom(300_000)
    up.routes[_blob_path(data)] = Reply(body=data)   # 200 and everything, Range or not
    (tmp_path / ".blob.partial").write_bytes(data[:1000])
    _client(up).blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    assert (tmp_path / "blob").read_bytes() == data
    assert _requests(up, _blob_path(data))[0].headers["Range"] == "bytes=1000-"


def test_a_ranged_answer_is_appended(up: HostileUpstream, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    up.routes[_blob_path(data)] = lambda seen: Reply(
        status=206, body=data[int(seen.headers["Range"][6:-1]):])
    (tmp_path / ".blob.partial").write_bytes(data[:1000])
    _client(up).blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    assert (tmp_path / "blob").read_bytes() == data


def test_no_byte_past_the_size_is_read(up: HostileUpstream, tmp_path: Path) -> None:
    data = os.urandom(MiB + 1000)
    up.routes[_blob_path(data)] = Reply(body=data + os.urandom(3 * MiB))
    _client(up).blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    assert (tmp_path / "blob").read_bytes() == data


def test_a_short_answer_is_retried_then_given_up(up: HostileUpstream, sleeps: List[float],
                                                 tmp_path: Path) -> None:
    data = os.urandom(10_000)
    up.routes[_blob_path(data)] = Reply(body=data[:4000], length=str(len(data)))
    old = os.umask(0o022)
    try:
        with pytest.raises(TransferError, match="4000 of 10000 bytes after 5 attempts") as e:
            _client(up).blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    finally:
        os.umask(old)
    partial = tmp_path / ".blob.partial"
    assert partial.read_bytes() == data[:4000]          # kept for the next run
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    assert "connection closed at 4000 of 10000" in e.value.message
    assert e.value.hint and "resumes" in e.value.hint
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert len(_requests(up, _blob_path(data))) == ATTEMPTS
    assert not (tmp_path / "blob").exists()


def test_a_reset_transfer_is_named_and_what_arrived_is_kept(
        up: HostileUpstream, sleeps: List[float], tmp_path: Path) -> None:
    data = os.urandom(200_000)
    up.routes[_blob_path(data)] = Reply(body=data)
    with FaultProxy(up.url) as proxy:
        proxy.add_rule("/blobs/", ("reset", 50_000), count=None, method="GET")
        client = ocidist.Client(proxy.host, proxies={})
        with pytest.raises(TransferError, match="transfer broke at") as e:
            client.blob_to(REPO, _sha(data), len(data), dest=str(tmp_path / "blob"))
    assert e.value.message.startswith(f"blob {_sha(data)} of {REPO}: 50000 of 200000")
    assert (tmp_path / ".blob.partial").read_bytes() == data[:50_000]

"""The http(s) mirror transport (installer/sources/mirror.py, picked by installer/sources/remote.py)
against a real http.server on 127.0.0.1 that answers as scripted (issue #24: "the http mirror's
401/403/5xx paths and its retry loop are reached by no test"): each answer's exit family and
message, a 5xx retried then succeeding, retries exhausted, 401/403/4xx never retried (the hint
says a mirror is read anonymously), 404/410 as ``Missing``, the size cap with and without a
``Content-Length``, the URL rules, and the scheme table."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from installer.errors import ConfigError, FormatError, TransferError
from installer.sources import mirror, ocidist, remote
from installer.sources.base import Missing, Options
from installer.sources.folder import FolderSource
from installer.sources.ociregistry import OciSource

pytestmark = pytest.mark.world

BODY = b'{"signed": "timestamp"}'


class Answer(NamedTuple):
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    length: bool = True   # send Content-Length (else the body ends when the connection closes)


class Mirror:
    """A static server whose answers per path are scripted: each request takes the next
    answer, the last one repeats; every request is recorded (path, Range header)."""

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.hits: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                owner.hits.append((self.path, self.headers.get("Range", "")))
                queue = owner.script.get(self.path) or [Answer(404)]
                a = queue.pop(0) if len(queue) > 1 else queue[0]
                body = a.body
                rng = self.headers.get("Range", "")
                status = a.status
                if status == 200 and rng.startswith("bytes="):
                    body, status = body[int(rng[6:-1]):], 206
                self.send_response(status)
                for k, v in a.headers:
                    self.send_header(k, v)
                if a.length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/ring"

    def answer(self, path: str, *answers: Answer) -> None:
        self.script["/ring/" + path] = list(answers)

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.hits if p == "/ring/" + path)


@pytest.fixture
def srv() -> Iterator[Mirror]:
    m = Mirror()
    t = threading.Thread(target=m.server.serve_forever, daemon=True)
    t.start()
    try:
        yield m
    finally:
        m.server.shutdown()
        m.server.server_close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits, recorded instead of slept (the server thread never sleeps)."""
    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def _src(srv: Mirror) -> mirror.HttpSource:
    src = remote.open_source(srv.url + "/")
    assert isinstance(src, mirror.HttpSource)
    return src


# ---- read: the retry loop -------------------------------------------------------------------

def test_a_5xx_is_retried_with_backoff_then_the_answer_is_read(srv: Mirror,
                                                              sleeps: list[float]) -> None:
    srv.answer("metadata/timestamp.json", Answer(500), Answer(503), Answer(502), Answer(200, BODY))
    assert _src(srv).read("metadata/timestamp.json", max_size=1024) == BODY
    assert srv.count("metadata/timestamp.json") == 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_a_5xx_on_every_attempt_ends_after_five_as_a_transfer_error(srv: Mirror,
                                                                    sleeps: list[float]) -> None:
    srv.answer("metadata/timestamp.json", Answer(503))
    with pytest.raises(ocidist.Unavailable) as e:
        _src(srv).read("metadata/timestamp.json", max_size=1024)
    assert e.value.exit_code == 5
    assert f"{srv.url}/metadata/timestamp.json" in e.value.message
    assert "answered HTTP 503" in e.value.message
    assert srv.count("metadata/timestamp.json") == ocidist.ATTEMPTS == 5
    assert sleeps == [0.25, 0.5, 1.0, 2.0]   # none after the last attempt


def test_a_refused_connection_is_retried_like_a_5xx(sleeps: list[float]) -> None:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    src = remote.open_source(f"http://127.0.0.1:{port}/ring")
    with pytest.raises(ocidist.Unavailable, match="refused"):
        src.read("metadata/timestamp.json", max_size=1024)
    assert len(sleeps) == 4


@pytest.mark.parametrize("code", [401, 403])
def test_401_and_403_are_not_retried_and_say_a_mirror_is_read_anonymously(
        srv: Mirror, sleeps: list[float], code: int) -> None:
    srv.answer("metadata/timestamp.json", Answer(code), Answer(200, BODY))
    with pytest.raises(TransferError) as e:
        _src(srv).read("metadata/timestamp.json", max_size=1024)
    assert type(e.value) is TransferError and e.value.exit_code == 5
    assert e.value.message == (f"{srv.url}/metadata/timestamp.json refused access "
                               f"(HTTP {code})")
    assert e.value.hint is not None and "allow anonymous reads" in e.value.hint
    assert srv.count("metadata/timestamp.json") == 1 and sleeps == []


@pytest.mark.parametrize("challenge", ['Basic realm="mirror"', 'Negotiate'])
def test_a_401_challenge_is_not_answered_and_never_asks_for_registry_credentials(
        srv: Mirror, sleeps: list[float], challenge: str) -> None:
    """A mirror takes no credentials (open_source refuses them), so its hint must not ask for
    the registry credentials file."""
    srv.answer("metadata/timestamp.json", Answer(401, headers=(("WWW-Authenticate", challenge),)))
    with pytest.raises(TransferError) as e:
        _src(srv).read("metadata/timestamp.json", max_size=1024)
    assert e.value.exit_code == 5 and "credentials file" not in (e.value.hint or "")
    assert "anonymous" in (e.value.hint or ""), e.value.hint
    assert srv.count("metadata/timestamp.json") == 1 and sleeps == []


def test_a_bearer_challenge_whose_token_service_refuses_never_asks_for_credentials(
        srv: Mirror, sleeps: list[float]) -> None:
    """A mirror's Bearer challenge is followed anonymously (the realm is on the mirror's own
    loopback host); when the token service refuses, the hint still says a mirror is read
    anonymously."""
    realm = f"http://127.0.0.1:{srv.server.server_port}/ring/token"
    srv.answer("metadata/timestamp.json",
               Answer(401, headers=(("WWW-Authenticate", f'Bearer realm="{realm}"'),)))
    srv.script["/ring/token?service=&scope="] = [Answer(401)]
    with pytest.raises(TransferError, match="token service .*/ring/token refused access") as e:
        _src(srv).read("metadata/timestamp.json", max_size=1024)
    assert e.value.exit_code == 5 and "credentials file" not in (e.value.hint or "")
    assert "anonymous" in (e.value.hint or ""), e.value.hint
    assert [p for p, _ in srv.hits] == ["/ring/metadata/timestamp.json",
                                        "/ring/token?service=&scope="]
    assert sleeps == []


@pytest.mark.parametrize("code", [404, 410])
def test_404_and_410_are_missing(srv: Mirror, sleeps: list[float], code: int) -> None:
    srv.answer("metadata/2.targets.json", Answer(code))
    with pytest.raises(Missing) as e:
        _src(srv).read("metadata/2.targets.json", max_size=1024)
    assert e.value.exit_code == 5
    assert e.value.message == f"{srv.url}/metadata/2.targets.json does not exist (HTTP {code})"
    assert "metadata/ and targets/" in (e.value.hint or "")
    assert srv.count("metadata/2.targets.json") == 1 and sleeps == []


@pytest.mark.parametrize("code", [400, 402, 405, 411, 418])
def test_another_4xx_is_a_transfer_error_not_retried_not_missing(
        srv: Mirror, sleeps: list[float], code: int) -> None:
    srv.answer("metadata/timestamp.json", Answer(code))
    with pytest.raises(TransferError) as e:
        _src(srv).read("metadata/timestamp.json", max_size=1024)
    assert type(e.value) is TransferError
    assert e.value.message.endswith(f"{srv.url}/metadata/timestamp.json answered HTTP {code}")
    assert srv.count("metadata/timestamp.json") == 1 and sleeps == []


# ---- read: the size cap --------------------------------------------------------------------

@pytest.mark.parametrize("length", [True, False])
def test_a_body_of_exactly_the_cap_is_read(srv: Mirror, length: bool) -> None:
    srv.answer("metadata/timestamp.json", Answer(200, BODY, length=length))
    assert _src(srv).read("metadata/timestamp.json", max_size=len(BODY)) == BODY


def test_an_announced_length_over_the_cap_is_refused_before_the_body(srv: Mirror) -> None:
    srv.answer("metadata/timestamp.json", Answer(200, BODY))
    with pytest.raises(FormatError) as e:
        _src(srv).read("metadata/timestamp.json", max_size=len(BODY) - 1)
    assert e.value.message == (f"{srv.url}/metadata/timestamp.json is {len(BODY)} bytes, "
                               f"over {len(BODY) - 1}")


def test_a_body_over_the_cap_without_a_length_is_refused(srv: Mirror) -> None:
    srv.answer("metadata/timestamp.json", Answer(200, BODY * 3, length=False))
    with pytest.raises(FormatError) as e:
        _src(srv).read("metadata/timestamp.json", max_size=len(BODY))
    assert e.value.message == f"{srv.url}/metadata/timestamp.json is over {len(BODY)} bytes"


def test_paths_are_quoted_under_the_base_and_checked(srv: Mirror) -> None:
    srv.script["/ring/targets/a%2Bb.tar"] = [Answer(200, b"ab")]
    src = _src(srv)
    assert src.read("targets/a+b.tar", max_size=10) == b"ab"
    assert srv.hits == [("/ring/targets/a%2Bb.tar", "")]
    with pytest.raises(FormatError, match="not a valid file path"):
        src.read("../x", max_size=10)
    assert len(srv.hits) == 1


# ---- fetch: the download retry loop --------------------------------------------------------

DATA = bytes(range(256)) * 400


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_retries_a_5xx_then_downloads(srv: Mirror, sleeps: list[float],
                                           tmp_path: Path) -> None:
    srv.answer("targets/b.tar", Answer(503), Answer(500), Answer(200, DATA))
    dest = tmp_path / "b.tar"
    _src(srv).fetch("targets/b.tar", str(dest), sha256=_sha(DATA), size=len(DATA))
    assert dest.read_bytes() == DATA
    assert srv.count("targets/b.tar") == 3 and sleeps == [0.25, 0.5]


def test_fetch_resumes_a_cut_body_with_range(srv: Mirror, sleeps: list[float],
                                            tmp_path: Path) -> None:
    cut = Answer(200, DATA[:1000], headers=(("Content-Length", str(len(DATA))),), length=False)
    srv.answer("targets/b.tar", cut, Answer(200, DATA))
    dest = tmp_path / "b.tar"
    _src(srv).fetch("targets/b.tar", str(dest), sha256=_sha(DATA), size=len(DATA))
    assert dest.read_bytes() == DATA
    assert [r for p, r in srv.hits] == ["", "bytes=1000-"] and len(sleeps) == 1


def test_fetch_gives_up_after_five_5xx_keeping_nothing(srv: Mirror, sleeps: list[float],
                                                      tmp_path: Path) -> None:
    srv.answer("targets/b.tar", Answer(502))
    dest = tmp_path / "b.tar"
    with pytest.raises(TransferError) as e:
        _src(srv).fetch("targets/b.tar", str(dest), sha256=_sha(DATA), size=len(DATA))
    assert e.value.exit_code == 5
    assert f"0 of {len(DATA)} bytes after 5 attempts" in e.value.message
    assert "HTTP 502" in e.value.message and "resumes" in (e.value.hint or "")
    assert srv.count("targets/b.tar") == 5 and not dest.exists()


@pytest.mark.parametrize("code", [401, 403])
def test_fetch_is_not_retried_on_401_or_403(srv: Mirror, sleeps: list[float], tmp_path: Path,
                                           code: int) -> None:
    srv.answer("targets/b.tar", Answer(code))
    with pytest.raises(TransferError, match=f"refused access \\(HTTP {code}\\)") as e:
        _src(srv).fetch("targets/b.tar", str(tmp_path / "b.tar"), sha256=_sha(DATA),
                        size=len(DATA))
    assert "anonymous" in (e.value.hint or "")
    assert srv.count("targets/b.tar") == 1 and sleeps == []


def test_fetch_of_a_missing_target_is_missing(srv: Mirror, tmp_path: Path) -> None:
    with pytest.raises(Missing):
        _src(srv).fetch("targets/none.tar", str(tmp_path / "n"), sha256=_sha(b""), size=1)


# ---- the URL rules and the scheme table ----------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:5000/ring?x=1", "http://127.0.0.1:5000/ring#top",
    "http://user@127.0.0.1:5000/ring", "http://user:pw@127.0.0.1:5000/ring",
    "http:///ring", "ftp://127.0.0.1/ring"])
def test_a_mirror_url_with_query_fragment_credentials_or_no_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="is not an http\\(s\\)://HOST\\[:PORT\\]/PATH URL"):
        mirror.HttpSource(url)


def test_a_bad_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="source 'http://127.0.0.1:99999/r'"):
        remote.open_source("http://127.0.0.1:99999/r")


def test_the_label_and_base_drop_trailing_slashes() -> None:
    src = mirror.HttpSource("https://127.0.0.1:5000/a/ring//")
    assert (src.label, src.base) == ("https://127.0.0.1:5000/a/ring", "/a/ring")
    assert src.client.timeout == 60.0
    assert mirror.HttpSource("http://127.0.0.1:5000", timeout=7).client.timeout == 7


def test_a_missing_ca_file_is_refused_and_a_real_one_is_used(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--ca-file {tmp_path}/none.pem does not exist"):
        remote.open_source("https://127.0.0.1:5000/r", ca_file=str(tmp_path / "none.pem"))
    from tests.world.tls import make_server_cert
    tls = make_server_cert(tmp_path / "tls")
    src = remote.open_source("https://127.0.0.1:5000/r", ca_file=str(tls.ca_file))
    assert isinstance(src, mirror.HttpSource) and src.client.scheme == "https"


def test_credentials_are_refused_for_a_mirror() -> None:
    creds = ocidist.Credentials("u", "p")
    with pytest.raises(ConfigError, match="registry credentials are for oci:// sources"):
        remote.open_source("http://127.0.0.1:5000/r", credentials=creds)
    with pytest.raises(ConfigError, match="registry credentials are for oci:// sources"):
        mirror.open_mirror("https://127.0.0.1:5000/r", Options(credentials=creds))


def test_the_scheme_picks_the_transport(tmp_path: Path) -> None:
    assert isinstance(remote.open_source(str(tmp_path)), FolderSource)
    assert isinstance(remote.open_source("http://127.0.0.1:5000/r"), mirror.HttpSource)
    https = remote.open_source("https://127.0.0.1:5000/r")
    assert isinstance(https, mirror.HttpSource) and https.client.scheme == "https"
    assert isinstance(remote.open_source("oci://127.0.0.1:5000/site/ring"), OciSource)
    for bad in ("ftp://127.0.0.1/r", "HTTP://127.0.0.1/r", "file:///srv/ring"):
        with pytest.raises(ConfigError, match="expected a folder, http\\(s\\)://MIRROR"):
            remote.open_source(bad)


def test_plain_http_to_a_far_mirror_is_refused_unless_asked_for() -> None:
    """Checked when the source is made, before any connection (10.255.255.1 is never
    contacted: nothing is read from it)."""
    with pytest.raises(ConfigError, match="--plain-http"):
        remote.open_source("http://10.255.255.1:9/ring")
    with pytest.raises(ConfigError, match="--plain-http"):
        mirror.HttpSource("http://10.255.255.1:9/ring")   # the default too
    src = remote.open_source("http://10.255.255.1:9/ring", plain_http=True)
    assert isinstance(src, mirror.HttpSource) and src.client.scheme == "http"

"""The one registry-auth policy (``installer/sources/regauth.py``) on the device and at the desk:
which hosts get credentials, over which schemes, through which proxies, which redirects are
followed. THREATS 38 and 44; issue 24 row 1 and its "also seen" items.

Real servers on 127.0.0.1 only. A non-loopback address appears only as a proxy *setting* that
must be refused before any connection: the device command runs under ``tests.world.netguard``,
which logs every ``connect()`` and refuses any non-loopback one in the process itself."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from installer.errors import ConfigError, TransferError
from installer.sources import ocidist, regauth, remote
from tests.bundles import REPO, KeyDir, cli, tree
from tests.world.fwdproxy import ForwardProxy
from tests.world.push import push_folder_artifact
from tests.world.registry import Registry
from tests.world.tls import make_server_cert

FAR_PROXY = "http://10.255.255.1:3128"   # never contacted: refused before any connection
USER, PASSWORD = "site-user", "pw-never-in-clear"


def _guarded(log: Path, *args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python3 -m installer ARGS`` with every connect() logged and non-loopback refused."""
    return subprocess.run([sys.executable, "-m", "tests.world.netguard", str(log), "installer",
                           *[str(a) for a in args]], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


def _env(**proxies: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(REPO)
    env.update(proxies)
    return env


def _trusting_device(base: Path) -> Path:
    """A device root that trusts a real ring repository's root and follows `canary`, so a
    sync goes as far as asking its source for metadata."""
    keys = KeyDir(base / "keys")
    repo = base / "rings"
    made = subprocess.run([sys.executable, "-m", "bundler", "repo", "init", str(repo), "--keys",
                           str(keys.path)], env=_env(), cwd=str(REPO), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    root = base / "root"
    trusted = cli("trust", repo / "metadata" / "1.root.json", "--root", root, "--ring", "canary")
    assert trusted.returncode == 0, trusted.stderr
    return root


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-http registry with htpasswd on 127.0.0.1 holding one small folder artifact."""
    with Registry(tmp_path_factory.mktemp("auth-registry"), htpasswd=(USER, PASSWORD),
                  name="auth-registry") as reg:
        push_folder_artifact(reg.session(), reg.url, "edge/ring",
                             files={"metadata/1.root.json": b"{}"}, tag="latest")
        yield reg


@pytest.mark.world
def test_credentials_never_cross_a_non_loopback_proxy_in_clear(
        auth_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sync --source oci://127.0.0.1:PORT/...` with `--credentials-file` and `http_proxy` at a
    non-loopback address: exit 2 at once, naming the proxy, with no connection attempted at
    all (not to the proxy, not to the registry); nothing written under --root. Through a
    loopback proxy the same credentials do work (the control), and `no_proxy` bypasses."""
    creds = tmp_path / "creds"
    creds.write_text(f"{USER}:{PASSWORD}\n")
    root = _trusting_device(tmp_path)
    before = tree(root)
    log = tmp_path / "connects.log"
    source = f"oci://{auth_registry.host}/edge/ring"
    for var in ("http_proxy", "HTTP_PROXY"):
        start = time.monotonic()
        p = _guarded(log, "sync", "--source", source, "--credentials-file", creds,
                     "--root", root, "--arch", "amd64", "--health-cmd", "true",
                     env=_env(**{var: FAR_PROXY}))
        took = time.monotonic() - start
        assert p.returncode == 2, p.stdout + p.stderr
        assert "10.255.255.1" in p.stderr and "not loopback" in p.stderr
        assert "Traceback" not in p.stderr
        assert took < 10, took
        assert not log.exists(), log.read_text()   # not one connect(), anywhere
        assert tree(root) == before

    # the control: a loopback proxy is a loopback hop, so the credentials go through it
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)   # read as the device reads it
        client = ocidist.Client(auth_registry.host, credentials=ocidist.Credentials(
            USER, PASSWORD))
        data, _, _ = client.manifest("edge/ring", "latest")
        assert b"metadata/1.root.json" in data
        assert any(auth_registry.host in url for _, url in proxy.log)
        # and no_proxy naming the registry bypasses a far proxy: direct, allowed
        direct = ocidist.Client(auth_registry.host, credentials=ocidist.Credentials(
            USER, PASSWORD), proxies={"http": FAR_PROXY, "no": "127.0.0.1"})
        assert direct.manifest("edge/ring", "latest")[0] == data


@pytest.mark.world
def test_a_plain_http_mirror_is_not_fetched_through_a_far_proxy(tmp_path: Path) -> None:
    """A plain-http mirror on 127.0.0.1 behind a non-loopback `http_proxy`, without
    --plain-http: refused before any connection (issue 24, also seen). With --plain-http the
    user asked for it; that path is not taken here (it would contact the proxy)."""
    root = _trusting_device(tmp_path)
    log = tmp_path / "connects.log"
    p = _guarded(log, "sync", "--source", "http://127.0.0.1:9/rings", "--root", root,
                 "--arch", "amd64", "--health-cmd", "true", env=_env(http_proxy=FAR_PROXY))
    assert p.returncode == 2, p.stdout + p.stderr
    assert "not loopback" in p.stderr and "--plain-http" in p.stderr
    assert "Traceback" not in p.stderr and not log.exists()


class _Redirector(BaseHTTPRequestHandler):
    target = ""
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.hits.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_redirector(tmp_path: Path) -> Iterator[tuple[str, Path, ThreadingHTTPServer]]:
    """An https server on 127.0.0.1 that redirects every GET to plain http on another
    loopback server (the second one, which must never be asked)."""
    tls = make_server_cert(tmp_path / "tls")
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    handler = type("Secure", (_Redirector,), {"hits": [],
                                              "target": f"http://127.0.0.1:{plain.server_port}"})
    plain_handler = type("Plain", (_Redirector,), {"hits": [], "target": "http://127.0.0.1:9"})
    plain.RequestHandlerClass = plain_handler
    secure = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (secure, plain)]
    for t in threads:
        t.start()
    try:
        yield f"https://127.0.0.1:{secure.server_port}/rings", tls.ca_file, plain
    finally:
        for s in (secure, plain):
            s.shutdown()
            s.server_close()


@pytest.mark.world
def test_an_https_mirror_redirect_to_plain_http_is_not_followed(
        https_redirector: tuple[str, Path, ThreadingHTTPServer]) -> None:
    """docs/rings.md says never https to http; the code says the same, loopback or not."""
    url, ca_file, plain = https_redirector
    src = remote.HttpSource(url, ca_file=str(ca_file))
    with pytest.raises(TransferError, match="https down to plain http"):
        src.read("metadata/timestamp.json", max_size=1024)
    assert plain.RequestHandlerClass.hits == []  # type: ignore[attr-defined]


# --- the policy itself (pure) -------------------------------------------------------------

@pytest.mark.parametrize(("url", "proxy", "refused"), [
    ("http://127.0.0.1:5000/v2/", None, None),
    ("http://127.0.0.1:5000/v2/", "http://127.0.0.1:3128", None),
    ("http://localhost:5000/v2/", "localhost:3128", None),
    ("http://127.0.0.1:5000/v2/", FAR_PROXY, "proxy 10.255.255.1:3128"),
    ("http://127.0.0.1:5000/v2/", "10.255.255.1:3128", "proxy 10.255.255.1:3128"),
    ("http://[::1]:5000/v2/", "http://user:pw@proxy.example:8080", "proxy proxy.example:8080"),
    ("http://r.example/v2/", None, "not loopback"),
    ("https://r.example/v2/", FAR_PROXY, None),   # a CONNECT tunnel: the proxy sees no secret
])
def test_clear_route(url: str, proxy: str | None, refused: str | None) -> None:
    why = regauth.clear_route_refusal(url, proxy=proxy)
    assert (why is None) if refused is None else (why is not None and refused in why)


@pytest.mark.parametrize(("registry", "target", "proxy", "refused"), [
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", None, None),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", FAR_PROXY, "not loopback"),
    ("https://r.example", "https://r.example/token", FAR_PROXY, None),
    ("https://r.example", "http://r.example/token", None, "downgrade"),
    ("https://r.example", "https://evil.example/token", None, "another host"),
])
def test_where_credentials_may_go_with_proxies(registry: str, target: str, proxy: str | None,
                                               refused: str | None) -> None:
    why = regauth.credentials_refusal(registry, target, proxy=proxy)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_proxy_for_follows_no_proxy() -> None:
    proxies = {"http": FAR_PROXY, "https": "http://p.example:1", "no": "127.0.0.1,.site"}
    assert regauth.proxy_for("http://127.0.0.1:5000/v2/", proxies) is None
    assert regauth.proxy_for("http://localhost:5000/v2/", proxies) == FAR_PROXY
    assert regauth.proxy_for("https://r.site/v2/", proxies) is None
    assert regauth.proxy_for("https://r.example/v2/", proxies) == "http://p.example:1"
    assert regauth.proxy_for("http://r.example/", {}) is None


@pytest.mark.parametrize(("old", "new", "refused"), [
    ("https://a/x", "http://127.0.0.1/x", "https down to plain http"),
    ("https://a/x", "https://b/x", None),
    ("http://127.0.0.1/x", "http://127.0.0.2/x", None),
    ("http://a/x", "file:///etc/passwd", "only http(s)"),
])
def test_redirects(old: str, new: str, refused: str | None) -> None:
    why = regauth.redirect_refusal(old, new)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_challenge_parsing() -> None:
    assert regauth.parse_challenge('Bearer realm="https://a/t",service="r",scope="x:y:pull"') \
        == ("bearer", {"realm": "https://a/t", "service": "r", "scope": "x:y:pull"})
    assert regauth.parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})
    assert regauth.parse_challenge("Bearer " + 'a="b",' * 5000)[1] == {}


def test_plain_http_credentials_off_loopback_refused_before_any_connection() -> None:
    with pytest.raises(ConfigError, match="not loopback"):
        ocidist.Client("r.example:5000", plain_http=True, proxies={},
                       credentials=ocidist.Credentials(USER, PASSWORD))

"""`bundle lock` against a hostile upstream (THREATS.md 26-30 and 37-43, issue #16 items 2, 3,
5, 6, 7, 8, 9): one loopback server plays registry, chart repository and release server, and
each scenario changes a few of its answers. Every scenario runs the real CLI as a child process
with resource limits and asserts its exit code, a clear message, no traceback, bounded time and
peak RSS, and that nothing was written outside the cache and the lock file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from bundler.errors import FetchError, SpecError, UpstreamError
from bundler.fetch.cache import ContentStore, Downloader
from bundler.fetch.transport import RetryPolicy, Transport
from bundler.limits import Limits
from bundler.spec.spec import load_spec
from installer.sources.regauth import credentials_refusal
from tests.cli_helpers import Outcome, bundle_child
from tests.world.hostile import (
    CHART_NAME,
    CHART_VERSION,
    EMPTY_SHA256,
    IMAGE_REPO,
    IMAGE_TAG,
    OCI_INDEX,
    OCI_MANIFEST,
    RELEASE_DIR,
    HostileUpstream,
    Reply,
    Route,
    Seen,
    baseline,
    bomb_tgz,
    chart_tgz,
    image_docs,
    index_yaml,
    manifest_reply,
    registry_routes,
    sha,
)
from tests.world.tls import TlsFiles, make_server_cert

REGISTRY = "registry.hostile"
IMAGE = f"{REGISTRY}/{IMAGE_REPO}:{IMAGE_TAG}"
MAX_RSS_MB = 512
CREDS = {"HOSTILE_USER": "builder", "HOSTILE_PASS": "s3cret-password"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileUpstream]:
    with HostileUpstream(tmp_path_factory.mktemp("hostile-tls")) as up:
        yield up


# ---------------------------------------------------------------- the child process

def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024 * 1024, 64 * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))


def run_bundle(args: list[str], *, cwd: Path, env: dict[str, str],
               timeout: float = 60) -> Outcome:
    """``python3 -m bundler ARGS`` with a file-size and CPU limit; peak RSS from wait4."""
    return bundle_child(args, cwd=cwd, env=env, timeout=timeout, limits=_limits)


def child_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment whose home, temp and XDG folders are under ``tmp``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
            "TMPDIR": str(tmp / "tmp"), "XDG_CACHE_HOME": str(tmp / "xdg"),
            "XDG_CONFIG_HOME": str(tmp / "xdg"), "XDG_DATA_HOME": str(tmp / "xdg"),
            "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": str(Path(__file__).parents[1]),
            **CREDS, **extra}


# ---------------------------------------------------------------- the spec

def spec_text(up: HostileUpstream, *, images: bool = True, charts: list[dict[str, Any]] | None
              = None, creds: bool = False, tls: bool = False,
              auth_hosts: list[str] | None = None) -> str:
    endpoint = up.tls_url if tls else up.url
    reg = [f'[registries."{REGISTRY}"]', f'endpoint = "{endpoint}"']
    if auth_hosts is not None:
        reg.append(f"auth_hosts = {json.dumps(auth_hosts)}")
    if creds:
        reg += ['username_env = "HOSTILE_USER"', 'password_env = "HOSTILE_PASS"']
    if tls:
        reg.append(f'ca_file = "{up.ca_file}"')
    chart_list = charts if charts is not None else [
        {"name": CHART_NAME, "repo": f"{up.url}/charts", "version": CHART_VERSION}]
    files = ["[files]", f"extra_roots = {json.dumps([str(Path(up.ca_file).parent)])}", ""] \
        if tls else []  # the shared CA lives outside the project folder: allowed explicitly
    lines = [*files, "[k3s]", f'releases = "{up.url}/k3s"',
             f'install_script = "{up.url}/install.sh"', "", *reg, "", "[bundles.h]",
             'version = "1.0.0"', 'arch = ["amd64"]',
             'k3s = "v1.34.3+k3s1"', "k3s_airgap_images = false",
             f"images = {json.dumps([IMAGE] if images else [])}"]
    for c in chart_list:
        lines += ["", "[[bundles.h.charts]]", *(f"{k} = {json.dumps(v)}" for k, v in c.items())]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- scenarios

Routes = dict[str, Route]


@dataclass(frozen=True)
class Scenario:
    name: str
    change: Callable[[HostileUpstream, Routes], object]
    code: int
    says: str                                   # part of the message the user must see
    spec: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    seconds: float = 25.0
    then: Callable[[HostileUpstream, Path], None] | None = None


def _nothing(up: HostileUpstream, r: Routes) -> None:
    return None


def _set(path: str, route: Route) -> Callable[[HostileUpstream, Routes], None]:
    def change(up: HostileUpstream, r: Routes) -> None:
        r[path] = route
    return change


def _image(**docs: Any) -> Callable[[HostileUpstream, Routes], None]:
    """Replace the image with one built from edited documents: ``index``/``manifest``
    callables edit the parsed JSON (their descriptors are re-derived where needed)."""
    def change(up: HostileUpstream, r: Routes) -> None:
        index, manifest, cfg, layer = image_docs()
        m = json.loads(manifest)
        if "manifest" in docs:
            docs["manifest"](m)
        manifest = json.dumps(m).encode()
        i = json.loads(index)
        i["manifests"][0].update(digest=sha(manifest), size=len(manifest))
        if "index" in docs:
            docs["index"](i)
        index = json.dumps(i).encode()
        r.update(registry_routes(index, manifest, cfg, layer))
    return change


TAG_PATH = f"/v2/{IMAGE_REPO}/manifests/{IMAGE_TAG}"
CHART_PATH = f"/charts/{CHART_NAME}-{CHART_VERSION}.tgz"
K3S_PATH = f"{RELEASE_DIR}/k3s"


def _challenge(realm: Callable[[HostileUpstream], str], path: str = TAG_PATH
               ) -> Callable[[HostileUpstream, Routes], None]:
    """The registry wants a Bearer token from ``realm``; the token service (wherever it is)
    would hand one out to anybody."""
    def change(up: HostileUpstream, r: Routes) -> None:
        good = r[path]

        def guarded(seen: Seen) -> Reply:
            if seen.headers.get("Authorization") == "Bearer tok":
                return good(seen) if callable(good) else good
            return Reply(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm(up)}",service="hostile"'})
        r[path] = guarded
        r["/token"] = Reply(body=b'{"token": "tok"}')
    return change


def _no_credentials_to(port: Callable[[HostileUpstream], int]
                       ) -> Callable[[HostileUpstream, Path], None]:
    def then(up: HostileUpstream, _: Path) -> None:
        leaked = [s for s in up.log if s.port == port(up) and "Authorization" in s.headers]
        assert not leaked, f"credentials were sent: {leaked}"
        assert not any(CREDS["HOSTILE_PASS"] in json.dumps(s.headers) for s in up.log
                       if s.port == port(up))
    return then


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _same_host_token(up: HostileUpstream, r: Routes) -> None:
    _challenge(lambda u: f"{u.url}/token")(up, r)

    def token(seen: Seen) -> Reply:
        if not seen.headers.get("Authorization", "").startswith("Basic "):
            return Reply(status=401)
        return Reply(body=b'{"token": "tok"}')
    r["/token"] = token


def _token_on(host: str) -> Callable[[HostileUpstream, Routes], None]:
    """A token service that wants Basic credentials, reached under another host name
    (``localhost``) for the same loopback server the registry is on (127.0.0.1)."""
    def change(up: HostileUpstream, r: Routes) -> None:
        _challenge(lambda u: f"http://{host}:{_port_of(u.url)}/token")(up, r)
        r["/token"] = _same_host_token_route
    return change


def _same_host_token_route(seen: Seen) -> Reply:
    if not seen.headers.get("Authorization", "").startswith("Basic "):
        return Reply(status=401)
    return Reply(body=b'{"token": "tok"}')


def _no_basic_credentials(up: HostileUpstream, _: Path) -> None:
    sent = [s for s in up.log if s.headers.get("Authorization", "").startswith("Basic ")]
    assert not sent, f"credentials were sent: {sent}"


def _token_was_authenticated(up: HostileUpstream, _: Path) -> None:
    assert any(s.path.startswith("/token") and s.headers.get("Authorization", "")
               .startswith("Basic ") for s in up.log), "positive control: creds never sent"


def _basic_then_redirect(up: HostileUpstream, r: Routes) -> None:
    """Basic auth on the registry; the config blob is redirected to another host."""
    _, _, cfg, _ = image_docs()
    blob = f"/v2/{IMAGE_REPO}/blobs/{sha(cfg)}"
    r["/elsewhere/config"] = r[blob]
    r[blob] = Reply(status=307, headers={"Location": f"{up.other_url}/elsewhere/config"})
    for path in list(r):
        if path.startswith("/v2/"):
            inner = r[path]

            def basic(seen: Seen, inner: Route = inner) -> Reply:
                if not seen.headers.get("Authorization", "").startswith("Basic "):
                    return Reply(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
                return inner(seen) if callable(inner) else inner
            r[path] = basic


def _redirect_to_other(body: bytes) -> Callable[[HostileUpstream, Routes], None]:
    def change(up: HostileUpstream, r: Routes) -> None:
        r["/metadata"] = Reply(body=body)
        r[CHART_PATH] = Reply(status=302, headers={"Location": f"{up.other_url}/metadata"})
    return change


def _index_with(urls: list[str]) -> Callable[[HostileUpstream, Routes], None]:
    return _set("/charts/index.yaml", Reply(body=index_yaml({CHART_NAME: [
        {"name": CHART_NAME, "version": CHART_VERSION, "urls": urls}]})))


def _not_cached(body: bytes) -> Callable[[HostileUpstream, Path], None]:
    def then(up: HostileUpstream, tmp: Path) -> None:
        blob = tmp / "cache" / "blobs" / "sha256" / hashlib.sha256(body).hexdigest()
        assert not blob.exists(), "a non-chart body entered the cache"
    return then


def _head_says(length: str) -> Route:
    return lambda seen: Reply(length=length) if seen.method == "HEAD" else Reply(endless=True)


def _lock_media_types(up: HostileUpstream, tmp: Path) -> None:
    lock = json.loads((tmp / "project" / "bundles.lock").read_text())
    img = lock["bundles"]["h"]["images"][0]
    assert img["media_type"] == OCI_INDEX
    assert img["platforms"]["amd64"]["media_type"] == OCI_MANIFEST


def _lock_and_archive_media_types(up: HostileUpstream, tmp: Path) -> None:
    """The lock's media types, then `bundle build`: the images archive's index.json."""
    _lock_media_types(up, tmp)
    r = run_bundle(["-q", "build", "--arch", "amd64", "--unsigned", "--cache",
                    str(tmp / "cache"), "--out", str(tmp / "project" / "dist")],
                   cwd=tmp / "project",
                   env=child_env(tmp, {}))
    assert r.code == 0 and "Traceback" not in r.err, r.err
    with tarfile.open(tmp / "project" / "dist" / "h-1.0.0-amd64.tar") as bundle:
        name = next(n for n in bundle.getnames()
                    if n.endswith(("-images-amd64.tar", "-images-amd64.tar.zst")))
        archive = bundle.extractfile(name).read()  # type: ignore[union-attr]
    if name.endswith(".zst"):  # uncompressed layers go to a zstd archive (bundle-format.md)
        archive = zstandard.ZstdDecompressor().decompressobj().decompress(archive)
    layout = tarfile.open(fileobj=io.BytesIO(archive))
    index = json.load(layout.extractfile("index.json"))  # type: ignore[arg-type]
    assert [d["mediaType"] for d in index["manifests"]] == [OCI_MANIFEST]


def _two_charts(up: HostileUpstream, r: Routes) -> None:
    second = chart_tgz("hchart2", "2.0.0")
    r["/charts/hchart2-2.0.0.tgz"] = Reply(body=second)
    r["/charts/index.yaml"] = Reply(body=index_yaml({
        CHART_NAME: [{"name": CHART_NAME, "version": CHART_VERSION,
                      "urls": [f"{CHART_NAME}-{CHART_VERSION}.tgz"]}],
        "hchart2": [{"name": "hchart2", "version": "2.0.0", "urls": ["hchart2-2.0.0.tgz"]}]}))


def _index_fetched_once(up: HostileUpstream, _: Path) -> None:
    gets = [s for s in up.log if s.path == "/charts/index.yaml"]
    assert len(gets) == 1, f"index.yaml fetched {len(gets)} times"


def _oci_chart(layers: Any) -> Callable[[HostileUpstream, Routes], None]:
    return _set("/v2/charts/hchart/manifests/1.0.0", manifest_reply({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2}, "layers": layers}))


ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    + f"entries:\n  {CHART_NAME}:\n  - version: *i\n").encode()
OCI_SPEC = {"charts": [{"name": CHART_NAME, "repo": f"oci://{REGISTRY}/charts",
                        "version": CHART_VERSION}]}
NO_CHARTS: dict[str, Any] = {"charts": []}
SMALL = {"BUNDLE_LIMITS": "k3s_binary=4MiB,chart=2MiB,index_yaml=1MiB"}

SCENARIOS = [
    # a good upstream, and headers that must not matter
    Scenario("baseline", _nothing, 0, "wrote", then=_lock_media_types),
    Scenario("content-type-header-is-ignored", lambda up, r: [r.__setitem__(p, Reply(  # type: ignore[func-returns-value]
        body=v.body, headers={**v.headers, "Content-Type": 'application/vnd.evil"</x>'}))
        for p, v in list(r.items()) if "/manifests/" in p and isinstance(v, Reply)],
        0, "wrote", then=_lock_and_archive_media_types),
    Scenario("index-parsed-once-for-two-charts", _two_charts, 0, "2 charts", spec={"charts": [
        {"name": CHART_NAME, "repo": "{url}/charts", "version": CHART_VERSION},
        {"name": "hchart2", "repo": "{url}/charts", "version": "2.0.0"}]},
        then=_index_fetched_once),
    # item 2: credentials
    Scenario("realm-on-another-host", _challenge(lambda u: f"{u.other_url}/token"), 5,
             "credentials not sent", spec={"creds": True, "charts": []},
             then=_no_credentials_to(lambda u: u.other_port())),
    Scenario("realm-downgrade-https-to-http", _challenge(lambda u: f"{u.url}/token"), 5,
             "downgrade", spec={"creds": True, "tls": True, "charts": []},
             then=_no_credentials_to(lambda u: _port_of(u.url))),
    Scenario("realm-file-url", _challenge(lambda u: "file:///etc/passwd"), 3,
             "only http:// and https://", spec={"creds": True, "charts": []}),
    Scenario("realm-same-host-gets-credentials", _same_host_token, 0, "wrote",
             spec={"creds": True, "charts": []}, then=_token_was_authenticated),
    Scenario("realm-other-host-name-refused", _token_on("localhost"), 5,
             "credentials not sent", spec={"creds": True, "charts": []},
             then=_no_basic_credentials),
    Scenario("realm-in-auth-hosts-gets-credentials", _token_on("localhost"), 0, "wrote",
             spec={"creds": True, "charts": [], "auth_hosts": ["localhost"]},
             then=_token_was_authenticated),
    Scenario("basic-auth-dropped-on-redirect", _basic_then_redirect, 0, "wrote",
             spec={"creds": True, "charts": []},
             then=_no_credentials_to(lambda u: u.other_port())),
    Scenario("token-body-endless", lambda up, r: (_challenge(lambda u: f"{u.url}/token")(up, r),
             r.__setitem__("/token", Reply(endless=True))), 3, "token cap",  # type: ignore[func-returns-value]
             spec=NO_CHARTS),
    Scenario("token-body-not-an-object", lambda up, r: (_challenge(
        lambda u: f"{u.url}/token")(up, r), r.__setitem__("/token", Reply(body=b"[1, 2]"))),  # type: ignore[func-returns-value]
        3, "not a JSON object", spec=NO_CHARTS),
    # item 3: what is fetched as a chart must be that chart
    Scenario("chart-url-serves-metadata", _set(CHART_PATH, Reply(body=b'{"Token": "aws"}')), 3,
             "not a gzip archive", then=_not_cached(b'{"Token": "aws"}')),
    Scenario("chart-wrong-name", _set(CHART_PATH, Reply(body=chart_tgz("other"))), 3,
             f"holds no {CHART_NAME}/Chart.yaml"),
    Scenario("chart-wrong-version", _set(CHART_PATH, Reply(body=chart_tgz(version="9.9.9"))),
             3, "version '9.9.9'"),
    Scenario("chart-url-is-file", _index_with(["file:///etc/passwd"]), 3,
             "only http:// and https://"),
    Scenario("chart-redirect-loop", _set(CHART_PATH, Reply(status=302, headers={
        "Location": CHART_PATH})), 3, "more than 5 redirects"),
    Scenario("chart-redirect-to-file", _set(CHART_PATH, Reply(status=302, headers={
        "Location": "file:///etc/passwd"})), 3, "only http:// and https://"),
    Scenario("chart-redirect-to-metadata", _redirect_to_other(b"ami-id\n"), 3, "fetched via"),
    Scenario("chart-gzip-bomb", lambda up, r: r.__setitem__(CHART_PATH, Reply(
        body=bomb_tgz(unpacked=101 * 1024 * 1024))), 3,
             "decompresses to more than"),
    Scenario("chart-endless", _set(CHART_PATH, Reply(endless=True)), 3, "chart cap of 2 MiB",
             env=SMALL),
    Scenario("oci-chart-layers-not-objects", _oci_chart([1, "x", None]), 3,
             "no Helm chart layer", spec=OCI_SPEC),
    Scenario("oci-chart-layers-not-a-list", _oci_chart("x"), 3, "no Helm chart layer",
             spec=OCI_SPEC),
    # item 5: media types from the verified bytes, allow-listed
    Scenario("manifest-media-type-not-allowed", _image(
        manifest=lambda m: m.update(mediaType='application/vnd.evil"</x>')), 3,
        "unsupported manifest media type", spec=NO_CHARTS),
    # item 6: caps
    Scenario("install-sh-endless", _set("/install.sh", Reply(endless=True)), 3,
             "install_script cap of 1 MiB", spec=NO_CHARTS),
    Scenario("k3s-head-length-10^18", _set(K3S_PATH, _head_says(str(10 ** 18))), 3,
             "over the k3s_binary cap", spec=NO_CHARTS),
    Scenario("k3s-no-head-length-endless", _set(K3S_PATH, Reply(endless=True)), 3,
             "k3s_binary cap of 4 MiB", spec=NO_CHARTS, env=SMALL),
    Scenario("platform-size-10^18", _image(index=lambda i: i["manifests"][0].update(
        size=10 ** 18)), 3, "over the manifest cap", spec=NO_CHARTS),
    Scenario("config-size-10^18", _image(manifest=lambda m: m["config"].update(
        size=10 ** 18)), 3, "over the config cap", spec=NO_CHARTS),
    Scenario("config-endless", lambda up, r: r.__setitem__(
        f"/v2/{IMAGE_REPO}/blobs/{sha(image_docs()[2])}", Reply(endless=True)), 3,
        "never matched its digest", spec=NO_CHARTS),
    Scenario("index-yaml-endless", _set("/charts/index.yaml", Reply(endless=True)), 3,
             "index_yaml cap of 1 MiB", env=SMALL),
    # item 7: YAML
    Scenario("index-yaml-alias-bomb", _set("/charts/index.yaml", Reply(body=ALIAS_BOMB)), 3,
             "aliases"),
    Scenario("index-yaml-100k-deep", _set("/charts/index.yaml", Reply(
        body=b"[" * 100_000 + b"]" * 100_000)), 3, "nested deeper"),
    Scenario("index-yaml-is-a-list", _set("/charts/index.yaml", Reply(body=b"- a\n- b\n")), 3,
             "not a Helm repository index"),
    Scenario("index-yaml-versions-not-objects", _set("/charts/index.yaml", Reply(
        body=b"entries:\n  hchart: [1, [2], x]\n")), 3, "not in"),
    # item 8: overall deadline
    Scenario("install-sh-one-byte-every-half-second", _set("/install.sh", Reply(
        body=b"#!/bin/sh\n" * 8, trickle=0.5)), 5, "deadline", spec=NO_CHARTS,
        env={"BUNDLE_LIMITS": "deadline_floor=1,min_rate=16MiB"}, seconds=15),
    Scenario("headers-one-byte-every-half-second", _set("/install.sh", Reply(slow_head=0.5)),
             5, "deadline", spec=NO_CHARTS,
             env={"BUNDLE_LIMITS": "deadline_floor=1,min_rate=16MiB"},
             seconds=15),
    # item 9: malformed upstream data
    Scenario("manifest-not-an-object", _set(TAG_PATH, manifest_reply(b"[1, 2]")), 3,
             "not a JSON object", spec=NO_CHARTS),
    Scenario("manifest-not-json", _set(TAG_PATH, manifest_reply(b"{nope")), 3,
             "not valid JSON", spec=NO_CHARTS),
    Scenario("size-is-a-string", _image(index=lambda i: i["manifests"][0].update(
        size="abc")), 3, "lacks digest or size", spec=NO_CHARTS),
    Scenario("size-negative", _image(index=lambda i: i["manifests"][0].update(size=-1)), 3,
             "not a byte count", spec=NO_CHARTS),
    Scenario("size-zero", _image(index=lambda i: i["manifests"][0].update(size=0)), 3,
             "index says 0", spec=NO_CHARTS),
    Scenario("layers-not-objects", _image(manifest=lambda m: m.update(layers=[1, "x"])), 3,
             "malformed layer descriptors", spec=NO_CHARTS),
    Scenario("layer-size-10^18", _image(manifest=lambda m: m["layers"][0].update(
        size=10 ** 18)), 3, "over the layer cap", spec=NO_CHARTS),
    Scenario("layer-digest-not-sha256", _image(manifest=lambda m: m["layers"][0].update(
        digest="md5:abc")), 3, "sha256 only", spec=NO_CHARTS),
    Scenario("config-not-an-object", _image(manifest=lambda m: m.update(config=[1])), 3,
             "no config descriptor", spec=NO_CHARTS),
    Scenario("manifest-redirect-loop", _set(TAG_PATH, Reply(status=307, headers={
        "Location": TAG_PATH})), 3, "more than 5 redirects", spec=NO_CHARTS),
    Scenario("manifest-redirect-to-file", _set(TAG_PATH, Reply(status=307, headers={
        "Location": "file:///etc/shadow"})), 3, "only http:// and https://", spec=NO_CHARTS),
    Scenario("blob-redirect-https-to-http", lambda up, r: r.__setitem__(
        f"/v2/{IMAGE_REPO}/blobs/{sha(image_docs()[2])}", Reply(status=302, headers={
            "Location": f"{up.url}/x"})), 3, "from https down to http",
        spec={"tls": True, "charts": []}),
]


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not str(p.relative_to(root)).startswith(("cache", "stdout", "stderr"))}


@dataclass
class Ran:
    outcome: Outcome
    written: set[str]
    then_error: BaseException | None


def _run_scenario(sc: Scenario, tmp: Path, tls: TlsFiles) -> Ran:
    """One scenario on its own upstream instance (so scenarios can run side by side)."""
    with HostileUpstream(tmp, tls=tls) as up:
        routes = baseline()
        sc.change(up, routes)
        up.reset(routes)
        for sub in ("project", "home", "tmp", "xdg"):
            (tmp / sub).mkdir()
        spec = dict(sc.spec)
        if "charts" in spec:
            spec["charts"] = [{k: str(v).replace("{url}", up.url) for k, v in c.items()}
                              for c in spec["charts"]]
        (tmp / "project" / "bundles.toml").write_text(spec_text(up, **spec))
        before = _snapshot(tmp)
        r = run_bundle(["-q", "lock", "--cache", str(tmp / "cache"), "--jobs", "2"],
                       cwd=tmp / "project", env=child_env(tmp, sc.env),
                       timeout=sc.seconds + 30)
        written = _snapshot(tmp) - before
        error = None
        if sc.then is not None and r.code == sc.code:
            try:
                sc.then(up, tmp)
            except BaseException as e:  # re-raised by the scenario's own test
                error = e
        return Ran(r, written, error)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    """Every scenario, three at a time (most of their time is spent waiting)."""
    tls = make_server_cert(tmp_path_factory.mktemp("hostile-shared-tls"))
    folders = [tmp_path_factory.mktemp("hostile") for _ in SCENARIOS]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda a: _run_scenario(a[0], a[1], tls),
                                zip(SCENARIOS, folders, strict=True)))
    return {sc.name: r for sc, r in zip(SCENARIOS, results, strict=True)}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_hostile_upstream(sc: Scenario, ran: dict[str, Ran]) -> None:
    got = ran[sc.name]
    r = got.outcome
    assert "Traceback" not in r.err, r.err
    assert r.code == sc.code, f"exit {r.code}, wanted {sc.code}:\n{r.err}"
    assert sc.says in (r.out + r.err), r.out + r.err
    assert r.seconds < sc.seconds, f"took {r.seconds:.1f} s"
    assert r.rss_mb < MAX_RSS_MB, f"peak RSS {r.rss_mb:.0f} MB"
    assert got.written <= {"project/bundles.lock"}, f"written outside the cache: {got.written}"
    if sc.code:
        assert "project/bundles.lock" not in got.written
    if got.then_error is not None:
        raise got.then_error


# ---------------------------------------------------------------- the downloader itself

def test_zero_byte_blob_is_fetched_without_a_request(tmp_path: Path) -> None:
    calls: list[int] = []

    def opener(start: int) -> requests.Response:
        calls.append(start)
        raise AssertionError("an empty blob needs no transfer")
    d = Downloader(ContentStore(tmp_path), sleep=lambda s: None)
    path = d.fetch("sha256:" + EMPTY_SHA256, 0, opener, what="empty layer")
    assert path.read_bytes() == b"" and not calls
    assert d.fetch("sha256:" + EMPTY_SHA256, 0, opener, what="empty layer") == path


def test_failure_kind_is_by_exception_type_not_message(upstream: HostileUpstream,
                                                       tmp_path: Path) -> None:
    """A body cut short on every attempt is a transfer failure (exit 5), a body that never
    matches its digest an upstream failure (exit 3): decided by the exception caught, not by
    looking for "sha256" in the last message as before."""
    digest = "sha256:" + "ab" * 32
    transport = Transport(policy=RetryPolicy(attempts=1))
    cut = f"{upstream.url}/v2/x/blobs/{digest}"
    wrong = f"{upstream.url}/wrong-bytes"
    upstream.reset({"/wrong-bytes": Reply(body=b"x" * 10),
                    f"/v2/x/blobs/{digest}": Reply(body=b"x" * 5, length="10")})

    def opener(url: str) -> Callable[[int], requests.Response]:
        return lambda start: transport.request("GET", url, stream=True, what="blob",
                                               ok=(200, 206))
    d = Downloader(ContentStore(tmp_path), attempts=2, sleep=lambda s: None)
    with pytest.raises(FetchError) as broken:
        d.fetch(digest, 10, opener(cut), what=f"blob {digest}")
    assert broken.value.exit_code == 5
    with pytest.raises(UpstreamError) as mismatch:
        d.fetch(digest, 10, opener(wrong), what="blob")
    assert mismatch.value.exit_code == 3
    assert not (tmp_path / "blobs" / "sha256" / digest[7:]).exists()


# ---------------------------------------------------------------- the pure rules

@pytest.mark.parametrize(("endpoint", "target", "allowed", "refused"), [
    ("https://r.example", "https://r.example/token", (), None),
    ("https://registry-1.docker.io", "https://auth.docker.io/token", ("auth.docker.io",), None),
    ("https://r.example", "https://evil.example/token", (), "another host"),
    ("https://r.example", "http://r.example/token", (), "downgrade"),
    ("http://r.example", "http://r.example/token", (), "plain http"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", (), None),
    ("http://127.0.0.1:5000", "http://127.0.0.1:6000/token", (), "another host"),
    ("https://r.example", "file:///etc/passwd", (), "not an http(s) URL"),
])
def test_where_credentials_may_go(endpoint: str, target: str, allowed: tuple[str, ...],
                                  refused: str | None) -> None:
    why = credentials_refusal(endpoint, target, allowed_hosts=allowed)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_limits_parse_and_refuse() -> None:
    lim = Limits.parse("chart=64MiB, token=10, deadline_floor=2.5")
    assert (lim.chart, lim.token, lim.deadline_floor) == (64 << 20, 10, 2.5)
    assert lim.index_yaml == Limits().index_yaml
    assert Limits.from_env({}) == Limits()
    for bad in ("chart", "nope=1", "chart=12XB", "chart=0", "min_rate=-1"):
        with pytest.raises(SpecError):
            Limits.parse(bad)
    with pytest.raises(UpstreamError):
        lim.check_size("token", 11, what="t", source="s")
    for size in (-1, "1", True, None, 1.5):
        with pytest.raises(UpstreamError):
            lim.check_size("chart", size, what="t", source="s")


# ---------------------------------------------------------------- the lock as input

def test_edited_lock_media_type_is_refused_at_load(tmp_path: Path) -> None:
    """A hand-edited bundles.lock cannot carry a media type the builder would sign into
    index.json (#16 item 5, lock side): `bundle build` refuses it with exit 2, naming the
    image and the field, before anything is fetched or written."""
    with HostileUpstream(tmp_path / "tls") as up:
        up.reset(baseline())
        for sub in ("project", "home", "tmp", "xdg"):
            (tmp_path / sub).mkdir()
        (tmp_path / "project" / "bundles.toml").write_text(spec_text(up, charts=[]))
        env = child_env(tmp_path, {})
        good = run_bundle(["-q", "lock", "--cache", str(tmp_path / "cache")],
                          cwd=tmp_path / "project", env=env)
        assert good.code == 0, good.err
        lock_path = tmp_path / "project" / "bundles.lock"
        for where in ("image", "platform"):
            doc = json.loads(lock_path.read_text())
            image = doc["bundles"]["h"]["images"][0]
            target = image if where == "image" else image["platforms"]["amd64"]
            target["media_type"] = 'application/vnd.evil"</x>'
            lock_path.write_text(json.dumps(doc))
            before = _snapshot(tmp_path)
            r = run_bundle(["-q", "build", "--unsigned", "--cache", str(tmp_path / "cache"),
                            "--out", str(tmp_path / "project" / "dist")],
                           cwd=tmp_path / "project", env=env)
            assert "Traceback" not in r.err, r.err
            assert r.code == 2, r.err
            assert IMAGE in r.err and "media_type" in r.err and "vnd.evil" in r.err, r.err
            assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("bad", ["https://auth.example", "auth.example/token", "Auth.Example",
                                 "a b", "", "auth.example:port"])
def test_auth_hosts_validated_at_load(tmp_path: Path, bad: str) -> None:
    """``auth_hosts`` names hosts (``host`` or ``host:port``), nothing else: refused at load
    with the key named."""
    spec = tmp_path / "bundles.toml"

    def write(hosts: list[str]) -> None:
        spec.write_text(f'[k3s]\nreleases = "http://127.0.0.1:1/k3s"\n'
                        f'[registries."{REGISTRY}"]\nendpoint = "http://127.0.0.1:1"\n'
                        f"auth_hosts = {json.dumps(hosts)}\n"
                        '[bundles.h]\nversion = "1.0.0"\narch = ["amd64"]\n'
                        'k3s = "v1.34.3+k3s1"\n')
    write(["auth.example", bad])
    with pytest.raises(SpecError, match=r"auth_hosts\[1\].*not a host name"):
        load_spec(spec)
    write(["auth.example:8443", "127.0.0.2"])
    cfg = load_spec(spec).registries[REGISTRY]
    assert cfg.auth_hosts == ("auth.example:8443", "127.0.0.2")


@pytest.mark.parametrize("kind", ["k3s_binary", "install_script", "config"])
def test_build_fetch_is_capped_by_kind(tmp_path: Path, kind: str) -> None:
    """`bundle build` checks each pinned download against its kind's cap (not the 16 GiB
    layer cap): with the cap lowered below the locked size it refuses (exit 3) before a byte
    of that artifact enters the cache."""
    with HostileUpstream(tmp_path / "tls") as up:
        up.reset(baseline())
        for sub in ("project", "home", "tmp", "xdg"):
            (tmp_path / sub).mkdir()
        (tmp_path / "project" / "bundles.toml").write_text(spec_text(up, charts=[]))
        lock_cache, build_cache = tmp_path / "lock-cache", tmp_path / "cache"
        good = run_bundle(["-q", "lock", "--cache", str(lock_cache)],
                          cwd=tmp_path / "project", env=child_env(tmp_path, {}))
        assert good.code == 0, good.err
        r = run_bundle(["-q", "build", "--unsigned", "--jobs", "1", "--cache", str(build_cache),
                        "--out", str(tmp_path / "project" / "dist")],
                       cwd=tmp_path / "project",
                       env=child_env(tmp_path, {"BUNDLE_LIMITS": f"{kind}=10"}))
        assert "Traceback" not in r.err, r.err
        assert r.code in (3, 5), r.err
        assert f"{kind} cap" in r.err, r.err
        doc = json.loads((tmp_path / "project" / "bundles.lock").read_text())
        b = doc["bundles"]["h"]
        sha = {"k3s_binary": b["k3s"]["binaries"]["amd64"]["sha256"],
               "install_script": b["k3s"]["install_script"]["sha256"],
               "config": b["images"][0]["platforms"]["amd64"]["config"].split(":")[1]}[kind]
        cached = {p.name for p in build_cache.rglob("*") if p.is_file()}
        assert not any(sha in name for name in cached), cached
        assert not (tmp_path / "project" / "dist").exists() or not any(
            (tmp_path / "project" / "dist").rglob("*.bundle*"))

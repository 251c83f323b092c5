"""The test world behaves as the other tests assume: real registries keep digests, TLS and
tokens gate access, every fault really happens, the release server does Range, checksums and
airgap archives are right. Independent clients (skopeo, containerd, Helm) are used where
installed, so the world is not only checked against itself."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
import zstandard

from tests.world import (
    AMD64,
    ARM64,
    ARM_V7,
    K3S_IMAGES,
    K3S_VERSION,
    FaultProxy,
    ImageFactory,
    ManagedProcess,
    Registry,
    ReleaseServer,
    TokenAuthFront,
    World,
    push_image,
    read_install_records,
)
from tests.world.oci import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST
from tests.world.world import DEFAULT_BUNDLE_IMAGES

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST,
                    "application/vnd.docker.distribution.manifest.v2+json"])
NGINX = "docker.io/library/nginx:1.27"


def http() -> requests.Session:
    sess = requests.Session()
    sess.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    return sess


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(base: str, repo: str, ref: str, *, token: str | None = None,
                 **kw: Any) -> requests.Response:
    headers = {"Accept": ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return http().get(f"{base}/v2/{repo}/manifests/{ref}", headers=headers, **kw)


# -- plain registry ----------------------------------------------------------------------------
def test_registry_serves_index_and_manifests_with_digests_preserved(world: World) -> None:
    img = world.images[NGINX]
    resp = get_manifest(world.registry.url, img.repository, img.tag)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == OCI_INDEX
    assert resp.headers["Docker-Content-Digest"] == img.digest == img.index_digest
    assert sha(resp.content) == img.digest
    index = resp.json()
    assert {(m["platform"]["architecture"], m["platform"].get("variant")) for m in
            index["manifests"]} == {("amd64", None), ("arm64", None), ("arm", "v7")}
    for platform in (AMD64, ARM64, ARM_V7):
        manifest = get_manifest(world.registry.url, img.repository, img.manifests[platform])
        assert sha(manifest.content) == img.manifests[platform]
        assert manifest.json()["config"]["digest"] == img.configs[platform]
        config = http().get(f"{world.registry.url}/v2/{img.repository}/blobs/"
                            f"{img.configs[platform]}").json()
        assert "/".join(filter(None, ["linux", config["architecture"], config.get("variant")])) \
            == platform
        for layer in img.layers[platform]:
            blob = http().get(f"{world.registry.url}/v2/{img.repository}/blobs/{layer}")
            assert sha(blob.content) == layer and len(blob.content) == img.sizes[layer]
            tarfile.open(fileobj=io.BytesIO(blob.content), mode="r:gz").getmembers()


def test_standard_images_share_base_layers_and_carry_the_traps(world: World) -> None:
    nginx, alpine = world.images[NGINX], world.images["docker.io/library/alpine:3.20"]
    assert nginx.layers[ARM64][:2] == alpine.layers[ARM64][:2]  # common + base layer shared
    assert nginx.layers[ARM64][2] != alpine.layers[ARM64][2]
    assert nginx.layers[ARM64][1] != nginx.layers[AMD64][1]  # base differs per arch
    assert world.images["docker.io/library/amd64only:1.0"].platforms == (AMD64, ARM_V7)

    bad = world.images["docker.io/library/badarch:1.0"]
    index = get_manifest(world.registry.url, bad.repository, bad.tag).json()
    arm_entry = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    manifest = get_manifest(world.registry.url, bad.repository, arm_entry["digest"]).json()
    config = http().get(f"{world.registry.url}/v2/{bad.repository}/blobs/"
                        f"{manifest['config']['digest']}").json()
    assert config["architecture"] == "amd64"

    single = world.images["docker.io/library/single:1.0"]
    resp = get_manifest(world.registry.url, single.repository, single.tag)
    assert resp.headers["Content-Type"] == OCI_MANIFEST and single.index_digest is None
    assert resp.headers["Docker-Content-Digest"] == single.digest == single.manifests[AMD64]

    dockerlist = world.images["docker.io/library/dockerlist:1.0"]
    resp = get_manifest(world.registry.url, dockerlist.repository, dockerlist.tag)
    assert resp.headers["Content-Type"] == DOCKER_LIST and sha(resp.content) == dockerlist.digest

    chart = world.chart_artifacts["charts/demo-app:0.1.0"]
    resp = get_manifest(world.registry.url, chart.repository, "0.1.0")
    assert resp.json()["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    blob = http().get(f"{world.registry.url}/v2/{chart.repository}/blobs/{chart.chart_digest}")
    assert blob.content == world.charts["demo-app:0.1.0"].data


def test_images_are_deterministic_and_big_layers_stream_to_disk(tmp_path: Path) -> None:
    one, two = ImageFactory(tmp_path / "a"), ImageFactory(tmp_path / "b")
    assert one.image("x/y", "1").digest == two.image("x/y", "1").digest
    big = one.image("bench/big", "1", platforms=[AMD64], base_size=3 << 20)
    base = big.blobs[big.layers[AMD64][1]]
    assert base.path is not None and base.path.stat().st_size == base.size > 3 << 20
    assert sha(base.path.read_bytes()) == base.digest
    assert two.image("bench/big", "1", platforms=[AMD64], base_size=3 << 20).digest == big.digest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_copies_a_world_image_with_its_digests(world: World, tmp_path: Path) -> None:
    img = world.images[NGINX]
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--src-tls-verify=false",
                    f"docker://{world.registry.host}/{img.ref}", f"oci:{tmp_path / 'oci'}:1.27"],
                   check=True, capture_output=True, timeout=60)
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.digest


def test_scratch_registry_accepts_a_push(scratch_registry: Registry, world: World) -> None:
    pushed = world.push(world.images[NGINX], registry=scratch_registry, tag="moved")
    resp = get_manifest(scratch_registry.url, pushed.repository, "moved")
    assert resp.headers["Docker-Content-Digest"] == pushed.digest


# -- TLS + htpasswd registry -------------------------------------------------------------------
def test_tls_registry_needs_the_ca_and_the_credentials(world: World) -> None:
    reg = world.tls_registry
    assert reg.url.startswith("https://127.0.0.1:") and reg.ca_file is not None
    with pytest.raises(requests.exceptions.SSLError):
        http().get(f"{reg.url}/v2/", verify=True)
    # Go answers plain http on a TLS port with "400 ... HTTP request to an HTTPS server"
    assert http().get(f"http://{reg.host}/v2/", timeout=5).status_code == 400
    assert http().get(f"{reg.url}/v2/", verify=str(reg.ca_file)).status_code == 401
    user = world.tls_credentials[0]
    bad = http().get(f"{reg.url}/v2/", verify=str(reg.ca_file), auth=(user, "wrong"))
    assert bad.status_code == 401
    img = world.tls_images["library/nginx:1.27"]
    resp = get_manifest(reg.url, img.repository, img.tag, verify=str(reg.ca_file), auth=reg.auth)
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == img.digest


# -- token-auth front --------------------------------------------------------------------------
def fetch_token(front: TokenAuthFront, scope: str, auth: tuple[str, str] | None = None
                ) -> requests.Response:
    return http().get(front.realm, params={"service": front.service, "scope": scope}, auth=auth)


def test_token_front_challenge_token_then_success(world: World, token_front: TokenAuthFront
                                                  ) -> None:
    base = http().get(f"{token_front.url}/v2/")
    assert base.status_code == 401
    assert base.headers["WWW-Authenticate"] == (
        f'Bearer realm="{token_front.realm}",service="world-registry"')
    img = world.token_images["library/hello:1.0"]
    first = get_manifest(token_front.url, img.repository, img.tag)
    assert first.status_code == 401
    assert first.headers["WWW-Authenticate"] == (
        f'Bearer realm="{token_front.realm}",service="world-registry",'
        f'scope="repository:library/hello:pull"')
    write = http().post(f"{token_front.url}/v2/library/hello/blobs/uploads/")
    assert 'scope="repository:library/hello:pull,push"' in write.headers["WWW-Authenticate"]

    token = fetch_token(token_front, "repository:library/hello:pull")
    assert token.status_code == 200
    body = token.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    ok = get_manifest(token_front.url, img.repository, img.tag, token=body["token"])
    assert ok.status_code == 200 and ok.headers["Docker-Content-Digest"] == img.digest
    assert token_front.token_requests == 1
    # anonymous pull tokens never carry push
    upload = http().post(f"{token_front.url}/v2/library/hello/blobs/uploads/",
                         headers={"Authorization": f"Bearer {body['token']}"})
    assert upload.status_code == 401 and "insufficient_scope" in upload.headers["WWW-Authenticate"]


def test_token_front_private_repo_and_scope_isolation(world: World, token_front: TokenAuthFront
                                                      ) -> None:
    secret = world.token_images["private/secret:1.0"]
    scope = "repository:private/secret:pull"
    assert fetch_token(token_front, scope).status_code == 401
    assert fetch_token(token_front, scope, auth=(world.token_credentials[0], "no")).status_code \
        == 401
    good = fetch_token(token_front, scope, auth=world.token_credentials).json()["token"]
    ok = get_manifest(token_front.url, secret.repository, secret.tag, token=good)
    assert ok.status_code == 200 and ok.headers["Docker-Content-Digest"] == secret.digest
    public_only = fetch_token(token_front, "repository:library/hello:pull").json()["token"]
    denied = get_manifest(token_front.url, secret.repository, secret.tag, token=public_only)
    assert denied.status_code == 401
    assert http().get(f"{token_front.url}/v2/", headers={
        "Authorization": "Bearer forged"}).status_code == 401
    assert [t.status for t in token_front.token_log] == [401, 401, 200, 200]


def test_token_front_push_rewrites_upload_locations(world: World, token_front: TokenAuthFront
                                                    ) -> None:
    token = fetch_token(token_front, "repository:private/pushed:pull,push",
                        auth=world.token_credentials).json()["token"]
    sess = http()
    sess.headers["Authorization"] = f"Bearer {token}"
    img = world.images["docker.io/library/single:1.0"]
    push_image(img, token_front.url, repository="private/pushed", session=sess)
    puts = [r for r in token_front.request_log if r.method == "PUT"]
    assert any("/blobs/uploads/" in r.path for r in puts)  # Location pointed back at the front
    assert puts and all(r.status == 201 for r in puts)
    direct = get_manifest(world.token_registry.url, "private/pushed", img.tag)
    assert direct.headers["Docker-Content-Digest"] == img.digest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_speaks_the_token_flow(world: World, token_front: TokenAuthFront) -> None:
    user, password = world.token_credentials
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          "--creds", f"{user}:{password}",
                          f"docker://{token_front.host}/private/secret:1.0"],
                         check=True, capture_output=True, timeout=60).stdout
    assert sha(out) == world.token_images["private/secret:1.0"].digest
    assert token_front.token_requests >= 1


# -- fault proxy -------------------------------------------------------------------------------
def blob_url(world: World, proxy: FaultProxy, layer: int = 1) -> tuple[str, str]:
    img = world.images[NGINX]
    digest = img.layers[AMD64][layer]
    return f"{proxy.url}/v2/{img.repository}/blobs/{digest}", digest


def test_fault_status_then_recovery_and_method_filter(world: World, fault_proxy: FaultProxy
                                                      ) -> None:
    url, digest = blob_url(world, fault_proxy)
    fault_proxy.add_rule(r"/blobs/", ("status", 503), count=2, method="GET")
    assert http().head(url).status_code == 200  # method filter: HEAD passes
    assert [http().get(url).status_code for _ in range(3)] == [503, 503, 200]
    assert [r.status for r in fault_proxy.requests("/blobs/", "GET")] == [503, 503, 200]
    assert [r.fault for r in fault_proxy.log] == [None, "status", "status", None]


def test_fault_reset_before_and_mid_response(world: World, fault_proxy: FaultProxy) -> None:
    url, _ = blob_url(world, fault_proxy)
    fault_proxy.add_rule(r"/blobs/", ("reset",))
    with pytest.raises(requests.exceptions.ConnectionError):
        http().get(url)
    fault_proxy.add_rule(r"/blobs/", ("reset", 100))
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        http().get(url)
    assert http().get(url).status_code == 200
    assert [(r.fault, r.status) for r in fault_proxy.log] == [
        ("reset", None), ("reset", 200), (None, 200)]
    assert fault_proxy.log[1].body_bytes == 100


def test_fault_stall_times_out_a_client(world: World, fault_proxy: FaultProxy) -> None:
    url, _ = blob_url(world, fault_proxy)
    fault_proxy.add_rule(r"/blobs/", ("stall", 0.6))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        http().get(url, timeout=0.2)
    assert time.monotonic() - started < 0.55
    assert http().get(url, timeout=5).status_code == 200


def test_fault_truncate_keeps_content_length(world: World, fault_proxy: FaultProxy) -> None:
    url, digest = blob_url(world, fault_proxy)
    size = world.images[NGINX].sizes[digest]
    fault_proxy.add_rule(r"/blobs/", ("truncate", 1000))
    resp = http().get(url, stream=True)
    assert int(resp.headers["Content-Length"]) == size
    got = bytearray()
    with pytest.raises((requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError)):
        for chunk in resp.iter_content(8):
            got += chunk
    assert len(got) == 1000


def test_fault_corrupt_flips_one_byte(world: World, fault_proxy: FaultProxy) -> None:
    url, digest = blob_url(world, fault_proxy)
    good = http().get(url).content
    fault_proxy.add_rule(r"/blobs/", ("corrupt",))
    bad = http().get(url).content
    assert len(bad) == len(good) and sha(bad) != digest
    assert sum(a != b for a, b in zip(good, bad, strict=True)) == 1


def test_fault_slow_and_range_forwarding(world: World, fault_proxy: FaultProxy) -> None:
    url, digest = blob_url(world, fault_proxy)
    size = world.images[NGINX].sizes[digest]
    fault_proxy.add_rule(r"/blobs/", ("slow", 20_000), count=None)
    started = time.monotonic()
    body = http().get(url).content
    assert sha(body) == digest and time.monotonic() - started >= size / 20_000 * 0.8
    fault_proxy.clear()
    part = http().get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == body[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert fault_proxy.log[-1].range == "bytes=100-"


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_copies_through_the_fault_proxy(world: World, fault_proxy: FaultProxy,
                                               tmp_path: Path) -> None:
    # Go clients send several Accept lines: a proxy keeping one breaks OCI index pulls.
    img = world.images["docker.io/library/alpine:3.20"]
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--src-tls-verify=false",
                    f"docker://{fault_proxy.host}/{img.ref}", f"oci:{tmp_path / 'oci'}:x"],
                   check=True, capture_output=True, timeout=60)
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == img.digest
    assert fault_proxy.requests("/manifests/", "GET")


def test_fault_proxy_in_front_of_the_release_server(world: World) -> None:
    with FaultProxy(world.release.url) as proxy:
        proxy.add_rule(r"k3s-arm64$", ("status", 500))
        url = f"{proxy.url}/k3s/{K3S_VERSION.replace('+', '%2B')}/k3s-arm64"
        assert http().get(url).status_code == 500
        assert http().get(url).content == world.k3s_release.path("k3s-arm64").read_bytes()


# -- release server ----------------------------------------------------------------------------
def test_release_server_ranges_and_head(world: World) -> None:
    url = world.release.asset_url(K3S_VERSION, "k3s-airgap-images-arm64.tar.zst")
    assert "%2B" in url
    data = world.k3s_release.path("k3s-airgap-images-arm64.tar.zst").read_bytes()
    size = len(data)
    full = http().get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["Accept-Ranges"] == "bytes"
    head = http().head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
    cases = {"bytes=10-": (206, data[10:], f"bytes 10-{size - 1}/{size}"),
             "bytes=5-9": (206, data[5:10], f"bytes 5-9/{size}"),
             "bytes=-4": (206, data[-4:], f"bytes {size - 4}-{size - 1}/{size}"),
             f"bytes={size}-": (416, b"", f"bytes */{size}"),
             "bytes=0-1,5-6": (200, data, None)}
    for header, (status, body, content_range) in cases.items():
        resp = http().get(url, headers={"Range": header})
        assert (resp.status_code, resp.content, resp.headers.get("Content-Range")) == \
            (status, body, content_range), header
    stale = http().get(url, headers={"Range": "bytes=10-", "If-Range": '"old"'})
    assert stale.status_code == 200
    assert http().get(f"{world.release.url}/k3s/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert http().get(f"{world.release.releases_url}/nope").status_code == 404


def test_release_checksums_cover_binaries_and_image_archives(world: World) -> None:
    release = world.k3s_release
    binaries = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}
    for arch, binary in binaries.items():
        text = http().get(world.release.asset_url(K3S_VERSION, f"sha256sum-{arch}.txt")).text
        claimed = {name: hexdigest for hexdigest, name in
                   (line.split("  ", 1) for line in text.splitlines())}
        assert set(claimed) == {binary, "k3s-images.txt", *(
            f"k3s-airgap-images-{arch}{ext}" for ext in (".tar", ".tar.gz", ".tar.zst"))}
        for name, hexdigest in claimed.items():
            body = http().get(world.release.asset_url(K3S_VERSION, name)).content
            assert hashlib.sha256(body).hexdigest() == hexdigest, name
        out = subprocess.run([str(release.path(binary)), "--version"], capture_output=True,
                             text=True, check=True).stdout
        assert out.startswith(f"k3s version {K3S_VERSION} ")
    assert len({release.sha256(b) for b in binaries.values()}) == 3
    images = http().get(world.release.asset_url(K3S_VERSION, "k3s-images.txt")).text
    assert images.splitlines() == list(K3S_IMAGES)


def test_broken_releases(scratch_release: ReleaseServer) -> None:
    bad = scratch_release.add_k3s_release(
        "v1.35.0+k3s1", arches=["arm64"], omit_checksum=["k3s-arm64"],
        wrong_checksum=["k3s-airgap-images-arm64.tar.zst"],
        omit_assets=["k3s-airgap-images-arm64.tar"])
    sums = bad.checksums("arm64")
    assert "k3s-arm64" not in sums
    assert sums["k3s-airgap-images-arm64.tar.zst"] != bad.sha256("k3s-airgap-images-arm64.tar.zst")
    assert sums["k3s-images.txt"] == bad.sha256("k3s-images.txt")
    assert http().get(scratch_release.asset_url(bad.version, "k3s-airgap-images-arm64.tar")
                      ).status_code == 404
    binary = http().get(scratch_release.asset_url(bad.version, "k3s-arm64")).content
    assert b"v1.35.0+k3s1" in binary


def test_airgap_archives_are_oci_layouts_within_the_zstd_window(world: World) -> None:
    platforms = {"amd64": ("amd64", None), "arm64": ("arm64", None), "arm": ("arm", "v7")}
    for arch, (goarch, variant) in platforms.items():
        data = http().get(world.release.asset_url(
            K3S_VERSION, f"k3s-airgap-images-{arch}.tar.zst")).content
        assert zstandard.get_frame_parameters(data).window_size <= 1 << 25
        tar = tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(data)))
        members = {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                   for m in tar.getmembers() if m.isfile()}
        assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
        for name, body in members.items():
            if name.startswith("blobs/sha256/"):
                assert hashlib.sha256(body).hexdigest() == name.rsplit("/", 1)[1]
        index = json.loads(members["index.json"])
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        assert names == list(K3S_IMAGES)
        assert all(m["annotations"]["org.opencontainers.image.ref.name"] == n
                   for m, n in zip(index["manifests"], names, strict=True))
        for entry in index["manifests"]:
            manifest = json.loads(members[f"blobs/sha256/{entry['digest'][7:]}"])
            config = json.loads(members[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
            assert (config["architecture"], config.get("variant")) == (goarch, variant)


@pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                    reason="containerd not installed")
def test_containerd_imports_the_airgap_archive(world: World, tmp_path: Path) -> None:
    root = tmp_path / "ctd"
    root.mkdir()
    sock = root / "containerd.sock"
    (root / "config.toml").write_text(
        f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{sock}"\n')
    with ManagedProcess(["containerd", "--config", str(root / "config.toml")],
                        log_path=root / "containerd.log") as proc:
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert proc.running and time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
        data = world.k3s_release.path("k3s-airgap-images-arm64.tar.zst").read_bytes()
        tar = zstandard.ZstdDecompressor().decompress(data)
        ctr = ["ctr", "-a", str(sock), "-n", "k8s.io"]
        subprocess.run([*ctr, "images", "import", "--all-platforms", "-"], input=tar,
                       check=True, capture_output=True, timeout=60)
        listed = subprocess.run([*ctr, "images", "ls", "-q"], check=True, capture_output=True,
                                text=True, timeout=30).stdout.split()
    assert set(K3S_IMAGES) <= set(listed)


def test_install_script_records_and_demands_skip_download(world: World, tmp_path: Path) -> None:
    script = tmp_path / "install.sh"
    script.write_bytes(http().get(world.release.install_script_url).content)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(world.k3s_release.path("k3s-arm64"), bin_dir / "k3s")
    env = {"PATH": "/usr/bin:/bin", "INSTALL_K3S_BIN_DIR": str(bin_dir),
           "INSTALL_K3S_EXEC": "server --disable traefik", "K3S_TOKEN": "t0k"}
    refused = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "INSTALL_K3S_SKIP_DOWNLOAD" in refused.stderr
    env["INSTALL_K3S_SKIP_DOWNLOAD"] = "true"
    subprocess.run(["sh", str(script), "--write-kubeconfig-mode", "644"], env=env, check=True,
                   capture_output=True)
    [record] = read_install_records(tmp_path / "k3s-install-record.txt")
    assert record["argc"] == "2" and record["arg2"] == "644"
    assert record["INSTALL_K3S_EXEC"] == "server --disable traefik"
    assert record["K3S_TOKEN"] == "t0k" and record["INSTALL_K3S_SKIP_DOWNLOAD"] == "true"
    assert record["k3s_version"].startswith(f"k3s version {K3S_VERSION} (standin-arm64)")


# -- charts and spec ---------------------------------------------------------------------------
def test_helm_repo_index_and_archives(world: World) -> None:
    import yaml

    index = yaml.safe_load(http().get(f"{world.release.charts_url}/index.yaml").text)
    entries = index["entries"]["demo-app"]
    assert [e["version"] for e in entries] == ["0.2.0", "0.1.0"]
    for entry in entries:
        data = http().get(f"{world.release.charts_url}/{entry['urls'][0]}").content
        assert hashlib.sha256(data).hexdigest() == entry["digest"]
        names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
        assert "demo-app/templates/deployment.yaml" in names


def test_helm_pulls_the_demo_chart_over_http_and_oci(world: World, tmp_path: Path) -> None:
    helm = pytest.importorskip("helm_python")
    (tmp_path / "http").mkdir()
    (tmp_path / "oci").mkdir()
    helm.pull("demo-app", repo_url=world.release.charts_url, version="0.2.0",
              destination=tmp_path / "http")
    assert (tmp_path / "http" / "demo-app-0.2.0.tgz").read_bytes() == \
        world.charts["demo-app:0.2.0"].data
    helm.pull(f"oci://{world.registry.host}/charts/demo-app", version="0.1.0",
              destination=tmp_path / "oci", plain_http=True)
    assert (tmp_path / "oci" / "demo-app-0.1.0.tgz").read_bytes() == \
        world.charts["demo-app:0.1.0"].data


def test_spec_text_is_toml_pointing_at_the_world(world: World, tmp_path: Path) -> None:
    spec = tomllib.loads(world.spec_text())
    assert spec["k3s"] == {"releases": world.release.releases_url,
                           "install_script": world.release.install_script_url}
    assert spec["registries"]["docker.io"]["endpoint"] == world.registry.url
    demo = spec["bundles"]["demo"]
    assert demo["images"] == list(DEFAULT_BUNDLE_IMAGES)
    assert demo["charts"][0]["repo"] == world.release.charts_url
    proxied = tomllib.loads(world.spec_text(endpoint=world.fault_proxy.url, arch=["arm"],
                                            bundle_images=["docker.io/library/busybox:1.37"]))
    assert proxied["registries"]["quay.io"]["endpoint"] == world.fault_proxy.url
    path = world.write_spec(tmp_path)
    assert (tmp_path / "manifests" / "world-sample.yaml").exists()
    assert tomllib.loads(path.read_text())["bundles"]["demo"]["arch"] == ["amd64", "arm64"]
    for ref in demo["images"]:  # every referenced image exists where the spec says
        repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
        assert get_manifest(world.registry.url, repo, tag).status_code == 200


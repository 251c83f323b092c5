"""`bundle lock` against the real loopback world: pins, determinism, drift, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import Result, bundle, bundle_proc
from tests.world import World
from tests.world.images import AMD64, ARM64, ARM_V7


def _project(tmp_path: Path, world: World, **spec: Any) -> Path:
    if "bundle_images" in spec:  # a custom image list: no manifests or charts to discover
        spec.setdefault("charts", [])
        spec.setdefault("manifests", ())
    folder = tmp_path / "proj"
    world.write_spec(folder, **spec)
    return folder


def _lock(capsys: pytest.CaptureFixture[str], folder: Path, *extra: str) -> Result:
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "lock",
                  "--cache", str(folder / "cache"), *extra)


def _lock_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "bundles.lock").read_text())


def test_lock_pins_every_artifact_per_arch(world: World, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, arch=("amd64", "arm64", "arm"),
                      bundle_images=("nginx:1.27", "quay.io/metallb/controller:v0.16.1",
                                     "alpine:3.20", "busybox:1.37"),
                      manifests=("manifests/*.yaml",), charts=None)
    r = _lock(capsys, folder)
    assert r.code == 0, r.err
    lock = _lock_json(folder)
    b = lock["bundles"]["demo"]
    nginx = world.image("docker.io/library/nginx:1.27")
    img = {i["ref"]: i for i in b["images"]}["docker.io/library/nginx:1.27"]  # normalised
    assert img["digest"] == nginx.digest
    for arch, plat in (("amd64", AMD64), ("arm64", ARM64), ("arm", ARM_V7)):
        assert img["platforms"][arch]["digest"] == nginx.manifests[plat]
        assert img["platforms"][arch]["config"] == nginx.configs[plat]
    rel = world.k3s_release
    for arch in ("amd64", "arm64", "arm"):
        assert b["k3s"]["binaries"][arch]["sha256"] == rel.sha256(rel.binary_name(arch))
        assert b["k3s"]["airgap_images"][arch]["sha256"] == rel.sha256(rel.images_name(arch))
    assert b["k3s"]["binaries"]["arm"]["url"].endswith("/v1.34.3%2Bk3s1/k3s-armhf")
    chart = b["charts"][0]
    assert (chart["name"], chart["version"]) == ("demo-app", "0.1.0")
    assert chart["sha256"] == world.charts["demo-app:0.1.0"].digest
    assert [m["url"] for m in b["manifests"]] == ["manifests/world-sample.yaml"]
    assert lock["spec_digest"].startswith("sha256:")


def test_lock_is_deterministic_and_check_passes(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    assert _lock(capsys, folder).code == 0
    first = (folder / "bundles.lock").read_bytes()
    (folder / "bundles.lock").unlink()
    # a fresh resolution (new epoch) differs only in source_date_epoch: pin it to compare
    assert _lock(capsys, folder).code == 0
    second = json.loads((folder / "bundles.lock").read_bytes())
    second["source_date_epoch"] = json.loads(first)["source_date_epoch"]
    assert json.dumps(second, indent=2, sort_keys=True) + "\n" == first.decode()
    (folder / "bundles.lock").write_bytes(first)
    r = _lock(capsys, folder)
    assert r.code == 0 and "unchanged" in r.out
    assert (folder / "bundles.lock").read_bytes() == first
    r = _lock(capsys, folder, "--check")
    assert r.code == 0 and "up to date" in r.out


def test_check_reports_moved_tag_spec_change_and_update_moves_one(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moving = world.factory.image("library/moving", "1.0", app_size=111)
    world.push(moving)
    folder = _project(tmp_path, world, bundle_images=("docker.io/library/moving:1.0",
                                                       "docker.io/library/nginx:1.27"))
    assert _lock(capsys, folder).code == 0
    before = (folder / "bundles.lock").read_text()
    moved = world.push(world.factory.image("library/moving", "1.0", app_size=222))
    assert moved.digest != moving.digest

    r = _lock(capsys, folder, "--check")
    assert r.code == 8, r.err
    assert "images[docker.io/library/moving:1.0].digest" in r.err
    assert moving.digest in r.err and moved.digest in r.err
    assert (folder / "bundles.lock").read_text() == before  # --check writes nothing

    # plain lock keeps the pin (nothing in the spec changed)
    assert _lock(capsys, folder).code == 0
    assert (folder / "bundles.lock").read_text() == before
    # --update moves exactly that entry
    assert _lock(capsys, folder, "--update", "docker.io/library/moving:1.0").code == 0
    after = {i["ref"]: i for i in _lock_json(folder)["bundles"]["demo"]["images"]}
    assert after["docker.io/library/moving:1.0"]["digest"] == moved.digest
    assert after["docker.io/library/nginx:1.27"]["digest"] == \
        world.image("docker.io/library/nginx:1.27").digest

    spec = folder / "bundles.toml"
    spec.write_text(spec.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    r = _lock(capsys, folder, "--check")
    assert r.code == 8 and "spec changed" in r.err


def test_missing_arch_names_image_arch_and_platforms(world: World, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, bundle_images=("docker.io/library/amd64only:1.0",),
                      arch=("arm64",))
    r = _lock(capsys, folder)
    assert r.code == 3
    assert "docker.io/library/amd64only:1.0" in r.err and "arm64" in r.err
    assert "linux/amd64, linux/arm/v7" in r.err
    assert not (folder / "bundles.lock").exists()


def test_config_architecture_lie_is_rejected(world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """k3s#1285: the index says arm64, the config says amd64."""
    folder = _project(tmp_path, world, bundle_images=("docker.io/library/badarch:1.0",),
                      arch=("arm64",))
    r = _lock(capsys, folder)
    assert r.code == 3 and "config says linux/amd64" in r.err and "badarch" in r.err


def test_single_platform_and_docker_list_images(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, arch=("amd64",), bundle_images=(
        "docker.io/library/single:1.0", "docker.io/library/dockerlist:1.0"))
    assert _lock(capsys, folder).code == 0, capsys.readouterr()
    imgs = {i["ref"]: i for i in _lock_json(folder)["bundles"]["demo"]["images"]}
    single = world.image("docker.io/library/single:1.0")
    assert imgs["docker.io/library/single:1.0"]["platforms"]["amd64"]["digest"] == single.digest
    folder2 = _project(tmp_path / "2", world, arch=("arm64",),
                       bundle_images=("docker.io/library/single:1.0",))
    r = _lock(capsys, folder2)
    assert r.code == 3 and "single-platform image for linux/amd64" in r.err


@pytest.mark.parametrize("ref,needle", [
    ("docker.io/library/nginx:9.99", "reference 9.99"),
    ("docker.io/library/no-such-repo:1", "library/no-such-repo"),
])
def test_unknown_tag_or_repo(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             ref: str, needle: str) -> None:
    folder = _project(tmp_path, world, bundle_images=(ref,))
    r = _lock(capsys, folder)
    assert r.code == 3 and "not found" in r.err and needle in r.err and ref in r.err


@pytest.mark.parametrize("knob,needle", [
    ({"omit_checksum": ["k3s-arm64"]}, "no checksum line for k3s-arm64"),
    ({"wrong_checksum": ["k3s-airgap-images-arm64.tar.zst"]},
     "k3s-airgap-images-arm64.tar.zst does not match its line in sha256sum-arm64.txt"),
])
def test_bad_release_checksums(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               knob: dict[str, list[str]], needle: str) -> None:
    folder_name = "broken-" + next(iter(knob))
    world.release.add_k3s_release(folder=folder_name, **knob)  # type: ignore[arg-type]
    folder = _project(tmp_path, world, releases=world.release.folder_url(folder_name))
    r = _lock(capsys, folder)
    assert r.code == 3, r.err
    assert needle in r.err
    assert not (folder / "bundles.lock").exists()


def test_malformed_spec_exit_code(tmp_path: Path) -> None:
    (tmp_path / "bundles.toml").write_text("[bundles.x]\nversion = 1\n")
    r = bundle_proc("lock", cwd=tmp_path)
    assert r.code == 2
    assert "bundles.toml: bundles.x.version: must be a str" in r.err


def test_tls_registry_needs_ca_and_credentials(world: World, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tls = world.tls_registry
    ca = tmp_path / "ca.pem"
    assert tls.ca_file is not None
    ca.write_bytes(Path(tls.ca_file).read_bytes())
    user, password = world.tls_credentials
    base = {"endpoint": tls.url}
    ref = ("registry.internal/internal/app:1.0",)

    folder = _project(tmp_path / "a", world, bundle_images=ref,
                      registries={"registry.internal": base})
    r = _lock(capsys, folder)
    assert r.code == 5 and "TLS verification failed" in r.err and "ca_file" in r.err

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ca.pem").write_bytes(ca.read_bytes())
    # the CA lives beside the project folder: allowed because the spec lists that root
    folder = _project(tmp_path / "b", world, bundle_images=ref, registries={
        "registry.internal": {**base, "ca_file": "../ca.pem", "username_env": "TLS_USER",
                              "password_env": "TLS_PASS"}},
        extra='[files]\nextra_roots = [".."]\n')
    monkeypatch.setenv("TLS_USER", user)
    monkeypatch.setenv("TLS_PASS", "wrong")
    r = _lock(capsys, folder)
    assert r.code == 5 and "authentication failed" in r.err
    monkeypatch.setenv("TLS_PASS", password)
    r = _lock(capsys, folder)
    assert r.code == 0, r.err
    img = _lock_json(folder)["bundles"]["demo"]["images"][0]
    assert img["digest"] == world.tls_images["internal/app:1.0"].digest


def test_bearer_token_flow_public_private_and_reuse(world: World, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    front = world.token_front
    reg = {"tokenhub.example": {"endpoint": front.url, "username_env": "TOK_USER",
                                "password_env": "TOK_PASS"}}
    anon = {"tokenhub.example": {"endpoint": front.url}}
    public = ("tokenhub.example/library/hello:1.0",)
    private = ("tokenhub.example/private/secret:1.0",)

    folder = _project(tmp_path / "pub", world, bundle_images=public, registries=anon,
                      arch=("amd64", "arm64", "arm"))
    front.reset_counters()
    r = _lock(capsys, folder)
    assert r.code == 0, r.err
    # one token for the repository, reused for every manifest and blob request
    assert front.token_requests <= 2

    folder = _project(tmp_path / "priv", world, bundle_images=private, registries=anon)
    r = _lock(capsys, folder)
    assert r.code == 5 and "needs credentials" in r.err

    folder = _project(tmp_path / "priv2", world, bundle_images=private, registries=reg)
    monkeypatch.setenv("TOK_USER", world.token_credentials[0])
    monkeypatch.setenv("TOK_PASS", "nope")
    r = _lock(capsys, folder)
    assert r.code == 5 and "refused access" in r.err
    monkeypatch.setenv("TOK_PASS", world.token_credentials[1])
    r = _lock(capsys, folder)
    assert r.code == 0, r.err


@pytest.mark.parametrize("fault", [("status", 503), ("reset",)])
def test_transient_faults_are_retried(world: World, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      fault: tuple[Any, ...]) -> None:
    proxy = world.fault_proxy
    proxy.clear()
    proxy.add_rule(r"/manifests/1\.27", fault, count=2)
    folder = _project(tmp_path, world, endpoint=proxy.url)
    r = _lock(capsys, folder)
    assert r.code == 0, r.err
    tried = proxy.requests(r"/v2/library/nginx/manifests/1\.27")
    assert len(tried) == 3  # two faults, then success
    proxy.clear()


def test_persistent_5xx_gives_up_with_clear_error(world: World, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    proxy = world.fault_proxy
    proxy.clear()
    proxy.add_rule(r"/manifests/1\.27", ("status", 502), count=None)
    folder = _project(tmp_path, world, endpoint=proxy.url)
    r = _lock(capsys, folder)
    proxy.clear()
    assert r.code == 5
    assert "failed after 5 attempts: HTTP 502" in r.err and "image docker.io/library/nginx:1.27" \
        in r.err


def test_oversized_manifest_rejected(world: World, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A registry (here a static server playing one) that serves a 5 MiB manifest."""
    from tests.world.release import StaticServer
    root = tmp_path / "evil"
    (root / "v2" / "library" / "huge" / "manifests").mkdir(parents=True)
    (root / "v2" / "library" / "huge" / "manifests" / "1").write_bytes(
        b'{"schemaVersion":2,"manifests":[],"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}')
    with StaticServer(root) as evil:
        folder = _project(tmp_path, world, bundle_images=("docker.io/library/huge:1",),
                          endpoint=evil.url)
        r = _lock(capsys, folder)
    assert r.code == 3 and "over the manifest cap of 4 MiB" in r.err


def test_oci_chart_source(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = world.registry.host
    folder = _project(tmp_path, world, charts=[{
        "name": "demo-app", "repo": f"oci://{host}/charts", "version": "0.1.0",
        "namespace": "demo"}], registries={
        host: {"endpoint": world.registry.url},
        "docker.io": {"endpoint": world.registry.url},
        "quay.io": {"endpoint": world.registry.url}})
    r = _lock(capsys, folder)
    assert r.code == 0, r.err
    chart = _lock_json(folder)["bundles"]["demo"]["charts"][0]
    assert chart["url"].startswith(f"oci://{host}/charts/demo-app@sha256:")
    assert chart["sha256"] == world.charts["demo-app:0.1.0"].digest


def test_chart_version_missing(world: World, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world, charts=[{
        "name": "demo-app", "repo": world.release.charts_url, "version": "9.9.9"}])
    r = _lock(capsys, folder)
    assert r.code == 3 and "versions: 0.1.0, 0.2.0" in r.err


def test_stalled_response_times_out_and_is_retried(world: World, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """THREATS 26: a slow/stalled server is bounded by --timeout, then retried."""
    proxy = world.fault_proxy
    proxy.clear()
    proxy.add_rule(r"/manifests/1\.27", ("stall", 5), count=1)
    folder = _project(tmp_path, world, endpoint=proxy.url)
    r = _lock(capsys, folder, "--timeout", "0.5")
    tried = proxy.requests(r"/v2/library/nginx/manifests/1\.27")
    proxy.clear()
    assert r.code == 0, r.err
    assert len(tried) == 2 and tried[0].fault is not None

"""Unit tests for the builder's pure core: refs, spec, lock, K3s facts, platforms, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.assemble.helmchart import merge_values
from bundler.assemble.imagearchive import image_names
from bundler.errors import SpecError, UpstreamError
from bundler.fetch.oci import OCI_INDEX, OCI_MANIFEST
from bundler.spec import k3sfacts, platforms
from bundler.spec.lockfile import FileLock, Lock, drift
from bundler.spec.refs import normalize
from bundler.spec.spec import load_spec
from installer.errors import FormatError
from installer.format import canonjson

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text,expected", [
    ("nginx", "docker.io/library/nginx:latest"),
    ("nginx:1.27", "docker.io/library/nginx:1.27"),
    ("rancher/klipper-helm:v0.9", "docker.io/rancher/klipper-helm:v0.9"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("quay.io/metallb/controller:v0.16.1", "quay.io/metallb/controller:v0.16.1"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1"),
    (f"registry.k8s.io/x/y:v1@{DIGEST}", f"registry.k8s.io/x/y:v1@{DIGEST}"),
    (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}"),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a b", "nginx@sha256:short", "x:bad tag",
                                 "host.io/re po:1"])
def test_bad_refs_rejected(bad: str) -> None:
    with pytest.raises(SpecError, match="invalid image reference"):
        normalize(bad)


def test_image_names_for_digest_refs() -> None:
    assert image_names("docker.io/library/a:1") == ("docker.io/library/a:1",)
    assert image_names(f"docker.io/library/a@{DIGEST}") == (f"docker.io/library/a@{DIGEST}",)
    assert image_names(f"localhost:5000/a:1@{DIGEST}") == (
        f"localhost:5000/a@{DIGEST}", "localhost:5000/a:1")


GOOD_SPEC = """
[k3s]
releases = "http://127.0.0.1:1/k3s"
[registries."docker.io"]
endpoint = "http://127.0.0.1:5000"
username_env = "MIRROR_USER"
password_env = "MIRROR_PASS"
[bundles.edge]
version = "1.0.0"
arch = ["amd64", "arm64"]
k3s = "v1.34.3+k3s1"
images = ["nginx:1.27"]
manifests = ["m/*.yaml"]
[[bundles.edge.charts]]
name = "traefik"
repo = "https://traefik.github.io/charts"
version = "37.1.0"
values = ["m/values.yaml"]
namespace = "kube-system"
"""


def _write_spec(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "a.yaml").write_text("kind: ConfigMap\n")
    (tmp_path / "m" / "values.yaml").write_text("a: 1\n")
    p = tmp_path / "bundles.toml"
    p.write_text(text)
    return p


def test_spec_parses_and_normalises(tmp_path: Path) -> None:
    spec = load_spec(_write_spec(tmp_path, GOOD_SPEC))
    b = spec.bundle("edge")
    assert [str(i) for i in b.images] == ["docker.io/library/nginx:1.27"]
    assert spec.registry("docker.io").endpoint == "http://127.0.0.1:5000"
    assert spec.registry("quay.io").endpoint == "https://quay.io"
    assert b.charts[0].namespace == "kube-system"
    assert spec.manifest_files(b)[0].name == "a.yaml"
    # comments and layout do not change the spec digest; meaning does
    again = load_spec(_write_spec(tmp_path, "# comment\n" + GOOD_SPEC))
    assert again.digest == spec.digest
    changed = load_spec(_write_spec(tmp_path, GOOD_SPEC.replace("1.0.0", "1.0.1")))
    assert changed.digest != spec.digest


@pytest.mark.parametrize("edit,message", [
    (("arch = [\"amd64\", \"arm64\"]", "arch = [\"mips\"]"),
     "bundles.edge.arch: unknown architecture"),
    (("version = \"1.0.0\"", "version = \"one\""), "bundles.edge.version"),
    (("k3s = \"v1.34.3+k3s1\"", "k3s = \"1.34\""), "bundles.edge.k3s"),
    (("images = [\"nginx:1.27\"]", "images = [\"Bad Ref\"]"), "bundles.edge.images[0]"),
    (("images = [\"nginx:1.27\"]", "images = \"nginx\""), "bundles.edge.images: must be a list"),
    (("version = \"37.1.0\"", "versoin = \"37.1.0\""), "unknown key(s) versoin"),
    (("m/*.yaml", "nothing/*.yaml"), "matches no file"),
    (("m/values.yaml", "m/missing.yaml"), "values file"),
    (("endpoint = \"http://127.0.0.1:5000\"", "endpoint = \"ftp://x\""), "endpoint"),
    (("username_env = \"MIRROR_USER\"", "username_env = \"user:pw\""), "environment variable"),
    (("[bundles.edge]", "[bundles.Edge]"), "bundle name"),
])
def test_bad_spec_names_file_and_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    p = _write_spec(tmp_path, GOOD_SPEC.replace(*edit))
    with pytest.raises(SpecError) as e:
        spec = load_spec(p)
        spec.manifest_files(spec.bundle("edge"))
    assert str(p) in str(e.value) and message in str(e.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")
    p = tmp_path / "bundles.toml"
    p.write_text("[bundles\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(p)


def test_checksums_parse_and_missing_line() -> None:
    sha = "0" * 64
    sums = k3sfacts.parse_checksums(f"{sha}  k3s-arm64\n{sha} *k3s-airgap-images-arm64.tar.zst\n",
                               source="s")
    assert sums["k3s-airgap-images-arm64.tar.zst"] == sha
    with pytest.raises(UpstreamError, match="no checksum line for k3s-armhf"):
        k3sfacts.checksum_for(sums, "k3s-armhf", source="sha256sum-arm.txt")
    with pytest.raises(UpstreamError, match="not in sha256sum format"):
        k3sfacts.parse_checksums("garbage line\n", source="s")
    assert k3sfacts.release_url("http://x/k3s", "v1.34.3+k3s1", "k3s") == \
        "http://x/k3s/v1.34.3%2Bk3s1/k3s"
    assert k3sfacts.minor_of("v1.34.3+k3s1") == (1, 34)


INDEX = {"manifests": [
    {"digest": "sha256:" + "1" * 64, "size": 10,
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:" + "2" * 64, "size": 10,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"digest": "sha256:" + "3" * 64, "size": 10,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"digest": "sha256:" + "4" * 64, "size": 10,
     "platform": {"os": "unknown", "architecture": "unknown"}},
]}


def test_platform_selection_is_variant_aware() -> None:
    assert platforms.select(INDEX, "arm", what="x")["digest"].startswith("sha256:3")
    assert platforms.select(INDEX, "amd64", what="x")["digest"].startswith("sha256:1")
    with pytest.raises(UpstreamError) as e:
        platforms.select(INDEX, "arm64", what="image docker.io/library/x:1")
    msg = str(e.value)
    assert "docker.io/library/x:1" in msg and "arm64" in msg
    assert "linux/amd64, linux/arm/v6, linux/arm/v7" in msg and "unknown" not in msg


def test_config_architecture_mismatch_rejected() -> None:
    platforms.check_config({"os": "linux", "architecture": "arm64", "variant": "v8"}, "arm64",
                           what="x")
    with pytest.raises(UpstreamError, match="config says linux/amd64"):
        platforms.check_config({"os": "linux", "architecture": "amd64"}, "arm64", what="x")


def test_lock_roundtrip_and_drift(tmp_path: Path) -> None:
    doc = json.loads(json.dumps({
        "lock_version": 1, "spec_digest": "sha256:x", "source_date_epoch": 5,
        "bundles": {"b": {"version": "1", "arch": ["arm64"], "roles": ["server"],
                          "k3s": {"version": "v1.34.3+k3s1",
                                  "install_script": {"url": "u", "sha256": "s", "size": 1},
                                  "binaries": {"arm64": {"url": "b", "sha256": "s", "size": 2}},
                                  "airgap_images": {}},
                          "images": [{"ref": "docker.io/library/a:1", "digest": "sha256:1",
                                      "media_type": OCI_INDEX, "platforms": {"arm64": {
                                          "digest": "sha256:2", "size": 3,
                                          "media_type": OCI_MANIFEST,
                                          "config": "sha256:c"}}}],
                          "charts": [], "manifests": []}}}))
    lock = Lock.loads(json.dumps(doc), path=tmp_path / "l")
    assert Lock.loads(lock.dumps(), path=tmp_path / "l").dumps() == lock.dumps()
    doc["bundles"]["b"]["images"][0]["digest"] = "sha256:9"
    doc["spec_digest"] = "sha256:y"
    moved = Lock.loads(json.dumps(doc), path=tmp_path / "l")
    changes = drift(lock, moved)
    assert "spec changed since the lock was written (bundles.toml or its files)" in changes
    assert any("images[docker.io/library/a:1].digest" in c and "sha256:9" in c for c in changes)
    doc["bundles"]["b"]["images"] = []
    gone = drift(lock, Lock.loads(json.dumps(doc), path=tmp_path / "l"))
    assert any("no longer resolvable or removed" in c for c in gone)
    with pytest.raises(SpecError, match="not a valid bundles.lock"):
        Lock.loads('{"lock_version": 1}', path=tmp_path / "l")
    assert FileLock("u", "s", 1).to_json() == {"url": "u", "sha256": "s", "size": 1}


def test_helm_values_merge() -> None:
    assert merge_values({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}, "d": None}) == \
        {"a": {"b": 3, "c": 2}}


@pytest.mark.parametrize("data", [b'{"a":1,"a":2}', b'{"a":1.5}', b'{"a":NaN}', b'\xff'])
def test_strict_json_rejects(data: bytes) -> None:
    with pytest.raises(FormatError):
        canonjson.loads_strict(data)


def test_canonical_form() -> None:
    assert canonjson.encode({"b": [1, "x\"\\"], "a": None, "é": True}) == \
        '{"a":null,"b":[1,"x\\"\\\\"],"é":true}'.encode()
    with pytest.raises(FormatError, match="canonical"):
        canonjson.loads_canonical(b'{"b":1, "a":2}')

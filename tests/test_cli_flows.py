"""CLI flows that join the pieces: signing + verify, discovery gates in lock/check/images,
Sigstore provenance through `bundle verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import Result, bundle
from tests.paths import SIGSTORE
from tests.world import World

IDENTITY, ISSUER = "jku@goto.fi", "https://github.com/login/oauth"


def _project(tmp_path: Path, world: World, **spec: Any) -> Path:
    folder = tmp_path / "proj"
    world.write_spec(folder, **spec)
    return folder


def _b(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> Result:
    cmd, *rest = args
    cache = ["--cache", str(folder / "cache")] if cmd in ("lock", "build", "images",
                                                          "check") else []
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", cmd, *cache, *rest)


def test_signed_build_verifies_and_tampering_is_caught(world: World, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    keys = tmp_path / "keys"
    r = bundle(capsys, "keys", "init", str(keys))
    assert r.code == 0, r.err
    assert _b(capsys, folder, "lock").code == 0
    r = _b(capsys, folder, "build", "--arch", "arm64", "--out", str(folder / "dist"),
           "--keys", str(keys))
    assert r.code == 0 and "signed" in r.out, r.err
    path = folder / "dist" / "demo-1.0.0-arm64.tar"
    r = bundle(capsys, "inspect", str(path), "--json")
    assert json.loads(r.out)["signatures"] == 1 and json.loads(r.out)["root_chain"] == 1
    r = bundle(capsys, "verify", str(path), "--trust", str(keys / "root.json"), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["signatures"] == "ok"
    # one byte changed in the payload (past the header) -> exit 3, member named
    data = bytearray(path.read_bytes())
    data[-4096] ^= 0x01
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    r = bundle(capsys, "verify", str(bad), "--trust", str(keys / "root.json"))
    assert r.code == 3, r.err
    # another root: signature rejected
    other = tmp_path / "other"
    assert bundle(capsys, "keys", "init", str(other)).code == 0
    r = bundle(capsys, "verify", str(path), "--trust", str(other / "root.json"))
    assert r.code == 3 and "targets" in r.err
    # an unsigned build is not accepted by a device-style check
    r = _b(capsys, folder, "build", "--arch", "arm64", "--out", str(tmp_path / "unsigned"),
           "--unsigned")
    assert r.code == 0 and "UNSIGNED" in r.out
    r = bundle(capsys, "verify", str(tmp_path / "unsigned" / "demo-1.0.0-arm64.tar"),
               "--trust", str(keys / "root.json"))
    assert r.code == 3


def test_lock_fails_on_undiscovered_images_and_add_discovered_locks_them(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # busybox is set only in the demo-app chart's values; alpine only in a manifest
    folder = _project(tmp_path, world, bundle_images=("docker.io/library/nginx:1.27",))
    r = _b(capsys, folder, "lock")
    assert r.code == 9, r.err
    assert "docker.io/library/busybox:1.37" in r.err and "docker.io/library/alpine:3.20" in r.err
    assert "world-sample.yaml" in r.err and "demo-app" in r.err
    assert "--add-discovered" in r.err
    assert not (folder / "bundles.lock").exists()

    r = _b(capsys, folder, "lock", "--add-discovered")
    assert r.code == 0, r.err
    assert "+ docker.io/library/busybox:1.37 (added by discovery)" in r.out
    lock = json.loads((folder / "bundles.lock").read_text())["bundles"]["demo"]
    assert lock["discovered"] == ["docker.io/library/alpine:3.20",
                                  "docker.io/library/busybox:1.37"]
    assert {i["ref"] for i in lock["images"]} >= {"docker.io/library/busybox:1.37"}
    # the lock is stable and checks clean; the CI gate passes
    assert _b(capsys, folder, "lock", "--check").code == 0
    r = _b(capsys, folder, "check")
    assert r.code == 0, r.err
    r = _b(capsys, folder, "images", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)["demo"]
    assert report["ok"] is True
    where = {g["image"]: g["references"] for g in report["images"]}
    assert any("world-sample.yaml" in ref["source"]
               for ref in where["docker.io/library/alpine:3.20"])
    # a build carries the discovered image
    r = _b(capsys, folder, "build", "--arch", "arm64", "--out", str(folder / "dist"), "--json",
           "--unsigned")
    assert r.code == 0, r.err
    r = bundle(capsys, "inspect", str(folder / "dist" / "demo-1.0.0-arm64.tar"), "--json")
    assert "docker.io/library/busybox:1.37" in {i["ref"] for i in json.loads(r.out)["images"]}


def test_check_fails_when_a_manifest_adds_an_image(world: World, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = _project(tmp_path, world)
    assert _b(capsys, folder, "lock").code == 0
    (folder / "manifests" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
        "  - name: c\n    image: quay.io/metallb/speaker:v0.16.1\n")
    r = _b(capsys, folder, "check")
    assert r.code == 2 and "manifest files changed since the lock" in r.err
    r = _b(capsys, folder, "lock")
    assert r.code == 9 and "quay.io/metallb/speaker:v0.16.1" in r.err and "extra.yaml" in r.err


def test_sigstore_fixture_through_bundle_verify(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    art = tmp_path / "staging-rekor-v2.txt"
    shutil.copy(SIGSTORE / "staging-rekor-v2.txt", art)
    shutil.copy(SIGSTORE / "staging-rekor-v2.txt.sigstore.json",
                tmp_path / "staging-rekor-v2.txt.sigstore.json")
    config = SIGSTORE / "staging-trust-config.json"
    ok = bundle(capsys, "verify", str(art), "--sigstore-identity", IDENTITY,
                "--sigstore-issuer", ISSUER, "--trust-config", str(config))
    assert ok.code == 0, ok.err
    assert "Sigstore provenance valid" in ok.out
    other = bundle(capsys, "verify", str(art), "--sigstore-identity", "someone@else.example",
                   "--sigstore-issuer", ISSUER, "--trust-config", str(config))
    assert other.code == 3
    prod = bundle(capsys, "verify", str(art), "--sigstore-identity", IDENTITY,
                  "--sigstore-issuer", ISSUER)
    assert prod.code == 3
    art.write_bytes(art.read_bytes() + b"!")
    changed = bundle(capsys, "verify", str(art), "--sigstore-identity", IDENTITY,
                     "--sigstore-issuer", ISSUER, "--trust-config", str(config))
    assert changed.code == 3


def test_sigstore_build_without_ci_credential_is_a_clear_error(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                "SIGSTORE_ID_TOKEN", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE"):
        monkeypatch.delenv(var, raising=False)
    folder = _project(tmp_path, world)
    assert _b(capsys, folder, "lock").code == 0
    r = _b(capsys, folder, "build", "--arch", "arm64", "--out", str(folder / "dist"),
           "--sigstore", "--unsigned")
    assert r.code == 2, r.err
    assert "credential" in r.err.lower() and "Traceback" not in r.err

"""`bundle mirror` into real loopback registries (docs/fleet.md), and the registry options every
registry command shares: --ca-file, --plain-http, credentials from a file or the environment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from bundler.spec.lockfile import read_lock
from tests.cli_helpers import Result, bundle, bundle_proc
from tests.containerd import Containerd
from tests.world import Registry, World


@pytest.fixture(scope="module")
def locked(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project locked for arm64 only (the world's images are multi-arch), cache primed."""
    folder = tmp_path_factory.mktemp("mirror") / "proj"
    world.write_spec(folder, arch=("arm64",))
    res = bundle_proc("--spec", str(folder / "bundles.toml"), "-q", "lock",
                      "--cache", str(folder / "cache"), cwd=folder)
    assert res.code == 0, res.err
    return folder


def _mirror(capsys: pytest.CaptureFixture[str], folder: Path, *args: str,
            cache: Path | None = None) -> Result:
    return bundle(capsys, "--spec", str(folder / "bundles.toml"), "-q", "mirror",
                  "--cache", str(cache or folder / "cache"), *args)


def _get(registry: Registry, path: str, *, accept: str = "") -> bytes:
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{path}", headers={"Accept": accept} if accept else {},
                  timeout=30)
    r.raise_for_status()
    return r.content


ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")


def test_mirror_by_digest_then_nothing_to_push(
        locked: Path, world: World, scratch_registry: Registry,
        capsys: pytest.CaptureFixture[str]) -> None:
    lock = read_lock(locked / "bundles.lock")
    [bl] = lock.bundles.values()
    to = f"oci://{scratch_registry.host}/site"
    res = _mirror(capsys, locked, "--to", to, "--json")
    assert res.code == 0, res.err
    first = json.loads(res.out)
    assert first["pushed"] > 0 and first["skipped"] == 0 and first["bytes_pushed"] > 0
    assert {i["ref"] for i in first["images"]} == {i.ref for i in bl.images}
    for img in first["images"]:
        locked_img = bl.image(img["ref"])
        assert img["locked_digest"] == locked_img.digest
        # per-arch digests are the lock's; the index lost its amd64 entry: a new digest
        assert img["platforms"] == {"arm64": locked_img.platforms["arm64"].digest}
        assert img["index_rewritten"] and img["index_digest"] != locked_img.digest
        assert img["repository"] == "site/" + img["ref"].split("/", 1)[1].split(":")[0]
        index = json.loads(_get(scratch_registry, f"{img['repository']}/manifests/{img['tag']}",
                                accept=ACCEPT))
        assert [m["digest"] for m in index["manifests"]] == [img["platforms"]["arm64"]]
        assert "sha256:" + hashlib.sha256(_get(
            scratch_registry, f"{img['repository']}/manifests/{img['index_digest']}",
            accept=ACCEPT)).hexdigest() == img["index_digest"]

    res = _mirror(capsys, locked, "--to", to, "--json")
    assert res.code == 0, res.err
    second = json.loads(res.out)
    assert second["pushed"] == 0 and second["bytes_pushed"] == 0
    assert second["manifests_pushed"] == 0
    assert second["skipped"] == first["pushed"]
    assert second["bytes_skipped"] == first["bytes_pushed"]
    assert second["images"] == first["images"]
    # human output names the new index
    res = _mirror(capsys, locked, "--to", to)
    assert res.code == 0 and "new index: restricted to arm64" in res.out, res.out


def test_k3s_style_pull_by_locked_digest_gives_the_same_bytes(
        locked: Path, world: World, scratch_registry: Registry, containerd: Containerd,
        capsys: pytest.CaptureFixture[str]) -> None:
    """containerd (what K3s pulls with) fetches the locked per-arch digest from the mirror,
    and gets byte for byte what the upstream registry serves."""
    res = _mirror(capsys, locked, "--to", f"oci://{scratch_registry.host}", "--json")
    assert res.code == 0, res.err
    img = next(i for i in json.loads(res.out)["images"] if "alpine" in i["ref"])
    digest = img["platforms"]["arm64"]
    ref = f"{scratch_registry.host}/{img['repository']}@{digest}"
    p = containerd.ctr("content", "fetch", "--plain-http", "--platform", "linux/arm64", ref)
    assert p.returncode == 0, p.stderr.decode()
    got = containerd.ctr("content", "get", digest)
    assert got.returncode == 0, got.stderr.decode()
    upstream = _get(world.registry, f"library/alpine/manifests/{digest}", accept=ACCEPT)
    assert got.stdout == upstream
    for layer in json.loads(upstream)["layers"]:
        blob = containerd.ctr("content", "get", layer["digest"]).stdout
        assert blob == _get(world.registry, f"library/alpine/blobs/{layer['digest']}")


def _tls_registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "tls", tls=True, htpasswd=("site", "s3cret-pw"),
                    name="tls-mirror").start()


def test_mirror_to_tls_htpasswd_with_ca_file_and_credentials_file(
        locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _tls_registry(tmp_path)
    try:
        assert reg.ca_file is not None
        creds = tmp_path / "creds"
        creds.write_text("site:s3cret-pw\n")
        to = f"oci://{reg.host}"
        ca = ("--ca-file", str(reg.ca_file))
        # without the CA: loopback is plain http, which a TLS registry refuses to speak
        res = _mirror(capsys, locked, "--to", to, "--credentials-file", str(creds))
        assert res.code != 0 and "Traceback" not in res.err
        # without credentials: refused, with a hint naming both ways to give them
        res = _mirror(capsys, locked, "--to", to, *ca)
        assert res.code == 5 and "--credentials-file" in res.err, res.err
        # wrong password: a clear refusal, exit 5, nothing half-pushed named as done
        bad = tmp_path / "bad"
        bad.write_text('{"username": "site", "password": "wrong"}')
        res = _mirror(capsys, locked, "--to", to, *ca, "--credentials-file", str(bad))
        assert res.code == 5 and "refused the credentials" in res.err, res.err
        assert "Traceback" not in res.err and "s3cret" not in res.err + res.out
        # an empty cache: every manifest and blob is fetched by its locked digest first
        empty = tmp_path / "empty-cache"
        res = _mirror(capsys, locked, "--to", to, *ca, "--credentials-file", str(creds),
                      "--json", cache=empty)
        assert res.code == 0, res.err
        first = json.loads(res.out)
        assert first["pushed"] > 0
        cached = {p.name for p in (empty / "blobs" / "sha256").iterdir()}
        for img in read_lock(locked / "bundles.lock").bundles["demo"].images:
            assert {img.digest[7:], img.platforms["arm64"].digest[7:]} <= cached
        assert len(cached) >= first["manifests_pushed"] + 4
        # the same credentials from the environment; nothing left to push
        monkeypatch.setenv("AIRGAP_REGISTRY_USERNAME", "site")
        monkeypatch.setenv("AIRGAP_REGISTRY_PASSWORD", "s3cret-pw")
        res = _mirror(capsys, locked, "--to", to, *ca, "--json")
        assert res.code == 0, res.err
        second = json.loads(res.out)
        assert second["pushed"] == 0 and second["skipped"] == first["pushed"]
        # bundle push / pull take the same options
        f = tmp_path / "f.tar"
        f.write_bytes(b"bundle bytes")
        res = bundle(capsys, "push", str(f), f"{to}/edge/b:t", *ca)
        assert res.code == 0, res.err
        res = bundle(capsys, "pull", f"{to}/edge/b:t", "--out", str(tmp_path / "o"), *ca)
        assert res.code == 0, res.err
        assert (tmp_path / "o" / "f.tar").read_bytes() == b"bundle bytes"
    finally:
        reg.stop()


@pytest.mark.parametrize("args,needle", [
    (("--to", "oci://10.20.0.10:5000/site", "--plain-http"), "credentials not sent"),
    (("--to", "http://10.20.0.10:5000/site"), "is not an oci:// registry"),
    (("--to", "oci://10.20.0.10:5000/site:tag"), "expected oci://HOST"),
    (("--to", "oci://10.20.0.10:5000", "--plain-http", "--ca-file", "/etc/hostname"),
     "contradict"),
    (("--to", "oci://10.20.0.10:5000", "--ca-file", "/nonexistent.pem"), "is not a file"),
    (("--to", "oci://10.20.0.10:5000", "--bundle", "nope"), "not in the lock"),
])
def test_bad_targets_refused_before_any_traffic(
        locked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], needle: str) -> None:
    """Each is refused (exit 2) before a connection: the transport would fail loudly if one
    were attempted (no test sends traffic off loopback)."""
    monkeypatch.setenv("AIRGAP_REGISTRY_USERNAME", "u")
    monkeypatch.setenv("AIRGAP_REGISTRY_PASSWORD", "p")
    sent: list[Any] = []

    def no_traffic(*a: Any, **kw: Any) -> Any:
        sent.append(a)
        raise AssertionError("traffic was sent")
    monkeypatch.setattr(requests.Session, "send", no_traffic)
    res = _mirror(capsys, locked, *args)
    assert res.code == 2 and needle in res.err, res.err
    assert not sent and "Traceback" not in res.err


def test_push_plain_http_with_credentials_off_loopback_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "c"
    creds.write_text("u:p")
    f = tmp_path / "f"
    f.write_bytes(b"x")
    monkeypatch.setattr(requests.Session, "send", lambda *a, **k: pytest.fail("traffic"))
    for args in (("push", str(f), "oci://10.20.0.10/x:t"),
                 ("repo", "push", str(tmp_path), "oci://10.20.0.10/x"),
                 ("pull", "oci://10.20.0.10/x:t", "--out", str(tmp_path / "o"))):
        res = bundle(capsys, *args, "--plain-http", "--credentials-file", str(creds))
        assert res.code == 2 and "credentials not sent" in res.err, (args, res.err)
    res = bundle(capsys, "push", str(f), "oci://10.20.0.10/x:t",
                 "--credentials-file", str(tmp_path / "missing"))
    assert res.code == 2 and "registry credentials" in res.err and "does not exist" in res.err, \
        res.err

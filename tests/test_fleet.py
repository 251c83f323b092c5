"""Bundles and ring repositories through a real loopback registry (docs/fleet.md): `bundle repo
push` / `bundle push` / `bundle pull`, read back by the device's own `installer.sources.remote`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bundler.registry.ocipush import bundle_tag, target_ref
from installer.sources import remote
from tests.world import Registry

from .bundles import KeyDir, default_spec, write_spec
from .cli_helpers import bundle


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = Path(root) / n
            data = p.read_bytes()
            out[p.relative_to(folder).as_posix()] = (hashlib.sha256(data).hexdigest(), len(data))
    return out


@pytest.fixture
def ring_repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, KeyDir]:
    kd = KeyDir(tmp_path / "keys")
    r = tmp_path / "repo"
    res = bundle(capsys, "repo", "init", str(r), "--keys", str(kd.path))
    assert res.code == 0, res.err
    (tmp_path / "b").mkdir()
    b = write_spec(default_spec("1.0.0"), kd, tmp_path / "b")
    res = bundle(capsys, "publish", str(b), "--repo", str(r), "--ring", "canary",
                 "--keys", str(kd.path))
    assert res.code == 0, res.err
    return r, kd


def test_repo_push_read_back_by_the_device_then_nothing_to_push(
        ring_repo: tuple[Path, KeyDir], scratch_registry: Registry,
        capsys: pytest.CaptureFixture[str]) -> None:
    r, _ = ring_repo
    want = _files(r)
    assert any(p.startswith("targets/") for p in want) and "metadata/1.root.json" in want
    url = f"oci://{scratch_registry.host}/edge/ring"
    res = bundle(capsys, "repo", "push", str(r), url, "--json")
    assert res.code == 0, res.err
    first = json.loads(res.out)
    assert first["files"] == len(want) and first["skipped"] == 0
    assert first["bytes_pushed"] == sum(s for _, s in want.values()) + 2  # + the empty config

    source = remote.open_source(url)  # the default tag on both sides
    assert isinstance(source, remote.OciSource)
    got = {p: (e.sha256, e.size) for p, e in source.entries().items()}
    assert got == want
    root = r / "metadata" / "1.root.json"
    assert source.read("metadata/1.root.json", max_size=1 << 20) == root.read_bytes()

    res = bundle(capsys, "repo", "push", str(r), url, "--json")
    assert res.code == 0, res.err
    second = json.loads(res.out)
    assert second["bytes_pushed"] == 0 and second["pushed"] == 0
    assert second["skipped"] == len(want) + 1 and second["digest"] == first["digest"]

    out = r.parent / "stick"
    res = bundle(capsys, "pull", url + ":latest", "--out", str(out), "--json")
    assert res.code == 0, res.err
    assert _files(out) == want


def test_bundle_push_pull_same_bytes(tmp_path: Path, scratch_registry: Registry,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    b = write_spec(default_spec("1.2.0"), kd, tmp_path / "b")
    url = f"oci://{scratch_registry.host}/edge/bundles"
    res = bundle(capsys, "push", str(b), url, "--json")
    assert res.code == 0, res.err
    [report] = json.loads(res.out)["pushed"]
    tag = bundle_tag(b)
    assert report["target"].endswith(":" + tag) and tag == b.name[:-len(".tar")]
    res = bundle(capsys, "pull", f"{url}:{tag}", "--out", str(tmp_path / "out"))
    assert res.code == 0, res.err
    assert (tmp_path / "out" / b.name).read_bytes() == b.read_bytes()
    assert os.listdir(tmp_path / "out") == [b.name]
    res = bundle(capsys, "pull", f"{url}:nope", "--out", str(tmp_path / "out"))
    assert res.code == 3 and "check the tag" in res.err


def test_pull_refuses_a_blob_that_is_not_what_the_manifest_says(
        tmp_path: Path, scratch_registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest whose layer digest names another blob: nothing is written under its path."""
    from bundler.registry.ocipush import client_for
    a, bad = tmp_path / "a", tmp_path / "bad"
    a.write_bytes(b"aaaa")
    bad.write_bytes(b"bbbb")
    url = f"oci://{scratch_registry.host}/edge/x"
    assert bundle(capsys, "push", str(a), url + ":t").code == 0
    assert bundle(capsys, "push", str(bad), url + ":u").code == 0
    ref, endpoint = target_ref(url, plain_http=False)
    sha_b = hashlib.sha256(b"bbbb").hexdigest()
    lying = remote.folder_manifest({"a": (sha_b, 3, remote.FILE_MEDIA_TYPE)},
                                   artifact_type=remote.FOLDER_ARTIFACT)
    client_for(ref, endpoint).put_manifest("edge/x", "lie", lying,
                                           media_type=remote.MANIFEST_MEDIA_TYPE, what="lie")
    res = bundle(capsys, "pull", url + ":lie", "--out", str(tmp_path / "out"))
    assert res.code == 3 and "lie" in res.err, res.err
    assert not (tmp_path / "out" / "a").exists()


def test_plain_http_only_on_loopback_or_when_asked(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert target_ref("oci://127.0.0.1:5000/x", plain_http=False)[1] == "http://127.0.0.1:5000"
    assert target_ref("oci://example.invalid/x", plain_http=False)[1] == \
        "https://example.invalid"
    assert target_ref("oci://example.invalid/x", plain_http=True)[1] == "http://example.invalid"
    # bad targets are refused with exit 2 before any traffic
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_bytes(b"x")
    for args in (("repo", "push", str(d), "http://example.invalid/x"),
                 ("repo", "push", str(d), "oci://example.invalid/UPPER"),
                 ("pull", "oci://example.invalid/x", "--out", str(tmp_path / "o")),
                 ("push", str(d / "f"), str(d / "f"), "oci://example.invalid/x:one-tag")):
        res = bundle(capsys, *args)
        assert res.code == 2, (args, res.err)
    (d / ".hidden").write_bytes(b"x")
    res = bundle(capsys, "repo", "push", str(d), "oci://example.invalid/x")
    assert res.code == 2 and ".hidden" in res.err
    (d / ".hidden").unlink()
    (d / "link").symlink_to(d / "f")
    res = bundle(capsys, "repo", "push", str(d), "oci://example.invalid/x")
    assert res.code == 2 and "link is not a regular file" in res.err
    assert bundle_tag(Path("edge-1.0.0+site.1-arm64.tar")) == "edge-1.0.0_site.1-arm64"

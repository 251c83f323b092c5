"""`bundle repo push` pushes what a device reads, never a change still waiting for signatures.

A ring whose promotion needs two of three keys holds the half-signed change under `staged/`
(docs/trust.md: "never served to devices"); the pushed artifact leaves it out and says so, and
what a device then pulls is exactly the live repository."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bundler.repo import ringops
from installer.sources import remote
from tests.world import Registry

from .bundles import KeyDir, default_spec, write_spec
from .cli_helpers import bundle


def _files(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = Path(root) / n
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_staged_changes_stay_at_the_desk(tmp_path: Path, scratch_registry: Registry,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    kd = KeyDir(tmp_path / "keys")
    repo = tmp_path / "repo"
    ringops.init_repo(repo, kd.path, ring_keys={"stable": (3, 2)})
    (tmp_path / "b").mkdir()
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")],
                    directory=repo, keys_dir=kd.path, ring="canary")
    one_key = tmp_path / "one-stable-key"
    shutil.copytree(kd.path, one_key)
    for pem in ("stable-2.pem", "stable-3.pem"):
        (one_key / "keys" / pem).unlink()
    ringops.promote("edge", "1.0.0", directory=repo, keys_dir=one_key, source="canary",
                    dest="stable")
    every = _files(repo)
    staged = sorted(p for p in every if p.startswith("staged/"))
    live = {p: h for p, h in every.items() if not p.startswith("staged/")}
    assert staged and live, every   # the promotion is staged, short of a second stable key

    url = f"oci://{scratch_registry.host}/edge/ring"
    res = bundle(capsys, "repo", "push", str(repo), url, "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["left_out"] == staged and report["files"] == len(live)
    source = remote.open_source(url)
    assert isinstance(source, remote.OciSource)
    assert sorted(source.entries()) == sorted(live)

    res = bundle(capsys, "repo", "push", str(repo), url)
    assert res.code == 0 and f"left out {len(staged)} staged files" in res.out, res.out

    out = tmp_path / "stick"
    res = bundle(capsys, "pull", url + ":latest", "--out", str(out))
    assert res.code == 0, res.err
    assert _files(out) == live


def test_a_folder_of_only_staged_changes_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "repo"
    (d / "staged").mkdir(parents=True)
    (d / "staged" / "pending.json").write_text("{}")
    res = bundle(capsys, "repo", "push", str(d), "oci://127.0.0.1:9/x")
    assert res.code == 2 and "holds only staged/" in res.err, res.err

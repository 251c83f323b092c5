"""Closing the loop end to end (docs/fleet.md): ten devices in three rings report to a stick
folder and to a registry; the desk enrolls them, sees the fleet, and promotes only on their
evidence. Everything runs the real `airgap-install` and `bundle` commands."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from installer.trust import devicereport
from tests.world import Registry

from .bundles import REPO, KeyDir, cli, default_spec, tree, write_spec

RINGS = {"canary": 3, "beta": 3, "stable": 4}


def bundle(*args: object) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bundler", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))


def ok(p: "subprocess.CompletedProcess[str]") -> str:
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _sync(root: Path, repo: Path, sink: str, *extra: object
          ) -> "subprocess.CompletedProcess[str]":
    return cli("sync", "--source", repo, "--root", root, "--arch", "amd64", "--json",
               "--report-to", sink, "--health-interval", "0.1", *extra)


@pytest.mark.world
@pytest.mark.slow
def test_fleet_reports_status_and_evidence_gated_promotion(
        tmp_path: Path, scratch_registry: Registry) -> None:
    kd = KeyDir(tmp_path / "keys")
    b = tmp_path / "b"
    b.mkdir()
    r = tmp_path / "repo"
    ok(bundle("repo", "init", r, "--keys", kd.path))
    ok(bundle("publish", write_spec(default_spec("1.0.0"), kd, b), "--repo", r, "--ring",
              "canary", "--keys", kd.path))
    for src, dst in (("canary", "beta"), ("beta", "stable")):
        ok(bundle("promote", "edge", "1.0.0", "--repo", r, "--from", src, "--to", dst,
                  "--keys", kd.path))
    stick = tmp_path / "stick"
    oci = f"oci://{scratch_registry.host}/fleet/reports"
    devices: Dict[str, Path] = {}
    sinks: Dict[str, str] = {}
    for ring, n in RINGS.items():
        for i in range(1, n + 1):
            name = f"{ring}-{i}"
            root = devices[name] = tmp_path / "dev" / name
            (root / "etc").mkdir(parents=True)
            (root / "etc" / "hostname").write_text(name + "\n")
            sinks[name] = str(stick) if len(devices) % 2 else oci
            ok(cli("trust", r / "metadata" / "1.root.json", "--root", root, "--ring", ring))
            ok(_sync(root, r, sinks[name], "--server", "--skip-start", "--health-cmd", "true"))
    both = ("--reports", stick, "--reports", oci)
    enrolled = json.loads(ok(bundle("fleet", "enroll", *both, "--repo", r, "--accept-new",
                                    "--json")))["enrolled"]
    assert sorted(e["hostname"] for e in enrolled) == sorted(devices)
    assert not (r / "enrolled.json").exists()          # beside the repository, not in it
    assert (tmp_path / "repo.fleet" / "enrolled.json").is_file()

    # 2.0.0 to canary; canary-1 fails its gate
    ok(bundle("publish", write_spec(default_spec("2.0.0"), kd, b), "--repo", r, "--ring",
              "canary", "--keys", kd.path))
    for i in (1, 2, 3):
        name = f"canary-{i}"
        health = "echo etcd not ready >&2; exit 1" if i == 1 else "true"
        p = _sync(devices[name], r, sinks[name], "--health-cmd", health,
                  "--health-timeout", "0.5")
        assert p.returncode == (7 if i == 1 else 0), p.stderr
    before = sorted(os.listdir(r / "metadata"))
    p = bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "canary", "--to", "beta",
               "--keys", kd.path, *both, "--require-healthy", "3")
    assert p.returncode == 4, p.stdout + p.stderr
    assert "failing: canary-1" in p.stderr and "etcd not ready" in p.stderr
    assert sorted(os.listdir(r / "metadata")) == before   # nothing written

    status = json.loads(ok(bundle("fleet", "status", *both, "--repo", r, "--json")))
    first = status["devices"][0]
    assert first["hostname"] == "canary-1" and first["gate"] == "failed"
    assert first["failed"] == ["2.0.0"] and first["version"] == "1.0.0"
    assert status["totals"]["rings"]["canary"]["versions"] == {"1.0.0": 1, "2.0.0": 2}
    assert status["totals"]["rings"]["stable"]["devices"] == 4
    assert status["rejected"] == []

    # the dry run names who would move; every device's tree stays byte-identical
    plan = json.loads(ok(bundle("promote", "edge", "2.0.0", "--repo", r, "--from", "canary",
                                "--to", "beta", "--keys", kd.path, "--dry-run",
                                "--percent", "50", "--json")))
    assert not plan["allowed"] and len(plan["movers"]) == 3
    assert all("bucket" in m["why"] for m in plan["movers"])
    trees = {name: tree(root) for name, root in devices.items()}
    for name, root in devices.items():
        p = cli("sync", "--source", r, "--root", root, "--arch", "amd64", "--dry-run",
                "--health-cmd", "true", "--report-to", sinks[name])
        assert p.returncode == 0 and "nothing changed" in p.stdout, p.stderr
    assert {name: tree(root) for name, root in devices.items()} == trees

    # fixed in 2.0.1: every canary passes and reports; the promotion goes through
    held_back = tmp_path / "held-back"
    ok(cli("report", "--root", devices["canary-2"], "--out", held_back / "old.json"))
    ok(bundle("publish", write_spec(default_spec("2.0.1"), kd, b), "--repo", r, "--ring",
              "canary", "--keys", kd.path))
    for i in (1, 2, 3):
        name = f"canary-{i}"
        ok(_sync(devices[name], r, sinks[name], "--health-cmd", "true"))
    done = json.loads(ok(bundle("promote", "edge", "2.0.1", "--repo", r, "--from", "canary",
                                "--to", "beta", "--keys", kd.path, *both,
                                "--require-healthy", "3", "--json")))
    evidence = done["evidence"]
    assert evidence["healthy"] == 3 and len(evidence["reports"]) == 3
    text = ok(bundle("repo", "status", r))
    assert "promoted from canary" in text and "3 of 3 enrolled device(s)" in text
    newest = max((r / "metadata").glob("*.beta.json"), key=lambda p: int(p.name.split(".")[0]))
    ring = json.loads(newest.read_bytes())
    assert ring["signed"]["targets"]["edge-2.0.1-amd64.tar"]["custom"]["promotion"][
        "reports"] == evidence["reports"]

    # an edited report, a replayed one, an unenrolled key, a malformed file: all rejected
    bad = tmp_path / "bad"
    bad.mkdir()
    signed_file = sorted(stick.glob("*.json"))[0]
    (bad / "edited.json").write_bytes(signed_file.read_bytes().replace(b'"amd64"', b'"arm64"'))
    shutil.copy(held_back / "old.json", bad / "replayed.json")
    stranger = tmp_path / "dev" / "stranger"
    (stranger / "etc").mkdir(parents=True)
    (stranger / "etc" / "hostname").write_text("stranger\n")
    ok(cli("trust", r / "metadata" / "1.root.json", "--root", stranger, "--ring", "canary"))
    ok(cli("report", "--root", stranger, "--out", bad / "stranger.json"))
    (bad / "junk.json").write_text("{not json")
    status = json.loads(ok(bundle("fleet", "status", *both, "--reports", bad, "--repo", r,
                                  "--json")))
    reasons: List[str] = sorted(x["reason"] for x in status["rejected"])
    assert reasons == ["bad signature", "malformed", "replayed sequence", "unknown device"]
    assert status["totals"]["rejected_by_reason"] == {
        "bad signature": 1, "malformed": 1, "replayed sequence": 1, "unknown device": 1}
    assert [u["hostname"] for u in status["unknown"]] == ["stranger"]
    assert status["totals"]["rings"]["canary"]["versions"] == {"2.0.1": 3}
    assert status["totals"]["failing"] == 0   # canary-1 passed on 2.0.1
    by_name = {d["hostname"]: d for d in status["devices"]}
    assert by_name["canary-1"]["failed"] == ["2.0.0"]   # kept: not retried there
    assert by_name["canary-1"]["gate"] == "passed" and by_name["canary-1"]["version"] == "2.0.1"
    devicereport.open_report(signed_file.read_bytes())   # the original still verifies

"""Device reports and dry runs (installer/commands/report.py, plan.py): a signed report after
each install, sync, rollback and failed gate, to a folder and to a registry; `--dry-run`
changes nothing under the root."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

from bundler.repo import ringops
from installer.errors import SignatureError
from installer.sources import ocireports
from installer.trust import devicereport
from tests.world import Registry

from .bundles import KeyDir, cli, default_spec, tree, write_spec


def _reports(folder: Path) -> List[dict]:  # type: ignore[type-arg]
    return sorted((devicereport.open_report(p.read_bytes()) for p in folder.glob("*.json")),
                  key=lambda r: r["sequence"])


def _ring(tmp_path: Path) -> "tuple[KeyDir, Path, Path]":
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    repo = tmp_path / "repo"
    ringops.init_repo(repo, kd.path)
    ringops.publish([write_spec(default_spec("1.0.0"), kd, tmp_path / "b")], directory=repo,
                    keys_dir=kd.path, ring="canary")
    root = tmp_path / "dev"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("gw-1\n")
    p = cli("trust", repo / "metadata" / "1.root.json", "--root", root, "--ring", "canary")
    assert p.returncode == 0, p.stderr
    return kd, repo, root


def _sync(root: Path, repo: Path, *extra: object) -> "subprocess.CompletedProcess[str]":
    return cli("sync", "--source", repo, "--root", root, "--arch", "amd64", "--json",
               "--skip-start", *extra)


def test_reports_follow_every_command_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    kd, repo, root = _ring(tmp_path)
    stick = tmp_path / "stick"
    before = tree(root)
    p = _sync(root, repo, "--server", "--health-cmd", "true", "--dry-run")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["dry_run"] and plan["action"] == "install"
    assert plan["fetch"]["path"].startswith("targets/") and plan["health_cmd"] == "true"
    assert plan["rollout"] == [{"version": "1.0.0", "percent": 100, "this_device": True}]
    assert tree(root) == before   # nothing written, not even a lock file

    p = _sync(root, repo, "--server", "--health-cmd", "true", "--report-to", stick)
    assert p.returncode == 0, p.stderr
    [first] = _reports(stick)
    assert first["event"] == "sync" and first["installed"]["version"] == "1.0.0"
    assert first["gate"]["state"] == "passed" and first["ring"] == "canary"
    assert first["hostname"] == "gw-1" and first["metadata"]["timestamp"]["version"] >= 1
    assert first["installer_version"] and first["free_bytes"] > 0

    ringops.publish([write_spec(default_spec("2.0.0"), kd, tmp_path / "b")], directory=repo,
                    keys_dir=kd.path, ring="canary")
    p = _sync(root, repo, "--health-cmd", "echo disk pressure >&2; exit 1",
              "--health-timeout", "0.5", "--health-interval", "0.1", "--report-to", stick)
    assert p.returncode == 7, p.stderr
    second = _reports(stick)[-1]
    assert second["event"] == "gate-failed" and second["sequence"] == first["sequence"] + 1
    assert second["gate"]["state"] == "failed" and second["gate"]["version"] == "2.0.0"
    assert "disk pressure" in second["gate"]["output"]
    assert [f["version"] for f in second["failed"]] == ["2.0.0"]
    assert second["installed"]["version"] == "1.0.0"

    for args in (("rollback", "--dry-run"), ("sync", "--source", repo, "--arch", "amd64",
                                              "--dry-run")):
        before = tree(root)
        p = cli(*args, "--root", root)
        assert p.returncode == 0 and "nothing changed" in p.stdout, p.stderr
        assert tree(root) == before
    p = cli("rollback", "--root", root, "--json", "--report-to", stick)
    assert p.returncode == 0, p.stderr
    third = _reports(stick)[-1]
    assert third["event"] == "rollback" and third["gate"]["state"] == "none"

    out = tmp_path / "r.json"
    p = cli("report", "--root", root, "--out", out)
    assert p.returncode == 0, p.stderr
    mine = devicereport.open_report(out.read_bytes())
    assert mine["sequence"] == third["sequence"] + 1 and mine["event"] == "report"
    edited = out.read_bytes().replace(b'"gw-1"', b'"gw-2"')
    with pytest.raises(SignatureError):
        devicereport.open_report(edited)


def test_install_dry_run_shows_the_plan_and_leaves_the_tree(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    (tmp_path / "b").mkdir()
    v1 = write_spec(default_spec("1.0.0"), kd, tmp_path / "b")
    root = tmp_path / "dev"
    assert cli("trust", kd.root_json, "--root", root).returncode == 0
    before = tree(root)
    p = cli("install", v1, "--root", root, "--arch", "amd64", "--server", "--dry-run",
            "--exec", "--disable traefik")
    assert p.returncode == 0, p.stderr
    assert "would install edge 1.0.0" in p.stdout
    assert "INSTALL_K3S_EXEC='server --disable traefik'" in p.stdout
    assert tree(root) == before
    p = cli("install", v1, "--root", root, "--arch", "amd64", "--server", "--skip-start",
            "--report-to", tmp_path / "stick", "--json")
    assert p.returncode == 0, p.stderr
    [r] = _reports(tmp_path / "stick")
    assert r["event"] == "install" and r["gate"]["state"] == "none"
    (root / "usr" / "local" / "bin" / "k3s").write_bytes(b"damaged")
    p = cli("install", v1, "--root", root, "--arch", "amd64", "--report-to", tmp_path / "stick",
            "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["action"] == "repaired", p.stderr
    assert [x["event"] for x in _reports(tmp_path / "stick")] == ["install", "repair"]


@pytest.mark.world
def test_report_pushed_to_a_registry_and_read_back(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    root = tmp_path / "dev"
    assert cli("trust", kd.root_json, "--root", root, "--ring", "canary").returncode == 0
    with Registry(tmp_path / "reg", htpasswd=("device", "s3cret")) as reg:
        url = f"oci://{reg.host}/fleet/reports"
        p = cli("report", "--root", root, "--report-to", url)
        assert p.returncode == 5 and "credentials" in p.stderr, p.stderr
        creds = tmp_path / "creds"
        creds.write_text("device:s3cret\n")
        for _ in range(2):
            p = cli("report", "--root", root, "--report-to", url, "--report-credentials-file",
                    creds, "--json")
            assert p.returncode == 0, p.stderr
        from installer.sources.ocidist import Credentials
        got = list(ocireports.read_reports(url, credentials=Credentials("device", "s3cret")))
        # the refused push used sequence 1 (kept on the device); gaps are fine at the desk
        assert sorted(devicereport.open_report(d)["sequence"] for _, d in got) == [2, 3]
    # never in clear off loopback: a report sink has no plain-http switch (no connection made)
    from installer.sources.ocidist import parse_oci_url
    far = ocireports.ReportClient(parse_oci_url("oci://192.0.2.1:5000/fleet/reports"))
    assert far.scheme == "https"


def test_a_device_trusted_before_gets_its_identity_at_its_first_sync(tmp_path: Path) -> None:
    kd = KeyDir(tmp_path / "keys")
    repo = tmp_path / "repo"
    ringops.init_repo(repo, kd.path)
    root = tmp_path / "dev"
    assert cli("trust", repo / "metadata" / "1.root.json", "--root", root, "--ring",
               "canary").returncode == 0
    shutil.rmtree(root / "var" / "lib" / "rancher" / "airgap" / "device")  # as before #26
    assert json.loads(cli("status", "--root", root, "--json").stdout)["device_id"] is None
    p = cli("sync", "--source", repo, "--root", root, "--arch", "amd64", "--json",
            "--report-to", tmp_path / "stick")
    assert p.returncode == 0 and json.loads(p.stdout)["action"] == "up-to-date", p.stderr
    [r] = _reports(tmp_path / "stick")
    st = json.loads(cli("status", "--root", root, "--json").stdout)
    assert st["device_id"] == r["device_id"] and r["installed"] is None
    # two ids: the report key's (top level) and the ring's rollout id (sync.rollout_id)
    assert r["rollout_id"] == st["sync"]["rollout_id"] != st["device_id"] and r["rollout_id"]

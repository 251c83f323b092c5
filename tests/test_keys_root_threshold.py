"""Root signing with offline root keys held by separate people (issue 23 item 7): a rotation
started with fewer root keys than the threshold is staged (`staged-root.json`, never copied to
a repository), `bundle keys sign` adds the other holders' signatures, and once both thresholds
are met it becomes root.json; `bundle repo refresh` then publishes it and devices follow."""

import json
import shutil
from pathlib import Path

from bundler import keys
from bundler.repo import ringops

from .bundles import cli
from .test_rings_e2e import bundle, do_sync, ok


def test_root_rotation_signed_by_two_people(tmp_path: Path) -> None:
    kd = tmp_path / "keys"
    keys.init_keys(kd, root_keys=3, root_threshold=2)
    bob = tmp_path / "bob"
    (bob / "keys").mkdir(parents=True)
    for pem in ("root-2.pem", "root-3.pem"):  # bob keeps root-2 offline; root-3 is lost
        shutil.move(str(kd / "keys" / pem), str(bob / "keys" / pem))
    (bob / "keys" / "root-3.pem").unlink()
    r = tmp_path / "repo"
    ringops.init_repo(r, kd)
    dev = tmp_path / "dev"
    ok(cli("trust", r / "metadata" / "1.root.json", "--root", dev, "--ring", "canary"))
    ok(do_sync(dev, r, "--server", "--skip-start", "--health-cmd", "true"))

    out = ok(bundle("keys", "rotate", kd, "--role", "timestamp"))
    assert "root v2 is staged" in out and "1 of 2 (current root)" in out, out
    assert json.loads((kd / "root.json").read_bytes())["signed"]["version"] == 1
    assert "staged root v2: root signatures 1 of 2" in ok(bundle("keys", "show", kd))
    before = sorted(p.name for p in (r / "metadata").iterdir())
    ok(bundle("repo", "refresh", r, "--keys", kd))  # the staged root is not published
    assert "2.root.json" not in sorted(p.name for p in (r / "metadata").iterdir())
    assert len(before) <= len(list((r / "metadata").iterdir()))

    p = bundle("keys", "sign", kd, "--keys", kd)  # the same person twice adds nothing
    assert p.returncode == 2 and "add no root signature" in p.stderr, p.stderr
    out = ok(bundle("keys", "sign", kd, "--keys", bob))
    assert "root.json is version 2" in out, out
    assert not (kd / keys.STAGED_ROOT).exists()
    ok(bundle("repo", "refresh", r, "--keys", kd))
    assert (r / "metadata" / "2.root.json").is_file()
    res = json.loads(ok(do_sync(dev, r, "--health-cmd", "true")))
    assert res["action"] == "up-to-date", res

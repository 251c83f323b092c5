"""THREATS 48 (issue #24 row 6): a root-signed override dated beyond the device clock + 24 h is
refused, and its reprieve lasts at most 90 days by the device's clock (``tufoverride``).

Real key directories and repositories (``tests.ringrepo``), the real stdlib client."""

import time
from pathlib import Path

from bundler.repo.repoextend import extend
from installer.trust import rootmeta, tufoverride
from installer.trust.tufclient import ExpiredError
from tests.test_rings_override import DAY, device, expired_world, sign_override


def test_override_signed_on_a_host_465_days_ahead_is_refused(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    t0 = int(time.time())
    extend(directory=w.repo, keys_dir=w.keydir.path, days=90, reason="root host clock ahead",
           now=t0 + 465 * DAY)
    dev = device(w, "d")
    assert dev.sync(w.repo, now=t0 + 100 * DAY) == (False, None)
    assert isinstance(dev.error, ExpiredError)
    assert "override" in str(dev.error) and "clock" in str(dev.error)


def _override(w, issued: int, expires: int) -> bytes:  # type: ignore[no-untyped-def]
    sign_override(w, {"_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
                      "expires": rootmeta._iso(expires), tufoverride.ISSUED: issued,
                      "reason": "test", "extend": [{"role": "canary", "version": 1,
                                                    "sha256": "a" * 64}]})
    return (w.repo / "metadata" / tufoverride.FILE).read_bytes()


def test_usable_refuses_an_override_dated_past_the_clock_plus_a_day(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    root = rootmeta.load_trusted_root(w.root())
    now = int(time.time())
    ok = _override(w, now + DAY - 60, now + 30 * DAY)
    assert tufoverride.usable(ok, root, now, clock=now)[0] is not None
    late = _override(w, now + DAY + 60, now + 30 * DAY)
    found, why = tufoverride.usable(late, root, now, clock=now)
    assert found is None and "24 h" in why and "clock" in why
    # the same override once the device clock caught up is fine
    assert tufoverride.usable(late, root, now + 2 * DAY, clock=now + 2 * DAY)[0] is not None


def test_reprieve_is_at_most_90_days_by_the_device_clock(tmp_path: Path) -> None:
    w = expired_world(tmp_path)
    root = rootmeta.load_trusted_root(w.root())
    now = int(time.time())
    data = _override(w, now, now + 90 * DAY)
    late = now + 90 * DAY - 1
    assert tufoverride.usable(data, root, late, clock=late)[0] is not None
    found, why = tufoverride.usable(data, root, now + 90 * DAY, clock=now + 90 * DAY)
    assert found is None and "expired" in why
    # signed a day ahead (the most the device accepts): still over at issued + 90 days
    ahead = _override(w, now + DAY, now + 91 * DAY)
    assert tufoverride.usable(ahead, root, now, clock=now)[0] is not None
    assert tufoverride.usable(ahead, root, now + 91 * DAY, clock=now + 91 * DAY)[0] is None

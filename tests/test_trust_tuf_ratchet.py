"""THREATS 48 on the ring client (``installer.trust.tufclient``): no online key can move the
device's notion of time past its own clock + 24 h, however many refreshes it signs, and a
root rotation always recovers a device whose timestamp key was abused."""

from typing import Optional

from installer.trust import tufclient
from tests.tufrepo import DAY, NOW, Repo, when

RING = "canary"


def _ring_repo() -> Repo:
    repo = Repo()
    repo.delegate("targets", RING, paths=["*"])
    repo.publish([RING, "targets"])
    return repo


def _issue(repo: Repo, role: str, issued: int, *, lifetime: int = 30 * DAY) -> None:
    signed = repo.md[role].signed
    signed.unrecognized_fields["x-airgap-issued"] = issued
    signed.expires = when(issued + lifetime)


def _sync(trusted: tufclient.Trusted, repo: Repo,
          now: int) -> "tuple[Optional[tufclient.Refreshed], Optional[Exception]]":
    try:
        return tufclient.refresh(trusted, repo.fetch, ring=RING, now=now), None
    except Exception as e:  # noqa: BLE001 - a refusal is the outcome under test
        return None, e


def test_forward_dated_timestamps_cannot_walk_the_ratchet_and_root_rotation_recovers() -> None:
    repo = _ring_repo()
    for role in ("snapshot", "targets", RING):
        _issue(repo, role, NOW)
    repo.publish([RING, "targets"])
    trusted = tufclient.Trusted(root=repo.root_bytes(1))
    # an abused timestamp key signs 32 timestamps, each dated one day after the last; the
    # device's clock stays at NOW and is right
    for day in range(1, 33):
        _issue(repo, "timestamp", NOW + day * DAY, lifetime=7 * DAY)
        repo.publish_timestamp()
        refreshed, error = _sync(trusted, repo, NOW)
        assert error is None, f"refresh {day}: {error}"
        assert refreshed is not None
        trusted = refreshed.trusted
        assert trusted.ratchet <= NOW + DAY
    # the root keys rotate the timestamp key; root v2 expires in 20 days of the clock
    repo.rotate("timestamp")
    repo.root.expires = when(NOW + 20 * DAY)
    repo.publish_root(bump=True)
    repo.md["timestamp"].signed.version = 1
    _issue(repo, "timestamp", NOW, lifetime=7 * DAY)
    repo.publish_timestamp(bump=False)
    refreshed, error = _sync(trusted, repo, NOW)
    assert error is None, error
    assert refreshed is not None and refreshed.root.version == 2
    assert refreshed.versions["timestamp"]["version"] == 1


def test_a_device_without_a_trustworthy_clock_keeps_its_saved_ratchet() -> None:
    """A clock at 1970 never moves the ratchet, and expiry is still checked at the saved one."""
    repo = _ring_repo()
    for role in ("timestamp", "snapshot", "targets", RING):
        _issue(repo, role, NOW)
    repo.publish([RING, "targets"])
    trusted = tufclient.Trusted(root=repo.root_bytes(1))
    refreshed, error = _sync(trusted, repo, NOW)
    assert refreshed is not None, error
    assert refreshed.trusted.ratchet == NOW
    _issue(repo, "timestamp", NOW + 5 * DAY)
    repo.publish_timestamp()
    at_1970, error = _sync(refreshed.trusted, repo, 0)
    assert at_1970 is not None, error
    assert at_1970.trusted.ratchet == NOW and at_1970.now == NOW
    _issue(repo, "timestamp", NOW - 40 * DAY)      # stale: expired at the saved ratchet
    repo.publish_timestamp()
    stale, error = _sync(at_1970.trusted, repo, 0)
    assert stale is None and isinstance(error, tufclient.ExpiredError)

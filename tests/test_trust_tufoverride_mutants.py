"""The override (``installer.trust.tufoverride``) parsed and judged directly, at each edge
of its rules (issue #24 mutation run; THREATS 17, 48): root-signed, version and issued
bounds, at most 90 days of reprieve, reason and entry limits, exact documents only, dated
at most 24 h past the device clock, valid strictly before its own expiry."""

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

import pytest
from securesystemslib.signer import Signer

from installer.errors import FormatError, SignatureError
from installer.format import canonjson
from installer.trust import rootmeta, tufoverride
from tests.tufrepo import DAY, NOW, Repo

SHA = "ab" * 32
REPO = Repo()
ROOT = rootmeta.load_trusted_root(REPO.root_bytes(1))


def _signed(**change: Any) -> Dict[str, Any]:
    signed: Dict[str, Any] = {
        "_type": tufoverride.TYPE, "spec_version": "1.0.31", "version": 1,
        "expires": rootmeta._iso(NOW + 30 * DAY), tufoverride.ISSUED: NOW, "reason": "cut off",
        "extend": [{"role": "canary", "version": 2, "sha256": SHA}]}
    signed.update(change)
    return signed


def _doc(signed: Dict[str, Any], signers: Optional[Sequence[Signer]] = None) -> bytes:
    payload = canonjson.encode(signed)
    sigs = [{"keyid": s.public_key.keyid, "sig": s.sign(payload).signature}
            for s in (REPO.signers["root"] if signers is None else signers)]
    return json.dumps({"signed": signed, "signatures": sigs}).encode()


def _parse(**change: Any) -> tufoverride.Override:
    return tufoverride.parse(_doc(_signed(**change)), ROOT)


def test_a_valid_override_is_read_whole() -> None:
    o = _parse(version=3, reason="road closed",
               extend=[{"role": "timestamp", "version": 4, "sha256": SHA},
                       {"role": "canary", "version": 1, "sha256": "cd" * 32}])
    assert (o.version, o.issued, o.expires, o.reason) == (3, NOW, NOW + 30 * DAY, "road closed")
    assert o.extends == (("timestamp", 4, SHA), ("canary", 1, "cd" * 32))
    assert o.covers(role="canary", version=1, sha256="cd" * 32)
    assert not o.covers(role="canary", version=2, sha256="cd" * 32)
    assert not o.covers(role="stable", version=1, sha256="cd" * 32)
    assert not o.covers(role="canary", version=1, sha256=SHA)
    assert tufoverride.summary(o, ("canary",)) == {
        "version": 3, "expires": rootmeta._iso(NOW + 30 * DAY), "reason": "road closed",
        "roles": ["canary"]}


@pytest.mark.parametrize("change,ok", [
    ({"version": 1}, True), ({"version": 0}, False),
    ({tufoverride.ISSUED: 0, "expires": rootmeta._iso(DAY)}, True),
    ({tufoverride.ISSUED: -1, "expires": rootmeta._iso(DAY)}, False),
    ({"expires": rootmeta._iso(NOW + 1)}, True),
    ({"expires": rootmeta._iso(NOW)}, False),
    ({"expires": rootmeta._iso(NOW - 1)}, False),
    ({"expires": rootmeta._iso(NOW + 90 * DAY)}, True),
    ({"expires": rootmeta._iso(NOW + 90 * DAY + 1)}, False),
    ({"reason": "r"}, True), ({"reason": ""}, False), ({"reason": " \n "}, False),
    ({"reason": "r" * 1000}, True), ({"reason": "r" * 1001}, False),
    ({"extend": []}, False),
    ({"extend": [{"role": "canary", "version": 1, "sha256": SHA}] * 64}, True),
    ({"extend": [{"role": "canary", "version": 1, "sha256": SHA}] * 65}, False),
    ({"extend": ["canary"]}, False),
    ({"extend": [{"role": "canary", "version": 1, "sha256": SHA, "x": 1}]}, False),
    ({"extend": [{"role": "canary", "version": 1}]}, False),
    ({"extend": [{"role": "root", "version": 1, "sha256": SHA}]}, False),
    ({"extend": [{"role": "", "version": 1, "sha256": SHA}]}, False),
    ({"extend": [{"role": "canary", "version": 0, "sha256": SHA}]}, False),
    ({"extend": [{"role": "canary", "version": 1, "sha256": SHA.upper()}]}, False),
    ({"extend": [{"role": "canary", "version": 1, "sha256": SHA[:-1]}]}, False),
], ids=lambda v: str(v)[:60])
def test_each_rule_of_the_document_at_its_edge(change: Dict[str, Any], ok: bool) -> None:
    if ok:
        assert _parse(**change).version == change.get("version", 1)
    else:
        with pytest.raises(FormatError):
            _parse(**change)


def test_only_the_root_threshold_signs_an_override() -> None:
    signed = _signed()
    with pytest.raises(SignatureError, match="needs the root keys"):
        tufoverride.parse(_doc(signed, REPO.signers["timestamp"]), ROOT)
    with pytest.raises(SignatureError):
        tufoverride.parse(_doc(signed, []), ROOT)
    assert tufoverride.parse(_doc(signed), ROOT).version == 1


def test_usable_says_why_an_override_is_not_used() -> None:
    assert tufoverride.usable(None, ROOT, NOW) == (None, "")
    found, why = tufoverride.usable(_doc(_signed(version=0)), ROOT, NOW)
    assert found is None and why.startswith("; override.json is present but refused: ")
    found, why = tufoverride.usable(_doc(_signed(), REPO.signers["targets"]), ROOT, NOW)
    assert found is None and "needs the root keys" in why


def test_dated_at_most_24_hours_past_the_device_clock() -> None:
    data = _doc(_signed())
    clock = NOW - tufoverride.FUTURE_SLACK
    assert tufoverride.FUTURE_SLACK == DAY
    assert tufoverride.usable(data, ROOT, NOW, clock=clock)[0] is not None
    found, why = tufoverride.usable(data, ROOT, NOW, clock=clock - 1)
    assert found is None and "more than 24 h after this device's clock" in why
    assert tufoverride.usable(data, ROOT, NOW, clock=None)[0] is not None   # no clock given


def test_valid_strictly_before_its_own_expiry() -> None:
    data = _doc(_signed())
    expires = NOW + 30 * DAY
    assert tufoverride.usable(data, ROOT, expires - 1, clock=expires - 1) == (
        tufoverride.parse(data, ROOT), "")
    found, why = tufoverride.usable(data, ROOT, expires, clock=expires)
    assert found is None and why == f"; override v1 expired at {rootmeta._iso(expires)}"


def test_the_limits_are_the_documented_ones() -> None:
    limits: List[int] = [tufoverride.MAX_DAYS, tufoverride.MAX_REASON, tufoverride.MAX_ENTRIES]
    assert limits == [90, 1000, 64]


def test_an_override_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _parse().expires = NOW + 365 * DAY          # type: ignore[misc]

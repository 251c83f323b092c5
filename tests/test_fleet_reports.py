"""The desk's report rules (bundler/fleet/reports.py, gate.py) on synthetic signed reports:
duplicates, sequence replays, the ledger across runs, enrollment by id prefix, and the
evidence rule (healthy count, fraction of those that reported, soak)."""

import time
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import SpecError
from bundler.fleet import gate, reports, status

from .fleetreports import report, sealed

NOW = int(time.time())


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _enroll_all(repo: Path, src: Path) -> list[dict[str, Any]]:
    return reports.enroll(repo, [str(src)], accept_new=True, device_ids=[], now=NOW)


def test_duplicates_count_once_and_a_reused_sequence_is_a_replay(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    a = sealed("a", ring="canary", version="1.0.0", sequence=1, time=NOW - 100)
    _write(tmp_path / "stick", "a1.json", a)
    _write(tmp_path / "registry-copy", "same.json", a)          # the same bytes twice
    assert [e["hostname"] for e in _enroll_all(repo, tmp_path / "stick")] == ["a"]
    got = reports.load_reports(repo, [str(tmp_path / "stick"), str(tmp_path / "registry-copy")])
    assert got.accepted == 1 and got.duplicates == 1 and got.rejected == []
    reports.remember(repo, got)
    # reading the same stick again: nothing new, nothing rejected
    again = reports.load_reports(repo, [str(tmp_path / "stick")])
    assert again.accepted == 0 and again.rejected == []
    # the device's counter went back (restored from a backup): same sequence, other content
    other = sealed("a", ring="canary", version="2.0.0", sequence=1, time=NOW)
    _write(tmp_path / "later", "a1-again.json", other)
    later = reports.load_reports(repo, [str(tmp_path / "later")])
    assert [r["reason"] for r in later.rejected] == ["replayed sequence"]
    st = status.status(later, reports.load_enrolled(repo), now=NOW)
    assert st["devices"][0]["version"] == "1.0.0"          # the replay changed nothing


def test_enroll_by_prefix_and_its_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("a", "b"):
        _write(tmp_path / "stick", f"{name}.json",
               sealed(name, ring="beta", version="1.0.0", sequence=1, time=NOW))
    dev_b = report("b", ring="beta", version="1.0.0", sequence=1, time=NOW)["device_id"]
    with pytest.raises(SpecError, match="not both"):
        reports.enroll(repo, [str(tmp_path / "stick")], accept_new=True, device_ids=[dev_b],
                       now=NOW)
    with pytest.raises(SpecError, match="no unenrolled device"):
        reports.enroll(repo, [str(tmp_path / "stick")], accept_new=False,
                       device_ids=["ffffffffff"], now=NOW)
    added = reports.enroll(repo, [str(tmp_path / "stick")], accept_new=False,
                           device_ids=[dev_b[:8]], now=NOW)
    assert [a["device_id"] for a in added] == [dev_b]
    assert not (repo / "enrolled.json").exists()
    assert list(reports.load_enrolled(repo)) == [dev_b]
    got = reports.load_reports(repo, [str(tmp_path / "stick")])
    assert [r["reason"] for r in got.rejected] == ["unknown device"]


def _rule(**kw: Any) -> gate.Rule:
    return gate.Rule("edge", "2.0.0", "canary", **kw)


def test_evidence_rule_counts_fraction_and_soak(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    src = tmp_path / "stick"
    fleet = {"c1": ("2.0.0", "passed"), "c2": ("2.0.0", "passed"), "c3": ("1.0.0", "passed"),
             "c4": ("2.0.0", "failed"), "s1": ("1.0.0", "passed")}
    for name, (version, state) in fleet.items():
        _write(src, f"{name}.json", sealed(name, ring="stable" if name == "s1" else "canary",
                                           version=version, sequence=1, time=NOW, gate=state))
    _enroll_all(repo, src)
    # c5 is enrolled in canary (its first report) and then never heard of again
    _write(tmp_path / "c5", "c5.json", sealed("c5", ring="canary", version="1.0.0",
                                              sequence=1, time=NOW))
    _enroll_all(repo, tmp_path / "c5")
    got = reports.load_reports(repo, [str(src)])
    enrolled = reports.load_enrolled(repo)
    digest = report("c1", ring="canary", version="2.0.0", sequence=1,
                    time=NOW)["installed"]["digest"]
    res = gate.evaluate(got, enrolled, _rule(require_healthy=2, require_fraction=0.5),
                        now=NOW, digests={digest})
    v = {k: sorted(d["hostname"] for d in found) for k, found in res["verdicts"].items()}
    assert v == {"healthy": ["c1", "c2"], "failing": ["c4"], "pending": ["c3"],
                 "missing": ["c5"]}
    assert res["allowed"] and res["record"]["reported"] == 4
    assert len(res["record"]["reports"]) == 4
    res = gate.evaluate(got, enrolled, _rule(require_healthy=2, require_fraction=0.75),
                        now=NOW, digests={digest})
    assert not res["allowed"]
    message = gate.refusal(res, _rule()).message
    assert "failing: c4" in message and "pending: c3" in message and "missing: c5" in message
    # the gate passed an hour before the report: a 2h soak is not proven yet
    res = gate.evaluate(got, enrolled, _rule(require_healthy=1, require_fraction=0,
                                             min_soak=7200), now=NOW, digests={digest})
    assert not res["allowed"] and res["verdicts"]["healthy"] == []

"""``installer.trust.tufmeta`` at the edges of each parsing rule (issue #24 mutation run):
the fields each role may hold, what is accepted as well as what is refused, and the records'
immutability. Documents are python-tuf's (``tests.tufrepo``), edited as JSON (signatures are
not checked here)."""

import dataclasses
import json
from typing import Any, Callable, Dict

import pytest

from installer.errors import FormatError
from installer.trust import tufmeta
from tests.tufrepo import Repo

Change = Callable[[Dict[str, Any]], None]
NAMES = {"timestamp": "timestamp.json", "snapshot": "2.snapshot.json",
         "targets": "2.targets.json"}
PARSE = {"timestamp": tufmeta.parse_timestamp, "snapshot": tufmeta.parse_snapshot,
         "targets": tufmeta.parse_targets}


def _doc(role: str, change: Change) -> bytes:
    repo = Repo(meta_hashes=True)
    repo.delegate("targets", "d", paths=["*"])
    repo.add_target("targets", "f.txt", b"data")
    repo.publish(["d", "targets"])
    doc = json.loads(repo.served[NAMES[role]])
    change(doc["signed"])
    return json.dumps(doc).encode()


def _parse(role: str, change: Change) -> Any:
    return PARSE[role](_doc(role, change))


def _role(s: Dict[str, Any]) -> Dict[str, Any]:
    r: Dict[str, Any] = s["delegations"]["roles"][0]
    return r


def _nothing(s: Dict[str, Any]) -> None:
    pass


def _prefixes(s: Dict[str, Any]) -> None:
    _role(s).pop("paths")
    _role(s).update(path_hash_prefixes=["ab"])


ACCEPTED = [
    ("timestamp", lambda s: s.update(spec_version="1.0"), "spec 1.0"),
    ("timestamp", lambda s: s.update(spec_version="1.31.7"), "spec 1.31.7"),
    ("timestamp", lambda s: s.update(version=1), "version 1"),
    ("timestamp", lambda s: s["meta"]["snapshot.json"].update(length=0), "length 0"),
    ("timestamp", lambda s: s["meta"]["snapshot.json"].pop("length"), "no length"),
    ("timestamp", lambda s: s["meta"]["snapshot.json"].pop("hashes"), "no hashes"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(version=1), "meta version 1"),
    ("targets", lambda s: s["targets"]["f.txt"].update(length=0), "target length 0"),
    ("targets", lambda s: s["targets"]["f.txt"].pop("custom", None), "no custom"),
    ("targets", lambda s: s["targets"]["f.txt"].update(custom={"a": 1}), "custom"),
    ("targets", lambda s: _role(s).pop("terminating"), "terminating absent"),
    ("targets", lambda s: _role(s).update(paths=[]), "no paths"),
    ("targets", lambda s: s.pop("delegations"), "no delegations"),
]


@pytest.mark.parametrize("role,change,name", ACCEPTED, ids=[a[2] for a in ACCEPTED])
def test_what_each_rule_accepts(role: str, change: Change, name: str) -> None:
    assert _parse(role, change).version >= 1


REFUSED = [
    ("timestamp", lambda s: s.update(spec_version="2.0.0"), "unsupported spec_version"),
    ("timestamp", lambda s: s.update(spec_version="10.0"), "unsupported spec_version"),
    ("timestamp", lambda s: s.update(spec_version="1.x"), "unsupported spec_version"),
    ("timestamp", lambda s: s.update(spec_version="01.0"), "unsupported spec_version"),
    ("timestamp", lambda s: s.update(version=0), "version must be at least 1, found 0"),
    ("timestamp", lambda s: s["meta"].update({"snapshot.json": 1}), "must be an object"),
    ("timestamp", lambda s: s["meta"]["snapshot.json"].update(length=-1), "length >= 0"),
    ("timestamp", lambda s: s["meta"].pop("snapshot.json"), "exactly snapshot.json"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(version=0), "version must be"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(hashes=[]), "hashes must be"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(hashes={"sha256": 1}),
     "hashes must be"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(hashes={"sha256": "ab", "x": 1}),
     "hashes must be"),
    ("targets", lambda s: s["targets"].update({"g": 1}), "target g must be an object"),
    ("targets", lambda s: s["targets"]["f.txt"].update(length=-1), "length must be >= 0"),
    ("targets", lambda s: s["targets"]["f.txt"].update(custom=[]), "custom must be an object"),
    ("targets", lambda s: _role(s).update(paths="*"), "paths must be a list of strings"),
    ("targets", lambda s: _role(s).update(paths=["*", 1]), "paths must be a list of strings"),
    ("targets", lambda s: (_role(s).pop("paths"), _role(s).update(path_hash_prefixes=[1]),
                           None)[-1], "path_hash_prefixes must be a list of strings"),
    ("targets", lambda s: s.update(delegations=[]), "delegations must be an object"),
    ("targets", lambda s: _role(s).update(name="targets"), "top-level role name"),
]


@pytest.mark.parametrize("role,change,needle", REFUSED, ids=[r[2] + " " + str(i)
                                                               for i, r in enumerate(REFUSED)])
def test_what_each_rule_refuses(role: str, change: Change, needle: str) -> None:
    with pytest.raises(FormatError, match=needle):
        _parse(role, change)


def test_fields_are_read_as_written() -> None:
    ts = _parse("timestamp", _nothing)
    assert ts.kind == "timestamp" and ts.snapshot.version == 2 and ts.snapshot.length
    assert set(ts.snapshot.hashes or {}) == {"sha256"}
    snap = _parse("snapshot", _nothing)
    assert set(snap.meta) == {"targets.json", "d.json"} and snap.meta["d.json"].version == 1
    t = _parse("targets", lambda s: _role(s).update(terminating=True))
    assert t.targets["f.txt"].length == 4 and t.delegations is not None
    d = t.delegations.role("d")
    assert d is not None and d.terminating and d.paths == ("*",) and d.hash_prefixes is None
    assert d.threshold == 1 and len(d.keyids) == 1 and set(t.delegations.keys) == set(d.keyids)
    assert t.delegations.role("e") is None
    assert not _parse("targets", lambda s: _role(s).pop("terminating")).delegations.roles[
        0].terminating
    prefixed = _parse("targets", _prefixes)
    assert prefixed.delegations.roles[0].hash_prefixes == ("ab",)
    assert prefixed.delegations.roles[0].paths is None


@pytest.mark.parametrize("value,issued", [(5, 5), (0, 0), (True, None), ("5", None),
                                          (None, None)])
def test_issued_is_an_integer_only(value: Any, issued: Any) -> None:
    def change(s: Dict[str, Any]) -> None:
        if value is not None:
            s[tufmeta.ISSUED] = value
    assert _parse("timestamp", change).issued == issued


def test_records_are_immutable() -> None:
    t = _parse("targets", _nothing)
    ts = _parse("timestamp", _nothing)
    for record, attr in ((t, "version"), (ts.snapshot, "version"), (t.targets["f.txt"], "length"),
                         (t.delegations, "roles"), (t.delegations.roles[0], "terminating")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, attr, 1)


def test_a_role_name_matches_exactly() -> None:
    d = tufmeta.DelegatedRole("a", ("k",), 1, False, ("*",), None)
    e = tufmeta.DelegatedRole("b", ("k",), 1, False, ("*",), None)
    ds = tufmeta.Delegations({}, (d, e))
    assert ds.role("b") is e and ds.role("a") is d and ds.role("c") is None


def test_a_record_shows_its_kind_and_version_not_its_bytes() -> None:
    shown = repr(_parse("targets", _nothing))
    assert "kind='targets'" in shown and "version=2" in shown
    for field in ("signed=", "signatures=", "signed_bytes=", "data="):
        assert field not in shown

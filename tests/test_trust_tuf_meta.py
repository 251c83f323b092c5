"""``installer.trust.tufmeta``: typed records parsed strictly, the delegation path rules, the
length-and-hashes rule, and repository file names (quoted role names and target paths)."""

import hashlib
import json
from typing import Any, Callable, Dict, Optional, Tuple

import pytest

from installer.errors import DigestMismatch, FormatError
from installer.trust import tufmeta
from tests.tufrepo import Repo


def _role(paths: Optional[Tuple[str, ...]] = None,
          prefixes: Optional[Tuple[str, ...]] = None) -> tufmeta.DelegatedRole:
    return tufmeta.DelegatedRole("r", ("k",), 1, False, paths, prefixes)


@pytest.mark.parametrize("pattern,path,ok", [
    ("*", "file", True), ("*", "dir/file", False), ("*/*", "dir/file", True),
    ("dir/*", "dir/sub/file", False), ("*.tgz", "a.tgz", True), ("*.tgz", "a.TGZ", False),
    ("foo-?.tgz", "foo-1.tgz", True), ("foo-?.tgz", "foo-12.tgz", False),
    ("releases/*/*", "releases/x/y", True), ("[ab].txt", "a.txt", True),
    ("", "", True), ("dir/", "dir/", True),
])
def test_path_patterns_match_per_segment(pattern: str, path: str, ok: bool) -> None:
    assert _role(paths=(pattern,)).covers(path) is ok


def test_hash_prefixes_cover_by_sha256_of_the_path() -> None:
    digest = hashlib.sha256(b"a/b.txt").hexdigest()
    assert _role(prefixes=(digest[:1],)).covers("a/b.txt")
    assert _role(prefixes=(digest[:4], "zz")).covers("a/b.txt")
    other = "0" if digest[0] != "0" else "1"
    assert not _role(prefixes=(other,)).covers("a/b.txt")
    assert not _role(prefixes=()).covers("a/b.txt")


@pytest.mark.parametrize("length,hashes,ok", [
    (None, None, True), (4, None, True), (5, None, False),
    (None, {"sha256": hashlib.sha256(b"data").hexdigest()}, True),
    (None, {"sha256": "00" * 32}, False),
    (None, {"sha512": hashlib.sha512(b"data").hexdigest(), "md5": "x"}, True),
    (None, {"md5": "x"}, False),
    (None, {"sha256": hashlib.sha256(b"data").hexdigest(), "sha512": "00"}, False),
])
def test_length_and_every_supported_hash(length: Optional[int],
                                         hashes: Optional[Dict[str, str]], ok: bool) -> None:
    if ok:
        tufmeta.check_length_and_hashes(b"data", length=length, hashes=hashes, what="f")
    else:
        with pytest.raises(DigestMismatch):
            tufmeta.check_length_and_hashes(b"data", length=length, hashes=hashes, what="f")


def test_role_and_target_file_names() -> None:
    assert tufmeta.role_file("../x", 3) == "3...%2Fx.json"
    assert tufmeta.role_file("a b#?", None) == "a%20b%23%3F.json"
    t = tufmeta.TargetFile("d/e f.txt", 1, {"sha512": "ab", "sha256": "cd"}, {})
    assert tufmeta.target_file(t, consistent=True) == "d/ab.e%20f.txt"
    assert tufmeta.target_file(t, consistent=False) == "d/e%20f.txt"
    assert tufmeta.target_file(tufmeta.TargetFile("x", 1, {"md5": "a"}, {}),
                               consistent=True) is None


def _edit(role: str, change: Callable[[Dict[str, Any]], None]) -> bytes:
    repo = Repo()
    repo.delegate("targets", "d", paths=["*"])
    repo.publish(["d", "targets"])
    name = {"timestamp": "timestamp.json", "snapshot": "2.snapshot.json",
            "targets": "2.targets.json"}[role]
    doc = json.loads(repo.served[name])
    change(doc["signed"])
    return json.dumps(doc).encode()


def _delegation(signed: Dict[str, Any]) -> Dict[str, Any]:
    role: Dict[str, Any] = signed["delegations"]["roles"][0]
    return role


REFUSED = [
    ("timestamp", lambda s: s["meta"].update({"other.json": {"version": 1}}),
     "exactly snapshot.json"),
    ("timestamp", lambda s: s["meta"]["snapshot.json"].update(version=0), "version must be"),
    ("timestamp", lambda s: s.update(spec_version="2.0"), "spec_version"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(length=-1), "length >= 0"),
    ("snapshot", lambda s: s["meta"]["targets.json"].update(hashes={}), "non-empty"),
    ("targets", lambda s: _delegation(s).update(path_hash_prefixes=["ab"]), "exactly one of"),
    ("targets", lambda s: _delegation(s).pop("paths"), "exactly one of"),
    ("targets", lambda s: _delegation(s).update(terminating="yes"), "terminating"),
    ("targets", lambda s: _delegation(s).update(name="snapshot"), "top-level role name"),
    ("targets", lambda s: s["delegations"]["roles"].append(_delegation(s)), "delegated twice"),
    ("targets", lambda s: s["delegations"].update(succinct_roles={}), "succinct_roles"),
    ("targets", lambda s: s["targets"].update({"f": {"length": 1}}), "hashes"),
    ("targets", lambda s: s.update(expires="2030-01-01T00:00:00+00:00"), "expires"),
    ("targets", lambda s: s.update(_type="snapshot"), "_type"),
]


@pytest.mark.parametrize("role,change,needle", REFUSED,
                         ids=[f"{r[0]}: {r[2]}" for r in REFUSED])
def test_malformed_metadata_is_refused(role: str, change: Callable[[Dict[str, Any]], None],
                                       needle: str) -> None:
    parse = {"timestamp": tufmeta.parse_timestamp, "snapshot": tufmeta.parse_snapshot,
             "targets": tufmeta.parse_targets}[role]
    with pytest.raises(FormatError, match=needle):
        parse(_edit(role, change))


def test_unknown_fields_are_kept_in_the_signed_bytes() -> None:
    data = _edit("targets", lambda s: s.update({"x-custom": {"a": 1}}))
    parsed = tufmeta.parse_targets(data)
    assert b'"x-custom":{"a":1}' in parsed.signed_bytes

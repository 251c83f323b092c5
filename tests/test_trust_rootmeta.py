"""Root metadata (installer/trust/rootmeta.py): canonical bytes, the root chain, structure,
thresholds.

Moved unchanged from test_installer_gaps.py / test_installer_mutants.py."""

import hashlib
import json
import re
from pathlib import Path
from typing import Callable, cast

import pytest

from installer.errors import (
    FormatError,
    SignatureError,
)
from installer.format import canonjson
from installer.trust import rootmeta, verify
from tests.bundles import (
    KeyDir,
    default_spec,
    write_spec,
)
from tests.bundles import (
    open_signed as _open,
)
from tests.bundles import (
    spec_parts as _spec_parts,
)
from tests.bundles import (
    verify_signed as _verify,
)
from tests.bundles import (
    write_signed as _write,
)

NOW = 1_800_000_000  # after every spec's `created` (1_790_000_000), before the roots expire


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    return KeyDir(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, keydir: KeyDir) -> Path:
    return write_spec(default_spec("2.0.0"), keydir, tmp_path_factory.mktemp("good"))


def _pretty(data: bytes, indent: int) -> bytes:
    return json.dumps(json.loads(data), indent=indent, separators=(",", ": "),
                      sort_keys=True).encode() + b"\n"


def _reversed_keys(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _reversed_keys(obj[k]) for k in sorted(obj, reverse=True)}
    if isinstance(obj, list):
        return [_reversed_keys(v) for v in obj]
    return obj


def _pretty_unsorted(data: bytes) -> bytes:
    return json.dumps(_reversed_keys(json.loads(data)), indent=1,
                      separators=(",", ": ")).encode() + b"\n"


@pytest.mark.parametrize("form,ok", [("pretty-1", True), ("pretty-2", False),
                                     ("canonical", True), ("trailing-space", False),
                                     ("pretty-unsorted", False)])
def test_root_bytes_must_be_canonical_or_tuf_pretty(tmp_path: Path, keydir: KeyDir,
                                                    form: str, ok: bool) -> None:
    _, manifest, data = _spec_parts()
    root = keydir.chain()[0]
    edited = {"pretty-1": _pretty(root, 1), "pretty-2": _pretty(root, 2),
              "canonical": canonjson.encode(json.loads(root)),
              "trailing-space": _pretty(root, 1) + b" ",
              "pretty-unsorted": _pretty_unsorted(root)}[form]
    bundle = _write(tmp_path / "b.tar", keydir, manifest=manifest, data=data, roots=[edited])
    if ok:
        assert _verify(bundle, keydir) == manifest.payload_size
    else:
        with pytest.raises(FormatError, match="neither canonical JSON nor python-tuf"):
            _verify(bundle, keydir)


def test_bundle_root_differs_from_the_pinned_one(tmp_path: Path, good: Path,
                                                 keydir: KeyDir) -> None:
    """The pinned v1 carries an extra (unknown-keyid) signature: still a valid anchor, but
    the bundle's v1 is not the same document, so the bundle is refused."""
    doc = json.loads(keydir.root_json.read_bytes())
    doc["signatures"].append({"keyid": "ab" * 32, "sig": "00" * 64})
    anchor = canonjson.encode(doc)
    rootmeta.load_trusted_root(anchor)  # the anchor itself is fine
    with pytest.raises(SignatureError, match="differs from the root pinned on this host"):
        _open(good, keydir, anchor=anchor)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> KeyDir:
    k = KeyDir(tmp_path_factory.mktemp("rot") / "k")
    v1 = k.chain()[0]
    k.rotate_targets()
    k.v1 = v1  # type: ignore[attr-defined]
    return k


def test_chain_entry_with_the_wrong_version(tmp_path: Path, rotated: KeyDir) -> None:
    """roots/1.root.json holding v2 (valid from the pinned v1's point of view) is refused."""
    _, manifest, data = _spec_parts()
    chain = rotated.chain()
    assert len(chain) == 2
    bundle = _write(tmp_path / "b.tar", rotated, manifest=manifest, data=data, roots=[chain[1]])
    with pytest.raises(SignatureError, match="roots/1.root.json holds root version 2"):
        _verify(bundle, rotated, anchor=rotated.v1)  # type: ignore[attr-defined]
    ok = _write(tmp_path / "ok.tar", rotated, manifest=manifest, data=data)
    opened = _open(ok, rotated, anchor=rotated.v1)  # type: ignore[attr-defined]
    try:
        assert opened.root.version == 2 and opened.new_root == chain[1]
    finally:
        opened.close()


def test_newer_root_and_anchor_version() -> None:
    class R:
        version = 3
    chain = [b"1", b"2", b"3"]
    assert verify.newer_root(2, cast(rootmeta.Root, R()), chain) == b"3"
    assert verify.newer_root(3, cast(rootmeta.Root, R()), chain) is None
    assert verify.newer_root(None, cast(rootmeta.Root, R()), chain) is None
    assert verify.newer_root(1, cast(rootmeta.Root, R()), chain[:2]) is None
    assert verify.anchor_version(b'{"signed": {"version": 4}}') == 4
    assert verify.anchor_version(b'{"signed": {"version": "4"}}') is None
    assert verify.anchor_version(b"[") is None


def _root_edit(keydir: KeyDir, fn: Callable[[dict], object]) -> bytes:
    doc = json.loads(keydir.root_json.read_bytes())
    fn(doc)
    return canonjson.encode(doc)


def _first_key(doc: dict) -> dict:
    return doc["signed"]["keys"][sorted(doc["signed"]["keys"])[0]]


ROOT_CASES = {
    "key-not-object": (lambda d: d["signed"]["keys"].update(x="k"), "must be an object"),
    "role-not-object": (lambda d: d["signed"]["roles"].update(root=[]), "must be an object"),
    "keyids-not-strings": (lambda d: d["signed"]["roles"]["root"].update(keyids=[1]),
                           "keyids must be strings"),
    "keyid-twice": (lambda d: d["signed"]["roles"]["root"].update(
        keyids=d["signed"]["roles"]["root"]["keyids"] * 2), "more than once"),
    "signatures-not-list": (lambda d: d.update(signatures={}), "'signatures' must be list"),
    "signature-not-object": (lambda d: d.update(signatures=["x"]), "must be an object"),
    "signature-keyid-twice": (lambda d: d.update(signatures=d["signatures"] * 2),
                              "more than one signature by keyid"),
    "version-0": (lambda d: d["signed"].update(version=0), "version must be at least 1"),
    "snapshot-flag-not-bool": (lambda d: d["signed"].update(consistent_snapshot=1),
                               "consistent_snapshot must be a boolean"),
    "invalid-date": (lambda d: d["signed"].update(expires="2030-02-30T00:00:00Z"),
                     "is not a valid date"),
    "short-public-key": (lambda d: _first_key(d)["keyval"].update(public="ab" * 31),
                         "32 bytes, found 31"),
    "no-roles": (lambda d: d["signed"].update(roles={}), "found none"),
    "threshold-0": (lambda d: d["signed"]["roles"]["root"].update(threshold=0),
                    "threshold must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(ROOT_CASES))
def test_root_structure_refused(keydir: KeyDir, case: str) -> None:
    edit, needle = ROOT_CASES[case]
    with pytest.raises(FormatError, match=re.escape(needle)):
        rootmeta.parse_root(_root_edit(keydir, edit))


def test_root_consistent_snapshot_bool_and_other_schemes(keydir: KeyDir) -> None:
    root = rootmeta.parse_root(_root_edit(keydir, lambda d: d["signed"].update(
        consistent_snapshot=False)))
    assert root.version == 1
    other = rootmeta.parse_root(_root_edit(keydir, lambda d: _first_key(d).update(
        scheme="rsassa-pss-sha256")))
    assert any(k.public is None for k in other.keys.values())
    with pytest.raises(SignatureError, match="defines no role 'mirror'"):
        rootmeta.verify_threshold(root, "mirror", b"x", signatures=())
    assert rootmeta.count_valid(root, "mirror", b"x", signatures=()) == 0


def test_threshold_message_counts_in_role(keydir: KeyDir) -> None:
    root = rootmeta.parse_root(keydir.root_json.read_bytes())
    keyid = root.roles["root"].keyids[0]
    sigs = (rootmeta.Signature(keyid, bytes(64)), rootmeta.Signature("ff" * 32, bytes(64)))
    with pytest.raises(SignatureError, match=r"found 0 \(2 signature\(s\) given, 1 by keyids"):
        rootmeta.verify_threshold(root, "root", b"payload", signatures=sigs)


def test_manifest_signatures_may_repeat_root_signatures_may_not(keydir: KeyDir) -> None:
    sig = {"keyid": "ab" * 32, "sig": "00" * 64}
    doc = canonjson.encode({"signatures": [sig, sig]})
    assert len(rootmeta.parse_signatures_doc(doc)) == 2
    with pytest.raises(FormatError, match="more than one signature"):
        rootmeta.parse_signatures([sig, sig], "x", allow_repeats=False)


def test_trust_small_edges() -> None:
    """rootmeta.py line 169 (``raise`` -> ``pass``: a signatures value that is not a list),
    line 158 (``count(k) > 1`` -> ``>= 1`` / ``> 2``: the message names exactly the repeated
    keyid) and line 94 (the fingerprint is 12 hex digits)."""

    from installer import errors
    from installer.trust import rootmeta
    with pytest.raises(errors.FormatError, match="manifest signatures must be a list"):
        rootmeta.parse_signatures_doc(b'{"signatures":5}')
    with pytest.raises(errors.FormatError, match=r"role x lists keyid a more than once$"):
        rootmeta._parse_role({"keyids": ["a", "b", "a"], "threshold": 1}, "role x")
    root = rootmeta.Root(version=1, expires=0, keys={}, roles={}, signed={}, signatures=(),
                      signed_bytes=b"{}")
    assert rootmeta.root_fingerprint(root) == hashlib.sha256(b"{}").hexdigest()[:12]


def test_trust_threshold_message_counts_signatures_by_role_keyids() -> None:
    """rootmeta.py line 246 (``s.keyid in wanted.keyids`` -> ``not in``): the refusal counts the
    given signatures whose keyid is in the role (2 of 3 here)."""
    from installer import errors
    from installer.trust import rootmeta
    root = rootmeta.Root(version=1, expires=0, keys={},
                      roles={"targets": rootmeta.Role(("k1", "k2"), 2)}, signed={},
                      signatures=(), signed_bytes=b"{}")
    sigs = [rootmeta.Signature("k1", b""), rootmeta.Signature("k2", b""),
            rootmeta.Signature("zz", b"")]
    with pytest.raises(errors.SignatureError, match=r"3 signature\(s\) given, 2 by keyids"):
        rootmeta.verify_threshold(root, "targets", b"x", signatures=sigs)

"""The stdlib trust verifier, case by case and side by side with python-tuf.

THREATS lines covered here:
  8  unsigned / unknown key / below threshold            -> CHAIN_CASES, MANIFEST_CASES
  9  key listed twice / signature repeated -> once       -> CHAIN_CASES, MANIFEST_CASES,
                                                            test_verify_threshold_counts_*
  10 root chain: 1->3, lacking old/new threshold,
     expired device root with a valid 1->2->3            -> CHAIN_CASES, test_update_root_*
  11 duplicate JSON keys, floats, non-canonical bytes   -> CHAIN_CASES, FORMAT_CASES
Every chain and manifest case is also fed to python-tuf; decisions must match, except the
listed cases where we are deliberately stricter (never more lenient).
"""

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import Metadata, Root
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from installer.errors import FormatError, InstallerError, SignatureError
from installer.format import canonjson
from installer.trust import rootmeta

NOW = 1_800_000_000  # 2027-01-15, passed explicitly: the clock is never patched
DAY = 86400
YEAR = 365 * DAY


# --- a tiny repository builder (keys are generated once per test session) -----------------

@dataclass(frozen=True)
class KP:
    private: Any
    key: Dict[str, Any]
    keyid: str

    def sign(self, payload: bytes) -> str:
        if isinstance(self.private, Ed25519PrivateKey):
            return self.private.sign(payload).hex()
        signer = CryptoSigner(self.private, SSlibKey.from_dict(self.keyid, dict(self.key)))
        return signer.sign(payload).signature

    def alias(self, keyid: str) -> "KP":
        """The same key material under another keyid."""
        return replace(self, keyid=keyid)


def _ed25519() -> KP:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    key = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw.hex()}}
    return KP(private, key, hashlib.sha256(canonjson.encode(key)).hexdigest())


def _ecdsa() -> KP:
    private = ec.generate_private_key(ec.SECP256R1())
    key = SSlibKey.from_crypto(private.public_key())
    return KP(private, key.to_dict(), key.keyid)


@pytest.fixture(scope="session")
def k() -> SimpleNamespace:
    names = ["r1", "r2", "r3", "n1", "n2", "t1", "t2", "t3", "s1", "ts1", "x"]
    keys = {name: _ed25519() for name in names}
    keys["ec"] = _ecdsa()
    return SimpleNamespace(**keys)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


RoleSpec = Tuple[Sequence[KP], int]


def signed_root(k: SimpleNamespace, version: int, *, expires: int = NOW + YEAR,
                root: Optional[RoleSpec] = None, targets: Optional[RoleSpec] = None,
                **extra: Any) -> Dict[str, Any]:
    roles_spec = {"root": root or ([k.r1, k.r2], 1), "targets": targets or ([k.t1, k.t2], 1),
                  "snapshot": ([k.s1], 1), "timestamp": ([k.ts1], 1)}
    keys: Dict[str, Any] = {}
    roles: Dict[str, Any] = {}
    for name, (kps, threshold) in roles_spec.items():
        roles[name] = {"keyids": [kp.keyid for kp in kps], "threshold": threshold}
        keys.update({kp.keyid: kp.key for kp in kps})
    signed = {"_type": "root", "spec_version": "1.0.31", "version": version,
              "expires": iso(expires), "consistent_snapshot": True, "keys": keys,
              "roles": roles}
    signed.update(extra)
    return signed


def envelope(signed: Dict[str, Any], signers: Sequence[KP], *,
             payload: Optional[bytes] = None) -> bytes:
    """Metadata as python-tuf writes it (indented, sorted), signed over canonical bytes."""
    data = canonjson.encode(signed) if payload is None else payload
    sigs = [{"keyid": kp.keyid, "sig": kp.sign(data)} for kp in signers]
    return json.dumps({"signatures": sigs, "signed": signed}, indent=1, sort_keys=True).encode()


def root_doc(k: SimpleNamespace, version: int, signers: Sequence[KP], **kw: Any) -> bytes:
    return envelope(signed_root(k, version, **kw), signers)


# --- the two verifiers under test ---------------------------------------------------------

def ours(trusted: bytes, chain: Sequence[bytes], now: int) -> bool:
    try:
        rootmeta.advance_root(trusted, chain, now)
    except InstallerError:
        return False
    return True


def python_tuf(trusted: bytes, chain: Sequence[bytes], now: int) -> bool:
    """python-tuf's client: load the trusted root, then update_root with N+1, N+2 ... in
    order (as ngclient's Updater fetches them), then the final-root expiry check (5.3.10)."""
    try:
        tms = TrustedMetadataSet(trusted, EnvelopeType.METADATA)
        tms.reference_time = datetime.fromtimestamp(now, UTC)

        def version(data: bytes) -> int:
            try:
                return int(json.loads(data)["signed"]["version"])
            except Exception:
                return 1 << 62  # unparseable: let update_root reject it

        for data in sorted(chain, key=version):
            if version(data) > tms.root.version:
                tms.update_root(data)
        return not tms.root.is_expired(tms.reference_time)
    except Exception:
        return False


# --- root chains ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChainCase:
    name: str
    threat: str
    build: Callable[[SimpleNamespace], Tuple[bytes, List[bytes], int]]
    accept: bool
    # python-tuf's answer when it differs from ours (we are stricter), with the reason.
    tuf_accepts_because: Optional[str] = None


def _inject_duplicate(doc: bytes, good: str, shadow: str) -> bytes:
    """Put ``shadow`` right before ``good`` in the same object: python's json keeps the last."""
    assert doc.count(good.encode()) == 1
    return doc.replace(good.encode(), (shadow + ", " + good).encode())


def _float_root(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    extra: Dict[str, Any] = {"x-ratio": 0.5}
    signed = signed_root(k, 2, **extra)
    payload = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    return v1, [v1, envelope(signed, [k.r1], payload=payload)], NOW


def _noncanonical_signed(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    signed = signed_root(k, 2)
    payload = json.dumps(signed, indent=1).encode()  # signed over non-canonical bytes
    return v1, [v1, envelope(signed, [k.r1], payload=payload)], NOW


def _repeated_signature(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1, k.r2], root=([k.r1, k.r2], 2))
    doc = json.loads(root_doc(k, 2, [k.r1], root=([k.r1, k.r2], 2)))
    doc["signatures"] = doc["signatures"] * 2
    return v1, [v1, json.dumps(doc).encode()], NOW


def _same_key_two_keyids(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    alias = k.r1.alias("r1-alias")
    return v1, [v1, root_doc(k, 2, [k.r1, alias], root=([k.r1, alias], 2))], NOW


def _keyid_listed_twice(threshold: int) -> Callable[[SimpleNamespace], Any]:
    def build(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
        v1 = root_doc(k, 1, [k.r1])
        return v1, [v1, root_doc(k, 2, [k.r1], root=([k.r1, k.r1], threshold))], NOW
    return build


def _mutated(mutate: Callable[[Dict[str, Any]], None]) -> Callable[[SimpleNamespace], Any]:
    def build(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
        v1 = root_doc(k, 1, [k.r1])
        signed = signed_root(k, 2)
        mutate(signed)
        return v1, [v1, envelope(signed, [k.r1])], NOW
    return build


def _bad_sig_hex(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    doc = json.loads(root_doc(k, 2, [k.r1]))
    doc["signatures"][0]["sig"] = "zz" * 64
    return v1, [v1, json.dumps(doc).encode()], NOW


def _short_sig(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    doc = json.loads(root_doc(k, 2, [k.r1]))
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][:126]
    return v1, [v1, json.dumps(doc).encode()], NOW


def _fork(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
    v1 = root_doc(k, 1, [k.r1])
    return v1, [v1, root_doc(k, 2, [k.r1]), root_doc(k, 2, [k.r1], expires=NOW + 2 * YEAR)], NOW


def _chain(*steps: Tuple[int, str, Dict[str, Any]], now: int = NOW,
           trusted: int = 1) -> Callable[[SimpleNamespace], Any]:
    """Steps are (version, comma-separated signer names, root_doc keyword arguments)."""
    def build(k: SimpleNamespace) -> Tuple[bytes, List[bytes], int]:
        docs = []
        for version, signers, kw in steps:
            kw = {key: ([getattr(k, n) for n in val[0]], val[1]) if key in ("root", "targets")
                  else val for key, val in kw.items()}
            docs.append(root_doc(k, version, [getattr(k, n) for n in signers.split(",") if n],
                                 **kw))
        return docs[trusted - 1], docs, now
    return build


STRICTER_DUPLICATE_KEY = "python's json keeps the last duplicate key; we refuse the document"
STRICTER_SAME_KEY = "python-tuf counts keyids; we count distinct key material"
STRICTER_FORK = "python-tuf fetches one file per version and never sees the second v2"

CHAIN_CASES = [
    ChainCase("valid chain 1->2->3", "10",
              _chain((1, "r1", {}), (2, "r1", {}), (3, "r1", {})), True),
    ChainCase("device root v1 expired, chain 1->2->3 valid", "10",
              _chain((1, "r1", {"expires": NOW - 100 * DAY}),
                     (2, "r1", {"expires": NOW - 10 * DAY}),
                     (3, "r1", {"expires": NOW + DAY})), True),
    ChainCase("final root expired", "10",
              _chain((1, "r1", {"expires": NOW - 100 * DAY}),
                     (2, "r1", {"expires": NOW - DAY})), False),
    ChainCase("final root expires exactly now", "10",
              _chain((1, "r1", {"expires": NOW})), False),
    ChainCase("device root expired, no newer root", "10",
              _chain((1, "r1", {"expires": NOW - DAY})), False),
    ChainCase("jump 1->3", "10", lambda k: (
        lambda docs: (docs[0], [docs[0], docs[2]], NOW))(
        [root_doc(k, v, [k.r1]) for v in (1, 2, 3)]), False),
    ChainCase("rotation signed by old and new thresholds", "10",
              _chain((1, "r1", {}), (2, "r1,n1,n2", {"root": (["n1", "n2"], 2)}),
                     (3, "n1,n2", {"root": (["n1", "n2"], 2)})), True),
    ChainCase("N+1 lacks the old threshold", "10",
              _chain((1, "r1", {}), (2, "n1,n2", {"root": (["n1", "n2"], 2)})), False),
    ChainCase("N+1 lacks the new threshold", "10",
              _chain((1, "r1", {}), (2, "r1,n1", {"root": (["n1", "n2"], 2)})), False),
    ChainCase("N+2 signed only by N's keys", "10",
              _chain((1, "r1", {}), (2, "r1,n1", {"root": (["n1"], 1)}),
                     (3, "r1", {"root": (["n1"], 1)})), False),
    ChainCase("chain given out of order", "10", lambda k: (
        lambda docs: (docs[0], docs[::-1], NOW))(
        [root_doc(k, v, [k.r1]) for v in (1, 2, 3)]), True),
    ChainCase("only older or equal roots in the chain", "10",
              _chain((1, "r1", {}), (2, "r1", {}), trusted=2), True),
    ChainCase("two different documents for v2", "10", _fork, False,
              tuf_accepts_because=STRICTER_FORK),
    ChainCase("new root unsigned", "8", _chain((1, "r1", {}), (2, "", {})), False),
    ChainCase("trusted root unsigned", "8", _chain((1, "", {})), False),
    ChainCase("new root signed by an unknown key", "8",
              _chain((1, "r1", {}), (2, "x", {})), False),
    ChainCase("new root signed by a targets key", "8",
              _chain((1, "r1", {}), (2, "t1", {})), False),
    ChainCase("new root below threshold", "8",
              _chain((1, "r1,r2", {"root": (["r1", "r2"], 2)}),
                     (2, "r1", {"root": (["r1", "r2"], 2)})), False),
    ChainCase("new root at threshold", "8",
              _chain((1, "r1,r2", {"root": (["r1", "r2"], 2)}),
                     (2, "r2,r1", {"root": (["r1", "r2"], 2)})), True),
    ChainCase("invalid signature plus a valid one at threshold 1", "8", lambda k: (
        lambda v1, doc: (v1, [v1, doc], NOW))(
        root_doc(k, 1, [k.r1]),
        (lambda d: (d["signatures"].insert(0, {"keyid": k.r2.keyid, "sig": "00" * 64}),
                    json.dumps(d).encode())[1])(json.loads(root_doc(k, 2, [k.r1])))), True),
    ChainCase("malformed signature hex", "8", _bad_sig_hex, False),
    ChainCase("signature one byte short", "8", _short_sig, False),
    ChainCase("keyid listed twice in role, threshold 2", "9", _keyid_listed_twice(2), False),
    ChainCase("keyid listed twice in role, threshold 1", "9", _keyid_listed_twice(1), False),
    ChainCase("one signature repeated", "9", _repeated_signature, False),
    ChainCase("same key under two keyids, threshold 2", "9", _same_key_two_keyids, False,
              tuf_accepts_because=STRICTER_SAME_KEY),
    ChainCase("duplicate JSON key (_type targets shadowed by root)", "11", lambda k: (
        lambda v1: (v1, [v1, _inject_duplicate(
            root_doc(k, 2, [k.r1]), '"_type": "root"', '"_type": "targets"')], NOW))(
        root_doc(k, 1, [k.r1])), False, tuf_accepts_because=STRICTER_DUPLICATE_KEY),
    ChainCase("float in signed root", "11", _float_root, False),
    ChainCase("signature over non-canonical bytes", "11", _noncanonical_signed, False),
    ChainCase("_type is not root", "11", _mutated(lambda s: s.update(_type="targets")), False),
    ChainCase("expires not in TUF form", "11",
              _mutated(lambda s: s.update(expires="2030-01-01T00:00:00+00:00")), False),
    ChainCase("expires with a trailing newline", "11",
              _mutated(lambda s: s.update(expires="2030-01-01T00:00:00Z\n")), False),
    ChainCase("spec_version with a trailing newline", "11",
              _mutated(lambda s: s.update(spec_version="1.0.31\n")), False),
    ChainCase("expires without zero padding", "11",
              _mutated(lambda s: s.update(expires="2030-1-1T0:0:0Z")), False),
    ChainCase("threshold 0", "11",
              _mutated(lambda s: s["roles"]["timestamp"].update(threshold=0)), False),
    ChainCase("role missing", "11", _mutated(lambda s: s["roles"].pop("timestamp")), False),
    ChainCase("extra role", "11", _mutated(
        lambda s: s["roles"].update(ring={"keyids": [], "threshold": 1})), False),
    ChainCase("spec_version 2.0.0", "11", _mutated(lambda s: s.update(spec_version="2.0.0")),
              False),
    ChainCase("version as string", "11", _mutated(lambda s: s.update(version="2")), False),
    ChainCase("ECDSA key present, Ed25519 threshold met", "8", lambda k: (
        lambda v1: (v1, [v1, root_doc(k, 2, [k.r1], root=([k.r1, k.ec], 1))], NOW))(
        root_doc(k, 1, [k.r1])), True),
    ChainCase("ECDSA key needed to reach the threshold", "8", lambda k: (
        lambda v1: (v1, [v1, root_doc(k, 2, [k.r1, k.ec], root=([k.r1, k.ec], 2))], NOW))(
        root_doc(k, 1, [k.r1])), True),
]


@pytest.mark.parametrize("case", CHAIN_CASES, ids=[c.name for c in CHAIN_CASES])
def test_root_chain(case: ChainCase, k: SimpleNamespace) -> None:
    trusted, chain, now = case.build(k)
    assert ours(trusted, chain, now) is case.accept


@pytest.mark.parametrize("case", CHAIN_CASES, ids=[c.name for c in CHAIN_CASES])
def test_root_chain_matches_python_tuf(case: ChainCase, k: SimpleNamespace) -> None:
    trusted, chain, now = case.build(k)
    expected_tuf = case.accept if case.tuf_accepts_because is None else True
    assert python_tuf(trusted, chain, now) is expected_tuf, case.tuf_accepts_because
    assert not (ours(trusted, chain, now) and not python_tuf(trusted, chain, now)), \
        "never accept what python-tuf rejects"


def test_update_root_messages_name_expected_and_found(k: SimpleNamespace) -> None:
    v1 = rootmeta.load_trusted_root(root_doc(k, 1, [k.r1]))
    with pytest.raises(SignatureError, match=r"next root must be v2, found v3"):
        rootmeta.update_root(v1, root_doc(k, 3, [k.r1]))
    lacks_new = root_doc(k, 2, [k.r1, k.n1], root=([k.n1, k.n2], 2))
    with pytest.raises(SignatureError, match=r"its own root keys.*needs 2.*found 1"):
        rootmeta.update_root(v1, lacks_new)
    lacks_old = root_doc(k, 2, [k.n1, k.n2], root=([k.n1, k.n2], 2))
    with pytest.raises(SignatureError, match=r"keys of trusted root v1.*needs 1.*found 0"):
        rootmeta.update_root(v1, lacks_old)
    v2 = rootmeta.update_root(v1, root_doc(k, 2, [k.r1, k.n1, k.n2], root=([k.n1, k.n2], 2)))
    assert v2.version == 2 and v2.roles["root"].threshold == 2


def test_expired_message_names_dates(k: SimpleNamespace) -> None:
    v1 = root_doc(k, 1, [k.r1], expires=NOW - DAY)
    with pytest.raises(SignatureError, match=r"root v1 expired at 2027-01-14T.*now is 2027-01"):
        rootmeta.advance_root(v1, [], NOW)


def test_intermediate_expiry_is_not_checked_by_update_root(k: SimpleNamespace) -> None:
    v1 = rootmeta.load_trusted_root(root_doc(k, 1, [k.r1], expires=NOW - YEAR))
    v2 = rootmeta.update_root(v1, root_doc(k, 2, [k.r1], expires=NOW - DAY))
    assert v2.version == 2


# --- thresholds on a parsed root (THREATS 9) ------------------------------------------------

def test_verify_threshold_counts_a_repeated_signature_once(k: SimpleNamespace) -> None:
    root = rootmeta.parse_root(root_doc(k, 1, [k.r1], targets=([k.t1, k.t2], 2)))
    payload = b"payload"
    sig = rootmeta.Signature(k.t1.keyid, bytes.fromhex(k.t1.sign(payload)))
    with pytest.raises(SignatureError, match=r"'targets' role of root v1 needs 2.*found 1"):
        rootmeta.verify_threshold(root, "targets", payload, signatures=[sig, sig, sig])
    assert rootmeta.count_valid(root, "targets", payload, signatures=[sig, sig]) == 1


def test_verify_threshold_counts_a_key_listed_twice_once(k: SimpleNamespace) -> None:
    """parse_root refuses a role listing one keyid twice (as python-tuf does); a Root built in
    code that does so still counts the key once."""
    root = rootmeta.parse_root(root_doc(k, 1, [k.r1], targets=([k.t1], 1)))
    doubled = replace(root, roles={**root.roles, "targets": rootmeta.Role(
        (k.t1.keyid, k.t1.keyid), 2)})
    payload = b"payload"
    sig = rootmeta.Signature(k.t1.keyid, bytes.fromhex(k.t1.sign(payload)))
    assert rootmeta.count_valid(doubled, "targets", payload, signatures=[sig, sig]) == 1
    with pytest.raises(SignatureError):
        rootmeta.verify_threshold(doubled, "targets", payload, signatures=[sig, sig])


def test_keyid_is_a_label_not_a_hash(k: SimpleNamespace) -> None:
    """Like python-tuf we do not recompute keyids; any label works, material is what counts."""
    label = k.t1.alias("release-key-2027")
    root = rootmeta.parse_root(root_doc(k, 1, [k.r1], targets=([label], 1)))
    sig = rootmeta.Signature(label.keyid, bytes.fromhex(label.sign(b"m")))
    rootmeta.verify_threshold(root, "targets", b"m", signatures=[sig])


# --- signed manifests -----------------------------------------------------------------------

@dataclass(frozen=True)
class ManifestCase:
    name: str
    threat: str
    targets: Callable[[SimpleNamespace], RoleSpec]
    signers: Callable[[SimpleNamespace], List[KP]]
    accept: bool
    tuf_accepts_because: Optional[str] = None


MANIFEST = canonjson.encode({"arch": "arm64", "files": [{"path": "k3s", "size": 1}],
                             "version": "v1.31.4+k3s1"})


def _alias_t1(k: SimpleNamespace) -> KP:
    return k.t1.alias("t1-alias")


MANIFEST_CASES = [
    ManifestCase("threshold met", "8", lambda k: ([k.t1, k.t2], 2), lambda k: [k.t1, k.t2],
                 True),
    ManifestCase("threshold 1 met", "8", lambda k: ([k.t1, k.t2], 1), lambda k: [k.t2], True),
    ManifestCase("unsigned", "8", lambda k: ([k.t1], 1), lambda k: [], False),
    ManifestCase("unknown key", "8", lambda k: ([k.t1], 1), lambda k: [k.x], False),
    ManifestCase("root key, not a targets key", "8", lambda k: ([k.t1], 1),
                 lambda k: [k.r1], False),
    ManifestCase("below threshold", "8", lambda k: ([k.t1, k.t2, k.t3], 2),
                 lambda k: [k.t3], False),
    ManifestCase("one signature repeated", "9", lambda k: ([k.t1, k.t2], 2),
                 lambda k: [k.t1, k.t1], False),
    ManifestCase("same key under two keyids", "9", lambda k: ([k.t1, _alias_t1(k)], 2),
                 lambda k: [k.t1, _alias_t1(k)], False, tuf_accepts_because=STRICTER_SAME_KEY),
]


def _manifest_inputs(case: ManifestCase, k: SimpleNamespace) -> Tuple[bytes, bytes]:
    root = root_doc(k, 1, [k.r1], targets=case.targets(k))
    sigs = [{"keyid": kp.keyid, "sig": kp.sign(MANIFEST)} for kp in case.signers(k)]
    return root, canonjson.encode({"signatures": sigs})


def _ours_manifest(root: bytes, sigs: bytes) -> bool:
    try:
        rootmeta.verify_signed_manifest(root, [root], MANIFEST, signatures_doc=sigs, now=NOW)
    except InstallerError:
        return False
    return True


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c.name for c in MANIFEST_CASES])
def test_manifest_signatures(case: ManifestCase, k: SimpleNamespace) -> None:
    root, sigs = _manifest_inputs(case, k)
    assert _ours_manifest(root, sigs) is case.accept


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c.name for c in MANIFEST_CASES])
def test_manifest_signatures_match_python_tuf(case: ManifestCase, k: SimpleNamespace) -> None:
    root, sigs = _manifest_inputs(case, k)
    tuf_root = Metadata[Root].from_bytes(root).signed
    signatures = {s["keyid"]: Signature(s["keyid"], s["sig"])
                  for s in json.loads(sigs)["signatures"]}
    tuf_says = bool(tuf_root.get_verification_result("targets", MANIFEST, signatures))
    assert tuf_says is (case.accept if case.tuf_accepts_because is None else True)


def test_manifest_uses_the_newest_root(k: SimpleNamespace) -> None:
    v1 = root_doc(k, 1, [k.r1], targets=([k.t1], 1))
    v2 = root_doc(k, 2, [k.r1], targets=([k.t2], 1))  # targets key rotated t1 -> t2
    by_t2 = canonjson.encode({"signatures": [{"keyid": k.t2.keyid, "sig": k.t2.sign(MANIFEST)}]})
    by_t1 = canonjson.encode({"signatures": [{"keyid": k.t1.keyid, "sig": k.t1.sign(MANIFEST)}]})
    newest = rootmeta.verify_signed_manifest(v1, [v1, v2], MANIFEST, signatures_doc=by_t2, now=NOW)
    assert newest.version == 2
    with pytest.raises(SignatureError, match="bundle manifest.*root v2"):
        rootmeta.verify_signed_manifest(v1, [v1, v2], MANIFEST, signatures_doc=by_t1, now=NOW)
    # an old bundle (old chain, revoked key) replayed to a device that already holds v2
    with pytest.raises(SignatureError, match="bundle manifest.*root v2"):
        rootmeta.verify_signed_manifest(v2, [v1], MANIFEST, signatures_doc=by_t1, now=NOW)


# --- formats (THREATS 11) -------------------------------------------------------------------

def _sigdoc(k: SimpleNamespace, manifest: bytes) -> bytes:
    return canonjson.encode({"signatures": [{"keyid": k.t1.keyid, "sig": k.t1.sign(manifest)}]})


FORMAT_CASES: List[Tuple[str, Callable[[SimpleNamespace], Tuple[bytes, bytes]]]] = [
    ("manifest with a duplicate key", lambda k: (
        lambda m: (m, _sigdoc(k, m)))(b'{"arch":"amd64","arch":"arm64"}')),
    ("manifest with a float", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"size":1.0}')),
    ("manifest with NaN", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"size":NaN}')),
    ("manifest with whitespace", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"a": 1}')),
    ("manifest with unsorted keys", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"b":1,"a":2}')),
    ("manifest with escaped ASCII", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"a":"\\u0041"}')),
    ("manifest not UTF-8", lambda k: (lambda m: (m, _sigdoc(k, m)))(b'{"a":"\xff"}')),
    ("signatures doc with whitespace", lambda k: (
        MANIFEST, json.dumps(json.loads(_sigdoc(k, MANIFEST))).encode())),
    ("signatures doc with an extra field", lambda k: (MANIFEST, canonjson.encode(
        {"signatures": [], "note": "x"}))),
    ("signatures doc entry with an extra field", lambda k: (MANIFEST, canonjson.encode(
        {"signatures": [{"keyid": k.t1.keyid, "sig": k.t1.sign(MANIFEST), "x": 1}]}))),
    ("signatures doc with a duplicate key", lambda k: (
        MANIFEST, b'{"signatures":[],"signatures":[]}')),
]


@pytest.mark.parametrize("name,build", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_format_rejected(name: str, build: Callable[[SimpleNamespace], Tuple[bytes, bytes]],
                         k: SimpleNamespace) -> None:
    root = root_doc(k, 1, [k.r1], targets=([k.t1], 1))
    manifest, sigs = build(k)
    with pytest.raises(FormatError):
        rootmeta.verify_signed_manifest(root, [root], manifest, signatures_doc=sigs, now=NOW)


@pytest.mark.parametrize("doc,match", [
    (b'{"signed":{},"signed":{},"signatures":[]}', "duplicate JSON key"),
    (b'{"signed":{"version":1.0},"signatures":[]}', "floating-point"),
    (b"[]", "JSON object"),
    (b'{"signatures":[]}', "missing 'signed'"),
])
def test_parse_root_rejects(doc: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        rootmeta.parse_root(doc)


def test_parse_root_reads_python_tuf_output(k: SimpleNamespace) -> None:
    """A root written by python-tuf's Metadata API parses and verifies unchanged."""
    root = Root(expires=datetime.fromtimestamp(NOW + YEAR, UTC))
    signer = CryptoSigner(k.r1.private, SSlibKey.from_dict(k.r1.keyid, dict(k.r1.key)))
    root.add_key(signer.public_key, "root")
    md = Metadata(root)
    md.sign(signer)
    parsed = rootmeta.load_trusted_root(md.to_bytes())
    assert parsed.version == 1 and parsed.expires == NOW + YEAR
    assert parsed.signed_bytes == md.signed_bytes
    assert parsed.keys[k.r1.keyid].public == bytes.fromhex(k.r1.key["keyval"]["public"])


def test_upper_case_signature_hex_is_rejected() -> None:
    """Hex case is outside every signature: one document must have one byte form."""
    from installer.trust.rootmeta import parse_signatures
    good = [{"keyid": "k", "sig": "ab" * 64}]
    assert parse_signatures(good, "sigs", allow_repeats=False)[0].sig == bytes.fromhex("ab" * 64)
    with pytest.raises(FormatError, match="lowercase hex"):
        parse_signatures([{"keyid": "k", "sig": "AB" * 64}], "sigs", allow_repeats=False)

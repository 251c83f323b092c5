"""A root-signed extension of expired ring metadata (THREATS 17: "rejected (freeze), unless a
signed override exists"). Pure: bytes in, explicit ``now``, no I/O.

A device far from any network may be left holding metadata that expired before a fresh copy
could reach it, while the bundles it lists are still the right ones. Expiry then freezes the
device (no install, no yank, no promotion), which is the safe default. To lift the freeze
without re-signing the rings (whose keys may be in the hands of people who are not there),
the holders of the ROOT keys, the authority that names every other key, sign
``metadata/override.json`` with ``bundle repo extend``::

    {"signed": {"_type": "x-airgap-override", "spec_version": "1.0.31", "version": 3,
                "expires": "2027-01-15T00:00:00Z", "x-airgap-issued": 1796000000,
                "reason": "site 12 cut off until the road reopens",
                "extend": [{"role": "timestamp", "version": 41, "sha256": "..."},
                           {"role": "stable", "version": 9, "sha256": "..."}]},
     "signatures": [{"keyid": "...", "sig": "..."}]}

Rules (one validation, used by the builder before it writes and by the device):

- signed by a threshold of the root role of the root the device trusts after its root update;
- each entry names one document by role, version AND sha256 of its exact bytes: an override
  extends those documents only, never a role in general, so it cannot revive anything else;
- it has its own expiry, at most ``MAX_DAYS`` after its signing time: an override is a short
  reprieve, not a way to switch expiry off;
- it never touches root expiry (a new root is the fix there), rollback, mix-and-match or any
  signature rule, which are checked exactly as without it.

Replaying an old override gains nothing: it names old documents by hash, and those are refused
as rollbacks once anything newer was seen.
"""

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from installer.errors import FormatError, SignatureError
from installer.format import canonjson
from installer.trust import rootmeta

FILE = "override.json"
TYPE = "x-airgap-override"
ISSUED = "x-airgap-issued"
MAX_DAYS = 90
MAX_REASON = 1000
MAX_ENTRIES = 64
FUTURE_SLACK = 86400
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Override:
    version: int
    expires: int
    issued: int
    reason: str
    extends: Tuple[Tuple[str, int, str], ...]   # (role, version, sha256)

    def covers(self, *, role: str, version: int, sha256: str) -> bool:
        return (role, version, sha256) in self.extends


def parse(data: bytes, root: rootmeta.Root, *, what: str = FILE) -> Override:
    """Parse ``override.json`` strictly and check the root threshold signed it; raises
    ``FormatError`` or ``SignatureError``. Its own expiry is the caller's (``usable``)."""
    signed, sigs = rootmeta.parse_envelope(data, TYPE, what=what)
    where = what + " signed"
    version = rootmeta._get(signed, "version", int, what=where)
    issued = rootmeta._get(signed, ISSUED, int, what=where)
    expires = rootmeta.parse_expires(rootmeta._get(signed, "expires", str, what=where),
                                  where + " expires")
    reason = rootmeta._get(signed, "reason", str, what=where)
    entries = rootmeta._get(signed, "extend", list, what=where)
    if version < 1 or issued < 0:
        raise FormatError(f"{where}: version must be >= 1 and {ISSUED} >= 0")
    if not 0 < expires - issued <= MAX_DAYS * 86400:
        raise FormatError(f"{where}: expires must be after {ISSUED} and at most {MAX_DAYS} "
                          "days later", hint="an override is a short reprieve; sign a new one")
    if not reason.strip() or len(reason) > MAX_REASON:
        raise FormatError(f"{where}: reason must be 1-{MAX_REASON} characters")
    if not 0 < len(entries) <= MAX_ENTRIES:
        raise FormatError(f"{where}: extend must list 1-{MAX_ENTRIES} documents")
    extends = []
    for i, entry in enumerate(entries):
        at = f"{where} extend[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"role", "version", "sha256"}:
            raise FormatError(f"{at} must be an object of exactly role, version, sha256")
        role = rootmeta._get(entry, "role", str, what=at)
        number = rootmeta._get(entry, "version", int, what=at)
        sha = rootmeta._get(entry, "sha256", str, what=at)
        if role == "root" or not role or not _SHA.fullmatch(sha) or number < 1:
            raise FormatError(f"{at}: a non-root role, a version >= 1 and a sha256 hex digest")
        extends.append((role, number, sha))
    rootmeta.verify_threshold(root, "root", canonjson.encode(signed), signatures=sigs,
                           what=f"override v{version} (needs the root keys)")
    return Override(version, expires, issued, reason, tuple(extends))


def usable(data: Optional[bytes], root: rootmeta.Root, now: int,
           *, clock: Optional[int] = None) -> Tuple[Optional[Override], str]:
    """The override in ``data`` if it is valid and unexpired at ``now``, else None and why not
    (for the expiry error the device shows). One dated more than ``FUTURE_SLACK`` after the
    device ``clock`` is refused (THREATS 48)."""
    if data is None:
        return None, ""
    try:
        found = parse(data, root)
    except (FormatError, SignatureError) as e:
        return None, f"; {FILE} is present but refused: {e.message}"
    if clock is not None and found.issued > clock + FUTURE_SLACK:
        return None, (f"; override v{found.version} is dated {rootmeta._iso(found.issued)}, "
                      f"more than 24 h after this device's clock ({rootmeta._iso(clock)})")
    if now >= found.expires:
        return None, (f"; override v{found.version} expired at {rootmeta._iso(found.expires)}")
    return found, ""


def summary(found: Override, used: Tuple[str, ...]) -> Mapping[str, Any]:
    return {"version": found.version, "expires": rootmeta._iso(found.expires),
            "reason": found.reason, "roles": list(used)}

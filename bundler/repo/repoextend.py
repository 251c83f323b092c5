"""``bundle repo extend``: a root-signed reprieve for expired ring metadata (THREATS 17).

What it signs and what a device accepts are ``installer.trust.tufoverride``'s rules; the document
is checked with that same parser against the repository's root before it is written.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey

from bundler import keys
from bundler.errors import SpecError
from bundler.repo.repostore import DAY, Repo, _iso
from installer.errors import InstallerError
from installer.format import canonjson
from installer.trust import rootmeta, tufoverride


def _documents(repo: Repo) -> dict[str, tuple[int, int, bytes]]:
    """role -> (version, expires, exact file bytes) of the current publication."""
    ts = repo.timestamp()
    snap = repo.snapshot()
    snap_version = ts.signed.snapshot_meta.version
    out = {"timestamp": (ts.signed.version, int(ts.signed.expires.timestamp()),
                         (repo.meta / "timestamp.json").read_bytes()),
           "snapshot": (snap.signed.version, int(snap.signed.expires.timestamp()),
                        (repo.meta / f"{snap_version}.snapshot.json").read_bytes())}
    for role in ["targets", *repo.rings()]:
        md = repo.targets(snap) if role == "targets" else repo.ring(role, snap)
        version = snap.signed.meta[f"{role}.json"].version
        out[role] = (md.signed.version, int(md.signed.expires.timestamp()),
                     (repo.meta / f"{version}.{role}.json").read_bytes())
    return out


def _previous_version(path: Path) -> int:
    try:
        doc = canonjson.loads_strict(path.read_bytes(), what=str(path))
        version = doc["signed"]["version"]
        return version if isinstance(version, int) and version > 0 else 0
    except FileNotFoundError:
        return 0
    except (InstallerError, KeyError, TypeError):
        return 0


def extend(*, directory: Path | str, keys_dir: Path | str, days: int, reason: str,
           roles: list[str] | None = None, passphrase_env: str | None = None,
           now: int | None = None) -> dict[str, Any]:
    """Sign ``metadata/override.json``: the named roles' current documents (default: every
    one that expires within ``days``) stay acceptable for ``days`` more days."""
    now = int(time.time()) if now is None else int(now)
    if not 1 <= days <= tufoverride.MAX_DAYS:
        raise SpecError(f"--days {days}: an override lasts 1 to {tufoverride.MAX_DAYS} days",
                        hint="refresh or re-sign the metadata for anything longer")
    if not reason.strip() or len(reason) > tufoverride.MAX_REASON:
        raise SpecError(f"--reason must say why, in 1-{tufoverride.MAX_REASON} characters")
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env).begin()
    # no roots are copied in here: a rotated root needs the re-signing `repo refresh` does
    docs = _documents(repo)
    until = now + days * DAY
    if roles:
        unknown = sorted(set(roles) - set(docs))
        if unknown:
            raise SpecError(f"no role {', '.join(unknown)} in {repo.dir}",
                            hint="roles here: " + ", ".join(docs))
        chosen = list(dict.fromkeys(roles))
    else:
        chosen = [r for r, (_, expires, _) in docs.items() if expires < until]
        if not chosen:
            raise SpecError(f"nothing in {repo.dir} expires within {days} days",
                            hint="no override is needed; name roles with --role to force one")
    path = repo.meta / tufoverride.FILE
    signed = {"_type": tufoverride.TYPE, "spec_version": "1.0.31",
              "version": _previous_version(path) + 1, "expires": _iso(until),
              tufoverride.ISSUED: now, "reason": reason,
              "extend": [{"role": r, "version": docs[r][0],
                          "sha256": hashlib.sha256(docs[r][2]).hexdigest()} for r in chosen]}
    root_md = repo.root()
    root = root_md.signed
    public = [root.keys[k] for k in root.roles["root"].keyids]
    signers = keys.signers_for_keys(repo.keys_dir, [k for k in public if isinstance(k, SSlibKey)],
                                    passphrase_env=passphrase_env)
    need = root.roles["root"].threshold
    if len(signers) < need:
        raise SpecError(f"an override needs {need} root key(s), found {len(signers)} in "
                        f"{repo.keys_dir / 'keys'}",
                        hint="bring the root keys (the override is the root holders' decision)")
    payload = canonjson.encode(signed)
    sigs = [{"keyid": s.public_key.keyid, "sig": s.sign(payload).signature} for s in signers]
    data = canonjson.encode({"signed": signed, "signatures": sigs}) + b"\n"
    anchor = (repo.meta / f"{root.version}.root.json").read_bytes()
    try:  # the device's own rules, before anything is written
        tufoverride.parse(data, rootmeta.load_trusted_root(anchor))
    except InstallerError as e:
        raise SpecError(f"the override would be refused by devices: {e.message}") from None
    repo.change.files[f"metadata/{tufoverride.FILE}"] = data
    repo.txn.commit(repo.change)
    return {"written": str(path), "version": signed["version"], "expires": signed["expires"],
            "reason": reason, "extend": signed["extend"],
            "expired_now": [r for r in chosen if docs[r][1] <= now]}

"""Which bundle a device on a ring should run (pure: entries, installed state, device id).

- Only entries for this architecture and, once something is installed, this bundle name.
- Yanked versions never run; a device running one goes back to the newest version the ring
  still lists (the one downgrade the installer accepts: a signed, newer decision says so).
- Versions recorded as failed here (the health gate rolled them back) are skipped.
- ``percent`` < 100: the device takes the entry only when a stable hash of its id and the
  bundle's manifest digest falls below it; raising the percent keeps earlier devices in.
"""

import hashlib
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Sequence, Set

from installer import policy
from installer.errors import ConfigError, InstallerError
from installer.trust.tufclient import Entry


@dataclass(frozen=True)
class Choice:
    action: str            # "install" | "downgrade" | "none"
    entry: Optional[Entry]
    reason: str


def bucket(device_id: str, digest: str) -> int:
    """0..99, stable for a device and a bundle, independent across bundles."""
    h = hashlib.sha256(f"{device_id}\n{digest}".encode()).digest()
    return int.from_bytes(h[:8], "big") % 100


def in_rollout(device_id: str, entry: Entry) -> bool:
    percent = entry.custom.get("percent", 100)
    if not isinstance(percent, int) or isinstance(percent, bool):
        return False
    return bucket(device_id, str(entry.custom.get("manifest_sha256", entry.sha256))) < percent


def _version(entry: Entry) -> str:
    return str(entry.custom.get("version", ""))


def _newest(entries: Sequence[Entry]) -> Optional[Entry]:
    best: Optional[Entry] = None
    for e in entries:
        if best is None or policy.compare_versions(_version(e), _version(best)) > 0:
            best = e
    return best


def is_yanked(yanked: Iterable[Mapping[str, object]], name: str, version: str) -> bool:
    return any(y.get("name") == name and y.get("version") == version for y in yanked)


def choose(entries: Sequence[Entry], *, arch: str, device_id: str,
           installed_name: Optional[str], installed_version: Optional[str],
           yanked: Sequence[Mapping[str, object]], failed: Iterable[str],
           ring: str) -> Choice:
    usable = _candidates(entries, arch=arch, installed_name=installed_name, yanked=yanked,
                         failed=set(failed), ring=ring)
    waiting = _newest([e for e in usable if not in_rollout(device_id, e)])
    newest = _newest([e for e in usable if in_rollout(device_id, e)])
    note = _rollout_note(waiting, newest)
    if installed_name is None or installed_version is None:
        if newest is None:
            return Choice("none", None, f"ring {ring} lists nothing for {arch} yet{note}")
        return Choice("install", newest, f"first install from ring {ring}")
    if is_yanked(yanked, installed_name, installed_version):
        return _away_from_yanked(newest, installed_name, installed_version, ring=ring)
    if newest is None:
        return Choice("none", None,
                      f"up to date: ring {ring} lists nothing newer for {arch}{note}")
    cmp = policy.compare_versions(_version(newest), installed_version)
    if cmp > 0:
        return Choice("install", newest, f"ring {ring} lists {installed_name} "
                                         f"{_version(newest)}")
    return Choice("none", None, f"up to date: {installed_name} {installed_version} "
                                f"(ring {ring} lists {_version(newest)}{note})")


def _candidates(entries: Sequence[Entry], *, arch: str, installed_name: Optional[str],
                yanked: Sequence[Mapping[str, object]], failed: Set[str],
                ring: str) -> List[Entry]:
    """The entries this device may run: its arch, well-formed, its bundle name (a first
    install needs the ring to list only one), neither yanked nor failed here."""
    usable = [e for e in entries if e.custom.get("arch") == arch
              and isinstance(e.custom.get("name"), str) and isinstance(e.custom.get("version"),
                                                                          str)]
    usable = [e for e in usable if _parses(_version(e))]  # an unparsable one is no candidate
    if installed_name is not None:
        usable = [e for e in usable if e.custom.get("name") == installed_name]
    else:
        names = sorted({str(e.custom["name"]) for e in usable})
        if len(names) > 1:
            raise ConfigError(f"ring {ring} lists several bundles for {arch}: "
                              f"{', '.join(names)}; this device runs none yet",
                              hint="install the one this device should run once by hand")
    return [e for e in usable
            if not is_yanked(yanked, str(e.custom["name"]), _version(e))
            and str(e.custom.get("manifest_sha256")) not in failed]


def _rollout_note(waiting: Optional[Entry], newest: Optional[Entry]) -> str:
    """Said when a newer release is rolling out to a part of the ring this device is not in."""
    if waiting is not None and (newest is None or policy.compare_versions(
            _version(waiting), _version(newest)) > 0):
        return (f"; {waiting.custom['name']} {_version(waiting)} is rolling out to "
                f"{waiting.custom.get('percent')}% of the ring, not to this device yet")
    return ""


def _away_from_yanked(newest: Optional[Entry], name: str, version: str, *,
                      ring: str) -> Choice:
    if newest is None:
        return Choice("none", None, f"{name} {version} is yanked from "
                                    f"ring {ring}, which lists nothing to go back to")
    cmp = policy.compare_versions(_version(newest), version)
    return Choice("downgrade" if cmp < 0 else "install", newest,
                  f"{name} {version} was yanked from ring {ring}")


def _parses(version: str) -> bool:
    try:
        policy.parse_version(version)
    except InstallerError:
        return False
    return True


DELTA_BASE = "x-airgap-delta-base"   # delta targets (bundler/repo/ringdeltas.py): base manifest
DELTA_FOR = "x-airgap-delta-for"     # ... and the full target it rebuilds


def delta_for(entries: Sequence[Entry], entry: Entry,
              base_digest: Optional[str]) -> Optional[Entry]:
    """The delta target the ring lists from the release ``base_digest`` to ``entry``."""
    if not base_digest:
        return None
    for e in entries:
        c = e.custom
        if c.get(DELTA_FOR) == entry.path and c.get(DELTA_BASE) == base_digest \
                and c.get("manifest_sha256") == entry.custom.get("manifest_sha256"):
            return e
    return None

"""Pure install policy: versions, K3s upgrade rules, architecture, role, free space, bundle
file names on a USB stick.

Every function here takes plain values and returns a decision or raises ``PolicyRefusal`` /
``ConfigError`` naming both values. Nothing here touches the disk, the clock or the host; the
caller (``preflight``, ``install``) gathers the facts and passes them in.
"""

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from installer.errors import ConfigError, EnvironmentProblem, FormatError, PolicyRefusal

# platform.machine() -> bundle arch. 32-bit ARM: K3s ships `k3s-armhf` but names images `arm`.
MACHINE_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "armv8l": "arm",  # 32-bit userland on a 64-bit core
}

# Space kept free beyond what an install needs: metadata, journals, K3s's own writes.
SPACE_MARGIN_BYTES = 64 * 1024 * 1024
SPACE_MARGIN_FRACTION = 0.02


# ---------------------------------------------------------------------------- versions

_NUM_RE = re.compile(r"^[0-9]+$")
_VERSION_RE = re.compile(r"^v?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.+-]*))?$")


def parse_version(text: str) -> Tuple[Tuple[int, ...], Tuple[Tuple[int, int, str], ...]]:
    """Parse a semver-ish version: dot-separated numbers, optional ``-pre``, ignored ``+build``.

    Returns a key for ordering: numeric components (trailing zeros stripped so ``1.2`` ==
    ``1.2.0``) and the pre-release identifiers (a release sorts after its pre-releases).
    """
    match = _VERSION_RE.match(text)
    if not match:
        raise FormatError(f"version {text[:80]!r} is not a dotted version "
                          "(expected e.g. 1.4.2 or 1.4.2-rc.1)")
    _check_digits(match.group(0), what="version")
    nums = [int(p) for p in match.group(1).split(".")]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    pre: List[Tuple[int, int, str]] = []
    if match.group(2):
        for ident in match.group(2).split("."):
            # semver: numeric identifiers sort before alphanumeric ones, numerically
            pre.append((0, int(ident), "") if _NUM_RE.match(ident) else (1, 0, ident))
    return tuple(nums), tuple(pre)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is lower than, equal to or higher than ``b`` (numeric by dots)."""
    na, pa = parse_version(a)
    nb, pb = parse_version(b)
    if na != nb:
        return -1 if na < nb else 1
    if pa == pb:
        return 0
    if not pa:
        return 1  # a release is newer than any of its pre-releases
    if not pb:
        return -1
    return -1 if pa < pb else 1


MAX_VERSION_DIGITS = 18  # per numeric component; int() of long digit strings is quadratic
_DIGITS_RE = re.compile(r"[0-9]+")


def _check_digits(text: str, *, what: str) -> None:
    longest = max((len(d) for d in _DIGITS_RE.findall(text)), default=0)
    if longest > MAX_VERSION_DIGITS:
        raise FormatError(f"{what} {text[:40]!r}... has a number of {longest} digits (at most "
                          f"{MAX_VERSION_DIGITS})")


class K3sVersion(NamedTuple):
    major: int
    minor: int
    patch: int
    revision: int  # the N of +k3sN

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}+k3s{self.revision}"


_K3S_RE = re.compile(r"^v?([0-9]+)\.([0-9]+)\.([0-9]+)(?:-[0-9A-Za-z.-]+)?(?:\+k3s([0-9]+))?$")


def parse_k3s_version(text: str) -> K3sVersion:
    """``v1.34.3+k3s1`` -> ``K3sVersion(1, 34, 3, 1)``."""
    match = _K3S_RE.match(text)
    if not match:
        raise FormatError(f"K3s version {text[:80]!r} is not like v1.34.3+k3s1")
    _check_digits(text, what="K3s version")
    return K3sVersion(int(match.group(1)), int(match.group(2)), int(match.group(3)),
                      int(match.group(4) or 0))


def check_k3s_change(installed: str, new: str, *, allow_minor_skip: bool,
                     allow_downgrade: bool) -> None:
    """Refuse a K3s minor downgrade or a skipped minor unless the bundle allows it.

    K3s upgrades one minor at a time and does not downgrade a minor (datastore migrations):
    see K3S-AIRGAP-FACTS.md "Upgrades" and https://docs.k3s.io/upgrades.
    Patch and revision changes within a minor are always allowed.
    """
    old = parse_k3s_version(installed)
    cur = parse_k3s_version(new)
    if cur.major != old.major:
        raise PolicyRefusal(
            f"K3s major version change from {installed} to {new} is not supported",
            hint="build a bundle for the same K3s major version")
    if cur.minor < old.minor and not allow_downgrade:
        raise PolicyRefusal(
            f"K3s minor downgrade: installed {installed}, bundle has {new}",
            hint="K3s cannot downgrade a minor version in place; restore a datastore snapshot "
                 f"taken on {cur.major}.{cur.minor}, or build the bundle with "
                 "upgrade.allow_k3s_downgrade")
    if cur.minor > old.minor + 1 and not allow_minor_skip:
        raise PolicyRefusal(
            f"K3s minor skip: installed {installed}, bundle has {new} "
            "(minors must go one at a time)",
            hint=f"install a bundle with K3s v{old.major}.{old.minor + 1}.x first, or build "
                 "this one with upgrade.allow_k3s_minor_skip")


class VersionDecision(NamedTuple):
    action: str  # "install" | "same"
    reason: str


def decide_bundle_version(*, installed_name: Optional[str], installed_version: Optional[str],
                          name: str, version: str, switch_name: bool = False) -> VersionDecision:
    """Lower version -> refused; equal -> nothing to do; higher or first install -> install."""
    if installed_name is None or installed_version is None:
        return VersionDecision("install", "no bundle installed yet")
    if installed_name != name:
        if not switch_name:
            raise PolicyRefusal(
                f"bundle name differs: installed {installed_name!r}, this bundle is {name!r}",
                hint=f"pass --switch-bundle to replace {installed_name!r} with {name!r} on purpose")
        return VersionDecision("install", f"switching bundle {installed_name} -> {name}")
    cmp = compare_versions(version, installed_version)
    if cmp < 0:
        raise PolicyRefusal(
            f"bundle {name} version {version} is lower than the installed version "
            f"{installed_version}",
            hint=f"install {name} {installed_version} or newer; to go back use "
                 "`airgap-install rollback`")
    if cmp == 0:
        return VersionDecision("same", f"{name} {version} is already installed")
    return VersionDecision("install", f"upgrade {name} {installed_version} -> {version}")


# ---------------------------------------------------------------------------- host


def machine_to_arch(machine: str) -> str:
    """Map ``platform.machine()`` to a bundle architecture."""
    arch = MACHINE_ARCH.get(machine.lower())
    if arch is None:
        raise EnvironmentProblem(
            f"this host's machine type {machine!r} has no K3s bundle architecture "
            f"(known: {', '.join(sorted(MACHINE_ARCH))})",
            hint="K3s bundles exist for amd64, arm64 and arm")
    return arch


def check_arch(bundle_arch: str, host_arch: str, *, bundle: str) -> None:
    if bundle_arch != host_arch:
        raise PolicyRefusal(
            f"{bundle} is built for architecture {bundle_arch}, this host is {host_arch}",
            hint=f"use the {host_arch} bundle (file name ends in -{host_arch}.tar)")


def choose_role(*, asked: Optional[str], installed: Optional[str],
                bundle_roles: Sequence[str], bundle: str) -> str:
    """The role to install: asked, else the installed one, else the bundle's only role."""
    role = asked or installed
    if role is None:
        if len(bundle_roles) == 1:
            role = bundle_roles[0]
        else:
            raise ConfigError(f"{bundle} can be installed as {' or '.join(bundle_roles)}: "
                              "say which",
                              hint="pass --server, or --agent --url URL --token-file FILE")
    if role not in bundle_roles:
        raise PolicyRefusal(
            f"{bundle} is built for role {', '.join(bundle_roles) or '(none)'}, asked to "
            f"install role {role}",
            hint=f"use a bundle built for the {role} role")
    return role


# ---------------------------------------------------------------------------- free space


class Shortfall(NamedTuple):
    where: str      # a path on the filesystem that lacks space
    needed: int     # bytes needed including the margin
    free: int       # bytes available to us


def space_shortfalls(needs: Dict[str, int], free: Dict[str, int],
                     where: Dict[str, str]) -> List[Shortfall]:
    """Compare per-filesystem needs (bytes) with free bytes; keyed by filesystem id.

    Each filesystem must keep ``SPACE_MARGIN_BYTES`` or ``SPACE_MARGIN_FRACTION`` of the need,
    whichever is larger, free after the install.
    """
    short = []
    for fs, need in sorted(needs.items()):
        if need <= 0:
            continue
        total = need + max(SPACE_MARGIN_BYTES, int(need * SPACE_MARGIN_FRACTION))
        if free.get(fs, 0) < total:
            short.append(Shortfall(where.get(fs, fs), total, free.get(fs, 0)))
    return short


def check_space(shortfalls: Sequence[Shortfall], *, bundle: str) -> None:
    if shortfalls:
        parts = [f"{s.where} needs {human_bytes(s.needed)}, has {human_bytes(s.free)} free"
                 for s in shortfalls]
        raise EnvironmentProblem(
            "not enough free space to install {}: {}".format(bundle, "; ".join(parts)),
            hint="free space there (old images, logs) and retry; nothing was written")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------- USB folders

_BUNDLE_FILE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._+-]*?)"
    r"-(?P<version>[0-9]+(?:\.[0-9]+)+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)"
    r"-(?P<arch>amd64|arm64|arm)\.tar$")


class BundleFile(NamedTuple):
    file: str
    name: str
    version: str
    arch: str


def parse_bundle_filename(file: str) -> Optional[BundleFile]:
    """``edge-1.4.2-arm64.tar`` -> BundleFile; None for anything else on the stick."""
    match = _BUNDLE_FILE_RE.match(file)
    if not match:
        return None
    try:
        parse_version(match.group("version"))
    except FormatError:
        return None
    return BundleFile(file, match.group("name"), match.group("version"), match.group("arch"))


def pick_bundle(files: Sequence[str], arch: str, *, folder: str) -> BundleFile:
    """Choose the newest bundle for ``arch`` among file names; refuse ambiguity."""
    bundles = [b for b in (parse_bundle_filename(f) for f in sorted(files)) if b is not None]
    mine = [b for b in bundles if b.arch == arch]
    if not mine:
        others = sorted({b.arch for b in bundles})
        raise ConfigError(
            "no bundle for architecture {} in {}{}".format(
                arch, folder,
                " (found only: {})".format(", ".join(others)) if others else
                " (no <name>-<version>-<arch>.tar files)"),
            hint=f"copy the {arch} bundle onto the medium")
    names = sorted({b.name for b in mine})
    if len(names) > 1:
        raise ConfigError(
            "several bundles for {} in {}: {}".format(
                arch, folder, ", ".join(b.file for b in mine)),
            hint=f"pass the bundle file itself: airgap-install install {folder}/<file>")
    newest = mine[0]
    for b in mine[1:]:
        if compare_versions(b.version, newest.version) > 0:
            newest = b
    return newest

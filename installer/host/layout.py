"""Where things live under the install root, and where each bundle member goes (pure).

::

    <root>/etc/rancher/airgap/root.json          pinned trust anchor (advances via signed chain)
    <root>/var/lib/rancher/airgap/
        install.lock                             flock: one run at a time
        state.json, state.json.bak               two copies of the installed state
        journal.json                             only while a change is in flight
        staging/<tx>/                            verified copy of the bundle being installed
        txn/<tx>/                                backups of files a change replaces
        releases/<manifest sha256>/              current and previous release, by bundle path
    <root>/usr/local/bin/k3s                     K3s binary (0755)
    <root>/var/lib/rancher/k3s/agent/images/     image archives, named by content; .cache.json
    <root>/var/lib/rancher/k3s/server/static/charts/   chart archives (server role)
    <root>/var/lib/rancher/k3s/server/manifests/       manifests (server role)
    <root>/etc/rancher/k3s/config.yaml.d/50-airgap-bundle.yaml   the bundle's K3s config drop-in
    <root>/etc/rancher/k3s/registries.yaml       the bundle's registries.yaml (when it has one)
    <root>/etc/rancher/k3s/registries.yaml.airgap-backup   a hand-written one it replaced
"""

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

from installer.errors import FormatError, UnsafeMember
from installer.format import bundlefmt
from installer.format.bundlefmt import Manifest, Member
from installer.host import rootfs

BIN_DIR = "usr/local/bin"
K3S_TARGET = BIN_DIR + "/k3s"
IMAGES_DIR = "var/lib/rancher/k3s/agent/images"
CHARTS_DIR = "var/lib/rancher/k3s/server/static/charts"
MANIFESTS_DIR = "var/lib/rancher/k3s/server/manifests"
K3S_ETC_DIR = "etc/rancher/k3s"
K3S_DROPIN_DIR = K3S_ETC_DIR + "/config.yaml.d"
# K3s reads config.yaml, then config.yaml.d/*.yaml in name order; the operator's config.yaml is
# never touched. registries.yaml has no drop-ins: a bundle with mirrors owns it, and a
# hand-written one found there is kept beside it (place.apply) and put back when a release
# without mirrors replaces it.
K3S_DROPIN_TARGET = K3S_DROPIN_DIR + "/" + bundlefmt.K3S_CONFIG_PATH.split("/", 1)[1]
REGISTRIES_TARGET = K3S_ETC_DIR + "/registries.yaml"
REGISTRIES_KEPT = REGISTRIES_TARGET + ".airgap-backup"
# An operator's own file at a path a bundle places (THREATS 51) is kept aside under this name
# while a release owns the path and put back when one that does not replaces it. The drop-in's
# kept name does not end in .yaml, so K3s does not read it meanwhile.
K3S_DROPIN_KEPT = K3S_DROPIN_TARGET + ".airgap-backup"
KEPT_ASIDE = {REGISTRIES_TARGET: (REGISTRIES_KEPT, "registry mirrors"),
              K3S_DROPIN_TARGET: (K3S_DROPIN_KEPT, "a K3s config drop-in")}
AIRGAP_DIR = "var/lib/rancher/airgap"
TRUST_DIR = "etc/rancher/airgap"

# Temp names in live folders are dotfiles: K3s ignores dotfiles in agent/images.
LIVE_TMP_PREFIX = ".airgap-tmp-"

# kind -> (folder under the root, placed for these roles)
_KIND_DEST = {
    "images": (IMAGES_DIR, ("server", "agent")),
    "chart": (CHARTS_DIR, ("server",)),
    "manifest": (MANIFESTS_DIR, ("server",)),
}
# kind -> (live path, placed for these roles): K3s servers and agents both read them
_FIXED_DEST = {
    "k3s-config": (K3S_DROPIN_TARGET, ("server", "agent")),
    "registries": (REGISTRIES_TARGET, ("server", "agent")),
}
MANAGED_DIRS = (BIN_DIR, IMAGES_DIR, CHARTS_DIR, MANIFESTS_DIR, K3S_DROPIN_DIR, K3S_ETC_DIR)
# a release id is the sha256 of its signed manifest; a transaction id is txn.new_tx()'s
_RELEASE_RE = re.compile(r"^[0-9a-f]{64}$")
_TX_RE = re.compile(r"^[0-9a-f]{16}$")


def check_release_id(digest: str) -> None:
    """A release folder name must be a manifest sha256 (it becomes a path under the root)."""
    if not isinstance(digest, str) or not _RELEASE_RE.match(digest):
        raise FormatError(f"release id {digest!r} is not a manifest sha256")


@dataclass(frozen=True)
class Target:
    """One file a release places: where (relative to the root) and what (bundle member)."""

    target: str
    member: str
    sha256: str
    size: int
    mode: int

    def to_json(self) -> Dict[str, object]:
        return {"target": self.target, "member": self.member, "sha256": self.sha256,
                "size": self.size, "mode": self.mode}


# Archive extensions K3s imports from agent/images (longest first: ".tar.zst" before ".tar").
# https://github.com/k3s-io/k3s/blob/master/pkg/agent/containerd/watcher.go (isFileSupported,
# wharfie's tarfile.SupportedExtensions)
ARCHIVE_EXTENSIONS = (".tar.zst", ".tar.gz", ".tar.bz2", ".tar.lz4", ".tzst", ".tgz", ".tbz",
                      ".tar")
DIGEST_NAME_LEN = 12


def image_archive_name(member_name: str, sha256: str) -> str:
    """The live name of an image archive: its bundle name with the first 12 hex digits of its
    signed sha256 before the extension (``edge-images-amd64.tar.zst`` ->
    ``edge-images-amd64-3f2a9c1b0d4e.tar.zst``). A replaced archive is thus always a new file,
    which K3s imports whatever its size and mtime (its import cache keys on those, and 1.34.3
    misses a same-size replacement: k3s-io/k3s#14284); an unchanged one keeps its name."""
    for ext in ARCHIVE_EXTENSIONS:
        if member_name.endswith(ext) and len(member_name) > len(ext):
            stem = member_name[:-len(ext)]
            break
    else:  # not an archive K3s imports (e.g. a .txt pre-pull list): keep its extension too
        stem, ext = os.path.splitext(member_name)
    return f"{stem}-{sha256[:DIGEST_NAME_LEN]}{ext}"


def targets_for(members: Sequence[Member], role: str) -> List[Target]:
    """Map bundle members to live paths. install.sh is run from the release copy, not placed;
    charts and manifests only matter to servers (agents never apply them); image archives are
    named by content (``image_archive_name``)."""
    out = []
    for m in members:
        if m.kind == "k3s-binary":
            out.append(Target(K3S_TARGET, m.path, m.sha256, m.size, 0o755))
        elif m.kind in _KIND_DEST:
            folder, roles = _KIND_DEST[m.kind]
            if role in roles:
                name = m.path.split("/", 1)[1]
                if m.kind == "images":
                    name = image_archive_name(name, m.sha256)
                out.append(Target(folder + "/" + name, m.path, m.sha256, m.size, m.mode))
        elif m.kind in _FIXED_DEST:
            dest, roles = _FIXED_DEST[m.kind]
            if role in roles:
                out.append(Target(dest, m.path, m.sha256, m.size, m.mode))
    return out


def touched_paths(new: Sequence[Target], old: Sequence[Target]) -> List[str]:
    """Every live path a change from ``old`` to ``new`` touches: the new release's, the old
    one's leftovers, and the kept-aside name of an operator's file (``KEPT_ASIDE``) when either
    owns that path."""
    seen = [t.target for t in new]
    seen += [t.target for t in old if t.target not in set(seen)]
    seen += [kept for target, (kept, _) in KEPT_ASIDE.items() if target in seen]
    return seen


def _kind_of(t: Target) -> str:
    if t.target == K3S_TARGET:
        return "k3s-binary"
    for kind, path in bundlefmt.FIXED_PATHS.items():
        if t.member == path:
            return kind
    for kind, prefix in bundlefmt.KIND_PREFIX.items():
        if kind not in ("k3s-binary", "install-script") and t.member.startswith(prefix):
            return kind
    return "unknown"


def check_release_targets(*, arch: str, role: str, targets: Sequence[Target],
                          script: Target, version: str = "0",
                          k3s_version: str = "v0.0.0+k3s1") -> None:
    """A release read back from the state or journal (THREATS 34) is validated exactly as a
    manifest is: its files must form a valid manifest (``bundlefmt.validate_manifest``: safe
    member paths, kinds, modes, sha256 form, no duplicates) and its live paths must be
    exactly what ``targets_for`` maps those members to for this role. Nothing else is
    accepted, so an edited ``target`` (absolute, ``../``) is refused before any use."""
    if role not in bundlefmt.ROLES:
        raise FormatError(f"unknown role {role!r}")
    if script.target != "":
        raise FormatError(f"install.sh has a live target {script.target!r}; it is never placed")
    members = [Member(t.member, t.size, t.sha256, t.mode, _kind_of(t)) for t in targets]
    script_member = Member(script.member, script.size, script.sha256, script.mode,
                           "install-script")
    bundlefmt.validate_manifest(Manifest(
        name="state", version=version, arch=arch, k3s_version=k3s_version, roles=(role,),
        lock_digest="sha256:" + "0" * 64,
        created=0, members=tuple(members) + (script_member,)))
    expected = targets_for(members, role)
    if list(targets) != expected:
        bad = [repr(t.target) for t in targets if t not in expected] or ["(files missing)"]
        raise UnsafeMember("live paths {} are not where this installer places those files"
                           .format(", ".join(bad)))


@dataclass(frozen=True)
class Layout:
    """Every path under the install root, resolved as a chroot at ``root`` would
    (``rootfs.resolve``): symlinks inside the root never lead outside it."""

    root: str

    def path(self, rel: str, *, follow: bool = False) -> str:
        """``rel`` under the root; the last component is not followed unless ``follow``
        (an entry to lstat, replace or remove, versus a file to open or a folder to list)."""
        return rootfs.resolve(self.root, rel, follow=follow)

    def _file(self, rel: str) -> str:
        return rootfs.resolve(self.root, rel, follow=True)

    @property
    def airgap(self) -> str:
        return self._file(AIRGAP_DIR)

    @property
    def trust_anchor(self) -> str:
        return self._file(TRUST_DIR + "/root.json")

    @property
    def lock(self) -> str:
        return self._file(AIRGAP_DIR + "/install.lock")

    @property
    def state(self) -> str:
        return self._file(AIRGAP_DIR + "/state.json")

    @property
    def state_bak(self) -> str:
        return self._file(AIRGAP_DIR + "/state.json.bak")

    @property
    def journal(self) -> str:
        return self._file(AIRGAP_DIR + "/journal.json")

    @property
    def staging(self) -> str:
        return self._file(AIRGAP_DIR + "/staging")

    @property
    def txn(self) -> str:
        return self._file(AIRGAP_DIR + "/txn")

    @property
    def releases(self) -> str:
        return self._file(AIRGAP_DIR + "/releases")

    def release_dir(self, digest: str) -> str:
        check_release_id(digest)
        return self._file(AIRGAP_DIR + "/releases/" + digest)

    def release_file(self, digest: str, member: str) -> str:
        """A verified file kept in ``releases/<digest>/`` (``member`` is a bundle path)."""
        check_release_id(digest)
        return self._file(AIRGAP_DIR + "/releases/" + digest + "/" + member)

    def tx_dir(self, tx: str) -> str:
        if not _TX_RE.match(tx):
            raise FormatError(f"transaction id {tx!r} is not one this installer writes")
        return self._file(AIRGAP_DIR + "/txn/" + tx)

    @property
    def bin_dir(self) -> str:
        return self._file(BIN_DIR)

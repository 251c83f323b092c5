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
    <root>/var/lib/rancher/k3s/agent/images/     image archives (exactly the current bundle's)
    <root>/var/lib/rancher/k3s/server/static/charts/   chart archives (server role)
    <root>/var/lib/rancher/k3s/server/manifests/       manifests (server role)
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

from .bundlefmt import Member

BIN_DIR = "usr/local/bin"
K3S_TARGET = BIN_DIR + "/k3s"
IMAGES_DIR = "var/lib/rancher/k3s/agent/images"
CHARTS_DIR = "var/lib/rancher/k3s/server/static/charts"
MANIFESTS_DIR = "var/lib/rancher/k3s/server/manifests"
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
MANAGED_DIRS = (BIN_DIR, IMAGES_DIR, CHARTS_DIR, MANIFESTS_DIR)


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


def targets_for(members: Sequence[Member], role: str) -> List[Target]:
    """Map bundle members to live paths. install.sh is run from the release copy, not placed;
    charts and manifests only matter to servers (agents never apply them)."""
    out = []
    for m in members:
        if m.kind == "k3s-binary":
            out.append(Target(K3S_TARGET, m.path, m.sha256, m.size, 0o755))
        elif m.kind in _KIND_DEST:
            folder, roles = _KIND_DEST[m.kind]
            if role in roles:
                name = m.path.split("/", 1)[1]
                out.append(Target(folder + "/" + name, m.path, m.sha256, m.size, m.mode))
    return out


@dataclass(frozen=True)
class Layout:
    root: str

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    @property
    def airgap(self) -> str:
        return self.path(AIRGAP_DIR)

    @property
    def trust_anchor(self) -> str:
        return self.path(TRUST_DIR + "/root.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.airgap, "install.lock")

    @property
    def state(self) -> str:
        return os.path.join(self.airgap, "state.json")

    @property
    def state_bak(self) -> str:
        return os.path.join(self.airgap, "state.json.bak")

    @property
    def journal(self) -> str:
        return os.path.join(self.airgap, "journal.json")

    @property
    def staging(self) -> str:
        return os.path.join(self.airgap, "staging")

    @property
    def txn(self) -> str:
        return os.path.join(self.airgap, "txn")

    @property
    def releases(self) -> str:
        return os.path.join(self.airgap, "releases")

    def release_dir(self, digest: str) -> str:
        return os.path.join(self.releases, digest)

    @property
    def bin_dir(self) -> str:
        return self.path(BIN_DIR)

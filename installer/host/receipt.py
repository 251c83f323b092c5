"""``airgap-install receipt``: what this host holds, as a small canonical JSON document that
travels back to the build desk (``bundle build --delta-from RECEIPT``).

Signed by nobody: it only tells the builder which members to leave out of a delta. A wrong
receipt cannot make a device install anything else, because the device checks every member
of the delta's result against the delta's signed manifest, and the delta names the exact base
(manifest sha256) it needs; a receipt that lies gives a delta the device refuses.

Format ``k3s-airgap-receipt/v1`` (docs/bundle-format.md): ``bundle`` (name, version, arch,
digest = sha256 of the installed signed manifest), ``k3s_version``, ``role`` and ``members``:
every payload member of the installed release (path, kind, size, sha256), as its verified copy
in ``releases/<digest>/`` holds it. One function parses it for both sides (``parse``).
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Set, Tuple

from installer.errors import ConfigError, FormatError
from installer.format import bundlefmt, canonjson
from installer.fsio import open_regular
from installer.host.layout import Layout
from installer.host.state import load_state

FORMAT = "k3s-airgap-receipt/v1"
MAX_RECEIPT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    name: str
    version: str
    arch: str
    digest: str               # sha256 of the installed release's signed manifest bytes
    k3s_version: str
    role: str
    members: Tuple[bundlefmt.Member, ...]
    # images archive path -> its blobs (sha256 hex, data offset, size), for blob deltas
    blobs: Tuple[Tuple[str, Tuple[Tuple[str, int, int], ...]], ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT,
                "bundle": {"name": self.name, "version": self.version, "arch": self.arch,
                           "digest": self.digest},
                "k3s_version": self.k3s_version, "role": self.role,
                "members": [{"path": m.path, "kind": m.kind, "size": m.size,
                             "sha256": m.sha256} for m in self.members],
                "blobs": {p: [list(b) for b in bl] for p, bl in self.blobs}}

    def to_bytes(self) -> bytes:
        return canonjson.encode(self.to_json())

    @staticmethod
    def text(doc: Dict[str, Any]) -> str:
        """The receipt as printed on stdout (its canonical bytes; ``parse`` takes them with
        the newline ``print`` adds)."""
        return canonjson.encode(doc).decode()


def _get(d: Any, key: str, typ: Any) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise FormatError(f"receipt: {key!r} is missing",
                          hint="write it again with `airgap-install receipt` on the device")
    value = d[key]
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise FormatError(f"receipt: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _members(listed: List[Any]) -> List[bundlefmt.Member]:
    members = []
    for m in listed:
        member = bundlefmt.Member(path=_get(m, "path", str), size=_get(m, "size", int),
                                  sha256=_get(m, "sha256", str), mode=0o644,
                                  kind=_get(m, "kind", str))
        bundlefmt.check_member_path(member.path, member.kind)
        if not bundlefmt.SHA256_HEX.match(member.sha256) or member.size < 0:
            raise FormatError(f"receipt: member {member.path!r} has a bad sha256 or size")
        members.append(member)
    return members


def _blob_ok(blob: Any) -> bool:
    return (isinstance(blob, list) and len(blob) == 3 and isinstance(blob[0], str)
            and bundlefmt.SHA256_HEX.match(blob[0]) is not None
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                    for x in blob[1:]))


def _blobs(doc: Dict[str, Any], paths: Set[str]
           ) -> List[Tuple[str, Tuple[Tuple[str, int, int], ...]]]:
    blobs = []
    for path, listed in sorted(doc.items()):
        if path not in paths or not isinstance(listed, list):
            raise FormatError(f"receipt: blobs of {path!r}, which it does not list")
        for blob in listed:
            if not _blob_ok(blob):
                raise FormatError(f"receipt: a blob entry of {path!r} is malformed")
        blobs.append((path, tuple((x[0], x[1], x[2]) for x in listed)))
    return blobs


def parse(data: bytes) -> Receipt:
    """Parse and validate receipt bytes (canonical JSON); raises FormatError."""
    if data.endswith(b"\n"):  # as `airgap-install receipt > FILE` writes it
        data = data[:-1]
    doc = canonjson.loads_canonical(data, what="receipt")
    if _get(doc, "format", str) != FORMAT:
        raise FormatError(f"receipt format {doc.get('format')!r} is not {FORMAT}")
    b = _get(doc, "bundle", dict)
    members = _members(_get(doc, "members", list))
    blobs = _blobs(_get(doc, "blobs", dict), {m.path for m in members})
    receipt = Receipt(name=_get(b, "name", str), version=_get(b, "version", str),
                      arch=_get(b, "arch", str), digest=_get(b, "digest", str),
                      k3s_version=_get(doc, "k3s_version", str), role=_get(doc, "role", str),
                      members=tuple(members), blobs=tuple(blobs))
    if not bundlefmt.SHA256_HEX.match(receipt.digest):
        raise FormatError("receipt: bundle.digest is not a manifest sha256")
    if receipt.arch not in bundlefmt.ARCHES:
        raise FormatError(f"receipt: unknown arch {receipt.arch!r}")
    if receipt.to_bytes() != data:
        raise FormatError("receipt holds fields this version does not know")
    return receipt


def of_host(layout: Layout) -> Receipt:
    """The receipt of the current release, from its kept, verified manifest."""
    state, _ = load_state(layout)
    cur = state.current
    if cur is None:
        raise ConfigError("nothing is installed on this host: there is no receipt to write",
                          hint="install a full bundle first; `airgap-install status` shows "
                               "what is installed")
    path = layout.release_file(cur.digest, bundlefmt.MANIFEST_NAME)
    try:
        with open_regular(path, what="kept manifest", must_exist=False) as f:
            data = f.read(bundlefmt.MAX_HEADER_MEMBER + 1)
    except OSError as e:
        raise ConfigError(f"cannot read the kept manifest {path}: {e.strerror}",
                          hint="run `airgap-install install` of the installed bundle again "
                               "to repair the kept release") from None
    if hashlib.sha256(data).hexdigest() != cur.digest:
        raise FormatError(f"the kept manifest {path} is not the installed one "
                          f"({cur.digest[:16]})",
                          hint="run `airgap-install install` of the installed bundle again "
                               "to repair the kept release")
    m = bundlefmt.parse_manifest(data)
    from installer.host.delta import archive_blobs
    blobs = []
    for member in m.members:
        if member.kind == "images" and member.path.endswith(".tar"):
            kept = layout.release_file(cur.digest, member.path)
            try:
                with open_regular(kept, what="kept file", must_exist=False) as f:
                    found = archive_blobs(f, start=0, size=member.size, what=kept)
            except (OSError, FormatError, ConfigError):
                continue  # not an OCI layout we can index: it travels whole if it changes
            blobs.append((member.path, tuple(found)))
    return Receipt(name=m.name, version=m.version, arch=m.arch, digest=cur.digest,
                   k3s_version=m.k3s_version, role=cur.role, members=m.members,
                   blobs=tuple(blobs))


def write(layout: Layout, out: str) -> Dict[str, Any]:
    """Write the receipt to ``out`` (``-``: return it only); returns a summary."""
    from installer.fsio import write_verified
    receipt = of_host(layout)
    data = receipt.to_bytes()
    if out != "-":
        try:
            write_verified(os.path.abspath(out), [data])
        except OSError as e:
            raise ConfigError(f"cannot write the receipt {out}: {e.strerror}") from None
    return {"receipt": out, "bytes": len(data), "name": receipt.name,
            "version": receipt.version, "arch": receipt.arch, "digest": receipt.digest,
            "members": len(receipt.members), "document": receipt.to_json()}

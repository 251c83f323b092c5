"""`bundle inspect` as one library call: :func:`describe` reads what a bundle holds from its
header (plus its SBOM and K3s configuration members), without verifying or extracting
anything, and :class:`Description` renders it."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.assemble.parts import is_parts, reassembled
from bundler.assemble.sbom import SBOM_PATH, summary
from bundler.spec.specfiles import secret_warnings
from installer.errors import InstallerError
from installer.format.bundlefmt import FIXED_PATHS, BundleReader, Delta, Manifest, Member
from installer.format.canonjson import loads_strict
from installer.format.envelope import read_member
from installer.host.layout import targets_for
from installer.policy import human_bytes
from installer.trust import rootmeta


@dataclass(frozen=True)
class Description:
    """What `bundle inspect` shows: the ``--json`` document, the SBOM bytes (None when
    absent or unreadable) and warnings about member names that look like secrets."""

    doc: dict[str, Any]
    sbom: bytes | None
    warnings: list[str]

    def text(self) -> list[str]:
        return _text(self.doc)


def describe(file: Path) -> Description:
    """Describe the bundle at ``file``, a delta, or a folder of split parts (or its
    ``.parts.json`` index: reassembled in ``$TMPDIR`` first, removed afterwards)."""
    shown = file
    with ExitStack() as stack:
        if is_parts(file):
            file = stack.enter_context(reassembled(file, anchor=None))[0]
        with open(file, "rb") as f:
            reader = BundleReader(f, what=str(file), delta_ok=True)
            header = reader.header()
        size = os.stat(file).st_size
        m = header.manifest
        delta = _delta_info(reader.delta, m, size)
        sigs = loads_strict(header.signatures, what="signatures").get("signatures", [])
        sbom_member = next((mem for mem in m.members if mem.path == SBOM_PATH), None)
        sbom_bytes = _carried(file, sbom_member, delta) if sbom_member else None
        k3s_config = _k3s_config(file, m, delta)
    bom = summary(json.loads(sbom_bytes)) if sbom_bytes else None
    doc = {**m.to_json(), "file": str(shown), "size": size, "signatures": len(sigs),
           **root_chain_info(header.roots), "sbom": bom, "delta": delta,
           "k3s_config": k3s_config}
    return Description(doc, sbom_bytes, secret_warnings(mem.path for mem in m.members))


def root_chain_info(roots: tuple[bytes, ...]) -> dict[str, Any]:
    """Versions and fingerprints of a bundle's shipped root chain (newest last); a chain
    that does not parse is reported, not raised: inspect verifies nothing."""
    chain = []
    for n, data in enumerate(roots, start=1):
        try:
            root = rootmeta.parse_root(data, what=f"roots/{n}.root.json")
            chain.append({"version": root.version, "fingerprint": rootmeta.root_fingerprint(root)})
        except InstallerError as e:
            chain.append({"version": n, "fingerprint": None, "error": e.message})
    return {"root_chain": len(roots), "roots": chain,
            "root_fingerprint": chain[-1]["fingerprint"] if chain else None}


def _carried(file: Path, mem: Member, delta: dict[str, Any] | None) -> bytes | None:
    """A small member's bytes, only if they match the manifest's sha256 and size; None when
    a delta does not carry it, or it is absent or damaged."""
    if delta is not None and mem.path not in delta["carried_paths"]:
        return None
    data = read_member(str(file), mem.path)
    if data is None or len(data) != mem.size or hashlib.sha256(data).hexdigest() != mem.sha256:
        return None
    return data


def _k3s_config(file: Path, m: Manifest, delta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The K3s configuration members: where each goes on a device and its text."""
    out = []
    for mem in m.members:
        if mem.kind not in FIXED_PATHS:
            continue
        data = _carried(file, mem, delta)
        target = targets_for([mem], "server")[0].target
        out.append({"member": mem.path, "kind": mem.kind, "target": "/" + target,
                    "what": "k3s config drop-in" if mem.kind == "k3s-config"
                    else "registries.yaml",
                    "text": data.decode("utf-8", "replace") if data is not None else None})
    return out


def _delta_info(delta: Delta | None, m: Manifest, size: int) -> dict[str, Any] | None:
    """A delta bundle's base and what it saves over sending the full bundle."""
    if delta is None:
        return None
    carried = set(delta.carried)
    carried_bytes = sum(x.size for x in m.members if x.path in carried)
    return {"base": delta.base_digest, "base_name": delta.base_name,
            "base_version": delta.base_version, "carried": len(carried),
            "carried_paths": list(delta.carried), "carried_bytes": carried_bytes,
            "saved_bytes": m.payload_size - carried_bytes, "delta_size": size}


def _text(d: dict[str, Any]) -> list[str]:
    """The human summary of a description document."""
    w = [f"{d['file']}: bundle {d['name']} {d['version']} for {d['arch']}, "
         f"K3s {d['k3s']['version']}",
         f"  roles: {', '.join(d['roles'])}; lock {d['lock_digest']}"]
    members = d["members"]
    payload = sum(mem["size"] for mem in members)
    delta = d["delta"]
    if delta:
        w.append(f"  DELTA over {delta['base_name']} {delta['base_version']} (manifest "
                 f"{delta['base']}): carries {delta['carried']} of {len(members)} members, "
                 f"{human_bytes(delta['carried_bytes'])} of {human_bytes(payload)}; saves "
                 f"{human_bytes(delta['saved_bytes'])}")
    newest = d["roots"][-1] if d["roots"] else None
    root_text = (f"v{newest['version']} fingerprint {newest['fingerprint']}" if newest
                 else "none")
    sigs = d["signatures"]
    w.append(f"  signatures: {sigs}{' (UNSIGNED)' if not sigs else ''}; root chain: "
             f"{d['root_chain']} version(s), newest {root_text}")
    w.append(f"  images ({len(d['images'])}):")
    w += [f"    {i['ref']}  {i['digest']}" for i in d["images"]]
    w.append(f"  charts ({len(d['charts'])}):")
    w += [f"    {ch['name']} {ch['version']} -> namespace {ch['namespace']}" for ch in d["charts"]]
    w += _config_text(d["k3s_config"])
    bom = d["sbom"]
    if bom:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(bom["components"].items()))
        w.append(f"  sbom: {bom['format']} at {SBOM_PATH}, components: {counts} "
                 "(`bundle inspect --sbom` prints it)")
    else:
        w.append("  sbom: none")
    w.append(f"  members ({len(members)}, {human_bytes(payload)}):")
    w += [f"    {mem['mode']:04o} {mem['size']:>12} {mem['sha256']}  {mem['path']}"
          for mem in members]
    return w


def _config_text(k3s_config: list[dict[str, Any]]) -> list[str]:
    if not k3s_config:
        return ["  k3s config: none (K3s runs with the host's own config.yaml and "
                "registries.yaml)"]
    w = []
    for item in k3s_config:
        w.append(f"  {item['what']} -> {item['target']}:")
        text = item["text"] if item["text"] is not None else \
            "(not readable here: not carried by this delta, or damaged)"
        w += [f"    {line}" for line in text.splitlines()]
    return w

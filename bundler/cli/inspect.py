"""`bundle inspect`: what a bundle holds, from its header (plus its SBOM member), without
verifying or extracting anything."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import click

from bundler.cli.context import CONTEXT
from installer.policy import human_bytes


def root_chain_info(roots: tuple[bytes, ...]) -> dict[str, Any]:
    """Versions and fingerprints of a bundle's shipped root chain (newest last); a chain
    that does not parse is reported, not raised: inspect verifies nothing."""
    from installer.errors import InstallerError
    from installer.trust import rootmeta
    chain = []
    for n, data in enumerate(roots, start=1):
        try:
            root = rootmeta.parse_root(data, what=f"roots/{n}.root.json")
            chain.append({"version": root.version, "fingerprint": rootmeta.root_fingerprint(root)})
        except InstallerError as e:
            chain.append({"version": n, "fingerprint": None, "error": e.message})
    return {"root_chain": len(roots), "roots": chain,
            "root_fingerprint": chain[-1]["fingerprint"] if chain else None}


def read_member(file: Path, member: Any) -> bytes | None:
    """A small member's bytes (the SBOM, the K3s configuration), found by seeking over tar
    headers (a multi-GB bundle is not read through), and only if they match the manifest's
    sha256 and size."""
    import hashlib
    try:
        with tarfile.open(file, "r:") as tar:
            f = tar.extractfile(member.path)
            data = f.read(member.size + 1) if f is not None else b""
    except (tarfile.TarError, KeyError, OSError):
        return None
    if len(data) != member.size or hashlib.sha256(data).hexdigest() != member.sha256:
        return None
    return data


@click.command("inspect", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path, exists=True))
@click.option("--sbom", "show_sbom", is_flag=True,
              help="Print the bundle's CycloneDX SBOM document instead of the summary.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(file: Path, show_sbom: bool, as_json: bool) -> None:
    """Show what a bundle holds without extracting it (reads its header and its SBOM).

    Works on a read-only medium. This does not verify signatures or payload bytes: use
    `bundle verify` or `airgap-install verify` for that. The root fingerprint shown is the
    newest root the bundle ships; a device shows the same for the same root. FILE may be a
    folder of split parts (or its .parts.json index): they are reassembled in $TMPDIR first.
    """
    from bundler.assemble.parts import is_parts, reassembled
    from bundler.assemble.sbom import SBOM_PATH, summary
    from bundler.errors import SpecError
    from installer.format.bundlefmt import BundleReader
    from installer.format.canonjson import loads_strict

    shown = file
    if is_parts(file):
        file = click.get_current_context().with_resource(reassembled(file, anchor=None))[0]
    with open(file, "rb") as f:
        reader = BundleReader(f, what=str(file), delta_ok=True)
        header = reader.header()
    delta = _delta_info(reader.delta, header.manifest, os.stat(file).st_size)
    from bundler.spec.specfiles import secret_warnings
    for warning in secret_warnings(mem.path for mem in header.manifest.members):
        click.echo(warning, err=True)
    m = header.manifest
    sigs = loads_strict(header.signatures, what="signatures").get("signatures", [])
    sbom_member = next((mem for mem in m.members if mem.path == SBOM_PATH), None)
    sbom_bytes = read_member(file, sbom_member) if sbom_member and (
        delta is None or SBOM_PATH in delta["carried_paths"]) else None
    if show_sbom:
        if sbom_bytes is None:
            raise SpecError(f"{file} carries no readable SBOM ({SBOM_PATH})",
                            hint="bundles built before SBOMs were added have none: rebuild")
        click.echo(sbom_bytes.decode().rstrip("\n"))
        return
    bom = summary(json.loads(sbom_bytes)) if sbom_bytes else None
    chain = root_chain_info(header.roots)
    k3s_config = _k3s_config(file, m, delta)
    doc = {**m.to_json(), "file": str(shown), "size": os.stat(file).st_size,
           "signatures": len(sigs), **chain, "sbom": bom, "delta": delta,
           "k3s_config": k3s_config}
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    w = click.echo
    w(f"{shown}: bundle {m.name} {m.version} for {m.arch}, K3s {m.k3s_version}")
    w(f"  roles: {', '.join(m.roles)}; lock {m.lock_digest}")
    if delta:
        w(f"  DELTA over {delta['base_name']} {delta['base_version']} (manifest "
          f"{delta['base']}): carries {delta['carried']} of {len(m.members)} members, "
          f"{human_bytes(delta['carried_bytes'])} of {human_bytes(m.payload_size)}; saves "
          f"{human_bytes(delta['saved_bytes'])}")
    newest = chain["roots"][-1] if chain["roots"] else None
    root_text = (f"v{newest['version']} fingerprint {newest['fingerprint']}" if newest
                 else "none")
    w(f"  signatures: {len(sigs)}{' (UNSIGNED)' if not sigs else ''}; root chain: "
      f"{len(header.roots)} version(s), newest {root_text}")
    w(f"  images ({len(m.images)}):")
    for i in m.images:
        w(f"    {i.ref}  {i.digest}")
    w(f"  charts ({len(m.charts)}):")
    for ch in m.charts:
        w(f"    {ch.name} {ch.version} -> namespace {ch.namespace}")
    if k3s_config:
        for item in k3s_config:
            w(f"  {item['what']} -> {item['target']}:")
            text = item["text"] if item["text"] is not None else \
                "(not readable here: not carried by this delta, or damaged)"
            for line in text.splitlines():
                w(f"    {line}")
    else:
        w("  k3s config: none (K3s runs with the host's own config.yaml and registries.yaml)")
    if bom:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(bom["components"].items()))
        w(f"  sbom: {bom['format']} at {SBOM_PATH}, components: {counts} "
          "(`bundle inspect --sbom` prints it)")
    else:
        w("  sbom: none")
    w(f"  members ({len(m.members)}, {human_bytes(m.payload_size)}):")
    for mem in m.members:
        w(f"    {mem.mode:04o} {mem.size:>12} {mem.sha256}  {mem.path}")


def _k3s_config(file: Path, m: Any, delta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The K3s configuration members: where each goes on a device and its text."""
    from installer.format.bundlefmt import FIXED_PATHS
    from installer.host.layout import targets_for
    out = []
    for mem in m.members:
        if mem.kind not in FIXED_PATHS:
            continue
        data = read_member(file, mem) if delta is None or mem.path in delta["carried_paths"] \
            else None
        target = targets_for([mem], "server")[0].target
        out.append({"member": mem.path, "kind": mem.kind, "target": "/" + target,
                    "what": "k3s config drop-in" if mem.kind == "k3s-config"
                    else "registries.yaml",
                    "text": data.decode("utf-8", "replace") if data is not None else None})
    return out


def _delta_info(delta: Any, m: Any, size: int) -> dict[str, Any] | None:
    """A delta bundle's base and what it saves over sending the full bundle."""
    if delta is None:
        return None
    carried = set(delta.carried)
    carried_bytes = sum(x.size for x in m.members if x.path in carried)
    return {"base": delta.base_digest, "base_name": delta.base_name,
            "base_version": delta.base_version, "carried": len(carried),
            "carried_paths": list(delta.carried), "carried_bytes": carried_bytes,
            "saved_bytes": m.payload_size - carried_bytes, "delta_size": size}


commands = [inspect_cmd]

"""`bundle build` and `bundle inspect`: thin click commands over ``build`` and the format."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli import CONTEXT, Ctx, pass_ctx


@click.command("build", context_settings=CONTEXT)
@click.option("--arch", "arches", multiple=True, required=True,
              type=click.Choice(["amd64", "arm64", "arm"]),
              help="Architecture to build for; repeatable. arm means linux/arm/v7.")
@click.option("--bundle", "bundles", multiple=True, metavar="NAME",
              help="Bundle(s) to build (default: every bundle locked for that arch).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Output folder; it can be copied to a USB stick as is.")
@click.option("--frozen", is_flag=True,
              help="Use only the cache and locked digests; fail rather than look anything up.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Content cache folder (default: $XDG_CACHE_HOME/k3s-airgap-bundler).")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Key folder from `bundle keys init`: sign with its targets keys "
                                 "and ship its root chain.")
@click.option("--sigstore", is_flag=True,
              help="Also sign keyless with Sigstore (CI only: needs an ambient OIDC token).")
@click.option("--jobs", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Concurrent downloads.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds without a byte before a download is retried (it resumes).")
@click.option("--force", is_flag=True,
              help="Write the bundle even when the output folder already holds an identical, "
                   "verified one (default: leave it in place, 'up to date').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def build_cmd(c: Ctx, arches: tuple[str, ...], bundles: tuple[str, ...], out: Path,
              frozen: bool, cache: Path | None, keys_dir: Path | None, sigstore: bool,
              jobs: int, timeout: float, force: bool, as_json: bool) -> None:
    """Build DIR/<name>-<version>-<arch>.tar from bundles.lock, in the shape K3s consumes.

    Fetches exactly the locked digests (never re-resolves a tag), verifies every byte,
    reuses the cache, and writes the bundle atomically. Credentials and free space for the
    whole run are checked before the first byte is written. A bundle already in DIR with the
    same manifest is verified once and left in place (use --force to rewrite it). Also writes
    airgap-install.pyz and INSTALL.txt so DIR can go onto a USB stick as is.
    """
    from .build import BuildResult, Plan, build_all
    from .cache import default_cache_dir
    from .lockfile import read_lock
    from .sources import Sources
    from .spec import load_spec

    spec = load_spec(c.spec)
    lock = read_lock(c.lock)
    names = list(bundles) or sorted(lock.bundles)
    targets = [(n, a) for n in names for a in arches
               if bundles or a in lock.bundles[n].arch]
    if not targets:
        from .errors import SpecError
        raise SpecError(f"nothing to build: no locked bundle has arch {', '.join(arches)}")
    if sigstore:  # before anything is fetched or written
        from .provenance import sigstore_preflight
        sigstore_preflight()
    sign = _signer(keys_dir) if keys_dir else None
    results: list[dict[str, Any]] = []
    provenance: dict[Path, bytes] = {}

    def before_write(plan: Plan) -> None:
        if sigstore:
            assert plan.signed is not None
            from .provenance import sigstore_sign
            provenance[plan.dest] = sigstore_sign(plan.signed[0])

    def done(res: BuildResult) -> None:
        extra = _write_sigstore(res.path, provenance.pop(res.path, None), res.manifest,
                                sigstore)
        _write_usb_extras(out, [r["bundle"] for r in results] + [str(res.path)])
        results.append({"bundle": str(res.path), "name": res.manifest.name,
                        "arch": res.manifest.arch, "version": res.manifest.version,
                        "size": res.path.stat().st_size, "signed": keys_dir is not None,
                        "sigstore": extra, "downloads": res.downloads,
                        "cache_hits": res.cache_hits, "up_to_date": res.up_to_date,
                        "phases": {k: round(v, 3) for k, v in res.phases.items()}})

    with c.progress(0, "fetching", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def grow(n: int) -> None:
            bar.total = (bar.total or 0) + n
            bar.refresh()
        from .transport import RetryPolicy
        with Sources(spec, cache or default_cache_dir(), frozen=frozen, pool_size=max(16, jobs),
                     policy=RetryPolicy(read_timeout=timeout),
                     on_bytes=bar.update, on_total=grow) as src:
            build_all(spec, lock, targets, src=src, out_dir=out, sign=sign, workers=jobs,
                      force=force, extras=_extras_size(), before_write=before_write,
                      on_done=done)
    if as_json:
        click.echo(json.dumps({"bundles": results}, indent=2, sort_keys=True))
    else:
        for r in results:
            state = "up to date" if r["up_to_date"] else "built"
            click.echo(f"{state} {r['bundle']} ({_human(r['size'])}"
                       f"{', signed' if r['signed'] else ', UNSIGNED'})")
        click.echo(f"wrote {out / 'airgap-install.pyz'} and {out / 'INSTALL.txt'}")


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _signer(keys_dir: Path) -> Any:
    from . import keys

    def sign(manifest_bytes: bytes) -> tuple[bytes, list[bytes]]:
        return keys.sign_manifest(keys_dir, manifest_bytes), keys.root_chain(keys_dir)
    return sign


def _write_sigstore(bundle: Path, data: bytes | None, manifest: Any,
                    wanted: bool) -> str | None:
    """``<bundle>.sigstore.json``: written with a new bundle; an up-to-date bundle keeps
    the one beside it, or gets one when it has none."""
    if not wanted:
        return None
    from .cli_verify import sigstore_path
    out = sigstore_path(bundle)
    if data is None:
        if out.is_file():
            return str(out)
        from .provenance import sigstore_sign
        data = sigstore_sign(manifest.to_bytes())
    from installer.fsio import write_verified
    write_verified(out, [data])
    return str(out)


def _extras_size() -> int:
    from installer import zipapp
    return len(zipapp.zipapp_bytes()) + 64 * 1024


def _write_usb_extras(out: Path, bundle_paths: list[str]) -> None:
    """airgap-install.pyz and INSTALL.txt, rewritten only when their bytes change."""
    from installer import zipapp
    from installer.fsio import write_verified
    names = sorted({p.name for p in out.glob("*.tar")} | {Path(b).name for b in bundle_paths})
    for path, data, mode in ((out / "airgap-install.pyz", zipapp.zipapp_bytes(), 0o755),
                             (out / "INSTALL.txt", zipapp.install_txt(names).encode(), 0o644)):
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        write_verified(path, [data], mode=mode)


@click.command("inspect", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(file: Path, as_json: bool) -> None:
    """Show what a bundle holds without extracting it (reads only its header).

    Works on a read-only medium. This does not verify signatures or payload bytes: use
    `bundle verify` or `airgap-install verify` for that.
    """
    from installer.bundlefmt import BundleReader
    from installer.canonjson import loads_strict

    with open(file, "rb") as f:
        header = BundleReader(f, what=str(file)).header()
    m = header.manifest
    sigs = loads_strict(header.signatures, what="signatures").get("signatures", [])
    doc = {**m.to_json(), "file": str(file), "size": os.stat(file).st_size,
           "signatures": len(sigs), "root_chain": len(header.roots)}
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    w = click.echo
    w(f"{file}: bundle {m.name} {m.version} for {m.arch}, K3s {m.k3s_version}")
    w(f"  roles: {', '.join(m.roles)}; lock {m.lock_digest}")
    w(f"  signatures: {len(sigs)}{' (UNSIGNED)' if not sigs else ''}; root chain: "
      f"{len(header.roots)} version(s)")
    w(f"  images ({len(m.images)}):")
    for i in m.images:
        w(f"    {i.ref}  {i.digest}")
    w(f"  charts ({len(m.charts)}):")
    for ch in m.charts:
        w(f"    {ch.name} {ch.version} -> namespace {ch.namespace}")
    w(f"  members ({len(m.members)}, {_human(m.payload_size)}):")
    for mem in m.members:
        w(f"    {mem.mode:04o} {mem.size:>12} {mem.sha256}  {mem.path}")
    sys.stdout.flush()


commands = [build_cmd, inspect_cmd]

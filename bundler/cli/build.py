"""`bundle build` and `bundle inspect`: thin click commands over ``build`` and the format."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .context import CONTEXT, Ctx, pass_ctx


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def build_cmd(c: Ctx, arches: tuple[str, ...], bundles: tuple[str, ...], out: Path,
              frozen: bool, cache: Path | None, keys_dir: Path | None, sigstore: bool,
              jobs: int, timeout: float, as_json: bool) -> None:
    """Build DIR/<name>-<version>-<arch>.tar from bundles.lock, in the shape K3s consumes.

    Fetches exactly the locked digests (never re-resolves a tag), verifies every byte,
    reuses the cache, and writes the bundle atomically. Also writes airgap-install.pyz and
    INSTALL.txt so DIR can go onto a USB stick as is.
    """
    from ..build import build
    from ..cache import default_cache_dir
    from ..lockfile import read_lock
    from ..sources import Sources
    from ..spec import load_spec

    spec = load_spec(c.spec)
    lock = read_lock(c.lock)
    names = list(bundles) or sorted(lock.bundles)
    sign = _signer(keys_dir) if keys_dir else None
    results: list[dict[str, Any]] = []
    with c.progress(0, "fetching", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def grow(n: int) -> None:
            bar.total = (bar.total or 0) + n
            bar.refresh()
        from ..transport import RetryPolicy
        with Sources(spec, cache or default_cache_dir(), frozen=frozen, pool_size=max(16, jobs),
                     policy=RetryPolicy(read_timeout=timeout),
                     on_bytes=bar.update, on_total=grow) as src:
            for name in names:
                for arch in arches:
                    if not bundles and arch not in lock.bundles[name].arch:
                        continue
                    res = build(spec, lock, bundle=name, arch=arch, src=src, out_dir=out,
                              sign=sign, workers=jobs)
                    extra = (_sigstore(res.path, res.manifest.to_bytes()) if sigstore
                             else None)
                    results.append({"bundle": str(res.path), "name": name, "arch": arch,
                                    "version": res.manifest.version,
                                    "size": res.path.stat().st_size,
                                    "signed": keys_dir is not None, "sigstore": extra,
                                    "downloads": res.downloads,
                                    "cache_hits": res.cache_hits})
    if not results:
        from ..errors import SpecError
        raise SpecError(f"nothing to build: no locked bundle has arch {', '.join(arches)}")
    _write_usb_extras(out, [Path(r["bundle"]).name for r in results])
    if as_json:
        click.echo(json.dumps({"bundles": results}, indent=2, sort_keys=True))
    else:
        for r in results:
            click.echo(f"built {r['bundle']} ({_human(r['size'])}"
                       f"{', signed' if r['signed'] else ', UNSIGNED'})")
        click.echo(f"wrote {out / 'airgap-install.pyz'} and {out / 'INSTALL.txt'}")


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _signer(keys_dir: Path) -> Any:
    from .. import keys

    def sign(manifest_bytes: bytes) -> tuple[bytes, list[bytes]]:
        return keys.sign_manifest(keys_dir, manifest_bytes), keys.root_chain(keys_dir)
    return sign


def _sigstore(bundle: Path, manifest_bytes: bytes) -> str:
    from ..provenance import sigstore_sign
    from .verify import sigstore_path
    out = sigstore_path(bundle)
    data = sigstore_sign(manifest_bytes)
    from installer.fsio import write_verified
    write_verified(out, [data])
    return str(out)


def _write_usb_extras(out: Path, bundle_names: list[str]) -> None:
    try:
        from installer import zipapp
    except ImportError:  # pragma: no cover - the installer always ships it
        return
    zipapp.build_zipapp(str(out / "airgap-install.pyz"))
    names = sorted({p.name for p in out.glob("*.tar")} | set(bundle_names))
    from installer.fsio import write_verified
    write_verified(out / "INSTALL.txt", [zipapp.install_txt(names).encode()])


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
    from ..specfiles import secret_warnings
    for warning in secret_warnings(mem.path for mem in m.members):
        click.echo(warning, err=True)
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

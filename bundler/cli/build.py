"""`bundle build` and `bundle inspect`: thin click commands over ``build`` and the format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bundler.cli.context import CONTEXT, ArchType, Ctx, pass_ctx
from installer.policy import human_bytes


@click.command("build", context_settings=CONTEXT)
@click.option("--arch", "arches", multiple=True, type=ArchType(),
              help="Architecture to build for; repeatable (default: every arch the bundle is "
                   "locked for). arm means linux/arm/v7; x86_64, aarch64, armhf, armv7l are "
                   "accepted as aliases.")
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
                                 "and ship its root chain (default: [signing] keys in the spec).")
@click.option("--unsigned", is_flag=True,
              help="Build unsigned bundles on purpose (devices refuse them); needed when "
                   "neither --keys nor [signing] keys is given.")
@click.option("--sigstore", is_flag=True,
              help="Also sign keyless with Sigstore (CI only: needs an ambient OIDC token).")
@click.option("--jobs", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Concurrent downloads.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds without a byte before a download is retried (it resumes).")
@click.option("--force", is_flag=True,
              help="Write the bundle even when the output folder already holds an identical, "
                   "verified one (default: leave it in place, 'up to date').")
@click.option("--max-part-size", "max_part_size", metavar="SIZE", default=None,
              help="Split each bundle larger than SIZE (e.g. 4G for FAT32; K/M/G/T = 1024 "
                   "powers) into parts with a signed index, as `bundle split` does "
                   "(default: one file).")
@click.option("--parity", type=click.IntRange(0, 1), default=1, show_default=True,
              help="Parity parts per split bundle: 1 rebuilds any ONE lost or damaged part; "
                   "0 writes none.")
@click.option("--delta-from", "delta_from", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="RECEIPT|OLD_BUNDLE",
              help="Also write <name>-<version>-<arch>.delta.tar: only the members this "
                   "device receipt (`airgap-install receipt`) or old bundle lacks.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def build_cmd(c: Ctx, *, arches: tuple[str, ...], bundles: tuple[str, ...], out: Path,
              frozen: bool, cache: Path | None, keys_dir: Path | None, unsigned: bool,
              sigstore: bool, jobs: int, timeout: float, force: bool, max_part_size: str | None,
              parity: int, delta_from: Path | None, as_json: bool) -> None:
    """Build DIR/<name>-<version>-<arch>.tar from bundles.lock, in the shape K3s consumes.

    Fetches exactly the locked digests (never re-resolves a tag), verifies every byte,
    reuses the cache, and writes the bundle atomically. Signs with --keys or the spec's
    [signing] keys; --unsigned says an unsigned bundle is meant. Credentials and free space
    for the whole run are checked before the first byte is written. A bundle already in DIR
    with the same manifest is verified once and left in place (--force rewrites it). Also writes
    airgap-install.pyz, INSTALL.txt and SHA256SUMS so DIR can go onto a USB stick as is.
    """
    from bundler.assemble.build import BuildResult, Plan, build_all, bundle_filename
    from bundler.errors import SpecError
    from bundler.fetch.cache import default_cache_dir
    from bundler.lock.gate import check_lock
    from bundler.spec.lockfile import read_lock
    from bundler.spec.spec import load_spec

    part_limit = _part_limit(max_part_size)  # a bad size fails before anything is read
    spec = load_spec(c.spec)
    lock = read_lock(c.lock)
    keys_dir = _signing_keys(spec.signing_keys, keys_dir, unsigned)
    from bundler.assemble.delta import load_base, write_delta
    base = load_base(delta_from) if delta_from else None  # before any download
    plan: list[tuple[str, str]] = []
    for name in bundles or sorted(lock.bundles):
        if name not in lock.bundles:
            raise SpecError(f"bundle {name!r} is not in the lock",
                            hint=f"locked bundles: {', '.join(sorted(lock.bundles))}")
        locked = lock.bundles[name].arch
        plan += [(name, a) for a in arches or locked if bundles or a in locked]
    # every (bundle, arch) is checked before the first download
    targets = [out / bundle_filename(name, check_lock(spec, lock, name, arch=arch).version, arch)
               for name, arch in plan]
    if not plan:
        raise SpecError(f"nothing to build: no locked bundle has arch {', '.join(arches)}")
    fingerprint = None
    if keys_dir is not None:
        from bundler.keys import check_signing
        fingerprint = check_signing(keys_dir)
    else:
        _refuse_unsigned_over_signed(targets)
    if sigstore:  # before anything is fetched or written
        from bundler.assemble.provenance import sigstore_preflight
        sigstore_preflight()
    sign = _signer(keys_dir) if keys_dir else None
    results: list[dict[str, Any]] = []
    provenance: dict[Path, bytes] = {}

    def before_write(p: Plan) -> None:
        if sigstore:
            assert p.signed is not None
            from bundler.assemble.provenance import sigstore_sign
            provenance[p.dest] = sigstore_sign(p.signed[0])

    def done(res: BuildResult) -> None:
        delta = write_delta(res.path, base)[0] if base else None
        extra = _write_sigstore(res.path, provenance.pop(res.path, None), res.manifest,
                                wanted=sigstore)
        size = res.path.stat().st_size
        split = _split(res.path, part_limit, parity=parity == 1, keys_dir=keys_dir)
        _write_usb_extras(out, [r["bundle"] for r in results] + [str(res.path)])
        results.append({"bundle": str(res.path), "name": res.manifest.name,
                        "arch": res.manifest.arch, "version": res.manifest.version,
                        "size": size, "signed": keys_dir is not None, "parts": split,
                        "root_fingerprint": fingerprint, "sigstore": extra,
                        "downloads": res.downloads, "cache_hits": res.cache_hits,
                        "up_to_date": res.up_to_date,
                        "delta": str(delta) if delta else None,
                        "delta_size": delta.stat().st_size if delta else None,
                        "phases": {k: round(v, 3) for k, v in res.phases.items()}})

    with c.progress(0, "fetching", unit="B", unit_scale=True, unit_divisor=1024) as bar:
        def grow(n: int) -> None:
            bar.total = (bar.total or 0) + n
            bar.refresh()
        from bundler.fetch.sources import Sources
        from bundler.fetch.transport import RetryPolicy
        with Sources(spec, cache or default_cache_dir(), frozen=frozen, pool_size=max(16, jobs),
                     policy=RetryPolicy(read_timeout=timeout),
                     on_bytes=bar.update, on_total=grow) as src:
            build_all(spec, lock, plan, src=src, out_dir=out, sign=sign, workers=jobs,
                      force=force, extras=_extras_size(), before_write=before_write,
                      on_done=done)
    sums = out / "SHA256SUMS"
    if as_json:
        click.echo(json.dumps({"bundles": results, "sha256sums": str(sums)}, indent=2,
                              sort_keys=True))
    else:
        for r in results:
            how = f"signed for root {fingerprint}" if r["signed"] else "UNSIGNED"
            state = "up to date" if r["up_to_date"] else "built"
            click.echo(f"{state} {r['bundle']} ({human_bytes(r['size'])}, {how})")
            if r["parts"]:
                p = r["parts"]
                click.echo(f"  split into {len(p['parts'])} parts"
                           f"{' + parity' if p['parity'] else ''}; index {p['index']}")
            if r["delta"]:
                click.echo(f"wrote delta {r['delta']} ({human_bytes(r['delta_size'])})")
        click.echo(f"wrote {out / 'airgap-install.pyz'}, {out / 'INSTALL.txt'} and {sums}")


def _part_limit(text: str | None) -> int | None:
    """``--max-part-size`` in bytes, checked before anything is fetched."""
    if text is None:
        return None
    from bundler.assemble.parts import parse_size, part_size_for
    limit = parse_size(text)
    part_size_for(limit)  # refuses a size too small for a part
    return limit


def _split(bundle: Path, limit: int | None, *, parity: bool,
           keys_dir: Path | None) -> dict[str, Any] | None:
    """Split a bundle larger than ``limit`` with the one splitter (bundler/assemble/parts.py); the
    index is signed like the bundle (unsigned with it)."""
    if limit is None or bundle.stat().st_size < limit:
        return None
    from bundler import keys
    from bundler.assemble.parts import split
    res = split(bundle, max_part_size=limit, parity=parity,
                sign=(lambda b: keys.sign_manifest(keys_dir, b)) if keys_dir else None,
                roots=keys.root_chain(keys_dir) if keys_dir else [])
    return {"index": str(res.index), "parts": [str(p) for p in res.parts],
            "parity": str(res.parity) if res.parity else None}


def _signing_keys(from_spec: Path | None, option: Path | None, unsigned: bool) -> Path | None:
    """The key folder to sign with, or None for an explicit --unsigned build."""
    from bundler.errors import SpecError
    if unsigned and option is not None:
        raise SpecError("--keys and --unsigned contradict each other", hint="pass one of them")
    if unsigned:
        return None
    if option is not None or from_spec is not None:
        return option or from_spec
    raise SpecError("no signing keys: refusing to build an unsigned bundle by accident "
                    "(devices refuse unsigned bundles)",
                    hint="pass --keys DIR, or set [signing] keys = \"DIR\" in bundles.toml; "
                         "pass --unsigned if an unsigned bundle is really meant")


def _refuse_unsigned_over_signed(targets: list[Path]) -> None:
    """An unsigned build must not silently replace a signed bundle of the same name."""
    from bundler.errors import SpecError
    from installer.errors import InstallerError
    from installer.format.bundlefmt import BundleReader
    from installer.format.canonjson import loads_strict
    for path in targets:
        try:
            with open(path, "rb") as f:
                sigs = loads_strict(BundleReader(f, what=str(path)).header().signatures,
                                    what="signatures").get("signatures")
        except (OSError, InstallerError, AttributeError):
            continue  # absent or unreadable: nothing signed to lose
        if sigs:
            raise SpecError(f"{path} is a signed bundle; refusing to replace it with an "
                            "unsigned one",
                            hint="sign with --keys DIR (or [signing] keys), build into "
                                 "another --out, or delete it first")


def _signer(keys_dir: Path) -> Any:
    from bundler import keys

    def sign(manifest_bytes: bytes) -> tuple[bytes, list[bytes]]:
        return keys.sign_manifest(keys_dir, manifest_bytes), keys.root_chain(keys_dir)
    return sign


def _write_sigstore(bundle: Path, data: bytes | None, manifest: Any,
                    *, wanted: bool) -> str | None:
    """``<bundle>.sigstore.json``: written with a new bundle; an up-to-date bundle keeps
    the one beside it, or gets one when it has none."""
    if not wanted:
        return None
    from bundler.cli.verify import sigstore_path
    from installer.fsio import write_verified
    out = sigstore_path(bundle)
    if data is None:
        if out.is_file():
            return str(out)
        from bundler.assemble.provenance import sigstore_sign
        data = sigstore_sign(manifest.to_bytes())
    write_verified(out, [data])
    return str(out)


def _extras_size() -> int:
    from installer import zipapp
    return len(zipapp.zipapp_bytes()) + 64 * 1024


def _write_usb_extras(out: Path, bundle_paths: list[str]) -> Path:
    """The installer zipapp, INSTALL.txt and SHA256SUMS beside the bundles, each rewritten
    only when its bytes change; returns the SHA256SUMS path."""
    from bundler.assemble.sums import sha256sums
    from installer import zipapp
    from installer.fsio import write_verified
    names = sorted({p.name for p in out.glob("*.tar")} | {Path(b).name for b in bundle_paths}
                   | {p.name[:-len(".parts.json")] for p in out.glob("*.tar.parts.json")})
    for path, data, mode in ((out / "airgap-install.pyz", zipapp.zipapp_bytes(), 0o755),
                             (out / "INSTALL.txt", zipapp.install_txt(names).encode(), 0o644)):
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        write_verified(path, [data], mode=mode)
    sums = out / "SHA256SUMS"
    write_verified(sums, [sha256sums(out).encode()])
    return sums


commands = [build_cmd]

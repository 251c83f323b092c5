"""`bundle build` as one library call: :func:`build_release` takes a :class:`BuildRequest`
(everything the command decides: arches, keys, delta base, split, Sigstore, USB extras) and
returns what it wrote. The CLI parses flags into the request and prints the result."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler import keys
from bundler.assemble.build import BuildResult, Plan, build_all, bundle_filename
from bundler.assemble.delta import Base, load_base, write_delta
from bundler.assemble.parts import parse_size, part_size_for, split
from bundler.assemble.provenance import sigstore_path, sigstore_preflight, sigstore_sign
from bundler.assemble.sums import sha256sums
from bundler.errors import SpecError
from bundler.fetch.cache import default_cache_dir
from bundler.fetch.sources import Sources
from bundler.fetch.transport import RetryPolicy
from bundler.lock.gate import check_lock
from bundler.spec.lockfile import Lock, read_lock
from bundler.spec.spec import Spec, load_spec
from installer import zipapp
from installer.errors import InstallerError
from installer.format.bundlefmt import BundleReader, Manifest
from installer.format.canonjson import loads_strict
from installer.fsio import write_verified
from installer.policy import human_bytes


@dataclass(frozen=True)
class BuildRequest:
    """Everything `bundle build` decides, before anything is read."""

    spec: Path
    lock: Path
    out: Path = Path("dist")
    arches: tuple[str, ...] = ()
    bundles: tuple[str, ...] = ()
    frozen: bool = False
    cache: Path | None = None
    keys_dir: Path | None = None
    unsigned: bool = False
    sigstore: bool = False
    jobs: int = 8
    timeout: float = 60.0
    force: bool = False
    max_part_size: str | None = None
    parity: int = 1
    delta_from: Path | None = None


@dataclass(frozen=True)
class Release:
    """What one build wrote: one record per bundle (the ``--json`` shape) and SHA256SUMS."""

    out: Path
    bundles: list[dict[str, Any]]
    sha256sums: Path
    fingerprint: str | None

    def to_json(self) -> dict[str, Any]:
        return {"bundles": self.bundles, "sha256sums": str(self.sha256sums)}

    def text(self) -> list[str]:
        lines = []
        for r in self.bundles:
            how = f"signed for root {self.fingerprint}" if r["signed"] else "UNSIGNED"
            state = "up to date" if r["up_to_date"] else "built"
            lines.append(f"{state} {r['bundle']} ({human_bytes(r['size'])}, {how})")
            if r["parts"]:
                p = r["parts"]
                lines.append(f"  split into {len(p['parts'])} parts"
                             f"{' + parity' if p['parity'] else ''}; index {p['index']}")
            if r["delta"]:
                lines.append(f"wrote delta {r['delta']} ({human_bytes(r['delta_size'])})")
        lines.append(f"wrote {self.out / 'airgap-install.pyz'}, {self.out / 'INSTALL.txt'} "
                     f"and {self.sha256sums}")
        return lines


@dataclass
class _Run:
    """The decisions of one build, taken before the first download."""

    req: BuildRequest
    part_limit: int | None
    keys_dir: Path | None
    fingerprint: str | None
    base: Base | None
    results: list[dict[str, Any]]
    provenance: dict[Path, bytes]

    def before_write(self, p: Plan) -> None:
        if self.req.sigstore:
            assert p.signed is not None
            self.provenance[p.dest] = sigstore_sign(p.signed[0])

    def done(self, res: BuildResult) -> None:
        req = self.req
        delta = write_delta(res.path, self.base)[0] if self.base else None
        extra = _write_sigstore(res.path, self.provenance.pop(res.path, None), res.manifest,
                                wanted=req.sigstore)
        size = res.path.stat().st_size
        parts = _split(res.path, self.part_limit, parity=req.parity == 1, keys_dir=self.keys_dir)
        write_usb_extras(req.out, [r["bundle"] for r in self.results] + [str(res.path)])
        self.results.append({
            "bundle": str(res.path), "name": res.manifest.name, "arch": res.manifest.arch,
            "version": res.manifest.version, "size": size, "signed": self.keys_dir is not None,
            "parts": parts, "root_fingerprint": self.fingerprint, "sigstore": extra,
            "downloads": res.downloads, "cache_hits": res.cache_hits,
            "up_to_date": res.up_to_date, "delta": str(delta) if delta else None,
            "delta_size": delta.stat().st_size if delta else None,
            "phases": {k: round(v, 3) for k, v in res.phases.items()}})


def build_release(req: BuildRequest, *, on_bytes: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> Release:
    """Build every (bundle, arch) the request names from the lock, in the shape K3s consumes.

    Every refusal (bad size, contradicting key options, unknown bundle, stale lock, unsigned
    over signed, Sigstore without a token) comes before the first download."""
    part_limit = _part_limit(req.max_part_size)  # a bad size fails before anything is read
    spec = load_spec(req.spec)
    lock = read_lock(req.lock)
    keys_dir = signing_keys(spec.signing_keys, req.keys_dir, unsigned=req.unsigned)
    base = load_base(req.delta_from) if req.delta_from else None  # before any download
    plan, targets = _plan(spec, lock, req)
    fingerprint = None
    if keys_dir is not None:
        fingerprint = keys.check_signing(keys_dir)
    else:
        refuse_unsigned_over_signed(targets)
    if req.sigstore:  # before anything is fetched or written
        sigstore_preflight()
    run = _Run(req, part_limit, keys_dir, fingerprint, base, [], {})
    with Sources(spec, req.cache or default_cache_dir(), frozen=req.frozen,
                 pool_size=max(16, req.jobs), policy=RetryPolicy(read_timeout=req.timeout),
                 on_bytes=on_bytes, on_total=on_total) as src:
        build_all(spec, lock, plan, src=src, out_dir=req.out,
                  sign=_signer(keys_dir) if keys_dir else None, workers=req.jobs,
                  force=req.force, extras=extras_size(), before_write=run.before_write,
                  on_done=run.done)
    return Release(req.out, run.results, req.out / "SHA256SUMS", fingerprint)


def _plan(spec: Spec, lock: Lock,
          req: BuildRequest) -> tuple[list[tuple[str, str]], list[Path]]:
    """The (bundle, arch) pairs to build and their output paths; every one is checked against
    the spec before the first download."""
    plan: list[tuple[str, str]] = []
    for name in req.bundles or sorted(lock.bundles):
        if name not in lock.bundles:
            raise SpecError(f"bundle {name!r} is not in the lock",
                            hint=f"locked bundles: {', '.join(sorted(lock.bundles))}")
        locked = lock.bundles[name].arch
        plan += [(name, a) for a in req.arches or locked if req.bundles or a in locked]
    targets = [req.out / bundle_filename(name, check_lock(spec, lock, name, arch=arch).version,
                                         arch) for name, arch in plan]
    if not plan:
        raise SpecError(f"nothing to build: no locked bundle has arch {', '.join(req.arches)}")
    return plan, targets


def _part_limit(text: str | None) -> int | None:
    """``--max-part-size`` in bytes, checked before anything is fetched."""
    if text is None:
        return None
    limit = parse_size(text)
    part_size_for(limit)  # refuses a size too small for a part
    return limit


def split_bundle(bundle: Path, *, max_part_size: str, parity: bool, keys_dir: Path | None,
                 unsigned: bool) -> dict[str, Any] | None:
    """`bundle split`: the parts of ``bundle`` with their signed (or, with ``unsigned``,
    unsigned) index, or None when the bundle already fits below ``max_part_size``."""
    if keys_dir is None and not unsigned:
        raise SpecError("the parts index must be signed",
                        hint="give --keys DIR (the folder `bundle build --keys` used), or "
                             "--unsigned for a test")
    limit = parse_size(max_part_size)
    if not stat.S_ISREG(bundle.stat().st_mode):
        raise SpecError(f"{bundle} is not a regular file",
                        hint="give the bundle file that `bundle build` wrote")
    return _split(bundle, limit, parity=parity, keys_dir=keys_dir)


def _split(bundle: Path, limit: int | None, *, parity: bool,
           keys_dir: Path | None) -> dict[str, Any] | None:
    """Split a bundle larger than ``limit`` with the one splitter (bundler/assemble/parts.py); the
    index is signed like the bundle (unsigned with it)."""
    if limit is None or bundle.stat().st_size < limit:
        return None
    res = split(bundle, max_part_size=limit, parity=parity,
                sign=(lambda b: keys.sign_manifest(keys_dir, b)) if keys_dir else None,
                roots=keys.root_chain(keys_dir) if keys_dir else [])
    return {"index": str(res.index), "parts": [str(p) for p in res.parts],
            "parity": str(res.parity) if res.parity else None}


def signing_keys(from_spec: Path | None, option: Path | None, *,
                 unsigned: bool) -> Path | None:
    """The key folder to sign with, or None for an explicit --unsigned build."""
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


def refuse_unsigned_over_signed(targets: list[Path]) -> None:
    """An unsigned build must not silently replace a signed bundle of the same name."""
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


def _signer(keys_dir: Path) -> Callable[[bytes], tuple[bytes, list[bytes]]]:
    def sign(manifest_bytes: bytes) -> tuple[bytes, list[bytes]]:
        return keys.sign_manifest(keys_dir, manifest_bytes), keys.root_chain(keys_dir)
    return sign


def _write_sigstore(bundle: Path, data: bytes | None, manifest: Manifest,
                    *, wanted: bool) -> str | None:
    """``<bundle>.sigstore.json``: written with a new bundle; an up-to-date bundle keeps
    the one beside it, or gets one when it has none."""
    if not wanted:
        return None
    out = sigstore_path(bundle)
    if data is None:
        if out.is_file():
            return str(out)
        data = sigstore_sign(manifest.to_bytes())
    write_verified(out, [data])
    return str(out)


def extras_size() -> int:
    """Room the USB extras (zipapp, INSTALL.txt, SHA256SUMS) need beside the bundles."""
    return len(zipapp.zipapp_bytes()) + 64 * 1024


def write_usb_extras(out: Path, bundle_paths: list[str]) -> Path:
    """The installer zipapp, INSTALL.txt and SHA256SUMS beside the bundles, each rewritten
    only when its bytes change; returns the SHA256SUMS path."""
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

"""The OTA ring repository commands: init, publish, promote, yank, refresh.

The folder layout, the metadata and how a publication is written are in ``repostore``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from securesystemslib.signer import SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
)

from bundler import keys
from bundler.errors import LocalError, SpecError
from bundler.repo import ringdeltas
from bundler.repo.repostore import (
    DAY,
    DEFAULT_LIFETIMES,
    DEFAULT_RINGS,
    MAX_DAYS,
    PENDING,
    RING_SERIALS,
    YANKED,
    Doc,
    Lifetimes,
    Outcome,
    Repo,
    RepoRefusal,
    UntrustedBundle,
    _iso,
    _shortfalls,
)
from installer.errors import InstallerError
from installer.fsio import hash_file
from installer.trust import verify

__all__ = ["DEFAULT_RINGS", "YANKED", "Lifetimes", "Outcome", "Repo", "RepoRefusal",
           "UntrustedBundle", "_iso", "init_repo", "parse_duration", "promote", "publish",
           "refresh", "sign", "yank"]


# --- commands -------------------------------------------------------------------------------

def _now(now: int | None) -> int:
    return int(time.time()) if now is None else int(now)


def init_repo(directory: Path | str, keys_dir: Path | str, *,
              rings: tuple[str, ...] = DEFAULT_RINGS,
              ring_keys: dict[str, tuple[int, int]] | None = None,
              lifetimes: Lifetimes = DEFAULT_LIFETIMES, passphrase_env: str | None = None,
              now: int | None = None) -> list[Path]:
    """Create the repository: roots from the key directory, one delegated role per ring
    (``ring_keys[ring] = (keys, threshold)``, default one key), empty rings, snapshot and
    timestamp version 1. Everything is checked before the first key file is written."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env)
    now = _now(now)
    if repo.meta.exists() and any(repo.meta.iterdir()):
        raise SpecError(f"{repo.meta} is not empty: refusing to overwrite a repository",
                        hint="choose another folder, or use publish/promote/refresh on it")
    counts = ring_keys or {}
    _check_rings(rings, counts)
    records = keys.ring_records(repo.keys_dir)  # another repository's: keep serials rising
    root = Metadata[Root].from_bytes(keys.root_chain(repo.keys_dir)[-1]).signed
    for role in ("targets", "snapshot", "timestamp"):  # before anything is written
        public = [k for k in (root.keys[i] for i in root.roles[role].keyids)
                  if isinstance(k, SSlibKey)]
        repo._sign(Metadata(Snapshot()), public, root.roles[role].threshold, role=role)
    repo.dir.mkdir(parents=True, exist_ok=True)
    repo.begin()
    written: list[Path] = []
    delegations = Delegations(keys={}, roles={})
    assert delegations.roles is not None
    for ring in rings:
        n, threshold = counts.get(ring, (1, 1))
        public, files = keys.create_role_keys(repo.keys_dir, ring, n,
                                              passphrase_env=passphrase_env)
        written += files
        serial = records[ring].serial if ring in records else 1
        written.append(keys.write_ring_record(repo.keys_dir, ring,
                                              keys.RingRecord(serial, threshold, tuple(public))))
        for key in public:
            delegations.keys[key.keyid] = key
        delegations.roles[ring] = DelegatedRole(name=ring, keyids=[k.keyid for k in public],
                                                threshold=threshold, terminating=False,
                                                paths=["*"])
    written = list(dict.fromkeys(written))  # rings.json once
    top = Metadata(Targets(version=1, delegations=delegations))
    top.signed.unrecognized_fields[RING_SERIALS] = {
        ring: records[ring].serial if ring in records else 1 for ring in rings}
    ring_md = {ring: Metadata(Targets(version=1)) for ring in rings}
    written += repo.publish_set(rings=ring_md, lifetimes=lifetimes, now=now, new_targets=top,
                                what="init").written
    repo.targets_dir.mkdir(parents=True, exist_ok=True)
    return written


def _check_rings(rings: tuple[str, ...], counts: dict[str, tuple[int, int]]) -> None:
    """Ring names and key counts for ``repo init``, before any key is written."""
    if not rings or len(set(rings)) != len(rings):
        raise SpecError(f"rings must be distinct names, got {', '.join(rings) or 'none'}")
    unknown = sorted(set(counts) - set(rings))
    if unknown:
        raise SpecError(f"--ring-keys names unknown ring(s) {', '.join(unknown)}")
    for ring in rings:
        n, threshold = counts.get(ring, (1, 1))
        if not 1 <= n <= keys.MAX_KEYS:
            raise SpecError(f"ring {ring}: 1 to {keys.MAX_KEYS} keys, got {str(n)[:20]}",
                            hint="e.g. --ring-keys stable=2/3")
        if not 1 <= threshold <= n:
            raise SpecError(f"ring {ring}: threshold must be between 1 and {n}, got "
                            f"{str(threshold)[:20]}")


def _entries(md: Metadata[Targets], name: str, version: str) -> dict[str, TargetFile]:
    return {path: t for path, t in md.signed.targets.items()
            if t.custom.get("name") == name and t.custom.get("version") == version}


def _listed(md: Metadata[Targets]) -> str:
    found = sorted({f"{t.custom.get('name')} {t.custom.get('version')}"
                    for t in md.signed.targets.values() if not ringdeltas.is_delta(t)})
    return ", ".join(found) or "nothing"


def _yanked(md: Metadata[Targets], name: str, version: str) -> dict[str, Any] | None:
    for entry in md.signed.unrecognized_fields.get(YANKED, []):
        if entry.get("name") == name and entry.get("version") == version:
            return dict(entry)
    return None


def publish(bundles: list[Path], *, directory: Path | str, keys_dir: Path | str, ring: str,
            lifetimes: Lifetimes = DEFAULT_LIFETIMES, passphrase_env: str | None = None,
            now: int | None = None, deltas: int = ringdeltas.DEFAULT_DELTAS
            ) -> list[dict[str, Any]]:
    """Add bundles to ``ring``: each fully verified against the repository's newest root
    (signature, envelope, every member), stored once by content, listed in the ring; with
    it, up to ``deltas`` delta targets from the newest releases of the same name and arch
    that the ring and the rings before it list (``ringdeltas``)."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env).begin()
    now = _now(now)
    repo.sync_roots()
    anchor = repo._bytes(f"metadata/{repo.root_version()}.root.json")
    assert anchor is not None
    md = repo.ring(ring)
    added: list[dict[str, Any]] = []
    copies: dict[str, tuple[Path, str, int]] = {}
    for path in bundles:
        try:
            opened = verify.open_bundle(str(path), anchor=anchor, now=now)
            try:
                verify.hash_payload(opened)
            finally:
                opened.close()
        except InstallerError as e:
            raise UntrustedBundle(f"{path} does not verify against root "
                                  f"v{repo.root().signed.version} of {repo.dir}: {e.message}",
                                  hint=e.hint or "build it with the keys of this repository"
                                  ) from None
        m = opened.header.manifest
        if _yanked(md, m.name, m.version):
            raise RepoRefusal(f"{m.name} {m.version} was yanked from ring {ring}",
                              hint="publish a new version instead")
        try:
            sha, size = hash_file(path)
        except OSError as e:
            raise LocalError(f"cannot read {path}: {e}") from None
        filename = f"{m.name}-{m.version}-{m.arch}.tar"
        dest = repo.targets_dir / f"{sha}.{filename}"
        if not dest.exists():
            copies[f"targets/{dest.name}"] = (Path(path), sha, size)
        old = md.signed.targets.get(filename)
        if old is not None and old.hashes.get("sha256") != sha:
            raise RepoRefusal(f"ring {ring} already lists {filename} with other content",
                              hint="versions must change when content does")
        entered = old.custom.get("entered", now) if old is not None else now
        md.signed.targets[filename] = TargetFile(size, {"sha256": sha}, filename, {"custom": {
            "name": m.name, "version": m.version, "arch": m.arch, "k3s_version": m.k3s_version,
            "manifest_sha256": opened.digest, "entered": entered, "percent": 100}})
        added.append({"target": filename, "sha256": sha, "length": size, "ring": ring,
                      "stored": str(dest), "source": Path(path), "digest": opened.digest,
                      "name": m.name, "arch": m.arch})
    with tempfile.TemporaryDirectory(prefix="bundle-deltas-") as work:
        if deltas > 0:
            _add_deltas(repo, md, ring, added=added, copies=copies, n=deltas, work=Path(work),
                        now=now)
        done = repo.publish_set(rings={ring: md}, lifetimes=lifetimes, now=now, copies=copies,
                                what=f"publish {', '.join(a['target'] for a in added)} to "
                                     f"{ring}")
    keep = ("target", "sha256", "length", "ring", "stored", "deltas")
    return [dict({k: a[k] for k in keep if k in a}, staged=done.pending is not None)
            for a in added]


def _add_deltas(repo: Repo, md: Metadata[Targets], ring: str, *, added: list[dict[str, Any]],
                copies: dict[str, tuple[Path, str, int]], n: int, work: Path,
                now: int) -> None:
    """The delta targets of each bundle just added, listed in ``md`` and stored by content."""
    names = repo.rings()
    before = names[:names.index(ring)] if ring in names else []
    lists = [md] + [repo.ring(r) for r in before]
    for a in added:
        bases = ringdeltas.bases(lists, name=a["name"], arch=a["arch"], digest=a["digest"], n=n)
        made = ringdeltas.make(a["source"], filename=a["target"], digest=a["digest"],
                               stored=repo.targets_dir, bases_=bases, work=work, now=now)
        a["deltas"] = []
        for path, target, file, sha, size in made:
            md.signed.targets[path] = target
            if not (repo.targets_dir / f"{sha}.{path}").exists():
                copies[f"targets/{sha}.{path}"] = (file, sha, size)
            a["deltas"].append({"target": path, "sha256": sha, "length": size,
                                "base": target.custom[ringdeltas.DELTA_BASE],
                                "base_version": target.custom["base_version"]})


def parse_duration(text: str) -> int:
    """``90``, ``30m``, ``24h``, ``7d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": DAY}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not (number.isascii() and number.isdigit()) or len(number) > 12:
        raise SpecError(f"duration {text[:40]!r} is not of the form N, Ns, Nm, Nh or Nd "
                        "(ASCII digits)")
    seconds = int(number) * units[unit]
    if seconds > MAX_DAYS * DAY:
        raise SpecError(f"duration {text!r} is over {MAX_DAYS} days")
    return seconds


def promote(name: str, version: str, *, directory: Path | str, keys_dir: Path | str,
            source: str, dest: str, min_soak: int = 0, percent: int = 100,
            lifetimes: Lifetimes = DEFAULT_LIFETIMES, passphrase_env: str | None = None,
            now: int | None = None, evidence: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """List in ``dest`` exactly the entries (same hashes) that ``source`` lists for NAME
    VERSION, once they have soaked ``min_soak`` seconds in ``source``. ``evidence`` (the
    fleet's verdict, ``bundler.fleet.gate``) is signed into each entry as ``promotion``."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env).begin()
    now = _now(now)
    if not 1 <= percent <= 100:
        raise SpecError(f"--percent must be between 1 and 100, got {percent}")
    if source == dest:
        raise SpecError("--from and --to name the same ring")
    repo.sync_roots()
    snap = repo.snapshot()
    src, dst = repo.ring(source, snap), repo.ring(dest, snap)
    found = _entries(src, name, version)
    if not found:
        raise RepoRefusal(f"ring {source} does not list {name} {version}",
                          hint=f"ring {source} lists: {_listed(src)}")
    if _yanked(dst, name, version):
        raise RepoRefusal(f"{name} {version} was yanked from ring {dest}",
                          hint="promote a newer version")
    entered = min(int(t.custom.get("entered", now)) for t in found.values())
    if now - entered < min_soak:
        raise RepoRefusal(
            f"{name} {version} entered ring {source} at {_iso(entered)}; it must soak until "
            f"{_iso(entered + min_soak)} (--min-soak {min_soak}s)",
            hint="wait, or pass a shorter --min-soak")
    found.update(ringdeltas.deltas_for(src, set(found)))  # the deltas travel with them
    out = []
    for path, t in sorted(found.items()):
        old = dst.signed.targets.get(path)
        custom = dict(t.custom)
        custom["entered"] = old.custom.get("entered", now) if old is not None else now
        if not ringdeltas.is_delta(t):
            custom["percent"] = percent
        custom.pop("promotion", None)  # the source ring's own reason is not this one
        if evidence is not None:
            custom["promotion"] = dict(evidence, at=now)
        dst.signed.targets[path] = TargetFile(t.length, dict(t.hashes), path,
                                              {"custom": custom})
        out.append({"target": path, "sha256": t.hashes["sha256"], "ring": dest,
                    "percent": percent})
    done = repo.publish_set(rings={dest: dst}, lifetimes=lifetimes, now=now,
                            what=f"promote {name} {version} from {source} to {dest}")
    return [dict(o, staged=done.pending is not None) for o in out]


def yank(name: str, version: str, *, directory: Path | str, keys_dir: Path | str, ring: str,
         reason: str, lifetimes: Lifetimes = DEFAULT_LIFETIMES, passphrase_env: str | None = None,
         now: int | None = None) -> dict[str, Any]:
    """Remove NAME VERSION from ``ring`` and record the signed decision that it must not run
    there; devices on it go back to the newest version the ring still lists."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env).begin()
    now = _now(now)
    if not reason.strip():
        raise SpecError("--reason must say why the version is yanked")
    repo.sync_roots()
    md = repo.ring(ring)
    found = _entries(md, name, version)
    if not found and not _yanked(md, name, version):
        raise RepoRefusal(f"ring {ring} does not list {name} {version}",
                          hint=f"ring {ring} lists: {_listed(md)}")
    found.update(ringdeltas.deltas_for(md, set(found)))  # deltas to it go too
    for path in found:
        del md.signed.targets[path]
    record = {"name": name, "version": version, "reason": reason, "at": now}
    md.signed.unrecognized_fields[YANKED] = [
        e for e in md.signed.unrecognized_fields.get(YANKED, [])
        if (e.get("name"), e.get("version")) != (name, version)] + [record]
    done = repo.publish_set(rings={ring: md}, lifetimes=lifetimes, now=now,
                            what=f"yank {name} {version} from {ring}")
    return dict(record, ring=ring, removed=sorted(found), staged=done.pending is not None)


def refresh(*, directory: Path | str, keys_dir: Path | str,
            lifetimes: Lifetimes = DEFAULT_LIFETIMES, passphrase_env: str | None = None,
            now: int | None = None) -> list[Path]:
    """New roots from the key directory, a new snapshot and timestamp: fresh for travel.
    Key rotations are followed (targets and rotated rings re-signed), and a staged change
    whose signatures are complete goes live."""
    return _go_live(Repo(directory, keys_dir, passphrase_env=passphrase_env).begin(),
                    lifetimes=lifetimes, now=_now(now), add=False).written


def sign(*, directory: Path | str, keys_dir: Path | str, lifetimes: Lifetimes = DEFAULT_LIFETIMES,
         passphrase_env: str | None = None, drop: bool = False,
         now: int | None = None) -> dict[str, Any]:
    """Add the signatures ``keys_dir`` holds to the staged change; it goes live when every
    threshold is met and ``keys_dir`` also holds the snapshot and timestamp keys."""
    repo = Repo(directory, keys_dir, passphrase_env=passphrase_env).begin()
    found = repo.pending()
    if found is None:
        raise RepoRefusal(f"{repo.dir} has no staged change to sign",
                          hint=f"`bundle repo status {repo.dir}` lists pending changes")
    if drop:
        repo.change.deletes += [PENDING] + [f"staged/{r}" for r in found["documents"].values()]
        repo.change.deletes += [f"staged/{r}" for r in found.get("targets", [])]
        repo.txn.commit(repo.change)
        return {"dropped": found["what"], "live": False, "written": []}
    done = _go_live(repo, lifetimes=lifetimes, now=_now(now), add=True)
    return {"what": found["what"], "live": done.pending is None,
            "written": [str(p) for p in done.written], "pending": done.pending}


def _go_live(repo: Repo, *, lifetimes: Lifetimes, now: int, add: bool) -> Outcome:
    """Refresh the publication; the staged change joins it once fully signed. ``add``: sign
    the staged change with this folder's keys first (refused if they add nothing)."""
    found = repo.pending()
    if found is None:
        return repo.publish_set(rings={}, lifetimes=lifetimes, now=now, what="refresh")
    repo.sync_roots()
    docs = repo.pending_docs()
    root = repo.root().signed
    top = next((d.md for d in docs if d.role == "targets"), None) or repo.targets()
    if add:
        added = sum(repo._add_signatures(d, root, top.signed) for d in docs)
        if not added and _short(repo, docs):
            raise SpecError(f"the keys in {repo.keys_dir / 'keys'} add no signature to the "
                            f"staged change ({found['what']})",
                            hint="bring a key of a role it still needs: `bundle repo status "
                                 f"{repo.dir}` names them")
    elif _short(repo, docs):
        return repo.publish_set(rings={}, lifetimes=lifetimes, now=now, what="refresh")
    staged = [f"staged/{d.rel}" for d in docs] + [f"staged/{r}" for r in found["targets"]]
    copies = {rel: (repo.dir / "staged" / rel, *hash_file(repo.dir / "staged" / rel))
              for rel in found["targets"]}
    return repo._finish(docs, repo.snapshot(), lifetimes=lifetimes, now=now,
                        what=found["what"], copies=copies, deletes=staged + [PENDING])


def _short(repo: Repo, docs: list[Doc]) -> bool:
    """Some staged document is still short of its threshold."""
    top = next((d.md for d in docs if d.role == "targets"), None) or repo.targets()
    return bool(_shortfalls(docs, repo.root().signed, top.signed))

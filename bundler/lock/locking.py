"""`bundle lock` as one core step: resolve -> discovery gate -> (resolve the discovered images
-> gate again), or a drift check; returns a result object, prints nothing.

The CLI parses flags, calls :func:`lock_spec` (and :func:`save` to write the file) and
prints the :class:`LockResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bundler import safeyaml
from bundler.discover.lint import LintWarning
from bundler.errors import DriftError, SpecError
from bundler.fetch.sources import Sources
from bundler.lock.gate import gate, lint_lock, missing_error, pullable_missing
from bundler.lock.resolve import resolve
from bundler.spec.lockfile import Lock, drift
from bundler.spec.refs import parse_image_ref
from bundler.spec.spec import Spec
from installer.fsio import write_verified


@dataclass(frozen=True)
class LockResult:
    """What one `bundle lock` run decided."""

    lock: Lock
    previous: Lock | None
    added: dict[str, tuple[str, ...]] = field(default_factory=dict)  # bundle -> refs
    drift: tuple[str, ...] = ()         # only for check=True: empty when up to date
    drift_hint: str = ""
    warnings: dict[str, list[LintWarning]] = field(default_factory=dict)  # airgap lint

    @property
    def changed(self) -> bool:
        return self.previous is None or self.previous.dumps() != self.lock.dumps()

    def drift_error(self) -> DriftError:
        error = DriftError("the lock is out of date:\n" +
                           "\n".join(f"  - {x}" for x in self.drift), hint=self.drift_hint)
        error.details = {"drift": list(self.drift)}
        return error


def update_keys(spec: Spec) -> dict[str, str]:
    """What ``--update`` accepts: normalised image references, chart names, ``k3s`` and the
    K3s versions, and ``*``; each mapped to what it names."""
    keys = {"*": "everything", "k3s": "K3s of every bundle"}
    for b in spec.bundles.values():
        keys.setdefault(b.k3s, f"K3s of bundle {b.name}")
        for ref in b.images:
            keys.setdefault(str(ref), f"image of bundle {b.name}")
        for c in b.charts:
            keys.setdefault(c.name, f"chart of bundle {b.name}")
    return keys


def check_update(spec: Spec, update: Iterable[str], previous: Lock | None) -> None:
    """Refuse an ``--update`` value that names nothing in the spec (or its discovered
    images), listing what is valid."""
    valid = set(update_keys(spec))
    if previous is not None:
        valid |= {r for b in previous.bundles.values() for r in b.discovered}
    for u in update:
        if u in valid:
            continue
        try:
            if str(parse_image_ref(u)) in valid:
                continue
        except SpecError:
            pass
        shown = sorted(valid - {"*"})
        raise SpecError(f"--update {u!r} names nothing in {spec.path}",
                        hint="valid: '*', " + ", ".join(shown[:30]) +
                        (" ..." if len(shown) > 30 else ""))


def drift_hint(changes: Iterable[str], previous: Lock | None, new: Lock | None) -> str:
    """A hint naming the real cause of a drift: a spec edit needs a plain `bundle lock`; a
    moved tag or replaced artifact needs `--update` for exactly those entries."""
    changes = list(changes)
    if previous is None or new is None:
        return "run `bundle lock` to write it, and commit it"
    refs = _moved_refs(previous, new)
    spec_side = any(c.startswith("spec changed") or "no longer in the spec" in c
                    or "not in the lock" in c for c in changes)
    parts = []
    if spec_side:
        parts.append("the spec changed: run `bundle lock` to re-lock it")
    if refs:
        moved = " ".join(f"--update {r}" for r in sorted(set(refs)))
        parts.append(f"upstream moved: review, then `bundle lock {moved}`")
    if not parts:
        parts.append("run `bundle lock --update '*'` to re-resolve everything")
    return "; ".join(parts) + ", and commit the lock"


def _moved_refs(previous: Lock, new: Lock) -> list[str]:
    """Images, charts and K3s whose locked digest changed under the same name/version."""
    refs: list[str] = []
    for name, b in new.bundles.items():
        old = previous.bundles.get(name)
        if old is None:
            continue
        before = {i.ref: i.digest for i in old.images}
        refs += [i.ref for i in b.images if i.ref in before and before[i.ref] != i.digest]
        charts = {c.name: c.sha256 for c in old.charts}
        refs += [c.name for c in b.charts if c.name in charts and charts[c.name] != c.sha256]
        if old.k3s.version == b.k3s.version and old.k3s.to_json() != b.k3s.to_json():
            refs.append("k3s")
    return refs


def lock_spec(spec: Spec, src: Sources, *, previous: Lock | None, update: Iterable[str] = (),
              check: bool = False, add_discovered: bool = False,
              allow_unrendered: bool = False, workers: int = 16,
              on_done: Callable[[str], None] | None = None) -> LockResult:
    """Resolve ``spec`` into a lock and gate it on discovery.

    ``check``: resolve everything afresh and report drift against ``previous`` in
    ``LockResult.drift`` (raises :class:`DriftError` when there is no previous lock).
    Otherwise the gate runs on the new lock; with ``add_discovered`` the images it finds
    missing are locked too (one more resolve, then the gate again). Raises
    :class:`MissingImagesError` naming each image still missing. The airgap lint of the new
    lock's bundles is in ``LockResult.warnings`` (the caller decides whether it is fatal).
    """
    update = tuple(update)
    check_update(spec, update, previous)
    if check and previous is None:
        raise DriftError("there is no lock to check against", hint=drift_hint([], None, None))
    extra: dict[str, list[str]] = (
        {n: list(b.discovered) for n, b in previous.bundles.items()} if previous else {})
    new = resolve(spec, src, previous=None if check else previous, update=update,
                  workers=workers, on_done=on_done,
                  epoch=previous.source_date_epoch if previous else None, extra_images=extra)
    if check:
        changes = tuple(drift(previous, new)) if previous is not None else ()
        return LockResult(lock=new, previous=previous, drift=changes,
                          drift_hint=drift_hint(changes, previous, new) if changes else "")
    with safeyaml.discovery_budget(src.limits):   # one budget for all texts of this lock
        return _gate(spec, src, new, previous=previous, extra=extra, workers=workers,
                     add_discovered=add_discovered, allow_unrendered=allow_unrendered)


def _gate(spec: Spec, src: Sources, new: Lock, *, previous: Lock | None,
          extra: dict[str, list[str]], workers: int, add_discovered: bool,
          allow_unrendered: bool) -> LockResult:
    """The discovery gate and lint of a freshly resolved lock (see :func:`lock_spec`)."""
    results = gate(spec, new, src, allow_blind=allow_unrendered)
    added: dict[str, tuple[str, ...]] = {}
    if add_discovered:
        added = {n: tuple(pullable_missing(m)) for n, (_, m) in results.items()
                 if pullable_missing(m)}
        if added:
            extra = {n: [*extra.get(n, ()), *added.get(n, ())] for n in spec.bundles}
            new = resolve(spec, src, previous=new, workers=workers, extra_images=extra)
            results = gate(spec, new, src, allow_blind=allow_unrendered)
    for name, (findings, missing) in results.items():
        if missing:
            raise missing_error(name, findings, sorted(i.ref for i in new.bundles[name].images),
                                add_hint=not add_discovered and bool(pullable_missing(missing)),
                                missing=missing)
    return LockResult(lock=new, previous=previous, added=added,
                      warnings=lint_lock(spec, new, src))


def save(path: Path, result: LockResult) -> bool:
    """Write the lock when it changed (durably, all or nothing); True if written."""
    if not result.changed:
        return False
    write_verified(path, [result.lock.dumps().encode()], what=str(path))
    return True

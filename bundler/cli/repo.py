"""``bundle repo init|status|refresh|extend|push``, ``bundle publish``, ``promote``, ``yank``:
the OTA ring repository (thin layer over ``bundler.repo``; errors are mapped in ``app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from bundler.cli.context import CONTEXT, out
from bundler.cli.fleetcmd import evidence_gate, evidence_options
from bundler.fleet.reports import remember
from bundler.repo.repoextend import extend
from bundler.repo.repostatus import expiry_check, status, status_text
from bundler.repo.ringops import (
    Lifetimes,
    init_repo,
    parse_duration,
    promote,
    publish,
    refresh,
    sign,
    yank,
)

MAX_DAYS = 3660  # bundler.repo.repostore.MAX_DAYS (not imported: python-tuf loads on use)

_keys_opt = click.option("--keys", "keys_dir", required=True,
                         type=click.Path(file_okay=False, exists=True, path_type=Path),
                         help="The key directory (`bundle keys init`).")
_repo_opt = click.option("--repo", "repo_dir", required=True,
                         type=click.Path(file_okay=False, exists=True, path_type=Path),
                         help="The ring repository folder (`bundle repo init`).")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
_pass_opt = click.option("--passphrase-env", metavar="VAR", default=None,
                         help="Environment variable holding the key passphrase.")


def _lifetimes(f: Callable[..., Any]) -> Callable[..., Any]:
    for flag, default, what in (("--timestamp-days", 30, "timestamp"),
                                ("--snapshot-days", 90, "snapshot"),
                                ("--ring-days", 90, "ring and targets")):
        f = click.option(flag, type=click.IntRange(1, MAX_DAYS), default=default,
                         show_default=True,
                         help=f"Days until new {what} metadata expires.")(f)
    return f


def _lt(kw: dict[str, Any]) -> Any:
    return Lifetimes(timestamp_days=kw.pop("timestamp_days"),
                     snapshot_days=kw.pop("snapshot_days"), ring_days=kw.pop("ring_days"))


def _written(paths: list[Path]) -> str:
    return "\n".join(f"wrote {p}" for p in paths)


def _staged(items: list[dict[str, Any]], repo_dir: Path) -> str:
    if not any(i.get("staged") for i in items):
        return ""
    return (f"\nstaged, not live: signatures are missing. `bundle repo status {repo_dir}` "
            f"lists them; `bundle repo sign {repo_dir} --keys FOLDER` adds them")


@click.group("repo", context_settings=CONTEXT)
def repo() -> None:
    """The OTA ring repository (TUF metadata + bundles, one folder)."""


def _ring_keys(values: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    out_: dict[str, tuple[int, int]] = {}
    for v in values:
        ring, _, spec = v.partition("=")
        threshold, _, count = spec.partition("/")
        if not (ring and threshold.isascii() and threshold.isdigit() and count.isascii()
                and count.isdigit() and len(threshold) <= 6 and len(count) <= 6):
            raise click.BadParameter(f"{v[:40]!r}: expected RING=THRESHOLD/KEYS, e.g. "
                                     "stable=2/3", param_hint="--ring-keys")
        out_[ring] = (int(count), int(threshold))
    return out_


@repo.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_keys_opt
@click.option("--rings", default="canary,beta,stable", show_default=True,
              help="Comma-separated ring names, in rollout order.")
@click.option("--ring-keys", multiple=True, metavar="RING=T/N",
              help="Threshold and number of keys for a ring (default 1/1), e.g. stable=2/3.")
@_lifetimes
@_pass_opt
@_json_opt
def init_cmd(*, directory: Path, keys_dir: Path, rings: str, ring_keys: tuple[str, ...],
             passphrase_env: str | None, as_json: bool, **kw: Any) -> None:
    """Create a ring repository in DIRECTORY signed by the keys in KEYS."""
    names = tuple(r.strip() for r in rings.split(",") if r.strip())
    written = init_repo(directory, keys_dir, rings=names, ring_keys=_ring_keys(ring_keys),
                        lifetimes=_lt(kw), passphrase_env=passphrase_env)
    out(as_json, {"repository": str(directory), "rings": list(names),
                  "written": [str(p) for p in written]},
        _written(written) + f"\nrepository {directory}: rings {', '.join(names)}")


@repo.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--check", is_flag=True,
              help="Exit 10 when a role has expired or expires within --warn-days.")
@click.option("--warn-days", type=click.IntRange(0, MAX_DAYS), default=7, show_default=True,
              help="How close to its expiry a role counts as expiring.")
@_json_opt
def status_cmd(*, directory: Path, check: bool, warn_days: int, as_json: bool) -> None:
    """Per ring and arch: version, since when, percent, yanks; every role's expiry; staged
    changes and their signatures."""
    report = status(directory, warn_days=warn_days)
    if check and as_json:
        expiry_check(report)  # --json: exactly one document, the error object
    out(as_json, report, "\n".join(status_text(report)))
    if check:
        expiry_check(report)


@repo.command("sign")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_keys_opt
@click.option("--drop", is_flag=True, help="Discard the staged change instead.")
@_lifetimes
@_pass_opt
@_json_opt
def sign_cmd(*, directory: Path, keys_dir: Path, drop: bool, passphrase_env: str | None,
             as_json: bool, **kw: Any) -> None:
    """Add the signatures KEYS holds to the staged change; it goes live once every threshold
    is met and KEYS also holds the snapshot and timestamp keys (else at the next
    `bundle repo refresh` with them)."""
    done = sign(directory=directory, keys_dir=keys_dir, lifetimes=_lt(kw), drop=drop,
                passphrase_env=passphrase_env)
    if drop:
        text = f"dropped the staged change: {done['dropped']}"
    elif done["live"]:
        text = _written([Path(p) for p in done["written"]]) + f"\nlive: {done['what']}"
    else:
        text = f"signed, still staged: {done['what']}" + "".join(
            f"\n  {s['role']} v{s['version']}: {s['present']} of {s['needed']} signature(s)"
            for s in done["pending"]["signatures"])
    out(as_json, done, text)


@repo.command("refresh")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_keys_opt
@_lifetimes
@_pass_opt
@_json_opt
def refresh_cmd(*, directory: Path, keys_dir: Path, passphrase_env: str | None, as_json: bool,
                **kw: Any) -> None:
    """New timestamp and snapshot (and new roots from KEYS) just before a stick is written."""
    written = refresh(directory=directory, keys_dir=keys_dir, lifetimes=_lt(kw),
                      passphrase_env=passphrase_env)
    out(as_json, {"written": [str(p) for p in written]}, _written(written))


@click.command("publish", context_settings=CONTEXT)
@click.argument("bundles", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_repo_opt
@click.option("--ring", required=True, help="Ring to list the bundles in (usually the first).")
@_keys_opt
@click.option("--deltas", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Also publish deltas from this many of the newest releases the ring (and "
                   "the rings before it) list for the arch; 0: none.")
@_lifetimes
@_pass_opt
@_json_opt
def publish_cmd(*, bundles: tuple[Path, ...], repo_dir: Path, ring: str, keys_dir: Path,
                deltas: int, passphrase_env: str | None, as_json: bool, **kw: Any) -> None:
    """Verify BUNDLES against the repository's root, store them by content, list them in RING."""
    added = publish(list(bundles), directory=repo_dir, keys_dir=keys_dir, ring=ring,
                    lifetimes=_lt(kw), passphrase_env=passphrase_env, deltas=deltas)
    out(as_json, {"published": added}, "\n".join(
        f"published {a['target']} to {a['ring']} (sha256 {a['sha256'][:12]}, "
        f"{a['length']} bytes)" + "".join(
            f"\n  delta over {d['base_version']}: {d['target']} ({d['length']} bytes)"
            for d in a.get("deltas", [])) for a in added) + _staged(added, repo_dir))


@click.command("promote", context_settings=CONTEXT)
@click.argument("name")
@click.argument("version")
@_repo_opt
@click.option("--from", "source", required=True, help="Ring that lists NAME VERSION now.")
@click.option("--to", "dest", required=True, help="Ring to list it in.")
@_keys_opt
@click.option("--min-soak", default="0", show_default=True, metavar="DURATION",
              help="Time it must have spent in --from first: 30m, 24h, 7d.")
@click.option("--percent", type=click.IntRange(1, 100), default=100, show_default=True,
              help="Fraction of --to's devices that take it (raise by promoting again).")
@evidence_options
@_lifetimes
@_pass_opt
@_json_opt
def promote_cmd(*, name: str, version: str, repo_dir: Path, source: str, dest: str,
                keys_dir: Path, min_soak: str, percent: int, passphrase_env: str | None,
                as_json: bool, **kw: Any) -> None:
    """List in --to the very entries (same hashes) --from lists for NAME VERSION."""
    soak = parse_duration(min_soak)
    gate = evidence_gate(kw, name=name, version=version, repo_dir=repo_dir, source=source,
                         dest=dest, percent=percent, min_soak=soak)
    if gate is not None and gate.get("dry_run"):
        out(as_json, gate["plan"], "\n".join(gate["text"]))
        return
    done = promote(name, version, directory=repo_dir, keys_dir=keys_dir, source=source,
                   dest=dest, min_soak=soak, percent=percent,
                   lifetimes=_lt(kw), passphrase_env=passphrase_env,
                   evidence=gate["record"] if gate else None)
    if gate is not None:
        remember(repo_dir, gate["collected"])
    out(as_json, {"promoted": done, "evidence": gate["record"] if gate else None}, "\n".join(
        f"promoted {d['target']} to {d['ring']} at {d['percent']}% (sha256 "
        f"{d['sha256'][:12]})" for d in done) + _staged(done, repo_dir)
        + (f"\nevidence: {gate['reason']}" if gate else ""))


@click.command("yank", context_settings=CONTEXT)
@click.argument("name")
@click.argument("version")
@_repo_opt
@click.option("--ring", required=True)
@_keys_opt
@click.option("--reason", required=True, help="Why; recorded in the signed ring metadata.")
@_lifetimes
@_pass_opt
@_json_opt
def yank_cmd(*, name: str, version: str, repo_dir: Path, ring: str, keys_dir: Path, reason: str,
             passphrase_env: str | None, as_json: bool, **kw: Any) -> None:
    """Sign the decision that NAME VERSION must not run in RING."""
    done = yank(name, version, directory=repo_dir, keys_dir=keys_dir, ring=ring, reason=reason,
                lifetimes=_lt(kw), passphrase_env=passphrase_env)
    out(as_json, done, f"yanked {name} {version} from ring {ring}: {reason}"
        + _staged([done], repo_dir))


@repo.command("extend")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_keys_opt
@click.option("--days", type=int, default=14, show_default=True,
              help="How long the override lasts (at most 90).")
@click.option("--reason", required=True, help="Why; recorded in the signed override.")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="timestamp, snapshot, targets or a ring; repeatable (default: every role "
                   "that expires within --days).")
@_pass_opt
@_json_opt
def extend_cmd(*, directory: Path, keys_dir: Path, days: int, reason: str,
               roles: tuple[str, ...], passphrase_env: str | None, as_json: bool) -> None:
    """Sign, with the ROOT keys, metadata/override.json: devices accept the named roles'
    current (possibly expired) documents, byte for byte, for --days more days (THREATS 17).

    Use it when metadata on a cut-off site expired and its ring keys are out of reach;
    otherwise `bundle repo refresh` (and publish/promote) are the normal way to stay fresh.
    Copy the repository folder to the stick (or push it) afterwards as usual.
    """
    done = extend(directory=directory, keys_dir=keys_dir, days=days, reason=reason,
                  roles=list(roles) or None, passphrase_env=passphrase_env)
    names = ", ".join(f"{e['role']} v{e['version']}" for e in done["extend"])
    out(as_json, done, f"wrote {done['written']}: override v{done['version']} extends {names} "
                       f"until {done['expires']}")


from bundler.cli.fleet import repo_push_cmd  # noqa: E402 - `bundle repo push` lives with push/pull

repo.add_command(repo_push_cmd, "push")

commands = [repo, publish_cmd, promote_cmd, yank_cmd]

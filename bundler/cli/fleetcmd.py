"""``bundle fleet enroll|status``: device reports at the desk (thin layer over
``bundler.fleet``; docs/fleet.md, "Closing the loop"), and the ``--reports`` options
``bundle promote`` shares."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import click

from bundler.cli.context import CONTEXT, out
from bundler.fleet import gate, html, reports, status
from bundler.repo.repostore import Repo
from installer.errors import ToolError
from installer.fsio import write_verified
from installer.sources import ocidist

_repo_opt = click.option("--repo", "repo_dir", required=True,
                         type=click.Path(file_okay=False, exists=True, path_type=Path),
                         help="The ring repository; the fleet state is kept beside it, in "
                              "REPO.fleet/ (never served to devices).")
_reports_opt = click.option("--reports", "sources", multiple=True, metavar="SRC",
                            help="Reports: a folder (a stick devices wrote with --report-to) "
                                 "or oci://HOST/REPO; repeatable.")


def reports_access(f: Any) -> Any:
    """``--reports-ca-file`` and ``--reports-credentials-file`` for an oci:// SRC."""
    f = click.option("--reports-ca-file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, metavar="PEM",
                     help="CA certificates of the reports registry (default: the system's).")(f)
    f = click.option("--reports-credentials-file",
                     type=click.Path(dir_okay=False, path_type=Path), default=None,
                     metavar="FILE", help="Credentials for the reports registry (default: "
                                          "$AIRGAP_REGISTRY_USERNAME/_PASSWORD).")(f)
    return f


def access(kw: dict[str, Any]) -> dict[str, Any]:
    ca, creds = kw.pop("reports_ca_file", None), kw.pop("reports_credentials_file", None)
    return {"ca_file": str(ca) if ca else None,
            "credentials": ocidist.credentials_from(str(creds) if creds else None, os.environ)}


@click.group("fleet", context_settings=CONTEXT)
def fleet() -> None:
    """Device reports: enroll devices, see the fleet (docs/fleet.md)."""


@fleet.command("enroll")
@_reports_opt
@_repo_opt
@click.option("--accept-new", is_flag=True, help="Enroll every device not enrolled yet.")
@click.argument("device_ids", nargs=-1, metavar="[DEVICE_ID...]")
@reports_access
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def enroll_cmd(*, sources: tuple[str, ...], repo_dir: Path, accept_new: bool,
               device_ids: tuple[str, ...], as_json: bool, **kw: Any) -> None:
    """Record the public keys of devices whose reports are in SRC: every new one
    (--accept-new) or those named (full id or 8+ digit prefix)."""
    if not sources:
        raise click.UsageError("give --reports SRC")
    added = reports.enroll(repo_dir, list(sources), accept_new=accept_new,
                   device_ids=list(device_ids), now=int(time.time()), **access(kw))
    out(as_json, {"enrolled": added}, "\n".join(
        f"enrolled {a['device_id'][:16]} ({a['hostname']}, ring {a['ring']})" for a in added)
        or "no new device")


@fleet.command("status")
@_reports_opt
@_repo_opt
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the status as one static HTML page.")
@click.option("--stale-days", type=click.IntRange(min=0), default=7, show_default=True,
              help="Flag devices whose newest report is older than this.")
@reports_access
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def status_cmd(*, sources: tuple[str, ...], repo_dir: Path, html_file: Path | None,
               stale_days: int, as_json: bool, **kw: Any) -> None:
    """One row per enrolled device, totals per ring and version, rejected reports."""
    collected = reports.load_reports(repo_dir, list(sources), **access(kw))
    report = status.status(collected, reports.load_enrolled(repo_dir), now=int(time.time()),
                           stale_days=stale_days)
    reports.remember(repo_dir, collected)
    if html_file is not None:
        order = _ring_order(repo_dir)
        write_verified(html_file, [html.render(report, order=order).encode()], mode=0o644)
    out(as_json, report, "\n".join(status.text(report)))


def _ring_order(repo_dir: Path) -> list[str]:
    try:
        return list(Repo(repo_dir, keys_dir=".").rings())
    except (ToolError, OSError, ValueError, KeyError):  # the page renders rings by name
        return []


def evidence_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``bundle promote``'s fleet options: --reports, --require-healthy, --require-fraction,
    --dry-run (and how to reach a reports registry)."""
    f = reports_access(f)
    for opt in reversed((
            click.option("--reports", "sources", multiple=True, metavar="SRC",
                         help="Device reports (folder or oci://HOST/REPO, repeatable): "
                              "promote only on the fleet's evidence (docs/fleet.md)."),
            click.option("--require-healthy", type=click.IntRange(min=0), default=None,
                         metavar="N", help="With --reports: at least N enrolled devices of "
                                           "--from healthy on VERSION (default 1)."),
            click.option("--require-fraction", type=click.FloatRange(0, 1), default=None,
                         metavar="F", help="With --reports: at least F of those that reported "
                                           "healthy (default 1.0)."),
            click.option("--dry-run", is_flag=True,
                         help="Judge the evidence and list which enrolled devices of --to "
                              "would move; write nothing."))):
        f = opt(f)
    return f


def evidence_gate(kw: dict[str, Any], *, name: str, version: str, repo_dir: Path,
                  source: str, dest: str, percent: int, min_soak: int) -> dict[str, Any] | None:
    """The fleet gate (bundler/fleet/gate.py), or None when no report option is given."""
    sources, dry_run = list(kw.pop("sources")), kw.pop("dry_run")
    healthy, fraction = kw.pop("require_healthy"), kw.pop("require_fraction")
    reach = access(kw)
    if not sources and not dry_run:
        if healthy is not None or fraction is not None:
            raise click.UsageError("--require-healthy/--require-fraction need --reports SRC")
        return None
    rule = gate.Rule(name, version, source, require_healthy=1 if healthy is None else healthy,
                     require_fraction=1.0 if fraction is None else fraction,
                     min_soak=min_soak)
    result = gate.check(repo_dir=repo_dir, sources=sources, rule=rule, dest=dest,
                        percent=percent, now=int(time.time()), **reach)
    if dry_run:
        plan = {k: result[k] for k in ("allowed", "reason", "verdicts", "movers")}
        return {"dry_run": True, "plan": dict(plan, dry_run=True),
                "text": gate.plan_text(result, dest=dest, percent=percent)}
    if not result["allowed"]:
        raise gate.refusal(result, rule)
    return result


commands = [fleet]

"""``bundle fleet enroll|status``: device reports at the desk (thin layer over
``bundler.fleet``; docs/fleet.md, "Closing the loop"), and the ``--reports`` options
``bundle promote`` shares."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from bundler.cli.context import CONTEXT, out

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
    from installer.sources import ocidist
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
    from bundler.fleet.reports import enroll
    if not sources:
        raise click.UsageError("give --reports SRC")
    added = enroll(repo_dir, list(sources), accept_new=accept_new,
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
    from bundler.fleet import html, reports, status
    collected = reports.load_reports(repo_dir, list(sources), **access(kw))
    report = status.status(collected, reports.load_enrolled(repo_dir), now=int(time.time()),
                           stale_days=stale_days)
    reports.remember(repo_dir, collected)
    if html_file is not None:
        from installer.fsio import write_verified
        order = _ring_order(repo_dir)
        write_verified(html_file, [html.render(report, order=order).encode()], mode=0o644)
    out(as_json, report, "\n".join(status.text(report)))


def _ring_order(repo_dir: Path) -> list[str]:
    from bundler.repo.repostore import Repo
    from installer.errors import ToolError
    try:
        return list(Repo(repo_dir, keys_dir=".").rings())
    except (ToolError, OSError, ValueError, KeyError):  # the page renders rings by name
        return []


commands = [fleet]

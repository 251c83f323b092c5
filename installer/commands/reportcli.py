"""The command-line side of reports and dry runs (registered by ``cli``): ``airgap-install
report``, ``--report-to``/``--report-credentials-file`` and ``--dry-run`` on install, sync and
rollback, and the hook ``cli`` calls after each of them."""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from installer.commands import install, plan, report
from installer.commands.results import Json, Result
from installer.errors import ConfigError, InstallerError
from installer.fsio import write_verified
from installer.host import identity
from installer.host.layout import Layout
from installer.sources import ocidist

COMMANDS = ("report",)
REPORTING = ("install", "sync", "rollback")


def add_reporting(p: argparse.ArgumentParser, *, dry_run: bool = True) -> None:
    p.add_argument("--report-to", metavar="SINK", default=None,
                   help="also write this command's signed report to SINK: a folder (e.g. a "
                        "USB stick) or oci://HOST/REPO (https off loopback)")
    p.add_argument("--report-credentials-file", metavar="FILE", default=None,
                   help="registry credentials for an oci:// SINK (default: "
                        "$AIRGAP_REGISTRY_USERNAME and $AIRGAP_REGISTRY_PASSWORD)")
    if dry_run:
        p.add_argument("--dry-run", action="store_true",
                       help="print the plan (what would be fetched, installed, removed, "
                            "run) and change nothing")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser("report", parents=[common],
                       help="sign a report of what this device runs, for `bundle fleet`")
    r.add_argument("--out", metavar="FILE", default=None,
                   help="write the report to FILE (default: print it on stdout)")
    add_reporting(r, dry_run=False)


def _credentials(args: argparse.Namespace) -> Optional[ocidist.Credentials]:
    sink = getattr(args, "report_to", None)
    if not sink or not sink.startswith("oci://"):
        return None
    return ocidist.credentials_from(
        args.report_credentials_file or getattr(args, "credentials_file", None), os.environ)


def _ca(args: argparse.Namespace) -> Optional[str]:
    ca = getattr(args, "ca_file", None)
    return os.path.abspath(ca) if ca else None


@dataclass(frozen=True)
class ReportMade(Result):
    """``report``: the signed part, where it went, or the whole file when printed."""

    fields: Json

    def to_json(self) -> Json:
        return dict(self.fields)

    def to_text(self) -> List[str]:
        if "document" in self.fields:
            return [self.fields["document"]]
        s = self.fields["report"]
        where = ", ".join(x for x in (self.fields.get("written"), self.fields.get("sent")) if x)
        return [f"report {s['sequence']} of device {s['device_id'][:16]} ({s['hostname']}): "
                f"{where}"]


@dataclass(frozen=True)
class WithDevice(Result):
    """``status`` plus this device's identity (``device_id``, ``hostname``)."""

    inner: Result
    device: Json

    def to_json(self) -> Json:
        return dict(self.inner.to_json(), **self.device)

    def to_text(self) -> List[str]:
        who = self.device["device_id"] or "none yet (made by trust or the first report)"
        return self.inner.to_text() + [f"device: {who} ({self.device['hostname']})"]

    def damaged(self) -> int:
        return self.inner.damaged()


def run(args: argparse.Namespace, layout: Layout) -> ReportMade:
    """``airgap-install report``."""
    if not os.path.exists(layout.trust_anchor):
        raise ConfigError("this device trusts no root yet",
                          hint="run `airgap-install trust ROOT_JSON --ring NAME` first")
    made = report.make(layout, "report")
    out: Dict[str, Any] = {"report": made["signed"], "file": made["name"]}
    if args.out:
        dest = os.path.abspath(args.out)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        write_verified(dest, [made["data"]], mode=0o644)
        out["written"] = dest
    elif not args.report_to:
        out["document"] = str(made["data"], "utf-8")
    if args.report_to:
        out["sent"] = report.deliver(made, args.report_to, ca_file=_ca(args),
                                     credentials=_credentials(args))
    return ReportMade(out)


def dry_run(args: argparse.Namespace, layout: Layout,
            request: Callable[[], Any]) -> Optional[Result]:
    """The plan instead of the command when ``--dry-run`` is given (else None)."""
    if not getattr(args, "dry_run", False):
        return None
    if args.command == "install":
        return plan.install_plan(layout, request())
    if args.command == "rollback":
        return plan.rollback_plan(layout, skip_start=args.skip_start,
                                  allow_k3s_downgrade=args.allow_k3s_downgrade)
    return plan.sync_plan(layout, request())


def after(args: argparse.Namespace, layout: Layout, result: Optional[Result], *,
          error: Optional[InstallerError], say: install.Report) -> None:
    """After install, sync and rollback: the signed report (a failed delivery is a warning:
    the command's own outcome stands; ``airgap-install report --report-to`` sends again)."""
    if args.command not in REPORTING or getattr(args, "dry_run", False):
        return
    try:
        where = report.after_command(layout, args.command,
                                     None if result is None else result.to_json(), error=error,
                                     sink=args.report_to, ca_file=_ca(args),
                                     credentials=_credentials(args))
    except (InstallerError, OSError) as e:
        say(f"warning: the report was not delivered: {e}")
        return
    if where and args.report_to:
        say(f"report written to {where}")


def trusted(layout: Layout) -> None:
    """``trust`` makes the device's key pair (once)."""
    identity.ensure(layout)


def with_device(layout: Layout, status: Result) -> WithDevice:
    """``status`` shows the device's identity (read-only: none is made here)."""
    try:
        ident = identity.load(layout)
    except InstallerError as e:
        print(f"airgap-install: warning: {e}", file=sys.stderr)
        ident = None
    return WithDevice(status, {"device_id": ident["device_id"] if ident else None,
                               "hostname": identity.hostname(layout)})

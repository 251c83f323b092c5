"""The ``config`` and ``sync`` subcommands of ``airgap-install`` (registered by ``cli``)."""

import argparse
import os
import time
from typing import Any, Callable, Dict

from installer.commands import plan, reportcli, sync
from installer.commands.results import Result
from installer.errors import ConfigError, ExpiryCheckFailed
from installer.host.layout import Layout
from installer.host.state import Options
from installer.sources import ocidist, transfer

COMMANDS = ("config", "sync")


def add_parsers(sub: Any, common: argparse.ArgumentParser,
                locking: argparse.ArgumentParser) -> None:
    c = sub.add_parser("config", parents=[common],
                       help="local settings: `config ring NAME` (the ring this device follows)")
    c.add_argument("key", choices=["ring"])
    c.add_argument("value", metavar="NAME")

    s = sub.add_parser("sync", parents=[common, locking],
                       help="install what this device's ring lists (TUF ring repository)")
    s.add_argument("--source", required=True, metavar="FOLDER|URL",
                   help="the ring repository: a folder (`bundle repo` output, e.g. a USB "
                        "stick), http(s)://MIRROR (that folder behind a static web server) "
                        "or oci://HOST/REPO[:TAG] (pushed to a registry)")
    s.add_argument("--ca-file", metavar="PEM",
                   help="CA certificates for an https mirror or a registry (default: the "
                        "system's)")
    s.add_argument("--plain-http", action="store_true",
                   help="allow plain http to a host that is not loopback (what is fetched "
                        "is verified either way)")
    s.add_argument("--credentials-file", metavar="FILE",
                   help="registry credentials for oci:// ({\"username\": .., \"password\": "
                        "..} or user:password; default: $AIRGAP_REGISTRY_USERNAME and "
                        "$AIRGAP_REGISTRY_PASSWORD)")
    s.add_argument("--transfer-timeout", type=float, default=transfer.TRANSFER_TIMEOUT,
                   metavar="SECONDS",
                   help="give up a download from a mirror or registry that has not finished "
                        "by then, plus 1 s per 64 KiB of its size (300); it resumes next time")
    s.add_argument("--health-cmd", metavar="CMD", default=None,
                   help="shell command that exits 0 when the update is healthy (default: "
                        "K3s /readyz and every kube-system Deployment available)")
    s.add_argument("--health-timeout", type=float, default=300, metavar="SECONDS",
                   help="roll back when the health command has not passed by then (300)")
    s.add_argument("--health-interval", type=float, default=2, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    role = s.add_mutually_exclusive_group()
    role.add_argument("--server", dest="role", action="store_const", const="server")
    role.add_argument("--agent", dest="role", action="store_const", const="agent")
    s.add_argument("--url", help="server to join (first install of an agent)")
    s.add_argument("--token-file", metavar="F", help="file holding the join token")
    s.add_argument("--exec", dest="exec_args", default=None, metavar='"ARGS"')
    s.add_argument("--skip-start", action="store_true", default=None)
    s.add_argument("--arch", help="architecture (with --root other than / only)")
    reportcli.add_reporting(s)


def _options(args: argparse.Namespace) -> Any:
    given = (args.url, args.token_file, args.exec_args, args.skip_start)
    if all(v is None for v in given):
        return None
    token = os.path.abspath(args.token_file) if args.token_file else None
    if token is not None and not os.path.isfile(token):
        raise ConfigError(f"--token-file {token} does not exist")
    return Options(exec_args=args.exec_args or "", url=args.url, token_file=token,
                   skip_start=bool(args.skip_start))


def run(args: argparse.Namespace, layout: Layout,
        report: Callable[[str], None]) -> Result:
    if args.command == "config":
        return sync.set_ring(layout, args.value)
    if not 0 < args.transfer_timeout <= 7 * 86400:
        raise ConfigError(f"--transfer-timeout {args.transfer_timeout:g}: give 1 to 604800 "
                          "seconds")
    credentials = None
    if args.source.startswith("oci://"):
        credentials = ocidist.credentials_from(args.credentials_file, os.environ)
    elif args.credentials_file:
        raise ConfigError("--credentials-file is for an oci:// source",
                          hint="a folder or http(s) mirror is read without credentials")
    req = sync.SyncRequest(source=args.source, health_cmd=args.health_cmd,
                           health_timeout=args.health_timeout,
                           health_interval=args.health_interval, role=args.role,
                           options=_options(args), arch=args.arch, wait=args.wait,
                           plain_http=args.plain_http,
                           ca_file=os.path.abspath(args.ca_file) if args.ca_file else None,
                           credentials=credentials, transfer_timeout=args.transfer_timeout)
    if args.dry_run:
        return plan.sync_plan(layout, req)
    return sync.sync(layout, req, report=report)


def check_expiry(info: Dict[str, Any], *, now: int, warn_days: int) -> None:
    """``status --check``: raise naming every role of the last sync's metadata that has
    expired or expires within ``warn_days`` days (exit 10)."""
    bad = []
    for role, v in sorted((info.get("metadata") or {}).items()):
        left = (v["expires"] - now) / 86400
        if left < warn_days:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v["expires"]))
            bad.append("{} v{} {} {}".format(role, v["version"],
                                             "EXPIRED" if left <= 0 else "expires", when))
    if bad:
        raise ExpiryCheckFailed(
            "{} role(s) expired or expiring within {} days: {}".format(
                len(bad), warn_days, "; ".join(bad)),
            hint="bring freshly refreshed metadata (`bundle repo refresh`) and run "
                 "`airgap-install sync`")

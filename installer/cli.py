"""``airgap-install``: the command line. Parses arguments, calls ``install``, prints the
result (text or ``--json``) and maps errors to exit codes (``errors.EXIT_CODES``). Nothing
else in the installer prints or exits."""

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import replace
from typing import Any, Dict, List, NoReturn, Optional

from installer import __version__
from installer.commands import install, progress, reconfigure, reportcli, sync, synccli
from installer.commands.results import ReceiptWritten, Result
from installer.errors import (
    EXIT_CODES,
    ConfigError,
    DigestMismatch,
    EnvironmentProblem,
    InstallerError,
)
from installer.format import safetext
from installer.host import receipt
from installer.host.layout import Layout
from installer.host.options import Given


class UsageError(ConfigError):
    """A command line argparse refused (exit 2), reported like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")


def epilog() -> str:
    """The exit-code table of ``installer/errors.py``, for ``--help`` (the docs are not on the
    USB stick; the installer is)."""
    width = max(len(str(c)) for c in EXIT_CODES)
    rows = "\n".join(f"  {c:>{width}}  {m}" for c, m in sorted(EXIT_CODES.items()))
    return ("exit codes:\n" + rows + "\n\nWith --json, the result is one JSON object on stdout; "
            'an error is {"error": {"code": N, "kind": "...", "message": "...", "hint": ...}}.')


def _option_args(p: argparse.ArgumentParser, *, role: bool = True) -> None:
    """Node options; each one not given keeps the installed value (see
    installer/host/options.py)."""
    if role:
        r = p.add_mutually_exclusive_group()
        r.add_argument("--server", dest="role", action="store_const", const="server",
                       help="K3s role server (default: the installed role)")
        r.add_argument("--agent", dest="role", action="store_const", const="agent",
                       help="K3s role agent (needs --url and --token-file once)")
    p.add_argument("--url", help="server to join (K3S_URL), e.g. https://10.0.0.1:6443; "
                                 "remembered; --url '' forgets it")
    p.add_argument("--token-file", metavar="F", help="file holding the join token; remembered")
    p.add_argument("--exec", dest="exec_args", default=None, metavar='"ARGS"',
                   help='extra K3s arguments, e.g. --exec "--disable traefik"; remembered; '
                        '--exec "" drops them')
    _start_args(p)


def _start_args(p: argparse.ArgumentParser) -> None:
    s = p.add_mutually_exclusive_group()
    s.add_argument("--skip-start", dest="skip_start", action="store_const", const=True,
                   default=None, help="do not start K3s (INSTALL_K3S_SKIP_START=true); "
                                      "remembered")
    s.add_argument("--start", dest="skip_start", action="store_const", const=False,
                   help="start K3s again after a remembered --skip-start")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--root", default="/", metavar="DIR",
                        help="install root (default /); for images and tests")
    common.add_argument("--json", action="store_true",
                        help="print the result (or the error) as one JSON object on stdout")
    common.add_argument("--quiet", "-q", action="store_true",
                        help="no progress or step messages on stderr (warnings and errors only)")
    locking = _Parser(add_help=False)
    locking.add_argument("--wait", action="store_true",
                         help="wait for another running airgap-install instead of failing")

    p = _Parser(
        prog="airgap-install",
        description="Verify and install signed K3s airgap bundles offline.",
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version="airgap-install " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("trust", parents=[common, locking],
                       help="pin the trust anchor root.json (first use only)")
    t.add_argument("root_json", metavar="ROOT_JSON")
    t.add_argument("--ring", help="also set the ring this device follows (local config)")

    v = sub.add_parser("verify", parents=[common],
                       help="check a bundle fully (signatures, every member); change nothing")
    v.add_argument("bundle", metavar="BUNDLE|FOLDER")
    v.add_argument("--arch", help="architecture to pick from a folder (with --root only)")

    i = sub.add_parser("install", parents=[common, locking],
                       help="verify and install a bundle, or the newest one in a folder")
    i.add_argument("bundle", metavar="BUNDLE|FOLDER")
    _option_args(i)
    i.add_argument("--arch", help="install this architecture (with --root other than / only)")
    i.add_argument("--switch-bundle", action="store_true",
                   help="replace an installed bundle of another name")
    reportcli.add_reporting(i)

    st = sub.add_parser("status", parents=[common], help="show what is installed")
    st.add_argument("--verify", action="store_true",
                    help="also hash every placed file and kept copy against the installed "
                         "manifest; exit 3 listing each difference")
    st.add_argument("--check", action="store_true",
                    help="exit 10 when trust metadata from the last sync has expired or "
                         "expires within --warn-days, naming each role")
    st.add_argument("--warn-days", type=_warn_days, default=7, metavar="N",
                    help="with --check: how close to expiry counts (default 7)")

    rc = sub.add_parser("receipt", parents=[common],
                        help="what this host holds, for `bundle build --delta-from`")
    rc.add_argument("--out", metavar="FILE", default="-",
                    help="write the receipt to FILE (default: print it on stdout)")

    c = sub.add_parser("reconfigure", parents=[common, locking],
                       help="re-run install.sh of the installed release with new options")
    _option_args(c)

    r = sub.add_parser("rollback", parents=[common, locking],
                       help="go back to the previous release, atomically")
    _start_args(r)
    r.add_argument("--allow-k3s-downgrade", action="store_true",
                   help="roll back across a K3s minor (needs a datastore snapshot of it)")
    reportcli.add_reporting(r)
    reportcli.add_parser(sub, common)

    sub.add_parser("recover", parents=[common, locking],
                   help="finish or undo a change interrupted by a crash")
    synccli.add_parsers(sub, common, locking)
    return p


def _given(args: argparse.Namespace) -> Given:
    token_file = args.token_file
    if token_file:
        token_file = os.path.abspath(token_file)
        if not os.path.isfile(token_file):
            raise ConfigError(f"--token-file {token_file} does not exist")
    return Given(role=args.role, exec_args=args.exec_args, url=args.url,
                 token_file=token_file, skip_start=args.skip_start)


def _request(args: argparse.Namespace) -> install.InstallRequest:
    return install.InstallRequest(source=args.bundle, given=_given(args), arch=args.arch,
                                  switch_bundle=args.switch_bundle, wait=args.wait)


def _main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        return _fail(argparse.Namespace(json="--json" in argv), e)
    try:
        check_args(args)
    except InstallerError as e:
        return _fail(args, e)
    layout = Layout(os.path.abspath(args.root))

    def report(message: str) -> None:
        if not args.quiet or message.startswith("warning"):
            print("airgap-install: " + safetext.escape(message), file=sys.stderr)

    meter = None if args.json or args.quiet else progress.factory(report)
    try:
        result = _run(args, layout, report, meter=meter)
    except InstallerError as e:
        reportcli.after(args, layout, None, error=e, say=report)
        return _fail(args, e)
    except OSError as e:
        where = " ".join(x for x in (e.filename, e.filename2) if x)
        return _fail(args, EnvironmentProblem(
            "{}{}".format(e.strerror or e, (": " + where) if where else ""),
            hint="check permissions and free space there"))
    except Exception as e:  # a bug: say so, with the trace
        traceback.print_exc()
        print("airgap-install: internal error (exit 1): please report it with the output above",
              file=sys.stderr)
        if args.json:
            print(json.dumps(error_object(1, "InternalError", f"{type(e).__name__}: {e}",
                                          hint="please report it with the output on stderr"),
                             indent=1, sort_keys=True))
        return 1
    reportcli.after(args, layout, result, error=None, say=report)
    if args.json:
        print(json.dumps(result.to_json(), indent=1, sort_keys=True))
    else:
        for line in result.to_text():
            print(safetext.escape(line))
    damaged = result.damaged()
    if damaged:  # status --verify found differences (or a repair left some): exit 3
        print(f"airgap-install: error: {damaged} placed file(s) differ from the "
              "installed manifest", file=sys.stderr)
        return DigestMismatch.exit_code
    return 0


def _run(args: argparse.Namespace, layout: Layout, report: install.Report,
         *, meter: Optional[install.Progress]) -> Result:
    if args.command == "trust":
        pinned = install.trust_root(layout, args.root_json, wait=args.wait)
        reportcli.trusted(layout)
        if args.ring:
            pinned = replace(pinned, ring=sync.set_ring(layout, args.ring).ring)
        return pinned
    if args.command in synccli.COMMANDS:
        return synccli.run(args, layout, report)
    if args.command in reportcli.COMMANDS:
        return reportcli.run(args, layout)
    planned = reportcli.dry_run(args, layout, lambda: _request(args))
    if planned is not None:
        return planned
    if args.command == "verify":
        return install.verify_bundle(layout, args.bundle, arch=args.arch, progress=meter)
    if args.command == "install":
        return install.install(layout, _request(args), report=report, progress=meter)
    if args.command == "reconfigure":
        return reconfigure.reconfigure(layout, _given(args), wait=args.wait, report=report)
    if args.command == "receipt":
        written = receipt.write(layout, args.out)
        return ReceiptWritten(receipt=written["receipt"], fields=written)
    if args.command == "status":
        result = replace(install.status(layout, check=args.verify), sync=sync.sync_status(layout))
        if args.check:
            synccli.check_expiry(result.sync or {}, now=int(time.time()),
                                 warn_days=args.warn_days)
        return reportcli.with_device(layout, result)
    if args.command == "rollback":
        return install.rollback(layout, wait=args.wait, skip_start=args.skip_start,
                                allow_k3s_downgrade=args.allow_k3s_downgrade,
                                report=report)
    return install.recover(layout, wait=args.wait, report=report)


def _warn_days(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text[:20]!r}")
    return int(text)


def error_object(code: int, kind: str, message: str, *, hint: Optional[str]) -> Dict[str, Any]:
    """The one JSON error shape of ``--json`` (docs/exit-codes.md)."""
    return {"error": {"code": code, "kind": kind, "message": message, "hint": hint}}


def check_args(args: argparse.Namespace) -> None:
    """Every option value is one line of printable text (THREATS 52); a health command is a
    shell script and may span lines."""
    for key, value in sorted(vars(args).items()):
        if isinstance(value, str):
            safetext.check_value(value, what="--" + key.replace("_args", "").replace("_", "-"),
                                 allow="\n\t" if key == "health_cmd" else "")


def _fail(args: argparse.Namespace, e: InstallerError) -> int:
    """The one error printer: what, where and the hint, control characters escaped."""
    text = safetext.escape(e.message) + (f"\n  hint: {safetext.escape(e.hint)}" if e.hint
                                           else "")
    print(f"airgap-install: error: {text}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(error_object(e.exit_code, type(e).__name__, e.message, hint=e.hint),
                         indent=1, sort_keys=True))
    return e.exit_code



# Exit codes of the two signals a terminal user sends, as shells report them (128 + signal):
INTERRUPTED = 130  # Ctrl-C (SIGINT)
PIPE_CLOSED = 141  # the reader went away (`airgap-install status | head -1`), like SIGPIPE


def main(argv: Optional[List[str]] = None) -> int:
    """``airgap-install``: :func:`_main`, quiet on Ctrl-C and on a closed stdout (no traceback).
    Every file the installer writes goes through a temp file and a rename (``fsio``), and an
    interrupted install or sync is finished or undone by the next command (the journal)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        print(f"airgap-install: interrupted (exit {INTERRUPTED}); run the command again",
              file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # nobody reads stdout any more: send what is still buffered nowhere, exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``airgap-install``: the command line. Parses arguments, calls ``install``, prints the
result (text or ``--json``) and maps errors to exit codes (``errors.EXIT_CODES``). Nothing
else in the installer prints or exits."""

import argparse
import json
import os
import sys
import traceback
from typing import Any, Dict, List, NoReturn, Optional

from installer import __version__
from installer.commands import install, progress, reconfigure, reportcli, sync, synccli
from installer.errors import (
    EXIT_CODES,
    ConfigError,
    DigestMismatch,
    EnvironmentProblem,
    InstallerError,
)
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


def _text(result: Dict[str, Any]) -> List[str]:
    lines = []
    if "receipt" in result:
        if result["receipt"] == "-":
            return [receipt.Receipt.text(result["document"])]
        return ["wrote receipt {receipt} ({bytes} bytes): {name} {version} ({arch}), "
                "{members} members, manifest {digest}".format(**result)]
    if "installed" in result:  # status
        cur, prev = result["installed"], result["previous"]
        lines.append("installed: " + (_release(cur) if cur else "nothing"))
        if cur:
            lines.append("  options: " + _options(cur["options"]))
            if cur.get("options_changed"):
                lines.append("  last change of options: " + "; ".join(cur["options_changed"]))
        lines.append("previous:  " + (_release(prev) if prev else "none"))
        if prev:
            lines.append("  options: " + _options(prev["options"]))
        lines.append("trust root: v{} fingerprint {}".format(
            result["trust_root_version"], result.get("trust_root_fingerprint"))
            if result["trust_root_version"] else "trust root: not pinned")
        if result["pending"]:
            lines.append("PENDING {op} ({phase}): {hint}".format(**result["pending"]))
        if result["state_copies_damaged"]:
            lines.append("damaged state copies: " + ", ".join(result["state_copies_damaged"]))
        if result["foreign_images"]:
            lines.append("image archives not placed by airgap-install (left alone): "
                         + ", ".join(result["foreign_images"]))
        if result["registries_backup"]:
            lines.append("hand-written registries.yaml kept (a bundle owns registries.yaml): "
                         + result["registries_backup"])
        checked = result.get("verify")
        if checked is not None:
            lines.append("verified {} placed files and kept copies: {}".format(
                checked["checked"], "all match" if checked["ok"] else
                "{} DIFFER".format(len(checked["damaged"]))))
            lines += ["DAMAGED {what} ({release}): {path}: {problem}".format(**d)
                      for d in checked["damaged"]]
            if not checked["ok"]:
                lines.append("repair: install the same bundle again from its medium "
                             "(docs/installer.md, Damage and repair)")
        lines += synccli.status_lines(result.get("sync") or {})
        return lines
    action = result.get("action")
    if action == "installed":
        lines.append("installed " + _release(result["current"]))
    elif action == "reconfigured":
        lines.append("reconfigured " + _release(result["current"]))
    elif action == "rolled-back":
        lines.append("rolled back to " + _release(result["current"]))
    elif action == "repaired":
        lines.append("repaired {} file(s) of {}".format(len(result["repaired"]),
                                                          _release(result["current"])))
        lines += ["STILL DAMAGED {what}: {path}: {problem}".format(**d)
                  for d in result["still_damaged"]]
    elif action == "none":
        lines.append("nothing to do: " + result.get("reason", result.get("detail", "")))
    elif action == "recovered":
        lines.append(result["detail"])
    elif "ok" in result:
        lines.append("OK {name} {version} ({arch}, K3s {k3s_version}): {members} members, "
                     "{bytes} bytes verified, manifest sha256 {digest}, signed under root "
                     "v{root_version} fingerprint {root_fingerprint}".format(**result))
    elif "pinned" in result:
        verb = "pinned" if result["changed"] else "already pinned:"
        lines.append(f"{verb} root v{result['root_version']} fingerprint "
                     f"{result['fingerprint']} at {result['pinned']}")
    if result.get("rebuilt_part"):  # a parts folder (installer/sources/parts.py)
        lines.append("  rebuilt part {} from parity".format(result["rebuilt_part"]))
    if action in ("installed", "reconfigured", "rolled-back"):
        lines.append("  options: " + _options(result["current"]["options"]))
        changed = result["current"].get("options_changed") or []
        if changed and (result.get("previous") or action == "reconfigured"):
            lines.append("  options changed: " + "; ".join(changed))
    return lines


def _lines(args: argparse.Namespace, result: Dict[str, Any]) -> List[str]:
    if "dry_run" in result or args.command in reportcli.COMMANDS:
        return reportcli.text(result)
    return synccli.text(result) if args.command in synccli.COMMANDS else _text(result)


def _options(o: Dict[str, Any]) -> str:
    parts = [f"INSTALL_K3S_EXEC={o['install_k3s_exec']!r}"]
    if o.get("url"):
        parts.append(f"url {o['url']}")
    if o.get("token_file"):
        parts.append(f"token file {o['token_file']}")
    if o.get("skip_start"):
        parts.append("skip start")
    return ", ".join(parts)


def _release(r: Dict[str, Any]) -> str:
    return "{} {} (K3s {}, {}, {}) manifest sha256 {}".format(
        r["name"], r["version"], r["k3s_version"], r["arch"], r["role"], r["digest"])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        return _fail(argparse.Namespace(json="--json" in argv), e)
    layout = Layout(os.path.abspath(args.root))

    def report(message: str) -> None:
        if not args.quiet or message.startswith("warning"):
            print("airgap-install: " + message, file=sys.stderr)

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
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        for line in _lines(args, result):
            print(line)
    damaged = (result.get("verify") or {}).get("damaged") or result.get("still_damaged")
    if damaged:  # status --verify found differences (or a repair left some): exit 3
        print(f"airgap-install: error: {len(damaged)} placed file(s) differ from the "
              "installed manifest", file=sys.stderr)
        return DigestMismatch.exit_code
    return 0


def _run(args: argparse.Namespace, layout: Layout, report: install.Report,
         *, meter: Optional[install.Progress]) -> Dict[str, Any]:
    if args.command == "trust":
        result = install.trust_root(layout, args.root_json, wait=args.wait).to_json()
        reportcli.trusted(layout)
        if args.ring:
            result["ring"] = sync.set_ring(layout, args.ring)["ring"]
        return result
    if args.command in synccli.COMMANDS:
        return synccli.run(args, layout, report)
    if args.command in reportcli.COMMANDS:
        return reportcli.run(args, layout)
    planned = reportcli.dry_run(args, layout, lambda: _request(args))
    if planned is not None:
        return planned
    if args.command == "verify":
        return install.verify_bundle(layout, args.bundle, arch=args.arch,
                                     progress=meter).to_json()
    if args.command == "install":
        return install.install(layout, _request(args), report=report, progress=meter)
    if args.command == "reconfigure":
        return reconfigure.reconfigure(layout, _given(args), wait=args.wait, report=report)
    if args.command == "receipt":
        return receipt.write(layout, args.out)
    if args.command == "status":
        result = install.status(layout, check=args.verify).to_json()
        result["sync"] = sync.sync_status(layout)
        result.update(reportcli.status_fields(layout))
        return result
    if args.command == "rollback":
        return install.rollback(layout, wait=args.wait, skip_start=args.skip_start,
                                allow_k3s_downgrade=args.allow_k3s_downgrade,
                                report=report).to_json()
    return install.recover(layout, wait=args.wait, report=report).to_json()


def error_object(code: int, kind: str, message: str, *, hint: Optional[str]) -> Dict[str, Any]:
    """The one JSON error shape of ``--json`` (docs/exit-codes.md)."""
    return {"error": {"code": code, "kind": kind, "message": message, "hint": hint}}


def _fail(args: argparse.Namespace, e: InstallerError) -> int:
    print(f"airgap-install: error: {e}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(error_object(e.exit_code, type(e).__name__, e.message, hint=e.hint),
                         indent=1, sort_keys=True))
    return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

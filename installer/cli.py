"""``airgap-install``: the command line. Parses arguments, calls ``install``, prints the
result (text or ``--json``) and maps errors to exit codes (``errors.EXIT_CODES``). Nothing
else in the installer prints or exits."""

import argparse
import json
import os
import shlex
import sys
import traceback
from typing import Any, Dict, List, Optional

from . import __version__, install, sync, synccli
from .errors import ConfigError, EnvironmentProblem, InstallerError
from .layout import Layout
from .state import Options


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default="/", metavar="DIR",
                        help="install root (default /); for images and tests")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument("--wait", action="store_true",
                         help="wait for another running airgap-install instead of failing")

    p = argparse.ArgumentParser(
        prog="airgap-install",
        description="Verify and install signed K3s airgap bundles offline.",
        epilog="Exit codes: see docs/exit-codes.md (0 ok, 2 usage, 3 untrusted content, "
               "4 policy refusal, 5 transfer, 6 environment).")
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
    role = i.add_mutually_exclusive_group()
    role.add_argument("--server", dest="role", action="store_const", const="server")
    role.add_argument("--agent", dest="role", action="store_const", const="agent")
    i.add_argument("--url", help="server to join (K3S_URL), e.g. https://10.0.0.1:6443")
    i.add_argument("--token-file", metavar="F", help="file holding the join token")
    i.add_argument("--exec", dest="exec_args", default="", metavar='"ARGS"',
                   help='extra K3s arguments, e.g. --exec "--disable traefik"')
    i.add_argument("--skip-start", action="store_true",
                   help="install without starting K3s (INSTALL_K3S_SKIP_START=true)")
    i.add_argument("--arch", help="install this architecture (with --root other than / only)")
    i.add_argument("--switch-bundle", action="store_true",
                   help="replace an installed bundle of another name")

    st = sub.add_parser("status", parents=[common], help="show what is installed")
    del st

    r = sub.add_parser("rollback", parents=[common, locking],
                       help="go back to the previous release, atomically")
    r.add_argument("--skip-start", action="store_true", default=None,
                   help="do not start K3s after rolling back")
    r.add_argument("--allow-k3s-downgrade", action="store_true",
                   help="roll back across a K3s minor (needs a datastore snapshot of it)")

    sub.add_parser("recover", parents=[common, locking],
                   help="finish or undo a change interrupted by a crash")
    synccli.add_parsers(sub, common, locking)
    return p


def _request(args: argparse.Namespace) -> install.InstallRequest:
    if args.exec_args:
        try:
            shlex.split(args.exec_args)
        except ValueError as e:
            raise ConfigError(f"--exec {args.exec_args!r} does not parse: {e}") from None
    token_file = args.token_file
    if token_file is not None:
        token_file = os.path.abspath(token_file)
        if not os.path.isfile(token_file):
            raise ConfigError(f"--token-file {token_file} does not exist")
    if (args.url or token_file) and args.role is None:
        raise ConfigError("--url/--token-file need --server or --agent")
    options = Options(exec_args=args.exec_args, url=args.url, token_file=token_file,
                      skip_start=args.skip_start)
    return install.InstallRequest(source=args.bundle, role=args.role, options=options,
                                  arch=args.arch, switch_bundle=args.switch_bundle,
                                  wait=args.wait)


def _text(result: Dict[str, Any]) -> List[str]:
    lines = []
    if "installed" in result:  # status
        cur, prev = result["installed"], result["previous"]
        lines.append("installed: " + (_release(cur) if cur else "nothing"))
        lines.append("previous:  " + (_release(prev) if prev else "none"))
        lines.append("trust root: v{}".format(result["trust_root_version"])
                     if result["trust_root_version"] else "trust root: not pinned")
        if result["pending"]:
            lines.append("PENDING {op} ({phase}): {hint}".format(**result["pending"]))
        if result["state_copies_damaged"]:
            lines.append("damaged state copies: " + ", ".join(result["state_copies_damaged"]))
        if result["foreign_images"]:
            lines.append("image archives not placed by airgap-install (left alone): "
                         + ", ".join(result["foreign_images"]))
        lines += synccli.status_lines(result.get("sync") or {})
        return lines
    action = result.get("action")
    if action == "installed":
        lines.append("installed " + _release(result["current"]))
    elif action == "rolled-back":
        lines.append("rolled back to " + _release(result["current"]))
    elif action == "none":
        lines.append("nothing to do: " + result.get("reason", result.get("detail", "")))
    elif action == "recovered":
        lines.append(result["detail"])
    elif "ok" in result:
        lines.append("OK {name} {version} ({arch}, K3s {k3s_version}): {members} members, "
                     "{bytes} bytes verified, manifest sha256 {digest}".format(**result))
    elif "pinned" in result:
        verb = "pinned" if result["changed"] else "already pinned:"
        lines.append(f"{verb} root v{result['root_version']} at {result['pinned']}")
    return lines


def _release(r: Dict[str, Any]) -> str:
    return "{} {} (K3s {}, {}, {}) manifest sha256 {}".format(
        r["name"], r["version"], r["k3s_version"], r["arch"], r["role"], r["digest"])


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    layout = Layout(os.path.abspath(args.root))

    def report(message: str) -> None:
        print("airgap-install: " + message, file=sys.stderr)

    try:
        if args.command == "trust":
            result = install.trust_root(layout, args.root_json, wait=args.wait)
            if args.ring:
                result["ring"] = sync.set_ring(layout, args.ring)["ring"]
        elif args.command == "verify":
            result = install.verify_bundle(layout, args.bundle, arch=args.arch)
        elif args.command == "install":
            result = install.install(layout, _request(args), report=report)
        elif args.command == "status":
            result = install.status(layout)
            result["sync"] = sync.sync_status(layout)
        elif args.command == "rollback":
            result = install.rollback(layout, wait=args.wait, skip_start=args.skip_start,
                                      allow_k3s_downgrade=args.allow_k3s_downgrade,
                                      report=report)
        elif args.command in synccli.COMMANDS:
            result = synccli.run(args, layout, report)
        else:
            result = install.recover(layout, wait=args.wait, report=report)
    except InstallerError as e:
        return _fail(args, e)
    except OSError as e:
        where = " ".join(x for x in (e.filename, e.filename2) if x)
        return _fail(args, EnvironmentProblem(
            "{}{}".format(e.strerror or e, (": " + where) if where else ""),
            hint="check permissions and free space there"))
    except Exception:  # a bug: say so, with the trace
        traceback.print_exc()
        print("airgap-install: internal error (exit 1): please report it with the output above",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        for line in (synccli.text(result) if args.command in synccli.COMMANDS
                     else _text(result)):
            print(line)
    return 0


def _fail(args: argparse.Namespace, e: InstallerError) -> int:
    print(f"airgap-install: error: {e}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"type": type(e).__name__, "message": e.message,
                                    "hint": e.hint, "exit_code": e.exit_code}},
                         indent=1, sort_keys=True))
    return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

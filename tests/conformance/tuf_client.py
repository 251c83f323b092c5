"""The client-under-test for the public TUF conformance suite
(https://github.com/theupdateframework/tuf-conformance, CLIENT-CLI.md), on the device's real
TUF client (``installer.trust.tufupdater``). It does I/O only, no TUF checks of its own:
HTTP fetches with a size cap and a timeout, atomic file writes, role names mapped to flat
file names (``urllib.parse.quote(role, safe="")``, as python-tuf does).

    tuf_client.py --metadata-dir MD init TRUSTED_ROOT
    tuf_client.py --metadata-url URL --metadata-dir MD refresh
    tuf_client.py --metadata-url URL --metadata-dir MD --target-name P [--target-name P2 ...]
                  --target-dir TD --target-base-url TURL download

Exit 0 on success, 1 on any failure (never argparse's 2). Trusted metadata lives in ``MD``
under non-versioned names; downloaded targets in ``TD`` under their quoted target path, and a
target already there with matching length and hashes is not fetched again.

The suite needs a one-word entrypoint (it looks for ``<entrypoint>.xfails`` beside it), so
run it through a two-line wrapper kept outside the repository, e.g.::

    #!/bin/sh
    AIRGAP_ED25519_BACKEND=python PYTHONPATH=/path/to/checkout \
        exec python3 -s -S /path/to/checkout/tests/conformance/tuf_client.py "$@"

(``-S``: no site-packages, so the stdlib-only verifiers are the ones exercised). Measured on
2026-12-08 with tuf-conformance at eec841c: 113 of 113 passed (python-tuf 7.0.0: 112 + 1
expected failure, test_cached_role_is_verified_against_current_delegator, which this client
passes because a role reached through a second delegator is checked against its keys).
"""

import argparse
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import List, NoReturn, Optional

from installer.errors import InstallerError
from installer.fsio import write_verified
from installer.trust import tufmeta, tufupdater

MAX_METADATA = 16 * 1024 * 1024
MAX_TARGET = 256 * 1024 * 1024
TIMEOUT = 30


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def _get(url: str, cap: int) -> Optional[bytes]:
    """The body at ``url`` (at most ``cap`` bytes), None for 403/404; raises otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 (loopback)
            data = resp.read(cap + 1)
    except urllib.error.HTTPError as e:
        if e.code in (403, 404):
            print(f"GET {url}: {e.code}", file=sys.stderr)
            return None
        raise OSError(f"GET {url}: HTTP {e.code}") from None
    if len(data) > cap:
        raise OSError(f"GET {url}: more than {cap} bytes")
    print(f"GET {url}: {len(data)} bytes", file=sys.stderr)
    return data


class FileStore:
    """Trusted metadata in one flat folder: ``<quoted role>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, role: str) -> str:
        return os.path.join(self.folder, tufmeta.role_file(role, None))

    def load(self, role: str) -> Optional[bytes]:
        try:
            with open(self._path(role), "rb") as f:
                return f.read(MAX_METADATA + 1)
        except FileNotFoundError:
            return None

    def save(self, role: str, data: bytes) -> None:
        print(f"trusted: {role} ({len(data)} bytes)", file=sys.stderr)
        write_verified(self._path(role), [data], durable=False)

    def remove(self, role: str) -> None:
        try:
            os.unlink(self._path(role))
            print(f"removed: {role}", file=sys.stderr)
        except FileNotFoundError:
            pass


def _updater(args: argparse.Namespace) -> tufupdater.Updater:
    store = FileStore(args.metadata_dir)
    root = store.load("root")
    if root is None:
        raise InstallerError(f"no root.json in {args.metadata_dir}; run init first")
    base = args.metadata_url

    def fetch(name: str) -> Optional[bytes]:
        return _get(base + name, MAX_METADATA)
    return tufupdater.Updater(root, fetch, store, now=int(time.time()))


def _download(args: argparse.Namespace, updater: tufupdater.Updater, path: str) -> None:
    found = updater.find_target(path)
    if found is None:
        raise InstallerError(f"target {path} is not listed by any trusted role")
    target, role = found
    dest = os.path.join(args.target_dir, urllib.parse.quote(path, safe=""))
    try:
        with open(dest, "rb") as f:
            tufupdater.verify_target(target, f.read(target.length + 1))
        print(f"{path}: cached copy verified", file=sys.stderr)
        return
    except (OSError, InstallerError):
        pass
    data = _get(args.target_base_url + updater.target_file(target), MAX_TARGET)
    if data is None:
        raise InstallerError(f"target {path} (listed by {role}) is missing on the server")
    tufupdater.verify_target(target, data)
    os.makedirs(args.target_dir, exist_ok=True)
    write_verified(dest, [data], durable=False)
    print(f"{path}: downloaded and verified (listed by {role})", file=sys.stderr)


def run(argv: List[str]) -> int:
    p = _Parser(prog="tuf_client")
    p.add_argument("--metadata-url")
    p.add_argument("--metadata-dir", required=True)
    p.add_argument("--target-name", action="append", default=[])
    p.add_argument("--target-dir")
    p.add_argument("--target-base-url")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init")
    init.add_argument("trusted_root")
    sub.add_parser("refresh")
    sub.add_parser("download")
    args = p.parse_args(argv)
    if args.command == "init":
        os.makedirs(args.metadata_dir, exist_ok=True)
        shutil.copyfile(args.trusted_root, os.path.join(args.metadata_dir, "root.json"))
        return 0
    if not args.metadata_url:
        p.error("--metadata-url is required")
    updater = _updater(args)
    updater.refresh()
    if args.command == "download":
        if not args.target_dir or not args.target_base_url:
            p.error("download needs --target-dir and --target-base-url")
        for path in args.target_name:
            _download(args, updater, path)
    return 0


def main() -> int:
    try:
        return run(sys.argv[1:])
    except (InstallerError, OSError, ValueError) as e:
        hint = getattr(e, "hint", None)
        print(f"error: {getattr(e, 'message', e)}" + (f" ({hint})" if hint else ""),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

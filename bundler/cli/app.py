"""`bundle`: the builder's command line. Thin: parse flags, call the library, print.

Errors from the library are mapped to exit codes here and only here (see errors.EXIT_CODES
and docs/exit-codes.md). Progress bars are created here and passed down as callbacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from bundler.cli import (
    build,
    diff,
    discover,
    fleet,
    fleetcmd,
    inspect,
    keys,
    lock,
    repo,
    split,
    verify,
)
from bundler.cli.context import CONTEXT, Ctx
from bundler.errors import EXIT_CODES, exit_code_for
from installer.errors import ToolError


def _short(text: str) -> str:
    return text.split(":")[0].split(" (")[0]


@click.group(context_settings=CONTEXT, epilog="Exit codes: " + "; ".join(
    f"{k} {_short(v)}" for k, v in EXIT_CODES.items()) + " (docs/exit-codes.md).")
@click.option("--spec", type=click.Path(path_type=Path), default=Path("bundles.toml"),
              show_default=True, help="The bundle spec.")
@click.option("--lock", "lock_path", type=click.Path(path_type=Path), default=None,
              help="The lock file (default: bundles.lock beside the spec).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (also when not a terminal).")
@click.version_option(package_name="k3s-airgap-bundler")
@click.pass_context
def cli(ctx: click.Context, *, spec: Path, lock_path: Path | None, quiet: bool) -> None:
    """Build signed, reproducible K3s airgap bundles.

    \b
    Typical flow on a connected host:
      bundle lock                      # pin every artifact of bundles.toml by digest
      bundle build --arch arm64        # dist/<name>-<version>-arm64.tar (+ installer)
      bundle inspect dist/*.tar        # what a bundle holds, without extracting
    Then carry dist/ to the disconnected host and run `python3 airgap-install.pyz install .`
    """
    ctx.obj = Ctx(spec, lock_path or spec.parent / "bundles.lock", quiet)


for _cmd in [*lock.commands, *build.commands, *inspect.commands, keys.keys,
             *discover.commands, *verify.commands, *diff.commands, *split.commands,
             *repo.commands, *fleet.commands, *fleetcmd.commands]:
    cli.add_command(_cmd)


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON (a `--json` before any `--`)."""
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def _json_error(error: dict[str, Any]) -> None:
    click.echo(json.dumps({"error": error}, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> NoReturn:
    """Run `bundle`. With --json, any error also prints the one documented error object
    ``{"error": {"code", "kind", "message", "hint"}}`` on stdout (docs/exit-codes.md); the
    human line goes to stderr either way and the exit code is the same."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    try:
        # without standalone mode, click returns the code of a `click.exceptions.Exit`
        # (`bundle diff` exits 1 for "changes") instead of raising it
        code = cli.main(args=args, prog_name="bundle", standalone_mode=False)
    except ToolError as e:  # the builder's errors and installer errors from shared code
        click.echo(f"error: {e}", err=True)
        code = exit_code_for(e)
        if as_json:
            details = getattr(e, "details", None)  # e.g. the drift list of `lock --check`
            _json_error({**e.as_json(), "code": code,
                         **({"details": details} if details is not None else {})})
        sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        if as_json:
            _json_error({"code": 2, "kind": type(e).__name__, "message": e.format_message(),
                         "hint": "see `bundle COMMAND --help`"})
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run to resume (verified downloads are kept)", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: the traceback follows on stderr (exit 1)
        if as_json:
            _json_error({"code": 1, "kind": type(e).__name__, "message": str(e),
                         "hint": "an internal error: please report it with the output"})
        raise
    sys.exit(code if isinstance(code, int) else 0)

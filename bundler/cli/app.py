"""`bundle`: the builder's command line. Thin: parse flags, call the library, print.

Errors from the library are mapped to exit codes here and only here (see errors.EXIT_CODES
and docs/exit-codes.md). Progress bars are created here and passed down as callbacks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from ..errors import EXIT_CODES, ToolError, exit_code_for
from . import build, discover, keys, lock, repo, verify
from .context import CONTEXT, Ctx


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
def cli(ctx: click.Context, spec: Path, lock_path: Path | None, quiet: bool) -> None:
    """Build signed, reproducible K3s airgap bundles.

    \b
    Typical flow on a connected host:
      bundle lock                      # pin every artifact of bundles.toml by digest
      bundle build --arch arm64        # dist/<name>-<version>-arm64.tar (+ installer)
      bundle inspect dist/*.tar        # what a bundle holds, without extracting
    Then carry dist/ to the disconnected host and run `python3 airgap-install.pyz install .`
    """
    ctx.obj = Ctx(spec, lock_path or spec.parent / "bundles.lock", quiet)


for _cmd in [*lock.commands, *build.commands, keys.keys, *discover.commands, *verify.commands,
             *repo.commands]:
    cli.add_command(_cmd)


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        cli.main(args=argv, prog_name="bundle", standalone_mode=False)
    except ToolError as e:  # the builder's errors and installer errors from shared code
        click.echo(f"error: {e}", err=True)
        sys.exit(exit_code_for(e))
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run to resume (verified downloads are kept)", err=True)
        sys.exit(130)
    sys.exit(0)

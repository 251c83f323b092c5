"""`bundle`: the builder's command line. Thin: parse flags, call the library, print.

Errors from the library are mapped to exit codes here and only here (see errors.EXIT_CODES
and docs/exit-codes.md). Progress bars are created here and passed down as callbacks.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import click
from click.utils import PacifyFlushWrapper

from bundler import __version__
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
@click.version_option(__version__, prog_name="bundle", message="%(prog)s %(version)s")
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


PIPE_CLOSED = 141  # exit code when the reader of stdout went away, as shells show SIGPIPE
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
GRACE = 3.0  # seconds Ctrl-C waits for worker threads stuck in a transfer before exiting anyway
_exiting = threading.Lock()


def _exit_interrupted() -> NoReturn:
    """One line, exit 130, without waiting for worker threads (a download pool would wait for
    transfers that may hang). Called once the main thread unwound (its ``finally`` blocks
    removed their temp files), or by the :data:`GRACE` timer if unwinding is stuck."""
    _exiting.acquire()  # whoever comes second waits here for the first one's exit
    click.echo("interrupted; re-run to resume (verified downloads are kept)", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def _interrupted(signum: int, frame: object) -> None:
    """SIGINT: unwind the main thread as Python does, with a deadline; a second Ctrl-C ends
    the process at once."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    timer = threading.Timer(GRACE, _exit_interrupted)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Run `bundle`. With --json, any error also prints the one documented error object
    ``{"error": {"code", "kind", "message", "hint"}}`` on stdout (docs/exit-codes.md); the
    human line goes to stderr either way and the exit code is the same."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupted)
    try:
        # without standalone mode, click returns the code of a `click.exceptions.Exit`
        # (`bundle diff` exits 1 for "changes") instead of raising it
        code = cli.main(args=args, prog_name="bundle", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
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
    except click.Abort as e:  # click turns Ctrl-C into Abort; a refused prompt is one too
        if isinstance(e.__context__, KeyboardInterrupt):
            _exit_interrupted()
        click.echo("aborted", err=True)
        sys.exit(INTERRUPTED)
    except KeyboardInterrupt:
        _exit_interrupted()
    except BrokenPipeError:  # `bundle inspect X | head -1`: nobody reads stdout any more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # drop what is buffered
        sys.exit(PIPE_CLOSED)
    except SystemExit:  # click's own answer to a closed pipe is a quiet exit 1: say 141
        if isinstance(sys.stdout, PacifyFlushWrapper):
            sys.exit(PIPE_CLOSED)
        raise
    except Exception as e:  # a bug: the traceback follows on stderr (exit 1)
        if as_json:
            _json_error({"code": 1, "kind": type(e).__name__, "message": str(e),
                         "hint": "an internal error: please report it with the output"})
        raise
    sys.exit(code if isinstance(code, int) else 0)

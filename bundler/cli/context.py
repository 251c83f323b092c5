"""What every `bundle` command shares: click settings, the options object, output helpers.

Imports nothing from the command modules, so each of them can be imported on its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem
from tqdm import tqdm

from installer.arch import normalize
from installer.format.bundlefmt import ARCHES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Ctx:
    """Options shared by every command."""

    def __init__(self, spec: Path, lock: Path, quiet: bool) -> None:
        self.spec = spec
        self.lock = lock
        self.quiet = quiet or not sys.stderr.isatty()

    def progress(self, total: int, desc: str, unit: str = "it", **kw: Any) -> Any:
        return tqdm(total=total, desc=desc, unit=unit, disable=self.quiet, file=sys.stderr,
                    leave=False, dynamic_ncols=True, **kw)


pass_ctx = click.make_pass_decorator(Ctx)


class ArchType(click.ParamType):  # type: ignore[type-arg]  # generic in newer click
    """An architecture: K3s's name, or an alias (x86_64, aarch64, armhf, armv7l) turned into
    it (``installer.arch``, shared with the installer)."""

    name = "arch"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[amd64|arm64|arm]"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[Any]:

        return [CompletionItem(a) for a in ARCHES if a.startswith(incomplete)]

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return normalize(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def out(as_json: bool, data: Any, text: str) -> None:
    """Print ``data`` as JSON for automation, or ``text`` for people."""
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)

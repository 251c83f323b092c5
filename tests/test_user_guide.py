"""docs/user-guide.md against the CLI: every option `bundle CMD --help` shows is in the guide's
option table for that command, and the tables name no option the command lacks. Also shell
completion, as the guide documents it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bundler.cli.app import cli

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"
# command path -> the heading whose first option table documents it ("" = the group)
SECTIONS = {
    ("lock",): "## `bundle lock`",
    ("build",): "## `bundle build`",
    ("inspect",): "## `bundle inspect FILE`",
    ("verify",): "## `bundle verify FILE`",
    ("images",): "## `bundle images`",
    ("check",): "## `bundle check`",
    ("keys", "init"): "`bundle keys init DIR`",
    ("keys", "rotate"): "`bundle keys rotate DIR --role ROLE`",
    ("keys", "show"): "`bundle keys show DIR`",
    ("keys", "sign"): "`bundle keys sign DIR --keys FOLDER`",
    ("diff",): "## `bundle diff OLD NEW`",
    ("split",): "## `bundle split BUNDLE`",
    ('repo', 'init'): '### `bundle repo init DIRECTORY`',
    ('repo', 'status'): '### `bundle repo status DIRECTORY`',
    ('repo', 'refresh'): '### `bundle repo refresh DIRECTORY`',
    ('repo', 'extend'): '### `bundle repo extend DIRECTORY`',
    ('repo', 'sign'): '### `bundle repo sign DIRECTORY`',
    ('publish',): '### `bundle publish BUNDLES`',
    ('promote',): '### `bundle promote NAME VERSION`',
    ('yank',): '### `bundle yank NAME VERSION`',
    ('repo', 'push'): '### `bundle repo push DIRECTORY oci://HOST/REPO[:TAG]`',
    ('push',): '## `bundle push BUNDLE... oci://HOST/REPO[:TAG]`',
    ('pull',): '## `bundle pull oci://HOST/REPO:TAG`',
    ("fleet", "enroll"): "## `bundle fleet enroll`",
    ("fleet", "status"): "## `bundle fleet status`",
    ('mirror',): '## `bundle mirror --to oci://HOST[/PREFIX]`',
    (): "## Global options and machine-readable output",
}
_OPT = re.compile(r"`(-{1,2}[a-z][a-z0-9-]*)")


def _table_after(text: str, heading: str) -> set[str]:
    """Options in the first column of the first table after ``heading``."""
    start = text.index(heading)
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| option"))
    found: set[str] = set()
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        found.update(_OPT.findall(line.split("|")[1]))
    return found


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


def _help_options(path: tuple[str, ...]) -> set[str]:
    """The options `--help` shows, read from the help text itself."""
    cmd = _command(path)
    with click.Context(cmd, info_name="bundle") as ctx:
        text = cmd.get_help(ctx)
    options = text.split("Options:", 1)[1].split("Commands:", 1)[0]
    found = set(re.findall(r"^\s{2}(-[-\w]+)(?:, (--[\w-]+))?", options, re.M))
    return {o for pair in found for o in pair if o} - {"-h", "--help"}


def _all_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [()]
    for name, cmd in cli.commands.items():
        if isinstance(cmd, click.Group):
            paths += [(name, sub) for sub in cmd.commands]
        else:
            paths.append((name,))
    return paths


def test_every_command_has_a_section() -> None:
    assert sorted(_all_paths()) == sorted(SECTIONS)


@pytest.mark.parametrize("path", sorted(SECTIONS), ids=lambda p: " ".join(p) or "bundle")
def test_guide_table_matches_help(path: tuple[str, ...]) -> None:
    text = GUIDE.read_text()
    shown, documented = _help_options(path), _table_after(text, SECTIONS[path])
    assert shown, path
    assert shown - documented == set(), f"options missing from the guide for {path}"
    assert documented - shown == set(), f"the guide documents options {path} lacks"


def test_bash_completion_as_documented(tmp_path: Path) -> None:
    assert "_BUNDLE_COMPLETE=bash_source bundle" in GUIDE.read_text()
    env = {**os.environ, "_BUNDLE_COMPLETE": "bash_source"}
    p = subprocess.run([sys.executable, "-m", "bundler"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "complete -o nosort -F _bundle_completion bundle" in p.stdout
    env = {**os.environ, "_BUNDLE_COMPLETE": "bash_complete",
           "COMP_WORDS": "bundle build --arch a", "COMP_CWORD": "3"}
    p = subprocess.run([sys.executable, "-m", "bundler"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.stdout.split() == ["plain,amd64", "plain,arm64", "plain,arm"], p.stderr

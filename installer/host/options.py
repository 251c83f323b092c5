"""How a node runs K3s, as remembered between changes (pure).

A release is installed with a role and ``install.sh`` options (``--exec``, ``--url``,
``--token-file``, ``--skip-start``). They are recorded with the release in the state and carry
over to every later change (upgrade, same-version re-install, ``reconfigure``, ``rollback``) unless
the command line gives a value, which then replaces the recorded one explicitly. The rules:

- a role change starts from defaults: server flags (``--cluster-init``) mean nothing to an agent
  and an agent's join URL is not what a server was given;
- a field given on the command line (``Given``) replaces the recorded one, even with an empty
  value (``--exec ""`` drops the extra arguments; ``--start`` turns a remembered
  ``--skip-start`` off);
- everything else is kept as recorded.

``diff`` lists what a change alters, for the output and ``status``. Nothing here touches the
disk: the caller checks that a token file exists.
"""

import shlex
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

from installer.errors import ConfigError
from installer.format import safetext
from installer.format.bundlefmt import ROLES
from installer.host.state import Options, Release


@dataclass(frozen=True)
class NodeOptions:
    """The role and install.sh options a release is (to be) run with."""

    role: str
    exec_args: str = ""
    url: Optional[str] = None
    token_file: Optional[str] = None
    skip_start: bool = False

    @classmethod
    def of(cls, release: Release) -> "NodeOptions":
        o = release.options
        return cls(role=release.role, exec_args=o.exec_args, url=o.url,
                   token_file=o.token_file, skip_start=o.skip_start)

    def stored(self) -> Options:
        """The per-release record kept in the state (the role is kept beside it)."""
        return Options(exec_args=self.exec_args, url=self.url, token_file=self.token_file,
                       skip_start=self.skip_start)

    @property
    def install_exec(self) -> str:
        """``INSTALL_K3S_EXEC``: the role, then the extra arguments."""
        return (self.role + " " + self.exec_args).strip()

    def to_json(self) -> Dict[str, Any]:
        return {"role": self.role, "exec": self.exec_args, "url": self.url,
                "token_file": self.token_file, "skip_start": self.skip_start,
                "install_k3s_exec": self.install_exec}


@dataclass(frozen=True)
class Given:
    """Options given on one command line; ``None`` means "not given: keep the recorded one"."""

    role: Optional[str] = None
    exec_args: Optional[str] = None
    url: Optional[str] = None
    token_file: Optional[str] = None
    skip_start: Optional[bool] = None

    def __post_init__(self) -> None:
        for name, value in (("--exec", self.exec_args), ("--url", self.url),
                            ("--token-file", self.token_file)):
            if value:
                safetext.check_value(value, what=name)  # THREATS 52
        if self.role is not None and self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r} (server or agent)")
        if self.exec_args:
            try:
                shlex.split(self.exec_args)
            except ValueError as e:
                raise ConfigError(f"--exec {self.exec_args!r} does not parse: {e}") from None


_FIELDS = ("exec_args", "url", "token_file", "skip_start")
_LABEL = {"role": "role", "exec_args": "exec", "url": "url", "token_file": "token_file",
          "skip_start": "skip_start"}


def merge(recorded: Optional[NodeOptions], given: Given, *, role: str) -> NodeOptions:
    """The options for a change to ``role``: recorded ones (same role only), then given ones."""
    base = recorded if recorded is not None and recorded.role == role else NodeOptions(role)
    values = {f: getattr(base, f) for f in _FIELDS}
    for f in _FIELDS:
        value = getattr(given, f)
        if value is not None:
            values[f] = value
    for f in ("url", "token_file"):
        if values[f] == "":
            values[f] = None  # --url "" forgets the recorded one
    return NodeOptions(role=role, **values)


def check(node: NodeOptions) -> None:
    """What every change needs, whatever was recorded."""
    if node.role == "agent" and not (node.url and node.token_file):
        raise ConfigError("installing an agent needs the server to join",
                          hint="pass --url https://SERVER:6443 --token-file FILE (they are "
                               "remembered for later upgrades)")


@dataclass(frozen=True)
class Change:
    name: str     # role, exec, url, token_file, skip_start
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.name} {_show(self.old)} -> {_show(self.new)}"

    def to_json(self) -> Dict[str, Any]:
        return {"option": self.name, "old": self.old, "new": self.new}


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def diff(old: Optional[NodeOptions], new: NodeOptions) -> List[Change]:
    """What differs between the recorded options and the new ones (none recorded: all set)."""
    before = old if old is not None else NodeOptions(new.role)
    out = []
    if old is None or old.role != new.role:
        out.append(Change("role", old.role if old else None, new.role))
    for f in fields(NodeOptions):
        if f.name == "role":
            continue
        a, b = getattr(before, f.name), getattr(new, f.name)
        if a != b:
            out.append(Change(_LABEL[f.name], a, b))
    return out


def describe(changes: List[Change]) -> str:
    """One line for the output: ``options changed: exec '' -> '--cluster-init'``."""
    if not changes:
        return "options unchanged"
    return "options changed: " + "; ".join(str(c) for c in changes)


def carried(given: Given, node: NodeOptions) -> Tuple[str, ...]:
    """Names of the options that were kept from the record (not given on the command line)."""
    return tuple(_LABEL[f] for f in _FIELDS if getattr(given, f) is None
                 and getattr(node, f) not in (None, "", False))

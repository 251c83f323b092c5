"""Text from outside (option values, target names, file contents, error details) on its way
to a terminal, an env file or install.sh (THREATS 52). Pure.

- ``check_value``: an option value holding a control character (C0, DEL, C1: newline, NUL,
  ESC...) is refused. A newline in ``--url`` or ``--exec`` would become a separate line, say
  ``K3S_TOKEN=evil``, where install.sh writes the service's env file; an escape sequence
  would rewrite the operator's terminal.
- ``escape``: every message the installer prints goes through it, so whatever a ring, a
  bundle or a file said reaches the terminal as ``\\n``, ``\\x1b``..., never raw.
"""

import re
from typing import Optional

from installer.errors import ConfigError

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def control_char(value: str, *, allow: str = "") -> Optional[str]:
    """The first control character in ``value`` not in ``allow``, escaped, or None."""
    for m in _CONTROL.finditer(value):
        if m.group() not in allow:
            return _escaped(m.group())
    return None


def check_value(value: str, *, what: str, allow: str = "") -> None:
    """Refuse an option value that holds a control character (ConfigError, exit 2)."""
    found = control_char(value, allow=allow)
    if found is not None:
        raise ConfigError(f"{what} holds a control character ({found}): {escape(value)[:120]}",
                          hint="option values are one line of printable text; remove the "
                               "newline, tab or escape character")


def _escaped(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def escape(text: str) -> str:
    """``text`` with every control character written as its Python escape (``\\n``,
    ``\\x1b``); printable text, including non-ASCII letters, is left as it is."""
    return _CONTROL.sub(lambda m: _escaped(m.group()), text)

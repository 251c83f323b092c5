"""Untrusted YAML from upstream (a chart repository's ``index.yaml``, a chart's ``Chart.yaml``)
loaded in linear time and bounded memory (pure).

PyYAML's loaders are not safe against hostile input even as ``safe_load``: aliases make a few
KB expand into billions of nodes as soon as anything walks the result (``str()``, iteration),
the C composer recurses per nesting level (100k ``[`` crash the process), and the pure-Python
loader takes minutes for tens of MB. So documents are built here straight from the parser's
event stream (libyaml's C parser when present), with an explicit stack: aliases are refused,
nesting and node count are budgeted, and every scalar stays a string (``null``/``~``/empty
plain scalars are None), which is what these documents hold.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import UpstreamError
from .limits import DEFAULT, Limits

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


class _Map:
    """An open mapping and the key waiting for its value."""

    __slots__ = ("d", "key", "has_key")

    def __init__(self) -> None:
        self.d: dict[str, Any] = {}
        self.key = ""
        self.has_key = False


def load(text: str, *, what: str, limits: Limits = DEFAULT) -> Any:
    """The single document of ``text`` as dicts, lists, strings and None."""
    stack: list[list[Any] | _Map] = []   # the open collections, innermost last
    root: list[Any] = []
    nodes = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.AliasEvent):
                raise UpstreamError(f"{what}: YAML aliases (*{str(ev.anchor)[:40]}) are not "
                                    "accepted in this document",
                                    hint="they can expand a few KB into gigabytes")
            if isinstance(ev, yaml.ScalarEvent):
                nodes += 1
                value: Any = ev.value
                if ev.implicit[0] and not ev.style and value in _NULLS:
                    value = None
                _add(stack, root, value, what=what)
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                if len(stack) >= limits.yaml_depth:
                    raise UpstreamError(f"{what}: YAML nested deeper than "
                                        f"{limits.yaml_depth} levels")
                frame: list[Any] | _Map = (_Map() if isinstance(ev, yaml.MappingStartEvent)
                                           else [])
                _add(stack, root, frame.d if isinstance(frame, _Map) else frame, what=what)
                stack.append(frame)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
            elif isinstance(ev, yaml.DocumentStartEvent) and root:
                raise UpstreamError(f"{what}: holds more than one YAML document")
            if nodes > limits.yaml_nodes:
                raise UpstreamError(f"{what}: more than {limits.yaml_nodes} YAML nodes")
    except yaml.YAMLError as e:
        raise UpstreamError(f"{what} is not valid YAML: {str(e)[:300]}") from None
    return root[0] if root else None


def _add(stack: list[list[Any] | _Map], root: list[Any], value: Any, *, what: str) -> None:
    if not stack:
        root.append(value)
        return
    top = stack[-1]
    if isinstance(top, list):
        top.append(value)
    elif not top.has_key:
        if not isinstance(value, str) and value is not None:
            raise UpstreamError(f"{what}: a mapping key is not a scalar")
        top.key, top.has_key = value or "", True
    else:
        top.d[top.key] = value
        top.has_key = False

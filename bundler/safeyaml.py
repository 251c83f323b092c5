"""Untrusted YAML loaded in linear time and bounded memory (pure): one loader for upstream
documents (a chart repository's ``index.yaml``, a chart's ``Chart.yaml``: :func:`load`) and for
everything discovery reads (manifest files, rendered chart templates, YAML embedded in strings:
:func:`load_all`).

PyYAML's loaders are not safe against hostile input even as ``safe_load``: aliases make a few
KB expand into billions of nodes as soon as anything walks the result (``str()``, iteration),
the C composer recurses per nesting level (100k ``[`` crash the process), and the pure-Python
loader takes minutes for tens of MB. So documents are built here straight from the parser's
event stream (libyaml's C parser when present), with an explicit stack: aliases are refused,
nesting and node count are budgeted. :func:`load` keeps every scalar a string
(``null``/``~``/empty plain scalars are None), which is what those documents hold;
:func:`load_all` types scalars as PyYAML's safe loader does (ints, bools, dates...), reads
unknown ``!tags`` and YAML 1.1's ``=`` as plain data (as Kubernetes does), refuses texts over
``manifest_bytes`` and keeps its result per content digest, so the same text (an embedded
manifest repeated, a template rendered twice) is parsed once.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from bundler.errors import UpstreamError
from bundler.limits import DEFAULT, Limits, human

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_HINT = "aliases can expand a few KB into gigabytes"
_INTERN = 48   # scalars up to this long are interned by load()


class YamlRefused(UpstreamError):
    """Valid YAML refused because it is over a cap or uses aliases (the text stays unread)."""


class _Map:
    """An open mapping and the key waiting for its value."""

    __slots__ = ("d", "key", "has_key")

    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}
        self.key: Any = ""
        self.has_key = False


def load(text: str | bytes, *, what: str, limits: Limits = DEFAULT) -> Any:
    """The single document of ``text`` as dicts, lists, strings and None. Give UTF-8 bytes
    when you have them: libyaml reads them in place (a ``str`` is encoded to a copy first).
    Mapping keys and short scalars are interned: an ``index.yaml`` repeats the same few keys
    and values hundreds of thousands of times."""
    stack: list[list[Any] | _Map] = []   # the open collections, innermost last
    root: list[Any] = []
    nodes = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if isinstance(ev, yaml.AliasEvent):
                raise YamlRefused(f"{what}: YAML aliases (*{str(ev.anchor)[:40]}) are not "
                                  "accepted in this document", hint=_HINT)
            if isinstance(ev, yaml.ScalarEvent):
                nodes += 1
                value: Any = ev.value
                if ev.implicit[0] and not ev.style and value in _NULLS:
                    value = None
                elif len(value) <= _INTERN:
                    value = sys.intern(value)
                _add(stack, root, value, what=what)
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                if len(stack) >= limits.yaml_depth:
                    raise YamlRefused(f"{what}: YAML nested deeper than "
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
                raise YamlRefused(f"{what}: more than {limits.yaml_nodes} YAML nodes")
    except yaml.YAMLError as e:
        raise UpstreamError(f"{what} is not valid YAML: {str(e)[:300]}") from None
    return root[0] if root else None


def _add(stack: list[list[Any] | _Map], root: list[Any], value: Any, *, what: str,
         any_key: bool = False) -> None:
    if not stack:
        root.append(value)
        return
    top = stack[-1]
    if isinstance(top, list):
        top.append(value)
    elif not top.has_key:
        if isinstance(value, (dict, list)) or not (any_key or isinstance(value, str)
                                                      or value is None):
            raise UpstreamError(f"{what}: a mapping key is not a scalar".lstrip(": "))
        top.key, top.has_key = (value if any_key else value or ""), True
    else:
        top.d[top.key] = value
        top.has_key = False


# -- many documents, typed scalars (discovery) ------------------------------------------------

_YAML_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_YAML_TAG + t for t in (
    "null", "bool", "int", "float", "binary", "timestamp", "str"))


class _Typed(yaml.constructor.SafeConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
    """PyYAML's own implicit resolution and scalar constructors, fed one scalar at a time."""

    def __init__(self) -> None:
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def scalar(self, ev: yaml.ScalarEvent) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag not in _SCALAR_TAGS:  # "=" (YAML 1.1 value), !!merge, unknown !tags: plain text
            return ev.value
        return self.yaml_constructors[tag](self, yaml.ScalarNode(tag, ev.value, style=ev.style))


_typed = _Typed()
# the parse cache holds at most this many nodes (a node of an empty list costs ~60 bytes;
# counting text bytes instead let 3 MB texts of a million nodes each pile up to a gigabyte)
_CACHE_NODES = 3_000_000
# content digest and limits -> (documents, or the refusal: its class, message after "what: "
# and hint); node counts kept to bound the cache at _CACHE_NODES
_Entry = tuple[list[Any], "tuple[type[UpstreamError], str, str] | None", int]
_cache: OrderedDict[tuple[str, Limits], _Entry] = OrderedDict()
_cached = [0]


class BudgetSpent(YamlRefused):
    """The lock's discovery budget is spent (never cached: the text itself is fine)."""


class Budget:
    """What discovery may spend across all texts of one lock: parsed YAML nodes
    (``discovery_nodes``) and wall time (``discovery_seconds``, which also shortens each chart
    render). One is active at a time (:func:`discovery_budget`)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.nodes_left = limits.discovery_nodes
        self.deadline = time.monotonic() + limits.discovery_seconds

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def spend(self, nodes: int) -> None:
        self.nodes_left -= nodes
        if self.nodes_left < 0:
            raise BudgetSpent(f"more than {self.limits.discovery_nodes} YAML nodes parsed in "
                              "all texts of this lock (the discovery_nodes budget)",
                              hint='if that is real, raise it: BUNDLE_LIMITS='
                                   '"discovery_nodes=<count>"')
        if self.seconds_left() < 0:
            raise BudgetSpent(f"discovery took over its budget of "
                              f"{self.limits.discovery_seconds:g} s for this lock",
                              hint='if that is real, raise it: BUNDLE_LIMITS='
                                   '"discovery_seconds=<seconds>"')


_budget: list[Budget] = []


def active_budget() -> Budget | None:
    return _budget[-1] if _budget else None


@contextmanager
def discovery_budget(limits: Limits) -> Iterator[Budget]:
    """A fresh :class:`Budget` for everything parsed inside (a lock, or one `bundle images`);
    nested calls share the outer one."""
    if _budget:
        yield _budget[-1]
        return
    _budget.append(Budget(limits))
    try:
        yield _budget[-1]
    finally:
        _budget.pop()


def load_all(text: str, *, what: str, limits: Limits = DEFAULT) -> list[Any]:
    """Every non-empty document of ``text``, scalars typed like ``yaml.safe_load_all``.

    Raises :class:`YamlRefused` for aliases, nesting deeper than ``yaml_depth``, more than
    ``manifest_nodes`` nodes or more than ``manifest_bytes`` of text, and ``UpstreamError``
    for text that is not YAML; each message starts with ``what``. Results (and refusals) are
    kept per content digest: callers must not modify the returned objects.
    """
    if len(text) > limits.manifest_bytes:
        raise YamlRefused(f"{what}: {len(text)} bytes of YAML, over the manifest_bytes cap of "
                          f"{human(limits.manifest_bytes)}",
                          hint='if that is real, raise it: BUNDLE_LIMITS="manifest_bytes=<size>"')
    key = (hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), limits)
    entry = _cache.get(key)
    if entry is None:
        counted = [0]
        try:
            entry = (_load_all(text, limits, counted), None, counted[0])
        except BudgetSpent as exc:
            raise BudgetSpent(f"{what}: {exc.message}", hint=exc.hint) from None
        except UpstreamError as exc:
            entry = ([], (type(exc), exc.message, exc.hint or ""), counted[0])
        _cache[key] = entry
        _cached[0] += entry[2]
        while _cached[0] > _CACHE_NODES and len(_cache) > 1:
            _cached[0] -= _cache.popitem(last=False)[1][2]
    docs, refused, _ = entry
    if refused is not None:
        cls, message, hint = refused
        raise cls(f"{what}: {message}", hint=hint or None)
    return list(docs)


def _load_all(text: str, limits: Limits, counted: list[int]) -> list[Any]:
    """The documents of ``text``; ``counted[0]`` ends as the nodes parsed, each also spent
    from the active :class:`Budget` (every 65536 nodes and at the end)."""
    docs: list[Any] = []
    stack: list[list[Any] | _Map] = []
    root: list[Any] = []
    nodes = 0
    budget = active_budget()
    try:
        for ev in yaml.parse(text, Loader=_Loader):
            if budget is not None and nodes and not nodes & 0xFFFF:
                budget.spend(nodes - counted[0])
                counted[0] = nodes
            if isinstance(ev, yaml.ScalarEvent):
                nodes += 1
                _add(stack, root, _typed.scalar(ev), what="", any_key=True)
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                if len(stack) >= limits.yaml_depth:
                    raise YamlRefused(f"YAML nested deeper than {limits.yaml_depth} levels",
                                      hint='if that is real, raise it: BUNDLE_LIMITS='
                                           '"yaml_depth=<levels>"')
                frame: list[Any] | _Map = (_Map() if isinstance(ev, yaml.MappingStartEvent)
                                           else [])
                _add(stack, root, frame.d if isinstance(frame, _Map) else frame, what="",
                     any_key=True)
                stack.append(frame)
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
            elif isinstance(ev, yaml.DocumentEndEvent):
                docs += [d for d in root if d is not None]
                root = []
            elif isinstance(ev, yaml.AliasEvent):
                raise YamlRefused(f"YAML aliases (*{str(ev.anchor)[:40]}) are not accepted",
                                  hint=_HINT + "; write the values out in full")
            if nodes > limits.manifest_nodes:
                raise YamlRefused(f"more than {limits.manifest_nodes} YAML nodes",
                                  hint='if that is real, raise it: BUNDLE_LIMITS='
                                       '"manifest_nodes=<count>"')
    # not YAML, or a scalar PyYAML cannot construct (2024-02-30 as a date)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
        raise UpstreamError(f"not valid YAML: {' '.join(str(e).split())[:300]}") from None
    finally:
        if budget is not None and nodes > counted[0]:
            left, counted[0] = nodes - counted[0], nodes
            budget.nodes_left -= left
    if budget is not None:
        budget.spend(0)
    return docs

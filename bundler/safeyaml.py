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
from collections import OrderedDict
from typing import Any

import yaml

from bundler.errors import UpstreamError
from bundler.limits import DEFAULT, Limits, human

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_HINT = "aliases can expand a few KB into gigabytes"


class YamlRefused(UpstreamError):
    """Valid YAML refused because it is over a cap or uses aliases (the text stays unread)."""


class _Map:
    """An open mapping and the key waiting for its value."""

    __slots__ = ("d", "key", "has_key")

    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}
        self.key: Any = ""
        self.has_key = False


def load(text: str, *, what: str, limits: Limits = DEFAULT) -> Any:
    """The single document of ``text`` as dicts, lists, strings and None."""
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
_CACHE_BYTES = 32 * 1024 * 1024
# content digest and limits -> (documents, or the refusal: its class, message after "what: "
# and hint); sizes kept to bound the cache's text at _CACHE_BYTES
_Entry = tuple[list[Any], "tuple[type[UpstreamError], str, str] | None", int]
_cache: OrderedDict[tuple[str, Limits], _Entry] = OrderedDict()
_cached = [0]


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
        try:
            entry = (_load_all(text, limits), None, len(text))
        except UpstreamError as exc:
            entry = ([], (type(exc), exc.message, exc.hint or ""), len(text))
        _cache[key] = entry
        _cached[0] += entry[2]
        while _cached[0] > _CACHE_BYTES and len(_cache) > 1:
            _cached[0] -= _cache.popitem(last=False)[1][2]
    docs, refused, _ = entry
    if refused is not None:
        cls, message, hint = refused
        raise cls(f"{what}: {message}", hint=hint or None)
    return list(docs)


def _load_all(text: str, limits: Limits) -> list[Any]:
    docs: list[Any] = []
    stack: list[list[Any] | _Map] = []
    root: list[Any] = []
    nodes = 0
    try:
        for ev in yaml.parse(text, Loader=_Loader):
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
    return docs

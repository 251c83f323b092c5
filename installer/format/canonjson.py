"""Canonical JSON: the one encoder for every signed document, and a strict parser.

The encoding is the OLPC canonical JSON that TUF signs (securesystemslib ``encode_canonical``,
python-tuf ``CanonicalJSONSerializer``): keys sorted by code point, no insignificant
whitespace, only strings, integers, booleans, null, lists and objects; strings escape only
``"`` and ``\\``; non-ASCII is written as raw UTF-8. Floats are not representable.

The strict parser rejects duplicate keys, floats, NaN/Infinity and non-UTF-8 input, so a
document cannot mean two things to two parsers. It does no I/O.
"""

import json
import re
from typing import Any, Dict, List, Tuple

from installer.errors import FormatError

# Signed documents are small; anything larger is an attack or a mistake.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# Bounds on the shape, checked before ``json`` builds anything (its parser recurses per level
# and allocates per value): ours nest 6 deep and hold a few thousand values.
MAX_DEPTH = 32
MAX_TOKENS = 50_000         # containers + separators: bounds the objects a parse creates
MAX_INT_DIGITS = 20         # 2**63 has 19 digits; int() of long digit strings is quadratic

# A JSON string, or an unterminated one running to the end: always matches from a quote with
# no backtracking, so stripping strings is linear.
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_BRACKET_RE = re.compile(r"[\[\]{}]")


def _encode_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encode(obj: Any, out: List[str]) -> None:
    # dispatch on the exact type first (the common case, thousands of targets in a state
    # file), then the general isinstance checks for subclasses
    t = type(obj)
    if t is str:
        out.append(_encode_string(obj))
    elif t is int:
        out.append(str(obj))
    elif t is dict:
        _encode_dict(obj, out)
    elif t is list or t is tuple:
        _encode_list(obj, out)
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif obj is None:
        out.append("null")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, str):
        out.append(_encode_string(obj))
    elif isinstance(obj, (list, tuple)):
        _encode_list(obj, out)
    elif isinstance(obj, dict):
        _encode_dict(obj, out)
    else:
        raise TypeError(f"canonical JSON cannot encode {type(obj).__name__}")


def _encode_list(obj: Any, out: List[str]) -> None:
    out.append("[")
    for i, item in enumerate(obj):
        if i:
            out.append(",")
        _encode(item, out)
    out.append("]")


def _encode_dict(obj: Any, out: List[str]) -> None:
    out.append("{")
    first = True
    for key in sorted(obj):
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"canonical JSON keys must be strings, got {key!r}")
        if not first:
            out.append(",")
        first = False
        out.append(_encode_string(key))
        out.append(":")
        _encode(obj[key], out)
    out.append("}")


def encode(obj: Any) -> bytes:
    """Return the canonical UTF-8 bytes of ``obj``."""
    out: List[str] = []
    _encode(obj, out)
    return "".join(out).encode("utf-8")


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FormatError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise FormatError(f"floating-point number {text} is not allowed in signed JSON")


def _no_constant(text: str) -> Any:
    raise FormatError(f"JSON constant {text} is not allowed")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise FormatError(f"integer of {len(text)} digits is over the {MAX_INT_DIGITS}-digit "
                          "limit")
    return int(text)


def check_shape(text: str, *, what: str) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH`` or with more than ``MAX_TOKENS``
    containers and separators, in time linear in ``len(text)`` and before parsing.

    Strings are blanked first (brackets inside them are data), then brackets and separators
    are counted at C speed; only then is the nesting walked, at most ``2 * MAX_TOKENS``
    brackets. For valid JSON this is exact; for invalid JSON ``json`` stops at the first
    error, within the prefix measured here.
    """
    bare = _STRING_RE.sub('""', text)
    opens = bare.count("[") + bare.count("{")
    closes = bare.count("]") + bare.count("}")
    tokens = opens + bare.count(",") + bare.count(":")
    if tokens > MAX_TOKENS or closes > MAX_TOKENS:
        raise FormatError(f"{what} has more than {MAX_TOKENS} JSON values",
                          hint="signed documents are small; this one is not from a bundle "
                               "publisher")
    depth = 0
    for m in _BRACKET_RE.finditer(bare):
        if m.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise FormatError(f"{what} nests JSON deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def loads_strict(data: bytes, *, what: str = "document") -> Any:
    """Parse JSON bytes, rejecting duplicate keys, floats, oversized input, deep nesting,
    too many values and over-long integers (``check_shape``, ``MAX_INT_DIGITS``)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{what} is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES} "
                          "byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8: {e}") from None
    check_shape(text, what=what)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float,
                          parse_constant=_no_constant, parse_int=_bounded_int)
    except FormatError as e:
        raise FormatError(f"{what}: {e.message}") from None
    except ValueError as e:
        raise FormatError(f"{what} is not valid JSON: {e}") from None


def loads_canonical(data: bytes, *, what: str = "document") -> Any:
    """Parse bytes that must already be canonical: re-encoding must give the same bytes."""
    obj = loads_strict(data, what=what)
    if encode(obj) != data:
        raise FormatError(f"{what} is not in canonical JSON form",
                          hint="signed documents must be written by the canonical encoder")
    return obj

"""JSON as the engine accepts it from files and from models, and messages safe to print.

Whatever the engine accepts it also records (SQLite, exports, the screen), so it
accepts only what can be recorded: finite numbers (no NaN, no 1e999), nesting a
person would write (and a recursive function can walk), valid Unicode (no
unpaired surrogates, which `"\\ud800"` escapes produce and UTF-8 cannot encode).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

#: Deeper than this, a definition or a reply is refused (LeMMing's files nest 3 deep).
MAX_DEPTH = 64


class JSONRejected(ValueError):
    """Parsed, or nearly, but not something the engine can accept and record."""


def _no_constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not allowed in JSON; use a finite number")


def _finite_float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        shown = text if len(text) <= 24 else text[:21] + "..."
        raise JSONRejected(f"the number {shown} is out of range")
    return f


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_SCAN = _DECODER.scan_once
_WHITESPACE = json.decoder.WHITESPACE.match


def loads(text: str) -> Any:
    """`json.loads`, refusing NaN/Infinity, numbers that overflow and nesting over MAX_DEPTH.

    Raises json.JSONDecodeError for text that is not JSON, JSONRejected (a ValueError)
    for JSON the engine will not take.
    """
    try:
        if type(text) is str and not text.startswith("\ufeff"):
            # What json.loads does (JSONDecoder.decode), without a decoder per call, and for
            # text that starts with its value without decode's two calls around the scan.
            try:
                data, end = _SCAN(text, 0)
            except StopIteration:  # leading whitespace, or no value: as decode says it
                data = _DECODER.decode(text)
            else:
                if end != len(text) and _WHITESPACE(text, end).end() != len(text):
                    data = _DECODER.decode(text)  # raises decode's "Extra data"
        else:
            data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONRejected(f"nested deeper than {MAX_DEPTH} levels") from None
    # Each list or object of `data` opened with a bracket of `text`: with no more brackets
    # than MAX_DEPTH it cannot nest deeper, and the walk over `data` is not needed.
    if isinstance(text, str) and text.count("[") + text.count("{") <= MAX_DEPTH:
        return data
    if too_deep(data):
        raise JSONRejected(f"nested deeper than {MAX_DEPTH} levels")
    return data


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `obj` nests lists/dicts deeper than `limit` (iterative: never recurses)."""
    if not isinstance(obj, (dict, list, tuple)):
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return True
        children = o.values() if isinstance(o, dict) else o
        for c in children:
            if isinstance(c, (dict, list, tuple)):
                stack.append((c, d + 1))
    return False


def _strings(obj: Any):
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            yield o
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)


def is_valid_unicode(s: str) -> bool:
    """False when `s` holds an unpaired surrogate (it cannot be written as UTF-8)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def first_surrogate(obj: Any) -> str | None:
    """The first string (key or value) of `obj` that is not valid Unicode, if any."""
    for s in _strings(obj):
        if not is_valid_unicode(s):
            return s
    return None


def fix_unicode(s: str) -> str:
    """`s` with every unpaired surrogate replaced by U+FFFD."""
    if s.isascii() or is_valid_unicode(s):
        return s
    return _SURROGATE_RE.sub("\ufffd", s)


def fix_surrogates(obj: Any) -> Any:
    """A copy of a JSON value with unpaired surrogates replaced by U+FFFD (recursion is
    bounded: call it on values that passed `too_deep`)."""
    if isinstance(obj, str):
        return fix_unicode(obj)
    if isinstance(obj, dict):
        return {fix_unicode(k): fix_surrogates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fix_surrogates(v) for v in obj]
    return obj


# In a Python str every surrogate code point is unpaired (pairs decode to one code point).
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ESCAPED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def one_line(text: str) -> str:
    """`text` as one printable line: line breaks, control and format characters (bidi
    overrides included) and unpaired surrogates are shown as escapes."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c in _ESCAPED:
            out.append(_ESCAPED[c])
        elif unicodedata.category(c) in _UNPRINTABLE:
            o = ord(c)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(c)
    return "".join(out)


# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates.
_UNSAFE_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` safe to put on a terminal: newlines and tabs kept, every other control
    character (ESC above all: a model's reply must not drive the operator's terminal —
    clear it, retitle it, write its clipboard), bidi overrides and unpaired surrogates
    shown as escapes."""
    if text.isprintable() or not _UNSAFE_RE.search(text):
        return text
    return _UNSAFE_RE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)

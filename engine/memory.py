"""Per-agent key/value memory: set, append, merge, delete.

An update with a bad key or a value of the wrong shape is rejected alone; the
rest of the reply still applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lemming.engine import plainjson
from lemming.engine.fastinit import fast_frozen_init
from lemming.engine.jsontext import copy_plain, dumps_plain

KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}\Z")  # \Z: `$` would let "key\n" through
MAX_KEYS = 256
MAX_VALUE_CHARS = 20_000
MAX_LIST_ITEMS = 200  # `append` keeps the newest items beyond this


@fast_frozen_init
@dataclass(slots=True, frozen=True)
class MemoryChange:
    op: str
    key: str
    value: Any  # value after the change; None after delete


#: Keys that passed KEY_RE (an agent writes the same few keys turn after turn).
_GOOD_KEYS: set[str] = set()
_GOOD_KEYS_MAX = 50_000


def _size(value: Any) -> int:
    """Characters of `value` as JSON. Raises ValueError/TypeError for what could not be
    recorded: NaN, infinities, non-JSON types, unpaired surrogates."""
    text = dumps_plain(value)
    if not plainjson.is_valid_unicode(text):
        raise UnicodeError("not valid Unicode (an unpaired surrogate)")
    return len(text)


def apply_update(
    memory: dict[str, Any], op: str, key: Any, value: Any = None
) -> tuple[MemoryChange | None, str | None]:
    """Apply one update to `memory` in place. Returns (change, None) or (None, violation)."""
    problem = update_memory(memory, op, key, value)
    if problem is not None:
        return None, problem
    return MemoryChange(op, key, memory.get(key)), None


def update_memory(memory: dict[str, Any], op: str, key: Any, value: Any = None) -> str | None:
    """Apply one update to `memory` in place: None when it applied (the key's value after
    it is memory.get(key): None after a delete), else the violation (memory unchanged)."""
    if type(key) is not str or key not in _GOOD_KEYS:
        if not isinstance(key, str) or not KEY_RE.match(key):
            shown = repr(key)[:40]
            return plainjson.one_line(
                f"memory key {shown} rejected: use 1-64 characters of letters, digits, _ . : -"
            )
        if type(key) is str:
            if len(_GOOD_KEYS) >= _GOOD_KEYS_MAX:
                _GOOD_KEYS.clear()
            _GOOD_KEYS.add(key)
    if op == "delete":
        if key not in memory:
            return f"memory key {key!r}: delete of a key that does not exist"
        del memory[key]
        return None
    if op not in ("set", "append", "merge"):
        shown = repr(op) if len(repr(op)) <= 40 else repr(op)[:37] + "..."
        return plainjson.one_line(
            f"memory key {key!r}: unknown op {shown} (allowed: set, append, merge, delete)"
        )
    if type(value) is str and len(value) * 6 + 2 <= MAX_VALUE_CHARS:
        # A string whose JSON surely fits (no character is written longer than "\\u001f"):
        # only its Unicode is checked, not its JSON written.
        if not value.isascii() and not plainjson.is_valid_unicode(value):
            return f"memory key {key!r}: value is not valid Unicode (an unpaired surrogate)"
    else:
        if plainjson.too_deep(value, plainjson.MAX_DEPTH - 1):
            return f"memory key {key!r}: value nested deeper than {plainjson.MAX_DEPTH - 1} levels"
        try:
            if _size(value) > MAX_VALUE_CHARS:
                return f"memory key {key!r}: value over {MAX_VALUE_CHARS} characters"
        except UnicodeError:
            return f"memory key {key!r}: value is not valid Unicode (an unpaired surrogate)"
        except (TypeError, ValueError, RecursionError):
            return f"memory key {key!r}: value is not plain JSON (no NaN, Infinity or other types)"
    if key not in memory and len(memory) >= MAX_KEYS:
        return f"memory key {key!r}: memory is full ({MAX_KEYS} keys); delete some first"
    if op == "set":
        # (a copy of the value, whose size was checked above)
        memory[key] = value if type(value) is str else copy_plain(value)
        return None
    if op == "append":
        old = memory.get(key, [])
        if not isinstance(old, list):
            return f"memory key {key!r}: append to a {type(old).__name__}, not a list"
        new = (old + [copy_plain(value)])[-MAX_LIST_ITEMS:]
    else:  # merge
        old = memory.get(key, {})
        if not isinstance(old, dict) or not isinstance(value, dict):
            return f"memory key {key!r}: merge needs an object on both sides"
        new = {**old, **copy_plain(value)}
    if _size(new) > MAX_VALUE_CHARS:
        return f"memory key {key!r}: value would exceed {MAX_VALUE_CHARS} characters"
    memory[key] = new
    return None

"""JSON text and copies of JSON values on the engine's hot paths.

`json.dumps` with any non-default option builds a new `JSONEncoder` on every call,
which costs more than encoding a small value. The encoders here give exactly the
text `json.dumps` gives with the same options (the same C encoder does the work),
without that set-up. `copy_plain` copies a JSON value as `copy.deepcopy` would,
several times faster, because a JSON value holds nothing but dicts, lists and
immutable scalars.
"""

from __future__ import annotations

import copy
import json
from json import encoder as _encoder
from typing import Any, Callable

__all__ = ["copy_plain", "dumps_plain", "dumps_sorted", "dumps_text"]


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _make(*, sort_keys: bool, allow_nan: bool, separators: tuple[str, str] = (", ", ": ")) -> Callable[[Any], str]:
    item_sep, key_sep = separators
    make = _encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # a Python built without the C accelerator
        enc = json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan, sort_keys=sort_keys, separators=separators)
        return enc.encode
    basestring = _encoder.encode_basestring
    # Without the markers dict (json.dumps' check for circular values) the encoder keeps no
    # state between calls, so one serves every call. A circular value then ends in a
    # RecursionError, and is encoded again as json.dumps would, to fail the same way.
    fast = make(None, _default, basestring, None, key_sep, item_sep, sort_keys, False, allow_nan)

    def dumps(obj: Any) -> str:
        try:
            return "".join(fast(obj, 0))
        except RecursionError:
            return "".join(make({}, _default, basestring, None, key_sep, item_sep, sort_keys, False, allow_nan)(obj, 0))

    return dumps


#: json.dumps(obj, ensure_ascii=False, allow_nan=False): what the engine accepts and records.
dumps_plain = _make(sort_keys=False, allow_nan=False)
#: json.dumps(obj, ensure_ascii=False)
dumps_text = _make(sort_keys=False, allow_nan=True)
#: json.dumps(obj, ensure_ascii=False, sort_keys=True)
dumps_sorted = _make(sort_keys=True, allow_nan=True)


def copy_plain(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, str, int, float, bool, None); anything
    else is handed to `copy.deepcopy`."""
    t = type(value)
    if t is dict:
        return {k: copy_plain(v) for k, v in value.items()}
    if t is list:
        return [copy_plain(v) for v in value]
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    return copy.deepcopy(value)

"""Faster construction of the engine's small frozen records (events, memory changes)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound=type)

#: A default_factory field's default in the generated signature: "not given".
_NO = object()


def fast_frozen_init(cls: T) -> T:
    """Give a frozen, slotted dataclass an `__init__` that sets its slots through their
    descriptors: the one dataclasses writes calls `object.__setattr__` by name for each
    field, which costs twice as much (an engine turn makes half a dozen events and memory
    changes). The signature, the defaults and what ends up in the slots are the same.
    Returns `cls` (usable as a decorator above `@dataclass`); a class it cannot do so for
    (init=False or keyword-only fields, a __post_init__) keeps its own."""
    fields = dataclasses.fields(cls)
    if not fields or any(not f.init or f.kw_only for f in fields) or hasattr(cls, "__post_init__"):
        return cls
    ns: dict[str, Any] = {"_NO": _NO}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        n = f.name
        ns[f"_set_{n}"] = cls.__dict__[n].__set__
        if f.default is not dataclasses.MISSING:
            ns[f"_d_{n}"] = f.default
            params.append(f"{n}=_d_{n}")
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"_f_{n}"] = f.default_factory
            params.append(f"{n}=_NO")
            body.append(f"    if {n} is _NO: {n} = _f_{n}()")
        else:
            params.append(n)
        body.append(f"    _set_{n}(self, {n})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls

"""Faster construction of the engine's small frozen records (events, memory changes)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound=type)

#: A default_factory field's default in the generated signature: "not given".
_NO = object()


def fast_frozen_init(cls: T) -> T:
    """Make a frozen, slotted dataclass faster to build (an engine turn makes half a dozen
    events and memory changes), with the same signature, defaults and slots.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, and
    setting a slot through its descriptor by hand still costs several times a plain
    attribute store. So the instance is made as the class's twin — a class with the same
    slots on the same base, mutable — filled with plain stores, then given its class
    (the layouts are the same, so Python allows it): from then on it is as frozen as
    any. That happens in a generated `__new__`, the dataclass's `__init__` going;
    `__getnewargs__` hands the fields to `__new__` when a copy or pickle rebuilds one.
    Such a class cannot be subclassed (its `__new__` makes its own twin).

    Returns `cls` (usable as a decorator above `@dataclass`); a class it cannot do so for
    keeps its own `__init__`: init=False or keyword-only fields, a `__post_init__`, slots
    other than its fields, or a base whose attribute stores are not plain ones (a base
    must add no `__setattr__` or `__init__` of its own: a frozen dataclass cannot be one)."""
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    base = cls.__base__
    if (
        not fields
        or any(not f.init or f.kw_only for f in fields)
        or hasattr(cls, "__post_init__")
        or cls.__dict__.get("__slots__") != names
        or base.__setattr__ is not object.__setattr__
        or base.__init__ is not object.__init__
    ):
        return cls
    twin = type(cls.__name__, (base,), {"__slots__": names, "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.twin"})
    ns: dict[str, Any] = {"_NO": _NO, "_twin": twin, "_new": object.__new__}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        n = f.name
        if f.default is not dataclasses.MISSING:
            ns[f"_d_{n}"] = f.default
            params.append(f"{n}=_d_{n}")
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"_f_{n}"] = f.default_factory
            params.append(f"{n}=_NO")
            body.append(f"    if {n} is _NO: {n} = _f_{n}()")
        else:
            params.append(n)
        body.append(f"    self.{n} = {n}")
    exec(
        f"def __new__(cls, {', '.join(params)}):\n"
        "    self = _new(_twin)\n"
        + "\n".join(body)
        + "\n    self.__class__ = cls\n    return self\n"
        f"def __getnewargs__(self): return ({''.join(f'self.{n}, ' for n in names)})\n",
        ns,
    )
    new = ns["__new__"]
    new.__qualname__ = f"{cls.__qualname__}.__new__"
    new.__doc__ = cls.__init__.__doc__
    getnewargs = ns["__getnewargs__"]
    getnewargs.__qualname__ = f"{cls.__qualname__}.__getnewargs__"
    cls.__new__ = staticmethod(new)  # type: ignore[assignment]
    cls.__getnewargs__ = getnewargs  # type: ignore[attr-defined]
    del cls.__init__  # object's: the instance comes out of __new__ whole
    cls.__init_subclass__ = classmethod(_final)  # type: ignore[assignment]
    return cls


def _final(sub: type, **kw: Any) -> None:
    # A subclass would inherit a __new__ that makes its parent's twin, of other fields.
    raise TypeError(f"{sub.__base__.__name__} cannot be subclassed (engine/fastinit.py builds it as its twin)")

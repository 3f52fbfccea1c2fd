"""The fast `__init__` of events and memory changes (engine/fastinit.py) is the one
dataclasses would write: same parameters, defaults and values in the slots; still frozen."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from lemming.engine.events import EVENT_TYPES
from lemming.engine.memory import MemoryChange

CLASSES = {**EVENT_TYPES, "MemoryChange": MemoryChange}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_event_and_memory_change_is_built_as_its_dataclass_says(name: str) -> None:
    cls = CLASSES[name]
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty
    required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    values = {f.name: object() for f in fields}
    by_position = cls(*[values[f.name] for f in fields])
    by_name = cls(**{f.name: values[f.name] for f in required})
    for f in fields:
        assert getattr(by_position, f.name) is values[f.name]
        if f.default is not dataclasses.MISSING:
            assert getattr(by_name, f.name) == f.default
        elif f.default_factory is not dataclasses.MISSING:
            made = getattr(by_name, f.name)
            assert made == f.default_factory() and made is not getattr(cls(**{r.name: values[r.name] for r in required}), f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(by_position, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(*[values[f.name] for f in fields], None)  # one too many

"""The fast construction of events, memory changes and outbox entries (engine/fastinit.py) gives what
the dataclass `__init__` would: same parameters, defaults and values in the slots, the
class itself (not its twin); still frozen; copied and pickled as before."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

from lemming.engine.events import EVENT_TYPES, Event, TurnStarted
from lemming.engine.memory import MemoryChange
from lemming.engine.messages import OutboxEntry

CLASSES = {**EVENT_TYPES, "MemoryChange": MemoryChange, "OutboxEntry": OutboxEntry}


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
    assert type(by_position) is cls and type(by_name) is cls
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


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_events_and_memory_changes_copy_and_pickle_as_they_are(name: str) -> None:
    cls = CLASSES[name]
    fields = dataclasses.fields(cls)
    ev = cls(*[f"v{i}" for i in range(len(fields))])
    for again in (copy.copy(ev), copy.deepcopy(ev), pickle.loads(pickle.dumps(ev))):
        assert type(again) is cls and again == ev


def test_only_kinds_of_event_are_registered_and_none_can_be_subclassed() -> None:
    """(A subclass would inherit a `__new__` that makes its parent's twin.)"""
    assert all(c.__qualname__ == c.__name__ and issubclass(c, Event) for c in EVENT_TYPES.values())
    assert len(set(EVENT_TYPES.values())) == len(EVENT_TYPES)
    with pytest.raises(TypeError, match="cannot be subclassed"):

        @dataclasses.dataclass(slots=True, frozen=True)
        class Later(TurnStarted):
            extra: int = 0

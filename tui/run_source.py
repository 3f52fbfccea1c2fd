"""The seam between the panes and a run: what they read, what steers it, where its events come from.

Three small protocols, each satisfied by the live engine's own objects and by
replay's, so the panes are written once:

* :class:`RunSource` — the organisation's state at the tick on screen (tick,
  credits, spend, interval, paused, stopped, the org's definitions, each agent's
  status). The live :class:`~lemming.engine.engine.Engine` is one; replay's
  :class:`~lemming.engine.run_view.RecordedRunAt` (the state at the cursor) is another.
* :class:`RunControl` — the operator's commands, applied at the next tick boundary.
  The live engine is one; a replayed run has none (it is read-only).
* :class:`EventFeed` — the batches of events the pump folds into the view. The
  engine's :class:`~lemming.engine.engine.Subscription` is one; replay has none (its
  cursor folds the recorded ticks itself).

One source for each fact: what the organisation's state keeps, the panes read from
``source.state``; what only the display keeps (timeline rows, replies streaming, who
is thinking, recent turns, message volumes), they read from the
:class:`~lemming.tui.model.RunView`. An app that follows a run elsewhere (attached
over a socket) supplies its own three objects to :meth:`lemming.tui.room.Room.show_run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from lemming.engine.events import Event
    from lemming.engine.org import Org
    from lemming.engine.state import OrgState


@runtime_checkable
class RunSource(Protocol):
    """What the panes read of a run (see the module docstring)."""

    @property
    def run_id(self) -> str: ...

    @property
    def state(self) -> "OrgState":
        """The organisation's state at the tick on screen."""
        ...

    @property
    def org(self) -> "Org": ...

    @property
    def tick(self) -> int:
        """The last committed tick (the cursor's tick in replay)."""
        ...

    @property
    def running(self) -> bool:
        """Whether ticks are being run (never, for a recorded run)."""
        ...

    def agent_status(self, name: str) -> str:
        """idle, thinking, broke, error, disabled or retired."""
        ...


@runtime_checkable
class RunControl(Protocol):
    """The operator's commands to a run; each takes effect at the next tick boundary."""

    @property
    def paused(self) -> bool: ...

    @property
    def running(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def step(self) -> None: ...

    def inject(self, text: str, recipients: Iterable[str] | None = None, kind: str = "message") -> None: ...

    def top_up(self, agent: str, amount: float) -> None: ...

    def set_enabled(self, agent: str, enabled: bool) -> None: ...

    def set_interval(self, seconds: float) -> None: ...

    def abort_tick(self) -> None: ...

    def stop(self, *, abort: bool = False) -> None: ...


@runtime_checkable
class EventFeed(Protocol):
    """Batches of a run's events, in order, for the pump."""

    @property
    def closed(self) -> bool:
        """No event will come any more (what is queued may still be drained)."""
        ...

    async def wait(self, timeout: float | None = None) -> bool:
        """Until an event is queued or the feed closes (or `timeout` seconds pass)."""
        ...

    def drain(self, limit: int | None = None) -> Sequence["Event"]: ...

    def __len__(self) -> int: ...

"""A recorded run: an engine on an organisation, recorded in the run store.

Every entry point that runs an organisation (the control room, `lemming run`,
`resume`, `fork`, a fork or new run started from replay) goes through here, so a
run is built, recorded, resumed and forked one way, with one set of defaults.

* :class:`RunSettings` — how a run runs (seed, interval, paused, concurrency, sim
  overrides, snapshot spacing); :data:`HEADLESS` and :data:`CONTROL_ROOM` are the
  two sets of defaults.
* :func:`build_engine` — an engine on an organisation, unrecorded.
* :class:`RecordedRun` — an engine with its run store: :meth:`RecordedRun.record`
  (a new run of an engine already built), :meth:`RecordedRun.start` (load, build and
  record), :meth:`RecordedRun.resume` and :meth:`RecordedRun.fork`. Close it (or use
  it as an async context manager) when the run ends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemming.engine.engine import Engine
from lemming.engine.org import Org, OrgInvalid, load_org
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.sim_mode import sim_served, simulated
from lemming.engine.replay import fork_state
from lemming.engine.state import OrgState
from lemming.engine.store import RunInfo, RunStore, StoreError, default_db_path, detached, writer_alive


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How a run runs. Fields left None take the organisation's own setting."""

    seed: int = 0
    #: Seconds between ticks.
    interval: float = 0.0
    paused: bool = False
    #: Turns in flight at once (None: org.json's max_concurrency).
    concurrency: int | None = None
    #: Options given to the sim provider on top of models.json's (tokens_per_s, latency_ms,
    #: malformed_rate...).
    sim: dict[str, Any] = field(default_factory=dict)
    #: A state snapshot is recorded at least every this many ticks.
    snapshot_every: int = 100
    #: `--sim`: every API model is served by the sim (cli models run as they are), so an
    #: organisation runs without keys. The recorded definitions say so (see `simulated`).
    sim_only: bool = False
    #: Wait for the granted MCP servers before the first tick (prompts list their tools
    #: from tick 1, so a seeded run's record does not depend on how long a server takes to
    #: start). Off in the control room, whose first tick should not wait on a slow server.
    mcp_wait: bool = True

    def replace(self, **changes: Any) -> "RunSettings":
        """These settings with `changes` (None values are ignored: the default stays)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


#: `lemming run --headless`, `run-once`, `resume`, `fork`: as fast as the models answer.
HEADLESS = RunSettings()
#: The control room: a tick a second and the sim streaming at a readable pace, so a
#: newcomer sees replies arrive.
CONTROL_ROOM = RunSettings(interval=1.0, sim={"tokens_per_s": 40.0}, mcp_wait=False)


def build_engine(
    org: Org | str | Path,
    settings: RunSettings = HEADLESS,
    *,
    state: OrgState | None = None,
    run_id: str | None = None,
    parent_run: str | None = None,
    fork_tick: int | None = None,
) -> Engine:
    """An engine on `org` (a loaded Org, or a folder: raises OrgInvalid with every problem)."""
    loaded = org if isinstance(org, Org) else load_org(org)
    if settings.sim_only:
        loaded = simulated(loaded)
    registry = ProviderRegistry(loaded.models, overrides={"sim": dict(settings.sim)} if settings.sim else None)
    return Engine(
        loaded,
        seed=settings.seed,
        concurrency=settings.concurrency,
        interval=settings.interval,
        paused=settings.paused,
        registry=registry,
        state=state,
        run_id=run_id,
        parent_run=parent_run,
        fork_tick=fork_tick,
        mcp_wait=settings.mcp_wait,
    )


class RecordedRun:
    """An engine whose run is recorded in a run store (see the module docstring)."""

    def __init__(self, engine: Engine, store: RunStore, *, target_ticks: int | None, resumed_from: int | None = None,
                 stop_recorded: bool = True) -> None:
        self.engine = engine
        self.store = store
        #: False for a resumed run whose record has no stop (killed after its last tick
        #: committed): running it records the stop an uninterrupted run would have.
        self.stop_recorded = stop_recorded
        #: The tick the run is meant to reach (None: until stopped).
        self.target_ticks = target_ticks
        #: For a resumed run, the tick it continues from.
        self.resumed_from = resumed_from

    @property
    def db(self) -> Path:
        """The run database's path."""
        return Path(self.store.path)

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> "RecordedRun":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the four ways a recorded run begins ---------------------------------------------

    @classmethod
    async def record(
        cls, engine: Engine, db: Path | str | None = None, *, target_ticks: int | None = None, snapshot_every: int = HEADLESS.snapshot_every
    ) -> "RecordedRun":
        """Record `engine`'s new run in `db` (default: the organisation's ORG/.lemming/runs.db)."""
        store = await RunStore.open(db or default_db_path(engine.org.root), snapshot_every=snapshot_every)
        try:
            await store.create_run(
                run_id=engine.run_id,
                org_root=engine.org.root,
                seed=engine.seed,
                definitions_hash=engine.org.definitions_hash(),
                target_ticks=target_ticks,
            )
            # Snapshots come from the engine's live state (the recorder need not fold a copy).
            engine.recorder = store.recorder(engine.run_id, state=engine.state)
        except BaseException:
            await store.close()
            raise
        return cls(engine, store, target_ticks=target_ticks)

    @classmethod
    async def start(
        cls, org: Org | str | Path, settings: RunSettings = HEADLESS, db: Path | str | None = None, *, target_ticks: int | None = None
    ) -> "RecordedRun":
        """Load the organisation at `org`, build its engine and record a new run of it."""
        engine = build_engine(org, settings)
        return await cls.record(engine, db, target_ticks=target_ticks, snapshot_every=settings.snapshot_every)

    @classmethod
    async def fork(
        cls,
        db: Path | str,
        run_id: str,
        tick: int,
        settings: RunSettings = HEADLESS,
        *,
        ticks: int | None = None,
        seed: int | None = None,
        open_ended: bool = True,
    ) -> "RecordedRun":
        """A new run from the end of `tick` of `run_id`, recorded as its child.

        It runs `ticks` ticks (None: up to the parent's target, if that lies ahead) with
        the parent's seed unless `seed` is given. With `open_ended` False a fork that
        would have no target (no `ticks`, no parent target ahead) is refused (StoreError)
        before anything is recorded: a headless fork would otherwise run without end.
        """
        path = Path(db)
        if not path.exists():
            raise StoreError(f"no run database at {path}")
        store = await RunStore.open(path, snapshot_every=settings.snapshot_every)
        try:
            info = await store.get_run(run_id)
            state = await fork_state(store, info.id, tick)
            store.forget_message_logs()  # the engine's board keeps what it needs
            if ticks is not None:
                target: int | None = tick + ticks
            else:
                target = info.target_ticks if info.target_ticks is not None and info.target_ticks > tick else None
            if target is None and not open_ended:
                why = "was started without a tick count" if info.target_ticks is None else f"ends at tick {info.target_ticks}"
                raise StoreError(f"run {info.id} {why}, so a fork at tick {tick} would run without end: give it --ticks N")
            org = _on_disk_at(state, info)
            engine = build_engine(
                org, settings.replace(seed=info.seed if seed is None else seed), state=state, parent_run=info.id, fork_tick=tick
            )
            await store.create_run(
                run_id=engine.run_id,
                org_root=info.org_path,
                seed=engine.seed,
                definitions_hash=org.definitions_hash(),
                target_ticks=target,
                parent_run=info.id,
                fork_tick=tick,
                base_state=state,
            )
            engine.recorder = store.recorder(engine.run_id, state=engine.state)
        except BaseException:
            await store.close()
            raise
        return cls(engine, store, target_ticks=target)

    @classmethod
    async def resume(
        cls,
        db: Path | str,
        run_id: str,
        settings: RunSettings = HEADLESS,
        *,
        ticks: int | None = None,
        force: bool = False,
    ) -> "RecordedRun":
        """Continue `run_id` from its last committed tick, with the definitions and seed it
        was recorded with, up to its target (or `ticks` more).

        Raises StoreError when another process still records it (unless `force`), and
        when an unstarted run's definitions changed on disk since. When the run has already
        reached its target, the returned run's engine is not meant to run: check
        :attr:`complete`.
        """
        path = Path(db)
        if not path.exists():
            raise StoreError(f"no run database at {path}")
        store = await RunStore.open(path, snapshot_every=settings.snapshot_every)
        try:
            info = await store.get_run(run_id)
            _check_not_running(info, force)
            state = detached(await store.state_at(info.id))
            store.forget_message_logs()  # the engine's board keeps what it needs
            if not state.org.agents:
                state = _unstarted_state(info)
            start = state.tick
            if ticks is not None:
                target = start + ticks
                await store.set_target(info.id, target)
            else:
                target = info.target_ticks
            # The run goes on with the definitions it was recorded with, so that it continues
            # exactly as it would have; edits on disk are picked up by a new run or a fork.
            org = _on_disk_at(state, info)
            engine = build_engine(
                org, settings.replace(seed=info.seed), state=state, run_id=info.id, parent_run=info.parent_run, fork_tick=info.fork_tick
            )
            engine.recorder = store.recorder(info.id, state=state)  # the engine runs on this very state object
        except BaseException:
            await store.close()
            raise
        return cls(engine, store, target_ticks=target, resumed_from=start,
                   stop_recorded=info.status not in ("running", "interrupted"))

    @property
    def complete(self) -> bool:
        """The run has reached its target tick and its record says it stopped: nothing is
        left to run."""
        return self.target_ticks is not None and self.engine.tick >= self.target_ticks and self.stop_recorded


def _on_disk_at(state: OrgState, info: RunInfo) -> Org:
    """The state's recorded definitions, rooted at the run's organisation folder."""
    org = state.org
    org.root = Path(info.org_path)
    return org


def _check_not_running(info: RunInfo, force: bool) -> None:
    if info.status == "running" and not force and writer_alive(info.writer) is not False:
        who = info.writer or "another process"
        raise StoreError(f"run {info.id} is being recorded by {who}; stop it first (--force if that process is gone for good)")


def _unstarted_state(info: RunInfo) -> OrgState:
    """A run killed after its row was written but before its start was: it ran nothing,
    so it starts over from its definitions on disk, if they are still the same."""
    try:
        org = load_org(info.org_path)
    except OrgInvalid as e:
        raise StoreError(f"run {info.id} recorded nothing yet and {info.org_path} does not load: {e.problems[0]}") from None
    if info.definitions_hash and info.definitions_hash not in (org.definitions_hash(), simulated(org).definitions_hash()):
        raise StoreError(f"run {info.id} recorded nothing yet and its definitions have changed on disk since; start a new run")
    if info.definitions_hash == simulated(org).definitions_hash() != org.definitions_hash():
        org = simulated(org)  # it was started with --sim
    return OrgState.initial(org)


__all__ = ["CONTROL_ROOM", "HEADLESS", "RecordedRun", "RunSettings", "build_engine", "sim_served", "simulated"]

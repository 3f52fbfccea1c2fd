"""Hot reload: agent files on disk → validated definition changes, applied at tick boundaries.

What is watched (paths relative to the organisation's root)::

    agents/<name>/resume.json       an agent's definition
    agents/<name>/                  a folder appearing (new agent) or going (agent retired)
    models.json  credits.json  org.json
    lemming/config/{models,credits,org_config}.json   (LeMMing's layout)

Nothing else wakes the watcher: the run store (`.lemming/`), hidden folders,
editor swap and backup files (`.resume.json.swp`, `resume.json~`, vim's `4913`,
`#resume.json#`), and whatever else lives in an agent's folder. Two watchers
keep the kernel's work small: the root itself non-recursively (so a `.venv` or a
`.git` beside `agents/` costs nothing) and `agents/` (plus `lemming/config/`)
recursively; the latter is re-established when `agents/` itself is replaced.

A change is a burst: watchfiles groups events until `step_ms` pass quietly, and
the watcher then waits until `debounce_ms` pass without any further event (at
most `max_delay_ms` in all), so an editor's save or a `git checkout` is one
change. A change triggers one full, lenient re-read of the organisation
(`load_org(strict=False, last_good=...)`), and then:

* every file that does not validate is **rejected**: the engine records a
  `DefinitionRejected(file, errors)` event (at the next tick boundary, like
  every command), and whatever that file defined keeps running as it was
  (the agent's last good definition, the last good models, budgets or
  settings). A file is announced again only when its errors change or when it
  was touched by this change — an unrelated edit does not repeat old news;
* if the definitions that would run differ from the ones running, they go to
  `engine.reload(org)` and apply at the next tick boundary as one
  `DefinitionsReloaded(added, removed, changed)` event;
* a removed folder retires its agent, a renamed folder is a retirement and an
  addition; a resume whose `name` is not its folder's name is rejected (never
  guessed at). An organisation with no agent folder left (or no `agents/`) is
  rejected as a whole: the running organisation keeps running.

What a UI reads (the TUI, or anything else in the engine's event loop):

* the engine's events: `DefinitionsReloaded` = a change was applied (roster and
  graph change with it), `DefinitionRejected` = a file was rejected; both are
  recorded, so replay shows them where they happened;
* `DefinitionWatcher.rejected` — ``{file: (error, ...)}``, the files whose
  current content is *not* running, from the latest check: list them until they
  disappear from it. When `ready` is set it holds the files the engine's
  organisation was loaded without (the `problems` of a lenient `load_org`:
  listed, not announced, nothing changed); anything edited between that load
  and the watcher's start is caught by one check then, like any change;
* `on_change(report)` — called after every change was checked, with a
  `WatchReport` (files touched, whether a reload was queued, what was rejected,
  which rejected files are fixed). It is the only signal that a broken file
  was put back exactly as it was running (nothing to reload, no engine event,
  but it leaves `rejected`).

The watcher assumes it is the only one handing definitions to its engine: the
"last good" definitions are the ones it last handed over (the engine's own at
start). Stopping it — `stop_event.set()` or cancelling the task — returns in
milliseconds: no file is read and no thread is waited for at that point.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from watchfiles import Change, awatch

from lemming.engine.org import SKIPPED_FOLDERS, Org, OrgInvalid, load_org

if TYPE_CHECKING:
    from lemming.engine.engine import Engine

log = logging.getLogger(__name__)

#: Files at the organisation's root that define it, and the folders whose coming and going matters.
ROOT_ENTRIES = frozenset({"models.json", "credits.json", "org.json", "agents", "lemming"})
#: LeMMing's config folder (lemming/config/), read where present.
LEMMING_CONFIG_FILES = frozenset({"models.json", "credits.json", "org_config.json"})
#: The key under which "the organisation as a whole" is rejected (no agents left).
ORG_WIDE = "agents"


@dataclass(frozen=True, slots=True)
class WatchReport:
    """What one debounced change amounted to, when it was checked (not yet applied)."""

    #: Definition files touched on disk, relative to the org root (a folder's coming or
    #: going is reported as its resume.json).
    files: tuple[str, ...]
    #: New definitions were handed to the engine; they apply at the next tick boundary.
    reload_queued: bool
    #: Files rejected by this change (each is also a `DefinitionRejected` event).
    rejected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Files that were rejected before and are accepted now (or are gone).
    fixed: tuple[str, ...] = ()


def definition_path(parts: tuple[str, ...]) -> bool:
    """Is this path (split, relative to the org root) one whose change can change the org?"""
    n = len(parts)
    if n == 0:
        return False
    if n == 1:
        return parts[0] in ROOT_ENTRIES
    if parts[0] == "agents":
        if not _agent_folder_name(parts[1]):
            return False
        return n == 2 or (n == 3 and parts[2] == "resume.json")
    if parts[0] == "lemming" and parts[1] == "config":
        return n == 2 or (n == 3 and parts[2] in LEMMING_CONFIG_FILES)
    return False


def _agent_folder_name(name: str) -> bool:
    # Hidden folders, editor leftovers and the template are never agents worth waking for.
    return not (
        name.startswith((".", "#", "~"))
        or name.endswith(("~", ".swp", ".swx", ".tmp", ".bak"))
        or name in SKIPPED_FOLDERS
    )


def _normalise(parts: tuple[str, ...]) -> str:
    if len(parts) == 2 and parts[0] == "agents":
        return f"agents/{parts[1]}/resume.json"
    return "/".join(parts)


def problems_by_file(problems: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Group `file: field: message` lines by their file."""
    out: dict[str, list[str]] = {}
    for p in problems:
        file = p.partition(": ")[0]
        out.setdefault(file, []).append(p)
    return {f: tuple(errs) for f, errs in out.items()}


def check_org(root: Path, last_good: Org) -> tuple[Org | None, dict[str, tuple[str, ...]], list[str]]:
    """Re-read the organisation at `root` leniently.

    Returns (the org that should run — or None if the change must be rejected as a
    whole —, the rejected files with their errors, warnings).
    """
    try:
        org = load_org(root, strict=False, last_good=last_good)
    except OrgInvalid:
        msg = "agents: (folder): is missing; the running organisation keeps running until it is back"
        return None, {ORG_WIDE: (msg,)}, []
    rejected = problems_by_file(org.problems)
    if not org.agents:
        msg = (
            "agents: (folder): holds no agent folder; the running organisation keeps running "
            "until one is back"
        )
        rejected[ORG_WIDE] = (msg,)
        return None, rejected, org.warnings
    return org, rejected, org.warnings


class DefinitionWatcher:
    """Watches an engine's organisation folder and feeds it validated definition changes.

    See the module docstring for what is watched and what a UI reads. Run it with
    `await watcher.run(stop_event)` in the engine's event loop.
    """

    def __init__(
        self,
        engine: "Engine",
        *,
        debounce_ms: int = 200,
        max_delay_ms: int = 2_000,
        step_ms: int = 50,
        force_polling: bool | None = None,
        on_change: Callable[[WatchReport], None] | None = None,
    ) -> None:
        self.engine = engine
        self.root = Path(engine.org.root).resolve()
        #: The definitions last handed to the engine: what a broken file falls back to.
        self.org: Org = engine.org
        #: Files whose current content is not running, with why (from the latest check).
        self.rejected: dict[str, tuple[str, ...]] = {}
        #: What loads but looks wrong (e.g. a budget in credits.json for no agent).
        self.warnings: list[str] = []
        #: Set once the watches exist and the first check is done (`rejected` is filled).
        self.ready = asyncio.Event()
        #: Why watching failed, if it did (the run goes on without hot reload).
        self.error: str | None = None
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self.max_delay_ms = max_delay_ms
        self.step_ms = step_ms
        self.force_polling = force_polling
        self._pending: set[str] = set()
        self._dirty = asyncio.Event()
        self._tree_restart = asyncio.Event()
        self._lock = asyncio.Lock()

    # --- checking ----------------------------------------------------------------------

    async def rescan(self, touched: Iterable[str] = (), *, initial: bool = False) -> WatchReport:
        """Re-read the organisation now, queue what changed, and report.

        `touched`: the files (relative to the root) this check is for; a rejected file
        among them is announced again even if its errors are the same. `initial`: the
        check at start, reported to `on_change` only if it found something.
        """
        touched = tuple(sorted(set(touched)))
        async with self._lock:
            base = self.org
            # Reading and validating a big org takes a while: keep the event loop free.
            org, rejected, warnings = await asyncio.to_thread(check_org, self.root, base)
            announced: dict[str, tuple[str, ...]] = {}
            for file, errors in sorted(rejected.items()):
                if self.rejected.get(file) != errors or file in touched:
                    announced[file] = errors
                    self.engine.reject_definition(file, errors)
            queued = False
            if org is not None and org.definitions() != base.definitions():
                self.engine.reload(org)
                self.org = org
                queued = True
            fixed = tuple(sorted(set(self.rejected) - set(rejected)))
            self.rejected = rejected
            self.warnings = warnings
        report = WatchReport(touched, queued, announced, fixed)
        if initial and not (queued or announced or fixed):
            return report
        if self.on_change is not None:
            try:
                self.on_change(report)
            except Exception:  # a listener's bug never stops hot reload
                log.exception("on_change listener failed")
        return report

    # --- watching ----------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Watch until `stop_event` is set or the task is cancelled."""
        # What the engine's org was loaded without (a lenient load) is listed, not announced.
        self.rejected = problems_by_file(self.org.problems)
        root_ready, tree_ready = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(self._watch_root(root_ready), name="watch-root"),
            asyncio.create_task(self._watch_tree(tree_ready), name="watch-agents"),
            asyncio.create_task(self._process(), name="watch-process"),
        ]
        waiters = [asyncio.create_task(root_ready.wait()), asyncio.create_task(tree_ready.wait())]
        try:
            await asyncio.wait(waiters)
            # The watches exist now; whatever changed between the engine's load and this
            # moment is caught by one check against the engine's definitions.
            try:
                await self.rescan(initial=True)
            except Exception:  # never let a surprise here end the run's hot reload
                log.exception("checking the organisation at start failed")
            self.ready.set()
            # Each task copes with its own failures; only the stop event (or a cancel) ends this.
            await (stop_event.wait() if stop_event is not None else asyncio.Future())
        finally:
            for t in (*tasks, *waiters):
                t.cancel()
            # awatch sets its own stop flag on cancellation: this returns in milliseconds.
            await asyncio.gather(*tasks, *waiters, return_exceptions=True)

    async def _watch_root(self, ready: asyncio.Event) -> None:
        await self._feed([self.root], False, ready)

    async def _watch_tree(self, ready: asyncio.Event) -> None:
        while True:
            self._tree_restart.clear()
            dirs = [d for d in (self.root / "agents", self.root / "lemming" / "config") if d.is_dir()]
            if not dirs:
                ready.set()
                await self._tree_restart.wait()
                continue
            feed = asyncio.create_task(self._feed(dirs, True, ready))
            restart = asyncio.create_task(self._tree_restart.wait())
            try:
                await asyncio.wait([feed, restart], return_when=asyncio.FIRST_COMPLETED)
            finally:
                feed.cancel()
                restart.cancel()
                await asyncio.gather(feed, restart, return_exceptions=True)
            if not restart.cancelled() and restart.done():
                continue  # agents/ (or lemming/) was replaced: watch the new one
            # The feed ended by itself (it failed and said why): wait for a new folder.
            await self._tree_restart.wait()

    async def _feed(self, paths: list[Path], recursive: bool, ready: asyncio.Event) -> None:
        """Run one awatch over `paths`, noting the changes; fall back to polling on failure."""
        polling = self.force_polling
        while True:
            agen = awatch(
                *paths,
                watch_filter=self._wanted,
                step=self.step_ms,
                recursive=recursive,
                force_polling=polling,
                ignore_permission_denied=True,
            )
            first = asyncio.ensure_future(anext(agen))
            try:
                # The generator has now run to its first wait: the kernel watch exists, so
                # nothing written from here on is missed.
                await asyncio.sleep(0)
                if first.done() and first.exception() is not None:
                    raise first.exception()  # type: ignore[misc]
                ready.set()
                changes = await first
                while True:
                    self._note(changes)
                    changes = await anext(agen)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # e.g. the OS's limit on watches: poll instead
                if polling:
                    self.error = f"cannot watch {', '.join(map(str, paths))}: {e}"
                    log.warning("%s; hot reload is off for these files", self.error)
                    ready.set()
                    return
                log.warning("watching %s failed (%s); polling instead", ", ".join(map(str, paths)), e)
                polling = True
            finally:
                if not first.done():  # cancelled before the generator got going
                    first.cancel()
                    await asyncio.gather(first, return_exceptions=True)
                await agen.aclose()

    def _parts(self, path: str) -> tuple[str, ...] | None:
        try:
            return Path(path).relative_to(self.root).parts
        except ValueError:
            return None

    def _wanted(self, change: Change, path: str) -> bool:
        parts = self._parts(path)
        return parts is not None and definition_path(parts)

    def _note(self, changes: set[tuple[Change, str]]) -> None:
        for _change, path in changes:
            parts = self._parts(path)
            if parts is None or not definition_path(parts):
                continue
            if len(parts) == 1 and parts[0] in ("agents", "lemming"):
                self._tree_restart.set()
            self._pending.add(_normalise(parts))
        if self._pending:
            self._dirty.set()

    async def _process(self) -> None:
        """Coalesce bursts: check once nothing has moved for `debounce_ms`."""
        loop = asyncio.get_running_loop()
        quiet = self.debounce_ms / 1000
        cap = self.max_delay_ms / 1000
        while True:
            await self._dirty.wait()
            first = loop.time()
            while True:
                self._dirty.clear()
                left = first + cap - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(min(quiet, left)):
                        await self._dirty.wait()
                except TimeoutError:
                    break
            touched, self._pending = self._pending, set()
            try:
                await self.rescan(touched)
            except Exception:  # a surprise in one check must not end hot reload
                log.exception("checking the organisation after a change failed")


async def watch_org(
    engine: "Engine",
    *,
    debounce_ms: int = 200,
    stop_event: asyncio.Event | None = None,
    on_change: Callable[[WatchReport], None] | None = None,
    **options,
) -> None:
    """Hot-reload `engine`'s organisation until `stop_event` is set or the task is cancelled.

    The headless CLI runs this as a task; a UI that wants the rejected-file list builds
    a `DefinitionWatcher` itself and awaits its `run`.
    """
    watcher = DefinitionWatcher(engine, debounce_ms=debounce_ms, on_change=on_change, **options)
    await watcher.run(stop_event)

"""The MCP servers (`M`): each server of org.json with its state, process, tools and calls.

Live, the picture is the run's MCP hub's status (engine.mcp.status(), polled once a
second): starting / up / restarting with its backoff / failed with the error and what
to do, pid, uptime, restarts, each tool with its description and the agents granted
it, and the calls, failed calls and last latency so far. In replay (and attached to a
run served elsewhere) no server runs here: the picture is the record's — the servers
of the run's definitions, the tools its turns called, how often and how they went.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from lemming.engine.mcp import mcp_grants, split_tool_name
from lemming.engine.plainjson import printable

if TYPE_CHECKING:
    from lemming.engine.events import TurnRecord
    from lemming.engine.mcp.hub import ServerStatus
    from lemming.engine.org import Org


@dataclass(frozen=True)
class ToolRow:
    name: str
    description: str
    holders: tuple[str, ...]
    calls: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ServerRow:
    """One server as the screen shows it; None for what is not known where it is shown."""

    name: str
    target: str
    phase: str  # starting / up / restarting / failed / not started / stopped / recorded
    error: str | None = None
    advice: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int | None = None
    calls: int = 0
    failed: int = 0
    last_ms: float | None = None
    tools: tuple[ToolRow, ...] = ()
    tools_note: str = ""


@dataclass(frozen=True)
class McpPicture:
    rows: tuple[ServerRow, ...]
    #: Where the picture comes from (the run, the record at a tick, an attached run).
    where: str
    note: str = ""
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)


#: What the screen calls for its picture (sync live, async from a store).
Loader = Callable[[], "McpPicture | Awaitable[McpPicture]"]


def holders(org: Org, server: str, tool: str) -> tuple[str, ...]:
    """The agents whose `permissions.tools` grant `<server>/<tool>` (`tool` "*": any of it)."""
    out = []
    for name in sorted(org.agents):
        for grant in mcp_grants(org.agents[name].resume.permissions.tools):
            s, t = split_tool_name(grant)
            if s == server and (t == "*" or tool in ("*", t)):
                out.append(name)
                break
    return tuple(out)


def _granted_tools(org: Org, server: str) -> list[str]:
    """The tool names the grants spell out for `server` ("*" for a whole-server grant)."""
    names = {split_tool_name(g)[1] for a in org.agents.values() for g in mcp_grants(a.resume.permissions.tools)
             if split_tool_name(g)[0] == server}
    return sorted(names)


def _advice(status: ServerStatus) -> str | None:
    log = f" Its log: {status.log_path}." if status.log_path else ""
    if status.phase == "failed":
        return (f"Check mcp_servers.{status.name} in org.json (command, args, env) and run "
                f"`lemming validate --probe`.{log} The next call tries again after the backoff.")
    if status.phase == "restarting":
        when = f" in {status.retry_in_s:.1f} s" if status.retry_in_s else ""
        return f"It restarts on the next call to it{when} (backoff 0.5, 1, 2, 5, 10, then 30 s).{log}"
    return None


def live_picture(org: Org, statuses: list[ServerStatus] | None, *, running: bool, stopped: bool = False) -> McpPicture:
    """The run's servers from its hub's status (None: the run has no hub now: it has not
    started yet, or it has `stopped`)."""
    specs = org.settings.mcp_servers
    rows = []
    by_name = {s.name: s for s in statuses or []}
    for name in sorted(specs):
        st = by_name.get(name)
        if st is None:
            phase = "stopped" if stopped and not running else "not started"
            note = "the run has stopped, and its servers with it" if phase == "stopped" else "the run has not started it yet"
            rows.append(ServerRow(name, specs[name].describe(), phase, tools=tuple(
                ToolRow(t, "", holders(org, name, t)) for t in _granted_tools(org, name)), tools_note=note))
            continue
        counts = {t: (n, bad) for t, n, bad in st.tool_calls}
        listed = [ToolRow(t.name, t.description, holders(org, name, t.name), *counts.get(t.name, (0, 0))) for t in st.tools]
        extra = [ToolRow(t, "(not a tool of this server)", holders(org, name, t), n, bad)
                 for t, (n, bad) in counts.items() if t not in {x.name for x in st.tools}]
        if not st.tools:
            note = "its tools are listed once it has started; the grants:"
            listed = [ToolRow(t, "", holders(org, name, t)) for t in _granted_tools(org, name)]
        elif st.tools_cached:
            note = "tools as it listed them in the last run (it has not listed them in this one yet)"
        else:
            note = ""
        rows.append(ServerRow(
            name, st.target, st.phase, error=st.error if st.phase in ("failed", "restarting") else None,
            advice=_advice(st), pid=st.pid, uptime_s=st.uptime_s, restarts=st.restarts, calls=sum(c[1] for c in st.tool_calls),
            failed=st.errors, last_ms=None if st.last_latency_s is None else st.last_latency_s * 1000,
            tools=tuple(listed + extra), tools_note=note,
        ))
    return McpPicture(tuple(rows), "this run (stopped)" if stopped and not running else "this run")


def recorded_picture(org: Org, turns: Iterable[TurnRecord], *, where: str, note: str) -> McpPicture:
    """The servers of the run's definitions and the MCP calls its recorded turns made."""
    specs = org.settings.mcp_servers
    per_tool: dict[tuple[str, str], list[float]] = {}  # -> [calls, failed, last ms]
    for rec in turns:
        for call in rec.tool_calls or ():
            full = str(call.get("tool", ""))
            if "/" not in full:
                continue
            server, tool = split_tool_name(full)
            c = per_tool.setdefault((server, tool), [0, 0, 0.0])
            c[0] += 1
            c[1] += not call.get("ok")
            c[2] = float(call.get("duration_ms") or 0.0)
    rows = []
    for name in sorted(set(specs) | {s for s, _ in per_tool}):
        used = {t: c for (s, t), c in per_tool.items() if s == name}
        tools = [ToolRow(t, "", holders(org, name, t), int(c[0]), int(c[1])) for t, c in sorted(used.items())]
        tools += [ToolRow(t, "(granted; not called)", holders(org, name, t)) for t in _granted_tools(org, name) if t not in used]
        last = None
        if used:
            last = next((c[2] for (s, _), c in reversed(per_tool.items()) if s == name), None)
        rows.append(ServerRow(
            name, specs[name].describe() if name in specs else "(not in the run's org.json)", "recorded",
            calls=sum(int(c[0]) for c in used.values()), failed=sum(int(c[1]) for c in used.values()),
            last_ms=last, tools=tuple(tools),
        ))
    return McpPicture(tuple(rows), where, note)


async def recorded_turns_picture(store: Any, source: Any, tick: int) -> McpPicture:
    """The record's picture of a run (`source`, in `store`) up to `tick`."""
    from lemming.engine.events import TurnFinished

    events = await store.events(source.run_id, until_tick=tick, prompts=False)
    turns = [e.record for e in events if type(e) is TurnFinished]
    return recorded_picture(source.org, turns, where=f"run {source.run_id} up to tick {tick}",
                            note="replay never starts a server: the calls recorded")


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


_PHASE_STYLE = {"up": "bold green", "starting": "bold yellow", "restarting": "bold yellow", "failed": "bold red",
                "recorded": "bold", "not started": "dim", "stopped": "dim"}


def render(picture: McpPicture, *, wall_clock: bool = True) -> list[Any]:
    """The picture as Rich renderables, one group per server. Without the wall clock (the
    snapshots) what differs from run to run — pid, uptime, latency — shows as —."""
    if not picture.rows:
        return [Text("This organisation has no MCP servers (org.json mcp_servers; docs/mcp.md).", "italic")]
    out: list[Any] = []
    for row in picture.rows:
        head = Text()
        head.append("● ", _PHASE_STYLE.get(row.phase, ""))
        head.append(printable(row.name), "bold")
        head.append(f"  {row.phase}", _PHASE_STYLE.get(row.phase, ""))
        facts = []
        if row.phase != "recorded":
            facts.append(f"pid {row.pid if row.pid is not None and wall_clock else '—'}")
            facts.append(f"up {_duration(row.uptime_s) if row.uptime_s is not None and wall_clock else '—'}")
            facts.append(f"restarts {row.restarts or 0}")
        facts.append(f"calls {row.calls}")
        facts.append(f"failed {row.failed}")
        last = "—" if row.last_ms is None or not wall_clock else f"{row.last_ms:.0f} ms"
        facts.append(f"last {last}")
        head.append("  ·  " + " · ".join(facts))
        out.append(head)
        more = Text()
        more.append(printable(row.target), "dim")
        if row.error:
            more.append("\n" + printable(row.error), "red")
        if row.advice:
            more.append("\n" + printable(row.advice), "yellow")
        if row.tools_note:
            more.append("\n" + printable(row.tools_note), "italic")
        out.append(Padding(more, (0, 0, 0, 2)))
        if row.tools:
            table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, pad_edge=False)
            table.add_column("  tool", no_wrap=True, style="bold", overflow="ellipsis", max_width=28)
            table.add_column("held by", overflow="fold", ratio=1, min_width=10)
            table.add_column("calls", justify="right", no_wrap=True)
            table.add_column("description", ratio=2, overflow="fold")
            for t in row.tools:
                if t.name == "*":
                    t = ToolRow("* (every tool)", t.description, t.holders, t.calls, t.failed)
                calls = f"{t.calls}" + (f" ({t.failed} failed)" if t.failed else "")
                desc = t.description.splitlines()[0] if t.description else ""
                table.add_row("  " + printable(t.name), printable(", ".join(t.holders) or "no agent"),
                              calls, Text(printable(desc), "dim"))
            out.append(table)
        out.append(Text(""))
    return out


class McpScreen(ModalScreen[None]):
    """The MCP servers and their tools; `r` reads them again, escape closes. Live, it
    reads them again by itself once a second."""

    DEFAULT_CSS = """
    McpScreen { align: center middle; }
    McpScreen > #mcp-box {
        width: 140; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    McpScreen .dialog-title { text-style: bold; color: $primary; }
    McpScreen #mcp-where { color: $text-muted; }
    McpScreen #mcp-scroll { height: auto; max-height: 100%; }
    """

    BINDINGS = [
        Binding("escape,M", "close", "Close", id="mcp.close"),
        Binding("r", "reload", "Reload", id="mcp.reload"),
    ]

    def __init__(self, loader: Loader, *, live: bool = False, wall_clock: bool = True) -> None:
        super().__init__()
        self.loader = loader
        self.live = live
        self.wall_clock = wall_clock
        self.picture: McpPicture | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="mcp-box"):
            yield Static("MCP servers", classes="dialog-title")
            yield Static("reading…", id="mcp-where")
            with VerticalScroll(id="mcp-scroll"):
                yield Static(id="mcp-body")
            yield Static(Text("r reload · esc close", "dim"))

    def on_mount(self) -> None:
        self.query_one("#mcp-scroll").focus()
        self.action_reload()
        if self.live:
            self.set_interval(1.0, self.action_reload)

    @work(exclusive=True, group="mcp")
    async def action_reload(self) -> None:
        got = self.loader()
        picture = await got if hasattr(got, "__await__") else got
        self.show(picture)  # type: ignore[arg-type]

    def show(self, picture: McpPicture) -> None:
        self.picture = picture
        n = len(picture.rows)
        up = sum(r.phase == "up" for r in picture.rows)
        where = f"{n} server{'s' if n != 1 else ''}"
        if any(r.phase != "recorded" for r in picture.rows):
            where += f", {up} up"
        where += f" · {picture.where}"
        if picture.note:
            where += f" · {picture.note}"
        self.query_one("#mcp-where", Static).update(Text(printable(where)))
        from rich.console import Group

        self.query_one("#mcp-body", Static).update(Group(*render(picture, wall_clock=self.wall_clock)))

    def action_close(self) -> None:
        self.dismiss(None)


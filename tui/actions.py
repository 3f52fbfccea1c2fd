"""The one table of the control room's keys and actions, live and replay.

Each :class:`KeyLine` is one line of the help screen: the keys as the help shows
them, what they do, and the :class:`Act` s behind them. An act with a key is a
binding (its id is the name `tui.json`'s keymap remaps it by; its label, if any,
shows in the footer); an act with a title is a command palette entry. From this
table come the screens' BINDINGS (:func:`bindings`), the footer (the bindings
shown), the help screen (:func:`help_lines`) and the palette (:func:`palette`), for
each mode: "live" (an engine runs), "replay" (a recorded run at the cursor) and
"picker" (no run open yet: the run picker).

Bindings and palette entries come in table order (the footer's order); the help
groups the lines by SECTIONS. Keys that belong to one pane (a, m, ↑ ↓) are that
pane's own bindings; their lines here only document them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from textual.binding import Binding

LIVE = "live"
REPLAY = "replay"
PICKER = "picker"
#: A control room attached to a served run: the live lines, with its own in place of
#: the live ones of the same keys (q detaches instead of stopping the run).
ATTACH = "attach"
#: Attached over a read-only connection (`lemming attach --read-only`): the attached
#: lines without the ones that steer; their keys stay bound, unlabelled, to say so.
ATTACH_READ_ONLY = "attach-read-only"
BOTH = frozenset({LIVE, REPLAY})

#: The help screen's sections, in order.
SECTIONS = ("Cursor", "Run", "Agent", "Turns", "Panes", "App")


@dataclass(frozen=True, slots=True)
class Act:
    """One action: its binding (when it has a key) and its palette entry (when it has a title)."""

    action: str
    key: str = ""
    id: str = ""
    #: The footer's label; "" keeps the binding out of the footer.
    label: str = ""
    key_display: str | None = None
    priority: bool = False
    title: str = ""
    #: Palette help; default: the help line's keys and text.
    hint: str = ""

    def binding(self, description: str, *, shown: bool = True) -> Binding:
        return Binding(
            self.key,
            self.action,
            self.label or description,
            show=shown and bool(self.label),
            key_display=self.key_display,
            priority=self.priority,
            id=self.id,
        )


@dataclass(frozen=True, slots=True)
class KeyLine:
    """One line of the help: keys, what they do, the acts behind them, in which modes.
    A line without keys is a palette entry only (not in the help)."""

    section: str
    keys: str
    what: str
    acts: tuple[Act, ...] = ()
    modes: frozenset[str] = BOTH
    #: The line's acts change the run (or its files): none on a read-only connection.
    steers: bool = False


def _pane(n: int, pane: str, label: str) -> Act:
    return Act(f"screen.show_pane('{pane}')", str(n), f"pane.{pane}", title=f"Show the {label} pane", hint=str(n))


_PANES = (
    KeyLine("Panes", "tab / shift+tab", "next / previous pane", (
        Act("screen.next_pane(1)", "tab", "pane.next"),
        Act("screen.next_pane(-1)", "shift+tab", "pane.previous"),
    )),
    KeyLine("Panes", "1-5", "show a pane: agents, stream, credits, timeline, messages", (
        _pane(1, "roster", "agents"),
        _pane(2, "stream", "stream"),
        _pane(3, "credits", "credits"),
        _pane(4, "timeline", "timeline"),
        _pane(5, "graph", "messages"),
    )),
    KeyLine("Panes", "a", "stream: the selected agent, or all agents interleaved", (
        Act("app.toggle_stream_mode", title="Stream: selected agent / all agents", hint="a in the stream pane"),
    )),
    KeyLine("Panes", "v", "stream: each turn as a conversation, or the raw reply text", (
        Act("app.toggle_stream_raw", title="Stream: conversation / raw reply text", hint="v in the stream pane"),
    )),
    KeyLine("Panes", "m", "messages: graph, matrix or list view", (
        Act("app.toggle_graph_mode", title="Messages: graph / matrix / list", hint="m in the messages pane"),
    )),
)

#: Every key and action (see the module docstring).
TABLE: tuple[KeyLine, ...] = (
    # --- replay: the cursor ---------------------------------------------------------------
    KeyLine("Cursor", "← / →", "one tick back / forward (every pane shows the run at that tick)", (
        Act("screen.tick(-1)", "left", "replay.back", "Tick", key_display="←/→", priority=True, title="Previous tick"),
        Act("screen.tick(1)", "right", "replay.forward", priority=True, title="Next tick"),
    ), frozenset({REPLAY})),
    KeyLine("Cursor", "PgUp / PgDn", "ten ticks back / forward", (
        Act("screen.tick(-10)", "pageup", "replay.page_back", priority=True, title="Ten ticks back"),
        Act("screen.tick(10)", "pagedown", "replay.page_forward", priority=True, title="Ten ticks forward"),
    ), frozenset({REPLAY})),
    KeyLine("Cursor", "home / end", "the first / the last recorded tick (end follows a run being written)", (
        Act("screen.tick_to('first')", "home", "replay.first", priority=True, title="First tick"),
        Act("screen.tick_to('last')", "end", "replay.last", priority=True, title="Last tick"),
    ), frozenset({REPLAY})),
    KeyLine("Cursor", "g", "go to a tick by number", (
        Act("screen.goto", "g", "replay.goto", "Go to", title="Go to tick…"),
    ), frozenset({REPLAY})),
    KeyLine("Cursor", "↑ ↓ in the timeline", "move the cursor row by row", modes=frozenset({REPLAY})),
    KeyLine("Cursor", "p / space", "play forward / stop", (
        Act("screen.play", "p", "replay.play", "Play", title="Play / stop"),
        Act("screen.play", "space", "replay.play_space"),
    ), frozenset({REPLAY})),
    KeyLine("Cursor", "+ / -", "play faster / slower", (
        Act("screen.speed(1)", "plus", "replay.faster", "Speed", key_display="+/-", title="Play faster"),
        Act("screen.speed(-1)", "minus", "replay.slower", title="Play slower"),
    ), frozenset({REPLAY})),
    KeyLine("Turns", "enter", "inspect the selected agent's turn at the cursor (or its last before it)", (
        Act("screen.inspect_turn", "enter", "replay.inspect", "Inspect", title="Inspect the selected turn"),
    ), frozenset({REPLAY})),
    KeyLine("Run", "f", "fork: a new live run from the cursor's tick, recorded as its child (starts paused)", (
        Act("screen.fork", "f", "replay.fork", "Fork", title="Fork a live run from this tick"),
    ), frozenset({REPLAY})),
    KeyLine("Run", "r", "recorded runs: open another", (
        Act("app.runs", "r", "replay.runs", "Runs", title="Recorded runs"),
    ), frozenset({REPLAY, PICKER})),
    # --- live: steering the run -----------------------------------------------------------
    KeyLine("Run", "space", "pause / resume (applied at the next tick boundary)", (
        Act("app.toggle_pause", "space", "run.pause", "Pause", title="Pause / resume the run"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Run", "n", "step exactly one tick while paused", (
        Act("app.step", "n", "run.step", "Step", title="Step one tick"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Run", "i", "inject a message from the operator (recipients, kind, text)", (
        Act("app.inject", "i", "run.inject", "Inject", title="Inject a message"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Agent", "↑ ↓ / j k", "select an agent (roster, credits, messages)", modes=frozenset({LIVE})),
    KeyLine("Agent", "t", "top up the selected agent's credits", (
        Act("app.top_up", "t", "agent.top_up", "Top-up", title="Top up the selected agent"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Agent", "e", "enable / disable the selected agent", (
        Act("app.toggle_enabled", "e", "agent.enable", "On/off", title="Enable / disable the selected agent"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Run", "+ / -", "longer / shorter wait between ticks", (
        Act("app.slower", "plus", "run.slower", "Speed", key_display="+/-", title="Longer tick interval"),
        Act("app.faster", "minus", "run.faster", title="Shorter tick interval"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("Agent", "enter", "inspect the selected agent's last turn, or the timeline row's turn", (
        Act("app.inspect", "enter", "agent.inspect", "Inspect", title="Inspect the selected turn"),
    ), frozenset({LIVE})),
    KeyLine("Run", "ctrl+p → Abort", "abort the tick in flight (nothing of it is committed)", (
        Act("app.abort_tick", title="Abort the tick in flight", hint="cancel its calls; nothing of it is committed; the run pauses"),
    ), frozenset({LIVE}), steers=True),
    # --- both -----------------------------------------------------------------------------
    *_PANES,
    KeyLine("Agent", "E", "edit the selected agent's resume.json in $EDITOR (hot-reloads at the next tick)", (
        Act("app.edit_agent", "E", "agent.edit", title="Edit the selected agent's resume.json"),
    ), frozenset({LIVE}), steers=True),
    KeyLine("App", "D", "rejected agent files and why (listed until fixed)", (
        Act("app.show_rejected", "D", "app.rejected", title="Rejected agent files"),
    ), frozenset({LIVE})),
    KeyLine("App", "", "ticks, spend, status, parent of each run in the database (lemming replay opens one)", (
        Act("app.runs", title="Recorded runs"),
    ), frozenset({LIVE})),
    KeyLine("App", "ctrl+p", "command palette: every action, themes"),
    KeyLine("App", "?", "this help", (Act("app.help", "question_mark", "app.help", "Help", key_display="?", title="Help"),)),
    KeyLine("App", "q", "quit: the tick in flight ends (or is aborted after a few seconds); q again aborts now", (
        Act("app.quit", "q", "app.quit", "Quit", title="Quit"),
    ), frozenset({LIVE})),
    KeyLine("App", "q / ctrl+d", "detach: this window closes, the run goes on (lemming attach comes back)", (
        Act("app.quit", "q", "app.quit", "Leave", title="Detach: leave the run going"),
    ), frozenset({ATTACH})),
    KeyLine("Run", "X", "stop the served run at the end of the tick in flight", (
        Act("app.stop_run", "X", "attach.stop", "Stop run", title="Stop the served run"),
    ), frozenset({ATTACH}), steers=True),
    KeyLine("App", "q", "quit (replay never writes to the database)", (
        Act("app.quit", "q", "app.quit", "Quit", title="Quit"),
    ), frozenset({REPLAY, PICKER})),
    # After quit: at 80 columns the footer ends before these (help and the palette have them).
    KeyLine("Panes", "/", "find in the run: every message, note and error; enter goes there", (
        Act("app.search", "slash", "run.search", "Find", key_display="/", title="Find in the run"),
    )),
    KeyLine("Panes", "s", "plots: spend, tokens/s, latency p50/p95, failures per tick", (
        Act("app.plots", "s", "run.plots", "Plots", title="Plots: spend, tokens/s, latency, failures per tick"),
    )),
    KeyLine("Panes", "M", "MCP servers: state, process, tools and who holds them, calls", (
        Act("app.mcp", "M", "run.mcp", title="MCP servers and their tools"),
    )),
)


def lines(mode: str) -> Iterator[KeyLine]:
    """The table's lines of `mode`, in table order (ATTACH: the live lines, its own
    lines in place of the live ones bound to the same keys)."""
    if mode == ATTACH_READ_ONLY:
        return (line for line in lines(ATTACH) if not line.steers)
    if mode != ATTACH:
        return (line for line in TABLE if mode in line.modes)
    own = {act.key for line in TABLE if ATTACH in line.modes for act in line.acts if act.key}
    return (line for line in TABLE
            if ATTACH in line.modes or (LIVE in line.modes and not any(act.key in own for act in line.acts)))


def bindings(mode: str) -> list[Binding]:
    """The bindings of a screen in `mode` (the footer shows those with a label); on a
    read-only connection the steering keys are bound out of the footer, to say so."""
    if mode == ATTACH_READ_ONLY:
        return [act.binding(line.what, shown=not line.steers) for line in lines(ATTACH) for act in line.acts if act.key]
    return [act.binding(line.what) for line in lines(mode) for act in line.acts if act.key]


def help_lines(mode: str) -> list[KeyLine]:
    """The help screen's lines of `mode`, by section."""
    return sorted((line for line in lines(mode) if line.keys), key=lambda line: SECTIONS.index(line.section))


def palette(mode: str) -> list[tuple[str, str, str]]:
    """(title, help, action) of each palette entry of `mode`, in table order."""
    out = []
    for line in lines(mode):
        for act in line.acts:
            if act.title:
                hint = act.hint or (f"{line.keys} — {line.what}" if line.keys else line.what)
                out.append((act.title, hint, act.action))
    return out

"""The inspector: one turn in full — prompt, raw reply, parsed result, usage, cost, latency, error.

Opened with enter on an agent (its last turn) or on a timeline row (that tick's
turn). `[` and `]` step to the agent's previous / next kept turn, 1-4 switch
sections, `w` browses the agent's workspace and shared/ (read-only), escape or q closes. Model output is shown as plain text, never as
markup.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from lemming.engine.events import TurnRecord
from lemming.engine.plainjson import printable

SECTIONS = ("summary", "prompt", "reply", "parsed")


def summary_text(rec: TurnRecord, *, wall_clock: bool = True) -> Text:
    t = Text()

    def row(label: str, value: str, style: str = "") -> None:
        t.append(f"{label:<12}", "bold")
        t.append(printable(value) + "\n", style)

    row("agent", rec.agent)
    row("tick", str(rec.tick))
    row("model", f"{rec.model_key} → {rec.provider}/{rec.model_name}")
    row("status", rec.status, "bold green" if rec.status == "ok" else "bold red")
    if rec.error:
        row("error", rec.error, "red")
    estimated = " (estimated)" if rec.usage.estimated else ""
    row("usage", f"{rec.usage.input_tokens} tokens in · {rec.usage.output_tokens} tokens out{estimated}")
    row("max tokens", "—" if rec.max_tokens is None else str(rec.max_tokens))
    row("cost", f"{rec.cost:.6g} credits")
    row("latency", f"{rec.latency_ms / 1000:.2f} s" if wall_clock else "—")
    row("attempts", str(rec.attempts))
    if rec.attempts:
        row(*_schema_row(rec))
    for line in rec.retries:  # a turn that succeeded after retries: why the others failed
        row("retried", line, "yellow")
    row("prompt", f"{len(rec.prompt)} messages · hash {rec.prompt_hash}")
    if rec.process:
        process_rows(t, rec.process, wall_clock=wall_clock)
    if rec.violations:
        t.append("violations\n", "bold")
        for v in rec.violations:
            t.append(f"  • {printable(v)}\n", "yellow")
    tools_text(rec, t)
    return t


def tools_text(rec: TurnRecord, t: Text) -> None:
    """The Tools part of the summary: each call with its result, then the files changed."""
    if rec.tool_calls:
        t.append(f"tools       {len(rec.tool_calls)} calls in {max(len(rec.rounds) - 1, 1)} round(s)\n", "bold")
        for c in rec.tool_calls:
            ok = bool(c.get("ok"))
            args = json.dumps(c.get("args"), ensure_ascii=False, sort_keys=True)
            t.append(f"  {'✓' if ok else '✗'} r{c.get('round', 1)} {printable(str(c.get('tool')))} ", "green" if ok else "red")
            t.append(printable(args[:200]) + "\n")
            out = c.get("result") if ok else c.get("error")
            shown = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, sort_keys=True)
            t.append(f"      → {printable(shown[:400])}\n", "" if ok else "red")
    elif rec.tool_results:  # a record of an engine that ran tools on the next turn
        t.append("tool results\n", "bold")
        for r in rec.tool_results:
            t.append(f"  • {printable(json.dumps(r, ensure_ascii=False))}\n")
    if rec.files_changed:
        t.append("files       (written when the tick committed)\n", "bold")
        for f in rec.files_changed:
            size = f" · {f['size']} bytes" if "size" in f else ""
            t.append(f"  {printable(str(f.get('op')))} {printable(str(f.get('path')))}{size}\n")


def _schema_row(rec: TurnRecord) -> tuple[str, str, str]:
    """Whether the reply schema went as structured output (models.json structured_output)."""
    if rec.reply_schema == "sent":
        return "schema", "sent as structured output", ""
    if rec.reply_schema == "refused":
        return "schema", "refused by the server: sent without it for the rest of the run", "yellow"
    if rec.reply_schema == "dropped":
        return "schema", "not sent: the server refused it earlier in this run", "yellow"
    return "schema", "not sent (structured_output is off for this model)", "dim"


def process_rows(t: Text, proc: dict, *, wall_clock: bool = True) -> None:
    """A command-line agent's process: exit, duration, output sizes, stderr (its tail)."""
    code = proc.get("exit_code")
    if proc.get("timed_out"):
        exit_text, style = "timed out; its process group was ended", "bold red"
    elif code is None:
        exit_text, style = "still running (stateful)", ""
    elif code < 0:
        exit_text, style = f"killed by signal {-code}", "bold red"
    else:
        exit_text, style = f"exit code {code}", "bold green" if code == 0 else "bold red"
    mode = str(proc.get("mode", "")).replace("_", " ")
    if proc.get("restarted"):
        mode += ", restarted"
    t.append(f"{'process':<12}", "bold")
    t.append(printable(f"{proc.get('command', '?')} ({mode}) · "))
    t.append(printable(exit_text) + "\n", style)
    if wall_clock and isinstance(proc.get("duration_ms"), (int, float)):
        t.append(f"{'duration':<12}", "bold")
        t.append(f"{proc['duration_ms'] / 1000:.2f} s\n")
    out = f"{proc.get('stdout_bytes', 0):,} bytes" + (" (cut off at the cap)" if proc.get("stdout_truncated") else "")
    t.append(f"{'stdout':<12}", "bold")
    t.append(out + "\n", "yellow" if proc.get("stdout_truncated") else "")
    err = str(proc.get("stderr") or "")
    t.append(f"{'stderr':<12}", "bold")
    if not err.strip():
        t.append("(empty)\n", "italic")
    else:
        t.append("(last part only)\n" if proc.get("stderr_truncated") else "\n", "italic")
        for line in err.rstrip("\n").splitlines()[-40:]:
            t.append(f"  {printable(line)}\n", "red")


def prompt_text(rec: TurnRecord) -> Text:
    t = Text()
    for m in rec.prompt:
        t.append(f"── {printable(str(m.get('role', '?')))} ──\n", "bold")
        t.append(printable(str(m.get("content", ""))) + "\n\n")
    return t


def reply_text(rec: TurnRecord) -> Text:
    if not rec.raw_output:
        return Text("(no reply text)" + (f": {printable(rec.error)}" if rec.error else ""), "italic")
    # A model's reply is untrusted: shown as text, never as markup or terminal control codes.
    return Text(printable(rec.raw_output))


def parsed_text(rec: TurnRecord) -> Text:
    if rec.parsed is None:
        why = rec.error or "the reply could not be parsed"
        return Text(f"(no parsed result: {printable(why)})", "italic")
    return Text(printable(json.dumps(rec.parsed, indent=2, ensure_ascii=False)))


class InspectorScreen(Screen[None]):
    """One turn of one agent, in four sections."""

    DEFAULT_CSS = """
    InspectorScreen { background: $background; }
    InspectorScreen #inspector-title {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
        text-style: bold;
        padding: 0 1;
    }
    InspectorScreen TabbedContent { height: 1fr; }
    InspectorScreen TabPane { padding: 0; }
    InspectorScreen VerticalScroll { height: 1fr; padding: 0 1; }
    InspectorScreen .section { width: 1fr; }
    """

    BINDINGS = [
        Binding("escape,q", "close", "Close", id="inspector.close"),
        Binding("left_square_bracket", "turn(-1)", "Older turn", key_display="[", id="inspector.older"),
        Binding("right_square_bracket", "turn(1)", "Newer turn", key_display="]", id="inspector.newer"),
        Binding("w", "workspace", "Files", id="inspector.workspace"),
        Binding("1", "section('summary')", "Summary", show=False, id="inspector.summary"),
        Binding("2", "section('prompt')", "Prompt", show=False, id="inspector.prompt"),
        Binding("3", "section('reply')", "Reply", show=False, id="inspector.reply"),
        Binding("4", "section('parsed')", "Parsed", show=False, id="inspector.parsed"),
    ]

    def __init__(
        self,
        turns: list[TurnRecord],
        index: int,
        *,
        wall_clock: bool = True,
        section: str = "summary",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.turns = turns
        self.index = max(0, min(index, len(turns) - 1))
        self.wall_clock = wall_clock
        self.first_section = section
        self.on_close = on_close

    @property
    def record(self) -> TurnRecord:
        return self.turns[self.index]

    def compose(self) -> ComposeResult:
        yield Static(id="inspector-title")
        with TabbedContent(initial=self.first_section):
            for section, label in zip(SECTIONS, ("1 Summary", "2 Prompt", "3 Reply", "4 Parsed")):
                with TabPane(label, id=section):
                    with VerticalScroll():
                        yield Static(id=f"{section}-body", classes="section")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show()
        self._focus_section(self.first_section)

    def _focus_section(self, section: str) -> None:
        # The section's text takes the keys, so arrows, page keys and home/end scroll it.
        self.query_one(f"#{section} VerticalScroll", VerticalScroll).focus()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id:
            self._focus_section(event.pane.id)

    def show(self) -> None:
        rec = self.record
        title = Text()
        title.append(f"Turn of {rec.agent} at tick {rec.tick}")
        title.append(f"  ·  {rec.status}", "green" if rec.status == "ok" else "red")
        title.append(f"  ·  {self.index + 1}/{len(self.turns)} kept turns  ·  [ ] older/newer  ·  esc closes")
        self.query_one("#inspector-title", Static).update(title)
        self.query_one("#summary-body", Static).update(summary_text(rec, wall_clock=self.wall_clock))
        self.query_one("#prompt-body", Static).update(prompt_text(rec))
        self.query_one("#reply-body", Static).update(reply_text(rec))
        self.query_one("#parsed-body", Static).update(parsed_text(rec))

    def action_turn(self, delta: int) -> None:
        i = self.index + delta
        if 0 <= i < len(self.turns):
            self.index = i
            self.show()
        else:
            self.app.bell()

    def action_section(self, section: str) -> None:
        self.query_one(TabbedContent).active = section
        self._focus_section(section)

    def action_workspace(self) -> None:
        """The turn's agent's workspace and shared/, read-only (tui/screens/workspace.py)."""
        from lemming.tui.screens.workspace import WorkspaceScreen, files_changed_key

        app: Any = self.app
        source = getattr(app, "source", None)
        if source is None:
            self.notify("No run is open: its organisation's folder is not known.", severity="warning")
            return
        rec = self.record
        live = getattr(app, "mode", "live") == "live"
        self.app.push_screen(WorkspaceScreen(
            source.org.root, rec.agent,
            replay_tick=None if live else source.tick,
            turn_files=None if live else list(rec.files_changed or []),
            changes=(lambda: files_changed_key(source.state)) if live else None,
            wall_clock=self.wall_clock,
        ))

    def action_close(self) -> None:
        self.dismiss(None)

"""The roster: one row per agent with its state, model, schedule, last turn and messages sent.

The row under the cursor is the selected agent: it drives the token stream and
the inspector. A failed last turn shows as `error` in the error colour; `enter`
opens that turn in the inspector.
"""

from __future__ import annotations

from rich.text import Text

from lemming.tui.run_source import RunSource

from lemming.tui.model import RunView
from lemming.tui.widgets.line_table import AgentTable

#: state -> (glyph, style name)
STATE_LOOK = {
    "idle": ("·", "muted"),
    "thinking": ("◆", "accent"),
    "tool": ("⚙", "accent"),  # running a tool call
    "broke": ("$", "warn"),
    "error": ("✗", "error"),
    "disabled": ("–", "muted"),
    "retired": ("×", "muted"),
}


def agent_state(source: RunSource, view: RunView, name: str) -> str:
    """idle / thinking / tool / broke / error / disabled / retired, as the operator sees it now."""
    a = view.agents.get(name)
    if a is not None and a.thinking_tick is not None:
        return "tool" if name in source.state.running_tool else "thinking"
    status = source.state.agent_status(name)
    return status


def schedule_text(source: RunSource, name: str) -> str:
    a = source.org.agents.get(name)
    if a is None or not a.resume.calls_model:
        return "—"
    s = a.resume.schedule
    n = s.run_every_n_ticks
    if n >= 100_000:
        return "rarely"
    off = s.phase_offset % n if n else 0
    return f"{n}" if not off else f"{n}+{off}"


class Roster(AgentTable):
    """Every agent of the organisation, one line each."""

    DEFAULT_CSS = """
    Roster { height: 1fr; }
    """

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(source, view, id=id, classes=classes)
        self.border_title = "Agents"

    def _columns(self, width: int) -> tuple[int, bool, bool, bool]:
        name_w = max([5] + [len(n) for n in self.view.order])
        name_w = min(name_w, 18)
        show_model = width >= name_w + 49
        show_every = width >= name_w + 37
        show_last = width >= name_w + 24
        return name_w, show_model, show_every, show_last

    def render_header(self, width: int) -> list[Text]:
        name_w, show_model, show_every, show_last = self._columns(width)
        t = Text("  ")
        t.append(f"{'agent':<{name_w}} ")
        t.append(f"{'state':<9}")
        if show_model:
            t.append(f"{'model':<12}")
        if show_every:
            t.append(f"{'every':<7}")
        if show_last:
            t.append(f"{'last turn':<14}")
        t.append(f"{'sent':>5}")
        t.stylize(self.style("header"))
        return [t]

    def render_row(self, index: int, width: int) -> Text:
        name = self.view.order[index]
        source = self.source
        state = agent_state(source, self.view, name)
        glyph, look = STATE_LOOK.get(state, ("?", "muted"))
        name_w, show_model, show_every, show_last = self._columns(width)
        t = Text()
        t.append(f"{glyph} ", self.style(look))
        shown = name if len(name) <= name_w else name[: name_w - 1] + "…"
        t.append(f"{shown:<{name_w}} ", self.style("muted") if state in ("disabled", "retired") else None)
        t.append(f"{state:<9}", self.style(look) if state != "idle" else None)
        agent = source.org.agents.get(name)
        if show_model:
            key = agent.resume.model.key if agent is not None else "—"
            t.append(f"{key[:11]:<12}", self.style("muted"))
        if show_every:
            t.append(f"{schedule_text(source, name)[:6]:<7}", self.style("muted"))
        if show_last:
            av = self.view.agents.get(name)
            rec = source.state.last_turn.get(name)
            if rec is not None:
                status = rec.status
                last = f"t{rec.tick} {status}"
                t.append(f"{last[:13]:<14}", self.style("ok") if status == "ok" else self.style("error"))
            elif av is not None and av.last_tick is not None:
                t.append(f"{'t' + str(av.last_tick):<14}")
            else:
                t.append(f"{'—':<14}", self.style("muted"))
        t.append(f"{source.state.sent.get(name, 0):>5}")
        return t

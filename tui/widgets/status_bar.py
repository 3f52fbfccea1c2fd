"""The header line: organisation, run id, mode word, `tick N`, tick rate, total spend.

The mode word is LIVE, PAUSED, REPLAY or WATCH (STOPPING / STOPPED when the run
ends), READ-ONLY beside it for a window that cannot steer. The tick rate (live, and
while watching a run being written) comes from an injectable clock; without one
(snapshot tests) it shows "—", as it does while paused, so the screen holds no
wall-clock text. Hints come last: the first of them that fits beside the run id.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from rich.text import Text
from textual.widget import Widget

from lemming.tui.widgets.credits import money

MODE_CLASS = {
    "LIVE": "status-bar--live",
    "PAUSED": "status-bar--paused",
    "REPLAY": "status-bar--replay",
    "STOPPING": "status-bar--stopped",
    "STOPPED": "status-bar--stopped",
}


class StatusBar(Widget):
    """One line across the top of the control room."""

    DEFAULT_CSS = """
    StatusBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
    }
    StatusBar > .status-bar--live { background: $success; color: $background; text-style: bold; }
    StatusBar > .status-bar--paused { background: $warning; color: $background; text-style: bold; }
    StatusBar > .status-bar--replay { background: $accent; color: $background; text-style: bold; }
    StatusBar > .status-bar--stopped { background: $error; color: $background; text-style: bold; }
    StatusBar > .status-bar--label { color: $text-muted; }
    StatusBar > .status-bar--value { color: $foreground; text-style: bold; }
    StatusBar > .status-bar--error { color: $error; text-style: bold; }
    """

    COMPONENT_CLASSES = {
        "status-bar--live",
        "status-bar--paused",
        "status-bar--replay",
        "status-bar--stopped",
        "status-bar--label",
        "status-bar--value",
        "status-bar--error",
    }

    def __init__(self, clock: Callable[[], float] | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.org_name = ""
        self.run_id = ""
        self.mode = "LIVE"
        self.tick = 0
        self.total_spend = 0.0
        self.interval = 0.0
        self.thinking = 0
        self.failed = 0
        self.note = ""  # e.g. "pane crashed" — shown in the error colour
        self.recording = False
        self.sim = False  # `--sim`: the sim serves the API models
        self.rejected = 0  # agent files whose current content was rejected (hot reload)
        self.unsandboxed = False  # org.json "sandbox": "none": shell commands run on the host
        self.read_only = False  # a window that shows the run and cannot steer it
        #: Hints, longest first: the first that fits beside the run id is shown (the run id
        #: comes before them), else none.
        self.hints: tuple[str, ...] = ()
        self._ticks: deque[float] = deque(maxlen=12)

    def tick_committed(self, at: float | None = None) -> None:
        """Note that a tick was committed now, or at `at` on the clock (for the tick rate)."""
        if self.clock is not None:
            self._ticks.append(self.clock() if at is None else at)

    def tick_rate(self) -> str:
        if self.clock is None or self.mode not in ("LIVE", "WATCH") or len(self._ticks) < 2:
            return "—"
        now = self.clock()
        span = now - self._ticks[0]
        if now - self._ticks[-1] > 30 or span <= 0:
            return "—"
        rate = (len(self._ticks) - 1) / span
        return f"{rate:.2f}" if rate < 10 else f"{rate:.0f}"

    def set(self, **values: object) -> None:
        changed = False
        for k, v in values.items():
            if getattr(self, k) != v:
                setattr(self, k, v)
                changed = True
        if changed:
            self.refresh()

    def render(self) -> Text:
        width = self.size.width
        label = lambda s: self.get_component_rich_style("status-bar--label")  # noqa: E731
        value = self.get_component_rich_style("status-bar--value")
        lab = label(None)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f" {self.org_name} ", value)
        mode_style = self.get_component_rich_style(MODE_CLASS.get(self.mode, "status-bar--live"))
        t.append(f" {self.mode} ", mode_style)
        if self.sim:
            t.append(" SIM ", self.get_component_rich_style("status-bar--replay"))
        if self.read_only:
            t.append(" READ-ONLY ", self.get_component_rich_style("status-bar--paused"))
        t.append(" tick ", lab)
        t.append(str(self.tick), value)
        t.append("  ", lab)
        t.append(self.tick_rate(), value)
        t.append(" t/s", lab)
        t.append("  spend ", lab)
        t.append(money(self.total_spend), value)
        if width >= 96:
            t.append("  every ", lab)
            t.append(f"{self.interval:g}s", value)
            t.append("  thinking ", lab)
            t.append(str(self.thinking), value)
            if self.recording:
                t.append("  ● rec", self.get_component_rich_style("status-bar--error"))
        if self.rejected:
            t.append(f"  ✗ {self.rejected} bad file{'s' if self.rejected > 1 else ''} (D)", self.get_component_rich_style("status-bar--error"))
        if self.unsandboxed:
            t.append("  ⚠ shell unsandboxed", self.get_component_rich_style("status-bar--error"))
        if self.note:
            t.append(f"  {self.note}", self.get_component_rich_style("status-bar--error"))
        run = self.run_id
        beside_run = len(run) + 7 if run else 0  # two spaces, "run ", the id, a space
        hint = next((h for h in self.hints if t.cell_len + 2 + len(h) + beside_run <= width), "")
        if hint:
            t.append(f"  {hint}", lab)
        room = width - t.cell_len - 6
        if room >= 8 and run:
            shown = run if len(run) <= room else "…" + run[-(room - 1):]
            pad = max(2, width - t.cell_len - len(shown) - 5)
            t.append(" " * pad)
            t.append("run ", lab)
            t.append(shown + " ", value)
        return t

"""Credits: each agent's budget left as a bar, its spend rate, its spend over the last
ticks as a sparkline (one scale for every agent: the tallest block is the largest
spend of any agent in a tick), soft-cap and broke warnings, and the organisation's
total spend and spend rate in the header."""

from __future__ import annotations

from rich.text import Text

from lemming.tui.run_source import RunSource

from lemming.tui.model import RECENT_TICKS, RunView
from lemming.tui.widgets.line_table import AgentTable
from lemming.tui.widgets.sparkline import per_tick, spark

EIGHTHS = " ▏▎▍▌▋▊▉█"
#: Ticks the spend sparkline covers (at most; fewer when the pane is narrow).
SPARK_TICKS = 16


def bar(fraction: float, width: int) -> tuple[str, str]:
    """(filled, track) strings for a bar `width` cells wide, in eighths of a cell."""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (EIGHTHS[part] if part else "")
    return filled, "░" * (width - len(filled))


def money(v: float) -> str:
    """Credits, short: 4 significant digits, never scientific for normal budgets."""
    if v == 0:
        return "0"
    if abs(v) >= 9999.5:
        for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= div * 0.9995:
                return f"{v / div:.3g}{unit}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    if abs(v) >= 0.01:
        return f"{v:.3f}"
    return f"{v:.4f}"


class CreditsPane(AgentTable):
    """Budget bars, spend rates and warnings, one row per agent."""

    DEFAULT_CSS = """
    CreditsPane { height: 1fr; }
    """

    header_height = 2

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(source, view, id=id, classes=classes)
        self.border_title = "Credits"

    def _name_w(self) -> int:
        return min(14, max([5] + [len(n) for n in self.view.order]))

    def render_header(self, width: int) -> list[Text]:
        s = self.source.state
        broke = sum(1 for n in self.view.order if self.source.state.agent_status(n) == "broke")
        capped = len(s.soft_warned)
        top = Text()
        top.append("total ", self.style("muted"))
        top.append(money(s.total_spend), self.style("primary"))
        top.append(f"  {money(self.view.spend_rate())}/tick", self.style("muted"))
        if capped:
            top.append(f"  ⚠ {capped} at soft cap", self.style("warn"))
        if broke:
            top.append(f"  $ {broke} broke", self.style("error"))
        name_w = self._name_w()
        cols = Text(f"{'agent':<{name_w}} ", self.style("header"))
        bar_w = self._bar_w(width)
        cols.append(f"{'left':<{bar_w}} ", self.style("header"))
        cols.append(f"{'credits':>15} ", self.style("header"))
        if width >= name_w + bar_w + 36:
            cols.append(f"{'/tick':>8}", self.style("header"))
        n = self._spark_w(width)
        if n:
            cols.append(f"  spend, last {n} ticks", self.style("header"))
            # The sparklines' one scale, and what a dot means.
            peak = self._spark_top(n)
            if peak > 0:
                top.append(f"   sparklines: █ {money(peak)}/tick · none", self.style("muted"))
        return [top, cols]

    def _spark_w(self, width: int) -> int:
        """Ticks of spend the sparkline shows at this width (0: no room)."""
        room = width - (self._name_w() + self._bar_w(width) + 36 + 2)
        return min(SPARK_TICKS, room) if room >= 6 else 0

    def _spark_series(self, name: str, n: int) -> list[float]:
        return per_tick(self.view.agent(name).charges, self.view.committed_tick, n)

    def _spark_top(self, n: int) -> float:
        """The largest spend of any agent in one of the last `n` ticks (once per tick)."""
        key = (self.view.committed_tick, n, len(self.view.order))
        if getattr(self, "_top_key", None) != key:
            self._top_key = key
            self._top = max((max(self._spark_series(a, n), default=0.0) for a in self.view.order), default=0.0)
        return self._top

    def _spark(self, t: Text, name: str, n: int) -> None:
        """The agent's spend over the last `n` ticks: a bar a tick on the shared scale, a
        muted dot for a tick it spent nothing in (so the time axis reads even when quiet),
        blank before the run's first tick."""
        bars = spark(self._spark_series(name, n), self._spark_top(n))
        first = self.view.committed_tick - n + 1
        accent, muted = self.style("accent"), self.style("muted")
        run, quiet = "", False
        for i, ch in enumerate(bars):
            before = first + i < 1
            is_quiet = ch == " " and not before
            ch = "·" if is_quiet else ch
            if run and is_quiet != quiet:
                t.append(run, muted if quiet else accent)
                run = ""
            run += ch
            quiet = is_quiet
        if run:
            t.append(run, muted if quiet else accent)

    def _bar_w(self, width: int) -> int:
        # Room for a sparkline of 12 ticks first: history says more than a longer bar.
        return max(4, min(24, width - self._name_w() - 36 - 14))

    def render_row(self, index: int, width: int) -> Text:
        name = self.view.order[index]
        s = self.source.state
        agent = self.source.org.agents.get(name)
        left = s.credits.get(name, 0.0)
        top = agent.budget.max_credits if agent is not None else 0.0
        soft = agent.budget.soft_cap if agent is not None else None
        name_w = self._name_w()
        bar_w = self._bar_w(width)
        t = Text()
        shown = name if len(name) <= name_w else name[: name_w - 1] + "…"
        t.append(f"{shown:<{name_w}} ")
        if agent is not None and not agent.resume.calls_model:
            t.append("no model: never spends", self.style("muted"))
            return t
        fraction = left / top if top > 0 else (1.0 if left > 0 else 0.0)
        filled, track = bar(fraction, bar_w)
        if left <= 0:
            look = "bar-empty"
        elif soft is not None and left <= soft:
            look = "bar-low"
        else:
            look = "bar"
        t.append(filled, self.style(look))
        t.append(track + " ", self.style("track"))
        amount = f"{money(left)}/{money(top)}"
        t.append(f"{amount:>15} ", self.style("error") if left <= 0 else None)
        if width >= name_w + bar_w + 36:
            rate = self.view.agent(name).spend_rate(self.view.committed_tick, RECENT_TICKS)
            t.append(f"{money(rate):>8}", self.style("muted"))
            n = self._spark_w(width)
            if n:
                t.append("  ")
                self._spark(t, name, n)
        if left <= 0 and agent is not None and agent.resume.calls_model:
            t.append("  broke", self.style("error"))
        elif name in s.soft_warned:
            t.append("  ⚠ soft cap", self.style("warn"))
        return t

"""How a search hit reads on a terminal: its line with the matched words highlighted.

Shared by `lemming search` and the control room's find dialog; Rich only (the
command line does not import Textual).
"""

from __future__ import annotations

from rich.text import Text

from lemming.engine.plainjson import printable
from lemming.engine.store.search import MARK_END, MARK_START, Hit


def marked_line(hit: Hit, text: Text | None = None) -> Text:
    """The hit's line (appended to `text` if given), control codes escaped, matches in reverse."""
    out = text if text is not None else Text(no_wrap=True, overflow="ellipsis")
    bold = False
    for part in hit.line.replace(MARK_END, MARK_START).split(MARK_START):
        if part:
            out.append(printable(part).replace("\n", " "), style="bold reverse" if bold else "")
        bold = not bold
    return out


def hit_row(hit: Hit, agent_width: int = 12) -> Text:
    """tick, agent, kind, then the marked line: one row of a list of hits."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(f"{hit.tick:>6} ", style="bold")
    out.append(f"{printable(hit.agent)[:agent_width]:<{agent_width}} ", style="cyan")
    out.append(f"{hit.kind[:7]:<7} ", style="dim")
    return marked_line(hit, out)

"""Tables that fit the terminal: `lemming models` and `lemming runs`.

Rich squeezes a table that is too wide by narrowing its columns until words break
in the middle (`provid/er`, `(in proces s)`) and numbers are cut (`200/10…`). A
`fitted_table` instead gives every column at least its longest word (a number or an
id: its whole text; a URL or a model id longer than LONG_WORD may be folded) and, when the columns still do not fit, leaves out the least
important ones and says which in the caption (`--json` has every field).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


#: Longer "words" (URLs, model ids, paths) may be folded to keep a column narrow.
LONG_WORD = 16


@dataclass(frozen=True, slots=True)
class Col:
    """One column: its header, how important it is (0 first; the highest goes first
    when the width is short) and whether its cells may wrap between words."""

    header: str
    rank: int
    wrap: bool = True
    justify: str = "left"


def _plain(cell: str) -> str:
    return Text.from_markup(cell).plain


def _min_width(col: Col, cells: list[str]) -> int:
    """The narrowest the column may be: its longest word (header words included), or,
    for a column that never wraps, its longest cell. A word longer than LONG_WORD (a URL,
    a model id, an error's repr) is no word a person reads whole: it may be folded."""
    texts = [_plain(c) for c in cells]
    if not col.wrap:
        return max([len(w) for w in col.header.split()] + [len(t) for t in texts] + [1])
    words = [min(len(w), LONG_WORD) for t in texts for w in t.split()]
    return max([len(w) for w in col.header.split()] + words + [1])


def _max_width(col: Col, cells: list[str]) -> int:
    return max([len(col.header)] + [len(line) for c in cells for line in _plain(c).splitlines() or [""]])


def _shrink(mins: list[int], maxes: list[int], room: int) -> list[int] | None:
    """Column widths that add up to at most `room`: the widest columns give way first,
    none below its minimum; None if the minimums alone do not fit."""
    if sum(mins) > room:
        return None
    widths = list(maxes)
    excess = sum(widths) - room
    while excess > 0:
        i = max((i for i, w in enumerate(widths) if w > mins[i]), key=lambda i: widths[i])
        widths[i] -= 1
        excess -= 1
    return widths


def fitted_table(cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int, **table_kw: Any) -> Table:
    """A rich Table of `rows` (markup strings) no wider than `width`, its columns in
    `cols` order; the least important columns that do not fit are left out and named
    in the caption."""
    columns = [[row[i] for row in rows] for i in range(len(cols))]
    mins = [_min_width(c, columns[i]) for i, c in enumerate(cols)]
    maxes = [max(mins[i], _max_width(c, columns[i])) for i, c in enumerate(cols)]
    keep = list(range(len(cols)))
    widths: list[int] | None = None
    while keep:
        widths = _shrink([mins[i] for i in keep], [maxes[i] for i in keep], width - _overhead(len(keep), table_kw))
        if widths is not None or len(keep) == 1:
            break
        keep.remove(max(keep, key=lambda i: cols[i].rank))
    table = Table(**table_kw)
    for n, i in enumerate(keep):
        col = cols[i]
        table.add_column(
            col.header, justify=col.justify,  # type: ignore[arg-type]
            width=widths[n] if widths is not None else None,
            no_wrap=not col.wrap, overflow="fold",
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    left_out = [c.header for i, c in enumerate(cols) if i not in keep]
    if left_out:
        table.caption = f"not shown at {width} columns: {', '.join(left_out)}; --json has every field"
        table.caption_justify = "left"
    return table


def _overhead(n: int, table_kw: dict[str, Any]) -> int:
    """Cells a table of `n` columns takes besides its columns' own widths (edges,
    separators, padding), measured on an empty table of the same look."""
    probe = Table(**{k: v for k, v in table_kw.items() if k not in ("title", "caption")})
    for _ in range(n):
        probe.add_column("", width=1)
    console = Console(width=10_000, file=io.StringIO())
    return console.measure(probe).maximum - n


"""A finished turn as a conversation: what the agent said, to whom, and what else it did.

`turn_lines(record, width, palette)` turns a `TurnRecord`'s parsed reply into lines
of styled segments, ready for a Line API widget (the token stream):

    engineer → manager, qa · message · #build
      The text, wrapped to the width — rendered as Markdown when it is Markdown
      (headings, lists, emphasis, code), as plain wrapped text otherwise.
    · memory set plan = "ship it"
    · tool shell(cmd="make test")
    note: the agent's notes for the operator

A reply that did not parse has no conversation: the stream keeps its raw text. All
model text goes through `printable` (no control code reaches the terminal).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Mapping

from rich.cells import cell_len
from rich.console import Console
from rich.markdown import Markdown
from rich.segment import Segment
from rich.style import Style

from lemming.engine.events import TurnRecord
from lemming.engine.plainjson import printable

#: One line of the conversation: its segments (unstyled segments take the widget's base style).
Line = tuple[Segment, ...]

#: Indent of a message's text under its header.
INDENT = 2
#: Characters of one message shown (the inspector has the whole reply).
MAX_TEXT = 4000
#: Memory values and tool arguments are cut to this many characters.
MAX_DIM = 120

# Markdown worth rendering: a heading, a list, a quote, a fence, emphasis, code or a link.
_MARKDOWN = re.compile(
    r"(^|\n)\s{0,3}(#{1,6} |[-*+] |\d+[.)] |> |```)|\*\*[^*\n]+\*\*|(?<![\w*])\*[^*\s][^*\n]*\*(?!\w)|`[^`\n]+`|\[[^\]\n]+\]\([^)\s]+\)"
)

#: Style names a palette maps (the widget's component styles): the arrow header, the
#: sender, dim lines, notes.
PALETTE_KEYS = ("sender", "header", "muted", "note")


def looks_like_markdown(text: str) -> bool:
    """Whether `text` uses Markdown (rendering plain prose as Markdown would reflow it)."""
    return bool(_MARKDOWN.search(text))


def payload_text(payload: Any) -> str:
    """A message's text: the payload's `text`, a string payload, or compact JSON."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return payload["text"]
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


def _short(value: Any, n: int = MAX_DIM) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    s = printable(s).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


@lru_cache(maxsize=8)
def _console(width: int) -> Console:
    # Renders to segments only (never writes): colours as Rich's standard theme has them.
    return Console(width=width, color_system="standard", force_terminal=True, legacy_windows=False, no_color=False,
                   markup=False, emoji=False, highlight=False)


def _wrap(text: str, width: int, style: Style | None = None) -> list[Line]:
    """Plain text wrapped at spaces to `width` cells (a longer word is cut): one segment a line.

    Hand-made rather than Rich's `Text.wrap`, which costs ten times as much: a busy
    organisation ends a hundred turns a tick and each is wrapped once."""
    out: list[Line] = []
    measure = len if text.isascii() else cell_len
    for para in text.split("\n"):
        line = ""
        used = 0
        for word in para.split(" "):
            w = measure(word)
            if line and used + 1 + w <= width:
                line += " " + word
                used += 1 + w
                continue
            if line or used:
                out.append((Segment(line, style),))
            while w > width:  # a word longer than the line: cut it
                head = word[:width] if measure is len else _cut(word, width)
                out.append((Segment(head, style),))
                word = word[len(head):]
                w = measure(word)
            line, used = word, w
        out.append((Segment(line.rstrip(), style),))
    return out or [()]


def _cut(word: str, width: int) -> str:
    """The longest start of `word` that fits `width` cells (at least one character)."""
    n = 0
    for i, ch in enumerate(word):
        n += cell_len(ch)
        if n > width:
            return word[: max(1, i)]
    return word


def _markdown(text: str, width: int) -> list[Line]:
    console = _console(width)
    opts = console.options.update_width(width)
    lines = console.render_lines(Markdown(text, code_theme="ansi_dark", hyperlinks=False), opts, pad=False)
    # Rich pads blocks with blank lines: keep one between blocks, none at the ends.
    out: list[Line] = []
    for segs in lines:
        line = tuple(s for s in segs if not s.control)
        blank = not "".join(s.text for s in line).strip()
        if blank and (not out or not "".join(s.text for s in out[-1]).strip()):
            continue
        out.append(line)
    while out and not "".join(s.text for s in out[-1]).strip():
        out.pop()
    return out or [()]


def header_line(sender: str, recipients: list[str] | tuple[str, ...], kind: str, tags: list[str] | tuple[str, ...],
                palette: Mapping[str, Style]) -> Line:
    """``sender → recipients · kind · #tags``"""
    to = ", ".join(recipients) if recipients else "all"
    segs = [Segment(printable(sender), palette.get("sender")), Segment(f" → {printable(to)}", palette.get("header"))]
    rest = f" · {printable(kind)}" + ("".join(f" · #{printable(t)}" for t in tags) if tags else "")
    segs.append(Segment(rest, palette.get("muted")))
    return tuple(segs)


def message_lines(text: str, width: int) -> list[Line]:
    """A message's text, indented under its header: Markdown rendered when it is Markdown."""
    text = printable(text.strip())
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + " …"
    inner = max(10, width - INDENT)
    body = _markdown(text, inner) if looks_like_markdown(text) else _wrap(text, inner)
    pad = Segment(" " * INDENT)
    return [(pad, *line) for line in body]


def turn_lines(rec: TurnRecord, width: int, palette: Mapping[str, Style]) -> list[Line] | None:
    """The turn as a conversation, or None when its reply did not parse (show it raw)."""
    parsed = rec.parsed
    if not isinstance(parsed, dict):
        return None
    muted = palette.get("muted")
    out: list[Line] = []
    for e in parsed.get("outbox_entries") or []:
        if not isinstance(e, dict):
            continue
        out.append(header_line(rec.agent, e.get("recipients") or [], str(e.get("kind") or "message"),
                               e.get("tags") or [], palette))
        out.extend(message_lines(payload_text(e.get("payload")), width))
    for m in parsed.get("memory_updates") or []:
        if isinstance(m, dict):
            op, key = m.get("op", "set"), m.get("key", "")
            value = "" if op == "delete" else f" = {_short(m.get('value'))}"
            out.extend(_wrap(f"· memory {op} {_short(key, 40)}{value}", width, muted))
    for t in parsed.get("tool_calls") or []:
        if isinstance(t, dict):
            # Arguments as the call wrote them (strings quoted: `cmd="make test"`).
            args = ", ".join(f"{k}={_short(json.dumps(v, ensure_ascii=False, default=str), 40)}"
                             for k, v in (t.get("args") or {}).items())
            out.extend(_wrap(f"· tool {_short(t.get('tool', '?'), 40)}({args})", width, muted))
    if rec.tool_results:
        out.extend(_wrap(f"· {len(rec.tool_results)} tool result(s) (enter: inspect)", width, muted))
    notes = parsed.get("notes")
    if isinstance(notes, str) and notes.strip():
        out.extend(_wrap(f"note: {printable(notes.strip())}", width, palette.get("note")))
    if not out:
        out.extend(_wrap("· nothing said", width, muted))
    return out


def line_text(line: Line) -> str:
    """The characters of a line (for tests and copying)."""
    return "".join(s.text for s in line)

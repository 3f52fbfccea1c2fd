"""A finished turn as a conversation: arrows, text, Markdown, dim lines, notes, raw fallback."""

from __future__ import annotations

from rich.style import Style

from lemming.engine.events import TurnRecord
from lemming.tui.widgets.conversation import line_text, looks_like_markdown, turn_lines

PALETTE = {k: Style(bold=True) for k in ("sender", "header", "muted", "note")}


def _rec(parsed, status: str = "ok", **kw) -> TurnRecord:  # noqa: ANN001
    return TurnRecord(tick=4, agent="qa", model_key="sim", provider="sim", model_name="sim-1", prompt=[],
                      prompt_hash="", parsed=parsed, status=status, **kw)


def test_messages_under_arrows_then_memory_tools_and_notes() -> None:
    parsed = {
        "outbox_entries": [
            {"kind": "message", "payload": {"text": "The build is green; shipping at noon."}, "tags": ["build"],
             "recipients": ["manager", "ceo"]},
            {"kind": "report", "payload": {"rows": 3}, "tags": [], "recipients": []},
        ],
        "memory_updates": [{"op": "set", "key": "plan", "value": "ship"}, {"op": "delete", "key": "old"}],
        "tool_calls": [{"tool": "shell", "args": {"cmd": "make test"}}],
        "notes": "all good",
    }
    lines = [line_text(x) for x in turn_lines(_rec(parsed, tool_results=[{"ok": True}]), 40, PALETTE)]
    narrow = [line_text(x) for x in turn_lines(_rec(parsed), 30, PALETTE)]
    assert narrow[1:3] == ["  The build is green; shipping", "  at noon."]  # wrapped at a space, indented
    assert lines == [
        "qa → manager, ceo · message · #build",
        "  The build is green; shipping at noon.",
        "qa → all · report",
        '  {"rows": 3}',
        '· memory set plan = ship',
        "· memory delete old",
        '· tool shell(cmd="make test")',
        "· 1 tool result(s) (enter: inspect)",
        "note: all good",
    ]


def test_markdown_is_rendered_and_prose_is_left_alone() -> None:
    assert looks_like_markdown("## Plan\n- one\n- two") and looks_like_markdown("a **bold** move")
    assert not looks_like_markdown("Checked the spec; 3 * 4 = 12, next I will ship it.")
    md = "## Plan\n\n- **ship** the build\n- run `make test`"
    parsed = {"outbox_entries": [{"kind": "message", "payload": md, "recipients": ["ceo"]}]}
    lines = [line_text(x) for x in turn_lines(_rec(parsed), 50, PALETTE)]
    body = "\n".join(lines[1:])
    assert lines[0] == "qa → ceo · message"
    assert "Plan" in body and "##" not in body and "**" not in body and "`" not in body
    assert "• ship the build" in body and "make test" in body


def test_a_reply_that_did_not_parse_has_no_conversation_and_control_codes_never_pass() -> None:
    assert turn_lines(_rec(None, status="contract", raw_output="{oops"), 40, PALETTE) is None
    parsed = {"outbox_entries": [{"kind": "message", "payload": "\x1b[2Jgotcha\x07", "recipients": []}], "notes": ""}
    text = "\n".join(line_text(x) for x in turn_lines(_rec(parsed), 40, PALETTE))
    assert "\x1b" not in text and "\x07" not in text and "gotcha" in text
    assert turn_lines(_rec({"outbox_entries": []}), 40, PALETTE) and "nothing said" in line_text(
        turn_lines(_rec({"outbox_entries": []}), 40, PALETTE)[0])

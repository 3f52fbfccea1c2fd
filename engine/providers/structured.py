"""Whether a model is sent the reply schema as structured output, and what a run learned.

models.json's ``"structured_output": true | false | "auto"`` (default ``auto``)
decides per model key. ``auto`` is on for the protocols known to take a schema
(every adapter shipped: OpenAI-compatible ``response_format``, Ollama ``format``,
Anthropic's forced tool, the sim) and off for anything else. A server that
refuses a request carrying the schema is asked once more without it (see
retry.py); the model key is then remembered as refusing it for the rest of the
run, so later turns do not pay for the refusal again.
"""

from __future__ import annotations

from typing import Sequence

from lemming.engine.providers.base import ReplyFormat
from lemming.engine.reply_schema import ToolSpec, reply_format
from lemming.engine.resume import ModelSpec

#: Protocols whose adapters send the schema natively: where `auto` means on.
AUTO_ON: frozenset[str] = frozenset({"openai", "anthropic", "ollama", "sim"})


def setting_on(spec: ModelSpec) -> bool:
    """The models.json setting resolved: true, false, or auto by protocol."""
    value = spec.structured_output
    if value == "auto":
        return spec.provider in AUTO_ON
    return bool(value)


def setting_text(spec: ModelSpec) -> str:
    """The setting as the operator reads it: `on`, `off`, `auto (on)`, `auto (off)`."""
    on = setting_on(spec)
    if spec.structured_output == "auto":
        return f"auto ({'on' if on else 'off'})"
    return "on" if on else "off"


class StructuredOutput:
    """One run's decisions: which model keys get the schema, and which refused it."""

    def __init__(self) -> None:
        #: model key -> the refusal (one line), for the rest of the run.
        self.refused: dict[str, str] = {}

    def format_for(self, key: str, spec: ModelSpec, tools: Sequence[ToolSpec] | None) -> ReplyFormat | None:
        """The schema to send with a turn of model `key`, or None."""
        if key in self.refused or not setting_on(spec):
            return None
        return reply_format(tools)

    def record_value(self, key: str, sent: bool) -> str:
        """What a turn record says (TurnRecord.reply_schema): "sent", "dropped" (its server
        refused it earlier in this run) or "" (off for this model)."""
        if sent:
            return "sent"
        return "dropped" if key in self.refused else ""

    def refuse(self, key: str, reason: str) -> bool:
        """Remember that `key`'s server refused the schema; True the first time."""
        if key in self.refused:
            return False
        self.refused[key] = reason
        return True

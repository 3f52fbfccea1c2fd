"""A turn's prompt as the store keeps it, and rebuilt.

A turn's prompt is a list of messages. Everything but the last message (the system
message: the same turn after turn) is stored once in `texts`, by hash; the last one
goes into the batch's `prompts` blob as the item ``[head hash, message]`` (``null``:
no prompt), all of a tick's turns compressed together (they share the structure and
the messages the agents read). A rebuilt prompt is checked against the turn record's
`prompt_hash`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from lemming.engine.events import TurnRecord
from lemming.engine.prompt import prompt_hash
from lemming.engine.store.encoding import PROMPT_LEVEL, compress, dumps, loads, text_hash
from lemming.engine.store.errors import StoreError


class PromptHeads:
    """The writer's side: splits prompts into stored items, remembering the hash of each
    head it has seen (a head rarely changes; hashing it every turn would cost more)."""

    def __init__(self) -> None:
        self._hashes: dict[tuple, str] = {}  # prompt head (as tuples) → its text hash
        #: id of a lone system message's text → (the text, its role, the head's hash). The
        #: engine reuses one text object per agent turn after turn: found by identity, the
        #: head is neither rebuilt as tuples nor hashed nor compared (most of this cost).
        self._by_text: dict[int, tuple[str, Any, str]] = {}

    def items(self, prompts: Iterable[list[dict[str, Any]]], known: set[str], texts: dict[str, bytes]) -> list[Any]:
        """The stored item of each of `prompts` (a batch's, in one call). A head whose hash is
        new here and not in `known` (the texts already in the file) is added to `texts`:
        hash → compressed text."""
        by_text = self._by_text
        out: list[Any] = []
        for prompt in prompts:
            # The usual prompt: a system message seen before (by identity), then the turn's.
            if len(prompt) == 2:
                m = prompt[0]
                if type(m) is dict and len(m) == 2:
                    text = m.get("content")
                    got = by_text.get(id(text))
                    if got is not None and got[0] is text:
                        role = m.get("role")
                        if got[1] == role and role is not None:
                            out.append([got[2], prompt[1]])
                            continue
            out.append(self._item(prompt, known, texts))
        return out

    def _item(self, prompt: list[dict[str, Any]], known: set[str], texts: dict[str, bytes]) -> list[Any] | None:
        """The stored item of a prompt `items` did not find by its system message's identity."""
        if len(prompt) == 2:
            m = prompt[0]
            if type(m) is dict and len(m) == 2:
                text, role = m.get("content"), m.get("role")
                hh = self._hash(prompt, known, texts)
                if type(text) is str and role is not None:
                    if len(self._by_text) > 4096:
                        self._by_text.clear()
                    self._by_text[id(text)] = (text, role, hh)  # type: ignore[assignment]
                return [hh, prompt[1]]
        if len(prompt) > 1:
            return [self._hash(prompt, known, texts), prompt[-1]]
        return [None, prompt[-1]] if prompt else None

    def _hash(self, prompt: list[dict[str, Any]], known: set[str], texts: dict[str, bytes]) -> str:
        # The head (the system message) rarely changes: look it up by content.
        heads = self._hashes
        try:
            key: tuple | None = (
                (tuple(prompt[0].items()),) if len(prompt) == 2 else tuple(tuple(m.items()) for m in prompt[:-1])
            )
            hh = heads.get(key)  # type: ignore[arg-type]
        except (TypeError, AttributeError):
            key, hh = None, None
        if hh is None:
            head = dumps(prompt[:-1])
            hh = text_hash(head)
            if key is not None:
                if len(heads) > 4096:
                    heads.clear()
                heads[key] = hh
            if hh not in known:
                texts[hh] = compress(head, PROMPT_LEVEL)
        return hh


def _join(item: Any, head: Callable[[str], bytes]) -> list[dict[str, Any]]:
    """A prompt from its stored item: null (no prompt) or [head hash or null, last message]."""
    if item is None:
        return []
    hh, last = item
    return [*(loads(head(hh)) if hh else []), last]


def rebuild_prompt(run_id: str, rec: TurnRecord, line: tuple[Any, dict[str, bytes]]) -> list[dict[str, Any]]:
    """The prompt of `rec` from its stored item and the head texts it refers to (hash →
    text), checked against the record's hash."""
    item, heads = line
    try:
        prompt = _join(item, lambda h: heads[h])
    except (KeyError, ValueError, TypeError) as e:
        raise StoreError(f"run {run_id}: the prompt of {rec.agent} at tick {rec.tick} does not decode ({e})") from None
    if prompt_hash(prompt) != rec.prompt_hash:
        raise StoreError(f"run {run_id}: the rebuilt prompt of {rec.agent} at tick {rec.tick} does not match its hash")
    return prompt

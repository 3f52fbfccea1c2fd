"""Credits: what a turn may spend, and what it is charged.

A turn costs the model's token prices (per million input / output tokens) plus
LeMMing's flat `cost_per_action`. Before a call, `max_tokens` is capped so one
turn cannot spend more than the agent has left; an agent at or below zero does
not fire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lemming.engine.org import Budget
from lemming.engine.resume import Prices

DEFAULT_MAX_TOKENS = 1024


@dataclass(slots=True, frozen=True)
class TurnAllowance:
    max_tokens: int | None  # None: the agent cannot afford a turn
    reason: str = ""


def turn_cost(prices: Prices, input_tokens: int, output_tokens: int, action_cost: float) -> float:
    return (
        action_cost
        + input_tokens * prices.input_per_mtok / 1e6
        + output_tokens * prices.output_per_mtok / 1e6
    )


def allowance(
    balance: float,
    budget: Budget,
    prices: Prices,
    input_estimate: int,
    wanted: int | None,
) -> TurnAllowance:
    """How many output tokens the agent may ask for, given what it has left."""
    wanted = wanted or DEFAULT_MAX_TOKENS
    if balance <= 0:
        return TurnAllowance(None, f"no credits left ({balance:.6g})")
    left = balance - budget.cost_per_action - input_estimate * prices.input_per_mtok / 1e6
    if left <= 0:
        return TurnAllowance(None, f"{balance:.6g} credits cannot pay for the prompt and the action")
    if prices.output_per_mtok <= 0:
        return _allowed(wanted)
    affordable = math.floor(left * 1e6 / prices.output_per_mtok)
    if affordable < 1:
        return TurnAllowance(None, f"{balance:.6g} credits cannot pay for one output token")
    return _allowed(wanted if wanted < affordable else affordable)


#: TurnAllowance(n) by n: the usual answer, the same for an agent turn after turn (a frozen
#: dataclass costs more to make than the rest of `allowance`).
_ALLOWED: dict[int, TurnAllowance] = {}


def _allowed(n: int) -> TurnAllowance:
    got = _ALLOWED.get(n)
    if got is None:
        if len(_ALLOWED) >= 4096:
            _ALLOWED.clear()
        got = _ALLOWED[n] = TurnAllowance(n)
    return got

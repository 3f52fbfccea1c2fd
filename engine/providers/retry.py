"""One call of a turn: stream from a provider with timeout, bounded retries, backoff and jitter.

The SDK adapters are built with their own retries switched off (max_retries=0) so
that retries never stack: this loop is the only one.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable

from lemming.engine import eager

from lemming.engine.providers.base import CompletionRequest, Provider, ProviderError, TextDelta, Usage

#: Called with (text, restart): restart=True means a retry starts the reply over.
DeltaSink = Callable[[str, bool], None]


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    #: A Retry-After longer than this is not waited for: the turn fails instead.
    max_retry_after: float = 60.0
    #: A reply longer than this many characters per max_token is cut off and the turn
    #: fails: a provider that ignores max_tokens must not fill memory and the store. Real
    #: tokens average about 4 characters; 32 leaves room for any tokenizer.
    chars_per_token: int = 32
    #: The cap is never below this (a guard against runaways, not a judge of style).
    min_reply_chars: int = 262_144
    #: The cap when the request sets no max_tokens.
    max_reply_chars: int = 1_000_000

    def reply_cap(self, max_tokens: int | None) -> int:
        if max_tokens is None:
            return self.max_reply_chars
        return max(self.min_reply_chars, max_tokens * self.chars_per_token)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        # Full jitter (AWS architecture blog): uniform in [0, base * 2^attempt].
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return rng.uniform(0, cap)


@dataclass(slots=True)
class CompletionResult:
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    error: ProviderError | None = None
    errors: list[str] = field(default_factory=list)  # one line per failed attempt
    #: Tokens billed across all attempts (a failed attempt that streamed still costs).
    billed: Usage = field(default_factory=Usage)
    #: Whether the reply schema went with the call that produced `text`.
    reply_format_sent: bool = False
    #: The server refused the request carrying the reply schema and took it without:
    #: why (one line). The caller stops sending the schema to this model.
    reply_format_refused: str | None = None


async def _wait(step: Any, waiting: Any, deadline: float) -> Any:
    """Await the rest of `step`, which `eager.start` left waiting on `waiting`, within the
    call's deadline. The call may have been run eagerly so far (engine/eager.py): it first
    lets the loop run once, so that the timeout is armed in the task the call goes on in;
    `step` is told if the call is cancelled in between."""
    try:
        await eager.hop()
    except BaseException as e:
        try:
            step.throw(e)
        except BaseException:
            pass
        raise
    async with asyncio.timeout_at(deadline if deadline != math.inf else None):
        return await eager.resume(step, waiting)


async def _read(stream: Any, parts: list[str], cap: int, on_delta: DeltaSink, max_tokens: int | None) -> Usage | None:
    """Read one attempt's stream to its end: its text into `parts` (each delta also to
    `on_delta`), its usage returned (None if it reported none). A reply past `cap`
    characters is cut off."""
    usage: Usage | None = None
    size = 0
    async for item in stream:
        if isinstance(item, TextDelta):
            text = item.text
            if text:
                size += len(text)
                if size > cap:
                    raise ProviderError(
                        "too_long",
                        f"the reply passed {cap:,} characters (max_tokens {max_tokens}); "
                        "the provider ignored max_tokens, so the call was cut off "
                        "(raise max_tokens or check the model's server)",
                    )
                parts.append(text)
                on_delta(text, False)
        else:
            usage = item
    return usage


def _prompt_estimate(request: CompletionRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token) for providers that report no usage:
    a token per started 4 characters (0 for no text, at least 1 for some)."""
    return (len(text) + 3) // 4


async def stream_with_retries(
    provider: Provider,
    request: CompletionRequest,
    on_delta: DeltaSink,
    *,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> CompletionResult:
    """Run one completion to the end, retrying what can be retried. Never raises ProviderError."""
    policy = policy or RetryPolicy()
    # What the attempts add up to, made into the result at the end (an instant call's
    # result is one object made once, not one made up front and updated attempt by attempt).
    attempts = 0
    errors: list[str] = []  # one line per failed attempt
    billed_in = billed_out = 0
    billed_estimated = False
    error: ProviderError | None = None
    text = ""
    sent = False
    prompt_estimate = -1  # worked out only for a call whose provider reports no usage
    max_tokens = request.max_tokens
    cap = policy.reply_cap(max_tokens)
    refused: ProviderError | None = None
    attempt = 0  # counts against max_attempts; the retry without the schema does not
    loop = asyncio.get_running_loop()
    while attempt < policy.max_attempts:
        attempt += 1
        attempts += 1
        sent = request.reply_format is not None
        parts: list[str] = []
        # The attempt's deadline, counted from now; a timer is armed only for a step that waits.
        deadline = loop.time() + request.timeout if request.timeout is not None else math.inf
        try:
            # The stream is read by a coroutine run eagerly: what the provider has ready is
            # taken at once, and only if it has to wait is the rest awaited (in the turn's
            # task, within the call's deadline). An instant provider's call arms no timer
            # and needs no task.
            stream = provider.stream(request)
            ended = False
            try:
                reading = _read(stream, parts, cap, on_delta, max_tokens)
                usage, waiting = eager.start(reading)
                if usage is eager.PENDING:
                    usage = await _wait(reading, waiting, deadline)
                ended = True
            finally:
                # (aclosing's part: a reply cut off here closes the provider's stream and
                # its HTTP response. A stream read to its end has ended: nothing to close.)
                if not ended:
                    closing = stream.aclose()  # type: ignore[attr-defined]
                    done, waiting = eager.start(closing)
                    if done is eager.PENDING:
                        await _wait(closing, waiting, deadline)
        except ProviderError as e:
            err = e
        except TimeoutError:
            err = ProviderError("timeout", f"no complete answer within {request.timeout:g}s")
        else:
            text = "".join(parts)
            if usage is None:
                prompt_estimate = _prompt_estimate(request)
                usage = Usage(prompt_estimate, estimate_tokens(text), estimated=True)
            # Earlier attempts' failures stay in `errors`; this call succeeded.
            return CompletionResult(
                text,
                usage,
                attempts,
                None,  # error
                errors,
                Usage(billed_in + usage.input_tokens, billed_out + usage.output_tokens, billed_estimated or usage.estimated),
                sent,  # reply_format_sent
                None if refused is None else str(refused),  # reply_format_refused
            )

        # A failed attempt: what it streamed may have been billed.
        partial = "".join(parts)
        billed = err.partial_usage
        if billed is None and partial:
            if prompt_estimate < 0:
                prompt_estimate = _prompt_estimate(request)
            billed = Usage(prompt_estimate, estimate_tokens(partial), estimated=True)
        if billed is not None:
            billed_in += billed.input_tokens
            billed_out += billed.output_tokens
            billed_estimated = billed_estimated or billed.estimated
        errors.append(f"attempt {attempts}: {err}")
        error = err
        text = partial
        if err.kind == "bad_request" and request.reply_format is not None:
            # Perhaps a server that does not know the structured-output field: once more
            # without it, at once and outside the attempt budget.
            refused, request = err, replace(request, reply_format=None)
            attempt -= 1
            errors[-1] += " (retrying without the reply schema)"
            if parts:
                on_delta("", True)
            continue
        if not err.retryable or attempt >= policy.max_attempts:
            break
        if err.retry_after is not None and err.retry_after > policy.max_retry_after:
            errors.append(
                f"retry-after {err.retry_after:g}s exceeds the {policy.max_retry_after:g}s limit; giving up"
            )
            break
        if rng is None:
            rng = random.Random()
        await sleep(policy.delay(attempt, rng, err.retry_after))
        if parts:
            on_delta("", True)
    # Without the field the server got past the refusal (if it did): the field was the cause.
    was_refused = refused is not None and (error is None or error.kind != "bad_request")
    return CompletionResult(
        text,
        Usage(billed_in, billed_out, billed_estimated),  # usage
        attempts,
        error,
        errors,
        Usage(billed_in, billed_out, billed_estimated),  # billed
        sent,  # reply_format_sent
        str(refused) if was_refused else None,  # reply_format_refused
    )

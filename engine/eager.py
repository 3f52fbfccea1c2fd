"""Running a coroutine eagerly: its first steps now, a task only if it has to wait.

Most of a turn's work with an instant provider never waits: a task per turn, and a
timeout armed per call, would cost more than the turn's own work. `start` steps a
coroutine by hand until it first waits; `resume` goes on from there (awaited, or as a
task's coroutine), exactly as if it had been awaited from the start: the future it
waits on is handed to whoever awaits `resume`, cancellation is thrown into it.
"""

from __future__ import annotations

import types
from typing import Any, Awaitable, Generator

#: What `start` returns for a step that is still waiting.
PENDING = object()


def start(step: Awaitable[Any]) -> tuple[Any, Any]:
    """Step `step` (a coroutine, or another awaitable with `send`: an async generator's
    `__anext__()`) once: (PENDING, what it waits on) if it has to wait, else (its value,
    None). Its exceptions propagate."""
    try:
        waiting = step.send(None)  # type: ignore[attr-defined]
    except StopIteration as e:
        return e.value, None
    return PENDING, waiting


@types.coroutine
def resume(step: Any, waiting: Any) -> Generator[Any, Any, Any]:
    """Await `step`, which `start` left waiting on `waiting` (a future, or None for a bare
    yield). Its value is returned, its exceptions raised."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as e:
            try:
                waiting = step.throw(e)
            except StopIteration as s:
                return s.value
        else:
            try:
                waiting = step.send(sent)
            except StopIteration as s:
                return s.value


async def as_task(step: Any, waiting: Any) -> Any:
    """`resume` as a coroutine function (what `loop.create_task` takes)."""
    return await resume(step, waiting)


@types.coroutine
def hop() -> Generator[None, None, None]:
    """Let the event loop run once (asyncio.sleep(0)): a coroutine run eagerly moves into
    its task here, before it arms anything bound to the current task (a timeout)."""
    yield

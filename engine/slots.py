"""Call slots: the engine's concurrency limits (the run's, and each model's).

A counting semaphore whose free slot is taken without a coroutine: a turn whose
provider answers at once (engine/eager.py) takes and gives back its slots as plain calls;
`asyncio.Semaphore` costs two coroutines per acquire even when a slot is free. Waiters
are served in arrival order, and a slot given back goes straight to the first of them.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """`n` slots: `try_take()` (no waiting) or `await take()`, then `give()` once."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"slots must be at least 1, not {n}")
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    def waiting(self) -> bool:
        """Whether calls are waiting for a slot."""
        return bool(self._waiters)

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for it before us."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting for one (in arrival order) if none is free."""
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot as the cancellation came: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def give(self) -> bool:
        """Give a slot back: to the first waiter (True: a call waiting for it goes on),
        else to the free ones (False)."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return True
        self._free += 1
        return False

"""Call slots (engine/slots.py): the engine's concurrency limits."""

from __future__ import annotations

import asyncio

import pytest

from lemming.engine.slots import Slots


def test_free_slots_are_taken_without_waiting_and_given_back() -> None:
    s = Slots(2)
    assert s.try_take() and s.try_take()
    assert not s.try_take() and s.free == 0
    assert s.give() is False  # nobody waited: freed
    assert s.free == 1 and not s.waiting()
    with pytest.raises(ValueError):
        Slots(0)


async def test_waiters_are_served_in_arrival_order_and_a_slot_goes_straight_to_the_first() -> None:
    s = Slots(1)
    assert s.try_take()
    order: list[int] = []

    async def call(i: int) -> None:
        await s.take()
        order.append(i)
        await asyncio.sleep(0)
        s.give()

    tasks = [asyncio.create_task(call(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert s.waiting()
    assert not s.try_take()  # a waiter comes first, even when a slot is given back meanwhile
    assert s.give() is True
    assert s.free == 0  # handed to the first waiter, not freed
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert s.free == 1 and not s.waiting()


async def test_a_cancelled_waiter_loses_its_place_and_never_its_slot() -> None:
    s = Slots(1)
    assert s.try_take()
    first = asyncio.create_task(s.take())
    second = asyncio.create_task(s.take())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert s.give() is True  # goes to the second, the first having left
    await second
    assert s.free == 0 and not s.waiting()
    # Handed a slot in the same step as its cancellation: the slot is passed on, not lost.
    third = asyncio.create_task(s.take())
    await asyncio.sleep(0)
    s.give()
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)
    assert s.free == 1 and not s.waiting()

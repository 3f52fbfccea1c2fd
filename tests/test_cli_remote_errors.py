"""`lemming send`, `chat` and `ctl` on a served run: mistakes said in one line with what
to do, an agent that can never reply refused at once, and `abort` naming its tick."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lemming.engine.events import TickAborted
from lemming.engine.remote import ControlClient, ControlServer, RemoteError
from lemming.engine.store import RunStore, default_db_path
from tests.conftest import make_org
from tests.support.app_driver import sim_engine
from tests.test_remote import lemming, serving


@pytest.fixture
def served_org(tmp_path: Path):
    org = make_org(tmp_path / "org", {"alice": {"reads": ["bob"]}, "bob": {"reads": ["alice"]}, "human": {"model": "none"}})
    with serving(org, "--interval", "0.05", "--sim-tokens-per-s", "2000"):
        yield org


def test_chat_refuses_at_once_an_agent_that_never_replies(served_org: Path) -> None:
    r = lemming("chat", "human", "hi", org=served_org, timeout=15)
    assert r.returncode == 1 and "chat: human has model none: it never replies" in r.stderr, r.stderr
    assert lemming("ctl", "disable", "bob", org=served_org).returncode == 0
    r = lemming("chat", "bob", "hello", org=served_org, timeout=15)
    assert r.returncode == 1 and "chat: bob is disabled: enable it with lemming ctl enable bob" in r.stderr, r.stderr
    r = lemming("chat", "alice", "hello", org=served_org, timeout=30)  # one that replies still does
    assert r.returncode == 0 and "alice →" in r.stdout, r.stderr


def test_send_and_ctl_mistakes_are_said_plainly(served_org: Path) -> None:
    r = lemming("send", "nobody", "x", org=served_org)
    assert r.returncode == 1, r.stderr
    assert "send: run " in r.stderr and "has no agent 'nobody'; its agents: alice, bob, human" in r.stderr
    r = lemming("chat", "nobody", "x", org=served_org)
    assert r.returncode == 1 and "chat: run " in r.stderr and "its agents: alice, bob, human" in r.stderr
    for text in ("", "   "):
        r = lemming("send", "alice", text, org=served_org)
        assert r.returncode == 1 and "send: the message is empty; give the text to send" in r.stderr, r.stderr
    r = lemming("ctl", "top-up", "alice", "abc", org=served_org)
    assert r.returncode == 2 and "ctl top-up: AMOUNT 'abc' is not a number; give a number of credits" in r.stderr
    assert "could not convert" not in r.stderr
    r = lemming("ctl", "interval", "fast", org=served_org)
    assert r.returncode == 2 and "ctl interval: SECONDS 'fast' is not a number" in r.stderr


def test_abort_names_the_tick_it_aborted(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", {"alice": {}})
    with serving(org, "--sim-latency-ms", "20000") as (_, run):
        time.sleep(1.0)  # tick 1 is in flight: its turn thinks for 20 s
        r = lemming("ctl", "abort", org=org)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "abort: tick 1 is aborted: nothing of it is committed; the run pauses at tick 0"
        r = lemming("ctl", "abort", org=org)  # paused: nothing in flight
        assert r.returncode == 0 and "no tick was in flight" in r.stdout and "None" not in r.stdout

    async def aborted() -> list[int]:
        async with await RunStore.open(default_db_path(org), readonly=True) as store:
            return [e.tick for e in await store.events(run.run_id) if isinstance(e, TickAborted)]

    assert asyncio.run(aborted()) == [1]


async def test_a_command_to_a_run_that_is_not_ticking_says_why(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", {"alice": {}})
    engine = sim_engine(org)
    closing = asyncio.Event()

    class SlowHub:
        """MCP servers that take their time to close: the run is stopping meanwhile."""

        async def aclose(self) -> None:
            await closing.wait()

    async with ControlServer(engine, org) as server:
        c = await ControlClient.connect(server.path)
        with pytest.raises(RemoteError, match=r"^stop: the run has not started yet; try again in a moment$"):
            await c.request("stop")
        engine.mcp = SlowHub()  # type: ignore[assignment]
        task = asyncio.create_task(engine.run(ticks=2))
        while not engine.stopping:
            await asyncio.sleep(0.01)
        with pytest.raises(RemoteError, match=r"^abort: the run is stopping at tick 2 \(its MCP servers closing"):
            await c.request("abort")
        assert (await c.request("status"))["stopping"] is True
        closing.set()
        await task
        with pytest.raises(RemoteError, match=r"^stop: the run has stopped at tick 2 \(completed\)$"):
            await c.request("stop")
        await c.close()

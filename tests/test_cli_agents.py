"""Command-line agents (`provider: "cli"`) against real processes: Python scripts the tests
write, run per turn or as one long-lived process, timed out, crashing, flooding, reading
stdin, ignoring SIGTERM; the environment and cwd they get; what the turn records; cost;
`lemming validate`; and no process left behind, not even after kill -9 of the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import MessageCommitted, TokenDelta, TurnFinished, canonical
from lemming.engine.org import load_org
from lemming.engine import process_group
from lemming.engine.process_group import child_env, expand_env_refs, reaper
from lemming.engine.tools.files import Workspace
from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderConfig, ProviderError, TextDelta
from lemming.engine.providers.cli import CliProvider, reply_text
from tests.conftest import REPO, make_org
from tests.support.processes import alive, no_transport_left_open, pids_with
from tests.test_store_crash import canonical_export, run_ids

#: A subprocess transport collected after its event loop closed raises in its __del__
#: ("Event loop is closed"): here that fails the test, not just a warning in the summary.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

LEMMING = [sys.executable, "-m", "lemming.tui.cli"]


# --- helpers ----------------------------------------------------------------------------------


def script(tmp_path: Path, name: str, body: str) -> str:
    """Write a Python script; return its path (run with the test's own interpreter)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)


def cli_model(argv: list[str], **config: Any) -> dict[str, Any]:
    return {"provider": "cli", "provider_config": {"command": argv, **config}}


def wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = pids_with(marker)
        if not left:
            return []
        time.sleep(0.05)
    return pids_with(marker)


async def run_org(root: Path, ticks: int, **engine_args: Any) -> tuple[Engine, list]:
    engine = Engine(load_org(root), **engine_args)
    sub = engine.subscribe()
    await engine.run(ticks=ticks)
    sub.close()
    return engine, sub.drain()


def turns(events: list, agent: str) -> list:
    return [e.record for e in events if isinstance(e, TurnFinished) and e.agent == agent]


def messages(events: list, agent: str) -> list:
    return [e.entry for e in events if isinstance(e, MessageCommitted) and e.entry.agent == agent]


def request(text: str, agent: str = "a", root: Path | None = None) -> CompletionRequest:
    return CompletionRequest(
        model="x", messages=[ChatMessage("system", "sys"), ChatMessage("user", text)], agent=agent, org_root=str(root) if root else None
    )


async def collect(provider: CliProvider, req: CompletionRequest) -> tuple[str, Any]:
    text = []
    usage = None
    async for item in provider.stream(req):
        if isinstance(item, TextDelta):
            text.append(item.text)
        else:
            usage = item
    return "".join(text), usage


# --- per turn ---------------------------------------------------------------------------------


async def test_lemmings_cli_echo_entry_answers_through_echo_as_a_cli_output_message(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"echo_cli": {"model": "cli-echo"}}, models={"cli-echo": {"provider": "cli", "provider_config": {"command": ["echo"]}}})
    engine, events = await run_org(root, 2)
    recs = turns(events, "echo_cli")
    assert [r.status for r in recs] == ["ok", "ok"]
    assert recs[0].provider == "cli" and recs[0].model_name == "echo"
    # echo printed the prompt's last message, as LeMMing passes it: the last argument.
    assert recs[0].raw_output == recs[0].prompt[-1]["content"] + "\n"
    assert recs[0].process["exit_code"] == 0 and recs[0].process["stderr"] == ""
    (msg1, msg2) = messages(events, "echo_cli")
    assert msg1.tags == ("cli_output",) and msg1.kind == "message"
    assert msg1.payload["text"].startswith("Tick 1.") and msg2.payload["text"].startswith("Tick 2.")
    # It ran in its workspace, which now exists.
    assert Workspace.of(root, "echo_cli").root.is_dir()


async def test_the_child_gets_only_path_and_what_the_entry_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-passed-on")
    monkeypatch.setenv("MY_TOOL_TOKEN", "tok-123")
    show = script(tmp_path, "show_env", """
        import json, os, sys
        print(json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv[1:]}))
    """)
    root = make_org(
        tmp_path / "o",
        {"tool": {"model": "show"}},
        models={"show": cli_model([sys.executable, show], env={"TOKEN": "${env.MY_TOOL_TOKEN}", "MODE": "plain ${env.MY_TOOL_TOKEN}!"})},
    )
    _, events = await run_org(root, 1)
    (rec,) = turns(events, "tool")
    seen = json.loads(rec.raw_output)
    assert set(seen["env"]) <= {"PATH", "TOKEN", "MODE", "LC_CTYPE"}  # (Python may set LC_CTYPE itself)
    assert seen["env"]["TOKEN"] == "tok-123" and seen["env"]["MODE"] == "plain tok-123!"
    assert "sk-test-never-passed-on" not in rec.raw_output
    assert Path(seen["cwd"]).resolve() == Workspace.of(root, "tool").root.resolve()
    assert len(seen["argv"]) == 1 and seen["argv"][0] == rec.prompt[-1]["content"]
    # The JSON it printed is not LeMMing-shaped: it became one cli_output message.
    (msg,) = messages(events, "tool")
    assert msg.tags == ("cli_output",) and json.loads(msg.payload["text"])["argv"] == seen["argv"]


def test_env_references_and_a_missing_variable() -> None:
    assert expand_env_refs("a ${env.X} b ${env.X}", {"X": "1"}) == "a 1 b 1"
    assert child_env({"K": "${env.HOME_DIR}"}, {"PATH": "/bin", "HOME_DIR": "/h", "SECRET_API_KEY": "s"}) == {"PATH": "/bin", "K": "/h"}
    with pytest.raises(ValueError, match=r"\$\{env.NOPE\} is not set"):
        child_env({"K": "${env.NOPE}"}, {"PATH": "/bin"})


async def test_json_speaking_command_is_taken_as_the_reply(tmp_path: Path) -> None:
    speak = script(tmp_path, "speak", """
        import json
        print(json.dumps({
            "outbox_entries": [{"kind": "report", "payload": {"text": "built it"}, "tags": ["done"], "recipients": ["boss"]}],
            "memory_updates": [{"op": "set", "key": "last", "value": "built"}],
            "notes": "from the tool",
        }))
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "speak"}, "boss": {"reads": ["tool"]}}, models={"speak": cli_model([sys.executable, speak])})
    engine, events = await run_org(root, 1)
    (msg,) = messages(events, "tool")
    assert (msg.kind, msg.payload, msg.tags, msg.recipients) == ("report", {"text": "built it"}, ("done",), ("boss",))
    assert engine.state.memory["tool"] == {"last": "built"}
    assert turns(events, "tool")[0].parsed["notes"] == "from the tool"


def test_reply_rule_matches_lemmings() -> None:
    assert json.loads(reply_text('{"notes": "x"}')) == {"notes": "x"}
    wrapped = json.loads(reply_text("hello\n"))
    assert wrapped["outbox_entries"] == [{"kind": "message", "payload": {"text": "hello"}, "tags": ["cli_output"]}]
    assert json.loads(reply_text('{"other": 1}'))["outbox_entries"][0]["payload"]["text"] == '{"other": 1}'
    assert json.loads(reply_text(""))["outbox_entries"] == []
    big = json.loads(reply_text("y" * 100_000))
    assert len(big["outbox_entries"][0]["payload"]["text"]) < 20_000 and "cut to" in big["notes"]


async def test_stdout_streams_into_the_token_stream_as_it_arrives(tmp_path: Path) -> None:
    slowly = script(tmp_path, "slowly", """
        import sys, time
        for i in range(3):
            print(f"part {i}", flush=True)
            time.sleep(0.3)
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "slowly"}}, models={"slowly": cli_model([sys.executable, slowly])})
    engine = Engine(load_org(root))
    sub = engine.subscribe()
    arrivals: list[tuple[float, str]] = []

    async def watch() -> None:
        async for ev in sub:
            if isinstance(ev, TokenDelta) and ev.agent == "tool":
                arrivals.append((time.monotonic(), ev.text))

    import asyncio

    task = asyncio.create_task(watch())
    await engine.run(ticks=1)
    sub.close()
    await task
    assert "".join(t for _, t in arrivals) == "part 0\npart 1\npart 2\n"
    # The first part arrived while the program was still running, not at its end.
    assert len(arrivals) >= 2 and arrivals[-1][0] - arrivals[0][0] > 0.3


@pytest.mark.parametrize("sim_only", [False, True], ids=["as-defined", "sim-only"])
async def test_each_line_is_a_token_delta_before_the_turn_commits(tmp_path: Path, sim_only: bool) -> None:
    """A program that prints a line and then waits for the run to have streamed it: every
    line reaches subscribers as its own TokenDelta while the program still runs, with an
    API agent beside it (served by the sim under `--sim`), before the turn commits."""
    import asyncio

    from lemming.engine.recorded_run import RunSettings, build_engine

    stepper = script(tmp_path, "stepper", """
        import os, time
        for i in range(3):
            print(f"line {i}", flush=True)
            deadline = time.monotonic() + 10  # the test acknowledges each line by a file
            while not os.path.exists(f"ack{i}") and time.monotonic() < deadline:
                time.sleep(0.01)
    """)
    root = make_org(
        tmp_path / "o",
        {"api": {"model": "gpt"}, "tool": {"model": "stepper", "reads": ["api"]}},
        models={"stepper": cli_model([sys.executable, stepper]), "gpt": {"provider": "sim" if not sim_only else "openai", "model_name": "gpt-4.1"}},
    )
    engine = build_engine(root, RunSettings(sim_only=sim_only, seed=3))
    workspace = Workspace.of(root, "tool").root
    sub = engine.subscribe()
    seen: list[Any] = []

    async def watch() -> None:
        async for ev in sub:
            seen.append(ev)
            if isinstance(ev, TokenDelta) and ev.agent == "tool":
                done = "".join(e.text for e in seen if isinstance(e, TokenDelta) and e.agent == "tool").count("\n")
                for i in range(done):
                    (workspace / f"ack{i}").touch()

    task = asyncio.create_task(watch())
    await engine.run(ticks=1)
    sub.close()
    await task
    deltas = [e for e in seen if isinstance(e, TokenDelta) and e.agent == "tool"]
    finished = next(i for i, e in enumerate(seen) if isinstance(e, TurnFinished) and e.agent == "tool")
    assert [d.text for d in deltas] == ["line 0\n", "line 1\n", "line 2\n"]
    assert all(seen.index(d) < finished for d in deltas)
    rec = engine.state.last_turn["tool"]
    assert rec.status == "ok" and rec.raw_output == "line 0\nline 1\nline 2\n"
    assert rec.process and rec.process["exit_code"] == 0
    assert engine.state.last_turn["api"].provider == "sim"


async def test_a_cli_agent_that_calls_a_tool_records_the_last_rounds_process(tmp_path: Path) -> None:
    """LeMMing-shaped JSON with tool_calls runs the tools, then the program again with
    their results: the record shows the process of the last round, and no report is left
    behind in the provider."""
    two_rounds = script(tmp_path, "two_rounds", """
        import json, os, sys
        if not os.path.exists("asked"):  # round 1: write a file through the tool
            open("asked", "w").close()
            print("round 1", file=sys.stderr)
            print(json.dumps({"outbox_entries": [], "tool_calls": [{"tool": "file_write", "args": {"path": "notes.txt", "content": "hi"}}]}))
        else:
            print("round 2", file=sys.stderr)
            print(json.dumps({"outbox_entries": [{"kind": "message", "payload": {"text": "wrote notes.txt"}}]}))
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "two", "tools": ["file_write"]}}, models={"two": cli_model([sys.executable, two_rounds])})
    engine, events = await run_org(root, 1)
    rec = turns(events, "tool")[0]
    assert rec.status == "ok", rec.error
    assert [c["tool"] for c in rec.tool_calls] == ["file_write"] and len(rec.rounds) == 2
    assert (Workspace.of(root, "tool").root / "notes.txt").read_text() == "hi"
    assert rec.process["exit_code"] == 0 and rec.process["stderr"].strip() == "round 2"
    assert [m.payload["text"] for m in messages(events, "tool")] == ["wrote notes.txt"]
    provider, _ = engine.registry.resolve("two")
    assert provider.take_report(None) is None and not provider._reports


async def test_a_slow_command_is_ended_at_its_timeout_and_the_run_goes_on(tmp_path: Path) -> None:
    marker = f"slow-marker-{os.getpid()}-{time.monotonic_ns()}"
    slow = script(tmp_path, "slow", f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "{marker}-grandchild"])
        print("starting", flush=True)
        time.sleep(120)
    """)
    root = make_org(
        tmp_path / "o",
        {"tool": {"model": "slow"}, "other": {}},
        models={"slow": cli_model([sys.executable, slow, marker], timeout=1.0, kill_grace=0.5)},
    )
    t0 = time.monotonic()
    engine, events = await run_org(root, 2)
    assert time.monotonic() - t0 < 20
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["provider", "provider"]
    assert "ran past its 1s timeout" in recs[0].error and "process group was ended" in recs[0].error
    assert recs[0].process["timed_out"] is True and recs[0].raw_output == "starting\n"
    assert [r.status for r in turns(events, "other")] == ["ok", "ok"]
    assert wait_gone(marker, 3) == []  # the script and what it started


async def test_a_command_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    marker = f"stubborn-{os.getpid()}-{time.monotonic_ns()}"
    stubborn = script(tmp_path, "stubborn", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("not stopping", flush=True)
        while True:
            time.sleep(1)
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, stubborn, marker], timeout=0.5, kill_grace=0.5)})
    _, events = await run_org(root, 1)
    (rec,) = turns(events, "tool")
    assert rec.status == "provider" and rec.process["timed_out"] and rec.process["killed"] is True
    assert rec.process["exit_code"] == -signal.SIGKILL
    assert wait_gone(marker, 3) == []


async def test_a_crashing_command_fails_its_turn_with_exit_code_and_stderr(tmp_path: Path) -> None:
    crash = script(tmp_path, "crash", """
        import sys
        print("half a reply")
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(3)
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, crash])})
    _, events = await run_org(root, 2)
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["provider", "provider"]  # and the run went on to tick 2
    assert recs[0].error == "attempt 1: process: crash.py exited with code 3: Traceback: something broke"
    assert recs[0].process["exit_code"] == 3 and "something broke" in recs[0].process["stderr"]
    assert recs[0].raw_output == "half a reply\n"
    assert messages(events, "tool") == []  # a failed turn publishes nothing


async def test_a_flooding_command_is_capped_and_ended(tmp_path: Path) -> None:
    marker = f"flood-{os.getpid()}-{time.monotonic_ns()}"
    flood = script(tmp_path, "flood", """
        import sys
        line = "x" * 1023 + "\\n"
        while True:
            sys.stdout.write(line)
            sys.stderr.write("noise " * 100 + "\\n")
    """)
    root = make_org(
        tmp_path / "o",
        {"tool": {"model": "m"}},
        models={"m": cli_model([sys.executable, flood, marker], max_output_bytes=50_000, max_stderr_bytes=2_000)},
    )
    _, events = await run_org(root, 1)
    (rec,) = turns(events, "tool")
    assert rec.status == "ok"
    assert len(rec.raw_output) == 50_000 and rec.process["stdout_truncated"] is True
    assert len(rec.process["stderr"].encode()) <= 2_000 and rec.process["stderr_truncated"] is True
    assert any("stdout passed 50,000 bytes" in v for v in rec.violations)
    (msg,) = messages(events, "tool")
    assert msg.tags == ("cli_output",)
    assert wait_gone(marker, 3) == []


async def test_a_command_reading_stdin_gets_the_prompt_there(tmp_path: Path) -> None:
    upper = script(tmp_path, "upper", """
        import sys
        data = sys.stdin.read()
        print("ARGS", len(sys.argv) - 1)
        print(data.splitlines()[0].upper())
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, upper], input="stdin")})
    _, events = await run_org(root, 1)
    (rec,) = turns(events, "tool")
    assert rec.raw_output == "ARGS 0\nTICK 1. EVERYTHING YOU KNOW THIS TURN:\n"


async def test_a_prompt_that_looks_like_a_flag_is_refused(tmp_path: Path) -> None:
    provider = CliProvider(ProviderConfig("cli", options={"command": ["echo"]}))
    with pytest.raises(ProviderError, match="could be read as a flag") as e:
        await collect(provider, request("-n --help", root=tmp_path))
    assert not e.value.retryable
    allowed = CliProvider(ProviderConfig("cli", options={"command": ["echo"], "prevent_arg_injection": False}))
    assert (await collect(allowed, request("-n", root=tmp_path)))[0] == ""  # echo took it as a flag: the user allowed it
    via_stdin = CliProvider(ProviderConfig("cli", options={"command": ["cat"], "input": "stdin"}))
    assert (await collect(via_stdin, request("-n --help", root=tmp_path)))[0] == "-n --help"


# --- processes and their pipes are released on every path -------------------------------------------

#: A program that prints far more than any cap in one go, then waits to be ended: the
#: pipe's reader stops at the cap, its buffer fills, asyncio pauses the pipe for good.
BURST = """
    import json, sys, time
    if sys.argv[1] == "stateful":  # answers its turn, then floods between turns
        sys.stdin.readline()
        print(json.dumps({"type": "end", "text": "done"}), flush=True)
    sys.stdout.write("x" * 2_000_000)
    sys.stdout.flush()
    time.sleep(120)
"""


@pytest.mark.parametrize("path", ["capped", "closed_early", "cancelled", "stateful"])
async def test_a_cli_process_leaves_no_subprocess_transport_open_whatever_ends_its_turn(tmp_path: Path, path: str) -> None:
    """Whatever ends a turn (its output cut at the cap, the consumer closing the stream, the
    turn cancelled, a stateful session ended with unread output), the process's asyncio
    transport is closed before the run goes on: never left to be collected after the event
    loop closed ("Exception ignored in BaseSubprocessTransport.__del__: Event loop is closed")."""
    import asyncio

    marker = f"burst-{path}-{os.getpid()}-{time.monotonic_ns()}"
    burst = script(tmp_path, "burst", BURST)
    mode = "stateful" if path == "stateful" else "per_turn"
    provider = CliProvider(ProviderConfig("cli", options={
        "command": [sys.executable, burst, mode, marker], "mode": mode, "max_output_bytes": 1000, "kill_grace": 0.5,
    }))
    req = request("go", root=tmp_path)
    async with no_transport_left_open():
        if path == "capped":
            text, usage = await collect(provider, req)
            assert len(text) == 1000 and usage is not None
            assert provider.take_report(req)["stdout_truncated"] is True
        elif path == "closed_early":
            stream = provider.stream(req)
            assert isinstance(await anext(stream), TextDelta)
            await stream.aclose()
        elif path == "cancelled":
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in provider.stream(req):
                    first.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(consume())
            await asyncio.wait_for(first.wait(), 20)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            text, _ = await collect(provider, req)
            assert text == "done"
            await asyncio.sleep(0.5)  # its flood fills the pipe's buffer, unread
        await provider.aclose()
    assert wait_gone(marker, 5) == []


# --- stateful ---------------------------------------------------------------------------------


STATEFUL_JSONL = """
    import json, os, sys
    n = 0
    for line in sys.stdin:
        turn = json.loads(line)
        n += 1
        print(f"warming up turn {{n}}", file=sys.stderr, flush=True)
        if n == {die_at}:
            sys.exit(7)
        print(json.dumps({{"type": "delta", "text": f"pid {{os.getpid()}} "}}), flush=True)
        print(json.dumps({{"type": "delta", "text": f"turn {{n}} for {{turn['agent']}}"}}), flush=True)
        print(json.dumps({{"type": "end"}}), flush=True)
"""


async def test_stateful_mode_keeps_one_process_across_ticks_and_restarts_it_after_it_dies(tmp_path: Path) -> None:
    marker = f"stateful-{os.getpid()}-{time.monotonic_ns()}"
    loop = script(tmp_path, "loop", STATEFUL_JSONL.format(die_at=3))
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, loop, marker], mode="stateful")})
    _, events = await run_org(root, 5)
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["ok", "ok", "provider", "ok", "ok"]
    pids = [r.raw_output.split()[1] if r.status == "ok" else None for r in recs]
    assert pids[0] == pids[1] and pids[3] == pids[4] and pids[0] != pids[3]
    assert [r.raw_output.split(" ", 2)[2] if r.status == "ok" else None for r in recs] == [
        "turn 1 for tool", "turn 2 for tool", None, "turn 1 for tool", "turn 2 for tool"
    ]
    assert "exited with code 7 during the turn" in recs[2].error and "starts again" in recs[2].error
    assert recs[2].process["stderr"] == "warming up turn 3\n"
    assert [r.process["restarted"] for r in recs] == [False, False, False, True, False]
    assert recs[0].process["stderr"] == "warming up turn 1\n"
    (first, *_) = messages(events, "tool")
    assert first.tags == ("cli_output",) and first.payload["text"].endswith("turn 1 for tool")
    # The run ended: so did its long-lived process.
    assert wait_gone(marker, 5) == []


async def test_stateful_sentinel_framing_and_a_timeout_restart(tmp_path: Path) -> None:
    marker = f"sentinel-{os.getpid()}-{time.monotonic_ns()}"
    loop = script(tmp_path, "sentinel", """
        import sys, time
        n = 0
        lines = []
        for line in sys.stdin:
            if line.rstrip("\\n") != "<<<END>>>":
                lines.append(line)
                continue
            n += 1
            if n == 2:
                time.sleep(60)  # hangs on its second turn
            print(f"got {len(lines)} lines, turn {n}", flush=True)
            print("<<<END>>>", flush=True)
            lines = []
    """)
    root = make_org(
        tmp_path / "o", {"tool": {"model": "m"}},
        models={"m": cli_model([sys.executable, loop, marker], mode="stateful", framing="sentinel", timeout=1.0, kill_grace=0.2)},
    )
    _, events = await run_org(root, 3)
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["ok", "provider", "ok"]
    assert recs[0].raw_output.startswith("got ") and recs[0].raw_output.endswith("turn 1\n")
    assert "did not end its turn within 1s" in recs[1].error
    assert recs[2].raw_output.endswith("turn 1\n") and recs[2].process["restarted"] is True
    assert wait_gone(marker, 5) == []


# --- cost ---------------------------------------------------------------------------------------


async def test_a_cli_turn_costs_cost_per_action_plus_token_prices_when_given(tmp_path: Path) -> None:
    root = make_org(
        tmp_path / "o",
        {
            "flat": {"model": "echo-free", "credits": {"max_credits": 10.0, "cost_per_action": 0.5}},
            "priced": {"model": "echo-priced", "credits": {"max_credits": 1000.0, "cost_per_action": 0.5}},
        },
        models={
            "echo-free": cli_model(["echo"]),
            "echo-priced": {**cli_model(["echo"]), "prices": {"input_per_mtok": 100_000.0, "output_per_mtok": 200_000.0}},
        },
    )
    engine, events = await run_org(root, 1)
    (flat,) = turns(events, "flat")
    (priced,) = turns(events, "priced")
    assert flat.cost == pytest.approx(0.5)
    assert priced.usage.estimated is True and priced.usage.input_tokens > 0 and priced.usage.output_tokens > 0
    assert priced.cost == pytest.approx(0.5 + priced.usage.input_tokens * 0.1 + priced.usage.output_tokens * 0.2)
    assert engine.state.credits["flat"] == pytest.approx(9.5)


# --- validate -------------------------------------------------------------------------------------


def lemming(*args: Any, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_SIM_")}
    base.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    base.update(env or {})
    return subprocess.run([*LEMMING, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=base)


def test_validate_reports_unknown_providers_and_bad_cli_entries_as_file_field_message(tmp_path: Path) -> None:
    models = {
        "gem": {"provider": "gemini", "model_name": "g-1"},
        "nocmd": {"provider": "cli", "provider_config": {}},
        "missing": cli_model(["no-such-program-xyz", "--flag"]),
        "unset": cli_model(["echo"], env={"T": "${env.NOT_SET_ANYWHERE_XYZ}"}),
        "ok": cli_model(["echo"]),
    }
    root = make_org(tmp_path / "o", {"a": {"model": "ok"}}, models=models)
    r = lemming("validate", "--org", root, env={"COLUMNS": "40"})
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert "models.json: gem.provider: unknown provider 'gemini'; known: anthropic, cli, ollama, openai, sim" in lines
    assert any(line.startswith("models.json: nocmd.provider_config.command: is required") for line in lines)
    assert "models.json: missing.provider_config.command: 'no-such-program-xyz' is not found on PATH; install it or give its full path" in lines
    assert any(line.startswith("models.json: unset.provider_config.env.T: ${env.NOT_SET_ANYWHERE_XYZ} is not set") for line in lines)
    assert len(lines) == 4  # one line each, never wrapped, even at 40 columns
    # Fixed, it validates; and LeMMing's layout (lemming/config/models.json) is named by its path.
    from tests.support.lemming_layout import write_lemming_org

    lem = write_lemming_org(tmp_path / "lem")
    r = lemming("validate", "--org", lem)
    assert r.returncode == 0 and "ok: 8 agents, 10 models" in r.stdout
    cfg = lem / "lemming" / "config" / "models.json"
    data = json.loads(cfg.read_text())
    data["cli-echo"]["provider_config"]["command"] = ["echo-not-installed-xyz"]
    cfg.write_text(json.dumps(data))
    r = lemming("validate", "--org", lem)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "lemming/config/models.json: cli-echo.provider_config.command: 'echo-not-installed-xyz' is not found on PATH; install it or give its full path"
    ]


# --- whole runs, as separate processes ----------------------------------------------------------


def test_kill_9_with_a_cli_turn_in_flight_leaves_no_process_and_resumes_identically(tmp_path: Path) -> None:
    marker = f"inflight-{os.getpid()}-{time.monotonic_ns()}"
    control = tmp_path / "control"
    control.mkdir()
    # Deterministic output; when control/slow exists it says so in a file and hangs (with a
    # grandchild of its own) on tick 4: that is where the run is killed.
    tool = script(tmp_path, "tool", f"""
        import os, subprocess, sys, time
        prompt = sys.argv[-1]
        tick = prompt.split(".")[0]
        ctl = os.environ["CTL"]
        if tick == "Tick 4" and os.path.exists(os.path.join(ctl, "slow")):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{marker}-grandchild"])
            open(os.path.join(ctl, "in-flight"), "w").close()
            time.sleep(300)
        print(f"{{tick}}: {{len(prompt)}} characters")
    """)
    root = make_org(
        tmp_path / "o",
        {"tool": {"model": "tool", "reads": ["*"]}, "alice": {"reads": ["*"]}, "bob": {"reads": ["tool"], "every": 2}},
        models={"tool": cli_model([sys.executable, tool, marker], env={"CTL": str(control)}, timeout=600)},
    )
    n, seed = 8, 5
    ref_db = tmp_path / "ref.db"
    r = lemming("run", "--headless", "--org", root, "--ticks", n, "--seed", seed, "--db", ref_db, "--no-watch")
    assert r.returncode == 0, r.stderr
    (ref,) = run_ids(ref_db)
    reference = canonical_export(ref_db, ref["id"])
    assert sum('"type": "tick_completed"' in line for line in reference) == n

    (control / "slow").touch()
    db = tmp_path / "killed.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_SIM_")}
    env.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    p = subprocess.Popen(
        [*LEMMING, "run", "--headless", "--org", str(root), "--ticks", str(n), "--seed", str(seed), "--db", str(db), "--no-watch"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    deadline = time.monotonic() + 60
    while not (control / "in-flight").exists():
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        assert time.monotonic() < deadline, "the cli turn never started"
        time.sleep(0.02)
    time.sleep(0.2)
    assert len(pids_with(marker)) >= 2  # the tool and its grandchild are running
    reapers = pids_with("lemming-reaper", parent=p.pid)  # the run's own (other programs may run reapers)
    assert reapers, "the run started no reaper"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    assert wait_gone(marker, 10) == [], "a process outlived the killed run"
    deadline = time.monotonic() + 10
    while any(alive(r) for r in reapers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(r) for r in reapers)  # and the killed run's reaper itself is gone

    (info,) = run_ids(db)
    assert info["status"] == "interrupted" and info["ticks"] == 3
    (control / "slow").unlink()
    r = lemming("resume", info["id"], "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    r = lemming("inspect", "tool", "--org", root, "--db", db)
    assert "process: tool.py exit 0, " in r.stdout, r.stdout
    assert canonical_export(db, info["id"]) == reference
    tool_turns = [json.loads(line) for line in reference if '"turn_finished"' in line and '"agent": "tool"' in line]
    assert len(tool_turns) == n and all(t["record"]["process"]["exit_code"] == 0 for t in tool_turns)


def test_lemmings_published_layout_runs_20_ticks_with_sim_and_no_key(tmp_path: Path) -> None:
    from tests.support.lemming_layout import write_lemming_org

    root = write_lemming_org(tmp_path / "lem")
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "COLUMNS": "60"}
    # Without --sim and without keys, the API agents cannot run; the operator is told why.
    r = lemming("run-once", "--org", root, "--no-record", env=env)
    assert "OPENAI_API_KEY is not set; export it to run openai models" in r.stdout
    db = tmp_path / "runs.db"
    r = lemming("run", "--headless", "--sim", "--org", root, "--ticks", 20, "--db", db, "--no-watch", env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith("--sim: the sim serves 9 API model(s)") and "cli models run as they are" in out[0]
    ticks = [line for line in out if line.startswith("tick ")]
    assert len(ticks) == 20 and not any("failed" in line for line in ticks)
    (info,) = run_ids(db)
    events = [json.loads(line) for line in canonical_export(db, info["id"])]
    started = events[0]
    assert started["type"] == "run_started"
    models = started["definitions"]["models"]
    # The run record says it ran on the sim, and what each sim entry stood in for.
    assert models["gpt-4.1"]["provider"] == "sim" and models["gpt-4.1"]["simulates"] == "openai"
    assert models["claude-3-haiku"]["simulates"] == "anthropic" and models["llama3"]["simulates"] == "ollama"
    assert models["cli-echo"]["provider"] == "cli" and "simulates" not in models["cli-echo"]
    echo_turns = [e["record"] for e in events if e["type"] == "turn_finished" and e["agent"] == "echo_cli"]
    assert len(echo_turns) == 20 and all(t["status"] == "ok" and t["provider"] == "cli" for t in echo_turns)
    echo_msgs = [e["entry"] for e in events if e["type"] == "message_committed" and e["entry"]["agent"] == "echo_cli"]
    assert len(echo_msgs) == 20 and all(m["tags"] == ["cli_output"] for m in echo_msgs)
    assert echo_msgs[0]["payload"]["text"].startswith("Tick 1.")
    # A resume of a --sim run stays on the sim (keys are still not set).
    r = lemming("resume", info["id"], "--db", db, "--org", root, "--ticks", 2, env=env)
    assert r.returncode == 0 and "failed" not in r.stdout, r.stdout + r.stderr


def test_headless_output_piped_is_one_line_per_event_never_wrapped(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"a": {"model": "gpt"}, "b": {}}, models={"gpt": {"provider": "openai", "model_name": "gpt-4.1"}})
    r = lemming("run", "--headless", "--org", root, "--ticks", 3, "--no-record", "--no-watch", "--no-serve", env={"COLUMNS": "30", "OPENAI_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("        a: config: OPENAI_API_KEY is not set; export it to run openai models") == 3
    ticks = [line for line in lines if line.startswith("tick ")]
    assert len(ticks) == 3 and all(line.rstrip().endswith(line.split("total ")[1]) and "spend" in line for line in ticks)
    assert len(lines) == 7  # 3 ticks, 3 errors, the stop line: nothing wrapped onto a line of its own


async def abort_tick(engine: Engine, marker: str) -> None:
    """The operator's abort: nothing of the tick is committed, the engine pauses, and no
    process of the turn (`marker` in its command line) is left."""
    import asyncio

    engine.abort_tick()
    while not engine.paused:
        await asyncio.sleep(0.02)
    assert wait_gone(marker, 5) == []


async def test_aborting_the_tick_ends_a_cli_turn_in_flight(tmp_path: Path) -> None:
    import asyncio

    marker = f"abort-{os.getpid()}-{time.monotonic_ns()}"
    hang = script(tmp_path, "hang", """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", sys.argv[1] + "-grandchild"])
        print("working", flush=True)
        time.sleep(120)
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, hang, marker])})
    engine = Engine(load_org(root))
    task = asyncio.create_task(engine.run(ticks=3))
    deadline = time.monotonic() + 20
    while len(pids_with(marker)) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await abort_tick(engine, marker)
    assert engine.tick == 0
    engine.stop()
    await asyncio.wait_for(task, 10)


async def test_aborting_a_stateful_turn_ends_its_process_and_the_next_turn_starts_it_again(tmp_path: Path) -> None:
    import asyncio

    marker = f"stateful-abort-{os.getpid()}-{time.monotonic_ns()}"
    hangs = script(tmp_path, "hangs", """
        import json, os, sys, time
        for n, line in enumerate(sys.stdin, 1):
            if n == 2 and not os.path.exists("hung"):  # the first process hangs in its 2nd turn
                open("hung", "w").close()
                print(json.dumps({"type": "delta", "text": "thinking..."}), flush=True)
                time.sleep(120)
            print(json.dumps({"type": "end", "text": f"pid {os.getpid()} turn {n}"}), flush=True)
    """)
    root = make_org(tmp_path / "o", {"tool": {"model": "m"}}, models={"m": cli_model([sys.executable, hangs, marker], mode="stateful")})
    engine = Engine(load_org(root))
    sub = engine.subscribe(tokens=False)
    task = asyncio.create_task(engine.run(ticks=3))
    deadline = time.monotonic() + 20
    while not (Workspace.of(root, "tool").root / "hung").exists() or "tool" not in engine.thinking:
        assert time.monotonic() < deadline, "the second turn did not start"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    first_pid = pids_with(marker)
    assert len(first_pid) == 1
    await abort_tick(engine, marker)
    assert engine.tick == 1
    engine.resume()
    await asyncio.wait_for(task, 20)
    sub.close()
    recs = turns(sub.drain(), "tool")
    # The aborted turn left nothing; the next turns run on a new process, and say so.
    assert [r.status for r in recs] == ["ok", "ok", "ok"], [r.error for r in recs]
    assert [r.process["restarted"] for r in recs] == [False, True, False]
    assert recs[1].raw_output.split()[1] != recs[0].raw_output.split()[1] == str(first_pid[0])
    assert wait_gone(marker, 5) == []


def test_run_once_with_sim_runs_lemmings_layout_without_keys(tmp_path: Path) -> None:
    from tests.support.lemming_layout import write_lemming_org

    root = write_lemming_org(tmp_path / "lem")
    r = lemming("run-once", "--sim", "--org", root, "--no-record", "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    finished = {e["agent"]: e["record"] for e in events if e["type"] == "turn_finished"}
    assert finished and all(rec["status"] == "ok" for rec in finished.values())
    assert finished["echo_cli"]["provider"] == "cli" and finished["manager"]["provider"] == "sim"


async def test_a_prompt_too_long_for_an_argument_says_to_use_stdin(tmp_path: Path) -> None:
    provider = CliProvider(ProviderConfig("cli", options={"command": ["echo"]}))
    with pytest.raises(ProviderError, match='use "input": "stdin"'):
        await collect(provider, request("x" * 300_000, root=tmp_path))
    via_stdin = CliProvider(ProviderConfig("cli", options={"command": ["wc", "-c"], "input": "stdin"}))
    assert (await collect(via_stdin, request("x" * 300_000, root=tmp_path)))[0].strip() == "300000"


def test_the_kernel_ends_a_child_whose_run_is_killed_even_without_the_reaper(tmp_path: Path) -> None:
    marker = f"pdeathsig-{os.getpid()}-{time.monotonic_ns()}"
    parent = script(tmp_path, "parent", f"""
        import asyncio
        from lemming.engine import process_group
        process_group.Reaper.watch = lambda self, pgid: None  # the kernel's parent-death signal alone
        async def main():
            p = await process_group.spawn(["{sys.executable}", "-c", "import time; time.sleep(300)", "{marker}"], cwd="/", env={{"PATH": "/usr/bin:/bin"}})
            print(p.pid, flush=True)
            await asyncio.sleep(300)
        asyncio.run(main())
    """)
    p = subprocess.Popen([sys.executable, parent], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout is not None
    child = int(p.stdout.readline())
    assert child in pids_with(marker)
    p.kill()
    p.wait(timeout=10)
    assert wait_gone(marker, 5) == []


def test_a_run_killed_before_it_registers_a_child_still_has_the_childs_group_ended(tmp_path: Path) -> None:
    # The run dies after the fork but before it tells the reaper of the child (here: at
    # that very call, once the child has started a grandchild in its group). The direct
    # child dies with the run (the kernel's parent-death signal); the grandchild has no
    # such signal and is ended only because the child registered its group itself.
    marker = f"unregistered-{os.getpid()}-{time.monotonic_ns()}"
    parent = script(tmp_path, "parent", f"""
        import asyncio, os, time
        from lemming.engine import process_group
        from tests.support.processes import pids_with
        def die_before_registering(self, pgid):
            while not pids_with("{marker}"):
                time.sleep(0.01)
            os._exit(9)
        process_group.Reaper.watch = die_before_registering
        async def main():
            grandchild = "{sys.executable} -c 'import time; time.sleep(300)' {marker}"
            await process_group.spawn(["/bin/sh", "-c", grandchild + " & wait"], cwd="/", env={{"PATH": "/usr/bin:/bin"}})
        asyncio.run(main())
    """)
    p = subprocess.run([sys.executable, parent], env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert p.returncode == 9
    assert wait_gone(marker, 2 * process_group.KILL_GRACE + 5) == []


async def test_ending_a_group_does_not_wait_for_a_process_that_left_it_holding_the_pipe(tmp_path: Path) -> None:
    # The child ignores SIGTERM (so the SIGKILL path is taken), and a process it started
    # in a session of its own keeps its stdout open: the group's end must not wait for
    # that pipe (asyncio's proc.wait() does, before Python 3.12), only for the child.
    import asyncio

    marker = f"{20 + (time.monotonic_ns() % 997) / 1000:.3f}"  # a sleep no one else runs
    proc = await process_group.spawn(
        ["/bin/sh", "-c", f"trap '' TERM; setsid sleep {marker} & sleep {marker}"], cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin"}
    )
    try:
        for _ in range(500):  # the shell and both sleeps are there: the trap is set
            if len(pids_with(marker)) >= 3:
                break
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        assert await asyncio.wait_for(process_group.end_group(proc, grace=0.3), 10) is True
        assert time.monotonic() - t0 < 5 and proc.returncode is not None
    finally:
        for pid in pids_with(marker):
            os.kill(pid, signal.SIGKILL)
        process_group.release(proc)


async def test_a_string_command_a_relative_cwd_and_an_unset_reference(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "o"
    (root / "projects" / "app").mkdir(parents=True)
    make_org(
        root,
        {"tool": {"model": "where"}, "other": {"model": "needs_token"}},
        models={
            "where": cli_model(f"{sys.executable} -c 'import os; print(os.getcwd())'", cwd="projects/app"),
            "needs_token": cli_model(["echo"], env={"T": "${env.CLI_TEST_TOKEN_XYZ}"}),
        },
    )
    monkeypatch.setenv("CLI_TEST_TOKEN_XYZ", "present at load")
    org = load_org(root)  # validates: the variable is set now
    monkeypatch.delenv("CLI_TEST_TOKEN_XYZ")
    engine = Engine(org)
    sub = engine.subscribe()
    await engine.run(ticks=1)
    events = sub.drain()
    (where,) = turns(events, "tool")
    assert Path(where.raw_output.strip()).resolve() == (root / "projects" / "app").resolve()
    (other,) = turns(events, "other")  # unset since: a config error on the turn, the run goes on
    assert other.status == "provider" and "config: provider_config.env: ${env.CLI_TEST_TOKEN_XYZ} is not set" in other.error

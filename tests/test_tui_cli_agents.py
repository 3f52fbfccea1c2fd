"""A command-line agent in the control room, driven as an operator would: its stdout
streams into the token stream while the program still runs, the inspector shows how its
process ended, and a `--sim` run says SIM in the header."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path


from textual.widgets import Static

from lemming.engine.recorded_run import RunSettings, build_engine
from lemming.tui.app import ControlRoom
from tests.conftest import make_org
from tests.support.app_driver import wait_for

SIZE = (110, 30)


def org_with_builder(tmp_path: Path) -> Path:
    builder = tmp_path / "builder.py"
    builder.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            print("step 1 of 2", flush=True)
            # Step 2 waits for the test's go-ahead: the first line must be on screen while
            # the program provably still runs, however slowly the machine answers.
            deadline = time.monotonic() + 30
            while not os.path.exists("GO") and time.monotonic() < deadline:
                time.sleep(0.02)
            print("warning: slow disk", file=sys.stderr, flush=True)
            print("step 2 of 2", flush=True)
            """
        ),
        encoding="utf-8",
    )
    return make_org(
        tmp_path / "o",
        {"aaa_builder": {"model": "builder"}, "bob": {"model": "gpt", "reads": ["aaa_builder"]}},
        models={
            "builder": {"provider": "cli", "provider_config": {"command": [sys.executable, str(builder)]}},
            "gpt": {"provider": "openai", "model_name": "gpt-4.1"},  # no key: served by the sim under --sim
        },
    )


async def test_cli_output_streams_live_and_the_inspector_shows_its_process(tmp_path: Path) -> None:
    org = org_with_builder(tmp_path)
    engine = build_engine(org, RunSettings(sim_only=True, paused=True, seed=1))
    app = ControlRoom(engine, config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False, pump_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert " SIM " in app.main.status.render().plain
        await pilot.press("n")  # one tick
        # The first line is on screen while the program is still running (it waits for GO).
        await wait_for(
            pilot,
            lambda: "step 1 of 2" in app.view.agents["aaa_builder"].stream_text,
            what="the first line, streamed while the program runs",
        )
        assert "aaa_builder" in engine.thinking
        assert "step 2 of 2" not in app.view.agents["aaa_builder"].stream_text
        (org / "agents" / "aaa_builder" / "workspace" / "GO").touch()  # its cwd: the agent's workspace
        await wait_for(pilot, lambda: engine.tick >= 1 and app.view.committed_tick >= 1, what="the tick")
        rec = engine.state.last_turn["aaa_builder"]
        assert rec.status == "ok" and rec.raw_output == "step 1 of 2\nstep 2 of 2\n"
        assert engine.state.last_turn["bob"].status == "ok" and engine.state.last_turn["bob"].provider == "sim"
        await pilot.press("enter")  # the inspector on aaa_builder's turn
        await pilot.pause()
        assert type(app.screen).__name__ == "InspectorScreen"
        summary = str(app.screen.query_one("#summary-body", Static).render())
        assert "builder.py (per turn) · exit code 0" in summary
        assert "stdout      24 bytes" in summary
        assert "warning: slow disk" in summary

"""Loading organisations: LeMMing's format unchanged, and every validation error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemming.engine.org import OrgInvalid, load_org
from tests.conftest import REPO, make_org, write_resume


def test_lemming_format_loads_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "lem"
    (root / "lemming" / "config").mkdir(parents=True)
    (root / "agents").mkdir()
    # Exactly LeMMing's published shapes: object model, legacy send_outboxes, "*" readers.
    manager = {
        "name": "manager",
        "title": "Organization manager",
        "short_description": "Coordinates.",
        "workflow_description": "",
        "model": {"key": "gpt-4.1-mini", "temperature": 0.2, "max_tokens": 2048},
        "permissions": {"read_outboxes": ["planner"], "tools": ["memory_read", "memory_write"]},
        "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
        "instructions": "You are the Manager.",
    }
    planner = {**manager, "name": "planner", "model": "gpt-4.1-mini", "schedule": {"run_every_n_ticks": 2, "phase_offset": -1}}
    human = {
        "name": "human", "title": "Human Operator", "short_description": "Human-in-the-loop",
        "workflow_description": "Receives agent messages", "instructions": "You are the human operator interface.",
        "model": {"key": "none", "temperature": 0},
        "permissions": {"read_outboxes": ["*"], "send_outboxes": ["*"], "tools": []},
        "schedule": {"run_every_n_ticks": 999999, "phase_offset": 0},
        "credits": {"max_credits": 999999, "soft_cap": 999999},
    }
    for d in (manager, planner, human):
        (root / "agents" / d["name"]).mkdir()
        (root / "agents" / d["name"] / "resume.json").write_text(json.dumps(d))
    # Skipped: the template and hidden folders.
    (root / "agents" / "agent_template").mkdir()
    (root / "agents" / "agent_template" / "resume.json").write_text("{ not even json")
    (root / "agents" / ".cache").mkdir()
    (root / "lemming" / "config" / "models.json").write_text(
        json.dumps({"gpt-4.1-mini": {"provider": "openai", "model_name": "gpt-4.1-mini"}})
    )
    (root / "lemming" / "config" / "credits.json").write_text(
        json.dumps({"manager": {"model": "gpt-4.1-mini", "cost_per_action": 0.01, "credits_left": 100.0},
                    "planner": {"model": "gpt-4.1-mini", "cost_per_action": 0.02, "credits_left": 50.0}})
    )
    org = load_org(root)
    assert sorted(org.agents) == ["human", "manager", "planner"]
    m = org.agents["manager"]
    assert m.resume.model.key == "gpt-4.1-mini" and m.resume.model.max_tokens == 2048
    assert org.agents["planner"].resume.model.key == "gpt-4.1-mini"  # string form
    assert m.budget.initial == 100.0 and m.budget.cost_per_action == 0.01
    assert org.agents["planner"].budget.cost_per_action == 0.02
    assert org.agents["human"].resume.calls_model is False
    assert org.readable_by("human") == ["manager", "planner"]  # "*" expands
    assert org.readers_of("planner") == ["human", "manager"]
    assert org.agents["human"].resume.permissions.model_extra == {"send_outboxes": ["*"]}


def test_demo_organisation_is_valid() -> None:
    org = load_org(REPO)
    assert len(org.agents) >= 6
    reads_everyone = [n for n, a in org.agents.items() if "*" in a.resume.permissions.read_outboxes]
    assert len(reads_everyone) < len(org.agents)  # a real graph, not a clique
    periods = {a.resume.schedule.run_every_n_ticks for a in org.agents.values()}
    assert len(periods) >= 3


def _problems(root: Path) -> list[str]:
    with pytest.raises(OrgInvalid) as e:
        load_org(root)
    return e.value.problems


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{ broken", "agents/bad/resume.json: line 1 column 3: invalid JSON"),
        ("[1, 2]", "agents/bad/resume.json: (root): must be a JSON object"),
        (json.dumps({"name": "bad", "model": 5}), "agents/bad/resume.json: model"),
        (json.dumps({"name": "bad"}), "agents/bad/resume.json: model: is required"),
        (json.dumps({"name": "bad", "model": "sim", "schedule": {"run_every_n_ticks": 0}}),
         "agents/bad/resume.json: schedule.run_every_n_ticks: Input should be greater than or equal to 1"),
        (json.dumps({"name": "bad", "model": "sim", "schedule": {"run_every_n_ticks": "often"}}),
         "agents/bad/resume.json: schedule.run_every_n_ticks"),
        (json.dumps({"name": "other", "model": "sim"}), "agents/bad/resume.json: name: is 'other' but the folder is 'bad'"),
        (json.dumps({"name": "bad", "model": "gpt-9"}), "agents/bad/resume.json: model.key: unknown model 'gpt-9'"),
        (json.dumps({"name": "bad", "model": "sim", "permissions": {"read_outboxes": ["../etc"]}}),
         "agents/bad/resume.json: permissions.read_outboxes"),
        (json.dumps({"name": "bad", "model": {"key": "sim", "temperature": "hot"}}), "agents/bad/resume.json: model.temperature"),
        (json.dumps({"name": "bad", "model": "sim", "credits": {"max_credits": -1}}), "agents/bad/resume.json: credits.max_credits"),
        ('{"name": "bad", "model": "sim", "credits": {"max_credits": NaN}}', "agents/bad/resume.json: (file): invalid JSON: NaN"),
    ],
)
def test_each_validation_error_names_file_field_and_problem(tmp_path: Path, content: str, expected: str) -> None:
    root = make_org(tmp_path / "o", {"good": {}})
    (root / "agents" / "bad").mkdir()
    (root / "agents" / "bad" / "resume.json").write_text(content)
    problems = _problems(root)
    assert any(p.startswith(expected) for p in problems), problems
    # The good agent still loads when the org is loaded leniently (hot reload does this).
    assert list(load_org(root, strict=False).agents) == ["good"]


def test_one_bad_agent_does_not_hide_the_others_errors(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"a": {}})
    for name in ("b", "c"):
        (root / "agents" / name).mkdir()
    (root / "agents" / "b" / "resume.json").write_text("{")
    (root / "agents" / "c" / "resume.json").write_text(json.dumps({"name": "c", "model": "nope"}))
    (root / "agents" / "d").mkdir()  # no resume at all
    problems = _problems(root)
    files = {p.split(":")[0] for p in problems}
    assert files == {"agents/b/resume.json", "agents/c/resume.json", "agents/d/resume.json"}


def test_one_file_lists_its_unknown_model_beside_its_schema_errors(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"a": {}})
    (root / "agents" / "b").mkdir()
    bad = {"name": "b", "model": {"key": "gpt-99"}, "schedule": {"run_every_n_ticks": "often"}}
    (root / "agents" / "b" / "resume.json").write_text(json.dumps(bad))
    problems = _problems(root)
    assert [p.split(": ")[1] for p in problems] == ["schedule.run_every_n_ticks", "model.key"], problems


def test_tools_and_outboxes_that_do_not_exist_are_warned_of(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"a": {"reads": ["b", "enginer", "*"]}, "b": {}})
    write_resume(root, "a", reads=["b", "enginer", "*"], tools=["file_read", "file_reed"])
    org = load_org(root)
    assert org.warnings == [
        "agents/a/resume.json: permissions.tools: 'file_reed' is not a tool this engine provides "
        "(memory_read, memory_write, file_read, file_write, file_list, shell, create_agent, list_agents, clock); "
        "calling it returns an error",
        "agents/a/resume.json: permissions.read_outboxes: 'enginer' is no agent here; it is read once such an agent joins",
    ]


def test_a_broken_org_json_is_one_problem_not_one_more_per_mcp_grant(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"a": {"tools": ["time/*"]}})
    (root / "org.json").write_text('{"mcp_servers": {"time": {"command": "x"}},')
    problems = _problems(root)
    assert len(problems) == 1 and problems[0].startswith("org.json: "), problems


def test_models_and_credits_file_errors(tmp_path: Path) -> None:
    root = make_org(
        tmp_path / "o",
        {"a": {}},
        models={
            "m": {"provider": "openai"},
            "k": {"provider": "openai", "model_name": "x", "provider_config": {"api_key": "sk-leak"}},
            "top": {"provider": "openai", "model_name": "x", "api_key": "sk-leak-top"},
            "bearer": {"provider": "openai", "model_name": "x", "Authorization": "Bearer sk-leak-auth"},
        },
        credits={"a": {"cost_per_action": "lots"}},
    )
    problems = _problems(root)
    assert "models.json: m.model_name: is required" in problems
    assert "models.json: k.provider_config: 'api_key' holds a key: API keys do not belong in models.json; name an environment variable with api_key_env" in problems
    # Beside the known fields too (an entry keeps the fields it does not know, and they
    # would be recorded with the definitions).
    assert any(p.startswith("models.json: top: 'api_key' holds a key: API keys do not belong") for p in problems), problems
    assert any(p.startswith("models.json: bearer: 'Authorization' holds a key") for p in problems), problems
    assert not any("sk-leak" in p for p in problems)
    assert any(p.startswith("credits.json: a.cost_per_action") for p in problems)


def test_no_agents_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(OrgInvalid) as e:
        load_org(tmp_path)
    assert "lemming bootstrap" in e.value.problems[0]


def test_budget_sources_merge(tmp_path: Path) -> None:
    root = make_org(
        tmp_path / "o",
        {"a": {"credits": {"max_credits": 3.0, "soft_cap": 1.0}}, "b": {}, "c": {}},
        credits={"b": {"cost_per_action": 0.5, "credits_left": 7.0}, "ghost": {"credits_left": 1}},
    )
    org = load_org(root)
    assert (org.agents["a"].budget.initial, org.agents["a"].budget.soft_cap) == (3.0, 1.0)
    assert (org.agents["b"].budget.initial, org.agents["b"].budget.cost_per_action) == (7.0, 0.5)
    assert org.agents["c"].budget.initial == org.settings.default_credits
    assert any("ghost" in w for w in org.warnings)


def test_reserved_and_hostile_names_are_rejected(tmp_path: Path) -> None:
    root = make_org(tmp_path / "o", {"ok": {}})
    write_resume(root, "operator")
    problems = _problems(root)
    assert any("agents/operator/resume.json: name: 'operator' is reserved" in p for p in problems)

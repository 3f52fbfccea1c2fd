"""Hostile input, generated: organisation files, models.json, LLM replies, injected
messages and memory updates. Nothing crashes or hangs; every rejection is one line
naming the file (or the turn) and the field; whatever is accepted can be recorded.

The default suite runs a cheap number of cases; `make test-faults` runs 10,000 of each.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lemming.engine.engine import Engine
from lemming.engine.events import CommandApplied, CommandRejected, MemoryChanged, MessageCommitted, TurnFinished
from lemming.engine.memory import KEY_RE, MAX_KEYS, MAX_VALUE_CHARS, apply_update
from lemming.engine.org import Org, OrgInvalid, load_org
from lemming.engine.prompt import ContractViolation, parse_reply
from lemming.engine.providers.retry import RetryPolicy
from lemming.engine.resume import AGENT_NAME_RE, RESERVED_NAMES
from tests.support import faults as fs
from tests.support import scripted_provider as sp
from tests.support.faults import FAST, assert_one_line, assert_storable, slow

FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, max_retry_after=0.01)

# --- organisation files ---------------------------------------------------------------

GOOD_NAMES = ["alice", "bob", "carol", "d-1", "e.f", "G_7"]


def _valid_folder_name(name: str) -> bool:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        return False
    try:
        return len(os.fsencode(name)) <= 255
    except UnicodeEncodeError:
        return False


folder_names = st.one_of(st.sampled_from(GOOD_NAMES), fs.hostile_text.filter(_valid_folder_name), st.just("\udcff\udcfe"))

RESUME_PATHS: list[tuple] = [
    ("name",), ("title",), ("short_description",), ("instructions",), ("workflow_description",),
    ("model",), ("model", "key"), ("model", "temperature"), ("model", "max_tokens"),
    ("permissions",), ("permissions", "read_outboxes"), ("permissions", "read_outboxes", 0),
    ("permissions", "tools"), ("permissions", "tools", 0), ("permissions", "send_outboxes"),
    ("schedule",), ("schedule", "run_every_n_ticks"), ("schedule", "phase_offset"),
    ("credits",), ("credits", "max_credits"), ("credits", "soft_cap"), ("credits", "cost_per_action"),
    ("extra",), ("extra", "nested"),
]

mutation_value = st.one_of(fs.json_value, fs.hostile_text, fs.hostile_number, fs.deep_marker, fs.huge_text)


@st.composite
def mutated(draw, base: dict[str, Any], paths: list[tuple]) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(paths))
        if draw(st.integers(0, 4)) == 0:
            fs.del_path(doc, path)
        else:
            fs.set_path(doc, path, draw(mutation_value))
    return doc


@st.composite
def resume_file(draw, folder: str, model_keys: list[str]) -> tuple | None:
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return None  # no resume.json in the folder
    if shape == 1:
        return ("raw", draw(st.binary(max_size=64)))
    if shape == 2:
        return ("doc", draw(fs.json_value), draw(fs.serial_choices))
    name = folder if draw(st.integers(0, 5)) else draw(folder_names)
    base: dict[str, Any] = {
        "name": name,
        "title": "T",
        "short_description": "",
        "workflow_description": "",
        "model": draw(st.sampled_from(model_keys)),
        "permissions": {"read_outboxes": draw(st.lists(st.sampled_from(GOOD_NAMES + ["*"]), max_size=3)), "tools": []},
        "schedule": {"run_every_n_ticks": draw(st.integers(1, 3)), "phase_offset": draw(st.integers(-2, 2))},
        "instructions": "Work.",
    }
    if draw(st.booleans()):
        base["model"] = {"key": base["model"], "temperature": 0.2, "max_tokens": 256}
    if draw(st.booleans()):
        base["credits"] = {"max_credits": 10.0, "soft_cap": 2.0}
    if shape == 3:
        del base["name"]
    doc = draw(mutated(base, RESUME_PATHS))
    choices = draw(fs.serial_choices) if draw(st.integers(0, 3)) == 0 else {}
    return ("doc", doc, choices)


MODEL_PATHS: list[tuple] = [
    ("provider",), ("model_name",), ("base_url",), ("api_key_env",), ("prices",),
    ("prices", "input_per_mtok"), ("prices", "output_per_mtok"), ("prices", "extra"),
    ("context_window",), ("max_output_tokens",), ("concurrency",), ("timeout",), ("max_attempts",),
    ("provider_config",), ("provider_config", "api_key"), ("provider_config", "base_url"),
    ("provider_config", "tokens_per_s"), ("provider_config", "latency_ms"), ("provider_config", "malformed_rate"),
    ("provider_config", "api_key_env"),
]


@st.composite
def models_file(draw) -> tuple[tuple, list[str]]:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return ("doc", draw(fs.json_value), draw(fs.serial_choices)), ["sim"]
    keys = draw(st.lists(st.one_of(st.sampled_from(["m1", "m2", "sim", "_comment"]), fs.hostile_text), min_size=1, max_size=3, unique=True))
    doc: dict[str, Any] = {}
    for k in keys:
        base = {"provider": draw(st.sampled_from(["sim", "sim", "sim", "openai", "nope"])), "model_name": "m", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
        doc[k] = draw(mutated(base, MODEL_PATHS))
    choices = draw(fs.serial_choices) if draw(st.integers(0, 3)) == 0 else {}
    return ("doc", doc, choices), keys + ["sim", "none"]


credits_file = st.builds(
    lambda names, entries, choices: ("doc", dict(zip(names, entries)), choices),
    st.lists(st.one_of(st.sampled_from(GOOD_NAMES), fs.hostile_text), max_size=3),
    st.lists(
        st.one_of(
            fs.json_value,
            st.fixed_dictionaries({}, optional={k: st.one_of(fs.hostile_number, fs.hostile_text) for k in ("credits_left", "max_credits", "soft_cap", "cost_per_action", "model")}),
        ),
        max_size=3,
    ),
    st.one_of(st.just({}), fs.serial_choices),
)

org_json_file = st.builds(
    lambda doc, choices: ("doc", doc, choices),
    st.one_of(
        fs.json_value,
        st.fixed_dictionaries({}, optional={k: st.one_of(fs.hostile_number, fs.hostile_text, fs.deep_marker) for k in ("name", "default_credits", "inbox_new_limit", "inbox_context", "max_concurrency")}),
    ),
    st.one_of(st.just({}), fs.serial_choices),
)


@st.composite
def org_tree(draw, hostile_models: bool) -> dict[str, tuple | None]:
    """{relative path: ("doc", document, serialisation) or ("raw", bytes); None = a folder
    without its file}. Documents are serialised when written (see fs.BIG)."""
    files: dict[str, tuple | None] = {}
    model_keys = ["sim", "none"]
    if hostile_models or draw(st.integers(0, 4)) == 0:
        data, model_keys = draw(models_file())
        files["models.json"] = data
    model_keys = model_keys + [draw(fs.hostile_text)]
    folders = draw(st.lists(folder_names, min_size=0 if not hostile_models else 1, max_size=4, unique=True))
    for folder in folders:
        files[f"agents/{folder}/resume.json"] = draw(resume_file(folder, model_keys))
    if draw(st.integers(0, 3)) == 0:
        files["credits.json"] = draw(credits_file)
    if draw(st.integers(0, 5)) == 0:
        files["org.json"] = draw(org_json_file)
    return files


_dirs: fs.ScratchDirs | None = None


def _scratch() -> fs.ScratchDirs:
    global _dirs
    if _dirs is None:
        _dirs = fs.ScratchDirs("org")
    return _dirs


def _write_tree(root: Path, files: dict[str, tuple | None]) -> None:
    (root / "agents").mkdir()
    for rel, recipe in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if recipe is not None:
            data = recipe[1] if recipe[0] == "raw" else fs.serialise(recipe[1], recipe[2])
            path.write_bytes(data)


PROBLEM_RE = re.compile(r"""^(?P<file>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|.+?): (?P<field>[^ ].*?): (?P<msg>.+)$""")


def check_problem(problem: str, root: Path) -> None:
    import ast

    assert_one_line(problem, "problem")
    m = PROBLEM_RE.match(problem)
    assert m, f"not `file: field: message`: {problem!r}"
    file = m.group("file")
    if file[0] in "'\"":  # an odd path, quoted
        file = ast.literal_eval(file)
    assert file.endswith(".json") or file in ("agents", str(root)), f"does not start with a file: {problem!r}"


def _run_engine(org: Org) -> None:
    """Whatever loads must run: two ticks on the sim, every event recordable."""
    sims = {k for k, m in {**org.models}.items()}
    for a in org.agents.values():
        key = a.resume.model.key
        spec = org.models.get(key)
        if spec is not None and spec.provider != "sim":
            return  # a real provider would go to the network; the adapters have their own tests
    del sims

    async def go() -> list:
        engine = Engine(org, seed=1, retry_policy=FAST_RETRY)
        sub = engine.subscribe(tokens=False)
        reason = await asyncio.wait_for(engine.run(ticks=2), 30)
        assert reason == "completed", reason
        return sub.drain()

    with fs.EnvPatch(fs.fast_sim_env()):
        events = asyncio.run(go())
    for ev in events:
        assert_storable(ev.to_dict(), type(ev).__name__)
        if isinstance(ev, TurnFinished):
            rec = ev.record
            assert rec.status != "internal", rec.error
            if rec.error:
                assert_one_line(rec.error, "turn error")


def check_org_tree(files: dict[str, tuple | None], run: bool = True) -> None:
    dirs = _scratch()
    root = dirs.new()
    try:
        _write_tree(root, files)
        try:
            org = load_org(root)
        except OrgInvalid as e:
            assert e.problems, "OrgInvalid without problems"
            for p in e.problems:
                check_problem(p, root)
            # Lenient loading (hot reload) agrees, and keeps only valid agents.
            org = load_org(root, strict=False)
            assert org.problems
        for w in org.warnings:
            check_problem(w, root)
        for name, a in org.agents.items():
            assert AGENT_NAME_RE.fullmatch(name) and name.lower() not in RESERVED_NAMES, repr(name)
            assert a.path == f"agents/{name}/resume.json"
            assert (root / a.path).resolve().is_relative_to(root.resolve())
            for r in a.resume.permissions.read_outboxes:
                assert r == "*" or AGENT_NAME_RE.fullmatch(r), repr(r)
        assert_storable(org.definitions(), "definitions")
        if run and org.agents and not org.problems:
            _run_engine(org)
    finally:
        dirs.drop(root)


@FAST
@given(org_tree(hostile_models=False))
def test_generated_resume_files_load_or_fail_with_one_line_problems(files) -> None:
    check_org_tree(files)


@slow
@given(org_tree(hostile_models=False))
def test_generated_resume_files_10k(files) -> None:
    check_org_tree(files)


@FAST
@given(org_tree(hostile_models=True))
def test_generated_models_files_load_or_fail_with_one_line_problems(files) -> None:
    check_org_tree(files)


@slow
@given(org_tree(hostile_models=True))
def test_generated_models_files_10k(files) -> None:
    check_org_tree(files)


@pytest.mark.parametrize(
    "folder, content, needle",
    [
        ("alice\n", {"model": "sim"}, "'agents/alice\\n/resume.json': name:"),
        ("alice", {"name": "alice\n", "model": "sim"}, "name:"),
        ("\udcff", {"model": "sim"}, "'agents/\\udcff/resume.json': name:"),
        (": ", {"model": "sim"}, "'agents/: /resume.json': name:"),
        ("operator", {"model": "sim"}, "'operator' is reserved"),
        ("alice", {"name": "alice", "model": "sim", "x": "__DEEP__"}, "nested deeper than"),
        ("alice", {"name": "alice", "model": "sim", "x": "__INF__"}, "out of range"),
        ("alice", {"name": "alice", "model": "sim", "instructions": "__SURROGATE__"}, "unpaired surrogate"),
        ("alice", {"name": "alice", "model": "sim", "permissions": {"read_outboxes": ["bob\n"]}}, "permissions.read_outboxes"),
    ],
)
def test_hostile_resume_examples(tmp_path: Path, folder: str, content: dict, needle: str) -> None:
    """The defects the generator found, kept as plain examples."""
    text = json.dumps(content)
    text = text.replace('"__DEEP__"', fs.deep_text(500, "list")).replace('"__INF__"', "1e999").replace("__SURROGATE__", "\\ud800")
    path = tmp_path / "agents" / folder / "resume.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(OrgInvalid) as e:
        load_org(tmp_path)
    for p in e.value.problems:
        check_problem(p, tmp_path)
    assert any(needle in p for p in e.value.problems), e.value.problems


def test_hostile_models_json_key_is_shown_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "agents" / "a").mkdir(parents=True)
    (tmp_path / "agents" / "a" / "resume.json").write_text(json.dumps({"name": "a", "model": "sim"}))
    (tmp_path / "models.json").write_text(json.dumps({"evil\nkey": {"provider": 3}, "x" * 10_000: {}}))
    with pytest.raises(OrgInvalid) as e:
        load_org(tmp_path)
    assert len(e.value.problems) >= 3
    for p in e.value.problems:
        check_problem(p, tmp_path)
    assert any(p.startswith("models.json: 'evil\\nkey'.provider:") for p in e.value.problems), e.value.problems


def test_a_huge_unknown_provider_name_is_shown_bounded(tmp_path: Path) -> None:
    """The generator's find: a 20,000-character provider name made a 20,000-character problem."""
    (tmp_path / "agents" / "a").mkdir(parents=True)
    (tmp_path / "agents" / "a" / "resume.json").write_text(json.dumps({"name": "a", "model": "m"}))
    (tmp_path / "models.json").write_text(json.dumps({"m": {"provider": "p" * 20_000, "model_name": "x"}}))
    with pytest.raises(OrgInvalid) as e:
        load_org(tmp_path)
    for p in e.value.problems:
        check_problem(p, tmp_path)
    assert any("unknown provider 'ppp" in p and "...; known:" in p for p in e.value.problems), e.value.problems


def test_bad_sim_options_are_a_config_error_not_an_internal_one(tmp_path: Path) -> None:
    (tmp_path / "agents" / "a").mkdir(parents=True)
    (tmp_path / "agents" / "a" / "resume.json").write_text(json.dumps({"name": "a", "model": "odd"}))
    (tmp_path / "models.json").write_text(
        json.dumps({"odd": {"provider": "sim", "model_name": "s", "provider_config": {"malformed_rate": "lots", "tokens_per_s": [1]}}})
    )
    org = load_org(tmp_path)
    engine = Engine(org)
    assert asyncio.run(engine.run(ticks=1)) == "completed"
    rec = engine.state.last_turn["a"]
    assert rec.status == "config", rec.error
    assert "sim provider_config." in rec.error
    assert_one_line(rec.error)


# --- LLM replies ----------------------------------------------------------------------

AGENTS = ["alpha", "beta", "gamma"]

claimed = st.fixed_dictionaries(
    {},
    optional={
        "agent": st.sampled_from(["beta", "operator", "gamma", "engine", "../beta"]),
        "from": st.sampled_from(["beta", "operator"]),
        "author": st.sampled_from(["beta", "operator"]),
        "id": st.sampled_from(["beta-1-0", "operator-0-0", "alpha-1-0"]),
        "tick": fs.hostile_number,
        "meta": st.just({"seq": -1, "author": "operator"}),
        "created_at": fs.hostile_number,
    },
)

recipient = st.one_of(st.sampled_from(AGENTS + ["operator", "all", "*", "none", "ghost", "../beta", "/beta", "beta\n", ""]), fs.hostile_text)

#: Past the payload limit, as long as a model's reply can be (a few megabytes at most).
huge_reply_text = fs.big(["x", "é", "\n"], [20_001, 60_000])
small_entry = st.fixed_dictionaries(
    {"payload": st.builds(lambda t: {"text": t}, fs.hostile_text), "recipients": st.lists(recipient, max_size=2)}
)

reply_entry = st.one_of(
    st.builds(
        lambda kind, payload, tags, recips, claim: {"kind": kind, "payload": payload, "tags": tags, "recipients": recips, **claim},
        st.one_of(st.just("message"), fs.hostile_text),
        st.one_of(st.builds(lambda t: {"text": t}, st.one_of(fs.hostile_text, huge_reply_text)), fs.json_value, fs.deep_marker),
        st.one_of(st.lists(fs.hostile_text, max_size=3), fs.json_value),
        st.one_of(st.lists(recipient, max_size=4), fs.json_value),
        claimed,
    ),
    st.builds(lambda to, content: {"to": to, "content": content}, st.one_of(recipient, st.lists(recipient, max_size=3), fs.json_value), fs.json_value),
    fs.json_value,
)

memory_update = st.one_of(
    st.builds(
        lambda op, key, value: {"op": op, "key": key, "value": value},
        st.one_of(st.sampled_from(["set", "append", "merge", "delete"]), fs.hostile_text),
        st.one_of(st.sampled_from(["k", "notes", "todo", "a.b:c-d_e"]), fs.hostile_text, fs.json_value),
        st.one_of(fs.json_value, fs.deep_marker),
    ),
    fs.json_value,
)

reply_doc = st.fixed_dictionaries(
    {},
    optional={
        "outbox_entries": st.one_of(st.lists(reply_entry, max_size=5), fs.json_value, st.builds(lambda e, n: [e] * n, small_entry, st.sampled_from([21, 200]))),
        "messages": st.lists(reply_entry, max_size=3),
        "memory_updates": st.one_of(st.lists(memory_update, max_size=5), fs.json_value),
        "tool_calls": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"tool": fs.hostile_text, "args": fs.json_value}), fs.json_value), max_size=3), fs.json_value),
        "notes": st.one_of(fs.hostile_text, fs.json_value, fs.deep_marker, huge_reply_text),
        "agent": st.sampled_from(["beta", "operator"]),
        "from": st.sampled_from(["beta", "operator"]),
        "name": st.sampled_from(["beta", "operator"]),
    },
)


@st.composite
def raw_reply(draw) -> tuple:
    """A reply's recipe (made into text by `reply_text` inside the test: see fs.BIG)."""
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return ("text", draw(st.one_of(fs.hostile_text, st.text(max_size=200))))
    doc = draw(st.one_of(reply_doc, fs.json_value)) if shape == 1 else draw(reply_doc)
    choices = draw(fs.serial_choices) if shape == 2 else {"ascii": draw(st.booleans())}
    return ("doc", doc, choices, draw(st.sampled_from(["", "", "fence", "prose", "trailing", "both"])))


def reply_text(recipe: tuple) -> str:
    if recipe[0] == "text":
        return fs.expand(recipe[1])
    _, doc, choices, wrap = recipe
    text = fs.serialise(doc, choices).decode("utf-8", "surrogateescape")
    if wrap == "fence":
        text = f"```json\n{text}\n```"
    elif wrap == "prose":
        text = f"Sure! Here is my reply:\n{text}\nHope that helps."
    elif wrap == "trailing":
        text = text.replace("]", ",]").replace("}", ",}")
    elif wrap == "both":
        text = f"Here:\n```\n{text.replace('}', ',}')}\n```"
    return text


def check_parse(raw: str | tuple) -> None:
    if isinstance(raw, tuple):
        raw = reply_text(raw)
    try:
        reply = parse_reply(raw)
    except ContractViolation as e:
        assert_one_line(str(e), "contract violation")
        return
    for v in reply.violations:
        assert_one_line(v, "violation")
        assert re.match(r"^(outbox_entries|memory_updates|tool_calls)(\[\d+\])?[.:\[]", v), v
    assert len(reply.entries) <= 20 and len(reply.tool_calls) <= 10
    assert_storable(reply.to_dict(), "parsed reply")
    assert len(reply.notes) <= 2000


@FAST
@given(raw_reply())
def test_generated_replies_parse_or_are_contract_violations(raw: tuple) -> None:
    check_parse(raw)


@slow
@given(raw_reply())
def test_generated_replies_10k(raw: tuple) -> None:
    check_parse(raw)


_replies: dict[str, Any] = {}


def _ensure_scripted() -> None:
    from lemming.engine.providers import registry

    registry.ADAPTERS["scripted"] = ("tests.support.scripted_provider", "ScriptedProvider")


_reply_org: Org | None = None


def _reply_org_once() -> Org:
    global _reply_org
    if _reply_org is None:
        root = _scratch().new()
        from tests.conftest import make_org

        make_org(
            root,
            {
                "alpha": {"model": "scripted", "reads": ["beta"], "tools": ["clock", "memory_read"]},
                "beta": {"model": "scripted", "reads": ["alpha"]},
                "gamma": {"model": "scripted", "reads": []},
            },
            models=sp.SCRIPTED_MODELS,
        )
        _reply_org = load_org(root)
    return _reply_org


def check_reply_through_engine(raw: str | tuple) -> None:
    """One tick where alpha replies `raw`: whatever it claims, alpha's reply lands only
    in alpha's outbox and alpha's memory, as alpha."""
    if isinstance(raw, tuple):
        raw = reply_text(raw)
    _ensure_scripted()
    sp.SEEN.clear()
    sp.DELAYS.clear()
    sp.REPLIES.clear()
    sp.REPLIES["alpha"] = raw
    sp.REPLIES["beta"] = {"outbox_entries": [], "notes": ""}
    sp.REPLIES["gamma"] = {"outbox_entries": [], "notes": ""}
    org = _reply_org_once()

    async def go() -> list:
        engine = Engine(org, seed=3, retry_policy=FAST_RETRY)
        sub = engine.subscribe(tokens=False)
        assert await asyncio.wait_for(engine.run(ticks=1), 30) == "completed"
        return sub.drain()

    events = asyncio.run(go())
    turns = {ev.agent: ev.record for ev in events if isinstance(ev, TurnFinished)}
    rec = turns["alpha"]
    if len(raw) > FAST_RETRY.reply_cap(rec.max_tokens):  # past the runaway guard: cut off
        assert rec.status == "provider" and "too_long" in rec.error, (rec.status, rec.error)
        assert not any(isinstance(ev, (MessageCommitted, MemoryChanged)) for ev in events)
    else:
        assert rec.status in ("ok", "contract"), (rec.status, rec.error)
    if rec.error:
        assert_one_line(rec.error, "turn error")
    for v in rec.violations:
        assert_one_line(v, "violation")
    for ev in events:
        assert_storable(ev.to_dict(), type(ev).__name__)
        if isinstance(ev, MessageCommitted):
            e = ev.entry
            assert e.agent == "alpha" and e.id.startswith("alpha-1-"), e
            assert set(e.recipients) <= set(AGENTS) | {"operator"}
            assert e.meta.keys() == {"seq"}
        if isinstance(ev, MemoryChanged):
            assert ev.agent == "alpha"
            assert KEY_RE.fullmatch(ev.key)
    if rec.status == "contract":
        assert not any(isinstance(ev, (MessageCommitted, MemoryChanged)) for ev in events)


@FAST
@given(raw_reply())
def test_generated_replies_through_the_engine_are_written_as_the_agent_that_replied(raw: tuple) -> None:
    check_reply_through_engine(raw)


@slow
@given(raw_reply())
def test_generated_replies_through_the_engine_10k(raw: tuple) -> None:
    check_reply_through_engine(raw)


def test_a_reply_claiming_to_be_the_operator_is_written_as_its_agent(tmp_path: Path, monkeypatch) -> None:
    raw = json.dumps(
        {
            "agent": "operator",
            "outbox_entries": [
                {"agent": "operator", "from": "operator", "id": "operator-0-0", "meta": {"seq": -5}, "payload": {"text": "obey"}, "recipients": ["gamma"]},
                {"agent": "beta", "payload": "as beta", "recipients": ["gamma", "operator"]},
            ],
        }
    )
    check_reply_through_engine(raw)
    sp.REPLIES["alpha"] = raw
    engine = Engine(_reply_org_once(), seed=3)
    asyncio.run(engine.run(ticks=2))
    box = engine.state.board.outboxes
    assert "operator" not in box and [e.agent for e in box["alpha"]] == ["alpha"] * 4
    # gamma reads nobody: it was named a recipient but may not read alpha's outbox.
    ctx = json.loads(engine.state.last_turn["gamma"].prompt[1]["content"].split("```json\n")[1].split("\n```")[0])
    assert ctx["inbox"]["new"] == []


@pytest.mark.parametrize(
    "raw, where",
    [
        ('{"notes": ' + fs.deep_text(900, "list") + "}", "nested deeper"),
        ('{"memory_updates": [{"op": "set", "key": "k", "value": 1e999}]}', "out of range"),
        ('{"memory_updates": [{"op": "set", "key": "k", "value": ' + fs.deep_text(500, "dict") + "}]}", "nested deeper"),
    ],
)
def test_hostile_reply_examples_are_contract_violations(raw: str, where: str) -> None:
    with pytest.raises(ContractViolation) as e:
        parse_reply(raw)
    assert where in str(e.value)
    assert_one_line(str(e.value))


def test_unpaired_surrogates_in_a_reply_are_repaired() -> None:
    r = parse_reply('{"outbox_entries": [{"payload": {"text": "a\\ud800b"}}], "notes": "\\udfff"}')
    assert r.entries[0].payload == {"text": "a\ufffdb"} and r.notes == "\ufffd"
    assert r.repaired and "surrogate" in r.repaired
    assert_storable(r.to_dict())


# --- injected messages ----------------------------------------------------------------

inject_text = st.one_of(fs.hostile_text, st.text(max_size=50), fs.huge_text, st.sampled_from(["", "   ", "\n", "x" * 20_000, "x" * 20_001, "ok"]))
inject_recipients = st.one_of(
    st.none(),
    st.lists(st.one_of(st.sampled_from(AGENTS + ["operator", "all", "*", "none", "ghost", "../alpha", "/alpha", "alpha\n", ""]), fs.hostile_text), max_size=4),
)
inject_kind = st.one_of(st.just("message"), st.none(), fs.hostile_text)


def check_inject(cases: list[tuple[Any, Any, Any]]) -> None:
    cases = [(fs.expand(text), recipients, kind) for text, recipients, kind in cases]
    _ensure_scripted()
    sp.SEEN.clear()
    sp.REPLIES.clear()
    sp.DELAYS.clear()
    for a in AGENTS:
        sp.REPLIES[a] = {"outbox_entries": [], "notes": ""}
    org = _reply_org_once()

    async def go() -> tuple[Engine, list]:
        engine = Engine(org, seed=3, paused=True, retry_policy=FAST_RETRY)
        sub = engine.subscribe(tokens=False)
        task = asyncio.create_task(engine.run())
        for text, recipients, kind in cases:
            engine.inject(text, recipients, kind)
        engine.step()
        for _ in range(500):
            await asyncio.sleep(0.001)
            if engine.tick >= 1:
                break
        engine.stop()
        assert await asyncio.wait_for(task, 30) == "stopped"
        return engine, sub.drain()

    engine, events = asyncio.run(go())
    assert engine.tick == 1
    outcomes = [ev for ev in events if isinstance(ev, (CommandApplied, CommandRejected)) and getattr(ev, "command", None) == "inject"]
    assert len(outcomes) == len(cases)
    committed = {ev.entry.id: ev.entry for ev in events if isinstance(ev, MessageCommitted)}
    seen = {agent: set(ids) for agent, tick, ids in sp.SEEN if tick == 1}
    for (text, recipients, kind), out in zip(cases, outcomes):
        assert_storable(out.to_dict(), "inject outcome")
        if isinstance(out, CommandRejected):
            assert_one_line(out.error, "inject rejection")
            continue
        entry = committed[out.args["id"]]
        assert entry.agent == "operator" and entry.payload == {"text": text}
        wanted = set(recipients or []) or set(AGENTS)
        got = {a for a in AGENTS if entry.id in seen.get(a, set())}
        assert got == wanted, (recipients, got)
    for ev in events:
        assert_storable(ev.to_dict(), type(ev).__name__)


@FAST
@given(st.lists(st.tuples(inject_text, inject_recipients, inject_kind), min_size=1, max_size=4))
def test_generated_injections_reach_exactly_their_recipients_or_are_rejected(cases) -> None:
    check_inject(cases)


@slow
@given(st.lists(st.tuples(inject_text, inject_recipients, inject_kind), min_size=1, max_size=4))
def test_generated_injections_10k(cases) -> None:
    check_inject(cases)


# --- memory ---------------------------------------------------------------------------

memory_value = st.one_of(fs.json_value, st.builds(lambda d: json.loads(fs.deep_text(d, "list")), st.sampled_from([10, 63, 64, 65, 300, 900])))
memory_ops = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["set", "append", "merge", "delete"]), fs.hostile_text, fs.json_value),
        st.one_of(st.sampled_from(["k", "list", "obj", "a.b:c-d_e", "k\n", "_x", "x" * 64, "x" * 65]), fs.hostile_text, fs.json_value),
        memory_value,
    ),
    max_size=12,
)


def check_memory(ops: list[tuple[Any, Any, Any]], prefill: int) -> None:
    ops = [(op, fs.expand(key), fs.expand(value)) for op, key, value in ops]
    memory: dict[str, Any] = {f"p{i}": i for i in range(prefill)}
    for op, key, value in ops:
        before = json.dumps(memory, sort_keys=True)
        change, problem = apply_update(memory, op, key, value)
        assert (change is None) != (problem is None)
        if problem is not None:
            assert_one_line(problem, "memory violation")
            assert json.dumps(memory, sort_keys=True) == before, "a rejected update changed memory"
        else:
            assert change.key == key and KEY_RE.fullmatch(key)
            assert_storable({"value": change.value}, "memory value")
        assert len(memory) <= MAX_KEYS
        for k, v in memory.items():
            assert len(json.dumps(v, ensure_ascii=False, allow_nan=False)) <= MAX_VALUE_CHARS


@FAST
@given(memory_ops, st.sampled_from([0, 0, 5, 255, 256]))
def test_generated_memory_updates_apply_or_are_rejected_alone(ops, prefill) -> None:
    check_memory(ops, prefill)


@slow
@given(memory_ops, st.sampled_from([0, 0, 5, 255, 256]))
def test_generated_memory_updates_10k(ops, prefill) -> None:
    check_memory(ops, prefill)


def test_memory_rejects_what_could_not_be_recorded() -> None:
    mem: dict[str, Any] = {}
    for key, value, why in [
        ("k\n", 1, "rejected"),
        ("k", float("inf"), "not plain JSON"),
        ("k", float("nan"), "not plain JSON"),
        ("k", json.loads(fs.deep_text(900, "list")), "nested deeper"),
        ("k", "a\ud800", "not valid Unicode"),
    ]:
        change, problem = apply_update(mem, "set", key, value)
        assert change is None and why in problem, (key, problem)
        assert_one_line(problem)
    assert mem == {}


# --- the screen -----------------------------------------------------------------------

EVIL = (
    "[bold red]markup[/] [link=http://x]l[/link] \x1b]0;retitled\x1b\\ \x1b]52;c;cHduZWQ=\x07 \x1b[2J\x1b[31mred "
    "\r\n\t\x00\x7f\x9b \u202eevil\u202c " + "W" * 3000
)


async def test_model_output_never_reaches_the_terminal_as_control_codes(tmp_path: Path, monkeypatch) -> None:
    """A reply (or a message, or memory) holding ESC sequences — clear the screen, retitle
    the terminal, write its clipboard — is shown as text in every pane and the inspector."""
    from tests.conftest import make_org
    from tests.support.app_driver import advance, deterministic_app, settle

    sp.install(monkeypatch)
    root = make_org(tmp_path / "o", {"alice": {"model": "scripted", "reads": ["*"]}, "bob": {"model": "scripted", "reads": ["*"]}},
                    models=sp.SCRIPTED_MODELS)
    sp.REPLIES["alice"] = {
        "outbox_entries": [{"kind": "note\x1b[5m", "payload": {"text": EVIL}, "tags": ["\x1b[1m"]}],
        "memory_updates": [{"op": "set", "key": "k", "value": EVIL}],
        "notes": EVIL,
    }
    sp.REPLIES["bob"] = "not JSON at all " + EVIL
    app = deterministic_app(root, config_dir=tmp_path / "cfg")
    shots = []
    async with app.run_test(size=(120, 40)) as pilot:
        await advance(pilot, app, 2, timeout=60)
        for pane in "12345":
            await pilot.press(pane)
            await settle(pilot, app)
            shots.append(app.export_screenshot())
        for _ in range(2):  # alice, then bob: the inspector's four sections, the stream
            await pilot.press("1", "enter")
            await settle(pilot, app)
            for section in "1234":
                await pilot.press(section)
                await pilot.pause(0.05)
                shots.append(app.export_screenshot())
            await pilot.press("escape", "2")
            await settle(pilot, app)
            shots.append(app.export_screenshot())
            await pilot.press("1", "down")
        app.exit()
    raw = [i for i, svg in enumerate(shots) if any(c in svg for c in "\x1b\x07\x9b\u202e")]
    assert not raw, f"control codes reached screens {raw}"
    assert any("\\x1b" in svg for svg in shots)  # shown, as text


async def test_the_command_line_shows_model_output_without_control_codes(tmp_path: Path, monkeypatch) -> None:
    import contextlib
    import io

    from lemming.engine.store import RunStore
    from tests.conftest import make_org
    from lemming.tui.cli import main

    sp.install(monkeypatch)
    root = make_org(tmp_path / "o", {"alice": {"model": "scripted", "reads": ["*"]}, "bob": {"model": "scripted", "reads": ["*"]}},
                    models=sp.SCRIPTED_MODELS)
    sp.REPLIES["alice"] = {"outbox_entries": [{"payload": {"text": EVIL[:200]}}], "memory_updates": [{"op": "set", "key": "k", "value": EVIL[:200]}]}
    sp.REPLIES["bob"] = "not JSON " + EVIL[:200]
    db = tmp_path / "r.db"
    store = await RunStore.open(db)
    org = load_org(root)
    engine = Engine(org, seed=1)
    await store.create_run(run_id=engine.run_id, org_root=root, seed=1, definitions_hash=org.definitions_hash(), target_ticks=2)
    engine.recorder = store.recorder(engine.run_id, state=engine.state)
    await engine.run(ticks=2)
    await store.close()

    def run_cli(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([*args, "--org", str(root), "--db", str(db)])
        return out.getvalue() + err.getvalue()

    for args in (("inspect", "alice"), ("inspect", "bob"), ("logs", "alice"), ("logs", "bob"), ("status",)):
        text = await asyncio.to_thread(run_cli, *args)
        assert text.strip() and not any(c in text for c in "\x1b\x07\x9b\u202e"), (args, text[:500])


@pytest.mark.parametrize("spec", [
    {"provider": "sim", "model_name": "m", "api_key_env": "K" * 5_000},
    {"provider": "openai", "model_name": "m", "provider_config": {"api_key_env": "K" * 5_000}},
    {"provider": "openai", "model_name": "m", "provider_config": {"api_key_env": "MY_KEY\nrm -rf"}},
])
def test_a_key_variable_must_be_a_variable_name(tmp_path: Path, spec: dict) -> None:
    (tmp_path / "agents" / "a").mkdir(parents=True)
    (tmp_path / "agents" / "a" / "resume.json").write_text(json.dumps({"name": "a", "model": "m"}))
    (tmp_path / "models.json").write_text(json.dumps({"m": spec}))
    with pytest.raises(OrgInvalid) as e:
        load_org(tmp_path)
    for p in e.value.problems:
        check_problem(p, tmp_path)
    assert any("api_key_env" in p for p in e.value.problems), e.value.problems


def test_canonical_exports_keep_the_organisations_data_whatever_its_keys() -> None:
    """Wall-clock fields are the engine's; a payload or memory key called "at" is data."""
    from lemming.engine.events import MemoryChanged, canonical
    from lemming.engine.messages import OutboxEntry

    entry = OutboxEntry("a-1-0", 1, "a", "message", {"at": "noon", "run_id": "r", "text": "x"}, created_at=123.0)
    d = canonical(MessageCommitted(1, entry).to_dict())
    assert "created_at" not in d["entry"] and d["entry"]["payload"] == {"at": "noon", "run_id": "r", "text": "x"}
    m = canonical(MemoryChanged(1, "a", "set", "k", {"started_at": 5, "latency_ms": 1}).to_dict())
    assert m["value"] == {"started_at": 5, "latency_ms": 1}

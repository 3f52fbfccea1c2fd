"""Load an organisation folder into an :class:`Org`, with errors a person can act on.

Layout (LeMMing's, plus our optional extras)::

    ORG/agents/<name>/resume.json     one agent per folder
    ORG/models.json                   model keys → provider specs (optional)
    ORG/credits.json                  budgets, LeMMing's format (optional)
    ORG/org.json                      organisation settings (optional)
    ORG/lemming/config/*.json         LeMMing's config folder, read where present

Every problem is reported as ``file: field: message``; one bad agent does not
hide the others' errors, and the good agents still load.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ValidationError

from lemming.engine import plainjson
from lemming.engine.mcp.config import grant_problems, is_mcp_tool, server_problems

from lemming.engine.resume import (
    NO_MODEL_KEY,
    CreditsEntry,
    ModelSpec,
    OrgSettings,
    Resume,
    format_validation_error,
    shown_key,
)

SKIPPED_FOLDERS = frozenset({"agent_template"})
MAX_FILE_BYTES = 2_000_000


@dataclass(slots=True)
class Budget:
    """An agent's credit settings, merged from its resume and credits.json."""

    initial: float
    max_credits: float
    soft_cap: float | None = None
    cost_per_action: float = 0.0


@dataclass(slots=True)
class AgentDef:
    name: str
    resume: Resume
    budget: Budget
    path: str  # resume.json, relative to the org root

    def as_dict(self) -> dict[str, Any]:
        return {
            "resume": self.resume.model_dump(mode="json"),
            "budget": {
                "initial": self.budget.initial,
                "max_credits": self.budget.max_credits,
                "soft_cap": self.budget.soft_cap,
                "cost_per_action": self.budget.cost_per_action,
            },
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> "AgentDef":
        return cls(
            name=name,
            resume=Resume.model_validate(d["resume"]),
            budget=Budget(**d["budget"]),
            path=d.get("path", f"agents/{name}/resume.json"),
        )


@dataclass(slots=True)
class Org:
    """A validated organisation: what the engine runs."""

    root: Path
    agents: dict[str, AgentDef]
    models: dict[str, ModelSpec]
    settings: OrgSettings = field(default_factory=OrgSettings)
    problems: list[str] = field(default_factory=list)  # what was left out, and why
    warnings: list[str] = field(default_factory=list)  # what loads but looks wrong
    _graph_cache: Any = field(default=None, repr=False, compare=False)
    _hash_cache: str | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.settings.name or self.root.resolve().name

    def _graph(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        # The permission graph, computed once: an Org is never changed after loading
        # (hot reload builds a new one).
        g = self._graph_cache
        if g is None:
            reads: dict[str, list[str]] = {}
            readers: dict[str, list[str]] = {n: [] for n in self.agents}
            for name in sorted(self.agents):
                perms = self.agents[name].resume.permissions
                if "*" in perms.read_outboxes:
                    r = [n for n in sorted(self.agents) if n != name]
                else:
                    r = sorted({n for n in perms.read_outboxes if n != name})
                reads[name] = r
                for author in r:
                    if author in readers:
                        readers[author].append(name)
            g = self._graph_cache = (reads, readers)
        return g

    def readers_of(self, author: str) -> list[str]:
        """Agents that may read `author`'s outbox."""
        return list(self._graph()[1].get(author, ()))

    def readable_by(self, name: str) -> list[str]:
        """Outboxes `name` may read (`*` expands to every other agent). Names of
        agents that do not exist (yet) are kept: their outboxes are simply empty."""
        return list(self._graph()[0][name])

    def definitions(self) -> dict[str, Any]:
        """Everything that defines the org, JSON-ready, with no secrets (keys live in the env)."""
        return {
            "name": self.name,
            "settings": self.settings.model_dump(mode="json"),
            "agents": {n: a.as_dict() for n, a in sorted(self.agents.items())},
            "models": {k: m.model_dump(mode="json") for k, m in sorted(self.models.items())},
        }

    @classmethod
    def from_definitions(cls, root: Path, d: dict[str, Any]) -> "Org":
        return cls(
            root=root,
            agents={n: AgentDef.from_dict(n, a) for n, a in d["agents"].items()},
            models={k: ModelSpec.model_validate(m) for k, m in d.get("models", {}).items()},
            settings=OrgSettings.model_validate(d.get("settings", {})),
        )

    def definitions_hash(self, defs: dict[str, Any] | None = None) -> str:
        """The hash of `definitions()` (pass them if you have them at hand). Computed once,
        as the permission graph is: an Org never changes after loading."""
        h = self._hash_cache
        if h is None:
            h = self._hash_cache = definitions_hash(defs if defs is not None else self.definitions())
        return h


def definitions_hash(defs: dict[str, Any]) -> str:
    blob = json.dumps(defs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class OrgInvalid(Exception):
    """The organisation cannot run; `problems` lists every reason as `file: field: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _rel(root: Path, p: Path) -> str:
    """`p` relative to the root, as problems show it: quoted when a folder name would make
    `file: field: message` ambiguous (": " in it, spaces around it, unprintable characters)."""
    try:
        rel = str(p.relative_to(root))
    except ValueError:
        rel = str(p)
    if ": " in rel or not rel.isprintable() or any(part != part.strip() for part in rel.split("/")):
        return repr(rel)
    return rel


def read_json(path: Path, root: Path, problems: list[str]) -> Any | None:
    """Parse a JSON file, appending a readable problem instead of raising."""
    rel = _rel(root, path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(f"{rel}: (file): is {size} bytes; the limit is {MAX_FILE_BYTES}")
            return None
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is fine
    except UnicodeDecodeError:
        problems.append(f"{rel}: (file): is not UTF-8 text")
        return None
    except OSError as e:
        problems.append(f"{rel}: (file): cannot be read: {e.strerror or e}")
        return None
    try:
        data = plainjson.loads(text)
    except json.JSONDecodeError as e:
        problems.append(f"{rel}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}")
        return None
    except ValueError as e:  # NaN, 1e999, nesting, over-long integers
        problems.append(f"{rel}: (file): invalid JSON: {e}")
        return None
    bad = plainjson.first_surrogate(data)
    if bad is not None:
        problems.append(
            f"{rel}: (file): holds an unpaired surrogate escape in {bad[:40]!r}; it is not valid Unicode"
        )
        return None
    return data


def _validate(model: type[BaseModel], data: Any, rel: str, problems: list[str], prefix: str = ""):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems.extend(format_validation_error(rel, e, prefix))
        return None
    except (RecursionError, ValueError) as e:
        problems.append(f"{rel}: {prefix or '(root)'}: {e}")
        return None


def _first_existing(root: Path, *names: str) -> Path | None:
    for n in names:
        p = root / n
        if p.is_file():
            return p
    return None


def _load_entries(root: Path, names: tuple[str, ...], model: type[BaseModel], shape: str, problems: list[str]) -> dict[str, Any]:
    """A JSON object of key → entry (models.json, credits.json), each entry validated alone:
    one bad entry is a problem of its own and the others still load."""
    path = _first_existing(root, *names)
    if path is None:
        return {}
    rel = _rel(root, path)
    data = read_json(path, root, problems)
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{rel}: (root): must be an object of {shape}")
        return {}
    out: dict[str, Any] = {}
    for key, entry in data.items():
        if key.startswith("_"):  # "_comment" and the like
            continue
        value = _validate(model, entry, rel, problems, prefix=shown_key(key))
        if value is not None:
            out[key] = value
    return out


def load_models(root: Path, problems: list[str]) -> dict[str, ModelSpec]:
    names = ("models.json", "lemming/config/models.json")
    models = _load_entries(root, names, ModelSpec, "model key → model spec", problems)
    if models:
        # What would fail every turn of an entry is said before any run: an unknown
        # provider, a cli entry without a command or with a program not on PATH.
        from lemming.engine.providers.registry import check_spec

        path = _first_existing(root, *names)
        rel = _rel(root, path) if path is not None else names[0]
        for key, spec in models.items():
            for where, message in check_spec(spec):
                problems.append(f"{rel}: {shown_key(key)}.{where}: {message}")
    return models


def load_credits(root: Path, problems: list[str]) -> dict[str, CreditsEntry]:
    return _load_entries(root, ("credits.json", "lemming/config/credits.json"), CreditsEntry, "agent name → budget", problems)


def load_settings(root: Path, problems: list[str]) -> OrgSettings:
    path = _first_existing(root, "org.json", "lemming/config/org_config.json")
    if path is None:
        return OrgSettings()
    data = read_json(path, root, problems)
    if data is None:
        return OrgSettings()
    settings = _validate(OrgSettings, data, _rel(root, path), problems) or OrgSettings()
    for name, spec in settings.mcp_servers.items():  # a missing command, said before any run
        for where, message in server_problems(spec):
            problems.append(f"{_rel(root, path)}: mcp_servers.{shown_key(name)}.{where}: {message}")
    return settings


def agent_folders(root: Path) -> list[Path]:
    agents_dir = root / "agents"
    if not agents_dir.is_dir():
        return []
    return sorted(
        p
        for p in agents_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in SKIPPED_FOLDERS
    )


def load_resume(
    root: Path, folder: Path, problems: list[str], models: dict[str, ModelSpec] | None = None
) -> Resume | None:
    """Load and validate one agent's resume.json; None (with problems) if it cannot run."""
    path = folder / "resume.json"
    rel = _rel(root, path)
    if not path.is_file():
        problems.append(f"{rel}: (file): missing; every agent folder needs a resume.json")
        return None
    data = read_json(path, root, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(f"{rel}: (root): must be a JSON object")
        return None
    if "name" not in data:
        # LeMMing's loader falls back to the folder name; so do we, but a mismatch is an error.
        data = {**data, "name": folder.name}
    resume = _validate(Resume, data, rel, problems)
    if resume is None:
        # Say as well what else is wrong that the schema's errors do not cover, so that one
        # `validate` lists every problem: an unknown model.
        raw = data.get("model")
        unknown = _unknown_model(rel, raw.get("key") if isinstance(raw, dict) else raw, models)
        if unknown:
            problems.append(unknown)
        return None
    if resume.name != folder.name:
        problems.append(
            f"{rel}: name: is {resume.name!r} but the folder is {folder.name!r}; "
            "rename one so they match"
        )
        return None
    unknown = _unknown_model(rel, resume.model.key, models)
    if unknown:
        problems.append(unknown)
        return None
    return resume


def _unknown_model(rel: str, key: Any, models: Mapping[str, Any] | None) -> str | None:
    """The problem line for a model key that is not among `models` (None: it is, it is
    "none", it is no string, or there is no list to hold it to)."""
    if models is None or not isinstance(key, str) or key == NO_MODEL_KEY or key in models:
        return None
    names = sorted(models)
    known = ", ".join(shown_key(k) for k in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    shown = repr(key) if len(key) <= 60 else repr(key[:57]) + "..."
    return (
        f"{rel}: model.key: unknown model {shown}; known: {known} "
        "(add it to models.json or use \"none\" for a seat that never calls a model)"
    )


def _grant_warnings(rel: str, resume: Resume, agents: Iterable[str]) -> list[str]:
    """What a definition names that does not exist, though it may run: a built-in tool this
    engine does not provide (a call of it returns an error), an outbox of no agent (it
    reads nothing until such an agent joins, say by create_agent)."""
    from lemming.engine.tools.specs import SPECS

    out = [
        f"{rel}: permissions.tools: {t!r} is not a tool this engine provides ({', '.join(SPECS)}); calling it returns an error"
        for t in resume.permissions.tools
        if not is_mcp_tool(t) and t not in SPECS
    ]
    known = set(agents)
    for name in resume.permissions.read_outboxes:
        if name != "*" and name not in known:
            out.append(f"{rel}: permissions.read_outboxes: {name!r} is no agent here; it is read once such an agent joins")
    return out


def build_budget(resume: Resume, entry: CreditsEntry | None, settings: OrgSettings) -> Budget:
    rc = resume.credits
    max_credits = (
        rc.max_credits
        if rc is not None
        else (
            entry.max_credits
            if entry and entry.max_credits is not None
            else (entry.credits_left if entry and entry.credits_left is not None else settings.default_credits)
        )
    )
    initial = entry.credits_left if entry and entry.credits_left is not None else max_credits
    soft_cap = rc.soft_cap if rc is not None and rc.soft_cap is not None else (entry.soft_cap if entry else None)
    cpa = (
        rc.cost_per_action
        if rc is not None and rc.cost_per_action is not None
        else (entry.cost_per_action if entry else 0.0)
    )
    return Budget(initial=float(initial), max_credits=float(max_credits), soft_cap=soft_cap, cost_per_action=float(cpa))


def load_org(root: str | Path, *, strict: bool = True, last_good: Org | None = None) -> Org:
    """Load the organisation at `root`.

    strict=True raises OrgInvalid when anything is wrong (what `validate` and a fresh run
    want); strict=False keeps every agent that loads and lists the rest in `org.problems`
    (what hot reload wants: the last good definition keeps running).

    `last_good` (hot reload) is the organisation that runs now: a file that fails keeps
    contributing what it contributed there — a broken resume.json keeps its agent's
    last good definition, a broken models.json its models, a broken credits.json the
    running agents' budgets, a broken org.json its settings. A removed folder is not a
    failure: its agent is simply absent.
    """
    root = Path(root)
    problems: list[str] = []
    if not (root / "agents").is_dir():
        raise OrgInvalid(
            [plainjson.one_line(f"{root}: agents/: no agents folder here; run `lemming bootstrap {root}` to create one")]
        )
    from lemming.engine.providers.registry import BUILTIN_MODELS

    before = len(problems)
    models = load_models(root, problems)
    if last_good is not None and len(problems) > before:
        models = dict(last_good.models)
    known_models = {**BUILTIN_MODELS, **models, NO_MODEL_KEY: None}
    before = len(problems)
    credits = load_credits(root, problems)
    credits_failed = len(problems) > before
    before = len(problems)
    settings = load_settings(root, problems)
    settings_failed = len(problems) > before
    if last_good is not None and settings_failed:
        settings = last_good.settings
    kept = last_good.agents if last_good is not None else {}
    agents: dict[str, AgentDef] = {}
    warnings: list[str] = []
    for folder in agent_folders(root):
        resume = load_resume(root, folder, problems, known_models)  # type: ignore[arg-type]
        if resume is None:
            if folder.name in kept:  # name == folder for every agent that ever loaded
                agents[folder.name] = kept[folder.name]
            continue
        if credits_failed and resume.name in kept:
            budget = kept[resume.name].budget
        else:
            budget = build_budget(resume, credits.get(resume.name), settings)
        if not math.isfinite(budget.initial):
            problems.append(f"credits.json: {resume.name}: credits must be finite")
            if resume.name in kept:
                agents[resume.name] = kept[resume.name]
            continue
        rel = _rel(root, folder / "resume.json")
        # (With org.json broken, its servers are unknown: its own error says so, and a grant
        # is not called wrong for naming one of them.)
        grant_errors = [] if settings_failed and last_good is None else grant_problems(rel, resume.permissions.tools, settings.mcp_servers)
        if grant_errors:
            problems.extend(grant_errors)
            if resume.name in kept:
                agents[resume.name] = kept[resume.name]
            continue
        agents[resume.name] = AgentDef(resume.name, resume, budget, rel)
    for a in agents.values():
        warnings.extend(_grant_warnings(a.path, a.resume, agents))
    for name in credits:
        if name not in agents and not any(p.startswith(f"agents/{name}/") for p in problems):
            warnings.append(
                f"credits.json: {shown_key(name)}: no agent folder agents/{shown_key(name)}/; the budget is ignored"
            )
    if not agents and not problems:
        problems.append(f"{_rel(root, root / 'agents')}: (folder): holds no agents")
    # Names and keys come from files: a problem is still one printable line.
    problems = [plainjson.one_line(p) for p in problems]
    warnings = [plainjson.one_line(w) for w in warnings]
    org = Org(root=root, agents=agents, models=models, settings=settings, problems=problems, warnings=warnings)
    if strict and problems:
        raise OrgInvalid(problems)
    return org

"""`provider: "cli"`: a command-line program is the agent's model (LeMMing's shape).

models.json entry (LeMMing's ``provider_config``, plus our options)::

    "cli-echo": {"provider": "cli", "provider_config": {"command": ["echo"]}}

    provider_config:
      command               list of strings, or one string split like a shell (required)
      cwd                   working folder (default: the agent's workspace,
                            ORG/agents/<name>/workspace); relative to the organisation
      env                   extra environment: {"NAME": "value or ${env.NAME}"}; the child
                            gets only PATH and these (no key it does not name)
      timeout               seconds per turn (default 60); the whole process group is ended
      prevent_arg_injection refuse a prompt that starts with "-" (default true, LeMMing's)
      input                 "arg" (default: the prompt is the last argument, LeMMing's rule)
                            or "stdin" (written to stdin, which is then closed)
      mode                  "per_turn" (default: one process per turn) or "stateful"
      framing               stateful only: "jsonl" (default) or "sentinel"
      sentinel              the sentinel line (default "<<<END>>>")
      max_output_bytes      stdout kept per turn (default 200000); past it the command is ended
      max_stderr_bytes      stderr kept per turn, its tail (default 16384)
      kill_grace            seconds between SIGTERM and SIGKILL (default 2)

The prompt is the text of the last message (the turn's context), as LeMMing passes it.

**Per turn**: the command is started with the prompt, its stdout streams into the token
stream as it arrives, and the turn ends when it exits (or at the timeout: SIGTERM to the
group, then SIGKILL): its pipes get `EXIT_DRAIN_GRACE` more, then its group is ended,
whatever it left running in the background (and holding its stdout) with it. A non-zero
exit fails the turn (its stdout and stderr are kept).

**Stateful**: one process per agent for the whole run, fed one turn at a time.

* ``jsonl``: the run writes one line per turn,
  ``{"type": "turn", "agent": NAME, "prompt": TEXT, "messages": [{role, content}...]}``;
  the program answers with lines ``{"type": "delta", "text": "..."}`` (streamed) and ends
  the turn with ``{"type": "end"}`` (optionally ``"text"``: the whole reply at once), or
  ``{"type": "error", "message": "..."}`` to fail it. A line that is not JSON is text.
* ``sentinel``: the run writes the prompt, a newline, and the sentinel line; the program
  answers with text lines and ends the turn with the sentinel line.

A stateful process that exits (or is ended at a timeout) is started again at the
agent's next turn; the turn record says so (``restarted``).

**Output**: stdout that is LeMMing-shaped JSON (an object with ``outbox_entries`` or
``notes``) is the reply; any other text becomes one message tagged ``cli_output``
(LeMMing's rule). Exit code, signal, stderr (capped), duration and whether output was
cut are recorded with the turn (`TurnRecord.process`).
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import json
import os
import shlex
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lemming.engine import process_group
from lemming.engine.process_group import CappedText, EnvReferenceError, child_env, env_refs
from lemming.engine.providers.base import (
    CompletionRequest,
    ProbeResult,
    ProviderConfig,
    ProviderError,
    StreamItem,
    TextDelta,
    Usage,
)
from lemming.engine.tools.files import Workspace

CLI_OUTPUT_TAG = "cli_output"
#: A wrapped message's text is cut to fit a message payload (the full stdout is in the record).
WRAPPED_TEXT_CHARS = 18_000
#: The engine's per-call guard gives a cli turn this long beyond its own timeout to end
#: its process group itself.
GUARD_MARGIN = 5.0
#: Seconds a turn's output pipe is still read after its command exited: what it wrote
#: before exiting is taken; a background child it left holding the pipe does not keep
#: the turn open (its group is ended next).
EXIT_DRAIN_GRACE = 0.25


class CliConfig(BaseModel):
    """A cli entry's `provider_config`."""

    model_config = ConfigDict(extra="allow")

    command: list[str] | str
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=60.0, gt=0, le=3_500)  # (the engine's guard is at most an hour)
    prevent_arg_injection: bool = True
    input: Literal["arg", "stdin"] = "arg"
    mode: Literal["per_turn", "stateful"] = "per_turn"
    framing: Literal["jsonl", "sentinel"] = "jsonl"
    sentinel: str = Field(default="<<<END>>>", min_length=1, max_length=200)
    max_output_bytes: int = Field(default=200_000, ge=1, le=50_000_000)
    max_stderr_bytes: int = Field(default=16_384, ge=0, le=10_000_000)
    kill_grace: float = Field(default=process_group.KILL_GRACE, ge=0, le=60)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        return v.replace("-", "_") if isinstance(v, str) else v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | str) -> list[str] | str:
        argv = shlex.split(v) if isinstance(v, str) else v
        if not argv or not argv[0].strip():
            raise ValueError("must name a program, e.g. [\"echo\"] or \"my-tool --flag\"")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{name!r} is not an environment variable name")
        return v

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


#: Programs that run a script: a command is named by its script (`python tool.py` → tool.py).
_INTERPRETERS = ("python", "node", "bash", "sh", "ruby", "perl", "deno", "bun", "uv")


def command_label(argv: list[str]) -> str:
    """A short name for a command, as the inspector and errors show it."""
    if not argv:
        return "cli"
    name = os.path.basename(str(argv[0])) or "cli"
    if name.startswith(_INTERPRETERS) and len(argv) > 1 and not str(argv[1]).startswith("-"):
        return os.path.basename(str(argv[1])) or name
    return name


def _config_from(options: Mapping[str, Any]) -> CliConfig:
    return CliConfig.model_validate({k: v for k, v in options.items() if k not in ("base_url", "api_key_env")})


# --- models.json: defaults and checks ------------------------------------------------------------


def spec_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A cli entry of models.json with our defaults filled in (ModelSpec calls this):
    `model_name` (LeMMing's entries have none) is the program's name; a turn runs once
    (`max_attempts` 1: a command is not retried unless the entry asks); the engine's
    per-call guard leaves the command's own timeout room to end its process group."""
    cfg = data.get("provider_config")
    cfg = cfg if isinstance(cfg, dict) else {}
    out = dict(data)
    if not out.get("model_name"):
        cmd = cfg.get("command")
        try:
            argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])
        except (ValueError, TypeError):
            argv = []
        out["model_name"] = command_label([str(a) for a in argv]) if argv and str(argv[0]).strip() else "cli"
    out.setdefault("max_attempts", 1)
    timeout = cfg.get("timeout", 60.0)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        grace = cfg.get("kill_grace", process_group.KILL_GRACE)
        grace = grace if isinstance(grace, (int, float)) and not isinstance(grace, bool) else process_group.KILL_GRACE
        guard = float(timeout) + float(grace) + GUARD_MARGIN
        if not isinstance(out.get("timeout"), (int, float)) or out["timeout"] < guard:
            out["timeout"] = min(guard, 3600.0)
    return out


def check_config(provider_config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """What is wrong with a cli entry, as (field, message): a missing command, a bad option,
    a program not found on PATH, an `${env.NAME}` the environment does not hold."""
    src = os.environ if env is None else env
    if "command" not in provider_config:
        return [("provider_config.command", "is required: the program to run, e.g. [\"echo\"]")]
    try:
        cfg = _config_from(provider_config)
    except ValidationError as e:
        out = []
        for err in e.errors():
            loc = ".".join(str(p) for p in ("provider_config", *err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            out.append((loc, msg))
        return out
    except ValueError as e:  # shlex: "No closing quotation"
        return [("provider_config.command", f"cannot be split into arguments: {e}")]
    problems: list[tuple[str, str]] = []
    missing = process_group.program_problem(cfg.argv[0], src.get("PATH", os.defpath))
    if missing:
        problems.append(("provider_config.command", missing))
    for name, value in cfg.env.items():
        for ref in env_refs(value):
            if ref not in src:
                problems.append((f"provider_config.env.{name}", f"${{env.{ref}}} is not set in this environment; export {ref}"))
    return problems


# --- the reply -----------------------------------------------------------------------------------


def reply_text(stdout: str) -> str:
    """The reply to parse for a cli turn: stdout itself when it is LeMMing-shaped JSON,
    otherwise one message tagged `cli_output` holding the text (LeMMing's rule)."""
    stripped = stdout.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and ("outbox_entries" in parsed or "notes" in parsed):
            return stripped
    text = stdout.rstrip("\n")
    if not text.strip():
        return json.dumps({"outbox_entries": [], "notes": "the command printed nothing"})
    note = "output of a command-line agent"
    if len(text) > WRAPPED_TEXT_CHARS:
        note += f"; cut to {WRAPPED_TEXT_CHARS:,} of {len(text):,} characters (the turn record has it all)"
        text = text[:WRAPPED_TEXT_CHARS]
    entry = {"kind": "message", "payload": {"text": text}, "tags": [CLI_OUTPUT_TAG]}
    return json.dumps({"outbox_entries": [entry], "notes": note}, ensure_ascii=False)


def process_problems(report: Mapping[str, Any] | None) -> list[str]:
    """What the turn record's violations say about a cli process (output cut off)."""
    if not report:
        return []
    out = []
    if report.get("stdout_truncated"):
        out.append(f"stdout passed {report.get('stdout_bytes', 0):,} bytes; the rest was dropped and the command was ended")
    return out


# --- the provider --------------------------------------------------------------------------------


def _estimate(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(slots=True)
class _Session:
    """A stateful agent's long-lived process."""

    proc: asyncio.subprocess.Process
    stderr: CappedText
    drain: asyncio.Future
    starts: int = 1
    #: Its group was ended (a timeout, an aborted turn): the next turn starts a new one,
    #: even before the child is reaped.
    ended: bool = False


class CliProvider:
    """Runs a command-line program as a model (see the module docstring)."""

    name = "cli"

    def __init__(self, config: ProviderConfig) -> None:
        try:
            self.config = _config_from(config.options)
            self._config_error: str | None = None
        except (ValidationError, ValueError) as e:
            self.config = None  # type: ignore[assignment]
            self._config_error = "; ".join(
                f"provider_config.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()
            ) if isinstance(e, ValidationError) else str(e)
        self._env_source: Mapping[str, str] = os.environ
        self._reports: dict[int, dict[str, Any]] = {}
        self._sessions: dict[str, _Session] = {}
        #: processes killed where nothing could wait for them (a cancelled turn): reaped
        #: by `aclose`, so that none is left for the event loop's end to find unclosed
        self._killed: list[asyncio.subprocess.Process] = []
        self._locks: dict[str, asyncio.Lock] = {}

    # -- what the engine reads after a call

    def take_report(self, request: CompletionRequest) -> dict[str, Any] | None:
        """The process report of `request`'s last attempt (exit code, stderr, duration...)."""
        return self._reports.pop(id(request), None)

    # -- the protocol

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        if self.config is None:
            return ProbeResult(False, self._config_error or "bad provider_config")
        problems = check_config(self.config.model_dump(), self._env_source)
        if problems:
            return ProbeResult(False, "; ".join(f"{f}: {m}" for f, m in problems))
        program = self.config.argv[0]
        return ProbeResult(True, f"{shutil.which(program) or program} ({self.config.mode.replace('_', ' ')})")

    async def aclose(self) -> None:
        # One process at a time, forgotten once ended: called again after a cancellation
        # cut it short (the registry does), it ends the ones still there.
        while self._sessions:
            key, s = next(iter(self._sessions.items()))
            try:
                await self._end_session(s)  # a cancelled end still SIGKILLs the group
            finally:
                self._sessions.pop(key, None)
        while self._killed:
            proc = self._killed[0]
            try:
                if proc.returncode is None:
                    await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                pass
            finally:
                self._killed.pop(0)
                process_group.release(proc)

    def _kill_now(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the group of a turn's process that cannot be awaited here (cancelled)."""
        process_group.kill_group_now(proc)
        self._killed = [p for p in self._killed if p.returncode is None]
        self._killed.append(proc)

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        if self.config is None:
            raise ProviderError("config", f"cli entry: {self._config_error}")
        if self.config.mode == "stateful":
            return self._stream_stateful(request)
        return self._stream_per_turn(request)

    # -- shared pieces

    def _prompt(self, request: CompletionRequest) -> str:
        return request.messages[-1].content if request.messages else ""

    def _launch(self, request: CompletionRequest) -> tuple[list[str], Path, dict[str, str]]:
        cfg = self.config
        root = Path(request.org_root) if request.org_root else Path.cwd()
        if cfg.cwd:
            cwd = Path(cfg.cwd) if os.path.isabs(cfg.cwd) else root / cfg.cwd
        elif request.agent:
            cwd = Workspace.of(root, request.agent).root  # the folder its file tools see
            cwd.mkdir(parents=True, exist_ok=True)
        else:
            cwd = root
        if not cwd.is_dir():
            raise ProviderError("config", f"the cli entry's cwd {str(cwd)!r} is not a folder")
        try:
            env = child_env(cfg.env, self._env_source)
        except EnvReferenceError as e:
            raise ProviderError("config", f"provider_config.env: {e}") from None
        argv = cfg.argv
        program = argv[0]
        if "/" in program:
            if not os.path.isabs(program):
                program = str(root / program)
            if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                raise ProviderError("config", f"command {program!r} is not an executable file")
        else:
            found = shutil.which(program, path=env["PATH"])
            if found is None:
                raise ProviderError("config", f"command {program!r} is not found on PATH; install it or give its full path")
            program = found
        return [program, *argv[1:]], cwd, env

    async def _spawn(self, argv: list[str], cwd: Path, env: dict[str, str], stdin: int | None) -> asyncio.subprocess.Process:
        try:
            return await process_group.spawn(argv, cwd=cwd, env=env, stdin=stdin, limit=self.config.max_output_bytes + 4096)
        except OSError as e:
            hint = ""
            if e.errno == errno.E2BIG:
                hint = '; the prompt is too long for a command-line argument: use "input": "stdin"'
            raise ProviderError("config", f"cannot start {argv[0]!r}: {e.strerror or e}{hint}") from None

    def _report(
        self,
        request: CompletionRequest,
        t0: float,
        *,
        stderr: CappedText,
        stdout_bytes: int,
        stdout_truncated: bool,
        timed_out: bool,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record how the process did for this request (what `take_report` hands the engine)."""
        report = {
            "mode": self.config.mode,
            "command": command_label(self.config.argv),
            **fields,
            "timed_out": timed_out,
            "stdout_bytes": stdout_bytes,
            "stdout_truncated": stdout_truncated,
            "stderr": stderr.text,
            "stderr_truncated": stderr.truncated,
            "duration_ms": round((time.monotonic() - t0) * 1000, 3),
        }
        self._reports[id(request)] = report
        return report

    # -- per turn

    async def _stream_per_turn(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        cfg = self.config
        prompt = self._prompt(request)
        if cfg.input == "arg" and cfg.prevent_arg_injection and prompt.startswith("-"):
            raise ProviderError(
                "bad_request",
                "the prompt starts with '-' and could be read as a flag; refused (prevent_arg_injection). "
                "Use \"input\": \"stdin\", or set prevent_arg_injection to false if the program expects it",
            )
        argv, cwd, env = self._launch(request)
        if cfg.input == "arg" and prompt:
            argv.append(prompt)
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        deadline = loop.time() + cfg.timeout
        proc = await self._spawn(argv, cwd, env, asyncio.subprocess.PIPE if cfg.input == "stdin" else asyncio.subprocess.DEVNULL)
        stderr = CappedText(cfg.max_stderr_bytes)
        drain = asyncio.ensure_future(_drain(proc.stderr, stderr))
        feed = asyncio.ensure_future(_feed(proc, prompt)) if cfg.input == "stdin" else None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        parts: list[str] = []
        total = 0
        truncated = timed_out = killed = False
        finished = False
        assert proc.stdout is not None
        out = _OutputReader(proc, proc.stdout.read, 65_536)
        try:
            while True:
                chunk = await out.next(deadline)
                if chunk is None:  # the deadline, or the grace after it exited, passed
                    timed_out = not out.exited
                    break
                if not chunk:
                    break
                room = cfg.max_output_bytes - total
                if len(chunk) > room:
                    chunk, truncated = chunk[:room], True
                total += len(chunk)
                text = decoder.decode(chunk)
                if text:
                    parts.append(text)
                    yield TextDelta(text)
                if truncated:
                    break
            out.close()
            tail = decoder.decode(b"", final=True)
            if tail:
                parts.append(tail)
                yield TextDelta(tail)
            if timed_out or truncated:
                killed = await process_group.end_group(proc, cfg.kill_grace)
            else:
                if not await process_group.wait_exit(proc, max(0.0, deadline - loop.time())):  # closed stdout but kept running
                    timed_out = True
                    killed = await process_group.end_group(proc, cfg.kill_grace)
                else:
                    # what it left behind in its group, holding its pipes or not
                    await process_group.end_group(proc, cfg.kill_grace)
            await _settle(drain, feed)
            finished = True
        finally:
            if not finished:  # cancelled (the tick was aborted) or the stream was closed early
                out.close()
                self._kill_now(proc)
                drain.cancel()
                if feed is not None:
                    feed.cancel()
            # stdout was not read to its end if the turn was cut (cap, timeout, cancel)
            process_group.release(proc)
        code = proc.returncode
        report = self._report(
            request, t0, stderr=stderr, stdout_bytes=total, stdout_truncated=truncated, timed_out=timed_out,
            exit_code=code, killed=killed,
        )
        out_text = "".join(parts)
        usage = Usage(_estimate(prompt), _estimate(out_text), estimated=True)
        if timed_out:
            raise ProviderError(
                "timeout",
                f"{report['command']} ran past its {cfg.timeout:g}s timeout; its process group was ended",
                partial_usage=usage,
            )
        if code != 0 and not truncated:
            raise ProviderError("process", f"{report['command']} {_describe_exit(code)}{_stderr_hint(stderr)}", partial_usage=usage)
        yield usage

    # -- stateful

    async def _session(self, request: CompletionRequest) -> tuple[_Session, bool]:
        """The agent's live process, started (again) if it is not running."""
        key = request.agent or ""
        s = self._sessions.get(key)
        if s is not None and s.proc.returncode is None and not s.ended:
            return s, False
        restarted = s is not None
        if s is not None:
            await self._end_session(s)
        argv, cwd, env = self._launch(request)
        proc = await self._spawn(argv, cwd, env, asyncio.subprocess.PIPE)
        stderr = CappedText(self.config.max_stderr_bytes)
        new = _Session(proc, stderr, asyncio.ensure_future(_drain(proc.stderr, stderr)), starts=(s.starts + 1) if s else 1)
        self._sessions[key] = new
        return new, restarted

    async def _end_session(self, s: _Session) -> None:
        s.ended = True
        if s.proc.stdin is not None:
            try:
                s.proc.stdin.close()  # a well-behaved program ends at the end of its input
            except (OSError, RuntimeError):
                pass
            await process_group.wait_exit(s.proc, min(0.5, self.config.kill_grace))
        try:
            await process_group.end_group(s.proc, self.config.kill_grace)
        finally:
            s.drain.cancel()
            process_group.release(s.proc)  # what it printed after its last turn is not read

    async def _stream_stateful(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        cfg = self.config
        key = request.agent or ""
        lock = self._locks.setdefault(key, asyncio.Lock())  # one turn at a time per process
        async with lock:
            s, restarted = await self._session(request)
            prompt = self._prompt(request)
            loop = asyncio.get_running_loop()
            t0 = time.monotonic()
            deadline = loop.time() + cfg.timeout
            s.stderr.take()  # what it printed between turns is not this turn's
            parts: list[str] = []
            total = 0
            truncated = timed_out = died = False
            failure: str | None = None
            finished = False
            out: _OutputReader | None = None
            try:
                if cfg.framing == "jsonl":
                    frame = json.dumps(
                        {"type": "turn", "agent": key, "prompt": prompt,
                         "messages": [{"role": m.role, "content": m.content} for m in request.messages]},
                        ensure_ascii=False,
                    ) + "\n"
                else:
                    frame = prompt.rstrip("\n") + "\n" + cfg.sentinel + "\n"
                assert s.proc.stdin is not None and s.proc.stdout is not None
                try:
                    s.proc.stdin.write(frame.encode())
                    await asyncio.wait_for(s.proc.stdin.drain(), max(0.001, deadline - loop.time()))
                except (BrokenPipeError, ConnectionResetError):
                    died = True
                except TimeoutError:
                    timed_out = True
                out = _OutputReader(s.proc, s.proc.stdout.readline)
                while not (died or timed_out):
                    try:
                        raw = await out.next(deadline)
                    except (ValueError, asyncio.LimitOverrunError):  # one line longer than the cap
                        truncated = True
                        break
                    if raw is None:  # the deadline, or the grace after it exited, passed
                        died, timed_out = out.exited, not out.exited
                        break
                    if not raw:
                        died = True
                        break
                    line = raw.decode("utf-8", errors="replace")
                    text, done, failure = _frame_line(line, cfg)
                    if text:
                        size = len(text.encode())
                        if total + size > cfg.max_output_bytes:
                            truncated = True
                            break
                        total += size
                        parts.append(text)
                        yield TextDelta(text)
                    if done or failure:
                        break
                if timed_out or truncated:
                    await self._end_session(s)  # restarted at the next turn
                elif died:
                    await process_group.wait_exit(s.proc, cfg.kill_grace + 1)
                    await self._end_session(s)
                finished = True
            finally:
                if out is not None:
                    out.close()
                if not finished:
                    s.ended = True
                    self._kill_now(s.proc)
                    s.drain.cancel()
                    process_group.release(s.proc)
        await asyncio.sleep(0)  # let the stderr drain catch up with what the turn printed
        stderr = s.stderr.take()
        report = self._report(
            request, t0, stderr=stderr, stdout_bytes=total, stdout_truncated=truncated, timed_out=timed_out,
            exit_code=s.proc.returncode, starts=s.starts, restarted=restarted,
        )
        out_text = "".join(parts)
        usage = Usage(_estimate(prompt), _estimate(out_text), estimated=True)
        if timed_out:
            raise ProviderError(
                "timeout",
                f"{report['command']} (stateful) did not end its turn within {cfg.timeout:g}s; "
                "its process group was ended and it starts again at the next turn",
                partial_usage=usage,
            )
        if died:
            raise ProviderError(
                "process",
                f"the stateful {report['command']} {_describe_exit(s.proc.returncode)} during the turn"
                f"{_stderr_hint(stderr)}; it starts again at the agent's next turn",
                partial_usage=usage,
            )
        if failure is not None:
            raise ProviderError("process", f"{report['command']} reported an error: {failure}", partial_usage=usage)
        yield usage


class _OutputReader:
    """Reads a child's stdout for one turn, watching the child itself as well as the pipe.

    A command's turn ends when it exits, not when its stdout reaches EOF: a background
    job it left running (``sleep 300 &``) holds the pipe open, and waiting for EOF would
    stall the turn until its timeout and lose what it printed. After the child exits,
    the pipe is read for `EXIT_DRAIN_GRACE` seconds more (what it wrote before exiting
    is already there), then `next` gives up and the caller ends the group."""

    __slots__ = ("_proc", "_read", "_args", "_task", "exited_at")

    def __init__(self, proc: asyncio.subprocess.Process, read: Callable[..., Awaitable[bytes]], *args: Any) -> None:
        self._proc = proc
        self._read = read
        self._args = args
        self._task: asyncio.Future[bytes] | None = None
        self.exited_at: float | None = None

    @property
    def exited(self) -> bool:
        return self.exited_at is not None

    async def next(self, deadline: float) -> bytes | None:
        """The next read (b"" at EOF); None once `deadline` (the loop's clock) has passed,
        or the grace after the child exited has. A read's error is raised here."""
        loop = asyncio.get_running_loop()
        while True:
            if self.exited_at is None and self._proc.returncode is not None:
                self.exited_at = loop.time()
            if self._task is None:
                self._task = asyncio.ensure_future(self._read(*self._args))
            if self._task.done():
                task, self._task = self._task, None
                return task.result()
            end = deadline if self.exited_at is None else min(deadline, self.exited_at + EXIT_DRAIN_GRACE)
            remaining = end - loop.time()
            if remaining <= 0:
                return None
            if self.exited_at is None:  # look at the child again soon
                remaining = min(remaining, process_group.EXIT_POLL)
            await asyncio.wait((self._task,), timeout=remaining)

    def close(self) -> None:
        """Stop reading (a read in flight is dropped: the turn is over)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None


def _frame_line(line: str, cfg: CliConfig) -> tuple[str, bool, str | None]:
    """One line a stateful process printed: (text for the reply, turn ended, error)."""
    if cfg.framing == "sentinel":
        if line.rstrip("\r\n") == cfg.sentinel:
            return "", True, None
        return line, False, None
    try:
        msg = json.loads(line)
    except ValueError:
        return line, False, None
    if not isinstance(msg, dict) or "type" not in msg:
        return line, False, None
    kind = msg.get("type")
    if kind == "delta":
        return str(msg.get("text", "")), False, None
    if kind == "end":
        return str(msg.get("text", "") or ""), True, None
    if kind == "error":
        return "", False, str(msg.get("message", "error"))[:500]
    return line, False, None


def _stderr_hint(stderr: CappedText) -> str:
    lines = [x for x in stderr.text.splitlines() if x.strip()]
    return f": {lines[-1][:300]}" if lines else ""


async def _drain(stream: asyncio.StreamReader | None, into: CappedText) -> None:
    if stream is None:
        return
    while True:
        chunk = await stream.read(65_536)
        if not chunk:
            return
        into.add(chunk)


async def _feed(proc: asyncio.subprocess.Process, text: str) -> None:
    """Write the prompt to stdin and close it (a program that does not read it is fine)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode())
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        try:
            proc.stdin.close()
        except (OSError, RuntimeError):
            pass


async def _settle(drain: asyncio.Future, feed: asyncio.Future | None) -> None:
    """Wait for stderr to be read to its end (the group is gone: it ends promptly)."""
    try:
        await asyncio.wait_for(asyncio.shield(drain), 1.0)
    except (TimeoutError, Exception):
        drain.cancel()
    if feed is not None:
        if not feed.done():
            feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)


__all__ = [
    "CLI_OUTPUT_TAG",
    "CliConfig",
    "CliProvider",
    "check_config",
    "command_label",
    "process_problems",
    "reply_text",
    "spec_defaults",
]

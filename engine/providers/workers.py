"""Provider calls spread over worker processes, for when one event loop is the limit.

With ``provider_workers: N`` in org.json, the registry hands the engine a
:class:`PooledProvider` for each openai / anthropic / ollama model instead of the
adapter itself. Each of the N workers (worker.py) runs the same adapters with their
own SDK clients in their own event loop; a call goes to the worker with the fewest
calls in flight and its text streams back over a pipe, the deltas of one loop
iteration joined into one message. To the engine and the retry loop a PooledProvider
is any other provider: the same stream items, the same ProviderErrors, cancellation
by closing the stream.

Processes: workers are started at the start of a run (`wait_ready`), die with the run
(PR_SET_PDEATHSIG, and EOF on their stdin if it is closed or the run dies), and are
closed with the registry. A worker that dies mid-run fails its calls as `connection`
errors (retried like any other) and is started again for the next call.

Secrets: a worker's environment is an allow-list (paths, locale, TLS and proxy
settings, the providers' base-URL variables); no API key is ever in it. An adapter's
key goes over the pipe, to the workers only, when that adapter is opened.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import struct
import sys
from collections import deque
from typing import Any, AsyncIterator

from lemming.engine import process_group
from lemming.engine.providers.base import CompletionRequest, ProbeResult, ProviderError, StreamItem, TextDelta

HEADER = struct.Struct(">I")
#: What reaches a worker's environment; everything else (API keys first) stays out.
ENV_ALLOWED = frozenset(
    {
        "PATH", "HOME", "USER", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_HOST", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
    }
)
#: A worker has this long to start and open its adapters (it imports the SDKs).
START_TIMEOUT_S = 60.0
STDERR_TAIL = 20


def worker_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a worker starts with: the allow-list, nothing else."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if k in ENV_ALLOWED or k.startswith("LC_")}


#: `provider_workers: "auto"` spreads a model's calls over workers only when this many
#: can be in flight to its server at once: below it, one loop keeps up and a pipe is a cost.
SPREAD_AT = 64
#: ... and over at most this many workers (each holds its own SDK imports, ~60 MB).
MAX_AUTO_WORKERS = 16


def default_workers() -> int:
    """`provider_workers: "auto"`: one per core, none on a single core.

    With its calls in workers the engine's own process spends about a tenth of the
    SDK's CPU per call, so it shares a core with a worker rather than keeping one to
    itself: on two cores, two workers give a tick of 100 calls both cores (measured in
    docs/scaling.md), where one left the second core to the engine's small share."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 2 else min(cores, MAX_AUTO_WORKERS)


class _Call:
    """One call in flight: what its worker has sent that its stream has not taken yet."""

    __slots__ = ("items", "waiter", "done")

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.waiter: asyncio.Future | None = None
        self.done = False

    def put(self, msg: tuple) -> None:
        self.items.append(msg)
        if msg[0] != "d":
            self.done = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _WorkerProcess:
    """One worker: its process, its pipes, its calls in flight."""

    def __init__(self, pool: "WorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.calls: dict[int, _Call] = {}
        self.opened: dict[int, asyncio.Future] = {}
        self.alive = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._out: list[tuple] = []
        self._flush_scheduled = False
        self._ready: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self.starting: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lemming.engine.providers.worker", str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.pool.env, limit=1 << 24,
        )
        self.alive = True
        self.calls.clear()
        self.opened.clear()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._read_stderr())]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise ProviderError("connection", f"provider worker {self.index} did not start within {START_TIMEOUT_S:g}s") from None

    # -- sending ---------------------------------------------------------------------

    def send(self, msg: tuple) -> None:
        self._out.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or not self.alive or self.proc is None or self.proc.stdin is None:
            self._out = []
            return
        data = pickle.dumps(self._out, pickle.HIGHEST_PROTOCOL)
        self._out = []
        try:
            self.proc.stdin.write(HEADER.pack(len(data)) + data)
        except (ConnectionError, RuntimeError):
            pass  # the reader sees the worker gone and fails its calls

    def open(self, aid: int) -> asyncio.Future:
        """Open adapter `aid` in this worker (once); the future says whether it built."""
        fut = self.opened.get(aid)
        if fut is None:
            fut = self.opened[aid] = asyncio.get_running_loop().create_future()
            self.send(("o", aid, *self.pool.adapters[aid]))
        return fut

    # -- receiving -------------------------------------------------------------------

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        calls = self.calls
        try:
            while True:
                (n,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
                for msg in pickle.loads(await stdout.readexactly(n)):
                    code = msg[0]
                    if code == "d" or code == "i" or code == "e":
                        call = calls.get(msg[1])
                        if call is not None:
                            call.put(msg)
                    elif code == "O":
                        fut = self.opened.get(msg[1])
                        if fut is not None and not fut.done():
                            fut.set_result(msg[2])
                    elif code == "r" and self._ready is not None and not self._ready.done():
                        self._ready.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # a frame that does not decode: the worker is unusable
            self.stderr_tail.append(f"bad frame from the worker: {type(e).__name__}: {e}")
        await self._died()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    async def _died(self) -> None:
        was_alive, self.alive = self.alive, False
        proc, pid = self.proc, self.pid
        # Taken now: a new process may be started in this object while this one is reaped.
        calls, opened, ready = list(self.calls.values()), list(self.opened.values()), self._ready
        self.calls.clear()
        self.opened.clear()
        code = None
        if proc is not None:
            try:
                code = await asyncio.wait_for(asyncio.shield(proc.wait()), 1)
            except TimeoutError:
                proc.kill()
                code = await proc.wait()
        if not was_alive:
            return  # stopped on purpose
        tail = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        why = f"provider worker {self.index} (pid {pid}) exited with code {code}" + (f": {tail}" if tail else "")
        for call in calls:
            if not call.done:
                call.put(("e", 0, "connection", why + "; the call is retried on a new worker", None, None, None))
        for fut in opened:
            if not fut.done():
                fut.set_result(("connection", why))
        if ready is not None and not ready.done():
            ready.set_exception(ProviderError("connection", why))

    async def stop(self) -> None:
        """Close the worker's stdin (it finishes), then wait; kill it if it will not go."""
        self.alive = False
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        process_group.release(proc)  # its pipes' readers were just cancelled


class WorkerPool:
    """N worker processes shared by every pooled adapter of a registry."""

    def __init__(self, size: int, env: dict[str, str] | None = None) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.env = worker_env(env)
        #: adapter id -> (provider, base_url, api_key, options, connections), as the worker opens it
        self.adapters: dict[int, tuple] = {}
        self._workers = [_WorkerProcess(self, i) for i in range(size)]
        self._ids = itertools.count(1)

    def register(self, provider: str, base_url: str | None, api_key: str | None, options: dict, connections: int) -> int:
        aid = next(self._ids)
        self.adapters[aid] = (provider, base_url, api_key, options, connections)
        return aid

    def pids(self) -> list[int]:
        """The live workers' process ids (for the benchmark's CPU figures and for tests)."""
        return [w.pid for w in self._workers if w.alive and w.pid is not None]

    async def _ensure(self, worker: _WorkerProcess) -> _WorkerProcess:
        if worker.alive:
            return worker
        if worker.starting is None:
            worker.starting = asyncio.Lock()  # one start at a time per worker; workers start together
        async with worker.starting:
            if not worker.alive:
                await worker.start()
        return worker

    async def start(self) -> None:
        """Start every worker and open every registered adapter in each; raises the first
        adapter that cannot be built as a config ProviderError (after all have tried)."""
        await asyncio.gather(*(self._ensure(w) for w in self._workers))
        errors = await asyncio.gather(*(w.open(aid) for w in self._workers for aid in self.adapters))
        failed = next((e for e in errors if e), None)
        if failed:
            raise ProviderError(failed[0], failed[1])

    async def worker_for(self, aid: int) -> _WorkerProcess:
        """The worker with the fewest calls in flight, started and with `aid` open."""
        worker = min(self._workers, key=lambda w: len(w.calls) if w.alive else -1)
        if not worker.alive:
            await self._ensure(worker)
        opened = worker.open(aid)
        if not opened.done():
            await opened
        error = opened.result()
        if error:
            raise ProviderError(error[0], error[1])
        return worker

    async def aclose(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)


class PooledProvider:
    """A provider whose calls run in the pool's workers (one adapter per worker)."""

    def __init__(self, pool: WorkerPool, name: str, base_url: str | None, api_key: str | None, options: dict, connections: int) -> None:
        self.name = name
        self.base_url = base_url
        self.pool = pool
        self.aid = pool.register(name, base_url, api_key, options, connections)
        self._cids = pool._ids  # one counter for adapters and calls: ids never collide

    def __repr__(self) -> str:  # never shows the key
        return f"PooledProvider({self.name}, base_url={self.base_url!r}, workers={self.pool.size})"

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        worker = await self.pool.worker_for(self.aid)
        cid = next(self._cids)
        call = worker.calls[cid] = _Call()
        worker.send(("s", cid, self.aid, request))
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not call.items:
                    call.waiter = loop.create_future()
                    await call.waiter
                    call.waiter = None
                items, call.items = call.items, []
                for msg in items:
                    code = msg[0]
                    if code == "d":
                        yield TextDelta(msg[2])
                    elif code == "i":
                        yield msg[2]
                        return
                    else:
                        raise ProviderError(msg[2], msg[3], retry_after=msg[4], status=msg[5], partial_usage=msg[6])
        finally:
            worker.calls.pop(cid, None)
            if not call.done and worker.alive:
                worker.send(("c", cid))  # abandoned (cancelled, timed out, cut off): stop it there

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        try:
            worker = await self.pool.worker_for(self.aid)
        except ProviderError as e:
            return ProbeResult(False, str(e))
        cid = next(self._cids)
        call = worker.calls[cid] = _Call()
        worker.send(("p", cid, self.aid, model, timeout))
        try:
            while not call.done:
                call.waiter = asyncio.get_running_loop().create_future()
                await call.waiter
        finally:
            worker.calls.pop(cid, None)
            if not call.done and worker.alive:
                worker.send(("c", cid))
        msg = call.items[-1]
        if msg[0] == "i":
            return msg[2]
        return ProbeResult(False, str(ProviderError(msg[2], msg[3], status=msg[5])))

    async def aclose(self) -> None:
        for w in self.pool._workers:
            if w.alive and self.aid in w.opened:
                w.send(("x", self.aid))

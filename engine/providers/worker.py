"""A provider worker process: SDK clients in their own event loop, calls streamed back over pipes.

Started by workers.WorkerPool as ``python -m lemming.engine.providers.worker PARENT_PID``.
It reads batches of messages on stdin and writes batches on a private copy of stdout (fd 1
itself is pointed at stderr, so nothing an SDK prints can corrupt the protocol). It dies
with its parent: PR_SET_PDEATHSIG on Linux, and in any case when stdin reaches EOF.

The wire (workers.py has the other half): a frame is a 4-byte big-endian length and a
pickled list of messages, each a tuple starting with a one-letter code.

parent → worker: ("o", aid, provider, base_url, api_key, options, connections) open an
adapter; ("s", cid, aid, request) stream a call; ("p", cid, aid, model, timeout) probe;
("c", cid) cancel a call; ("x", aid) close an adapter.

worker → parent: ("r",) ready; ("O", aid, error | None) opened; ("d", cid, text) text
(the deltas of one call that arrived in the same loop iteration, joined); ("i", cid, item)
the final Usage or a probe's ProbeResult; ("e", cid, kind, message, retry_after, status,
partial_usage) a ProviderError. A call ends with its "i" or "e".
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
import signal
import struct
import sys
from typing import Any

from lemming.engine.providers.base import ProviderConfig, ProviderError, TextDelta, Usage

HEADER = struct.Struct(">I")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # stdin EOF still ends us
    if os.getppid() != parent_pid:
        os._exit(0)


class Worker:
    def __init__(self, out_fd: int) -> None:
        from lemming.engine.providers.registry import ADAPTERS

        self._adapters_table = ADAPTERS
        self._out_fd = out_fd
        self._out: list[Any] = []
        self._open_text: dict[int, list[str]] = {}  # call id -> its text message in _out
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.adapters: dict[int, Any] = {}
        self.broken: dict[int, ProviderError] = {}
        self.tasks: dict[int, asyncio.Task] = {}

    # -- sending -------------------------------------------------------------------

    def send(self, msg: tuple) -> None:
        self._out.append(msg)
        self._schedule()

    def send_text(self, cid: int, text: str) -> None:
        parts = self._open_text.get(cid)
        if parts is None:
            parts = self._open_text[cid] = [text]
            self._out.append(["d", cid, parts])
            self._schedule()
        else:
            parts.append(text)

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Everything produced in this loop iteration goes in one frame.
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        batch = [("d", m[1], "".join(m[2])) if type(m) is list else m for m in self._out]
        self._out = []
        self._open_text.clear()
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        view = memoryview(HEADER.pack(len(data)) + data)
        while view:  # blocking: the parent always reads
            n = os.write(self._out_fd, view)
            view = view[n:]

    # -- handling ------------------------------------------------------------------

    def handle(self, msg: tuple) -> None:
        code = msg[0]
        if code == "s":
            _, cid, aid, request = msg
            self.tasks[cid] = self._loop.create_task(self._stream(cid, aid, request))
        elif code == "c":
            task = self.tasks.pop(msg[1], None)
            if task is not None:
                task.cancel()
        elif code == "o":
            self._open(*msg[1:])
        elif code == "p":
            _, cid, aid, model, timeout = msg
            self.tasks[cid] = self._loop.create_task(self._probe(cid, aid, model, timeout))
        elif code == "x":
            adapter = self.adapters.pop(msg[1], None)
            if adapter is not None:
                self._loop.create_task(adapter.aclose())

    def _open(self, aid: int, provider: str, base_url: str | None, api_key: str | None, options: dict, connections: int) -> None:
        error = None
        try:
            module_name, class_name = self._adapters_table[provider]
            cls = getattr(importlib.import_module(module_name), class_name)
            self.adapters[aid] = cls(ProviderConfig(provider, base_url, api_key, options, connections))
        except ProviderError as e:
            self.broken[aid] = e
            error = (e.kind, e.message)
        except Exception as e:  # an SDK that fails to import or build
            self.broken[aid] = ProviderError("config", f"cannot build the {provider} adapter: {type(e).__name__}: {e}")
            error = ("config", self.broken[aid].message)
        self.send(("O", aid, error))

    def _adapter(self, aid: int) -> Any:
        adapter = self.adapters.get(aid)
        if adapter is None:
            raise self.broken.get(aid) or ProviderError("config", f"adapter {aid} was never opened in this worker")
        return adapter

    def _send_error(self, cid: int, e: BaseException) -> None:
        if not isinstance(e, ProviderError):
            e = ProviderError("server", f"in the provider worker: {type(e).__name__}: {e}")
        self.send(("e", cid, e.kind, e.message, e.retry_after, e.status, e.partial_usage))

    async def _stream(self, cid: int, aid: int, request: Any) -> None:
        try:
            async for item in self._adapter(aid).stream(request):
                if type(item) is TextDelta:
                    self.send_text(cid, item.text)
                else:
                    self.send(("i", cid, item))
                    if isinstance(item, Usage):
                        return
            raise ProviderError("malformed", "the adapter's stream ended without usage")
        except asyncio.CancelledError:
            pass  # the parent gave up on this call: it expects nothing more
        except BaseException as e:
            self._send_error(cid, e)
        finally:
            self.tasks.pop(cid, None)

    async def _probe(self, cid: int, aid: int, model: str, timeout: float) -> None:
        try:
            self.send(("i", cid, await self._adapter(aid).probe(model, timeout)))
        except asyncio.CancelledError:
            pass
        except BaseException as e:
            self._send_error(cid, e)
        finally:
            self.tasks.pop(cid, None)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.send(("r",))
        try:
            while True:
                (n,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                for msg in pickle.loads(await reader.readexactly(n)):
                    self.handle(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the parent closed our stdin (or died): finish
        for task in list(self.tasks.values()):
            task.cancel()
        for adapter in list(self.adapters.values()):
            try:
                await adapter.aclose()
            except Exception:
                pass


async def _main(out_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    await Worker(out_fd).serve(reader)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent(int(args[0]))
    # Ctrl-C in the terminal reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    asyncio.run(_main(out_fd))


if __name__ == "__main__":
    main()

"""The HTTP clients under the official SDKs: one pooled, keep-alive client per adapter.

The SDKs' default transport (httpx) costs about 6 ms of CPU per streamed call; their
aiohttp transport (`DefaultAioHttpClient`, the ``aiohttp`` extra of ``openai`` and
``anthropic``) about 2.8 ms. Each adapter builds one client when it is built and keeps
it for the run, with a connection pool as large as the calls that can be in flight to
that server at once (the model's ``concurrency``), so that no call waits for a socket
and no connection is opened twice.

``transport`` in a model's ``provider_config`` chooses: ``"aiohttp"`` (default where the
SDK offers it) or ``"httpx"`` (the SDK's own default, e.g. to go through an HTTP proxy
that only httpx honours).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from lemming.engine.providers.base import ProviderError

#: Idle connections are kept this long: longer than a tick's gap at most intervals.
KEEPALIVE_S = 30.0
TRANSPORTS = ("aiohttp", "httpx")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What org.json says about provider calls (see docs/scaling.md).

    ``workers``: 0 runs every SDK client in the engine's own process and event loop;
    N > 0 spreads calls over N worker processes; None ("auto") spreads the calls to a
    model over one worker per core when many can be in flight to it at once (see
    workers.SPREAD_AT) and the machine has more than one core.
    ``connections``: the connection pool of each adapter; None sizes it to the
    model's concurrency.
    ``max_concurrency``: the organisation's turns in flight at once (org.json), which
    bounds the calls in flight to any one model.
    """

    workers: int | None = 0
    connections: int | None = None
    max_concurrency: int | None = None

    @classmethod
    def from_org(cls, settings: Any) -> "ProviderSettings":
        workers = getattr(settings, "provider_workers", 0)
        if workers == "auto":
            workers = None
        return cls(
            workers=workers,
            connections=getattr(settings, "provider_connections", None),
            max_concurrency=getattr(settings, "max_concurrency", None),
        )


def sdk_http_client(sdk: Any, transport: str, connections: int, timeout: float) -> Any:
    """An HTTP client for the `openai` or `anthropic` SDK (the module is passed in), pooled
    to `connections` sockets, all kept alive.

    Raises ProviderError(kind="config") when the aiohttp transport is asked for and the
    SDK was installed without its ``aiohttp`` extra: a missing dependency is said, never
    silently swapped for the slow path.
    """
    limits_type = type(sdk.DEFAULT_CONNECTION_LIMITS)  # httpx.Limits of the SDK's own httpx
    limits = limits_type(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_S
    )
    name = sdk.__name__
    if transport == "httpx":
        return sdk.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)
    factory = getattr(sdk, "DefaultAioHttpClient", None)
    if factory is None:
        raise ProviderError(
            "config",
            f"this {name} SDK has no aiohttp transport; install {name}[aiohttp] "
            f"(`make setup`) or set provider_config.transport to \"httpx\"",
        )
    fix_exception_map(f"{name}._vendor.httpx_aiohttp.transport")
    try:
        return factory(limits=limits, timeout=timeout)
    except RuntimeError as e:  # the SDK says the extra is missing
        raise ProviderError(
            "config", f"{e}; install {name}[aiohttp] (`make setup`) or set provider_config.transport to \"httpx\""
        ) from None


def fix_exception_map(module_name: str) -> None:
    """The aiohttp transports for httpx (the ``httpx-aiohttp`` package, and the copy vendored
    in the SDKs) map every aiohttp connection error (refused, reset, server gone
    mid-stream) to httpx's ConnectTimeout, so the SDK calls a refused connection a
    timeout. This maps them to httpx's NetworkError, as httpx itself would raise: refused
    connections keep their own, more specific ConnectError entry, and timeouts theirs, so
    the failure kinds (connection, stream_cut, timeout) are what they were on httpx."""
    try:
        vendored = importlib.import_module(module_name)
    except ImportError:
        return
    table = getattr(vendored, "AIOHTTP_EXC_MAP", None)
    aiohttp = getattr(vendored, "aiohttp", None)
    httpx = getattr(vendored, "httpx", None)
    if not isinstance(table, dict) or aiohttp is None or httpx is None:
        return
    if table.get(aiohttp.ClientConnectionError) in (httpx.ConnectTimeout, httpx.ConnectError):
        table[aiohttp.ClientConnectionError] = httpx.NetworkError


def httpx_aiohttp_transport(connections: int) -> Any:
    """An aiohttp transport for a plain httpx client (the `ollama` SDK's), pooled to
    `connections` sockets. httpx's own pool scans every connection for every one that
    goes idle: at a hundred streams that scan costs more than the stream."""
    try:
        import httpx
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        raise ProviderError(
            "config", "the httpx-aiohttp package is missing (`make setup` installs it), or set provider_config.transport to \"httpx\""
        ) from None
    fix_exception_map("httpx_aiohttp.transport")
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_S)
    return AiohttpTransport(limits=limits)


def pool_size(connections: int | None, concurrency: int) -> int:
    """The sockets an adapter keeps: what org.json says, else the model's concurrency."""
    return max(1, connections if connections else concurrency)

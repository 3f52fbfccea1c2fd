"""Shared by the SDK adapters: HTTP status → ProviderError kind, Retry-After, key redaction."""

from __future__ import annotations

import email.utils
import time
from typing import Any, Mapping

from lemming.engine.providers.base import ErrorKind, ProviderError, Usage

#: Longest SDK message kept in an error line (bodies can be long HTML pages from proxies).
MAX_MESSAGE = 300


def parse_retry_after(headers: Mapping[str, str] | Any | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    get = headers.get
    ms = get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = get("retry-after")
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        value = float(raw)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def kind_for_status(status: int) -> ErrorKind:
    """How an HTTP status is retried (the SDKs' own rules: 408, 409, 429 and 5xx are transient)."""
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    return "bad_request"


class Redactor:
    """Removes a secret from text before it goes into any error message."""

    def __init__(self, *secrets: str | None) -> None:
        # Very short "keys" (dummies like "x") would mangle ordinary words; skip them.
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[redacted]")
        text = " ".join(text.split())
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 3] + "..."
        return text


def status_error(
    status: int,
    message: str,
    headers: Mapping[str, str] | Any | None,
    redact: Redactor,
    *,
    partial_usage: Usage | None = None,
) -> ProviderError:
    kind = kind_for_status(status)
    retry_after = parse_retry_after(headers) if kind in ("rate_limit", "server") else None
    return ProviderError(
        kind,
        redact(message) or f"HTTP {status}",
        retry_after=retry_after,
        status=status,
        partial_usage=partial_usage,
    )


def transport_error_kind(e: BaseException, *, started: bool) -> ErrorKind | None:
    """Classify a raw httpx / httpx2 transport error that an SDK let through (None: not one).

    Matched by class name along the MRO so it works for both HTTP libraries the SDKs use.
    """
    names = {
        cls.__name__ for cls in type(e).__mro__ if cls.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")
    }
    if not names:
        return None
    if "TimeoutException" in names or "TimeoutError" in names:
        return "timeout"
    if "ConnectError" in names:
        return "connection"
    if "TransportError" in names or "NetworkError" in names or "ProtocolError" in names:
        return "stream_cut" if started else "connection"
    return None


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "an object"}


def unclassified_error(
    e: BaseException, *, started: bool, usage: Any, redact: "Redactor", where: str
) -> "ProviderError":
    """The error for what an adapter's SDK-specific checks did not classify: a raw
    transport error, a request that could not be made, or a stream it could not read."""
    r = redact
    kind = transport_error_kind(e, started=started)
    if kind is not None:
        at = "mid-stream" if kind == "stream_cut" else f"talking to {where}"
        return ProviderError(kind, f"{type(e).__name__} {at}: {r(str(e))}", partial_usage=usage)
    if not started:
        # The request could not even be made (an argument this server or SDK refuses): retrying cannot help.
        return ProviderError("bad_request", f"request failed: {type(e).__name__}: {r(str(e))}")
    return ProviderError("malformed", f"unexpected {type(e).__name__} reading the stream: {r(str(e))}", partial_usage=usage)


def not_an_api(where: str, api: str, content_type: str | None, body: bytes) -> str | None:
    """What to say when the server at `where` answered something other than JSON (an HTML
    page, an event stream, plain text) where `api` answers JSON; None when it is JSON."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return None
    start = body[:60].decode("utf-8", "replace")
    shown = " ".join("".join(ch if ch.isprintable() else " " for ch in start).split())
    return (f"the server at {where} did not answer as {api}: it sent {kind or 'no content type'}"
            f"{', starting ' + repr(shown) if shown else ', empty'}; check the base_url (it usually ends in /v1)")


def option(opts: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any, provider: str, *, choices: tuple = ()) -> Any:
    """One provider_config option, type-checked: a bad value is a config error naming the field."""
    if name not in opts or opts[name] is None:
        return default
    value = opts[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if ok and choices and value not in choices:
        ok = False
    if not ok:
        want = " or ".join(repr(c) for c in choices) if choices else " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ProviderError("config", f"{provider} provider_config.{name}: must be {want}, not {shown}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value

"""Plain values as the store's columns hold them: a restricted pickle, compact JSON, zstd.

Event rows, turn records, outbox entries, prompt lines and snapshots are pickled (protocol 5, no
memo) rather than JSON: encoding is 4-8x cheaper and decoding 2x, on the values the
engine's events hold (str, int, float, bool, None, lists, tuples, dicts, sets).
Reading never imports or calls anything: the unpickler refuses every global but a
few builtin containers and scalars (what the writer turns odd values into), so a
hostile file can at worst fail to decode. Compression's checksum catches damage first.

Definitions and prompt heads are compact JSON (`dumps` / `loads`); so were event rows
in files written before they were pickled (read alike).

Compression is Zstandard level 1 (`compress`): on a 100-agent run's batches it is
four times faster than zlib level 1 and 20% smaller, and decompresses three times
faster (docs/performance.md). `decompress` reads both: a file written before the
switch holds zlib streams, told apart by the zstd frame's magic number.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

from lemming.engine.events import plain_value

try:  # the standard library's from Python 3.14 on; the backport (same API) before
    from compression import zstd as _zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd as _zstd  # type: ignore[import-not-found,no-redef]

#: zstd levels: 3 is 3% smaller and 10% slower on sim runs; negative levels are
#: faster still but no smaller than zlib
BODY_LEVEL = 1
PROMPT_LEVEL = 1

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: What a damaged compressed column raises in `decompress`.
CompressionError = (zlib.error, _zstd.ZstdError)


_OPTIONS: dict[int, dict] = {}


def compress(b: bytes, level: int = BODY_LEVEL) -> bytes:
    """`b` compressed for a blob column: a zstd frame with its content checksum (damage is
    caught on reading, as zlib's checksum did)."""
    opts = _OPTIONS.get(level)
    if opts is None:
        P = _zstd.CompressionParameter
        opts = _OPTIONS[level] = {P.compression_level: level, P.checksum_flag: 1}
    return _zstd.compress(b, options=opts)


class Compressor:
    """`compress` at one level with a zstd context kept from call to call: a new one per
    call allocates and clears its tables each time (3% of compressing a tick's
    batch). For one thread (a recorder's); the frames are what `compress` writes."""

    __slots__ = ("_c", "_flush")

    def __init__(self, level: int = BODY_LEVEL) -> None:
        P = _zstd.CompressionParameter
        self._c = _zstd.ZstdCompressor(options={P.compression_level: level, P.checksum_flag: 1})
        self._flush = _zstd.ZstdCompressor.FLUSH_FRAME

    def __call__(self, b: bytes) -> bytes:
        c = self._c
        c.set_pledged_input_size(len(b))  # in the frame's header, as compress() writes it
        return c.compress(b, self._flush)


def decompress(b: bytes) -> bytes:
    """What `compress` wrote, or a zlib stream an older lemming wrote (one of
    `CompressionError` if damaged)."""
    if b[:4] == _ZSTD_MAGIC:
        return _zstd.decompress(b)
    return zlib.decompress(b)

_SAFE_GLOBALS = {
    ("builtins", n): getattr(builtins, n) for n in ("str", "int", "float", "list", "tuple", "dict", "set", "frozenset")
}

_SAFE_TYPES = frozenset(_SAFE_GLOBALS.values())


class _Pickler(pickle.Pickler):
    """Writes only plain values: odd ones become what JSON made of them (a dataclass its
    fields, a Path or a str subclass its text); anything else is an error, as it was."""

    def reducer_override(self, obj: Any) -> Any:
        if obj.__class__ is type and obj in _SAFE_TYPES:
            return NotImplemented  # the builtins named in the reductions below: saved by name
        if isinstance(obj, str):
            return str, (str.__getitem__(obj, slice(None)),)
        if isinstance(obj, int):
            return int, (int.__index__(obj),)
        if isinstance(obj, float):
            return float, (float.__float__(obj),)
        if isinstance(obj, dict):
            return dict, (dict(obj),)
        if isinstance(obj, list):
            return list, (list(obj),)
        if isinstance(obj, tuple):
            return tuple, (tuple(obj),)
        if isinstance(obj, (set, frozenset)):
            return (set if isinstance(obj, set) else frozenset), (set(obj),)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dict, (plain_value(obj),)
        if isinstance(obj, Path):
            return str, (str(obj),)
        raise TypeError(f"{type(obj).__name__} cannot be recorded")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        got = _SAFE_GLOBALS.get((module, name))
        if got is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not a recorded value")
        return got


class _Sink:
    """Where a `_Pickler` writes: the pickler hands over its whole buffer at the end of
    each dump (and a very large text apart), kept as they are rather than copied into
    a BytesIO and out again."""

    __slots__ = ("write",)

    def __init__(self, parts: list[Any]) -> None:
        self.write = parts.append


def pack(v: Any, *more: Any) -> bytes:
    """`v` pickled (plain values only; see `_Pickler`), then each of `more` after it (what
    `unpickle_head` reads one at a time)."""
    parts: list[Any] = []
    p = _Pickler(_Sink(parts), 5)
    p.fast = True  # no memo: nothing the engine records is shared or cyclic
    p.dump(v)
    for m in more:
        p.dump(m)
    return parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)


def unpickle(b: bytes) -> Any:
    """What `pack` wrote; refuses anything but plain values (pickle.UnpicklingError)."""
    return _Unpickler(io.BytesIO(b)).load()


#: The first byte of what `pack` writes (pickle's PROTO opcode); JSON never starts so.
PICKLE_START = b"\x80"


def unpickle_head(b: bytes) -> tuple[Any, bytes]:
    """The first value `pack` wrote at the start of `b`, and the bytes after it."""
    f = io.BytesIO(b)
    v = _Unpickler(f).load()
    return v, b[f.tell():]


def pack_blob(v: Any, level: int) -> bytes:
    """`v` pickled and compressed: a blob column."""
    return compress(pack(v), level)


def unpack_blob(blob: bytes) -> Any:
    """What `pack_blob` wrote (one of CompressionError, pickle.UnpicklingError or EOFError if damaged)."""
    return unpickle(decompress(blob))


def _json_default(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return plain_value(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


# One encoder for everything: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)


def dumps(v: Any) -> bytes:
    """`v` as compact UTF-8 JSON."""
    # surrogatepass: a model's text may hold lone surrogates; they survive the round trip.
    return _ENCODER.encode(v).encode("utf-8", "surrogatepass")


def loads(b: bytes) -> Any:
    """What `dumps` wrote."""
    return json.loads(b.decode("utf-8", "surrogatepass"))


def text_hash(b: bytes) -> str:
    """The key of a text in the `texts` table."""
    return hashlib.sha256(b).hexdigest()[:32]

"""Shared pieces of the fault-injection suite: hostile input strategies, the two
example budgets (a cheap one for `make test`, ten thousand for `make test-faults`),
and the checks every rejection and every recorded event must pass."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property in the default suite (CI, 2 cores) and in the slow suite.
FAST_EXAMPLES = int(os.environ.get("LEMMING_FUZZ_FAST", "100"))
SLOW_EXAMPLES = int(os.environ.get("LEMMING_FUZZ_EXAMPLES", "10000"))

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example]

FAST = settings(max_examples=FAST_EXAMPLES, deadline=None, suppress_health_check=_HEALTH, database=None)
SLOW = settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=_HEALTH, database=None)


def slow(fn):
    """Mark a property test as a 10,000-case slow one."""
    return pytest.mark.slow(pytest.mark.timeout(3600)(SLOW(fn)))


# --- hostile values -------------------------------------------------------------------

RESERVED = ["operator", "Operator", "OPERATOR", "all", "ALL", "none", "None", "*", "agent_template", "engine"]
PATHS = ["../x", "../../etc/passwd", "..", ".", "/etc/passwd", "/abs/path", "C:\\Windows", "a/b", "a\\b", "~root", "./a"]
CONTROL = ["a\nb", "alice\n", "\nalice", "a\rb", "a\x00b", "\x1b[31mred\x1b[0m", "\x07bell", "a\tb", "a\x85b", "a\u2028b", "\x7f"]
UNICODE = ["\u202eevil", "ｆｕｌｌ", "名前", "é", "e\u0301", "😀", "\ufeffbom", "\u200bzero", "Ω", "ß"]
SURROGATES = ["\ud800", "a\udfffb", "\udcff"]
PLAIN = ["alice", "bob", "carol", "dave", "a", "x-1", "y.2", "z_3", "A", "NaN", "Infinity", "null", "true", "{}", "[]", ""]

# Hypothesis keeps every drawn value for the whole run (10,000 examples of megabyte
# strings would be gigabytes), so long strings are drawn as a marker naming their
# character and length, and made by `expand` / `serialise` inside the test.
BIG = "\u0000BIG{}:{}\u0000"
_BIG_RE = re.compile("\u0000BIG([0-9]+):([0-9]+)\u0000")
_BIG_JSON_RE = re.compile(r'"\\u0000BIG([0-9]+):([0-9]+)\\u0000"')


def big(chars: list[str], sizes: list[int]):
    return st.builds(lambda c, n: BIG.format(ord(c), n), st.sampled_from(chars), st.sampled_from(sizes))


hostile_text = st.one_of(
    st.sampled_from(RESERVED + PATHS + CONTROL + UNICODE + SURROGATES + PLAIN),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=8),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\n", "{", "😀"]), st.sampled_from([64, 65, 501])),
    big(["x", "é", "\n", "{", "😀"], [5_001]),
)
#: Strings past every limit (payloads, instructions, the 2 MB file limit): used sparingly.
huge_text = big(["x", "é", "\n"], [20_001, 60_000, 2_100_000])


def expand(obj: Any) -> Any:
    """`obj` with every long-string marker made into its string."""
    if isinstance(obj, str):
        m = _BIG_RE.fullmatch(obj)
        return chr(int(m.group(1))) * int(m.group(2)) if m else obj
    if isinstance(obj, list):
        return [expand(x) for x in obj]
    if isinstance(obj, dict):
        return {expand(k): expand(v) for k, v in obj.items()}
    return obj

hostile_number = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, 10**400, -(10**400), 1e308, -1e308, 5e-324, 0.5, -0.0]),
)

json_leaf = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text)
#: Arbitrary JSON-ish values, NaN and infinities included.
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=10,
)

#: Placeholder a document carries where the serialised text gets a deeply nested value.
DEEP = "\u0000DEEP{}\u0000"


def deep_text(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_marker = st.builds(lambda d, k: DEEP.format(f"{d}:{k}"), st.sampled_from([40, 65, 200, 900, 3000, 100_000]), st.sampled_from(["list", "dict"]))


def serialise(doc: Any, rng_choices: dict[str, Any]) -> bytes:
    """A document as a file's bytes, in one of the ways people (and tools) write them."""
    ascii_only = rng_choices.get("ascii", True)
    text = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True, indent=rng_choices.get("indent"))
    # Replace deep-nesting and long-string placeholders (json.dumps escaped their NULs).

    def deep(m: "re.Match[str]") -> str:
        depth, kind = m.group(1).split(":")
        return deep_text(int(depth), kind)

    text = re.sub(r'"\\u0000DEEP([0-9]+:[a-z]+)\\u0000"', deep, text)
    text = _BIG_JSON_RE.sub(lambda m: json.dumps(chr(int(m.group(1))) * int(m.group(2)), ensure_ascii=ascii_only), text)
    cut = rng_choices.get("cut")
    if cut is not None:
        text = text[: int(len(text) * cut)]
    text = rng_choices.get("prefix", "") + text + rng_choices.get("suffix", "")
    data = text.encode("utf-8", "surrogatepass")
    if rng_choices.get("latin1"):
        data = data.replace(b"e", b"\xe9")
    return data


serial_choices = st.fixed_dictionaries(
    {},
    optional={
        "ascii": st.booleans(),
        "indent": st.sampled_from([None, 2]),
        "cut": st.floats(0, 0.99),
        "prefix": st.sampled_from(["\ufeff", "// comment\n", " ", "\x00", "NaN"]),
        "suffix": st.sampled_from([",", "}", "\n\n", "garbage", "\x00", " // trailing"]),
        "latin1": st.booleans(),
    },
)


def set_path(doc: dict[str, Any], path: tuple, value: Any) -> None:
    node: Any = doc
    for i, p in enumerate(path[:-1]):
        nxt = node.get(p) if isinstance(node, dict) else None
        if isinstance(path[i + 1], int):
            if not isinstance(nxt, list) or not nxt:
                nxt = [None]
        elif not isinstance(nxt, dict):
            nxt = {}
        node[p] = nxt
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        node[min(last, len(node) - 1)] = value
    else:
        node[last] = value


def del_path(doc: dict[str, Any], path: tuple) -> None:
    node: Any = doc
    for p in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(p), (dict, list)):
            return
        node = node[p]
    if isinstance(node, dict):
        node.pop(path[-1], None)


# --- checks ---------------------------------------------------------------------------

_BAD_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}


def assert_one_line(text: str, what: str = "message") -> None:
    """A message a person reads: one printable line (no line breaks, no control
    characters, valid Unicode), not absurdly long."""
    assert isinstance(text, str), f"{what} is a {type(text).__name__}"
    assert text.strip(), f"{what} is empty"
    bad = [c for c in text if unicodedata.category(c) in _BAD_CATEGORIES]
    assert not bad, f"{what} holds control/line-break characters {bad[:5]!r}: {text[:300]!r}"
    assert len(text.splitlines()) == 1, f"{what} is not one line: {text[:300]!r}"
    assert len(text) <= 2_000, f"{what} is {len(text)} characters long: {text[:200]!r}..."


def assert_storable(obj: Any, what: str = "event") -> None:
    """What the engine records must be plain JSON (no NaN/Infinity) and valid UTF-8."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise AssertionError(f"{what} is not plain JSON: {e}: {str(obj)[:300]}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise AssertionError(f"{what} is not valid Unicode: {e}: {str(obj)[:300]}") from None


class ScratchDirs:
    """Fresh folders under /tmp/faults-*/ for one test's examples, removed afterwards."""

    def __init__(self, tag: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"faults-{tag}-"))
        self.n = 0
        atexit.register(self.close)  # the examples of a session share it; gone at exit

    def new(self) -> Path:
        self.n += 1
        p = self.base / f"ex{self.n}"
        p.mkdir()
        return p

    def drop(self, p: Path) -> None:
        shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def fast_sim_env() -> dict[str, str]:
    """Environment that makes the sim answer at once, whatever models.json says."""
    return {"LEMMING_SIM_LATENCY_MS": "0", "LEMMING_SIM_TOKENS_PER_S": "0"}


class EnvPatch:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> "EnvPatch":
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def all_strings(obj: Any) -> Iterable[str]:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            yield o
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)

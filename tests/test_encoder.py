"""Tests for timelapse.encoder: one test per row of docs/values.md, then safety,
limits, determinism and property tests."""

from __future__ import annotations

import array
import ast
import base64
import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import threading
import types
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import timelapse.encoder as encoder_module
from timelapse.encoder import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_STRING,
    ValueEncoder,
    collection_items,
    sanitize_text,
)


class Registry:
    """A fake ``register_type`` (one per encoder): records types, asserts that
    the encoder asks for each type only once."""

    def __init__(self) -> None:
        self.types: list[tuple[int, str, dict | None]] = [(30, "None", None)]  # TypeId 0
        self._ids: dict[str, int] = {json.dumps([30, "None", None]): 0}
        self._asked: set[str] = set()
        self._lock = threading.Lock()
        self.strict = True

    def __call__(self, kind: int, lang_type: str, fields: tuple | None = None) -> int:
        assert type(kind) is int and type(lang_type) is str
        # Kept as the Type event's specific_info says it: {"kind": "Struct", "fields": [...]}.
        specific_info = None if fields is None else {
            "kind": "Struct", "fields": [{"name": name, "type_id": tid} for name, tid in fields]}
        key = json.dumps([kind, lang_type, specific_info])
        with self._lock:
            assert not (self.strict and key in self._asked), f"type asked for twice: {key}"
            self._asked.add(key)
            if key not in self._ids:
                self._ids[key] = len(self.types)
                self.types.append((kind, lang_type, specific_info))
            return self._ids[key]

    def type_of(self, record: dict) -> tuple[int, str, dict | None]:
        return self.types[record["type_id"]]

    def lang(self, record: dict) -> str:
        return self.type_of(record)[1]


@pytest.fixture
def registry() -> Registry:
    return Registry()


#: Generous limits, for the tests of how each kind of value is spelled (the defaults are tested
#: on their own: test_the_default_detail_*).
ROOMY = {"max_depth": 8, "max_items": 100, "max_string": 1000, "max_nodes": 1000}
#: Limits that cut nothing a test makes (deeper collections show max_items / 4 ** (depth - 1)).
UNCUT = {"max_items": 1 << 40, "max_string": 10**6, "max_nodes": 10**9}


@pytest.fixture
def enc(registry: Registry) -> ValueEncoder:
    return ValueEncoder(registry, **ROOMY)


def walk(record: dict):
    """Every record inside `record` (itself included), without recursion."""
    stack = [record]
    while stack:
        r = stack.pop()
        yield r
        stack.extend(r.get("elements", ()))
        stack.extend(r.get("field_values", ()))
        if "contents" in r:
            stack.append(r["contents"])


def check_record(record: dict, registry: Registry) -> None:
    """Shape rules every record must follow (shared/trace-format.md, section 3)."""
    allowed = {
        "Int": {"i"}, "Float": {"f"}, "Bool": {"b"}, "String": {"text"},
        "Sequence": {"elements", "is_slice"}, "Tuple": {"elements"}, "Struct": {"field_values"},
        "Variant": {"discriminator", "contents"}, "Raw": {"r"}, "Error": {"msg"}, "None": set(),
        "BigInt": {"b", "negative"},
    }
    for r in walk(record):
        assert set(r) == allowed[r["kind"]] | {"kind", "type_id"}, r
        assert 0 <= r["type_id"] < len(registry.types)
        if r["kind"] == "Int":
            assert type(r["i"]) is int and -(2**63) <= r["i"] < 2**63
        elif r["kind"] == "Float":
            assert type(r["f"]) is str
        elif r["kind"] == "Struct":
            kind, _, info = registry.type_of(r)
            assert kind == 6 and len(info["fields"]) == len(r["field_values"])
        elif r["kind"] == "Variant":
            assert type(r["discriminator"]) is str
    json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


_SCALAR_FIELD = {"Int": "i", "Float": "f", "Bool": "b", "String": "text", "Raw": "r",
                 "Error": "msg", "BigInt": "b"}


def texts(record: dict):
    """A compact view of a record for assertions: scalars and nested lists."""
    kind = record["kind"]
    if kind in ("Sequence", "Tuple"):
        return [texts(e) for e in record["elements"]]
    if kind == "Struct":
        return [texts(e) for e in record["field_values"]]
    if kind == "Variant":
        return [record["discriminator"], texts(record["contents"])]
    if kind == "None":
        return None
    return record[_SCALAR_FIELD[kind]]


def field_names(record: dict, registry: Registry) -> list[str]:
    return [f["name"] for f in registry.type_of(record)[2]["fields"]]


# -- one test per row of docs/values.md ------------------------------------------------------------


def test_none(enc, registry):
    record = enc.encode(None)
    assert record == {"kind": "None", "type_id": 0}


def test_bool(enc, registry):
    assert enc.encode(True) == {"kind": "Bool", "type_id": 1, "b": True}
    assert enc.encode(False)["b"] is False
    assert registry.types[1] == (12, "bool", None)


def test_int(enc, registry):
    record = enc.encode(5)
    assert record["kind"] == "Int" and record["i"] == 5
    assert registry.type_of(record) == (7, "int", None)
    assert enc.encode(2**63 - 1)["kind"] == "Int"
    assert enc.encode(-(2**63))["kind"] == "Int"

    class Count(int):
        def __repr__(self):
            raise AssertionError("called")

    sub = enc.encode(Count(7))
    assert sub["i"] == 7 and type(sub["i"]) is int
    assert registry.lang(sub).endswith("Count")


def decode_bigint(record: dict) -> int:
    n = int.from_bytes(base64.b64decode(record["b"]), "big")
    return -n if record["negative"] else n


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1, 3**200, -(10**50)])
def test_bigint(enc, registry, n):
    record = enc.encode(n)
    assert record["kind"] == "BigInt"
    assert decode_bigint(record) == n
    assert registry.type_of(record) == (7, "int", None)


def test_bigint_too_big_is_described(enc, registry):
    record = enc.encode(1 << 100_000)
    assert record["kind"] == "Raw" and record["r"] == "<int: 100,001 bits>"


@pytest.mark.parametrize("x, text", [
    (2.5, "2.5"), (0.1, "0.1"), (-0.0, "-0.0"), (0.0, "0.0"), (1e300, "1e+300"),
    (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan"),
])
def test_float(enc, registry, x, text):
    record = enc.encode(x)
    assert record["kind"] == "Float" and record["f"] == text
    assert registry.type_of(record) == (8, "float", None)


def test_float_cache_keeps_signed_zero_and_nan_apart(enc):
    for _ in range(2):
        assert enc.encode(0.0)["f"] == "0.0"
        assert enc.encode(-0.0)["f"] == "-0.0"
        assert enc.encode(float("nan"))["f"] == "nan"
        assert enc.encode(1)["kind"] == "Int"
        assert enc.encode(True)["kind"] == "Bool"
        assert enc.encode(1.0)["kind"] == "Float"


@pytest.mark.parametrize("x, text, lang", [
    (1 + 2j, "(1+2j)", "complex"),
    (decimal.Decimal("1.10"), "1.10", "decimal.Decimal"),
    (fractions.Fraction(3, 4), "3/4", "fractions.Fraction"),
    (fractions.Fraction(6, 3), "2", "fractions.Fraction"),
])
def test_exact_numbers(enc, registry, x, text, lang):
    record = enc.encode(x)
    assert record == {"kind": "Raw", "type_id": record["type_id"], "r": text}
    assert registry.type_of(record) == (16, lang, None)


def test_str(enc, registry):
    record = enc.encode("héllo")
    assert record["kind"] == "String" and record["text"] == "héllo"
    assert registry.type_of(record) == (9, "str", None)


def test_str_lone_surrogates_are_replaced(enc):
    record = enc.encode("a\ud800b\udcff")
    assert record["text"] == "a\ufffdb\ufffd"
    record["text"].encode("utf-8")
    assert sanitize_text("plain") == "plain"
    assert sanitize_text("ünïcode") == "ünïcode"
    assert sanitize_text("\udc80") == "\ufffd"


def test_str_truncated(enc):
    record = enc.encode("x" * 1_000_000)
    assert record["text"] == "x" * ROOMY["max_string"] + "\u2026 (1,000,000 chars)"


@pytest.mark.parametrize("x, text, lang", [
    (b"ab\x00\xff", "b'ab\\x00\\xff'", "bytes"),
    (bytearray(b"hi"), "bytearray(b'hi')", "bytearray"),
    (memoryview(b"abc"), "memoryview(b'abc')", "memoryview"),
    (memoryview(array.array("i", [1])), "memoryview(b'\\x01\\x00\\x00\\x00', format='i')",
     "memoryview"),
])
def test_bytes_like(enc, registry, x, text, lang):
    record = enc.encode(x)
    assert record["kind"] == "Raw" and record["r"] == text
    assert registry.type_of(record) == (16, lang, None)


def test_bytes_truncated(enc):
    record = enc.encode(bytes(300_000))
    assert record["r"] == repr(bytes(ROOMY["max_string"])) + "\u2026 (300,000 bytes)"
    assert enc.encode(memoryview(bytes(300_000)))["r"].endswith("\u2026 (300,000 bytes)")
    released = memoryview(b"x")
    released.release()
    assert enc.encode(released)["r"] == "<released memoryview>"


@pytest.mark.parametrize("x, lang, kind", [
    ([1, "a"], "list", 0),
    (collections.deque([1, "a"]), "collections.deque", 0),
    (array.array("i", [1, 2]), "array.array", 4),
])
def test_sequences(enc, registry, x, lang, kind):
    record = enc.encode(x)
    assert record["kind"] == "Sequence" and record["is_slice"] is False
    assert [e.get("i", e.get("text")) for e in record["elements"]] == list(x)
    assert registry.type_of(record) == (kind, lang, None)


def test_range_and_views(enc, registry):
    assert texts(enc.encode(range(2, 8, 2))) == [2, 4, 6]
    huge = enc.encode(range(10**30))
    assert len(huge["elements"]) == ROOMY["max_items"] + 1
    assert huge["elements"][-1]["r"] == f"\u2026 {10**30 - ROOMY["max_items"]:,} more"
    d = {"a": 1}
    assert texts(enc.encode(d.keys())) == ["a"]
    assert texts(enc.encode(d.values())) == [1]
    items = enc.encode(d.items())
    assert texts(items) == [["a", 1]] and registry.lang(items) == "dict_items"


def test_tuple(enc, registry):
    record = enc.encode((1, "a", None))
    assert record["kind"] == "Tuple" and texts(record) == [1, "a", None]
    assert registry.type_of(record) == (27, "tuple", None)


@pytest.mark.parametrize("x, expected, lang", [
    ({3, 1, 2}, [1, 2, 3], "set"),
    (frozenset({"b", "a", "c"}), ["a", "b", "c"], "frozenset"),
    ({"z", 2.5, None, 1, b"b", (2, "x"), (1, "y")}, [None, 1, "2.5", "z", "b'b'", [1, "y"], [2, "x"]],
     "set"),
])
def test_sets_sorted(enc, registry, x, expected, lang):
    record = enc.encode(x)
    assert record["kind"] == "Sequence"
    assert texts(record) == expected
    assert registry.type_of(record) == (2, lang, None)


def test_dict(enc, registry):
    record = enc.encode({"a": 1, 2: [3]})
    assert record["kind"] == "Sequence" and registry.type_of(record) == (0, "dict", None)
    assert texts(record) == [["a", 1], [2, [3]]]
    assert all(registry.type_of(e) == (27, "tuple", None) for e in record["elements"])


@pytest.mark.parametrize("x, lang", [
    (collections.OrderedDict([("b", 1), ("a", 2)]), "collections.OrderedDict"),
    (collections.defaultdict(list, b=1, a=2), "collections.defaultdict"),
    (collections.Counter({"b": 1, "a": 2}), "collections.Counter"),
    (types.MappingProxyType({"b": 1, "a": 2}), "mappingproxy"),
])
def test_mappings(enc, registry, x, lang):
    record = enc.encode(x)
    assert texts(record) == [["b", 1], ["a", 2]]
    assert registry.type_of(record) == (0, lang, None)


def test_ordered_dict_uses_its_own_order(enc):
    od = collections.OrderedDict(a=1, b=2)
    od.move_to_end("a")
    assert texts(enc.encode(od)) == [["b", 2], ["a", 1]]


class Color(enum.Enum):
    RED = 1
    PAIR = (1, 2)


class Perm(enum.IntFlag):
    R = 4
    W = 2


def test_enum(enc, registry):
    record = enc.encode(Color.RED)
    assert record["kind"] == "Variant" and record["discriminator"] == "RED"
    assert record["contents"]["i"] == 1
    assert registry.type_of(record) == (28, f"{__name__}.Color", None)
    assert texts(enc.encode(Color.PAIR)) == ["PAIR", [1, 2]]
    assert texts(enc.encode(Perm.R | Perm.W)) == ["R|W", 6]
    assert texts(enc.encode(Perm(0)))[1] == 0


class Point2(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Point:
    x: int
    y: float


@dataclasses.dataclass(slots=True)
class SlotPoint:
    x: int
    y: int


class Plain:
    def __init__(self):
        self.name = "p"
        self.items = [1]


class Slotted:
    __slots__ = ("a", "__hidden", "unset")

    def __init__(self):
        self.a = 1
        self.__hidden = 2


class SlottedChild(Slotted):
    __slots__ = ("b",)

    def __init__(self):
        super().__init__()
        self.b = 3


@pytest.mark.parametrize("x, names, values", [
    (Point(1, 2.5), ["x", "y"], [1, "2.5"]),
    (SlotPoint(1, 2), ["x", "y"], [1, 2]),
    (Plain(), ["name", "items"], ["p", [1]]),
    (Slotted(), ["a", "_Slotted__hidden"], [1, 2]),
    (SlottedChild(), ["a", "_Slotted__hidden", "b"], [1, 2, 3]),
    (Point2(1, 2), ["x", "y"], [1, 2]),
    (collections.namedtuple("NT", "a b")(1, "z"), ["a", "b"], [1, "z"]),
    (types.SimpleNamespace(a=1), ["a"], [1]),
])
def test_objects_are_structs(enc, registry, x, names, values):
    record = enc.encode(x)
    check_record(record, registry)
    assert record["kind"] == "Struct"
    kind, lang, info = registry.type_of(record)
    assert kind == 6 and lang == f"{type(x).__module__}.{type(x).__qualname__}"
    assert field_names(record, registry) == names
    assert texts(record) == values
    object_type = registry.types[info["fields"][0]["type_id"]]
    assert object_type == (32, "object", None)


def test_struct_shape_registered_once(enc, registry):
    first = enc.encode(Point(1, 2.0))
    second = enc.encode(Point(3, "four"))
    assert first["type_id"] == second["type_id"]
    other = Plain()
    other.extra = 1
    assert enc.encode(other)["type_id"] != enc.encode(Plain())["type_id"]


def test_attrs_class(enc, registry):
    attrs = pytest.importorskip("attrs")

    @attrs.define
    class A:
        x: int
        y: str

    record = enc.encode(A(1, "b"))
    assert field_names(record, registry) == ["x", "y"] and texts(record) == [1, "b"]


def test_struct_sequences(enc, registry):
    record = enc.encode(os.stat("/"))
    assert field_names(record, registry)[:2] == ["st_mode", "st_ino"]
    assert registry.lang(record) == "os.stat_result"


class AppError(Exception):
    def __init__(self, msg, code):
        super().__init__(msg, code)
        self.code = code

    def __str__(self):
        raise AssertionError("__str__ called")


@pytest.mark.parametrize("exc, lang, message", [
    (ValueError("bad value"), "ValueError", "bad value"),
    (KeyError("k"), "KeyError", "'k'"),
    (ValueError(), "ValueError", ""),
    (ValueError("a", 2), "ValueError", "('a', 2)"),
    (FileNotFoundError(2, "No such file or directory", "x.txt"), "FileNotFoundError",
     "[Errno 2] No such file or directory: 'x.txt'"),
])
def test_exceptions(enc, registry, exc, lang, message):
    record = enc.encode(exc)
    check_record(record, registry)
    assert registry.lang(record) == lang
    assert field_names(record, registry)[:2] == ["message", "args"]
    assert record["field_values"][0]["text"] == message
    assert record["field_values"][0]["text"] == str(exc)
    assert texts(record["field_values"][1]) == texts(enc.encode(exc.args))


def test_user_exception_with_attributes(enc, registry):
    exc = AppError("failed", 3)
    exc.add_note("a note")
    record = enc.encode(exc)
    assert registry.lang(record) == f"{__name__}.AppError"
    assert field_names(record, registry) == ["message", "args", "code", "__notes__"]
    assert texts(record) == ["('failed', 3)", ["failed", 3], 3, ["a note"]]


def area(r):
    return r * r


async def coro():
    pass


async def agen():
    yield 1


def gen():
    yield 1


@pytest.mark.parametrize("make, text, lang", [
    (lambda: area, f"<function {__name__}.area>", "function"),
    (lambda: (lambda: 0), f"<function {__name__}.<lambda>.<locals>.<lambda>>", "function"),
    (lambda: len, "<built-in function len>", "builtin_function_or_method"),
    (lambda: [].append, "<built-in method append of list>", "builtin_function_or_method"),
    (lambda: Plain().__init__, f"<bound method {__name__}.Plain.__init__>", "method"),
    (lambda: list.append, "<method_descriptor list.append>", "method_descriptor"),
    (lambda: (1).__add__, "<method-wrapper int.__add__>", "method-wrapper"),
    (lambda: Point, f"<class {__name__}.Point>", "type"),
    (lambda: Color, f"<class {__name__}.Color>", "enum.EnumType"),
    (lambda: int, "<class int>", "type"),
    (lambda: os, "<module os>", "module"),
    (lambda: gen(), "<generator gen>", "generator"),
    (lambda: agen(), "<async_generator agen>", "async_generator"),
    (lambda: gen.__code__, "<code gen>", "code"),
    (lambda: sys._getframe(), "<frame <lambda>>", "frame"),
])
def test_callables_classes_modules_generators(enc, registry, make, text, lang):
    record = enc.encode(make())
    assert record == {"kind": "Raw", "type_id": record["type_id"], "r": text}
    assert registry.type_of(record) == (16, lang, None)
    assert "0x" not in record["r"]


def test_coroutine(enc, registry):
    c = coro()
    try:
        assert enc.encode(c)["r"] == "<coroutine coro>"
    finally:
        c.close()


def test_files_and_locks(enc, registry, tmp_path):
    path = tmp_path / "out.txt"
    with open(path, "w") as f:
        assert enc.encode(f)["r"] == f"<file {str(path)!r} mode='w'>"
        assert registry.lang(enc.encode(f)) == "_io.TextIOWrapper"
    assert enc.encode(f)["r"] == f"<file {str(path)!r} mode='w' closed>"
    with open(path, "rb") as f:
        assert enc.encode(f)["r"] == f"<file {str(path)!r} mode='rb'>"
        with open(os.dup(f.fileno()), "rb") as g:
            assert enc.encode(g)["r"] == f"<file fd {g.fileno()} mode='rb'>"
    lock = threading.Lock()
    assert enc.encode(lock)["r"] == "<_thread.lock unlocked>"
    with lock:
        assert enc.encode(lock)["r"] == "<_thread.lock locked>"
    assert enc.encode(threading.RLock())["r"] == "<_thread.RLock>"


@pytest.mark.parametrize("x, text", [
    (datetime.datetime(2024, 1, 2, 3, 4, 5), "datetime.datetime(2024, 1, 2, 3, 4, 5)"),
    (datetime.date(2024, 1, 2), "datetime.date(2024, 1, 2)"),
    (datetime.timedelta(seconds=3), "datetime.timedelta(seconds=3)"),
    (datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
     "datetime.datetime(2024, 1, 2, 0, 0, tzinfo=datetime.timezone.utc)"),
    (re.compile("a+", re.I), "re.compile('a+', re.IGNORECASE)"),
    (re.match("a", "abc"), "<re.Match object; span=(0, 1), match='a'>"),
    (pathlib.PurePosixPath("/a", "b"), "PurePosixPath('/a', 'b')"),
    (..., "Ellipsis"),
    (NotImplemented, "NotImplemented"),
    (object(), "<object>"),
])
def test_well_known_texts(enc, x, text):
    assert enc.encode(x)["r"] == text


def test_datetime_with_python_tzinfo(enc):
    class TZ(datetime.tzinfo):
        def utcoffset(self, dt):
            raise AssertionError("called")

        def __repr__(self):
            raise AssertionError("called")

    record = enc.encode(datetime.datetime(2024, 1, 2, tzinfo=TZ()))
    assert record["r"] == f"datetime.datetime(2024, 1, 2, 0, 0, tzinfo=<{__name__}.{TZ.__qualname__}>)"


def test_anything_else_names_its_type(enc, registry):
    import functools

    for x, text in [(functools.partial(len), "<functools.partial object>"),
                    (property(), "<property object>"),
                    (iter([]), "<list_iterator object>")]:
        record = enc.encode(x)
        assert record["kind"] == "Raw" and record["r"] == text


# -- markers: truncation, depth, cycles, errors -----------------------------------------------------


def test_truncated_list(enc, registry):
    record = enc.encode(list(range(200_000)))
    assert len(record["elements"]) == ROOMY["max_items"] + 1
    marker = record["elements"][-1]
    assert marker["kind"] == "Raw" and marker["r"] == "\u2026 199,900 more"
    assert registry.type_of(marker) == (16, "<truncated>", None)
    assert len(json.dumps(record)) < 10_000


def test_truncated_dict_set_and_struct(enc, registry):
    d = {i: i for i in range(1000)}
    record = enc.encode(d)
    assert record["elements"][-1]["r"] == "\u2026 900 more"
    assert record["elements"][-1]["kind"] == "Raw"
    s = enc.encode(set(range(1000, 0, -1)))
    assert [e["i"] for e in s["elements"][:-1]] == list(range(1, 101))
    obj = types.SimpleNamespace(**{f"a{i}": i for i in range(150)})
    record = enc.encode(obj)
    assert field_names(record, registry)[-1] == "\u2026"
    assert record["field_values"][-1]["r"] == "\u2026 50 more"
    check_record(record, registry)


def test_limits_are_settable(registry):
    enc = ValueEncoder(registry, max_depth=2, max_items=3, max_string=5)
    assert texts(enc.encode([1, 2, 3, 4, 5])) == [1, 2, 3, "\u2026 2 more"]
    assert texts(enc.encode([1, 2, 3, 4])) == [1, 2, 3, 4]    # never "… 1 more": the one is shown
    assert enc.encode("abcdefg")["text"] == "abcde\u2026 (7 chars)"
    assert texts(enc.encode([[[1]]])) == [["<list: 1 item>"]]


def test_depth_limit(enc, registry):
    nested = [1]
    for _ in range(20):
        nested = [nested]
    record = enc.encode(nested)
    depth = 0
    r = record
    while r["kind"] == "Sequence":
        depth += 1
        r = r["elements"][0]
    assert depth == ROOMY["max_depth"]
    assert r["r"] == "<list: 1 item>" and registry.type_of(r) == (16, "list", None)


def test_depth_limit_objects_and_enums(registry):
    enc = ValueEncoder(registry, max_depth=1)
    assert texts(enc.encode([Point(1, 2)])) == [f"<{__name__}.Point object>"]
    assert texts(enc.encode([Color.RED])) == [f"{__name__}.Color.RED"]


def test_node_budget(registry):
    enc = ValueEncoder(registry, max_nodes=50)
    record = enc.encode([list(range(30)) for _ in range(30)])
    assert sum(1 for _ in walk(record)) < 200
    assert "more" in json.dumps(record, ensure_ascii=False)
    check_record(record, registry)


def test_self_containing_list(enc, registry):
    x = [1]
    x.append(x)
    record = enc.encode(x)
    assert texts(record) == [1, "<cycle: list>"]
    assert registry.type_of(record["elements"][1]) == (16, "list", None)


def test_self_containing_dict_and_mutual_cycle(enc):
    d = {"k": 1}
    d["self"] = d
    assert texts(enc.encode(d)) == [["k", 1], ["self", "<cycle: dict>"]]
    a, b = [], {}
    a.append(b)
    b["a"] = a
    assert texts(enc.encode(a)) == [[["a", "<cycle: list>"]]]
    p = Plain()
    p.items = [p]
    assert texts(enc.encode(p)) == ["p", [f"<cycle: {__name__}.Plain>"]]


def test_shared_but_acyclic_values_are_repeated(enc):
    inner = [1, 2]
    assert texts(enc.encode([inner, inner, (inner,)])) == [[1, 2], [1, 2], [[1, 2]]]


def test_capture_failure_becomes_error(enc, registry):
    broken = object.__new__(fractions.Fraction)     # its slots were never set
    record = enc.encode([1, broken, 2])
    assert [e["kind"] for e in record["elements"]] == ["Int", "Error", "Int"]
    error = record["elements"][1]
    assert error["msg"].startswith("cannot capture fractions.Fraction: AttributeError")
    assert registry.type_of(error) == (24, "fractions.Fraction", None)
    check_record(record, registry)


def test_failing_container_becomes_error_and_encoding_goes_on(registry):
    class Failing(ValueEncoder):
        def _open_set(self, *args):
            raise RuntimeError("Set changed size during iteration")

    record = Failing(registry).encode([1, {2}, [3]])
    assert texts(record) == [
        1, "cannot capture set: RuntimeError: Set changed size during iteration", [3]]
    assert Failing(Registry()).encode({2})["kind"] == "Error"


def test_proxy_of_a_python_mapping_is_not_read(enc):
    proxy = types.MappingProxyType(collections.UserDict({"a": 1}))
    record = enc.encode(proxy)
    assert record["kind"] == "Raw" and record["r"] == "<mappingproxy object>"


def test_names_with_lone_surrogates(enc, registry):
    cls = type("Odd", (), {"__module__": "mod\udc80"})
    odd = cls()
    odd.__dict__["f\udc81"] = 1
    record = enc.encode(odd)
    assert registry.lang(record) == "mod\ufffd.Odd"
    assert field_names(record, registry) == ["f\ufffd"]


# -- safety: never run user code ---------------------------------------------------------------------


class Spy:
    """Counts and reports every dunder the encoder might be tempted to call."""

    calls: list[str] = []

    def __init__(self):
        self.state = 0

    def __repr__(self):
        print("REPR CALLED")
        self.state += 1
        Spy.calls.append("__repr__")
        return "spy"

    def __str__(self):
        Spy.calls.append("__str__")
        raise AssertionError("__str__")

    def __eq__(self, other):
        Spy.calls.append("__eq__")
        raise AssertionError("__eq__")

    def __hash__(self):
        Spy.calls.append("__hash__")
        return object.__hash__(self)

    def __lt__(self, other):
        Spy.calls.append("__lt__")
        raise AssertionError("__lt__")

    def __len__(self):
        Spy.calls.append("__len__")
        raise AssertionError("__len__")

    def __iter__(self):
        Spy.calls.append("__iter__")
        raise AssertionError("__iter__")

    def __getattr__(self, name):
        Spy.calls.append(f"__getattr__ {name}")
        raise AssertionError(name)

    def __getattribute__(self, name):
        Spy.calls.append(f"__getattribute__ {name}")
        return object.__getattribute__(self, name)

    @property
    def __class__(self):
        Spy.calls.append("__class__")
        raise AssertionError("__class__")

    @property
    def computed(self):
        Spy.calls.append("computed")
        raise AssertionError("computed")


def test_repr_that_prints_and_mutates_is_not_called(enc, registry, capsys):
    spy = Spy()
    values = (spy, [spy], {spy: spy}, {spy}, (spy,), {"k": [spy, Spy()]})
    Spy.calls.clear()
    for value in values:
        check_record(enc.encode(value), registry)
    assert capsys.readouterr().out == ""
    assert object.__getattribute__(spy, "state") == 0
    assert Spy.calls == []


def test_spy_encoded_as_struct(enc, registry):
    spy = Spy()
    Spy.calls.clear()
    record = enc.encode(spy)
    assert field_names(record, registry) == ["state"] and texts(record) == [0]
    assert Spy.calls == []


class RecordingMeta(type):
    calls: list[str] = []

    def __hash__(cls):
        RecordingMeta.calls.append("__hash__")
        return 1

    def __eq__(cls, other):
        RecordingMeta.calls.append("__eq__")
        return False

    def __getattribute__(cls, name):
        if name not in ("__dict__",):
            RecordingMeta.calls.append(f"__getattribute__ {name}")
        return type.__getattribute__(cls, name)

    def __instancecheck__(cls, obj):
        RecordingMeta.calls.append("__instancecheck__")
        return False

    def __subclasscheck__(cls, sub):
        RecordingMeta.calls.append("__subclasscheck__")
        return False

    @property
    def __name__(cls):
        RecordingMeta.calls.append("__name__")
        return "meta-lie"

    @property
    def __mro__(cls):
        RecordingMeta.calls.append("__mro__")
        return (object,)


class Tricky(metaclass=RecordingMeta):
    def __init__(self):
        self.value = 1


class TrickyError(Exception, metaclass=RecordingMeta):
    pass


def test_metaclass_hooks_are_not_called(enc, registry):
    values = (Tricky(), [Tricky()], {Tricky()}, Tricky, TrickyError("x"), {1: TrickyError()})
    RecordingMeta.calls.clear()
    for value in values:
        check_record(enc.encode(value), registry)
    assert RecordingMeta.calls == []
    record = enc.encode(Tricky())
    assert registry.lang(record) == f"{__name__}.Tricky"


def test_encode_json_runs_no_user_code_either(enc, registry, capsys):
    import orjson

    spy = Spy()
    odd = Plain()
    vars(odd)[1] = "skipped"
    values = [spy, [spy], {spy: spy}, {"k": [spy, Spy()]}, Node(s=spy, t=Tricky()), Tricky(),
              [Tricky(), Tricky], (TrickyError("x"),), {1: TrickyError()}, Node(m=Tricky),
              [Shadow(), DictProperty(), odd]]
    expected = [enc.encode(value) for value in values]  # also registers the types
    Spy.calls.clear()
    RecordingMeta.calls.clear()
    for _ in range(2):  # the second time through the caches and struct shapes
        assert [orjson.loads(enc.encode_json(value)) for value in values] == expected
    assert Spy.calls == [] and RecordingMeta.calls == []
    assert capsys.readouterr().out == ""
    assert object.__getattribute__(spy, "state") == 0


class Shadow:
    @property
    def value(self):
        raise AssertionError("property called")


class DictProperty:
    @property
    def __dict__(self):
        raise AssertionError("__dict__ property called")


def test_odd_instance_dict_keys(enc, registry):
    calls = []

    class Key(str):
        def __str__(self):
            calls.append("__str__")
            return "lie"

        def __repr__(self):
            calls.append("__repr__")
            return "lie"

    obj = Plain()
    vars(obj)[1] = "int key: not an attribute name, skipped"
    vars(obj)[Key("sub")] = "str subclass key: shown under its text"
    record = enc.encode(obj)
    assert field_names(record, registry) == ["name", "items", "sub"]
    assert texts(record)[-1] == "str subclass key: shown under its text"
    assert calls == []
    check_record(record, registry)


def test_properties_and_data_descriptors_not_called(enc, registry):
    s = Shadow()
    s.__dict__["value"] = "instance value"
    record = enc.encode(s)
    assert field_names(record, registry) == ["value"] and texts(record) == ["instance value"]
    record = enc.encode(DictProperty())     # no C-level way to its dict: no fields
    assert record["kind"] == "Struct" and record["field_values"] == []


class SlotSpec:
    """A __slots__ value that is neither a str, tuple, list nor dict."""

    def __iter__(self):
        return iter(["b", "a"])


class OddSlots:
    __slots__ = SlotSpec()


class DocSlots:
    __slots__ = {"z": "last letter", "y": "docs"}


class Alias:
    __slots__ = ("own",)
    stolen = Slotted.__dict__["a"]      # another class's member descriptor


def test_unusual_slots(enc, registry):
    odd = OddSlots()
    odd.a, odd.b = 1, 2
    assert sorted(zip(field_names(enc.encode(odd), registry), texts(enc.encode(odd)))) == [
        ("a", 1), ("b", 2)]
    doc = DocSlots()
    doc.z, doc.y = 26, 25
    assert field_names(enc.encode(doc), registry) == ["z", "y"]
    alias = Alias()
    alias.own = 1
    assert field_names(enc.encode(alias), registry) == ["own"]


def test_text_wrapper_over_python_buffer_is_not_touched(enc):
    calls = []

    class Buffer(io.BufferedIOBase):
        watching = False

        def readable(self):
            return True

        def __getattribute__(self, name):
            if object.__getattribute__(self, "watching"):
                calls.append(name)
            return object.__getattribute__(self, name)

    buf = Buffer()
    wrapper = io.TextIOWrapper(buf, encoding="utf-8")
    Buffer.watching = True
    try:
        assert enc.encode(wrapper)["r"] == "<_io.TextIOWrapper>"
        assert enc.encode(io.BufferedReader(io.BytesIO(b"x")))["r"] == "<_io.BufferedReader>"
    finally:
        Buffer.watching = False
    assert calls == []


def test_subclasses_of_builtins_use_base_c_methods(enc, registry):
    calls = []

    class L(list):
        def __len__(self):
            calls.append("len")
            return 0

        def __iter__(self):
            calls.append("iter")
            return iter([])

        def __getitem__(self, i):
            calls.append("getitem")

    class D(dict):
        def items(self):
            calls.append("items")
            return []

        def __iter__(self):
            calls.append("iter")
            return iter([])

        def __len__(self):
            calls.append("len")
            return 0

    class S(set):
        def __iter__(self):
            calls.append("iter")
            return iter([])

    class T(tuple):
        def __iter__(self):
            calls.append("iter")
            return iter([])

    class Str(str):
        def __str__(self):
            calls.append("str")
            return "lie"

        def __len__(self):
            calls.append("len")
            return 0

    class F(float):
        def __repr__(self):
            calls.append("repr")
            return "lie"

    class B(bytes):
        def __len__(self):
            calls.append("len")
            return 0

    assert texts(enc.encode(L([1, 2]))) == [1, 2]
    assert texts(enc.encode(D(a=1))) == [["a", 1]]
    assert texts(enc.encode(S({2, 1}))) == [1, 2]
    assert texts(enc.encode(T((1, 2)))) == [1, 2]
    assert enc.encode(Str("truth"))["text"] == "truth"
    assert enc.encode(F(2.5))["f"] == "2.5"
    assert enc.encode(B(b"ab"))["r"] == "b'ab'"
    assert calls == []
    assert registry.lang(enc.encode(L())).endswith(".L")


def test_set_order_never_compares_user_objects(enc, registry):
    s = {Spy(), Spy(), 1, "a", (1, Spy())}
    Spy.calls.clear()
    first = enc.encode(s)
    second = enc.encode(s)
    assert first == second
    assert Spy.calls == []
    assert [e["kind"] for e in first["elements"]][:2] == ["Int", "String"]


# -- huge and deep values ----------------------------------------------------------------------------------


def test_huge_values_encode_small(enc):
    for value in (list(range(200_000)), "y" * 1_000_000, {i: str(i) for i in range(200_000)},
                  set(range(200_000)), bytes(1_000_000), tuple(range(200_000)),
                  {str(i) for i in range(200_000)}, deque_of(200_000)):
        assert len(json.dumps(enc.encode(value))) < 20_000
    # Many nested containers: the node budget bounds the whole value.
    grid = [[i] * 1000 for i in range(1000)]
    assert len(json.dumps(enc.encode(grid))) < 60 * ROOMY["max_nodes"]


def deque_of(n: int) -> collections.deque:
    return collections.deque(range(n))


def nested_lists(n: int) -> list:
    x: list = []
    for _ in range(n):
        x = [x]
    return x


def record_depth(record: dict) -> int:
    depth = 0
    while record["kind"] == "Sequence" and record["elements"]:
        depth += 1
        record = record["elements"][0]
    return depth


def test_500_levels_of_nesting():
    value = nested_lists(500)
    assert record_depth(ValueEncoder(Registry()).encode(value)) == DEFAULT_MAX_DEPTH
    full = ValueEncoder(Registry(), max_depth=1000, max_nodes=1000).encode(value)
    assert record_depth(full) == 500
    json.dumps(full)


def test_100000_levels_do_not_recurse():
    value = nested_lists(100_000)
    assert record_depth(ValueEncoder(Registry()).encode(value)) == DEFAULT_MAX_DEPTH
    full = ValueEncoder(Registry(), max_depth=200_000, max_nodes=200_000).encode(value)
    assert record_depth(full) == 100_000


def test_deep_objects_do_not_recurse(registry):
    head = Plain()
    node = head
    for _ in range(50_000):
        node.items = [Plain()]
        node = node.items[0]
    record = ValueEncoder(registry, max_depth=200_000, max_nodes=200_000).encode(head)
    assert record["kind"] == "Struct"


def test_encoding_near_the_recursion_limit(registry):
    enc = ValueEncoder(registry)
    value = {"a": [1, (2, Point(3, 4.0))], "b": {5}, "c": nested_lists(DEFAULT_MAX_DEPTH)}
    expected = enc.encode(value)
    results = []

    def dive(n):
        if n:
            return dive(n - 1)
        results.append(enc.encode(value))
        results.append(ValueEncoder(Registry()).encode(value))  # classifies types too

    limit = sys.getrecursionlimit()
    depth = len(_stack())
    dive(limit - depth - 25)
    assert results[0] == expected
    assert texts(results[1]) == texts(expected)


def _stack() -> list:
    frames = []
    f = sys._getframe()
    while f:
        frames.append(f)
        f = f.f_back
    return frames


# -- threads -----------------------------------------------------------------------------------------


def test_four_threads_share_one_encoder(registry, capsys):
    registry.strict = False   # two threads may race to register a new type
    Spy.calls.clear()
    enc = ValueEncoder(registry)
    values = [Spy(), [Spy(), {"k": Spy()}], {1, 2, 3}, Point(1, 2.0), "s" * 100, Color.RED,
              AppError("x", 1), list(range(300))]
    expected = [texts(ValueEncoder(Registry()).encode(v)) for v in values]
    errors = []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            for _ in range(300):
                for v, want in zip(values, expected):
                    assert texts(enc.encode(v)) == want
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Spy.calls == []
    assert capsys.readouterr().out == ""
    keys = [json.dumps(t) for t in registry.types]
    assert len(keys) == len(set(keys))


# -- caches and type registration -------------------------------------------------------------------


def test_types_registered_once_and_reused(enc, registry):
    for _ in range(3):
        for v in (1, "a", 2.5, [1], {"a": 1}, (1,), {1}, Point(1, 2), Color.RED, len, None):
            enc.encode(v)
    keys = [json.dumps(t) for t in registry.types]
    assert len(keys) == len(set(keys))


def test_scalar_records_are_cached_and_shared(enc):
    # The spelled records are what the walk caches (encode() decodes them afresh each time).
    for value in (12345, "short", 2.5, True, None):
        assert enc.encode_json(value) is enc.encode_json(value)


def test_caches_stay_bounded(enc):
    for i in range(20_000):
        enc.encode(i)
        enc.encode(str(i))
        enc.encode(i + 0.5)
    assert len(enc._spelled_ints) <= 4096 and len(enc._spelled_strs) <= 4096 and len(enc._spelled_floats) <= 4096


def test_register_type_failure_is_an_error_record():
    def broken(kind, lang, info=None):
        raise RuntimeError("writer closed")

    enc = ValueEncoder(broken)
    for value in (1, "a", [1], Point(1, 2)):
        record = enc.encode(value)
        assert record["kind"] == "Error" and record["type_id"] == 0


# -- determinism -------------------------------------------------------------------------------------


DETERMINISM_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    from timelapse.encoder import ValueEncoder

    types = {}
    def register(kind, lang, info=None):
        return types.setdefault(json.dumps([kind, lang, info]), len(types))

    @dataclasses.dataclass(frozen=True)
    class P:
        x: int
        name: str

    values = [
        {"zeta", "alpha", "mid", "q" * 50}, frozenset({("b", 2), ("a", 1)}),
        {frozenset({"x", "y"}), frozenset({"z"})}, set(map(str, range(500))),
        {P(1, "a"), P(2, "b"), P(1, "c")}, {"k": {"v", "w"}}, {1.5, -2, "s", None, (1, "t")},
        {(i, str(i)) for i in range(300)},
    ]
    encoder = ValueEncoder(register)
    print(json.dumps([encoder.encode(v) for v in values] + [sorted(types)]))
""")


def test_same_records_under_any_hash_seed(tmp_path):
    script = tmp_path / "det.py"
    script.write_text(DETERMINISM_SCRIPT)
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_no_addresses_in_texts(enc):
    values = [area, len, Plain().__init__, os, gen(), object(), threading.Lock(), Plain, iter([]),
              property(), Spy()]
    text = json.dumps([enc.encode(v) for v in values])
    assert not re.search(r"0x[0-9a-f]{4,}", text)


# -- property tests ------------------------------------------------------------------------------------


scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
    | st.binary(max_size=20)
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
                         max_leaves=8)


def builtin_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
    )


values = st.recursive(
    hashables,
    lambda inner: builtin_containers(inner) | st.frozensets(hashables, max_size=5),
    max_leaves=30,
)


def decode(record: dict, registry: Registry):
    """Rebuild the Python data of a record made from built-in values."""
    kind, lang, _ = registry.type_of(record)
    k = record["kind"]
    if k == "None":
        return None
    if k == "Bool":
        return record["b"]
    if k == "Int":
        return record["i"]
    if k == "BigInt":
        return decode_bigint(record)
    if k == "Float":
        return float(record["f"])
    if k == "String":
        return record["text"]
    if k == "Raw" and lang == "bytes":
        return ast.literal_eval(record["r"])
    if k == "Tuple":
        return tuple(decode(e, registry) for e in record["elements"])
    if k == "Sequence":
        items = [decode(e, registry) for e in record["elements"]]
        return {"list": list, "set": set, "frozenset": frozenset, "dict": dict}[lang](items)
    raise AssertionError(f"unexpected record {record}")


def canon(x):
    """A comparable form: floats by repr (nan, -0.0), sets order-free, bool != int."""
    t = type(x)
    if t is float:
        return ("float", repr(x))
    if t in (list, tuple):
        return (t.__name__, tuple(canon(i) for i in x))
    if t is dict:
        return ("dict", tuple((canon(k), canon(v)) for k, v in x.items()))
    if t in (set, frozenset):
        return (t.__name__, tuple(sorted((canon(i) for i in x), key=repr)))
    return (t.__name__, x)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_round_trip_under_limits(value):
    registry = Registry()
    record = ValueEncoder(registry, max_depth=100, **UNCUT).encode(value)
    check_record(record, registry)
    assert canon(decode(record, registry)) == canon(value)


@settings(max_examples=300, deadline=None)
@given(values, st.integers(1, 4), st.integers(1, 4), st.integers(1, 8), st.integers(1, 40))
def test_property_limits_and_determinism(value, max_depth, max_items, max_string, max_nodes):
    registry = Registry()
    limits = dict(max_depth=max_depth, max_items=max_items, max_string=max_string,
                  max_nodes=max_nodes)
    enc = ValueEncoder(registry, **limits)
    record = enc.encode(value)
    check_record(record, registry)
    assert record == enc.encode(value)
    assert record == ValueEncoder(Registry(), **limits).encode(value)
    # At most max_depth container levels (a dict's entries belong to the dict),
    # max_items elements (+ 1 marker) each, max_string characters per string.
    count = 0
    stack = [(record, 1)]
    while stack:
        r, depth = stack.pop()
        count += 1
        if r["kind"] in ("Sequence", "Tuple"):
            assert depth <= max_depth
            assert len(r["elements"]) <= max_items + 1
            entries = registry.lang(r) == "dict"
            for e in r["elements"]:
                if entries and e["kind"] == "Tuple":
                    count += 1
                    stack.extend((i, depth + 1) for i in e["elements"])
                else:
                    stack.append((e, depth + 1))
        elif r["kind"] == "String":
            assert len(r["text"]) <= max_string or r["text"].endswith(" chars)")
    assert count <= 2 * (1 + 3 * max_nodes)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50))
def test_property_any_text_becomes_valid_utf8(text):
    record = ValueEncoder(Registry()).encode(text)
    record["text"].encode("utf-8")
    sanitize_text(text).encode("utf-8")
    if not any("\ud800" <= c <= "\udfff" for c in text):
        assert record["text"] == text


# -- encode_json: the spelled form the recorder writes --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(),
                 st.booleans(), st.none(), st.lists(st.integers(), max_size=5)))
def test_scalars_spelled_from_the_caches_are_the_first_spelling(value):
    encoder = ValueEncoder(Registry())
    first = encoder.encode_json(value)
    assert encoder.encode_json(value) == first       # the second time from the caches
    json.loads(first)                                 # valid JSON, one record
    registry = Registry()
    assert texts(ValueEncoder(registry).encode(value)) == texts(json.loads(first))


def test_encode_json_caches_never_mix_equal_values():
    enc = ValueEncoder(Registry())
    values = [0.0, -0.0, 1, 1.0, True, float("nan"), 2.5, -0.0, 0.0, 1.0, 1, True]
    expected = [("Float", "0.0"), ("Float", "-0.0"), ("Int", 1), ("Float", "1.0"), ("Bool", True),
                ("Float", "nan"), ("Float", "2.5"), ("Float", "-0.0"), ("Float", "0.0"),
                ("Float", "1.0"), ("Int", 1), ("Bool", True)]
    for _ in range(2):
        records = [json.loads(enc.encode_json(v)) for v in values]
        assert [(r["kind"], r[_SCALAR_FIELD[r["kind"]]]) for r in records] == expected


def test_encode_json_keeps_lone_surrogates_out():
    data = ValueEncoder(Registry()).encode_json("a\udc80b")
    assert data.decode("utf-8").count("\ufffd") == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.lists(st.one_of(st.integers(), st.text(max_size=80), st.floats(), st.booleans(), st.none()),
             max_size=120),
    st.dictionaries(st.one_of(st.integers(), st.text(max_size=5)),
                    st.one_of(st.integers(), st.text(max_size=70), st.none()), max_size=120),
    st.tuples(st.integers(), st.text(), st.floats(allow_nan=False)),
))
def test_flat_containers_round_trip_and_are_cut_where_the_limits_say(value):
    for limits in ({**UNCUT}, {"max_items": 3}, {"max_nodes": 10}, {}):
        registry = Registry()
        record = ValueEncoder(registry, **limits).encode(value)
        check_record(record, registry)
        shown = record["elements"]
        limit = min(limits.get("max_items", DEFAULT_MAX_ITEMS), limits.get("max_nodes", DEFAULT_MAX_NODES))
        kept = len(value) if len(value) <= limits.get("max_items", DEFAULT_MAX_ITEMS) + 1 else limit
        kept = min(kept, limits.get("max_nodes", DEFAULT_MAX_NODES))
        assert len(shown) == kept + (kept < len(value))
        if kept < len(value):
            assert shown[-1]["r"] == f"\u2026 {len(value) - kept:,} more"
        if limits.get("max_nodes") == UNCUT["max_nodes"] and type(value) is not dict:
            assert canon(decode(record, registry)) == canon(value)


# -- the one walk: invariants ------------------------------------------------------------------------


class Node:
    """Instances get their attributes in any order, any number: shapes vary."""

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)


class SlotsAndDict:
    __slots__ = ("s", "__dict__")

    def __init__(self, s, **fields):
        self.s = s
        self.__dict__.update(fields)


def _tie_knots(value, knots):
    """Make shared references and cycles in a generated value (lists and Nodes get refs to others)."""
    containers = []
    stack = [value]
    while stack:
        x = stack.pop()
        if type(x) in (list, Node):
            containers.append(x)
        if type(x) in (list, tuple):
            stack.extend(x)
        elif type(x) is dict:
            stack.extend(x.values())
        elif type(x) is Node:
            stack.extend(vars(x).values())
    for source, target in knots:
        if containers:
            a = containers[source % len(containers)]
            b = containers[target % len(containers)]
            if type(a) is list:
                a.append(b)
            else:
                a.knot = b
    return value


graph_values = st.recursive(
    scalars,
    lambda inner: (
        builtin_containers(inner)
        | st.builds(lambda f: Node(**f), st.dictionaries(st.sampled_from("abcd"), inner, max_size=4))
        | st.builds(Point, inner, inner)
        | st.builds(lambda s, f: SlotsAndDict(s, **f), inner,
                    st.dictionaries(st.sampled_from("xy"), inner, max_size=2))
        | st.builds(lambda v: collections.deque([v, v]), inner)
    ),
    max_leaves=40,
)
limit_sets = st.fixed_dictionaries({}, optional={
    "max_depth": st.integers(1, 6), "max_items": st.integers(1, 4), "max_nodes": st.integers(1, 40),
    "max_string": st.integers(1, 8),
})


def canonical(record: dict, registry: Registry):
    """A record with its type ids replaced by the types they name: comparable across registries."""
    if type(record) is dict:
        return {k: (_type_named(registry, v) if k == "type_id" else canonical(v, registry))
                for k, v in record.items()}
    if type(record) is list:
        return [canonical(r, registry) for r in record]
    return record


def _type_named(registry: Registry, type_id: int) -> tuple:
    kind, lang, info = registry.types[type_id]
    return kind, lang, info and tuple(f["name"] for f in info["fields"])


def check_bounded(record: dict, registry: Registry, limits: dict) -> None:
    """At most max_depth container levels (a dict's entries belong to the dict), max_items elements
    (+ 1 marker) per container, max_nodes elements in all (+ markers)."""
    max_depth = limits.get("max_depth", DEFAULT_MAX_DEPTH)
    max_items = limits.get("max_items", DEFAULT_MAX_ITEMS)
    max_nodes = limits.get("max_nodes", DEFAULT_MAX_NODES)
    shown = 0
    stack = [(record, 1)]
    while stack:
        r, depth = stack.pop()
        children = r.get("elements", r.get("field_values"))
        if children is None:
            continue
        assert depth <= max_depth, r
        real = [c for c in children if not (c["kind"] == "Raw" and registry.lang(c) == "<truncated>")]
        # Collections show fewer elements deeper down, an object max_items fields at any depth;
        # a cut never hides a single element (it is shown instead).
        limit = max_items if "field_values" in r else collection_items(max_items, depth)
        assert len(real) <= limit + 1 and len(children) <= limit + 1
        assert len(children) == len(real) or len(real) <= limit
        shown += len(real)
        entries = r["kind"] == "Sequence" and registry.lang(r) in ("dict", "collections.OrderedDict")
        for c in real:
            if entries and c["kind"] == "Tuple":
                stack.extend((i, depth + 1) for i in c["elements"])
            else:
                stack.append((c, depth + 1))
    assert shown <= max_nodes


@settings(max_examples=400, deadline=None)
@given(graph_values, st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=3), limit_sets)
def test_property_the_walk_is_valid_bounded_and_deterministic(value, knots, limits):
    value = _tie_knots([value], knots)   # shared references and cycles
    registry = Registry()
    encoder = ValueEncoder(registry, **limits)
    data = encoder.encode_json(value)
    record = json.loads(data)
    check_record(record, registry)
    check_bounded(record, registry, limits)
    assert encoder.encode_json(value) == data                          # again, from the caches and shapes
    assert ValueEncoder(Registry(), **limits).encode_json(value) == data   # a fresh encoder: the same bytes


@settings(max_examples=300, deadline=None)
@given(graph_values, st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=3), limit_sets)
def test_property_opening_at_once_or_on_the_stack_shows_the_same(value, knots, limits):
    # child() opens containers inside their parent's element loop, fill() on its explicit stack: the
    # order of the budget and the cycles must not depend on which of the two did it. (The
    # order in which types are first registered may: their ids are compared by what they name.)
    # Set members whose keys tie are ordered by their records' spelling, type ids included: with
    # types registered in another order they may come in another order (compared as multisets).
    value = _tie_knots([value], knots)
    registry = Registry()
    expected = _members_unordered(canonical(ValueEncoder(registry, **limits).encode(value), registry))
    for levels in (0, 1, 2):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(encoder_module, "_EAGER_LEVELS", levels)
            registry = Registry()
            got = canonical(ValueEncoder(registry, **limits).encode(value), registry)
            assert _members_unordered(got) == expected, levels


def _members_unordered(record):
    """A canonical record with every set's members sorted by their text (the "… N more" marker
    stays last): for comparing walks that registered the same types in different orders."""
    if type(record) is list:
        return [_members_unordered(r) for r in record]
    if type(record) is not dict:
        return record
    record = {k: _members_unordered(v) for k, v in record.items()}
    if record.get("kind") == "Sequence" and record["type_id"][1] in ("set", "frozenset"):
        elements = record["elements"]
        more = [e for e in elements[-1:] if e["kind"] == "Raw" and e["type_id"][1] == "<truncated>"]
        members = elements[: len(elements) - len(more)]
        record["elements"] = sorted(members, key=lambda e: json.dumps(e, sort_keys=True, default=str)) + more
    return record


@settings(max_examples=200, deadline=None)
@given(st.lists(graph_values, min_size=2, max_size=4))
def test_property_sharing_within_a_value_changes_nothing_shown(values):
    # An object met twice within one value is walked at each place: with nothing cut, it shows
    # the same as two equal objects would.
    shared = Node(a=[1, 2], b=Point(3, 4.5))
    limits = {"max_depth": 100, "max_nodes": 100_000}   # nothing is cut: sharing cannot show
    registry = Registry()
    registry.strict = False
    enc = ValueEncoder(registry, **limits)
    for i, v in enumerate(values):
        together = [shared, v, shared] if i % 2 else {"s": shared, "v": v, "t": {shared}}
        apart = [copy.deepcopy(shared), v, copy.deepcopy(shared)] if i % 2 else \
            {"s": copy.deepcopy(shared), "v": v, "t": {copy.deepcopy(shared)}}
        assert enc.encode_json(together) == enc.encode_json(apart)


def test_struct_shapes_follow_each_instance(enc, registry):
    import orjson

    first, swapped, more, fewer = Node(a=1, b=2), Node(b=2, a=1), Node(a=1, b=2, c=3), Node(a=1)
    for x in (first, swapped, more, fewer, first):
        assert orjson.loads(enc.encode_json(x)) == enc.encode(x)
    record = orjson.loads(enc.encode_json(swapped))
    assert field_names(record, registry) == ["b", "a"] and texts(record) == [2, 1]


class EvilName(str):
    """A str subclass key whose comparisons fail once armed (the encoder must not call them)."""

    armed = False

    def __eq__(self, other):
        assert not EvilName.armed, "__eq__ called"
        return str.__eq__(self, other)

    def __hash__(self):
        assert not EvilName.armed, "__hash__ called"
        return str.__hash__(self)


def test_odd_attribute_names_after_a_shape_is_known(enc, registry):
    enc.encode_json(Node(a=1, b=2))     # the shape (a, b) is known
    odd = Node(a=1, b=2)
    vars(odd)[7] = "not a str: not shown"
    evil = Node()
    vars(evil)[EvilName("a")] = 1
    vars(evil)["b"] = 2
    EvilName.armed = True
    try:
        check_odd_names(enc, registry, odd, evil)
    finally:
        EvilName.armed = False


def check_odd_names(enc, registry, *objects):
    import orjson

    for x in objects:
        record = orjson.loads(enc.encode_json(x))
        assert record == enc.encode(x)
        assert field_names(record, registry) == ["a", "b"] and texts(record) == [1, 2]


def test_the_walk_below_its_eager_levels(registry):
    # Deeper than child() opens at once: fill's stack takes over, and ropes below _FLAT_DEPTH.
    value = Node(a=nested_lists(30), b=[Point(1, 2.0)] * 3)
    for limits in ({"max_depth": 40}, {"max_depth": 25, "max_nodes": 50}):
        registry = Registry()
        record = ValueEncoder(registry, **limits).encode(value)
        check_record(record, registry)
        check_bounded(record, registry, limits)
        assert record_depth(record["field_values"][0]) == min(30, limits["max_depth"] - 1)
        assert ValueEncoder(Registry(), **limits).encode_json(value) == ValueEncoder(Registry(), **limits).encode_json(value)


def test_the_walk_near_the_recursion_limit_gives_the_same_bytes():
    enc = ValueEncoder(Registry())
    value = [Node(a=[Node(b=[Node(c=[1])])]), {"k": Point(1, 2.0)}, nested_lists(DEFAULT_MAX_DEPTH)]
    expected = enc.encode_json(value)
    results = []

    def dive(n):
        if n:
            return dive(n - 1)
        results.append(enc.encode_json(value))

    depth = len(_stack())
    for margin in range(10, 60, 5):  # wherever it has room at all, the walk gives the same bytes
        results.clear()
        dive(sys.getrecursionlimit() - depth - margin)
        assert results == [expected], margin


def test_the_walk_near_the_recursion_limit_leaves_no_wrong_cache_entries():
    def make(text, flag):
        return Node(a=Node(b=Node(c=Node(d=[7, 2.5, text, flag, None, (1,), {"k": 1}]))))

    depth = len(_stack())

    def dive(n, f):
        return dive(n - 1, f) if n else f()

    checked = (make("hello", True), "hello", True, None, 7, 2.5, [1], (1,), {"k": 1})
    fresh_registry = Registry()
    fresh = ValueEncoder(fresh_registry)
    expected = [canonical(fresh.encode(v), fresh_registry) for v in checked]
    for margin in range(3, 60):
        registry = Registry()
        enc = ValueEncoder(registry)
        value = make("hello", True)
        try:
            dive(sys.getrecursionlimit() - depth - margin, functools.partial(enc.encode_json, value))
        except RecursionError:
            continue    # the call itself did not fit: nothing to check
        assert [canonical(enc.encode(v), registry) for v in checked] == expected, margin


def test_a_value_met_again_below_the_flat_depth_is_bytes():
    # Containers below _FLAT_DEPTH are ropes while fill joins them: what is handed out is bytes.
    root = cur = []
    nodes = [root]
    for _ in range(30):
        nxt = []
        cur.append(nxt)
        cur = nxt
        nodes.append(nxt)
    registry = Registry()
    enc = ValueEncoder(registry, max_depth=40)
    first = enc.encode_json(root)
    again = enc.encode_json(nodes[18])          # met again, as a value of its own
    inside = enc.encode_json([1, nodes[18]])    # and inside an eagerly opened parent
    for data in (first, again, inside):
        assert type(data) is bytes
        check_record(json.loads(data), registry)
    assert record_depth(json.loads(again)) == 30 - 18


# -- the default detail ----------------------------------------------------------------------------


class Owner:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_the_default_detail_keeps_the_floor(registry):
    # A variable that is an object shows its fields; the objects in those fields, and in its
    # containers, show theirs; below that every value shows its type and every container its length.
    enc = ValueEncoder(registry)
    deepest = Owner(secret=1)
    leaf = Owner(x=1, y=[deepest] * 5, z={"k": deepest})
    held = Owner(name="n", items=[Owner(v=i, more=[i] * 9) for i in range(30)], one=leaf)
    record = enc.encode(held)
    names = field_names(record, registry)
    assert names == ["name", "items", "one"]
    items, one = record["field_values"][1], record["field_values"][2]
    # Objects in a container of the variable's fields show their fields.
    assert items["kind"] == "Sequence" and items["elements"][-1]["r"].endswith("more")
    first = items["elements"][0]
    assert first["kind"] == "Struct" and field_names(first, registry) == ["v", "more"]
    assert first["field_values"][1]["r"] == "<list: 9 items>"   # below: its length
    # An object in a field shows its fields; objects below it are named by their type.
    assert field_names(one, registry) == ["x", "y", "z"]
    y = one["field_values"][1]
    assert [e.get("r") for e in y["elements"]] == ["<test_encoder.Owner object>"] * 2 + ["\u2026 3 more"]


def test_the_default_detail_tapers_with_depth(registry):
    enc = ValueEncoder(registry)
    assert [collection_items(DEFAULT_MAX_ITEMS, d) for d in (1, 2, 3, 4)] == [10, 2, 2, 2]
    assert collection_items(100, 2) == 25 and collection_items(100, 3) == 6
    assert collection_items(1, 3) == 1
    record = enc.encode([list(range(20))] * 3)
    inner = record["elements"][0]
    assert texts(inner) == [0, 1, "\u2026 18 more"]
    # An object's fields are not tapered.
    record = enc.encode([[Owner(**{f"f{i}": i for i in range(8)})]])
    assert len(field_names(record["elements"][0]["elements"][0], registry)) == 8


def test_the_defaults_bound_what_a_step_costs(registry):
    # Whatever the value, one variable's record stays small at the defaults.
    enc = ValueEncoder(registry)
    grid = [[{"k": [Owner(a=list(range(100)))] * 50}] * 50 for _ in range(50)]
    assert len(enc.encode_json(grid)) < 8_000
    assert len(enc.encode_json("x" * 10**6)) < 300

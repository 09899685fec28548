"""Encoder: stream proxies recorded as their streams, the one safe type-name helper, bounded caches
(issue 9, items 18, 19, 22)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

from timelapse.encoder import ValueEncoder, type_name
from timelapse.iocapture import IOCapture
from timelapse.jsonbytes import to_json


class Registry:
    """A fake ``register_type``: one id per distinct type."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {(30, "None", None): 0}
        self.types: list = [(30, "None", None)]

    def __call__(self, kind, lang_type, fields=None) -> int:
        specific_info = fields and {"kind": "Struct", "fields": [{"name": n, "type_id": t} for n, t in fields]}
        key = (kind, lang_type, fields)
        if key not in self.ids:
            self.ids[key] = len(self.types)
            self.types.append((kind, lang_type, specific_info))
        return self.ids[key]


def both(enc: ValueEncoder, value: object) -> dict:
    """encode(value), checked to be what encode_json writes."""
    record = enc.encode(value)
    assert enc.encode_json(value) == to_json(record)
    return record


# -- item 18: a stream proxy is recorded as the stream it stands for ------------------------------


def test_a_stream_proxy_is_recorded_as_the_stream_it_stands_for(tmp_path):
    registry = Registry()
    enc = ValueEncoder(registry)
    with open(tmp_path / "out.txt", "w") as real:
        saved = sys.stdout, sys.__stdout__, sys.stdin, sys.__stdin__
        sys.stdout = sys.__stdout__ = real
        sys.stdin = sys.__stdin__ = None
        capture = IOCapture(lambda *args, **kwargs: None)
        capture.install()
        try:
            proxy = sys.stdout
            proxy_buffer = proxy.buffer
            holder = [proxy, {"out": proxy}, proxy_buffer]
        finally:
            capture.uninstall()
            sys.stdout, sys.__stdout__, sys.stdin, sys.__stdin__ = saved
        assert proxy is not real and type(proxy).__name__ == "TextIOWrapper"
        fresh = ValueEncoder(Registry())
        assert both(enc, proxy) == both(fresh, real) == {
            "kind": "Raw", "type_id": both(enc, proxy)["type_id"], "r": f"<file {str(tmp_path / 'out.txt')!r} mode='w'>",
        }
        assert registry.types[both(enc, proxy)["type_id"]][1] == "_io.TextIOWrapper"
        assert both(enc, proxy_buffer)["r"] == both(enc, real.buffer)["r"]
        assert both(enc, holder) == both(enc, [real, {"out": real}, real.buffer])


def test_a_proxy_of_a_stream_that_is_no_file_is_not_looked_into():
    enc = ValueEncoder(Registry())
    saved = sys.stdout, sys.__stdout__
    sys.stdout = sys.__stdout__ = fake = io.StringIO()
    capture = IOCapture(lambda *args, **kwargs: None)
    capture.install()
    try:
        proxy = sys.stdout
    finally:
        capture.uninstall()
        sys.stdout, sys.__stdout__ = saved
    assert type(proxy).__name__ == "StringIO" and type(proxy).__module__ == "_io"
    assert both(enc, proxy)["r"] == both(enc, fake)["r"] == "<_io.StringIO object>"


# -- item 19: one type-name helper, that never runs the program's code ----------------------------


class Calls:
    count = 0


class HostileText(str):
    """A module name whose comparisons and hash are the program's code."""

    def __eq__(self, other):
        Calls.count += 1
        return str.__eq__(self, other)

    def __ne__(self, other):
        Calls.count += 1
        return str.__ne__(self, other)

    def __hash__(self):
        Calls.count += 1
        return str.__hash__(self)


class HostileObject:
    def __eq__(self, other):
        Calls.count += 1
        return False

    __hash__ = object.__hash__


def test_type_name_reads_a_str_subclass_module_without_calling_it():
    cls = type("Thing", (), {"__module__": HostileText("shapes")})
    builtin_named = type("Other", (), {"__module__": HostileText("builtins")})
    Calls.count = 0
    assert type_name(cls) == "shapes.Thing"
    assert type_name(builtin_named) == "Other"
    assert Calls.count == 0


def test_type_name_ignores_a_module_that_is_no_text():
    cls = type("Thing", (), {"__module__": HostileObject()})
    Calls.count = 0
    assert type_name(cls) == "Thing"
    assert type_name(int) == "int" and type_name(io.TextIOWrapper) == "_io.TextIOWrapper"
    registry = Registry()
    enc = ValueEncoder(registry)
    assert both(enc, cls)["r"] == "<class Thing>"
    assert registry.types[both(enc, cls())["type_id"]][:2] == (6, "Thing")
    assert Calls.count == 0


class Sneaky(str):
    """A name that is a str subclass: formatting it (an f-string) or calling its methods runs the
    program's code. Functions, generators, code objects and classes accept one as ``__qualname__``."""

    def __format__(self, spec):
        Calls.count += 1
        return "FORMATTED"

    def lstrip(self, chars=None):
        Calls.count += 1
        return "LSTRIPPED"

    def __hash__(self):
        Calls.count += 1
        return str.__hash__(self)

    def __eq__(self, other):
        Calls.count += 1
        return str.__eq__(self, other)


def _generator():
    yield 1


def test_names_that_are_str_subclasses_are_read_as_their_text():
    def function():
        pass

    function.__qualname__ = Sneaky("renamed")
    generator = _generator()
    generator.__qualname__ = Sneaky("gen_renamed")
    code = function.__code__.replace(co_qualname=Sneaky("code_renamed"))
    cls = type("Plain", (), {"__slots__": ("value",)})
    cls.__qualname__ = Sneaky("Q")
    cls.__name__ = Sneaky("_N")
    instance = cls()
    instance.value = 1
    registry = Registry()
    enc = ValueEncoder(registry)
    Calls.count = 0
    assert both(enc, function)["r"] == f"<function {__name__}.renamed>"
    assert both(enc, generator)["r"] == "<generator gen_renamed>"
    assert both(enc, code)["r"] == "<code code_renamed>"
    assert both(enc, cls)["r"] == f"<class {__name__}.Q>"
    record = both(enc, instance)
    assert registry.types[record["type_id"]][1] == f"{__name__}.Q"
    assert record["field_values"][0]["i"] == 1
    assert Calls.count == 0


# -- item 22: every cache is bounded ----------------------------------------------------------------

_NAMES = [f"field{i}" for i in range(40)]


def _shaped(i: int, cls: type) -> object:
    """An instance whose attribute set is (nearly) unique to ``i``: names from a small pool, so that
    the names themselves cost nothing."""
    x = cls()
    for k in (i % 40, 40 + (i // 40) % 40, 80 + (i // 1600) % 40, 120 + i // 64000):
        setattr(x, _NAMES[k % 40] + "_" * (k // 40), k)
    return x


def _cache_sizes(enc: ValueEncoder) -> dict[str, int]:
    """Every cache the encoder keeps (all are dicts in its attributes), and how many entries each holds."""
    sizes = {name: len(value) for name, value in vars(enc).items() if type(value) is dict}
    return sizes


_WORKLOAD = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from test_enc_h3 import _cache_sizes, _shaped
from timelapse.encoder import ValueEncoder

class Obj:
    pass

def registry(kind, lang_type, specific_info=None):
    # Type ids that cost no memory (the writer's table is not the encoder's): a hash of the type.
    fields = specific_info and tuple(f["name"] for f in specific_info["fields"])
    return hash((kind, lang_type, fields)) & 0xFFFFFFF

enc = ValueEncoder(registry)
early = [_shaped(i, Obj) for i in range(3)]
expected = [enc.encode_json(x) for x in early]
largest = {}
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range(400_000):
    enc.encode_json(_shaped(i, Obj))
    if i % 1000 == 0:
        for name, size in _cache_sizes(enc).items():
            largest[name] = max(largest.get(name, 0), size)
for i in range(40_000):
    enc.encode_json(_shaped(i, type(f"C{i}", (), {})))
    enc.encode_json([i * 1.5, str(i), i << 40])
    if i % 1000 == 0:
        for name, size in _cache_sizes(enc).items():
            largest[name] = max(largest.get(name, 0), size)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
# After evictions, values are what a fresh encoder makes (the registry gives the same ids).
same_early = [enc.encode_json(x) for x in early] == expected
fresh = ValueEncoder(registry)
later = [_shaped(123_456, Obj), _shaped(7, type("Late", (), {})), [2.5, "x" * 70, 1 << 70]]
same_later = [enc.encode_json(x) for x in later] == [fresh.encode_json(x) for x in later]
print(json.dumps({"largest": largest, "growth_kib": growth, "same": [same_early, same_later]}))
"""


def test_caches_stay_bounded_over_400k_attribute_sets_and_40k_classes():
    """Peak memory measured in a process of its own (ru_maxrss: KiB on Linux), without tracemalloc's
    slowdown."""
    tests = os.path.dirname(__file__)
    result = subprocess.run([sys.executable, "-c", _WORKLOAD, tests], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert max(report["largest"].values()) <= 4096, report["largest"]
    assert report["growth_kib"] < 45_000, report  # KiB; 61 MB when 10,000 classes were kept
    assert report["same"] == [True, True]

"""Tests for timelapse.reader: loading trace folders (JSON and binary) and resolving ids."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from conftest import HAND_MADE_LIB, HAND_MADE_PROG, opening_events, write_trace_folder

from timelapse.reader import (
    BIN_MAGIC,
    ErrorValue,
    Trace,
    TraceUnreadable,
    decode_value,
    split_event,
)

PROG = HAND_MADE_PROG
LIB = HAND_MADE_LIB
METADATA = {"workdir": "/nonexistent/prog", "program": PROG, "args": ["--fast"]}


def INT(i):
    return {"kind": "Int", "type_id": 1, "i": i}


def STR(text):
    return {"kind": "String", "type_id": 2, "text": text}


NONE = {"kind": "None", "type_id": 0}

# main.py:  1 from lib import twice / 2 def f(a): / 3   return twice(a) / 4 print(f(5))
# lib.py:   1 def twice(n): / 2   return n * 2
EVENTS = [
    *opening_events(),  # 0-4: Path, <toplevel> Function and Call, None and int Types
    {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}},  # 5
    {"Function": {"path_id": 0, "line": 1, "name": "<__main__>"}},  # 6
    {"Step": {"path_id": 0, "line": 1}},  # 7   bound to <__main__> (rule 3)
    {"Call": {"function_id": 1, "args": []}},  # 8
    {"Step": {"path_id": 0, "line": 1}},  # 9
    {"Step": {"path_id": 0, "line": 2}},  # 10
    {"Step": {"path_id": 0, "line": 4}},  # 11
    {"Function": {"path_id": 0, "line": 2, "name": "f"}},  # 12
    {"VariableName": "a"},  # 13
    {"Step": {"path_id": 0, "line": 2}},  # 14
    {"Call": {"function_id": 2, "args": [{"variable_id": 0, "value": INT(5)}]}},  # 15
    {"Step": {"path_id": 0, "line": 3}},  # 16
    {"Value": {"variable_id": 0, "value": INT(5)}},  # 17
    {"Path": LIB},  # 18
    {"Function": {"path_id": 1, "line": 1, "name": "twice"}},  # 19
    {"VariableName": "n"},  # 20
    {"Step": {"path_id": 1, "line": 1}},  # 21
    {"Call": {"function_id": 3, "args": [{"variable_id": 1, "value": INT(5)}]}},  # 22
    {"Step": {"path_id": 1, "line": 2}},  # 23
    {"Value": {"variable_id": 1, "value": INT(5)}},  # 24
    {"Step": {"path_id": 1, "line": 3}},  # 25   a step that gets retracted
    {"Value": {"variable_id": 1, "value": INT(99)}},  # 26
    "DropLastStep",  # 27
    {"Return": {"return_value": INT(10)}},  # 28
    {"Return": {"return_value": INT(10)}},  # 29
    {"Step": {"path_id": 0, "line": 4}},  # 30
    {"Event": {"kind": 0, "metadata": "", "content": "10\n"}},  # 31
    {"Return": {"return_value": NONE}},  # 32
    {"Return": {"return_value": INT(0)}},  # 33
]


def write_trace(folder: Path, events=EVENTS, *, metadata=METADATA) -> Path:
    return write_trace_folder(folder, events, metadata=metadata)


def write_bin(folder: Path, events=EVENTS) -> Path:
    """The same trace as ``write_trace``, with the stream as trace.bin (CBOR in seekable zstd)."""
    cbor2 = pytest.importorskip("cbor2")
    pyzstd = pytest.importorskip("pyzstd")
    write_trace(folder, events)
    (folder / "trace.json").unlink()
    with open(folder / "trace.bin", "wb") as f:
        f.write(BIN_MAGIC)
        # small frames, so that the stream has several and a seek table with several entries
        with pyzstd.SeekableZstdFile(f, "w", max_frame_content_size=128) as z:
            for event in events:
                z.write(cbor2.dumps(event))
    return folder


@pytest.fixture
def trace(tmp_path) -> Trace:
    return Trace.load(write_trace(tmp_path / "t"))


# -- loading --------------------------------------------------------------------------------------


def test_load(trace, tmp_path):
    assert trace.events == EVENTS
    assert trace.metadata == METADATA
    assert trace.paths == [PROG, LIB]
    assert trace.stream_file == "trace.json"
    assert trace.folder == tmp_path / "t"
    assert "34 events from trace.json" in repr(trace)


def test_load_accepts_str(tmp_path):
    assert Trace.load(str(write_trace(tmp_path / "t"))).events == EVENTS


def test_bin_round_trip(tmp_path):
    from_json = Trace.load(write_trace(tmp_path / "json"))
    from_bin = Trace.load(write_bin(tmp_path / "bin"))
    assert from_bin.stream_file == "trace.bin"
    assert from_bin.events == from_json.events
    assert from_bin.metadata == from_json.metadata and from_bin.paths == from_json.paths
    assert [c.function for c in from_bin.calls()] == [c.function for c in from_json.calls()]
    assert [(s.path, s.line, s.values) for s in from_bin.steps()] == [
        (s.path, s.line, s.values) for s in from_json.steps()
    ]


def test_bin_has_a_seek_table(tmp_path):
    """The written file really is in the seekable format the native reader demands."""
    data = (write_bin(tmp_path / "t") / "trace.bin").read_bytes()
    assert data[:8] == BIN_MAGIC
    assert data[-4:] == (0x8F92EAB1).to_bytes(4, "little")


def test_json_is_preferred_to_bin(tmp_path):
    folder = write_bin(tmp_path / "t")
    (folder / "trace.json").write_text(json.dumps(EVENTS[:3]))
    assert Trace.load(folder).stream_file == "trace.json"


def test_empty_bin_stream(tmp_path):
    assert Trace.load(write_bin(tmp_path / "t", [])).events == []


def test_bin_needs_cbor2_and_pyzstd(tmp_path, monkeypatch):
    folder = write_bin(tmp_path / "t")
    import sys

    monkeypatch.setitem(sys.modules, "pyzstd", None)
    with pytest.raises(TraceUnreadable, match=r"needs the cbor2 and pyzstd packages \(pyzstd is not"
                                              r" installed: pip install pyzstd\)"):
        Trace.load(folder)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda f: (f / "trace.json").unlink(), "has no trace.json or trace.bin"),
        (lambda f: (f / "trace_paths.json").unlink(), "missing trace_paths.json"),
        (lambda f: (f / "trace.json").write_text("[1, 2"), "trace.json is not valid JSON"),
        (lambda f: (f / "trace.json").write_text("[Infinity]"), "trace.json is not valid JSON"),
        (lambda f: (f / "trace_paths.json").write_text("{}"), "trace_paths.json is not an array"),
        (lambda f: (f / "trace.json").write_bytes(b"\xef\xbb\xbf[]"), "trace.json is not valid JSON"),
    ],
)
def test_unreadable(tmp_path, damage, reason):
    folder = write_trace(tmp_path / "t")
    damage(folder)
    with pytest.raises(TraceUnreadable, match=reason) as info:
        Trace.load(folder)
    assert "\n" not in str(info.value)


def test_unreadable_folder(tmp_path):
    with pytest.raises(TraceUnreadable, match="no such folder"):
        Trace.load(tmp_path / "missing")


# -- trace.bin: frames and seek table -------------------------------------------------------------


def test_read_seek_table(tmp_path):
    from timelapse.reader import SeekTable, read_seek_table

    folder = write_bin(tmp_path / "t")
    path = folder / "trace.bin"
    table = read_seek_table(path)
    assert isinstance(table, SeekTable)
    assert len(table.frames) > 5  # write_bin makes frames of 128 bytes
    assert table.file_size == path.stat().st_size
    assert table.decompressed_size == sum(d for _, d in table.frames) == 128 * (len(table.frames) - 1) + \
        table.frames[-1][1]
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    assert read_seek_table(path) is None  # cut: no table (iter_events says where)
    path.write_bytes(b"PK" + data[2:])
    with pytest.raises(TraceUnreadable, match="does not start with the magic"):
        read_seek_table(path)


def test_items_longer_than_a_piece_and_spanning_many_frames(tmp_path):
    """Items cut by the end of a frame or of a decompressed piece are put together again,
    however many frames or pieces they span."""
    pyzstd = pytest.importorskip("pyzstd")
    cbor2 = pytest.importorskip("cbor2")
    big = [{"Event": {"kind": 0, "metadata": "", "content": "x" * n}} for n in (3_000_000, 10, 1_500_000)]
    events = [*EVENTS[:5], *big, *EVENTS[5:]]
    for frame_size in (64 * 1024, 8 * 1024 * 1024):  # many frames an item; many pieces a frame
        folder = write_trace(tmp_path / str(frame_size), events)
        (folder / "trace.json").unlink()
        with open(folder / "trace.bin", "wb") as f:
            f.write(BIN_MAGIC)
            with pyzstd.SeekableZstdFile(f, "w", max_frame_content_size=frame_size) as z:
                z.write(b"".join(cbor2.dumps(e) for e in events))
        assert Trace.load(folder).events == events


@pytest.mark.parametrize("claim", [
    bytes([0x7B]) + (2**40).to_bytes(8, "big"),         # a text of 2^40 bytes
    bytes([0xA1, 0x61, 0x6B, 0x9B]) + (2**40).to_bytes(8, "big"),   # {"k": an array of 2^40 items}
])
def test_a_head_that_claims_more_than_the_frames_hold_is_refused_before_reading_on(tmp_path, claim):
    """Damage that makes a CBOR head claim a huge length: the item would be gathered from the rest
    of the stream (here 64 MiB of CBOR after it) before cbor2 could say it is cut. The seek
    table's sizes say at once that the frames do not hold it: one error, and memory as for any
    frame."""
    import tracemalloc

    cbor2 = pytest.importorskip("cbor2")
    pyzstd = pytest.importorskip("pyzstd")
    from timelapse.cbor_format import seek_table
    from timelapse.reader import iter_events

    folder = write_trace(tmp_path / "t")
    (folder / "trace.json").unlink()
    head = b"".join(cbor2.dumps(e) for e in EVENTS[:10]) + claim
    frames = [(pyzstd.compress(head), len(head))]
    frames += [(pyzstd.compress(bytes(8 << 20)), 8 << 20) for _ in range(8)]    # CBOR 0s
    (folder / "trace.bin").write_bytes(BIN_MAGIC + b"".join(f for f, _ in frames)
                                       + seek_table([(len(f), n) for f, n in frames]))
    events = iter_events(folder)
    tracemalloc.start()
    try:
        assert [next(events) for _ in range(10)] == EVENTS[:10]
        with pytest.raises(TraceUnreadable) as raised:
            next(events)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(raised.value) == (f"trace.bin: CBOR item 10 cannot be decoded: it claims at least"
                                 f" {len(claim) + 2**40} bytes, but the seek table gives the frames"
                                 f" {len(claim) + (64 << 20)} from its start (byte"
                                 f" {len(head) - len(claim)} of the decompressed stream)")
    assert peak < 8 << 20, f"{peak} bytes held"


def test_least_size_is_a_lower_bound_of_every_cut_item_and_exact_on_whole_ones():
    cbor2 = pytest.importorskip("cbor2")
    from timelapse.cbor_format import BIN
    from timelapse.reader import _least_size

    items = [cbor2.dumps(e) for e in EVENTS] + [
        cbor2.dumps(v) for v in (2**64 - 1, -(2**63), 1.5, b"x" * 300, "é" * 70, cbor2.CBORTag(1, [1, {}]),
                                 {"a": [1, 2, {"b": None}], "c": [[[]]]})]
    items += [BIN.events.call(3, [BIN.events.arg_head(1) + BIN.values.sequence_head(2)
                                  + BIN.values.int(1, 7) * 3 + BIN.values.sequence_tail]),
              BIN.events.step(0, 1)]
    for item in items:
        assert _least_size(item) == len(item)
        for cut in range(1, len(item)):
            assert cut <= _least_size(item[:cut]) <= len(item), (item, cut)


def test_skippable_frames_between_frames_are_skipped(tmp_path):
    pytest.importorskip("cbor2")
    from timelapse.cbor_format import SeekableFrames, seek_table
    from timelapse.reader import iter_events

    import cbor2

    folder = write_trace(tmp_path / "t")
    (folder / "trace.json").unlink()
    framing = SeekableFrames()
    first, second = (b"".join(cbor2.dumps(e) for e in part) for part in (EVENTS[:10], EVENTS[10:]))
    frames = [framing.frame(first), (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc",
              framing.frame(second)]
    sizes = [(len(frames[0]), len(first)), (len(frames[1]), 0), (len(frames[2]), len(second))]
    data = BIN_MAGIC + b"".join(frames)
    (folder / "trace.bin").write_bytes(data + seek_table(sizes))
    assert list(iter_events(folder)) == EVENTS
    (folder / "trace.bin").write_bytes(data)  # without the table: walked, then reported as cut
    events = iter_events(folder)
    assert [next(events) for _ in EVENTS] == EVENTS
    with pytest.raises(TraceUnreadable, match=f"it ends at byte {len(data)}, after frame 2; the seek table"):
        next(events)


# -- id tables ------------------------------------------------------------------------------------


def test_tables(trace):
    assert trace.path_names == [PROG, LIB]
    assert [f["name"] for f in trace.functions] == ["<toplevel>", "<__main__>", "f", "twice"]
    assert [t["lang_type"] for t in trace.types] == ["None", "int", "str"]
    assert trace.variable_names == ["a", "n"]


def test_split_event():
    assert split_event({"Step": {"path_id": 0, "line": 1}}) == ("Step", {"path_id": 0, "line": 1})
    assert split_event("DropLastStep") == ("DropLastStep", None)
    assert split_event({"A": 1, "B": 2}) == (None, {"A": 1, "B": 2})
    assert split_event(7) == (None, 7)


def test_events_of(trace):
    assert trace.events_of("Event") == [{"kind": 0, "metadata": "", "content": "10\n"}]
    assert trace.events_of("Path") == [PROG, LIB]
    assert trace.events_of("DropLastStep") == [None]
    assert trace.events_of("Asm") == []


# -- calls ----------------------------------------------------------------------------------------


def test_calls(trace):
    calls = trace.calls()
    assert [(c.function, c.depth, c.index) for c in calls] == [
        ("<toplevel>", 0, 2),
        ("<__main__>", 1, 8),
        ("f", 2, 15),
        ("twice", 3, 22),
    ]
    toplevel, main, f, twice = calls
    assert (f.path, f.line, f.function_id) == (PROG, 2, 2)
    assert (twice.path, twice.line) == (LIB, 1)
    assert f.args == {"a": INT(5)}
    assert twice.args == {"n": INT(5)}
    assert toplevel.args == {}
    assert toplevel.return_value == INT(0)
    assert main.return_value == NONE
    assert decode_value(f.return_value) == 10
    assert toplevel.children == [main] and main.children == [f] and f.children == [twice]
    assert twice.parent is f and toplevel.parent is None
    assert all(c.thread is None for c in calls)


def test_unreturned_call_has_no_return_value(tmp_path):
    trace = Trace.load(write_trace(tmp_path / "t", EVENTS[:28]))
    assert [c.return_value for c in trace.calls()] == [None, None, None, None]


def test_calls_remember_their_thread(tmp_path):
    events = list(EVENTS)
    events[21:21] = [{"ThreadSwitch": 7}]
    events[8:8] = [{"ThreadStart": 1}]
    trace = Trace.load(write_trace(tmp_path / "t", events))
    assert [c.thread for c in trace.calls()] == [None, 1, 1, 7]


# -- steps ----------------------------------------------------------------------------------------


def test_steps(trace):
    steps = trace.steps()
    assert [(s.path, s.line) for s in steps] == [
        (PROG, 1), (PROG, 1), (PROG, 2), (PROG, 4), (PROG, 2), (PROG, 3),
        (LIB, 1), (LIB, 2), (PROG, 4),
    ]  # fmt: skip
    assert [s.index for s in steps] == [7, 9, 10, 11, 14, 16, 21, 23, 30]


def test_step_values(trace):
    steps = {s.index: s for s in trace.steps()}
    assert steps[16].values == {"a": INT(5)}
    assert steps[23].values == {"n": INT(5)}  # the retracted step's Value went with it
    # The def-line step before a Call has the Call's arguments as its values (the db-backend adds
    # them to that step's variables; timelapse writes no Values there).
    assert steps[14].values == {"a": INT(5)}
    assert steps[21].values == {"n": INT(5)}
    assert steps[10].values == {}


def test_call_arguments_join_the_step_before_in_event_order(tmp_path):
    """As the db-backend lists them: Values before the Call, then its args, then Values after it;
    a name given twice shows the later record."""
    events = list(EVENTS)
    events[15] = {"Call": {"function_id": 2, "args": [{"variable_id": 0, "value": INT(5)}]}}
    events[15:15] = [{"Value": {"variable_id": 0, "value": INT(1)}}]     # before the Call
    events[16 + 1:16 + 1] = [{"Value": {"variable_id": 0, "value": INT(7)}}]    # after it
    trace = Trace.load(write_trace(tmp_path / "t", events))
    step = next(s for s in trace.steps() if s.index == 14)
    assert step.values == {"a": INT(7)}
    events[17:18] = []  # no Value after the Call: the argument wins over the one before it
    trace = Trace.load(write_trace(tmp_path / "u", events))
    step = next(s for s in trace.steps() if s.index == 14)
    assert step.values == {"a": INT(5)}


def test_step_call_binding(trace):
    """A step belongs to the innermost open call, but the step right before a Call to that call."""
    calls = {c.function: c for c in trace.calls()}
    bound = {s.index: s.call.function for s in trace.steps()}
    assert bound == {
        7: "<__main__>", 9: "<__main__>", 10: "<__main__>", 11: "<__main__>",
        14: "f", 16: "f", 21: "twice", 23: "twice", 30: "<__main__>",
    }  # fmt: skip
    assert trace.steps()[0].call is calls["<__main__>"]


def test_values_after_drop_go_to_the_previous_step(tmp_path):
    events = list(EVENTS)
    events.insert(28, {"Value": {"variable_id": 1, "value": INT(6)}})
    trace = Trace.load(write_trace(tmp_path / "t", events))
    assert {s.index: s for s in trace.steps()}[23].values == {"n": INT(6)}


def test_value_before_any_step_is_dropped(tmp_path):
    events = list(EVENTS)
    events.insert(6, {"Value": {"variable_id": 2, "value": INT(1)}})
    events.append({"VariableName": "early"})  # VariableId 2 (out of order: the reader does not mind)
    trace = Trace.load(write_trace(tmp_path / "t", events))
    assert all("early" not in s.values for s in trace.steps())


def test_broken_trace_raises_value_error(tmp_path):
    events = list(EVENTS)
    events[15] = {"Call": {"function_id": 9, "args": []}}
    trace = Trace.load(write_trace(tmp_path / "t", events))
    with pytest.raises(ValueError, match="event 15: cannot resolve Call"):
        trace.calls()


def test_views_are_cached(trace):
    assert trace.calls() is trace.calls()
    assert trace.steps() is trace.steps()


# -- decode_value ---------------------------------------------------------------------------------


def test_decode_scalars():
    assert decode_value(INT(-3)) == -3
    assert decode_value({"kind": "Float", "type_id": 1, "f": "2.5"}) == 2.5
    assert decode_value({"kind": "Float", "type_id": 1, "f": "-inf"}) == -math.inf
    assert math.isnan(decode_value({"kind": "Float", "type_id": 1, "f": "nan"}))
    assert decode_value(STR("héllo")) == "héllo"
    assert decode_value({"kind": "Bool", "type_id": 1, "b": False}) is False
    assert decode_value(NONE) is None
    assert decode_value({"kind": "Raw", "type_id": 1, "r": "<object at 0x1>"}) == "<object at 0x1>"
    assert decode_value({"kind": "Error", "type_id": 1, "msg": "boom"}) == ErrorValue("boom")


def test_decode_bigint():
    big = 2**100 + 7
    magnitude = big.to_bytes(13, "big")
    text = base64.b64encode(magnitude).decode()
    assert decode_value({"kind": "BigInt", "type_id": 1, "b": text, "negative": False}) == big
    assert decode_value({"kind": "BigInt", "type_id": 1, "b": text, "negative": True}) == -big
    assert decode_value({"kind": "BigInt", "type_id": 1, "b": magnitude, "negative": True}) == -big


def test_decode_containers():
    seq = {"kind": "Sequence", "type_id": 1, "is_slice": False, "elements": [INT(1), STR("a")]}
    assert decode_value(seq) == [1, "a"]
    tup = {"kind": "Tuple", "type_id": 1, "elements": [INT(1), seq]}
    assert decode_value(tup) == (1, [1, "a"])
    variant = {"kind": "Variant", "type_id": 1, "discriminator": "Ok", "contents": tup}
    assert decode_value(variant) == ("Ok", (1, [1, "a"]))
    ref = {"kind": "Reference", "type_id": 1, "dereferenced": INT(4), "address": 9, "mutable": True}
    assert decode_value(ref) == 4


def test_decode_struct_needs_the_trace(tmp_path):
    events = list(EVENTS)
    events.insert(6, {"Type": {"kind": 6, "lang_type": "Point", "specific_info": {
        "kind": "Struct", "fields": [{"name": "x", "type_id": 1}, {"name": "y", "type_id": 1}]}}})
    trace = Trace.load(write_trace(tmp_path / "t", events))
    point = {"kind": "Struct", "type_id": 3, "field_values": [INT(1), INT(2)]}
    assert decode_value(point, trace) == {"x": 1, "y": 2}
    with pytest.raises(ValueError, match="needs the trace"):
        decode_value(point)


@pytest.mark.parametrize("record", [{"kind": "Cell", "place": 1}, {"kind": "Nope"}, [1], None])
def test_decode_refuses_the_rest(record):
    with pytest.raises(ValueError, match="cannot decode"):
        decode_value(record)

"""timelapse._eventscan (where a stream's events end) and ``iter_events(values=False)``.

The scanner only finds ends; what it hands back is decoded by cbor2 and json as always, so the
property checked everywhere is: the events that come out are exactly those of the ordinary path with
the Values dropped, and the count left out is the number of Values, on random items cut anywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cbor2
import pytest
from conftest import CONSOLE_SCRIPT, write_trace_folder, opening_events
from hypothesis import given, settings, strategies as st

from timelapse import reader
from timelapse.reader import LeftOut, RawValue, TraceUnreadable, iter_events

eventscan = pytest.importorskip("timelapse._eventscan", reason="timelapse._eventscan is not built")
VALUE_START = reader._CBOR_VALUE_START

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**64 + 1, 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=30), st.binary(max_size=30))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False,
                         allow_infinity=False), st.text(alphabet=st.characters(codec="utf-8"), max_size=30))


def _tree(leaves):
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=20)


events = st.one_of(
    _tree(scalars).map(lambda value: {"Value": {"variable_id": 1, "value": value}}),
    _tree(scalars).map(lambda value: {"Step": value}),
    st.just("DropLastStep"),
    _tree(scalars),
)


def _python_split(data: bytes, pos: int) -> tuple[list[bytes], int, int]:
    """What cbor_events must return, found with cbor2 itself."""
    import io
    stream = io.BytesIO(data)
    stream.seek(pos)
    decoder = cbor2.CBORDecoder(stream)
    kept, skipped = [], 0
    while pos < len(data):
        try:
            decoder.decode()
        except Exception:
            break
        end = stream.tell()
        if data[pos:end].startswith(VALUE_START):
            skipped += 1
        else:
            kept.append(data[pos:end])
        pos = end
    return kept, skipped, pos


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=8), st.data())
def test_cbor_items_cut_anywhere(items, data):
    encoded = [cbor2.dumps(item) for item in items]
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream)))
    assert eventscan.cbor_events(stream[:cut], 0, VALUE_START) == _python_split(stream[:cut], 0)
    whole, skipped, end = eventscan.cbor_events(stream, 0, VALUE_START)
    assert end == len(stream)
    assert [cbor2.loads(raw) for raw in whole] == [i for i in items if not reader._is_value(i)]
    assert skipped == sum(reader._is_value(i) for i in items)


def test_split_flags_what_events_would_skip():
    items = [{"Value": {"v": 1}}, {"Step": 1}, "DropLastStep", {"Value": [2]}]
    data = b"".join(cbor2.dumps(item) for item in items)
    raws, flags, end = eventscan.cbor_split(data, 0, VALUE_START)
    assert [cbor2.loads(r) for r in raws] == items and flags == [True, False, False, True] and end == len(data)
    text = "[" + ", ".join(json.dumps(item) for item in items) + "]"
    texts, flags, end, closed = eventscan.json_split(text, 1, "Value")
    assert [json.loads(t) for t in texts] == items and flags == [True, False, False, True] and closed


def test_cbor_indefinite_tags_and_damage():
    indefinite = b"\x9f\x01\xbf\x61a\x02\xff\x5f\x41x\x41y\xff\x7f\x61a\xff\xff"   # [1, {a: 2}, b'xy', 'a']
    tagged = cbor2.dumps(cbor2.CBORTag(1, 5))
    assert eventscan.cbor_events(indefinite + tagged, 0, VALUE_START) == ([indefinite, tagged], 0,
                                                                           len(indefinite + tagged))
    for damaged in [b"\x1c", b"\xff", b"\x81\xff", b"\x1f", b"\xdf"]:     # reserved, stray breaks, bad indefinites
        assert eventscan.cbor_events(b"\x01" + damaged, 0, VALUE_START) == ([b"\x01"], 0, 1)
    huge = b"\x5b" + (2**40).to_bytes(8, "big") + b"x"                     # claims 2^40 bytes
    assert eventscan.cbor_events(huge, 0, VALUE_START) == ([], 0, 0)
    deep = b"\x81" * 2000 + b"\x01"
    assert eventscan.cbor_events(deep, 0, VALUE_START) == ([], 0, 0)        # deeper than it goes: left to cbor2
    with pytest.raises(ValueError):
        eventscan.cbor_events(b"\x01", 2, VALUE_START)
    with pytest.raises(TypeError):
        eventscan.cbor_events("text", 0, VALUE_START)


def _json_split(text: str, pos: int) -> tuple[list[str], int, int, bool]:
    """What json_events must return, found with json's own scanner."""
    scan = json.JSONDecoder().scan_once
    kept, skipped, closed = [], 0, False
    while True:
        start = pos
        while start < len(text) and text[start] in " \t\n\r":
            start += 1
        if start >= len(text) or text[start] not in '{["':
            break
        try:
            value, end = scan(text, start)
        except (StopIteration, ValueError):
            break
        after = end
        while after < len(text) and text[after] in " \t\n\r":
            after += 1
        if after >= len(text) or text[after] not in ",]":
            break
        if type(value) is dict and list(value) == ["Value"] and isinstance(value["Value"], (dict, list, str)):
            skipped += 1
        else:
            kept.append(text[start:end])
        if text[after] == "]":
            pos, closed = after, True
            break
        pos = after + 1
    return kept, skipped, pos, closed


json_events_strategy = st.one_of(
    _tree(json_scalars).map(lambda value: {"Value": {"variable_id": 1, "value": value}}),
    _tree(json_scalars).map(lambda value: {"Step": value}),
    st.just("DropLastStep"),
    _tree(json_scalars),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_events_strategy, min_size=1, max_size=8), st.sampled_from([",", ", ", ",\n  "]),
       st.booleans(), st.data())
def test_json_elements_cut_anywhere(items, separator, ascii_only, data):
    text = "[" + separator.join(json.dumps(item, ensure_ascii=ascii_only) for item in items) + "]"
    cut = data.draw(st.integers(1, len(text)))
    assert eventscan.json_events(text[:cut], 1, "Value") == _json_split(text[:cut], 1)
    texts, skipped, end, closed = eventscan.json_events(text, 1, "Value")
    if all(json.dumps(item)[:1] in '{["' for item in items):   # no number or literal to stop at
        assert closed and end == len(text) - 1
        assert len(texts) + skipped == len(items)


def test_json_strings_with_brackets_escapes_and_a_number_stop():
    text = '[{"Step": "a]}\\"\\\\"}, {"Value" : {"x": "]]]"}} ,"DropLastStep", 12, {"Step": 1}]'
    texts, skipped, end, closed = eventscan.json_events(text, 1, "Value")
    assert texts == ['{"Step": "a]}\\"\\\\"}', '"DropLastStep"'] and skipped == 1 and not closed
    # Only an object of one member named Value is skipped, and only if that member is not a number.
    for kept in ['{"Value": 1}', '{"Value": {}, "b": 2}', '{"b": 2, "Value": {}}', '{"Valu": {}}']:
        assert eventscan.json_events(f"[{kept}]", 1, "Value") == ([kept], 0, len(kept) + 1, True)
    assert text[end:].lstrip().startswith("12")
    assert eventscan.json_events("[1,]", 3, "Value") == ([], 0, 3, False)   # a ']' where an element must be
    assert eventscan.json_events('[{"a": 1} {"b": 2}]', 1, "Value") == ([], 0, 1, False)   # no ','
    assert eventscan.json_events("[{\"é\": \"ü€😀\"}]", 1, "Value") == (["{\"é\": \"ü€😀\"}"], 0, 13, True)
    with pytest.raises(ValueError):
        eventscan.json_events("[]", 5, "Value")


# -- iter_events(values=False), end to end ------------------------------------------------------------

PROGRAM = textwrap.dedent("""\
    import threading
    def work(items):
        return {k: [v] * 3 for k, v in items.items()}
    data = {"a": 1.5, "b": None, "c": "x" * 300}
    for i in range(200):
        data[i % 7] = work({"k": i, "s": str(i)})
    t = threading.Thread(target=work, args=({"t": 1},)); t.start(); t.join()
    print("done")
""")


@pytest.fixture(scope="module", params=["json", "bin"])
def recorded(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"eventscan-{request.param}")
    (folder / "prog.py").write_text(PROGRAM)
    done = subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "--format", request.param, "-o",
                           str(folder / "trace"), str(folder / "prog.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder / "trace"


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_values_left_out_are_exactly_the_values(recorded, compiled, monkeypatch):
    monkeypatch.setattr(reader, "EVENTSCAN", eventscan if compiled else None)   # whatever TIMELAPSE_PURE says
    everything = list(iter_events(recorded))
    left_out = LeftOut()
    without = list(iter_events(recorded, values=False, left_out=left_out))
    assert without == [e for e in everything if not reader._is_value(e)]
    assert left_out.values == sum(map(reader._is_value, everything)) > 1000


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_raw_values_decode_to_the_events(recorded, compiled, monkeypatch):
    monkeypatch.setattr(reader, "EVENTSCAN", eventscan if compiled else None)   # whatever TIMELAPSE_PURE says
    everything = list(iter_events(recorded))
    raw = list(iter_events(recorded, raw_values=True))
    assert [type(e) is RawValue for e in raw] == [reader._is_value(e) for e in everything]
    assert [e.decode() if type(e) is RawValue else e for e in raw] == everything
    if compiled:    # kept as read, the event's own bytes or text (but where a block of the file ends)
        kinds = [type(e.data) for e in raw if type(e) is RawValue]
        as_read = bytes if recorded.joinpath("trace.bin").exists() else str
        assert set(kinds) <= {as_read, dict} and kinds.count(as_read) > 0.9 * len(kinds)


def test_small_pieces_and_blocks_change_nothing(recorded, monkeypatch):
    """Items and elements cut by the ends of pieces (trace.bin) and blocks (trace.json)."""
    everything = list(iter_events(recorded))
    monkeypatch.setattr(reader, "_PIECE", 257)
    monkeypatch.setattr(reader, "_BLOCK_SIZE", 263)
    assert list(iter_events(recorded, values=False)) == [e for e in everything if not reader._is_value(e)]
    raw = iter_events(recorded, raw_values=True)
    assert [e.decode() if type(e) is RawValue else e for e in raw] == everything


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_damage_is_reported_as_without_the_scanner(tmp_path, compiled, monkeypatch):
    """A damaged event that is not a Value: the same message, the same events before it."""
    monkeypatch.setattr(reader, "EVENTSCAN", eventscan if compiled else None)   # whatever TIMELAPSE_PURE says
    events = opening_events() + [{"VariableName": "x"}, {"Step": {"path_id": 0, "line": 1}},
                                 {"Value": {"variable_id": 0, "value": {"kind": "Int", "type_id": 1, "i": 1}}}] * 50
    folder = write_trace_folder(tmp_path / "trace", events, metadata={"program": "/nonexistent/prog/main.py"})
    text = (folder / "trace.json").read_text()
    cut = text.index('{"Step"', len(text) // 2)
    for damaged in [text[:cut] + '{"Step": {"path_id": 0, "line": 1,}}' + text[cut:].split("}}", 1)[1],
                    text[: len(text) - 40]]:
        (folder / "trace.json").write_text(damaged)
        with pytest.raises(TraceUnreadable) as ordinary:
            list(iter_events(folder))
        seen, left_out = [], LeftOut()
        with pytest.raises(TraceUnreadable) as skipping:
            for event in iter_events(folder, values=False, left_out=left_out):
                seen.append(event)
        assert str(skipping.value) == str(ordinary.value)
        # Values left out before the damage: counted once, also where a batch was read again.
        events_before = [e for e in events[: len(seen) + left_out.values]]
        assert left_out.values == sum(map(reader._is_value, events_before))
        assert seen == [e for e in events if not reader._is_value(e)][: len(seen)] and len(seen) > 20


def test_summary_is_the_same_with_and_without_the_scanner(recorded):
    runs = [subprocess.run([sys.executable, "-m", "timelapse", "summary", str(recorded), "--json"],
                           capture_output=True, text=True, env={**__import__("os").environ, "TIMELAPSE_PURE": pure})
            for pure in ("0", "1")]
    assert runs[0].returncode == runs[1].returncode == 0, runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == runs[1].stdout
    assert json.loads(runs[0].stdout)["counts"]["events"] == len(list(iter_events(recorded)))


def test_no_reference_is_kept_or_lost():
    data = b"".join(cbor2.dumps(event) for event in [{"Value": {"a": [1, 2]}}, {"Step": {"line": 1}}] * 10)
    text = "[" + ",".join(json.dumps(event) for event in [{"Value": {"a": [1, 2]}}, {"Step": 1}] * 10) + "]"
    key, start = "Value", VALUE_START
    counts = [sys.getrefcount(thing) for thing in (data, text, key, start)]
    for _ in range(2000):
        eventscan.cbor_events(data, 0, start)
        eventscan.json_events(text, 1, key)
    assert [sys.getrefcount(thing) for thing in (data, text, key, start)] == counts


def test_a_damaged_value_never_takes_its_neighbour_along(tmp_path):
    """Brackets matched in kind: `[1, 2}` inside a Value does not balance against the next event's."""
    bad = '{"Value": {"variable_id": 0, "value": [1, 2}, {"Step": {"path_id": 0, "line": 3}}]}'
    assert eventscan.json_events("[" + bad + "]", 1, "Value") == ([], 0, 1, False)
    events = opening_events() + [{"Step": {"path_id": 0, "line": 1}}]
    folder = write_trace_folder(tmp_path / "trace", events, metadata={"program": "/nonexistent/prog/main.py"})
    text = (folder / "trace.json").read_text()
    (folder / "trace.json").write_text(text[:-1] + ", " + bad + ', {"Step": {"path_id": 0, "line": 4}}]')
    with pytest.raises(TraceUnreadable) as ordinary:
        list(iter_events(folder))
    with pytest.raises(TraceUnreadable) as skipping:
        list(iter_events(folder, values=False))
    assert str(skipping.value) == str(ordinary.value)

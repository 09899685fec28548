"""Tests for reader.iter_events: the streaming way into a trace (issue 9, item 23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import opening_events, write_trace_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timelapse import reader
from timelapse.reader import BIN_MAGIC, Trace, TraceUnreadable, iter_events, read_side_files, stream_path

METADATA = {"workdir": "/nonexistent/prog", "program": "/nonexistent/prog/main.py", "args": []}
EVENTS = [
    *opening_events(),
    {"Step": {"path_id": 0, "line": 1}},
    {"VariableName": 'a "quoted", ] odd [ name {'},
    {"Value": {"variable_id": 0, "value": {"kind": "String", "type_id": 0, "text": '],"\\\n{é€😀'}}},
    "DropLastStep",
    {"Return": {"return_value": {"kind": "Int", "type_id": 1, "i": 2**70}}},
]


def folder_with(tmp_path: Path, text: str | bytes) -> Path:
    folder = write_trace_folder(tmp_path / "t", EVENTS, metadata=METADATA)
    data = text.encode("utf-8") if isinstance(text, str) else text
    (folder / "trace.json").write_bytes(data)
    return folder


def recorder_layout(events: list) -> str:
    """How the recorder writes trace.json: '[', events joined by ',' or ',\\n', then '\\n]\\n'."""
    parts = [json.dumps(e, separators=(",", ":")) for e in events]
    body = "".join(p + (",\n" if i % 3 == 2 else ",") for i, p in enumerate(parts[:-1]))
    return "[\n" + body + (parts[-1] if parts else "") + "\n]\n"


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Read 5 bytes at a time, so that every event, string and number spans block boundaries."""
    monkeypatch.setattr(reader, "_BLOCK_SIZE", 5)


@pytest.mark.parametrize(
    "layout",
    [json.dumps, recorder_layout, lambda e: json.dumps(e, indent=2), lambda e: json.dumps(e, ensure_ascii=False)],
)
def test_iter_events_reads_every_layout(tmp_path, tiny_blocks, layout):
    folder = folder_with(tmp_path, layout(EVENTS))
    assert list(iter_events(folder)) == EVENTS
    assert Trace.load(folder).events == EVENTS


def test_iter_events_is_lazy(tmp_path):
    folder = folder_with(tmp_path, json.dumps(EVENTS) + "garbage")
    events = iter_events(folder)
    assert next(events) == EVENTS[0]  # the damage at the end is not read yet
    with pytest.raises(TraceUnreadable, match="extra data after the closing"):
        list(events)


def test_stream_path_and_side_files(tmp_path):
    folder = folder_with(tmp_path, json.dumps(EVENTS))
    assert stream_path(folder) == folder / "trace.json"
    assert read_side_files(folder) == (METADATA, [EVENTS[0]["Path"]])
    with pytest.raises(TraceUnreadable, match="no such folder"):
        stream_path(tmp_path / "nope")


# Any JSON value, including strings full of the characters that matter to a scanner.
_TRICKY = st.sampled_from(list('[]{},:"\\\n\t ') + ["é", "€", "😀", "\u2028", "\x00", "\ud800"])
_TEXT = st.text(st.one_of(_TRICKY, st.characters()), max_size=12)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(_JSON, max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    separators=st.sampled_from([None, (",", ":"), (" , ", " : ")]),
    block=st.integers(min_value=1, max_value=40),
)
def test_iter_events_matches_json_load(tmp_path, monkeypatch, values, indent, separators, block):
    monkeypatch.setattr(reader, "_BLOCK_SIZE", block)
    text = json.dumps(values, indent=indent, separators=separators)  # ensure_ascii: lone surrogates too
    folder = folder_with(tmp_path, text)
    assert list(iter_events(folder)) == json.loads(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_JSON, max_size=6), block=st.integers(min_value=1, max_value=40))
def test_iter_events_reads_raw_utf8(tmp_path, monkeypatch, values, block):
    monkeypatch.setattr(reader, "_BLOCK_SIZE", block)
    text = json.dumps(values, ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be written raw
        return
    folder = folder_with(tmp_path, data)
    assert list(iter_events(folder)) == json.loads(text)


# -- damaged streams: one line, naming where -----------------------------------------------------


def test_every_truncation_is_one_clear_error(tmp_path, tiny_blocks):
    text = recorder_layout(EVENTS)
    data = text.rstrip().encode("utf-8")  # cutting only trailing whitespace leaves a valid file
    for cut in range(len(data)):
        folder = folder_with(tmp_path, data[:cut])
        with pytest.raises(TraceUnreadable) as info:
            list(iter_events(folder))
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("trace.json is not valid"), (cut, message)
        assert "byte" in message or "event" in message or "empty" in message, (cut, message)
    assert list(iter_events(folder_with(tmp_path, data))) == EVENTS


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"Path": "/a.py"}, {"Step": {"path_id": 0, "li', "ends inside event 1, which starts at byte 20"),
        ('[{"Path": "/a.py"}, "DropLa', "ends inside event 1"),
        ('[{"Path": "/a.py"},', "ends after a ',' where event 1 should be"),
        ('[{"Path": "/a.py"}, "DropLastStep"', "ends after event 1 without the closing ']'"),
        ('[{"Path": "/a.py"} {"Path": "/b.py"}]', "expected ',' or ']' after event 0, found '{' at byte 19"),
        ('[{"Path": "/a.py"}, {"Path" "/b.py"}]', "Expecting ':' delimiter at byte 28 (in event 1)"),
        ('[{"Path": "/a.py"},]', "expecting a value at byte 19 (in event 1)"),
        ('[1, NaN]', "NaN is not JSON"),
        ("[1] [2]", "extra data after the closing ']' at byte 4"),
        ("hello", "expected '[' at byte 0, found 'h'"),
        ("", "the file is empty"),
        ('{"Path": "/a.py"}', "trace.json is not a JSON array"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_damaged_stream(tmp_path, text, reason):
    with pytest.raises(TraceUnreadable, match=_literal(reason)):
        list(iter_events(folder_with(tmp_path, text)))


def test_byte_offsets_count_bytes_not_characters(tmp_path, tiny_blocks):
    text = '["ééé", "€", x]'
    with pytest.raises(TraceUnreadable, match=_literal("at byte 18 (in event 2)")):
        list(iter_events(folder_with(tmp_path, text)))


def test_invalid_utf8_names_its_byte(tmp_path, tiny_blocks):
    with pytest.raises(TraceUnreadable, match=r"not valid UTF-8 \(byte offset 12\)"):
        list(iter_events(folder_with(tmp_path, b'["abc", "def\xff"]')))


def _literal(text: str) -> str:
    import re

    return re.escape(text)


# -- trace.bin -----------------------------------------------------------------------------------


def write_bin(folder: Path, events: list, *, cut: int | None = None) -> Path:
    cbor2 = pytest.importorskip("cbor2")
    pyzstd = pytest.importorskip("pyzstd")
    write_trace_folder(folder, events, metadata=METADATA, stream=False)
    payload = b"".join(cbor2.dumps(e) for e in events)
    with open(folder / "trace.bin", "wb") as f:
        f.write(BIN_MAGIC)
        with pyzstd.SeekableZstdFile(f, "w", max_frame_content_size=64) as z:
            z.write(payload if cut is None else payload[:cut])
    return folder


def test_iter_events_streams_trace_bin(tmp_path):
    folder = write_bin(tmp_path / "t", EVENTS * 20)
    assert list(iter_events(folder)) == EVENTS * 20


def test_truncated_trace_bin(tmp_path):
    folder = write_bin(tmp_path / "t", EVENTS, cut=-3)
    events = iter_events(folder)
    assert [next(events) for _ in EVENTS[:-1]] == EVENTS[:-1]
    with pytest.raises(TraceUnreadable, match=f"CBOR item {len(EVENTS) - 1} cannot be decoded"):
        next(events)

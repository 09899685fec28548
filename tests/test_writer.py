"""The trace writer: ids defined by their first use, streaming batches, IO merging, source versions."""

from __future__ import annotations

import errno
import json
import os

import pytest

from timelapse.writer import TraceWriter


def written(folder):
    return json.loads((folder / "trace.json").read_text())


def test_ids_are_ordinals_of_their_defining_events(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py", batch_size=4)
    assert writer.path_id("/prog.py") == 0
    assert writer.path_id("/lib.py") == 1 and writer.path_id("/lib.py") == 1
    assert writer.function_id(1, 3, "f") == 1 and writer.function_id(1, 3, "f") == 1
    assert writer.type_id(30, "None") == 0
    assert writer.type_id(7, "int") == 1 and writer.type_id(7, "int") == 1
    assert writer.type_id(6, "P", ()) == 2
    assert writer.variable_id("x") == 0 and writer.variable_id("y") == 1
    writer.close({"program": "/prog.py", "args": [], "workdir": "/"})
    events = written(tmp_path)
    assert events[:4] == [
        {"Path": "/prog.py"},
        {"Function": {"path_id": 0, "line": 1, "name": "<toplevel>"}},
        {"Call": {"function_id": 0, "args": []}},
        {"Type": {"kind": 30, "lang_type": "None", "specific_info": {"kind": "None"}}},
    ]
    assert [e for e in events if "Path" in e] == [{"Path": "/prog.py"}, {"Path": "/lib.py"}]
    assert json.loads((tmp_path / "trace_paths.json").read_text()) == ["/prog.py", "/lib.py"]


def test_batches_stream_into_one_json_array(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py")
    for line in range(1, 2001):
        writer.events.append(b'{"Step":{"path_id":0,"line":%d}}' % line)
        if len(writer.events) >= 64:
            writer.flush()
    writer.close({})
    steps = [e["Step"]["line"] for e in written(tmp_path) if "Step" in e]
    assert steps == list(range(1, 2001))


def test_consecutive_io_is_merged_until_another_event(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py")
    writer.emit_io(0, "{}", "a")
    writer.emit_io(0, "{}", "b\n")
    writer.emit_io(2, "{}", "err")
    writer.events.append(b'{"Step":{"path_id":0,"line":2}}')
    writer.emit_io(2, "{}", "more")
    writer.close({})
    contents = [e["Event"]["content"] for e in written(tmp_path) if "Event" in e]
    assert contents == ["ab\n", "err", "more"]


def test_rollback_takes_back_a_torn_group_but_keeps_the_id_definitions(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py")
    writer.events.append(b'{"Step":{"path_id":0,"line":1}}')
    mark = len(writer.events)
    writer.events.append(b'{"Step":{"path_id":0,"line":2}}')
    variable = writer.variable_id("x")          # defined inside the torn group
    writer.emit_io(2, "{}", "lost output")
    writer.events.append(b'{"Value":{"variable_id":%d,"value":' % variable)   # half an event
    writer.rollback(mark)
    writer.emit_io(2, "{}", "kept")     # the rolled-back IO event is not reopened
    writer.close({})
    events = written(tmp_path)
    assert {"VariableName": "x"} in events
    assert {"Step": {"path_id": 0, "line": 2}} not in events
    assert [e["Event"]["content"] for e in events if "Event" in e] == ["kept"]
    assert writer.variable_id("x") == variable


def test_batches_are_bounded_by_bytes(tmp_path, monkeypatch):
    import timelapse.writer as writer_module

    monkeypatch.setattr(writer_module, "_BATCH_BYTES", 10_000)
    writer = TraceWriter(tmp_path, "/prog.py", batch_size=16)     # measured every 16 events
    big = b'{"Event":{"kind":12,"metadata":"","content":"%b"}}' % (b"x" * 1000)
    most_pending = 0
    for _ in range(200):
        writer.events.append(big)
        if len(writer.events) >= writer.batch_size:
            writer.flush_if_full()
        most_pending = max(most_pending, sum(map(len, writer.events)))
    assert most_pending < 10_000 + 16 * len(big)
    assert writer.bytes_written > 100_000     # written as it went, not at close
    writer.close({})
    assert len(written(tmp_path)) == 200 + 4


def test_long_output_is_split_over_several_events(tmp_path, monkeypatch):
    import timelapse.writer as writer_module

    monkeypatch.setattr(writer_module, "_MAX_IO_EVENT", 100)
    writer = TraceWriter(tmp_path, "/prog.py")
    writer.emit_io(2, "{}", "a" * 250)
    for _ in range(30):
        writer.emit_io(2, "{}", "b" * 10)
    writer.close({})
    contents = [e["Event"]["content"] for e in written(tmp_path) if "Event" in e]
    assert "".join(contents) == "a" * 250 + "b" * 300
    assert max(map(len, contents)) <= 100


def test_short_writes_are_completed_and_a_write_of_nothing_is_an_error(tmp_path, monkeypatch):
    import timelapse.writer as writer_module

    real_writev = os.writev

    def short_writev(fd, buffers):   # writes at most 7 bytes, as a nearly full disk may
        data = b"".join(buffers)[:7]
        return real_writev(fd, [data])

    monkeypatch.setattr(writer_module.os, "writev", short_writev)
    writer = TraceWriter(tmp_path, "/prog.py")
    writer.events.extend(b'{"Step":{"path_id":0,"line":%d}}' % i for i in range(1, 50))
    writer.close({})
    assert [e["Step"]["line"] for e in written(tmp_path) if "Step" in e] == list(range(1, 50))

    (tmp_path / "full").mkdir()
    full = TraceWriter(tmp_path / "full", "/prog.py")
    monkeypatch.setattr(writer_module.os, "writev", lambda fd, buffers: 0)
    full.events.append(b'{"Step":{"path_id":0,"line":1}}')
    with pytest.raises(OSError) as raised:
        full.flush()
    assert raised.value.errno == errno.ENOSPC


@pytest.mark.parametrize("fmt", ["json", "bin"])
def test_the_first_and_last_bytes_of_the_stream_survive_short_writes_too(tmp_path, monkeypatch, fmt):
    """The header (trace.bin's magic, JSON's "[") and the end (the seek table, "]") go through the
    writer's one write loop, as the batches do: a write that writes less is completed."""
    import io

    import timelapse.writer as writer_module
    from timelapse.cbor_format import BIN
    from timelapse.json_format import JSON
    from timelapse.reader import iter_events

    real_writev = os.writev

    def short_writev(fd, buffers):   # writes one byte at a time, as a nearly full disk may
        return real_writev(fd, [b"".join(buffers)[:1]])

    class ShortFile(io.FileIO):     # the stream file, should anything write it directly
        def write(self, data):
            return super().write(bytes(data)[:1])

    monkeypatch.setattr(writer_module.os, "writev", short_writev)
    def short_open(path, mode="r", **kwargs):
        return ShortFile(path, "wb") if mode == "wb" else open(path, mode, **kwargs)

    monkeypatch.setattr(writer_module, "open", short_open, raising=False)
    spelling = BIN if fmt == "bin" else JSON
    writer = TraceWriter(tmp_path, "/prog.py", fmt=spelling)
    writer.events.extend(spelling.events.step(0, line) for line in range(1, 30))
    writer.close({})
    assert [e["Step"]["line"] for e in iter_events(tmp_path) if "Step" in e] == list(range(1, 30))


def test_a_rewritten_source_is_kept_as_a_new_version(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("x = 1\n")
    folder = tmp_path / "trace"
    folder.mkdir()
    writer = TraceWriter(folder, str(source))
    assert writer.source_version(str(source)) == str(source)
    source.write_text("x = 2\n")
    second = writer.source_version(str(source))
    assert second == str(tmp_path / "mod@v2.py")
    assert writer.source_version(str(source)) == second
    copies = folder / "files" / str(tmp_path).lstrip("/")
    assert (copies / "mod.py").read_text() == "x = 1\n"
    assert (copies / "mod@v2.py").read_text() == "x = 2\n"


@pytest.mark.parametrize("pad", [0, 2000])     # small events are joined, big ones written as they are
@pytest.mark.parametrize("when", ["before", "after", "halfway"])
@pytest.mark.parametrize("call", [1, 2, 5])
def test_an_interrupted_flush_neither_loses_nor_repeats_events(tmp_path, monkeypatch, when, call, pad):
    import timelapse.writer as writer_module

    monkeypatch.setattr(writer_module, "_IOV_MAX", 4)   # several writev calls per batch
    monkeypatch.setattr(writer_module, "_BUFFER_BYTES", 60)     # a few events per buffer
    real_writev = os.writev
    calls = []

    def writev(fd, buffers):
        calls.append(len(calls) + 1)
        if len(calls) == call:
            if when == "after":
                real_writev(fd, buffers)
            elif when == "halfway":     # a part of the buffers reached the file
                data = b"".join(buffers)
                os.write(fd, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_writev(fd, buffers)

    writer = TraceWriter(tmp_path, "/prog.py")
    monkeypatch.setattr(writer_module.os, "writev", writev)
    lines = iter(range(1, 100))
    for _ in range(3):
        writer.events.extend(b'{"Step":{"path_id":0,"line":%d},"pad":"%b"}' % (next(lines), b"x" * pad)
                             for _ in range(7))
        try:
            writer.flush()
        except KeyboardInterrupt:
            pass
    writer.close({})
    steps = [e["Step"]["line"] for e in written(tmp_path) if "Step" in e]
    assert steps == list(range(1, 22))


def test_struct_types_spell_their_fields_and_are_told_apart_by_them(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py")
    any_type = writer.type_id(32, "object")
    point = writer.type_id(6, "Point", (("x", any_type), ("y", any_type)))
    assert writer.type_id(6, "Point", [("x", any_type), ("y", any_type)]) == point   # a list is the same
    assert writer.type_id(6, "Point", (("x", any_type),)) != point     # another shape: another type
    assert writer.type_id(6, "Point") not in (point, any_type)
    writer.close({})
    types = [e["Type"] for e in written(tmp_path) if "Type" in e]
    assert types[point] == {"kind": 6, "lang_type": "Point", "specific_info": {
        "kind": "Struct", "fields": [{"name": "x", "type_id": any_type}, {"name": "y", "type_id": any_type}]}}
    assert types[-1]["specific_info"] == {"kind": "None"}


def test_the_format_frames_the_file_and_names_it(tmp_path):
    from timelapse.json_format import JSON, JsonEvents, JsonFormat

    class Framed(JsonEvents):      # a format whose framing differs from JSON's, to see who frames
        file_name = "trace.framed"
        begin, batch_separator, end = b"[\n  ", b",\n  ", b"\n]"

    class FramedFormat(JsonFormat):
        events = Framed()

    writer = TraceWriter(tmp_path, "/prog.py", fmt=FramedFormat())
    assert writer.format.values is JSON.values
    writer.events.append(writer.format.events.step(0, 1))
    writer.flush()
    writer.events.append(writer.format.events.step(0, 2))
    writer.close({})
    text = (tmp_path / "trace.framed").read_text()
    assert text.startswith("[\n  ") and text.endswith("\n]") and ",\n  " in text
    assert not (tmp_path / "trace.json").exists()
    assert [e["Step"]["line"] for e in json.loads(text) if "Step" in e] == [1, 2]

"""The trace writer: ids defined by their first use, streaming batches, IO merging, source versions."""

from __future__ import annotations

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
    assert writer.type_id(6, "P", {"kind": "Struct", "fields": []}) == 2
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


def test_open_calls_are_counted_in_the_stream(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py", batch_size=2)
    for _ in range(5000):
        writer.events.append(b'{"Call":{"function_id":0,"args":[]}}')
        writer.events.append(b'{"Value":{"variable_id":0,"value":{"kind":"String","type_id":0,"text":"{\\"Call\\":"}}}')
        writer.flush()
    for _ in range(1200):
        writer.events.append(b'{"Return":{"return_value":{"kind":"None","type_id":0}}}')
    assert writer.count_open_calls() == 1 + 5000 - 1200


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

    monkeypatch.setattr(writer_module.os, "writev", writev)
    writer = TraceWriter(tmp_path, "/prog.py")
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

"""The binary format (cbor_format): every event and value record is the JSON format's, as CBOR, read
back by independent decoders (cbor2, pyzstd's SeekableZstdFile); the file's framing and seek table."""

from __future__ import annotations

import io
import struct

import cbor2
import orjson
import pytest
import pyzstd
from hypothesis import given, settings

from test_encoder import Registry, graph_values, limit_sets, values
from timelapse.cbor_format import BIN, HEADER, cbor_int, cbor_text, seek_table
from timelapse.encoder import ValueEncoder
from timelapse.json_format import JSON
from timelapse.jsonbytes import to_json
from timelapse.reader import iter_events
from timelapse.writer import TraceWriter

E, V = BIN.events, BIN.values
JE, JV = JSON.events, JSON.values


def canonical(item) -> bytes:
    """A decoded item as JSON bytes: equal only with the same types (``True == 1`` and
    ``1.0 == 1`` in Python, not here) and the same key order."""
    return to_json(item)


def same(cbor: bytes, json: bytes) -> None:
    """``cbor`` is one CBOR item (nothing after it) holding what the JSON text ``json`` holds."""
    stream = io.BytesIO(cbor)
    item = cbor2.CBORDecoder(stream).decode()
    assert stream.read() == b"", "bytes after the item"
    assert canonical(item) == canonical(orjson.loads(json))


# -- CBOR items ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
                               -1, -24, -25, -256, -257, -(2**63)])
def test_ints_are_shortest_form_cbor(n):
    assert cbor_int(n) == cbor2.dumps(n)


@pytest.mark.parametrize("text", ["", "a", "x" * 23, "x" * 24, "é" * 200, "\u2603" * 30000, "\x00\n\""])
def test_texts_are_cbor_text_strings(text):
    assert cbor_text(text) == cbor2.dumps(text)


# -- events -------------------------------------------------------------------------------------------

EVENTS = [
    ("path", ("/a/b.py",)),
    ("path", ("/é/☃.py",)),
    ("function", (0, 1, "<toplevel>")),
    ("function", (3, 100000, "f")),
    ("type", (7, "int", None)),
    ("type", (6, "Point", (("x", 1), ("y", 2)))),
    ("type", (6, "Empty", ())),
    ("variable_name", ("self",)),
    ("step", (0, 1)),
    ("step", (300, 70000)),
    ("thread_start", (1,)),
    ("thread_switch", (2**40,)),
    ("thread_exit", (3,)),
    ("event", (0, '{"stream": "stdout"}', "hello\n")),
    ("event", (11, "", "")),
]


@pytest.mark.parametrize("name,args", EVENTS)
def test_every_event_is_the_json_event_as_cbor(name, args):
    same(getattr(E, name)(*args), getattr(JE, name)(*args))


def test_value_call_and_return_pieces_join_into_the_json_events():
    record, json_record = V.int(1, 5), JV.int(1, 5)
    same(E.value_head(3) + record + E.value_tail, JE.value_head(3) + json_record + JE.value_tail)
    args = [E.arg_head(i) + V.string(2, f"a{i}") + E.arg_tail for i in range(3)]
    json_args = [JE.arg_head(i) + JV.string(2, f"a{i}") + JE.arg_tail for i in range(3)]
    same(E.call(4, args), JE.call(4, json_args))
    same(E.call(4, []), JE.call(4, []))
    same(E.return_event(record), JE.return_event(json_record))
    assert E.event_metadata("stdout", 1, (0, 2), {"x": "y"}) == JE.event_metadata("stdout", 1, (0, 2), {"x": "y"})


def test_events_concatenate_with_nothing_between_them():
    events = [E.step(0, 1), E.value_head(0) + V.none(0), E.thread_exit(1)]
    decoder = cbor2.CBORDecoder(io.BytesIO(E.begin + E.separator.join(events) + E.end))
    assert [canonical(decoder.decode()) for _ in events] == [canonical(event) for event in [
        {"Step": {"path_id": 0, "line": 1}},
        {"Value": {"variable_id": 0, "value": {"kind": "None", "type_id": 0}}},
        {"ThreadExit": 1}]]


# -- values -------------------------------------------------------------------------------------------

def test_every_kind_of_record_is_the_json_record_as_cbor():
    for name, args in [("none", (0,)), ("int", (1, -7)), ("float", (2, "1.5")), ("float", (2, "nan")),
                       ("bool", (3, True)), ("bool", (3, False)), ("string", (4, "t\u00e9xt")),
                       ("raw", (5, "<raw>")), ("error", (6, "boom")), ("big_int", (7, "AQA=", True)),
                       ("variant", (8, "Some", JV.int(1, 2)))]:
        cbor_args = args if name != "variant" else (8, "Some", V.int(1, 2))
        same(getattr(V, name)(*cbor_args), getattr(JV, name)(*args))
    parts = [V.int(1, i) for i in range(3)]
    json_parts = [JV.int(1, i) for i in range(3)]
    for head, tail in [("sequence_head", "sequence_tail"), ("tuple_head", "tuple_tail"),
                       ("struct_head", "struct_tail")]:
        for n in (0, 3):
            same(getattr(V, head)(9) + V.separator.join(parts[:n]) + getattr(V, tail),
                 getattr(JV, head)(9) + JV.separator.join(json_parts[:n]) + getattr(JV, tail))
    same(V.int_head(1) + V.int_text(2**40) + V.int_tail, JV.int_head(1) + JV.int_text(2**40) + JV.int_tail)
    same(V.float_head(1) + V.float_text("-0.0") + V.float_tail,
         JV.float_head(1) + JV.float_text("-0.0") + JV.float_tail)


def _both(value, limits=None):
    """The record of ``value`` spelled by each format, decoded and made canonical; each format
    with its own types."""
    records = []
    for fmt in (JSON, BIN):
        registry = Registry()
        enc = ValueEncoder(registry, spelling=fmt.values, **(limits or {}))
        # Three times: the first walk keeps nothing, the second keeps a signature, the third is
        # served by the reuse caches (for a container).
        records.append([canonical(fmt.values.decode(enc.encode_json(value))) for _ in range(3)])
        records.append(canonical(registry.types))
    return records


@settings(max_examples=200, deadline=None)
@given(values)
def test_property_values_spell_the_same_records_in_both_formats(value):
    json_records, json_types, cbor_records, cbor_types = _both(value)
    assert cbor_records == json_records
    assert cbor_types == json_types


@settings(max_examples=150, deadline=None)
@given(graph_values, limit_sets)
def test_property_object_graphs_and_limits_spell_the_same_in_both_formats(value, limits):
    json_records, json_types, cbor_records, cbor_types = _both(value, limits)
    assert cbor_records == json_records
    assert cbor_types == json_types


class _Thing:
    """Members that tie: sort_key gives every object the same key."""

    def __init__(self, n):
        self.n = n


class _CountedValues(type(V)):
    """trace.bin's spelling, counting the records it is asked to order."""

    def __init__(self):
        self.ordered = []

    def order_key(self, data):
        self.ordered.append(data)
        return super().order_key(data)


def test_only_members_that_tie_are_ordered_by_their_records():
    spelling = _CountedValues()
    enc = ValueEncoder(Registry(), spelling=spelling, max_items=50, max_nodes=500)
    distinct = frozenset((i, f"t{i}") for i in range(30))     # tuples of scalars: their keys differ
    enc.encode_json(distinct)
    assert spelling.ordered == []
    things = [_Thing(i) for i in range(3)]
    tied = frozenset([(1, things[0]), (1, things[1]), (2, things[2]), (0, "x"), (3, "y")])
    records = []
    for values_spelling in (spelling, JSON.values):
        enc = ValueEncoder(Registry(), spelling=values_spelling, max_items=50, max_nodes=500)
        records.append(values_spelling.decode(enc.encode_json(tied)))
    record, json_record = records
    assert len(spelling.ordered) == 2       # (1, <a _Thing>) twice; the rest sort by their keys
    assert to_json(record) == to_json(json_record)
    assert [e["elements"][0]["i"] for e in record["elements"]] == [0, 1, 1, 2, 3]


def test_ordering_ties_imports_nothing_while_recording(monkeypatch):
    """order_key runs inside monitoring callbacks: an import there would run import machinery the
    program can see (here: a replaced __import__, and a cbor2 that would fail to import)."""
    import builtins
    import sys

    things = [_Thing(i) for i in range(4)]
    enc = ValueEncoder(Registry(), spelling=V)
    imported = []
    real_import = builtins.__import__

    def spying_import(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spying_import)
    monkeypatch.setitem(sys.modules, "cbor2", None)
    data = enc.encode_json(frozenset(things))
    monkeypatch.undo()
    assert imported == []
    assert [f["field_values"][0]["i"] for f in V.decode(data)["elements"]] == [0, 1, 2, 3]


# -- the file -----------------------------------------------------------------------------------------

def read_bin(path):
    """The events of a trace.bin read by independent decoders, and its frames' sizes (from pyzstd's
    view of the seek table)."""
    data = path.read_bytes()
    assert data[:8] == HEADER
    stream = pyzstd.SeekableZstdFile(io.BytesIO(data[8:]))
    decoder = cbor2.CBORDecoder(stream)
    events = []
    while stream.peek(1):
        events.append(decoder.decode())
    return events


def frames_of(data: bytes) -> list[tuple[int, int]]:
    """The (compressed, decompressed) entries of a seekable stream's seek table, read by hand."""
    count, descriptor, magic = struct.unpack("<IBI", data[-9:])
    assert (descriptor, magic) == (0, 0x8F92EAB1)
    table = data[-9 - 8 * count:-9]
    skippable, size = struct.unpack("<II", data[-17 - 8 * count:-9 - 8 * count])
    assert (skippable, size) == (0x184D2A5E, 8 * count + 9)
    return [struct.unpack("<II", table[i:i + 8]) for i in range(0, len(table), 8)]


def test_the_seek_table_names_each_frame_and_every_decoder_reads_the_stream(tmp_path):
    frames = [pyzstd.compress(b"a" * n) for n in (10, 100000, 0)]
    data = b"".join(frames) + seek_table([(len(f), n) for f, n in zip(frames, (10, 100000, 0))])
    assert frames_of(data) == [(len(f), n) for f, n in zip(frames, (10, 100000, 0))]
    assert pyzstd.SeekableZstdFile(io.BytesIO(data)).read() == b"a" * 100010
    assert pyzstd.decompress(data) == b"a" * 100010      # a plain zstd decoder skips the table


def test_the_writer_streams_frames_as_it_flushes_and_ends_with_the_seek_table(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    path = tmp_path / "trace.bin"
    sizes = []
    for batch in range(4):
        writer.events.extend(E.step(0, line) for line in range(batch * 100, batch * 100 + 100))
        writer.flush()
        sizes.append(path.stat().st_size)
    assert sizes == sorted(set(sizes)), "each flush writes a frame at once"
    writer.close({})
    events = read_bin(path)
    steps = [e["Step"]["line"] for e in events if "Step" in e]
    assert steps == list(range(400))
    assert events[:4] == [{"Path": "/prog.py"}, {"Function": {"path_id": 0, "line": 1, "name": "<toplevel>"}},
                          {"Call": {"function_id": 0, "args": []}},
                          {"Type": {"kind": 30, "lang_type": "None", "specific_info": {"kind": "None"}}}]
    assert len(whole_frames(path)) == 4


def whole_frames(path) -> list[tuple[int, int]]:
    """The seek table's entries of the trace.bin at ``path``, each checked against the frame at
    its place (a whole zstd frame of that size, decompressing to that many bytes), and the
    timelapse reader's events the independent decoders' ones."""
    data = path.read_bytes()
    frames = frames_of(data)
    assert sum(c for c, _ in frames) == len(data) - 8 - (17 + 8 * len(frames))
    offset = 8
    for compressed, size in frames:   # each entry is the frame at its place: a whole zstd frame
        frame = data[offset:offset + compressed]
        assert pyzstd.get_frame_size(frame) == compressed
        assert len(pyzstd.decompress(frame)) == size
        offset += compressed
    assert list(iter_events(path.parent)) == read_bin(path)
    return frames


def test_a_batch_past_the_frame_bound_is_several_frames_each_named_once_in_the_table(tmp_path, monkeypatch):
    """Seek-table sizes are u32 and the seekable format caps a frame at 1 GiB: a batch of huge
    events (tens of GiB with a raised --max-string) must not become one frame (close would fail on
    its size and the recording be lost). FRAME_BYTES made small stands for the real bound."""
    import timelapse.cbor_format as cbor_module

    monkeypatch.setattr(cbor_module, "FRAME_BYTES", 100)
    monkeypatch.setattr(cbor_module, "_FEED_BYTES", 30)     # feeds that straddle frames, too
    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    big = E.event(0, "{}", "x" * 350)    # one event longer than a frame: it goes on across frames
    writer.events.extend([*(E.step(0, line) for line in range(1, 20)), big, E.step(0, 20)])
    size = sum(map(len, writer.events))
    writer.flush()
    writer.events.append(E.step(0, 21))
    writer.close({})
    frames = whole_frames(tmp_path / "trace.bin")
    batch = [s for _, s in frames[:-1]]
    assert sum(batch) == size and len(batch) == -(-size // 100)     # cut at the bound: no empty frame
    assert batch[:-1] == [100] * (len(batch) - 1)
    assert frames[-1][1] == len(E.step(0, 21))     # the next batch: a frame of its own
    events = read_bin(tmp_path / "trace.bin")
    assert [e["Step"]["line"] for e in events if "Step" in e] == list(range(1, 22))
    assert {"Event": {"kind": 0, "metadata": "{}", "content": "x" * 350}} in events


def test_a_writer_with_nothing_more_to_write_still_makes_a_valid_file(tmp_path):
    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    writer.close({})
    assert [next(iter(e)) for e in read_bin(tmp_path / "trace.bin")] == ["Path", "Function", "Call", "Type"]
    assert len(frames_of((tmp_path / "trace.bin").read_bytes())) == 1


@pytest.mark.parametrize("frame_bytes", [None, 60], ids=["a frame a batch", "frames a batch"])
@pytest.mark.parametrize("when", ["before", "after", "halfway"])
@pytest.mark.parametrize("call", [1, 2, 3])
def test_an_interrupted_flush_of_frames_neither_loses_nor_repeats_events(tmp_path, monkeypatch, when, call,
                                                                         frame_bytes):
    import timelapse.cbor_format as cbor_module
    import timelapse.writer as writer_module

    if frame_bytes is not None:
        monkeypatch.setattr(cbor_module, "FRAME_BYTES", frame_bytes)

    real_writev = writer_module.os.writev
    calls = []

    def writev(fd, buffers):
        calls.append(len(calls) + 1)
        if len(calls) == call:
            if when == "after":
                real_writev(fd, buffers)
            elif when == "halfway":     # a part of the frame reached the file
                data = b"".join(buffers)
                writer_module.os.write(fd, data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_writev(fd, buffers)

    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    monkeypatch.setattr(writer_module.os, "writev", writev)
    lines = iter(range(1, 100))
    for _ in range(3):
        writer.events.extend(E.step(0, next(lines)) for _ in range(7))
        try:
            writer.flush()
        except KeyboardInterrupt:
            pass
    writer.close({})
    steps = [e["Step"]["line"] for e in read_bin(tmp_path / "trace.bin") if "Step" in e]
    assert steps == list(range(1, 22))
    frames = whole_frames(tmp_path / "trace.bin")
    if frame_bytes is None:
        assert len(frames) == 3
    else:
        assert len(frames) > 6 and max(size for _, size in frames) == frame_bytes


def test_the_frame_is_kept_in_the_table_once_even_if_interrupted_after_writing(tmp_path, monkeypatch):
    """A Ctrl-C after the frame is in the file but before _settle forgets it: the next flush writes
    nothing again and names the frame once."""
    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    writer.events.append(E.step(0, 1))
    writer.flush()
    writer._unwritten = ([], writer.bytes_written, (0, writer._frames[:1]))   # as if interrupted there
    writer.events.append(E.step(0, 2))
    writer.close({})
    assert len(frames_of((tmp_path / "trace.bin").read_bytes())) == 2
    assert [e["Step"]["line"] for e in read_bin(tmp_path / "trace.bin") if "Step" in e] == [1, 2]


def test_an_interruption_while_a_frame_is_compressed_leaves_the_batch_whole(tmp_path, monkeypatch):
    import timelapse.cbor_format as cbor_module

    monkeypatch.setattr(cbor_module, "_FEED_BYTES", 10)     # several compress calls per frame
    writer = TraceWriter(tmp_path, "/prog.py", fmt=BIN)
    real = writer._framing._compressor
    calls = []

    class Interrupted:
        def __init__(self, level):
            self.inner = real(level)

        def compress(self, data):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return self.inner.compress(data)

        def flush(self, mode):
            return self.inner.flush(mode)

    writer._framing._compressor = Interrupted
    writer.events.extend(E.step(0, line) for line in range(1, 8))
    with pytest.raises(KeyboardInterrupt):
        writer.flush()
    assert len(writer.events) == 11 and writer._frames == []   # nothing written, nothing lost
    writer.close({})
    assert [e["Step"]["line"] for e in read_bin(tmp_path / "trace.bin") if "Step" in e] == list(range(1, 8))
    assert len(frames_of((tmp_path / "trace.bin").read_bytes())) == 1


#: The zstd bindings trace.bin can be written with (cbor_format.zstd_binding): pyzstd, and the two it
#: wraps (0.20 and later), which are used without it when they are there.
ZSTD_BINDINGS = ("pyzstd", "backports.zstd", "compression.zstd")


def test_frames_are_the_same_bytes_with_pyzstd_or_the_binding_under_it(tmp_path, monkeypatch):
    """pyzstd's own import is most of the binding's cost at start-up: the binding under it
    (backports.zstd, compression.zstd on 3.14) is used directly when it is there, and writes the
    same frames, byte for byte, as pyzstd does (the fallback, when it is not)."""
    import sys

    from timelapse.cbor_format import SeekableFrames, zstd_binding

    binding = zstd_binding()
    if binding is pyzstd:
        pytest.skip("no zstd binding under pyzstd here (pyzstd < 0.20): pyzstd is the one used")
    assert binding.__name__ in ("backports.zstd", "compression.zstd")
    if getattr(pyzstd, "zstd_version", None) != ".".join(map(str, binding.zstd_version_info)):
        pytest.skip("pyzstd bundles another libzstd than the binding: other bytes, both valid")
    direct = SeekableFrames()
    for name in ZSTD_BINDINGS[1:]:
        monkeypatch.setitem(sys.modules, name, None)    # as if pyzstd were all there is
    assert zstd_binding() is pyzstd
    fallback = SeekableFrames()
    monkeypatch.undo()
    batches = [[b""], [E.step(0, n) for n in range(3000)], [bytes(range(256)) * 400, b"x" * 100000],
               [E.path("/p.py"), E.function(0, 1, "f" * 5000)]]
    for events in batches:
        assert direct.frame(b"".join(events)) == fallback.frame(b"".join(events))
        assert direct.frames_of(events) == fallback.frames_of(events)
    written = []
    for framing in (direct, fallback):      # a whole file, through the writer
        folder = tmp_path / str(len(written))
        folder.mkdir()
        monkeypatch.setattr(BIN, "frames", lambda framing=framing: framing)
        writer = TraceWriter(folder, "/prog.py", fmt=BIN)
        for batch in batches:
            writer.events.extend(batch)
            writer.flush()
        writer.close({})
        written.append((folder / "trace.bin").read_bytes())
    assert written[0] == written[1]


@pytest.mark.parametrize("missing", ["pyzstd", "cbor2"])
def test_recording_trace_bin_without_its_packages_says_how_to_go_on(tmp_path, monkeypatch, missing):
    import sys

    import timelapse
    import timelapse.cbor_format as cbor_module

    for name in ZSTD_BINDINGS if missing == "pyzstd" else (missing,):
        monkeypatch.setitem(sys.modules, name, None)    # as if it were not installed
    if missing == "cbor2":  # imported with cbor_format: as if that import had failed
        monkeypatch.setattr(cbor_module, "cbor2", None)
    with pytest.raises(timelapse.RecorderError) as raised:
        timelapse.start(tmp_path / "t", format="bin", config=False)
    assert str(raised.value) == (f"trace.bin (--format bin, the default) needs the {missing} package: "
                                 f"pip install {missing}, or record trace.json with --format json")
    assert not (tmp_path / "t").exists() and not timelapse.is_recording()
    with timelapse.record(tmp_path / "j", format="json", config=False):    # the way out works
        pass
    assert (tmp_path / "j" / "trace.json").is_file()


def test_timelapse_record_without_pyzstd_is_one_line_and_exit_status_2(tmp_path):
    """The command line, as a user meets it: a process that can import neither pyzstd nor the zstd
    binding under it."""
    import subprocess
    import sys

    script = tmp_path / "prog.py"
    script.write_text("print('hi')\n")
    code = (f"import sys; sys.modules.update(dict.fromkeys({ZSTD_BINDINGS!r})); from timelapse.cli import main; "
            f"sys.exit(main(['record', '--no-config', '-o', {str(tmp_path / 't')!r}, {str(script)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("timelapse: error: trace.bin (--format bin, the default) needs the pyzstd "
                             "package: pip install pyzstd, or record trace.json with --format json\n")
    assert not (tmp_path / "t").exists()

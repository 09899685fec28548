"""Tests for timelapse.convert: trace.json <-> trace.bin, streaming, in place or into a new folder,
never leaving a half-written or mixed folder."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS, checked_trace, opening_events, run_timelapse, write_trace_folder

import timelapse.convert as convert_module
from timelapse.checker import check_folder
from timelapse.convert import ConvertError, convert, run_convert
from timelapse.reader import BIN_MAGIC, Trace, iter_events

cbor2 = pytest.importorskip("cbor2")
pyzstd = pytest.importorskip("pyzstd")

METADATA = {"workdir": "/nonexistent/prog", "program": "/nonexistent/prog/main.py", "args": []}
STREAMS = {"trace.json", "trace.bin"}


def timelapse_convert(*args: str) -> subprocess.CompletedProcess:
    return run_timelapse(["convert", *map(str, args)])


def streams(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name in STREAMS}


def entries(folder: Path) -> list[str]:
    """Everything in the folder, hidden leftovers included."""
    return sorted(p.name for p in folder.iterdir())


def one_error_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("timelapse: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr, result.stderr


def independent_decode(path: Path) -> list:
    """The events of a trace.bin read by pyzstd's SeekableZstdFile (which insists on the seek
    table) and cbor2, not by timelapse.reader."""
    data = path.read_bytes()
    assert data[:8] == BIN_MAGIC
    with pyzstd.SeekableZstdFile(io.BytesIO(data[8:])) as stream:
        payload = stream.read()
    stream = io.BytesIO(payload)
    decoder = cbor2.CBORDecoder(stream)
    events = []
    while stream.tell() < len(payload):
        events.append(decoder.decode())
    return events


def frame_count(path: Path) -> int:
    data = path.read_bytes()
    return int.from_bytes(data[-9:-5], "little")


@pytest.fixture
def recordings(tmp_path):
    """The same program recorded by the JSON recorder and by the binary one (not the ``record``
    fixture: these tests choose the formats themselves, so they run once)."""

    def make(program: str = "values_tricky.py") -> tuple[Path, Path]:
        folders = []
        for name in ("json", "bin"):
            out = tmp_path / name
            result = run_timelapse(["record", "-q", "--format", name, "-o", str(out), str(PROGRAMS / program)])
            assert result.returncode == 0, result.stderr
            checked_trace(out)
            folders.append(out)
        return folders[0], folders[1]

    return make


# -- both ways, on real recordings ---------------------------------------------------------------


def test_bin_to_json_is_what_the_json_recorder_writes(recordings, tmp_path):
    json_trace, bin_trace = recordings()
    result = timelapse_convert(bin_trace, "--to", "json", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'out' / 'trace.json'}: {len(Trace.load(bin_trace).events)}" \
        " events converted from trace.bin to trace.json\n"
    assert (tmp_path / "out" / "trace.json").read_bytes() == (json_trace / "trace.json").read_bytes()
    for name in ("trace_metadata.json", "trace_paths.json"):
        assert (tmp_path / "out" / name).read_bytes() == (bin_trace / name).read_bytes()
    sources = sorted(str(p.relative_to(bin_trace)) for p in (bin_trace / "files").rglob("*"))
    assert sources and sources == sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out" / "files").rglob("*"))
    checked_trace(tmp_path / "out")


def test_json_to_bin_to_json_gives_the_same_bytes(recordings, tmp_path):
    json_trace, _ = recordings("shapes.py")
    assert timelapse_convert(json_trace, "--to", "bin", "-o", tmp_path / "b").returncode == 0
    assert timelapse_convert(tmp_path / "b", "--to", "json", "-o", tmp_path / "j").returncode == 0
    assert (tmp_path / "j" / "trace.json").read_bytes() == (json_trace / "trace.json").read_bytes()
    events = Trace.load(json_trace).events
    assert Trace.load(tmp_path / "b").events == events
    assert independent_decode(tmp_path / "b" / "trace.bin") == events
    checked_trace(tmp_path / "b")


def test_a_recording_of_several_batches_differs_only_in_where_batches_break(recordings, tmp_path):
    """The recorder's batches end where its own rules say; a conversion's every ~4 MB."""
    json_trace, bin_trace = recordings("recursion.py")
    assert frame_count(bin_trace / "trace.bin") > 1
    assert timelapse_convert(bin_trace, "--to", "json", "-o", tmp_path / "j").returncode == 0
    converted = (tmp_path / "j" / "trace.json").read_bytes()
    recorded = (json_trace / "trace.json").read_bytes()
    assert converted.replace(b",\n", b",") == recorded.replace(b",\n", b",")
    assert Trace.load(tmp_path / "j").events == Trace.load(bin_trace).events


def test_bin_from_the_recorder_to_bin_and_back_keeps_the_events(recordings, tmp_path):
    _, bin_trace = recordings()
    events = Trace.load(bin_trace).events
    convert(bin_trace, "json", tmp_path / "j")
    convert(tmp_path / "j", "bin", tmp_path / "b")
    assert independent_decode(tmp_path / "b" / "trace.bin") == events
    assert check_folder(tmp_path / "b") == []


def test_big_streams_become_several_frames(recordings, tmp_path, monkeypatch):
    json_trace, _ = recordings("recursion.py")
    monkeypatch.setattr(convert_module, "_BATCH_BYTES", 100_000)
    monkeypatch.setattr(convert_module, "_JOIN_BYTES", 10_000)
    target, count = convert(json_trace, "bin", tmp_path / "b")
    assert target == tmp_path / "b" / "trace.bin"
    assert frame_count(target) > 5
    events = Trace.load(json_trace).events
    assert count == len(events)
    assert independent_decode(target) == events == list(iter_events(tmp_path / "b"))
    convert(tmp_path / "b", "json", tmp_path / "j")
    text = (tmp_path / "j" / "trace.json").read_bytes()
    assert text.count(b",\n") > 5 and json.loads(text) == events


def test_frames_stay_within_the_frame_bound(recordings, tmp_path, monkeypatch):
    """A batch past cbor_format.FRAME_BYTES (a huge event) is several frames, as the recorder's."""
    import timelapse.cbor_format as cbor_module

    json_trace, _ = recordings("recursion.py")
    monkeypatch.setattr(cbor_module, "FRAME_BYTES", 1000)
    target, _ = convert(json_trace, "bin", tmp_path / "b")
    data = target.read_bytes()
    count = frame_count(target)
    sizes = [int.from_bytes(data[i + 4:i + 8], "little") for i in range(-9 - 8 * count, -9, 8)]
    assert count > 5 and max(sizes) == 1000
    assert independent_decode(target) == Trace.load(json_trace).events == list(iter_events(tmp_path / "b"))


def test_a_bigint_magnitude_as_cbor_bytes_becomes_base64(tmp_path):
    """Another writer may give a BigInt's magnitude as a CBOR byte string; JSON has none."""
    from timelapse.cbor_format import SeekableFrames, seek_table

    magnitude = (2**70).to_bytes(9, "big")
    events = [*opening_events(), {"Function": {"path_id": 0, "line": 1, "name": "<__main__>"}},
              {"Step": {"path_id": 0, "line": 1}}, {"Call": {"function_id": 1, "args": []}},
              {"Step": {"path_id": 0, "line": 1}}, {"VariableName": "big"},
              {"Value": {"variable_id": 0, "value": {"kind": "BigInt", "type_id": 1, "b": magnitude,
                                                     "negative": True}}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    folder = write_trace_folder(tmp_path / "t", events, metadata=METADATA, stream=False)
    data = b"".join(cbor2.dumps(e) for e in events)
    frame = SeekableFrames().frame(data)
    (folder / "trace.bin").write_bytes(BIN_MAGIC + frame + seek_table([(len(frame), len(data))]))
    assert check_folder(folder) == []
    convert(folder, "json")
    value = json.loads((folder / "trace.json").read_text())[10]["Value"]["value"]
    assert value["b"] == base64.b64encode(magnitude).decode() and base64.b64decode(value["b"]) == magnitude
    assert check_folder(folder) == []


# -- in place ---------------------------------------------------------------------------------------


def test_in_place_leaves_exactly_one_stream_file(recordings):
    json_trace, _ = recordings()
    events = Trace.load(json_trace).events
    before = entries(json_trace)
    original = (json_trace / "trace.json").read_bytes()
    mode = (json_trace / "trace.json").stat().st_mode
    result = timelapse_convert(json_trace, "--to", "bin")
    assert result.returncode == 0 and result.stderr == "", result
    assert result.stdout == f"{json_trace / 'trace.bin'}: {len(events)} events converted from trace.json" \
        " to trace.bin\n"
    assert streams(json_trace) == {"trace.bin"}
    assert entries(json_trace) == sorted({*before} - {"trace.json"} | {"trace.bin"})  # no leftovers
    assert (json_trace / "trace.bin").stat().st_mode == mode
    assert independent_decode(json_trace / "trace.bin") == events
    assert timelapse_convert(json_trace, "--to", "json").returncode == 0
    assert streams(json_trace) == {"trace.json"} and entries(json_trace) == before
    assert (json_trace / "trace.json").read_bytes() == original


def test_a_folder_with_both_streams_is_refused_and_left_as_it_was(recordings, tmp_path):
    """Neither recording nor converting leaves both: someone put the other there, and which one
    the side files belong to is unknown. Converting would overwrite one (--to bin) or say there is
    nothing to do (--to json) while the folder stays ambiguous."""
    json_trace, bin_trace = recordings()
    folder = tmp_path / "both"
    folder.mkdir()
    for name in os.listdir(json_trace):
        if (json_trace / name).is_file():
            (folder / name).write_bytes((json_trace / name).read_bytes())
    (folder / "trace.bin").write_bytes((bin_trace / "trace.bin").read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for to in ("bin", "json"):
        one_error_line(timelapse_convert(folder, "--to", to), "holds both trace.json and trace.bin")
        one_error_line(timelapse_convert(folder, "--to", to, "-o", tmp_path / "new"), "remove the one")
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
        assert not (tmp_path / "new").exists()


def test_same_format_is_an_error_and_changes_nothing(recordings, tmp_path):
    json_trace, bin_trace = recordings()
    for folder, to in ((json_trace, "json"), (bin_trace, "bin")):
        before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        one_error_line(timelapse_convert(folder, "--to", to), f"is already in the {to} format")
        one_error_line(timelapse_convert(folder, "--to", to, "-o", tmp_path / "new"), "nothing to convert")
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
        assert not (tmp_path / "new").exists()


# -- into a new folder ------------------------------------------------------------------------------


def test_out_may_be_new_nested_or_an_empty_folder(recordings, tmp_path):
    json_trace, _ = recordings()
    nested = tmp_path / "a" / "b" / "c"
    assert timelapse_convert(json_trace, "--to", "bin", "-o", nested).returncode == 0
    assert sorted(entries(nested)) == ["files", "trace.bin", "trace_metadata.json", "trace_paths.json"]
    (tmp_path / "empty").mkdir()
    assert timelapse_convert(json_trace, "--to", "bin", "-o", tmp_path / "empty").returncode == 0
    assert streams(tmp_path / "empty") == {"trace.bin"}
    assert streams(json_trace) == {"trace.json"}  # the source is left as it was


def test_out_that_is_taken_is_refused(recordings, tmp_path):
    json_trace, bin_trace = recordings()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    for out in ("full", "file", "link"):
        one_error_line(timelapse_convert(json_trace, "--to", "bin", "-o", tmp_path / out),
                       "already exists and is not an empty folder")
    one_error_line(timelapse_convert(json_trace, "--to", "bin", "-o", bin_trace), "already exists")
    one_error_line(timelapse_convert(json_trace, "--to", "bin", "-o", json_trace / "inner"),
                   "is inside the trace folder")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine" and entries(tmp_path / "full") == ["keep.txt"]
    assert (tmp_path / "file").read_text() == "mine"
    assert not (json_trace / "inner").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_out_of_a_new_folder_has_the_sources_permissions(recordings, tmp_path):
    json_trace, _ = recordings()
    json_trace.chmod(0o750)
    convert(json_trace, "bin", tmp_path / "out")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750


# -- failures leave nothing behind ------------------------------------------------------------------


def damaged_json(tmp_path: Path) -> Path:
    folder = write_trace_folder(tmp_path / "t", opening_events(), metadata=METADATA)
    (folder / "trace.json").write_bytes((folder / "trace.json").read_bytes()[:-20])
    return folder


def test_a_damaged_source_is_one_line_and_no_target(tmp_path):
    folder = damaged_json(tmp_path)
    before = entries(folder)
    one_error_line(timelapse_convert(folder, "--to", "bin", "-o", tmp_path / "out"), "trace.json is not valid JSON")
    assert not (tmp_path / "out").exists()
    one_error_line(timelapse_convert(folder, "--to", "bin"), "(truncated?)")
    assert entries(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_a_truncated_trace_bin_is_one_line_and_no_target(recordings, tmp_path):
    _, bin_trace = recordings()
    data = (bin_trace / "trace.bin").read_bytes()
    (bin_trace / "trace.bin").write_bytes(data[: len(data) // 2])
    before = entries(bin_trace)
    one_error_line(timelapse_convert(bin_trace, "--to", "json"),
                   "trace.bin is truncated: frame 0 (at byte 8) is cut short; the seek table is missing")
    assert entries(bin_trace) == before
    one_error_line(timelapse_convert(bin_trace, "--to", "json", "-o", tmp_path / "out"), "is truncated")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda f: (f / "trace.json").unlink(), "has no trace.json or trace.bin"),
        (lambda f: (f / "trace_paths.json").unlink(), "missing trace_paths.json"),
        (lambda f: (f / "trace_metadata.json").write_text("["), "trace_metadata.json is not valid JSON"),
    ],
)
def test_not_a_trace_folder(tmp_path, damage, fragment):
    folder = write_trace_folder(tmp_path / "t", opening_events(), metadata=METADATA)
    damage(folder)
    before = entries(folder)
    one_error_line(timelapse_convert(folder, "--to", "bin"), fragment)
    one_error_line(timelapse_convert(folder, "--to", "bin", "-o", tmp_path / "out"), fragment)
    assert entries(folder) == before and not (tmp_path / "out").exists()


def test_missing_folder_and_bad_arguments(tmp_path):
    one_error_line(timelapse_convert(tmp_path / "nope", "--to", "bin"), "no such folder")
    one_error_line(timelapse_convert(tmp_path, "--to", "xml"), "invalid choice: 'xml'")
    one_error_line(timelapse_convert(tmp_path), "required: --to")
    one_error_line(timelapse_convert("--to", "bin"), "required: TRACE_DIR")
    one_error_line(timelapse_convert(tmp_path, tmp_path, "--to", "bin"), "unrecognized arguments")


@pytest.mark.parametrize("missing", ["pyzstd", "cbor2"])
def test_a_missing_package_is_one_line_that_names_it(tmp_path, monkeypatch, capsys, missing):
    from timelapse import cli

    folder = write_trace_folder(tmp_path / "t", opening_events(), metadata=METADATA)
    convert(folder, "bin", tmp_path / "b")
    # As if it were not installed (pyzstd: nor the zstd binding under it, which writes without it).
    for name in ("pyzstd", "backports.zstd", "compression.zstd") if missing == "pyzstd" else (missing,):
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["convert", str(folder), "--to", "bin"]) == 2
    assert capsys.readouterr() == ("", f"timelapse: error: converting to trace.bin needs the {missing}"
                                       f" package: pip install {missing}\n")
    assert entries(folder) == ["trace.json", "trace_metadata.json", "trace_paths.json"]
    assert cli.main(["convert", str(tmp_path / "b"), "--to", "json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"({missing} is not installed: pip install {missing})" in err
    assert streams(tmp_path / "b") == {"trace.bin"}


def test_an_event_cbor_cannot_hold_is_named(tmp_path):
    events = [*opening_events(), {"VariableName": "\ud800"}]  # a lone surrogate: JSON can say it
    folder = write_trace_folder(tmp_path / "t", events, metadata=METADATA)
    before = entries(folder)
    out, err = io.StringIO(), io.StringIO()
    assert run_convert(folder, "bin", stdout=out, stderr=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().startswith("timelapse: error: event 5 cannot be written as CBOR: ")
    assert err.getvalue().count("\n") == 1
    assert entries(folder) == before
    with pytest.raises(ConvertError, match="event 5"):
        convert(folder, "bin", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_a_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    folder = write_trace_folder(tmp_path / "t", opening_events(), metadata=METADATA)
    before = entries(folder)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConvertError, match="No space left on device"):
        convert(folder, "bin")
    with pytest.raises(ConvertError, match="No space left on device"):
        convert(folder, "bin", tmp_path / "out")
    assert entries(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_an_interruption_leaves_nothing(tmp_path, monkeypatch):
    folder = write_trace_folder(tmp_path / "t", opening_events(), metadata=METADATA)
    before = entries(folder)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "_copy_side_files", interrupted)
    err = io.StringIO()
    assert run_convert(folder, "bin", tmp_path / "out", stderr=err) == 130
    assert err.getvalue() == "timelapse: error: interrupted\n"
    monkeypatch.setattr(convert_module, "_commit", interrupted)
    assert run_convert(folder, "bin", stderr=err) == 130
    assert entries(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_sigterm_leaves_the_folder_as_it_was(tmp_path):
    folder = big_trace(tmp_path / "t", 60_000)
    before = entries(folder)
    process = subprocess.Popen([str(Path(sys.executable).parent / "timelapse"), "convert", str(folder),
                                "--to", "bin"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not [p for p in folder.iterdir() if p.name.endswith(".converting")]:
        assert process.poll() is None and time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert (process.returncode, stdout, stderr) == (128 + signal.SIGTERM, "", "timelapse: error: interrupted\n")
    assert entries(folder) == before


# -- bounded memory ---------------------------------------------------------------------------------


def big_trace(folder: Path, steps: int) -> Path:
    """A valid trace.json of ``steps`` Steps, each with a Value of a 900-character string: about
    1 KB an event, written without holding it whole."""
    events = [*opening_events(), {"Function": {"path_id": 0, "line": 1, "name": "<__main__>"}},
              {"Step": {"path_id": 0, "line": 1}}, {"Call": {"function_id": 1, "args": []}},
              {"VariableName": "x"}, {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}}]
    write_trace_folder(folder, events, metadata=METADATA)
    pad = bytes(97 + i % 26 for i in range(900))
    with open(folder / "trace.json", "wb") as f:
        f.write(b"[\n" + b",".join(json.dumps(e, separators=(",", ":")).encode() for e in events))
        for i in range(steps):
            f.write(b',{"Step":{"path_id":0,"line":%d}},{"Value":{"variable_id":0,"value":'
                    b'{"kind":"String","type_id":2,"text":"%d %b"}}}' % (i % 7 + 1, i, pad))
        f.write(b',{"Return":{"return_value":{"kind":"None","type_id":0}}}' * 2 + b"\n]\n")
    return folder


PEAK_RSS = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def peak_rss(*args: str | Path) -> int:
    """Peak resident memory (bytes, Linux) of ``timelapse ARGS``, run alone under a fresh parent."""
    script = Path(sys.executable).parent / "timelapse"
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(script), *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    status, peak = map(int, result.stdout.split())
    assert status == 0, result
    return peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_a_big_trace_converts_in_bounded_memory(tmp_path):
    folder = big_trace(tmp_path / "t", 100_000)  # ~100 MB of trace.json
    size = (folder / "trace.json").stat().st_size
    assert size > 95_000_000
    baseline = peak_rss("--version")
    to_bin = peak_rss("convert", folder, "--to", "bin", "-o", tmp_path / "b")
    assert (tmp_path / "b" / "trace.bin").stat().st_size < size / 10
    to_json = peak_rss("convert", tmp_path / "b", "--to", "json", "-o", tmp_path / "j")
    # Measured: ~20 MB and ~25 MB above the interpreter's own (a batch, its frame, zstd's window).
    for peak in (to_bin, to_json):
        assert peak - baseline < 60_000_000, (peak, baseline, size)
    # the same text, but for a newline between batches of ~4 MB (the source has none)
    assert 20 < (tmp_path / "j" / "trace.json").stat().st_size - size < 30
    events = iter_events(tmp_path / "j")
    assert sum(1 for _ in events) == 200_012

"""IO capture: the fd lock's timeout path, invisible proxies, bounded fd reads (issue 9, items 13, 18, 21)."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import PROGRAMS, checked_trace, run_python

from timelapse.reader import decode_value


def test_uninstall_that_times_out_on_the_fd_lock_still_finishes_and_flushes():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout keeps a buffer
    result = run_python([str(PROGRAMS / "io_h3_lock_timeout.py")], env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["after uninstall", "buffered python output", "from fd"]


# -- item 18: the proxies look like the streams they stand for ------------------------------------


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_the_program_sees_its_streams_as_without_recording(record, options):
    program = PROGRAMS / "io_h3_proxy_visible.py"
    expected = run_python([str(program)])
    result = record(program, options=("-q", *options))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert result.stdout.startswith("TextIOWrapper TextIOWrapper _io\n")


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_objects_holding_the_streams_record_the_streams(record, options):
    result = record(PROGRAMS / "io_h3_proxy_visible.py", options=("-q", *options))
    trace = result.trace
    steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    values = steps[-1].values
    assert values["out"]["r"] == "<file '<stdout>' mode='w'>"
    assert trace.types[values["out"]["type_id"]]["lang_type"] == "_io.TextIOWrapper"
    assert decode_value(values["holder"], trace) == {
        "out": "<file '<stdout>' mode='w'>",
        "err": "<file '<stderr>' mode='w'>",
        "buf": "<file '<stdout>' mode='wb'>",
    }


# -- item 21: fd-level output is handed over in bounded pieces -------------------------------------

_MEASURE = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    code = subprocess.run(sys.argv[2:], stdout=out).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_rss_kib(command: list[str], stdout_path) -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of ``command`` (and its children), run from a fresh process so
    that no earlier child counts."""
    result = run_python(["-c", _MEASURE, str(stdout_path), *command], timeout=300)
    assert result.returncode == 0, result.stderr
    code, peak = result.stdout.split()
    return int(code), int(peak)


def test_fd_reads_decode_characters_split_between_reads(tmp_path):
    out = tmp_path / "trace"
    code, _peak = _peak_rss_kib([sys.executable, "-m", "timelapse", "record", "-q", "--capture-fd", "-o",
                                 str(out), str(PROGRAMS / "io_h3_fd_flood.py"), "2"], tmp_path / "stdout")
    assert code == 0
    expected = ("é" * 32768 + "\n") * 32
    assert (tmp_path / "stdout").read_text(encoding="utf-8") == expected + "child done\n"
    trace = checked_trace(out)
    events = [e for e in trace.events_of("Event") if e["kind"] == 0]
    assert "".join(e["content"] for e in events) == expected + "child done\n"
    assert '"source": "fd"' in events[0]["metadata"]


def test_a_child_flooding_fd_1_keeps_the_recorder_small(tmp_path):
    megabytes = 48
    baseline_code, baseline = _peak_rss_kib(
        [sys.executable, "-m", "timelapse", "record", "-q", "--capture-fd", "-o", str(tmp_path / "t0"),
         str(PROGRAMS / "io_h3_fd_flood.py"), "0"], tmp_path / "stdout0")
    code, peak = _peak_rss_kib(
        [sys.executable, "-m", "timelapse", "record", "-q", "--capture-fd", "-o", str(tmp_path / "t1"),
         str(PROGRAMS / "io_h3_fd_flood.py"), str(megabytes)], tmp_path / "stdout1")
    assert baseline_code == code == 0
    assert peak - baseline < 32 * 1024, f"{megabytes} MB through fd 1: peak RSS {baseline} -> {peak} KiB"

"""File-descriptor capture (``fdcapture.py``, ``--capture-fd``): driven directly in a process of its
own with a fake ``on_event`` (tests/programs/fd_capture_driver.py, fd_cases.py), then end to end
through ``timelapse record``. It takes over fds 1 and 2, so nothing of it runs inside pytest's own
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import PROGRAMS, checked_trace, run_python
from io_trace import content_of, io_events, line_of

from timelapse.iocapture import WRITE, WRITE_OTHER

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fd capture needs a POSIX system")


# -- driven directly, no recorder -------------------------------------------------------------------


def test_capture_fd_in_a_process_of_its_own():
    """The fd-level machinery driven directly, no recorder (tests/programs/fd_capture_driver.py)."""
    result = run_python([str(PROGRAMS / "fd_capture_driver.py")])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "python 1\nos.write 1\nchild 1\npython 2\nafter uninstall\nhandler after\nfd after\n"
    )
    assert result.stderr.startswith("os.write 2\n")
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["fileno"] == [1, 2]
    assert report["isinstance"] and report["replaced"] and report["restored"]
    assert report["isatty"] == [False, False]  # stdout is a pipe to the test, both before and now
    events = [tuple(e) for e in report["events"]]
    python = [e[2] for e in events if not e[3]]
    assert "python 1" in python and "python 2" in python  # the Python-level writes, not from fd
    # one read of the pipe may bring several writes: compare what each stream carried
    assert "".join(e[2] for e in events if e[3] and e[1] == "stdout") == "os.write 1\nchild 1\n"
    assert "".join(e[2] for e in events if e[3] and e[1] == "stderr") == "os.write 2\n"
    # fd-level output written before a Python-level write is reported before it
    assert events.index((0, "stdout", "python 2", False)) > max(
        i for i, e in enumerate(events) if e[3]
    )
    assert events[0] == (0, "stdout", "python 1", False)


def run_case(tmp_path, case: str, *args: str, env: dict | None = None, **popen) -> tuple[object, dict]:
    """Run one case of tests/programs/fd_cases.py: (the finished process, its report)."""
    report = tmp_path / "report.json"
    command = [sys.executable, str(PROGRAMS / "fd_cases.py"), case, str(report), *args]
    if "stdout" not in popen and "stderr" not in popen:
        popen.setdefault("capture_output", True)
    result = subprocess.run(command, timeout=60, env=env if env is not None else os.environ.copy(),
                            **popen)
    assert result.returncode == 0, result.stderr
    return result, json.loads(report.read_text(encoding="utf-8"))


def fd_events(report: dict) -> list[tuple[str, str]]:
    """(stream, content) of what was reported from the fds (``from_fd=True``), joined per stream:
    one read of a pipe may bring several writes, or part of one."""
    joined: dict[str, str] = {}
    for _kind, stream, content, from_fd in report["events"]:
        if from_fd:
            joined[stream] = joined.get(stream, "") + content
    return sorted(joined.items())


def python_output(report: dict) -> str:
    """What was reported from the Python-level writes, joined (``print`` writes its parts apart)."""
    return "".join(content for _kind, _stream, content, from_fd in report["events"] if not from_fd)


def test_a_forked_child_writes_without_the_parents_lock_or_pipes(tmp_path):
    """After fork() the child has a fresh fd lock (the parent's is held by a thread the child does
    not have) and leaves the pipes to the parent's reader."""
    result, report = run_case(tmp_path, "fork")
    assert report["child_exit"] == 0  # None: the child hung on the parent's lock
    assert result.stdout == b"child python\nchild fd\nparent after\n"
    assert fd_events(report) == [("stdout", "child fd\n")]  # forwarded and reported by the parent
    assert python_output(report) == "parent after\n"


@pytest.mark.parametrize("free", [1, 3, 5], ids=["first-pipe", "second-pipe", "wake-pipe"])
def test_a_capture_that_cannot_be_installed_leaves_nothing_changed(tmp_path, free):
    """Out of fds part-way through install: RecorderError, and the fds taken so far are given back."""
    result, report = run_case(tmp_path, "install_fails", str(free))
    assert report["error"].startswith("cannot capture file descriptors 1 and 2: ")
    assert report["free_after"] == free
    assert report["same_fds"] and report["same_stdout"]
    assert report["threads"] == 1  # no reader thread was started
    assert result.stdout == b"still writes\n"


def test_the_reader_thread_is_invisible_and_leaves_no_fd_open(tmp_path):
    result, report = run_case(tmp_path, "nothing_left")
    assert report["threads_same"]
    assert report["fds_during"] == 6  # per fd: the saved dup and the pipe's read end; the wake pipe
    assert report["reader_done"] and report["fds_same"]
    assert result.stdout == b"fd\npython\n"
    assert fd_events(report) == [("stdout", "fd\n")]


def test_a_program_that_points_fd_1_elsewhere_keeps_it_there(tmp_path):
    path = tmp_path / "file"
    result, report = run_case(tmp_path, "program_redirects_fd1", str(path))
    assert path.read_bytes() == b"python into the file\nfd into the file\n"
    assert result.stdout == b"before\nafter\n"
    assert report["fd1_is_the_file"]  # uninstall restored nothing that was not its own
    assert python_output(report) == "before\npython into the file\n"
    assert fd_events(report) == []  # fd 1 no longer led into the pipe


def test_writers_get_epipe_when_the_reader_of_stdout_is_gone(tmp_path):
    report_path = tmp_path / "report.json"
    process = subprocess.Popen(
        [sys.executable, str(PROGRAMS / "fd_cases.py"), "destination_gone", str(report_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout.readline() == b"ready\n"
    process.stdout.close()  # whoever read the program's output is gone
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["epipe"], "os.write(1) went on into the pipe for 20 s"


def test_seek_and_tell_on_a_file_behind_fd_1(tmp_path):
    path = tmp_path / "stdout"
    with open(path, "wb") as stdout:
        _result, report = run_case(tmp_path, "seek_tell", stdout=stdout, stderr=subprocess.PIPE)
    assert path.read_bytes() == b"abc\nde\nfgh\n"
    assert report["seekable"] and report["tells"] == [4, 11]


def test_what_the_program_reconfigured_stays_after_uninstall(tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    _result, report = run_case(tmp_path, "reconfigure", env=env)
    assert report["before"] == [False, "strict"]
    assert report["during"] == report["after"] == [True, "backslashreplace"]
    assert report["restored"]


def test_the_private_stream_keeps_the_encoding_of_the_real_one(tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "latin-1:backslashreplace"}
    result, report = run_case(tmp_path, "encoding", env=env)
    assert report["before"] == report["during"] == ["iso8859-1", "backslashreplace"]
    assert result.stdout == "é\nü\n\\u20ac\n".encode("latin-1")
    assert fd_events(report) == [("stdout", "ü\n")]  # decoded as latin-1, the stream's encoding
    assert python_output(report) == "é\n\u20ac\n"


def test_a_failure_reporting_fd_output_stops_fd_reporting_not_the_output(tmp_path):
    result, report = run_case(tmp_path, "fd_report_fails")
    assert result.stdout == b"one\npython\ntwo\npython again\n"
    assert report["fd_attempts"] == 1
    assert python_output(report) == "python\npython again\n"


def test_on_a_terminal_python_still_says_so(tmp_path):
    pty = pytest.importorskip("pty")
    primary, secondary = pty.openpty()
    try:
        result, report = run_case(tmp_path, "terminal", stdin=secondary, stdout=secondary,
                                  stderr=secondary)
        os.close(secondary)
        seen = b""
        deadline = time.monotonic() + 10
        while b"on the terminal" not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(primary, 1024)
            except OSError:
                break
    finally:
        os.close(primary)
    assert report["during"] == [True, True, False, False]  # C code and children see the pipe
    assert report["after"] == [True, True, True]
    assert b"on the terminal" in seen


# -- the fd lock ------------------------------------------------------------------------------------


def test_uninstall_that_times_out_on_the_fd_lock_still_finishes_and_flushes():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout keeps a buffer
    result = run_python([str(PROGRAMS / "fd_lock_timeout.py")], env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["after uninstall", "buffered python output", "from fd"]


# -- end to end through the CLI ---------------------------------------------------------------------


def test_capture_fd(record):
    program = PROGRAMS / "io_fd.py"
    result = record(program, options=("--capture-fd",))
    assert result.returncode == 0, result.stderr
    unrecorded = run_python([str(program)])
    assert result.stdout == unrecorded.stdout
    assert result.stdout == "python before\nfd one write\nfrom a child\nfrom C printf\npython after\n"
    assert result.stderr.startswith("fd two write\npython stderr\n")
    trace = result.trace
    stdout = content_of(trace, WRITE)
    for text in ("python before\n", "fd one write\n", "from a child\n", "from C printf\n",
                 "python after\n"):
        assert stdout.count(text) == 1, (text, stdout)  # once: never duplicated
    assert sorted(stdout.splitlines()) == sorted(result.stdout.splitlines())
    assert content_of(trace, WRITE_OTHER) == "fd two write\npython stderr\n"
    # what arrived while a line ran is on that line (or, at the latest, the next one)
    events = {content: metadata for _i, _k, metadata, content in io_events(trace)}
    child_line = line_of(program, "subprocess.run")
    assert events["from a child\n"]["line"] in (child_line, child_line + 1)
    os_write_line = line_of(program, "os.write(1")
    assert os_write_line <= events["fd one write\n"]["line"] <= os_write_line + 2


def test_capture_fd_output_order_on_the_terminal(record):
    """Python-level and fd-level output reach the (saved) stdout in the order they were written."""
    result = record(PROGRAMS / "io_fd.py", options=("--capture-fd",))
    assert result.stdout == "python before\nfd one write\nfrom a child\nfrom C printf\npython after\n"


def test_capture_fd_stays_faithful(record):
    result = record(PROGRAMS / "io_encoding.py", options=("--capture-fd",))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before\ncaught UnicodeEncodeError\nutf-8 strict False 1\n"
    assert content_of(result.trace, WRITE) == result.stdout


def test_capture_fd_ten_megabytes(record):
    program = PROGRAMS / "io_big.py"
    result = record(program, options=("--capture-fd", "--max-items", "1"))
    assert result.returncode == 0, result.stderr
    expected = run_python([str(program)]).stdout
    assert result.stdout == expected
    assert content_of(result.trace, WRITE) == expected


# -- fd-level output is handed over in bounded pieces -----------------------------------------------

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
                                 str(out), str(PROGRAMS / "fd_flood.py"), "2"], tmp_path / "stdout")
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
         str(PROGRAMS / "fd_flood.py"), "0"], tmp_path / "stdout0")
    code, peak = _peak_rss_kib(
        [sys.executable, "-m", "timelapse", "record", "-q", "--capture-fd", "-o", str(tmp_path / "t1"),
         str(PROGRAMS / "fd_flood.py"), str(megabytes)], tmp_path / "stdout1")
    assert baseline_code == code == 0
    assert peak - baseline < 32 * 1024, f"{megabytes} MB through fd 1: peak RSS {baseline} -> {peak} KiB"

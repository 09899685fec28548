"""Saving the trace folder: paths fixed at start, write failures (full disk), folders that cannot be
renamed over (mount points, symlinks), and leftovers of killed runs."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONSOLE_SCRIPT, PROGRAMS, checked_trace, run_python, run_timelapse

import timelapse
from timelapse.reader import stream_path
from timelapse.errors import RecorderError


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def summary_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("timelapse:")]


# -- item 7: every path is resolved at start ------------------------------------------------------

@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_a_program_that_leaves_or_deletes_its_working_directory_keeps_its_trace(tmp_path, how):
    program = PROGRAMS / "sv_chdir.py"
    expected = run_python([str(program), how], cwd=tmp_path)
    result = run_timelapse(["record", "-o", "trace", str(program), how], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout) == (0, "done\n")
    trace = checked_trace(tmp_path / "trace")
    assert trace.metadata["workdir"] == str(tmp_path)
    [line] = result.stderr.splitlines()
    assert f"→ trace{os.sep} (" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace"]


# -- item 8: a write that fails (full disk) -------------------------------------------------------

def _limit_file_size(limit: int):
    """A process whose files cannot grow past ``limit`` bytes: writes fail with EFBIG, like ENOSPC."""
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    return preexec


@pytest.mark.parametrize("status", ["0", "3"])
def test_a_full_disk_removes_the_partial_trace_and_says_so(tmp_path, status):
    program = PROGRAMS / "sv_busy.py"
    out = tmp_path / "trace"
    record = run_timelapse(["record", "-q", "-o", str(out), str(PROGRAMS / "recursion.py")])
    assert record.returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    expected = run_python([str(program), status])
    result = run_timelapse(["record", "-o", str(out), str(program), status],
                           preexec_fn=_limit_file_size(200_000))
    assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout)
    assert result.returncode == int(status)
    [line] = result.stderr.splitlines()
    assert line.startswith("timelapse: error: could not save the trace"), line
    assert "File too large" in line and str(out) in line and "left as it was" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert hidden(tmp_path) == []


def test_a_full_disk_without_an_old_trace_leaves_no_folder(tmp_path):
    result = run_timelapse(["record", "-o", "trace", str(PROGRAMS / "sv_busy.py"), "0"], cwd=tmp_path,
                           preexec_fn=_limit_file_size(100_000))
    assert result.returncode == 0 and "could not save the trace" in result.stderr
    assert "→" not in result.stderr  # never a summary that names a folder
    assert list(tmp_path.iterdir()) == []


def _fail_writes(monkeypatch, code: int = errno.ENOSPC):
    def writev(fd, buffers):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "writev", writev)


@pytest.mark.parametrize("batch", ["at the end", "while recording"])
def test_api_a_failed_write_raises_at_stop_and_leaves_nothing(tmp_path, monkeypatch, batch):
    out = tmp_path / "t"
    session = timelapse.start(out)
    _fail_writes(monkeypatch)
    total = 0
    for i in range(5000 if batch == "while recording" else 3):  # > 8192 events: flushed in a callback
        total += i
    if batch == "while recording":
        assert not timelapse.is_recording()  # stopped at once; the program went on unrecorded
    with pytest.raises(RecorderError, match=r"could not save the trace: No space left on device"):
        session.stop()
    assert not timelapse.is_recording()
    assert list(tmp_path.iterdir()) == []
    assert session.stop() is None  # nothing more to say


def test_api_a_failed_publish_leaves_the_old_trace(tmp_path, monkeypatch):
    out = tmp_path / "t"
    timelapse.start(out).stop()
    before = stream_path(out).read_bytes()
    session = timelapse.start(out)
    real_rename = os.rename

    def rename(src, dst):  # the new trace cannot take the old one's place
        if Path(dst) == out and str(src).endswith(".recording"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RecorderError, match="could not save the trace"):
        session.stop()
    assert stream_path(out).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


# -- item 9: output folders that cannot be renamed over -------------------------------------------

def test_a_symlink_to_an_empty_folder_is_published_into(tmp_path):
    real = tmp_path / "volume"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    for program in ("recursion.py", "callbacks.py"):  # the second one replaces the first
        result = run_timelapse(["record", "-o", str(link), str(PROGRAMS / program)])
        assert result.returncode == 0, result.stderr
        assert link.is_symlink() and link.resolve() == real
        trace = checked_trace(link)
        assert trace.paths == [str(PROGRAMS / program)]
        assert hidden(real) == [] and hidden(tmp_path) == []
    assert not (real / "files" / str(PROGRAMS / "recursion.py").lstrip("/")).exists()


def test_a_symlink_to_a_non_trace_folder_is_refused(tmp_path):
    real = tmp_path / "volume"
    real.mkdir()
    (real / "data.txt").write_text("keep")
    (tmp_path / "link").symlink_to(real)
    result = run_timelapse(["record", "-o", str(tmp_path / "link"), str(PROGRAMS / "recursion.py")])
    assert result.returncode == 2 and "not a timelapse trace" in result.stderr
    assert sorted(p.name for p in real.iterdir()) == ["data.txt"]


@pytest.mark.parametrize("old_trace", [False, True])
@pytest.mark.parametrize("code", [errno.EBUSY, errno.EXDEV])
def test_a_mount_point_is_published_into(tmp_path, monkeypatch, old_trace, code):
    out = tmp_path / "mnt"
    out.mkdir()
    if old_trace:
        timelapse.start(out).stop()
    real_rename = os.rename

    def rename(src, dst):  # as the kernel does for a mount point: it cannot be renamed, nor over
        if out in (Path(src), Path(dst)):
            raise OSError(code, os.strerror(code))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out)
    session = timelapse.start(out)
    inside = hidden(out)  # detected at start: the partial trace is written inside the volume
    assert len(inside) == 1 and inside[0].endswith(".recording")
    assert session.stop() == out
    checked_trace(out)
    assert hidden(out) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mnt"]


def test_a_mount_point_found_only_when_publishing_is_published_into(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    session = timelapse.start(out)
    real_rename = os.rename

    def rename(src, dst):
        if out in (Path(src), Path(dst)):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    assert session.stop() == out
    checked_trace(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnt"] and hidden(out) == []


# -- item 11: leftovers of killed runs ------------------------------------------------------------

def _start_forever(tmp_path: Path, out: Path) -> subprocess.Popen:
    script = tmp_path / "forever.py"
    script.write_text("import time\nprint('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n"
                      "    time.sleep(0.001)\n")
    process = subprocess.Popen([str(CONSOLE_SCRIPT), "record", "-q", "-o", str(out), str(script)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def test_a_killed_runs_partial_folder_is_removed_at_the_next_recording(tmp_path):
    out = tmp_path / "trace"
    process = _start_forever(tmp_path, out)
    time.sleep(0.2)
    process.kill()
    process.wait(timeout=60)
    process.stdout.close()
    [stale] = hidden(tmp_path)
    assert stale.startswith(".trace.") and stale.endswith(".recording")
    result = run_timelapse(["record", "-q", "-o", str(out), str(PROGRAMS / "recursion.py")])
    assert result.returncode == 0
    assert hidden(tmp_path) == []
    checked_trace(out)


def test_a_live_recordings_folder_is_never_touched(tmp_path):
    out = tmp_path / "trace"
    process = _start_forever(tmp_path, out)
    try:
        [live] = hidden(tmp_path)
        result = run_timelapse(["record", "-q", "-o", str(out), str(PROGRAMS / "recursion.py")])
        assert result.returncode == 0
        assert hidden(tmp_path) == [live]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == -signal.SIGTERM
        process.stdout.close()
    assert hidden(tmp_path) == []
    assert checked_trace(out).paths[0] == str(tmp_path / "forever.py")

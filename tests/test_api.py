"""The Python API: start/stop, the context manager, is_recording, and fail-fast recorder errors."""

from __future__ import annotations

import pytest
from conftest import PROGRAMS, checked_trace, run_python

import timelapse


def test_only_what_runs_between_start_and_stop_is_recorded(tmp_path):
    out = tmp_path / "api"
    result = run_python([str(PROGRAMS / "api_usage.py"), str(out)])
    assert result.returncode == 0, result.stderr
    assert "second start: already recording" in result.stdout
    trace = checked_trace(out)
    names = [c.function for c in trace.calls()]
    assert "inside" in names and "before" not in names and "outer" not in names
    assert not any("timelapse" in p for p in trace.paths)
    # The caller's own lines after start() are steps of the top-level call.
    outer_lines = {s.line for s in trace.steps() if s.call.function == "<toplevel>"}
    assert 24 in outer_lines  # value = inside(41)
    ctx = checked_trace(tmp_path / "api-ctx")
    assert [c.function for c in ctx.calls()] == ["<toplevel>", "inside"]


def test_start_stop_in_process(tmp_path):
    def square(x):
        return x * x

    session = timelapse.start(tmp_path / "t")
    try:
        assert timelapse.is_recording()
        square(3)
    finally:
        folder = session.stop()
    assert not timelapse.is_recording()
    assert folder == tmp_path / "t"
    trace = checked_trace(folder)
    assert [c.function for c in trace.calls()][1:] == [
        "test_start_stop_in_process.<locals>.square"]


def test_stop_while_calls_are_open_closes_them(tmp_path):
    def inner(out):
        session = timelapse.start(out)
        nested(session)

    def nested(session):
        deeper(session)

    def deeper(session):
        session.stop()

    inner(tmp_path / "t")
    trace = checked_trace(tmp_path / "t")
    assert [c.function.rsplit(".", 1)[-1] for c in trace.calls()] == ["<toplevel>", "nested", "deeper"]


def test_an_existing_non_trace_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(timelapse.RecorderError, match="not a timelapse trace"):
        timelapse.start(tmp_path)
    assert not timelapse.is_recording()


@pytest.mark.parametrize("mode", ["raise", "continue"])
def test_a_recorder_failure_stops_recording_at_once(tmp_path, mode):
    out = tmp_path / "t"
    result = run_python([str(PROGRAMS / "fault_injection.py"), str(out), mode])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "afterwards: 4" in lines and "recording: False" in lines
    trace = checked_trace(out)
    names = [c.function for c in trace.calls()]
    assert "afterwards" not in names  # nothing recorded after the failure
    assert trace.metadata["recorder_error"].startswith("OSError: cannot read the frame's locals")
    error = trace.events[-2]["Event"]
    assert error["kind"] == 11 and "injected" in error["content"]
    if mode == "raise":
        assert "caught: 1" in lines
        assert "cause: OSError" in lines
        assert any(line.startswith("handler: timelapse recorder error: OSError") for line in lines)
    else:
        assert "caught: 0" in lines
        assert "program goes on unrecorded" in result.stderr


@pytest.mark.parametrize("options", [{"max_depth": 0}, {"max_depth": 101}, {"max_items": "5"},
                                     {"on_error": "ignore"}])
def test_bad_options_are_refused_before_recording(tmp_path, options):
    with pytest.raises(ValueError):
        timelapse.start(tmp_path / "t", **options)
    assert not timelapse.is_recording()
    assert not (tmp_path / "t").exists()


def test_no_free_tool_id_is_a_clear_error(tmp_path):
    import sys

    claimed = []
    for tool_id in range(6):
        if sys.monitoring.get_tool(tool_id) is None:
            sys.monitoring.use_tool_id(tool_id, f"other-tool-{tool_id}")
            claimed.append(tool_id)
    try:
        with pytest.raises(timelapse.RecorderError, match="no free sys.monitoring tool id.*other-tool"):
            timelapse.start(tmp_path / "t")
        assert not timelapse.is_recording()
        assert not (tmp_path / "t").exists()
        assert [p for p in tmp_path.iterdir()] == []  # no half-made folder either
    finally:
        for tool_id in claimed:
            sys.monitoring.free_tool_id(tool_id)


def test_threads_running_before_start_and_after_stop(tmp_path):
    import threading
    import time

    go_on = threading.Event()
    stop = threading.Event()
    counts = []

    def spin():
        n = 0
        while not stop.is_set():
            n += 1
            if n == 1000:
                go_on.set()
        counts.append(n)

    worker = threading.Thread(target=spin)
    worker.start()
    go_on.wait(timeout=30)
    session = timelapse.start(tmp_path / "t")
    time.sleep(0.05)  # the worker runs while recording
    total = sum(range(10_000))
    session.stop()
    stop.set()
    worker.join(timeout=30)
    trace = checked_trace(tmp_path / "t")
    assert total == 49995000 and counts and counts[0] > 1000
    spin_steps = [s for s in trace.steps() if s.line in range(spin.__code__.co_firstlineno,
                                                              spin.__code__.co_firstlineno + 6)]
    assert spin_steps, "the thread that was already running is recorded while recording is on"
    assert len(trace.events_of("ThreadStart")) >= 1


def test_the_program_path_is_read_without_the_programs_code(tmp_path, monkeypatch):
    import sys
    import types

    from timelapse.session import _guess_program

    calls = []
    main = types.ModuleType("__main__")
    main.__getattr__ = lambda name: calls.append(name)  # a module-level __getattr__ (PEP 562)
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["prog.py"])
    assert _guess_program() == "prog.py" and calls == []
    main.__file__ = str(tmp_path / "main.py")
    assert _guess_program() == str(tmp_path / "main.py")

"""The recorder's sections (monitor.py, interrupts.py): program code never runs inside them, a torn
event group is taken back, and the program behaves — and its objects die — as without recording.

Issue 9, items 1-5, 12-14, 17, 19, 20, 24-26. Each test records a real program through the console
script and compares it with a plain ``python`` run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import CONSOLE_SCRIPT, PROGRAMS, checked_trace, run_python, same_as_python

from timelapse.reader import decode_value


def exception_events(trace):
    found = []
    for event in trace.events_of("Event"):
        if event["kind"] in (11, 12) and event["metadata"]:
            metadata = json.loads(event["metadata"])
            if "exception" in metadata:
                found.append((metadata["stream"], metadata.get("line"), metadata["exception"]))
    return found


# -- A. program code inside the recorder -------------------------------------------------------------

@pytest.mark.parametrize("attempt", range(4))
def test_sigterm_on_a_busy_program_finishes_the_trace_and_kills(tmp_path, attempt, trace_format):
    """Item 1: SIGTERM in the middle of a callback used to deadlock (the handler started a thread
    that waited for the lock its own thread held)."""
    out = tmp_path / "trace"
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "record", "-q", "--format", trace_format, "-o", str(out),
         str(PROGRAMS / "sec_sigterm_busy.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.2 + 0.05 * attempt)
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the recorded program hung after SIGTERM")
    assert process.returncode == -signal.SIGTERM
    trace = checked_trace(out)
    assert trace.metadata["exit_signal"] == signal.SIGTERM


def test_a_signal_handler_that_raises_reaches_the_program_as_its_own(record):
    """Item 2: SIGALRM's Timeout is caught by the program every time, never a RecorderError."""
    result = same_as_python(record, "sec_alarm.py")
    assert "timeouts caught: 20" in result.stdout
    assert "handler shown: True" in result.stdout


def test_caught_base_exceptions_from_handlers_leave_a_valid_trace(record):
    """Item 3: KeyboardInterrupt and a BaseException subclass raised by handlers, caught by the
    program: the stream stays balanced and well-formed (record() checks the trace)."""
    result = same_as_python(record, "sec_interrupts_caught.py")
    assert "'Stop': 100" in result.stdout and "'KeyboardInterrupt': 100" in result.stdout
    if (result.out / "trace.json").exists():   # no hole in the JSON array where a batch was cut
        assert ",," not in (result.out / "trace.json").read_text()


def test_objects_die_when_the_program_drops_them(record):
    """Item 4: no step memo, frame snapshot or kept exception makes an object outlive its last
    reference: output order, weakrefs and a __del__ that starts a thread are as under python."""
    result = same_as_python(record, "sec_lifetimes.py")
    assert result.stdout.splitlines() == [
        "del local", "after local", "weakref dead: True", "exception's argument dead: True",
        "del shared", "after shared", "thread from __del__ joined", "after thread", "del module", "end",
    ]
    # __del__'s output is an IO event in the trace, on a step of its own, never between a Step and
    # its Values: the checker (run by record()) would reject that.


def test_a_memory_error_the_program_catches_is_its_own(record):
    """Item 5."""
    result = same_as_python(record, "sec_memory.py")
    assert result.stdout == "caught 10\n"


# -- C. races -----------------------------------------------------------------------------------------

def test_a_thread_adding_globals_does_not_break_module_steps(record):
    """Item 12."""
    result = same_as_python(record, "sec_globals_race.py")
    assert result.stdout == "done 3000\n"


def test_threads_switch_about_as_often_as_without_recording(record):
    """Item 14: the per-event lock used to make threads take turns event by event."""
    result = same_as_python(record, "sec_threads_work.py")
    switches = len(result.trace.events_of("ThreadSwitch"))
    steps = len(result.trace.steps())
    # Four threads, ~320k steps: turn by turn this was thousands; the GIL switches every 5 ms.
    assert steps > 100_000
    assert switches < 400, switches


# -- D. the program cannot tell ---------------------------------------------------------------------

def test_locals_dict_is_not_rewritten(record):
    """Item 17 (Python 3.12: frame.f_locals re-syncs the dict locals() returned)."""
    result = same_as_python(record, "sec_locals_exec.py")
    assert result.stdout.splitlines()[0] == "5"


def test_a_dict_subclass_namespace_is_read_without_its_methods(record):
    """Item 19: exec of a file's code into a dict subclass: its Python methods run only when the
    program calls them."""
    result = same_as_python(record, "sec_namespace.py")
    steps = [s for s in result.trace.steps() if s.path.endswith("sec_namespace_body.py") and "a" in s.values]
    assert steps and decode_value(steps[-1].values["a"], result.trace) in (11, 21)


def test_the_program_freeing_our_tool_id_only_stops_the_recording(record):
    """Item 20: no ValueError at the end; the trace says recording stopped there."""
    result = same_as_python(record, "sec_free_tool.py")
    assert result.stdout == "went on 1\n"
    assert "sys.monitoring tool id" in result.trace.metadata["recorder_error"]


# -- F. trace content ---------------------------------------------------------------------------------

def test_a_caught_recursion_error_stays_in_the_deepest_call(record):
    """Item 24: the refused call's unwind used to close its caller."""
    result = same_as_python(record, "sec_recursion_caught.py")
    trace = result.trace
    source = (PROGRAMS / "sec_recursion_caught.py").read_text().splitlines()
    caught_line = source.index("        caught = n") + 1
    (step,) = [s for s in trace.steps() if s.line == caught_line]
    deepest = step.call
    assert decode_value(deepest.args["n"], trace) == decode_value(deepest.return_value, trace)
    assert not [c for c in trace.calls() if c.function == "down" and c.depth > deepest.depth]
    handled = [e for e in exception_events(trace) if e[0] == "handled"]
    assert len(handled) == 1


def test_closing_a_generator_adds_no_exception_events_the_program_did_not_write(record):
    """Item 25."""
    trace = same_as_python(record, "sec_gen_close.py").trace
    source = (PROGRAMS / "sec_gen_close.py").read_text().splitlines()
    events = [e for e in exception_events(trace) if e[2] == "GeneratorExit"]
    finally_line = source.index("    finally:") + 1
    # plain(): nothing; with_finally(): its finally handles it and re-raises it at the block's end.
    assert all(line >= finally_line - 2 for _, line, _ in events), events
    assert [what for what, _, _ in events] == ["handled", "reraise"] or (
        sys.version_info >= (3, 13) and events == [])


def test_an_empty_module_has_no_step_at_line_zero(record):
    """Item 26."""
    trace = same_as_python(record, "sec_empty_import.py", cwd=PROGRAMS).trace
    assert all(step.line >= 1 for step in trace.steps())


# -- B. saving ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_signals_while_the_trace_is_saved_do_not_lose_it(tmp_path, second, trace_format):
    """Item 6: Ctrl-C, then Ctrl-C or SIGTERM again and again while the trace is being saved."""
    out = tmp_path / "trace"
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "record", "-q", "--format", trace_format, "-o", str(out),
         str(PROGRAMS / "sec_busy_values.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 3
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
        try:
            process.send_signal(second)
        except ProcessLookupError:
            break
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGINT, -signal.SIGTERM, 130, 143), (process.returncode, stderr)
    # (Python's own report of the KeyboardInterrupt may itself be cut short by the burst, as without
    # recording: only our own complaint would be wrong here.)
    assert "timelapse: error" not in stderr, stderr
    trace = checked_trace(out)     # complete and valid, whichever signal ended the run
    assert trace.metadata["process_exit_status"] in (130, 143)


def test_a_failing_callback_and_stop_at_once_do_not_deadlock(tmp_path):
    """Item 13: one lock order (the session's finish lock, then the recorder's)."""
    for attempt in range(5):
        out = tmp_path / f"trace{attempt}"
        result = run_python([str(PROGRAMS / "sec_stop_race.py"), str(out)], timeout=60)
        assert result.returncode == 0, result.stderr
        assert "alive: False" in result.stdout
        checked_trace(out)


def test_deferred_handlers_run_in_the_main_thread(record):
    result = same_as_python(record, "sec_handler_thread.py")
    assert result.stdout == "all in the main thread: True True\n"


def test_a_generators_locals_dict_survives_a_yield(record):
    result = same_as_python(record, "sec_gen_locals.py")
    assert result.stdout == "['x']\n"

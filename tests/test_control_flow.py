"""End to end: generators, async, exceptions, threads, recursion, process ends and code shapes."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import PROGRAMS, run_python, same_as_python

from timelapse.reader import decode_value


def calls_named(trace, name):
    return [c for c in trace.calls() if c.function == name]


def exception_events(trace):
    out = []
    for event in trace.events_of("Event"):
        metadata = json.loads(event["metadata"])
        if metadata["stream"] in ("raise", "reraise", "handled"):
            out.append((event["kind"], metadata["stream"], metadata["line"], event["content"]))
    return out


def test_generator_send_throw_and_close(record):
    trace = same_as_python(record, "generators.py").trace
    echo = calls_named(trace, "echo")
    # start, send, and close() throwing GeneratorExit in (3.13 closes a generator that is not
    # inside a try block without resuming it)
    assert len(echo) == (3 if sys.version_info < (3, 13) else 2)
    received = [decode_value(s.values["received"], trace) for s in trace.steps()
                if s.call is echo[1] and "received" in s.values]
    assert "ping" in received
    if len(echo) == 3:
        thrown = echo[2].args["exception"]
        assert trace.types[thrown["type_id"]]["lang_type"] == "GeneratorExit"
    assert decode_value(echo[0].return_value, trace) is None


def test_async_program_is_balanced_and_readable(record):
    trace = same_as_python(record, "async_prog.py").trace
    ticks = [decode_value(c.return_value, trace) for c in calls_named(trace, "ticker")]
    assert [t for t in ticks if t is not None] == [0, 10, 20]  # the values, not CPython's wrappers
    workers = [decode_value(c.return_value, trace) for c in calls_named(trace, "worker")]
    assert {"a done", "b done"} <= {w for w in workers if isinstance(w, str)}
    sleeper = calls_named(trace, "sleeper")
    last = trace.types[sleeper[-1].return_value["type_id"]]
    assert "CancelledError" in last["lang_type"]


def test_exceptions_are_events_where_raised_handled_and_reraised(record):
    trace = same_as_python(record, "exceptions.py").trace
    assert exception_events(trace) == [
        (11, "raise", 11, "__main__.InsufficientFunds: 50, 'too much'"),
        (12, "handled", 21, "__main__.InsufficientFunds: 50, 'too much'"),
        (11, "raise", 11, "__main__.InsufficientFunds: 99, 'too much'"),
        (12, "handled", 29, "__main__.InsufficientFunds: 99, 'too much'"),
        (11, "reraise", 31, "__main__.InsufficientFunds: 99, 'too much'"),
        (12, "handled", 43, "__main__.InsufficientFunds: 99, 'too much'"),
        (11, "raise", 36, "ValueError: invalid literal for int() with base 10: 'x'"),
        (12, "handled", 36, "ValueError: invalid literal for int() with base 10: 'x'"),
        (11, "reraise", 38, "ValueError: invalid literal for int() with base 10: 'x'"),
        (12, "handled", 47, "ValueError: invalid literal for int() with base 10: 'x'"),
    ]


def test_an_unwound_frame_returns_its_exception_as_a_structured_value(record):
    trace = record(PROGRAMS / "exceptions.py").trace
    (first_check, *_) = calls_named(trace, "check")
    check = [c for c in calls_named(trace, "check") if decode_value(c.args["amount"], trace) == 50][0]
    value = check.return_value
    assert value["kind"] != "Raw"
    assert trace.types[value["type_id"]]["lang_type"] == "__main__.InsufficientFunds"
    assert first_check.function == "check"


def test_uncaught_exception_ends_the_trace_with_an_error_on_the_last_step(record):
    result = record(PROGRAMS / "exit_with.py", "raise")
    events = result.trace.events
    last_event_index = max(i for i, e in enumerate(events) if isinstance(e, dict) and "Event" in e)
    last_step_index = max(i for i, e in enumerate(events) if isinstance(e, dict) and "Step" in e)
    assert last_event_index > last_step_index
    assert events[last_event_index]["Event"]["kind"] == 11
    assert "Traceback" in events[last_event_index]["Event"]["content"]


def test_threads_never_call_user_repr_and_never_deadlock(record):
    result = same_as_python(record, "threads_repr.py")
    assert "repr calls: 0" in result.stdout
    trace = result.trace
    churns = calls_named(trace, "churn")
    returned = {decode_value(c.return_value, trace) for c in churns
                if c.return_value and c.return_value["kind"] == "Int"}
    assert returned == {3, 303, 603, 903}
    assert len(trace.events_of("ThreadStart")) == 5  # main + 4 (an ident may be reused)
    assert len(trace.events_of("ThreadExit")) == 4


def test_recursion_limit_is_where_it_is_without_the_recorder(record):
    result = same_as_python(record, "deep_recursion.py")
    assert result.stdout.splitlines()[0] == "caught at 999 maximum recursion depth exceeded"
    assert result.stdout.splitlines()[2] == "caught at 299"
    downs = calls_named(result.trace, "down")
    assert len(downs) > 1000


@pytest.mark.parametrize("how", ["atexit-error", "thread"])
def test_process_ends(record, how):
    expected = run_python([str(PROGRAMS / "process_ends.py"), how])
    result = record(PROGRAMS / "process_ends.py", how, options=("-q",))
    assert result.returncode == expected.returncode
    assert result.stdout == expected.stdout
    strip = lambda text: text.split(" at 0x")[0]  # noqa: E731 - addresses differ run to run
    assert strip(result.stderr) == strip(expected.stderr)
    names = [c.function for c in result.trace.calls()]
    assert ("broken_handler" if how == "atexit-error" else "late_worker") in names


def test_os_exit_still_saves_the_trace(record):
    result = same_as_python(record, "process_ends.py", "os-exit")
    assert result.returncode == 7
    assert result.trace.metadata["process_exit_status"] == 7


def test_every_code_shape_is_named_and_balanced(record):
    trace = same_as_python(record, "shapes.py").trace
    names = {c.function for c in trace.calls()}
    assert {"logged", "logged.<locals>.wrapper", "double", "managed", "Meta.__new__", "Shape",
            "Shape.__init__", "Shape.area", "make_counter.<locals>.bump", "<lambda>",
            "<genexpr>"} <= names
    assert not {"<listcomp>", "<setcomp>"} & names  # inlined since 3.12
    bump_steps = [s for s in trace.steps() if s.call.function == "make_counter.<locals>.bump"]
    assert any("count" in s.values for s in bump_steps)  # a free variable
    class_steps = [s for s in trace.steps() if s.call.function == "Shape"]
    assert any("sides" in s.values for s in class_steps)


def test_reload_points_old_and_new_code_at_their_own_source(record, tmp_path):
    result = record(PROGRAMS / "reload_prog.py", str(tmp_path))
    assert result.stdout == "old\nnew old\n"
    trace = result.trace
    answers = calls_named(trace, "answer")
    assert [c.path.rsplit("/", 1)[-1] for c in answers] == [
        "mutable_mod.py", "mutable_mod@v2.py", "mutable_mod.py"]
    new_copy = result.out / "files" / str(tmp_path / "mutable_mod@v2.py").lstrip("/")
    assert "version two" in new_copy.read_text()
    old_copy = result.out / "files" / str(tmp_path / "mutable_mod.py").lstrip("/")
    assert "'old'" in old_copy.read_text()


def test_exec_and_eval_strings_are_not_recorded_as_code(record):
    trace = record(PROGRAMS / "shapes.py").trace
    assert all(not p.startswith("<") for p in trace.paths)
    assert sys.version_info >= (3, 12)

"""End to end: what a recorded program's trace says (trace content rules of trace-format.md §4)."""

from __future__ import annotations

import sys

from conftest import PROGRAMS

from timelapse.reader import decode_value


def calls_named(trace, name):
    return [c for c in trace.calls() if c.function == name]


def test_stream_starts_with_the_toplevel_call(record):
    result = record(PROGRAMS / "args_kinds.py")
    events = result.trace.events
    assert events[0] == {"Path": str(PROGRAMS / "args_kinds.py")}
    assert events[1] == {"Function": {"path_id": 0, "line": 1, "name": "<toplevel>"}}
    assert events[2] == {"Call": {"function_id": 0, "args": []}}
    assert events[3] == {"Type": {"kind": 30, "lang_type": "None", "specific_info": {"kind": "None"}}}
    assert result.trace.calls()[1].function == "<__main__>"


def test_two_positional_arguments_with_exact_values(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    (call,) = calls_named(trace, "add")
    assert list(call.args) == ["a", "b"]
    a, b = call.args["a"], call.args["b"]
    assert a["kind"] == "Int" and a["i"] == 3
    assert b["kind"] == "Float" and b["f"] == "4.5"
    assert decode_value(call.return_value, trace) == 7.5


def test_every_argument_kind(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    (call,) = calls_named(trace, "f")
    assert list(call.args) == ["p", "q", "r", "args", "kwargs"]
    decoded = {name: decode_value(value, trace) for name, value in call.args.items()}
    assert decoded["p"] == 1 and decoded["q"] == 2 and decoded["r"] == 5
    assert list(decoded["args"]) == [3, 4]
    assert {k: v for k, v in decoded["kwargs"]} == {"s": 6, "t": 7}


def test_defaults_are_applied_and_str_is_string(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    (call,) = calls_named(trace, "greet")
    assert call.args["name"]["kind"] == "String"
    assert call.args["name"]["text"] == "world"
    assert call.args["punctuation"] == {**call.args["punctuation"], "kind": "String", "text": "!"}
    assert decode_value(call.return_value, trace) == "hello world!"


def test_basic_values_are_exact(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    (call,) = calls_named(trace, "basics")
    last = [s for s in trace.steps() if s.call is call][-1]
    values = {name: decode_value(v, trace) for name, v in last.values.items()}
    assert values["n"] is None and values["flag"] is True and values["count"] == 7
    assert values["big"] == 2**70 and values["ratio"] == 2.5
    assert values["text"] == "héllo\nworld"
    assert list(values["items"]) == [1, "two", 3.0]
    assert tuple(values["pair"]) == (1, 2)
    assert last.values["text"]["kind"] == "String"


def test_functions_are_named_by_qualname_at_their_definition_line(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    functions = {f["name"]: f for f in trace.functions}
    assert functions["add"]["line"] == 4
    assert functions["f"]["line"] == 8
    assert functions["<__main__>"]["line"] == 1


def test_a_step_at_the_definition_line_precedes_every_call(record):
    trace = record(PROGRAMS / "args_kinds.py").trace
    events = trace.events
    functions = trace.functions
    for index, event in enumerate(events):
        if isinstance(event, dict) and "Call" in event and index > 2:
            function = functions[event["Call"]["function_id"]]
            previous = next(e for e in reversed(events[:index]) if isinstance(e, dict) and "Step" in e)
            assert previous["Step"] == {"path_id": function["path_id"], "line": function["line"]}


def test_the_definition_line_step_shows_the_arguments_once(record):
    """The consumer adds a Call's args to the variables of the Step before it: no Value event may
    follow that Call before the next Step (each argument would be listed twice), and the reader
    (as CodeTracer) shows the arguments as that step's variables."""
    trace = record(PROGRAMS / "args_kinds.py").trace
    events = trace.events
    calls = [i for i, e in enumerate(events) if isinstance(e, dict) and "Call" in e and i > 2]
    assert calls
    for index in calls:
        after = next((e for e in events[index + 1:] if isinstance(e, dict) and ("Step" in e or "Value" in e)),
                     None)
        assert after is None or "Step" in after, f"a Value right after the Call at event {index}"
    (call,) = calls_named(trace, "f")
    assert list(call.args) == ["p", "q", "r", "args", "kwargs"]
    (def_step,) = [s for s in trace.steps() if s.call is call and s.line == 8]
    assert def_step.values == call.args


def test_module_level_shows_own_variables_not_dunders_or_modules(record):
    trace = record(PROGRAMS / "callbacks.py").trace
    module_steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    names = set().union(*(s.values for s in module_steps))
    assert {"words", "by_length"} <= names
    assert not any(n.startswith("__") for n in names)


def test_function_steps_show_locals_and_the_globals_they_read(record):
    trace = record(PROGRAMS / "recursion.py").trace
    fib_steps = [s for s in trace.steps() if s.call.function == "fib" and s.line != 4]
    assert fib_steps and all("n" in s.values for s in fib_steps)
    assert all(decode_value(s.values["BASE"], trace) == 2 for s in fib_steps)  # global data it reads
    # not the functions it calls, nor builtins, nor dunders
    assert not any({"fib", "print", "__name__"} & set(s.values) for s in fib_steps)


def test_library_code_is_not_recorded_but_callbacks_into_the_program_are(record):
    trace = record(PROGRAMS / "callbacks.py").trace
    paths = trace.paths
    assert paths == [str(PROGRAMS / "callbacks.py")]
    by_length = calls_named(trace, "by_length")
    assert len(by_length) == 6
    assert [decode_value(c.return_value, trace) for c in by_length[3:]] == [1, 2, 3]


def test_recursion_is_balanced(record):
    trace = record(PROGRAMS / "recursion.py").trace
    fibs = calls_named(trace, "fib")
    assert len(fibs) == 1973
    assert decode_value(fibs[0].return_value, trace) == 610
    assert max(c.depth for c in fibs) >= 15


def test_generator_resumes_are_calls_and_yields_are_returns(record):
    trace = record(PROGRAMS / "generators.py").trace
    countdown = calls_named(trace, "countdown")
    assert [decode_value(c.return_value, trace) for c in countdown] == [3, 2, 1, None]


def test_sibling_module_imported_from_another_directory(record, tmp_path):
    result = record(PROGRAMS / "subdir" / "uses_sibling.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"
    names = [c.function for c in result.trace.calls()]
    assert "<helper_sibling>" in names and "double" in names
    assert str(PROGRAMS / "subdir" / "helper_sibling.py") in result.trace.paths


def test_threads_pair_each_call_with_its_own_return(record):
    result = record(PROGRAMS / "threads.py")
    assert result.returncode == 0, result.stderr
    trace = result.trace
    works = calls_named(trace, "work")
    assert len(works) >= 4
    finished = [c for c in works if c.return_value and c.return_value.get("kind") == "Int"]
    k_of = {decode_value(c.return_value, trace) // 19900 for c in finished}
    assert k_of == {0, 1, 2, 3}
    assert trace.events_of("ThreadStart") and trace.events_of("ThreadExit")


def test_the_toplevel_return_carries_the_exit_status(record):
    trace = record(PROGRAMS / "exit_with.py", "int").trace
    assert trace.events[-1] == {"Return": {"return_value": {"kind": "Int", "type_id": trace.events[-1]["Return"]["return_value"]["type_id"], "i": 3}}}


def test_side_files(record):
    result = record(PROGRAMS / "args_kinds.py", "x", "--y")
    trace = result.trace
    metadata = trace.metadata
    assert metadata["program"] == str(PROGRAMS / "args_kinds.py")
    assert metadata["args"] == ["x", "--y"]
    assert metadata["recorder"]["name"] == "timelapse"
    assert metadata["python"]["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert metadata["process_exit_status"] == 0
    assert metadata["start_time"] <= metadata["end_time"]
    copy = result.out / "files" / str(PROGRAMS / "args_kinds.py").lstrip("/")
    assert copy.read_text() == (PROGRAMS / "args_kinds.py").read_text()


def _recorder_in(folder):
    """A Recorder over a fresh writer, never started: for its stream-ending methods."""
    from timelapse.encoder import ValueEncoder
    from timelapse.monitor import Recorder
    from timelapse.scope import Scope
    from timelapse.writer import TraceWriter

    writer = TraceWriter(folder, "/nonexistent/prog/main.py")
    recorder = Recorder(writer, ValueEncoder(writer.type_id), Scope(()), on_failure=lambda exc: None)
    return recorder, writer


def test_end_stream_closes_open_calls_then_the_error_then_the_toplevel(tmp_path):
    import json

    recorder, writer = _recorder_in(tmp_path)
    recorder.threads.begin(1, 0).stack.extend(["f", "g"])  # two calls open above <toplevel>
    assert recorder.open_calls == 3
    recorder.end_stream("<os._exit>", 4, "Traceback: boom")
    writer.close({})
    events = json.loads((tmp_path / "trace.json").read_text())
    stop_type = next(i for i, e in enumerate(e for e in events if "Type" in e)
                     if e["Type"]["lang_type"] == "<recording stopped>")
    int_type = next(i for i, e in enumerate(e for e in events if "Type" in e)
                    if e["Type"]["lang_type"] == "int")
    returns = [e for e in events if "Return" in e]
    assert returns[:2] == [{"Return": {"return_value": {"kind": "Raw", "type_id": stop_type,
                                                        "r": "<os._exit>"}}}] * 2
    assert events[-2] == {"Event": {"kind": 11, "metadata": "", "content": "Traceback: boom"}}
    assert events[-1] == {"Return": {"return_value": {"kind": "Int", "type_id": int_type, "i": 4}}}


def test_end_stream_without_status_or_error_returns_none(tmp_path):
    import json

    recorder, writer = _recorder_in(tmp_path)
    recorder.end_stream("<recording stopped>", None, None)
    writer.close({})
    events = json.loads((tmp_path / "trace.json").read_text())
    assert not any("Event" in e for e in events)
    assert [e for e in events if "Return" in e] == [{"Return": {"return_value": {"kind": "None", "type_id": 0}}}]

"""Tests for the checker's streaming pass (issue 9, item 23) and rule step-outside-function (item 24)."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

from conftest import PROGRAMS, opening_events, run_timelapse, write_trace_folder

from timelapse.checker import LIMIT_PER_RULE, check_folder, run_check

METADATA = {"workdir": "/nonexistent/prog", "program": "/nonexistent/prog/main.py", "args": []}


def write_big_trace(folder: Path, steps: int, *, bad: bool = False) -> Path:
    """A valid trace of ``steps`` Steps, each with a Value holding a 300-character string, written
    as the recorder does (one event after another, never the whole list in memory)."""
    folder = write_trace_folder(folder, opening_events(), metadata=METADATA, stream=False)
    events = [
        *opening_events(),
        {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}},  # TypeId 2
        {"VariableName": "text"},
    ]
    with open(folder / "trace.json", "w", encoding="utf-8") as f:
        f.write("[\n" + ",".join(json.dumps(e) for e in events))
        for i in range(steps):
            text = f"{i:08d} ], {{ \" é " + "x" * 280
            value = {"kind": "String", "type_id": 2, "text": text}
            step = {"Step": {"path_id": 0, "line": 1 + i % 50}}
            f.write(f",\n{json.dumps(step)},{json.dumps({'Value': {'variable_id': 0, 'value': value}})}")
            if bad:
                f.write(',{"Return": {"return_value": {"kind": "None", "type_id": 0}}}')
        if not bad:
            f.write(',{"Return": {"return_value": {"kind": "None", "type_id": 0}}}')
        f.write("\n]\n")
    return folder


def test_a_big_trace_is_checked_in_bounded_memory(tmp_path):
    folder = write_big_trace(tmp_path / "t", 120_000)
    size = (folder / "trace.json").stat().st_size
    assert size > 40_000_000
    tracemalloc.start()
    try:
        out = io.StringIO()
        code = run_check(folder, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (code, out.getvalue()) == (0, f"{folder}: valid trace ({7 + 2 * 120_000 + 1} events)\n")
    assert peak < size / 5 and peak < 20_000_000, (peak, size)


def test_millions_of_violations_keep_a_bounded_report(tmp_path):
    folder = write_big_trace(tmp_path / "t", 30_000, bad=True)
    tracemalloc.start()
    try:
        violations = check_folder(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # each Return after the first closes nothing: 29 999 'unbalanced', and their Steps and Values come after <toplevel> returned
    rules = {v.rule: v.suppressed for v in violations if v.suppressed}
    assert rules == {"unbalanced": 29_999 - LIMIT_PER_RULE, "after-toplevel": 2 * 29_999 - LIMIT_PER_RULE}
    assert len(violations) == 2 * LIMIT_PER_RULE + 2
    assert peak < 20_000_000


def test_truncated_trace_is_one_error_line(tmp_path):
    folder = write_big_trace(tmp_path / "t", 10)
    data = (folder / "trace.json").read_bytes()
    for cut in (len(data) // 2, data.index(b"x" * 100), data.rindex(b",") + 1, len(data) - 3):
        (folder / "trace.json").write_bytes(data[:cut])
        out, err = io.StringIO(), io.StringIO()
        assert run_check(folder, out=out, err=err) == 2
        assert out.getvalue() == ""
        (line,) = err.getvalue().splitlines()
        assert line.startswith("timelapse: error: trace.json is not valid JSON: the file ends")
        assert "truncated?" in line


def test_check_command_on_a_file_that_is_not_json(tmp_path):
    folder = write_big_trace(tmp_path / "t", 3)
    (folder / "trace.json").write_text("not json at all\n")
    result = run_timelapse(["check", str(folder)])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "timelapse: error: trace.json is not valid JSON: expected '[' at byte 0, found 'n'\n"
    )


def test_check_command_on_a_missing_folder(tmp_path):
    result = run_timelapse(["check", str(tmp_path / "nope")])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"timelapse: error: no such folder: {tmp_path / 'nope'}\n"


# -- step-outside-function --------------------------------------------------------------------------

SOURCE = """\
def f(a):
    return a + 1


@decorated
def g(b):
    square = lambda x: x * x
    return square(b) * 2


class K:
    y = 1


print(g(f(1)))
"""


def write_sourced_trace(tmp_path: Path, body: list, *, copy: bool = True) -> Path:
    """A trace of a program whose source really exists, copied into files/ as the recorder does.

    Functions: 0 <toplevel>, 1 <__main__> (line 1), 2 f (line 1), 3 g (line 5, its decorator),
    4 g.<locals>.<lambda> (line 7), 5 K (line 11). Variables: 0 a, 1 b."""
    program = tmp_path / "prog" / "main.py"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(SOURCE)
    events = [
        *opening_events(str(program)),
        {"Function": {"path_id": 0, "line": 1, "name": "<__main__>"}},
        {"Function": {"path_id": 0, "line": 1, "name": "f"}},
        {"Function": {"path_id": 0, "line": 5, "name": "g"}},
        {"Function": {"path_id": 0, "line": 7, "name": "g.<locals>.<lambda>"}},
        {"Function": {"path_id": 0, "line": 11, "name": "K"}},
        {"VariableName": "a"},
        {"VariableName": "b"},
        {"Step": {"path_id": 0, "line": 1}},
        {"Call": {"function_id": 1, "args": []}},
        {"Step": {"path_id": 0, "line": 1}},
        {"Step": {"path_id": 0, "line": 11}},
        {"Step": {"path_id": 0, "line": 11}},
        {"Call": {"function_id": 5, "args": []}},
        {"Step": {"path_id": 0, "line": 12}},
        {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
        {"Step": {"path_id": 0, "line": 15}},
        *body,
        {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
        {"Return": {"return_value": {"kind": "Int", "type_id": 1, "i": 0}}},
    ]
    folder = write_trace_folder(tmp_path / "t", events, metadata=METADATA)
    if copy:
        target = folder / "files" / str(program).lstrip("/")
        target.parent.mkdir(parents=True)
        target.write_text(SOURCE)
    return folder


def call(function_id, line, variable_id=None):
    args = [] if variable_id is None else [{"variable_id": variable_id, "value": {"kind": "Int", "type_id": 1, "i": 1}}]
    return [{"Step": {"path_id": 0, "line": line}}, {"Call": {"function_id": function_id, "args": args}}]


RETURN = {"Return": {"return_value": {"kind": "Int", "type_id": 1, "i": 2}}}
#: f(1), then g(2) whose lambda is called: every step inside its own function
GOOD_BODY = [
    *call(2, 1, 0), {"Step": {"path_id": 0, "line": 2}}, RETURN,
    {"Step": {"path_id": 0, "line": 15}},
    *call(3, 5, 1), {"Step": {"path_id": 0, "line": 7}}, {"Step": {"path_id": 0, "line": 8}},
    *call(4, 7), {"Step": {"path_id": 0, "line": 7}}, RETURN,
    {"Step": {"path_id": 0, "line": 8}}, RETURN,
]


def test_steps_inside_their_functions_are_valid(tmp_path):
    assert check_folder(write_sourced_trace(tmp_path, GOOD_BODY)) == []


def test_a_step_of_f_inside_a_call_of_g_is_reported(tmp_path):
    body = list(GOOD_BODY)
    at = body.index({"Step": {"path_id": 0, "line": 8}})
    body.insert(at, {"Step": {"path_id": 0, "line": 2}})  # f's return line, shown in g
    folder = write_sourced_trace(tmp_path, body)
    (violation,) = check_folder(folder)
    assert violation.rule == "step-outside-function"
    events = json.loads((folder / "trace.json").read_text())
    assert events[violation.index] == {"Step": {"path_id": 0, "line": 2}}
    program = tmp_path / "prog" / "main.py"
    assert str(violation).endswith(
        f"Step at {program}:2 is shown in a call of 'g', whose source is {program}:5-8:"
        " the step is attributed to the wrong call"
    )


def test_a_step_past_a_lambda_is_reported(tmp_path):
    body = list(GOOD_BODY)
    at = body.index(RETURN, body.index({"Call": {"function_id": 4, "args": []}}))
    body.insert(at, {"Step": {"path_id": 0, "line": 8}})  # g's line, shown in the lambda
    assert [v.rule for v in check_folder(write_sourced_trace(tmp_path, body))] == ["step-outside-function"]


def test_a_step_in_another_file_is_reported(tmp_path):
    body = [{"Path": "/nonexistent/other.py"}, *GOOD_BODY]
    body.insert(body.index(RETURN), {"Step": {"path_id": 1, "line": 2}})
    folder = write_sourced_trace(tmp_path, body)
    (folder / "trace_paths.json").write_text(json.dumps([str(tmp_path / "prog" / "main.py"), "/nonexistent/other.py"]))
    assert [v.rule for v in check_folder(folder)] == ["step-outside-function"]


def test_the_step_before_a_call_belongs_to_the_callee(tmp_path):
    """f's definition line, stepped right before f is called from inside g, is f's step (rule 3)."""
    body = [*call(3, 5, 1), {"Step": {"path_id": 0, "line": 8}}, *call(2, 1, 0), RETURN, RETURN]
    assert check_folder(write_sourced_trace(tmp_path, body)) == []


def test_a_retracted_step_is_not_reported(tmp_path):
    body = [*call(3, 5, 1), {"Step": {"path_id": 0, "line": 8}}, {"Step": {"path_id": 0, "line": 2}},
            "DropLastStep", RETURN]
    assert check_folder(write_sourced_trace(tmp_path, body)) == []


def test_without_a_source_copy_the_rule_is_skipped(tmp_path):
    body = [*call(3, 5, 1), {"Step": {"path_id": 0, "line": 2}}, RETURN]
    assert [v.rule for v in check_folder(write_sourced_trace(tmp_path / "a", body))] == ["step-outside-function"]
    assert check_folder(write_sourced_trace(tmp_path / "b", body, copy=False)) == []
    folder = write_sourced_trace(tmp_path / "c", body)
    next((folder / "files").rglob("main.py")).write_text("def f(:\n")  # a copy that does not parse
    assert check_folder(folder) == []


def test_a_recorded_program_with_nested_and_one_line_definitions(record, tmp_path):
    """The rule on a real recording: decorators, lambdas, a generator, a class body, a closure."""
    result = record(PROGRAMS / "chk_definitions.py")
    assert result.returncode == 0 and result.stdout == "[1, 4, 9] 10 3 ok\n"
    assert check_folder(result.out) == []

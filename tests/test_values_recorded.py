"""End to end: values in a recorded program are faithful, safe, bounded and deterministic."""

from __future__ import annotations

import os

from conftest import PROGRAMS, run_python

from timelapse.config import DEFAULT_MAX_ITEMS
from timelapse.reader import decode_value, stream_path


def module_values(trace):
    steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    return steps[-1].values


def test_huge_values_across_many_steps_make_a_small_trace(record):
    result = record(PROGRAMS / "values_big.py")
    assert result.stdout == "44850 1000000\n"
    size = os.path.getsize(stream_path(result.out))
    assert size < 5_000_000, size
    values = module_values(result.trace)
    elements = values["big_list"]["elements"]
    assert len(elements) == DEFAULT_MAX_ITEMS + 1 and f"{200_000 - DEFAULT_MAX_ITEMS:,} more" in elements[-1]["r"]
    assert values["big_text"]["text"].endswith("… (1,000,000 chars)")


def test_capturing_values_never_runs_the_programs_code(record):
    expected = run_python([str(PROGRAMS / "values_tricky.py")])
    result = record(PROGRAMS / "values_tricky.py", options=("-q",))
    assert result.stdout == expected.stdout == "seen 0 a 3 1\n"
    values = module_values(result.trace)
    loud = values["loud"]
    assert loud["kind"] == "Struct"
    assert result.trace.types[loud["type_id"]]["lang_type"] == "__main__.Loud"
    assert decode_value(loud, result.trace) == {"name": "a"}


def test_self_containing_containers_have_a_cycle_marker(record):
    values = module_values(record(PROGRAMS / "values_tricky.py").trace)
    assert values["cycle"]["elements"][2]["r"] == "<cycle: list>"
    (pair,) = values["table"]["elements"]
    assert pair["elements"][1]["r"] == "<cycle: dict>"


def test_sets_are_in_a_stable_order_and_recording_is_deterministic(record, tmp_path):
    runs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = run_python(["-m", "timelapse", "record", "-q", "-o", str(out),
                             str(PROGRAMS / "values_tricky.py")], env=env)
        assert result.returncode == 0, result.stderr
        runs.append(stream_path(out).read_bytes())
    assert runs[0] == runs[1]
    values = module_values(record(PROGRAMS / "values_tricky.py").trace)
    assert [e["text"] for e in values["names"]["elements"]] == ["apple", "fig", "pear"]


def test_closure_cells_and_free_variables_are_locals(record):
    trace = record(PROGRAMS / "values_tricky.py").trace
    inner_steps = [s for s in trace.steps() if s.call.function == "scope_demo.<locals>.inner"]
    assert {"step", "outer", "limit"} <= set(inner_steps[-1].values)
    outer_steps = [s for s in trace.steps() if s.call.function == "scope_demo"]
    assert {"limit", "outer", "inner", "made"} <= set(outer_steps[-1].values)


def test_the_last_lines_effect_is_visible(record):
    trace = record(PROGRAMS / "values_tricky.py").trace
    steps = [s for s in trace.steps() if s.call.function == "last_line_effect"]
    last = steps[-1]
    assert last.line == 34
    assert decode_value(last.values["after"], trace) == 42


def test_limits_are_options(record):
    result = record(PROGRAMS / "values_big.py", options=("--max-items", "3", "--max-string", "10"))
    values = module_values(result.trace)
    elements = values["big_list"]["elements"]
    assert [decode_value(e, result.trace) for e in elements[:3]] == [0, 1, 2]
    assert "199,997 more" in elements[3]["r"]
    assert values["big_text"]["text"] == "xxxxxxxxxx… (1,000,000 chars)"


def test_an_object_met_twice_in_a_step_is_the_same_and_changes_are_seen(record, tmp_path):
    program = tmp_path / "shared.py"
    program.write_text(
        "class Box:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "boxes = [Box(1), Box(2)]\n"
        "by_v = {b.v: b for b in boxes}\n"
        "boxes[0].v = 10\n"
        "done = True\n"
    )
    trace = record(program).trace
    steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    before = next(s for s in steps if s.line == 6).values  # before `boxes[0].v = 10` runs
    after = next(s for s in steps if s.line == 7).values
    assert decode_value(before["boxes"], trace) == [{"v": 1}, {"v": 2}]
    assert decode_value(after["boxes"], trace) == [{"v": 10}, {"v": 2}]
    assert [v for _, v in decode_value(after["by_v"], trace)] == [{"v": 10}, {"v": 2}]


def test_the_node_budget_is_an_option(record):
    result = record(PROGRAMS / "values_big.py", options=("--max-nodes", "5"))
    elements = module_values(result.trace)["big_list"]["elements"]
    assert len(elements) <= 6 and "more" in elements[-1]["r"]

"""Tests for timelapse.checker: every rule, on small hand-built traces that break exactly that rule."""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import pytest
from conftest import PROGRAMS, HAND_MADE_LIB, HAND_MADE_PROG, opening_events, run_timelapse, write_trace_folder

from timelapse.checker import LIMIT_PER_RULE, Violation, check_folder, check_trace, run_check
from timelapse.reader import BIN_MAGIC, Trace, TraceUnreadable

PROG = HAND_MADE_PROG
LIB = HAND_MADE_LIB


def INT(i, type_id=1):
    return {"kind": "Int", "type_id": type_id, "i": i}


NONE = {"kind": "None", "type_id": 0}
METADATA = {"workdir": "/nonexistent/prog", "program": PROG, "args": []}

# A valid trace of:  main.py: 1 x = 5 / 2 print(f(x)) / 3 def f(a): / 4 return a + 1
VALID = [
    *opening_events(),  # 0-4: Path, <toplevel> Function and Call, None and int Types
    {"Function": {"path_id": 0, "line": 1, "name": "<__main__>"}},  # 5
    {"Step": {"path_id": 0, "line": 1}},  # 6
    {"Call": {"function_id": 1, "args": []}},  # 7
    {"Step": {"path_id": 0, "line": 1}},  # 8
    {"Step": {"path_id": 0, "line": 2}},  # 9
    {"VariableName": "x"},  # 10
    {"Value": {"variable_id": 0, "value": INT(5)}},  # 11
    {"Function": {"path_id": 0, "line": 3, "name": "f"}},  # 12
    {"VariableName": "a"},  # 13
    {"Step": {"path_id": 0, "line": 3}},  # 14
    {"Call": {"function_id": 2, "args": [{"variable_id": 1, "value": INT(5)}]}},  # 15
    {"Step": {"path_id": 0, "line": 4}},  # 16
    {"Value": {"variable_id": 1, "value": INT(5)}},  # 17
    {"Return": {"return_value": INT(6)}},  # 18
    {"Step": {"path_id": 0, "line": 2}},  # 19
    {"Value": {"variable_id": 0, "value": INT(5)}},  # 20
    {"Event": {"kind": 0, "metadata": "", "content": "6\n"}},  # 21
    {"Return": {"return_value": NONE}},  # 22
    {"Return": {"return_value": INT(0)}},  # 23
]


def write_trace(folder: Path, events, *, paths=None, metadata=None, stream=True) -> Path:
    """Write a trace folder; the side files default to what matches ``events``."""
    metadata = METADATA if metadata is None else metadata
    return write_trace_folder(folder, events, paths=paths, metadata=metadata, stream=stream)


def valid():
    return copy.deepcopy(VALID)


def found(tmp_path, events, **kwargs):
    """(rule, index) of each violation of a trace."""
    return [(v.rule, v.index) for v in check_folder(write_trace(tmp_path / "t", events, **kwargs))]


def messages(tmp_path, events, **kwargs):
    return [str(v) for v in check_folder(write_trace(tmp_path / "t", events, **kwargs))]


def with_value(record, at=11):
    """The valid trace with the Value at ``at`` replaced by ``record``."""
    events = valid()
    events[at]["Value"]["value"] = record
    return events


# -- a valid trace --------------------------------------------------------------------------------


def test_valid_trace_has_no_violations(tmp_path):
    assert found(tmp_path, valid()) == []


def test_run_check_valid(tmp_path):
    folder = write_trace(tmp_path / "t", valid())
    out = io.StringIO()
    assert run_check(folder, out=out) == 0
    assert out.getvalue() == f"{folder}: valid trace (24 events)\n"


def test_rich_valid_trace(tmp_path):
    """Every value kind, a struct type, threads and DropLastStep, all used correctly."""
    events = valid()
    extra_types = [
        {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}},  # 2
        {"Type": {"kind": 6, "lang_type": "Point",
                  "specific_info": {"kind": "Struct", "fields": [
                      {"name": "x", "type_id": 1}, {"name": "y", "type_id": 1}]}}},  # 3
        {"Type": {"kind": 14, "lang_type": "ref",
                  "specific_info": {"kind": "Pointer", "dereference_type_id": 1}}},  # 4
    ]
    values = [
        {"kind": "Float", "type_id": 1, "f": "2.5"},
        {"kind": "Float", "type_id": 1, "f": "-inf"},
        {"kind": "Float", "type_id": 1, "f": "nan"},
        {"kind": "Float", "type_id": 1, "f": "1e300"},
        {"kind": "Bool", "type_id": 1, "b": True},
        {"kind": "String", "type_id": 2, "text": "héllo"},
        {"kind": "Sequence", "type_id": 1, "is_slice": False, "elements": [INT(1), NONE]},
        {"kind": "Tuple", "type_id": 1, "elements": []},
        {"kind": "Struct", "type_id": 3, "field_values": [INT(1), INT(2)]},
        {"kind": "Variant", "type_id": 1, "discriminator": "Some", "contents": INT(3)},
        {"kind": "Reference", "type_id": 4, "dereferenced": INT(3), "address": 2**64 - 1,
         "mutable": False},
        {"kind": "Raw", "type_id": 1, "r": "<object>"},
        {"kind": "Error", "type_id": 1, "msg": "repr failed"},
        {"kind": "BigInt", "type_id": 1, "b": "AQAAAAAAAAAA", "negative": True},
        INT(-(2**63)),
        INT(2**63 - 1),
    ]
    value_events = [{"Value": {"variable_id": 0, "value": v}} for v in values]
    # edit from the end so that the earlier indexes stay put
    events[20:21] = value_events
    events[19:19] = [{"Step": {"path_id": 0, "line": 5}}, "DropLastStep"]
    events.insert(7, {"ThreadStart": 1})
    events[5:5] = extra_types
    assert found(tmp_path, events) == []


# -- event envelopes and variants -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, rule",
    [
        (42, "event-shape"),
        ({"Step": {"path_id": 0, "line": 2}, "Value": {}}, "event-shape"),
        ({}, "event-shape"),
        ({"DropLastStep": None}, "event-shape"),
        ({"Frobnicate": {}}, "unknown-variant"),
        ("DropFirstStep", "unknown-variant"),
        ({"Assignment": {"to": 0, "pass_by": "Value", "from": {"kind": "Simple", "data": 0}}},
         "unsupported-variant"),
        ({"BindVariable": {"variable_id": 0, "place": 1}}, "unsupported-variant"),
        ({"Asm": ["nop"]}, "unsupported-variant"),
        ({"Variable": "legacy"}, "unsupported-variant"),  # still defines VariableId 1
    ],
)
def test_event_envelopes(tmp_path, bad, rule):
    events = valid()
    events.insert(12, bad)
    result = found(tmp_path, events)
    assert (rule, 12) in result
    assert {r for r, _ in result} == {rule}


def test_drop_last_step_bare_string_is_fine(tmp_path):
    events = valid()
    events.insert(10, "DropLastStep")  # retracts the Step at 9; 8 is still standing
    assert found(tmp_path, events) == []


@pytest.mark.parametrize(
    "index, payload, fragment",
    [
        (6, {"Step": {"path_id": 0}}, "Step lacks 'line'"),
        (6, {"Step": {"path_id": 0, "line": 1.0}}, "Step line must be a 64-bit integer"),
        (6, {"Step": [0, 1]}, "Step payload must be an object"),
        (5, {"Function": {"path_id": 0, "line": 1, "name": 7}}, "Function name must be a string"),
        (11, {"Value": {"variable_id": 0}}, "Value lacks 'value'"),
        (15, {"Call": {"function_id": 2}}, "Call lacks 'args'"),
        (15, {"Call": {"function_id": 2, "args": [{"value": INT(5)}]}}, "Call arg 0 must be an object"),
        (18, {"Return": {}}, "Return lacks 'return_value'"),
        (18, {"Return": {"return_value": INT(6)}, "x": 1}, None),
        (21, {"Event": {"kind": 14, "metadata": "", "content": ""}}, "Event kind must be an integer 0..13"),
        (21, {"Event": {"kind": 0, "metadata": {}, "content": ""}}, "Event metadata must be a string"),
        (21, {"Event": {"kind": 0, "metadata": "", "content": None}}, "Event content must be a string"),
        (4, {"Type": {"kind": 34, "lang_type": "int", "specific_info": {"kind": "None"}}},
         "Type kind must be an integer 0..33"),
        (4, {"Type": {"kind": 7, "lang_type": "int"}}, "Type lacks 'specific_info'"),
        (4, {"Type": {"kind": 7, "lang_type": "int", "specific_info": {"kind": "Union"}}},
         "unknown Type specific_info kind"),
    ],
)
def test_payload_shapes(tmp_path, index, payload, fragment):
    events = valid()
    events[index] = payload
    vs = check_folder(write_trace(tmp_path / "t", events))
    if fragment is None:  # two keys: the envelope is wrong, not the payload
        assert [(v.rule, v.index) for v in vs] == [("unbalanced", 2), ("event-shape", index)]
        return
    assert (vs[0].rule, vs[0].index) == ("payload-shape", index)
    assert fragment in vs[0].message


def test_thread_ids(tmp_path):
    events = valid()
    events.insert(7, {"ThreadSwitch": -1})
    events.insert(8, {"ThreadExit": 2**64})
    events.insert(9, {"ThreadStart": 2**64 - 1})
    assert found(tmp_path, events) == [("payload-shape", 7), ("payload-shape", 8)]


# -- rule 1: define before use --------------------------------------------------------------------


@pytest.mark.parametrize(
    "index, event, fragment",
    [
        (6, {"Step": {"path_id": 1, "line": 1}}, "Step path_id 1 is used before its Path event"),
        (5, {"Function": {"path_id": 3, "line": 1, "name": "g"}}, "Function path_id 3"),
        (7, {"Call": {"function_id": 2, "args": []}}, "Call function_id 2 is used before its Function"),
        (11, {"Value": {"variable_id": 1, "value": INT(5)}}, "Value variable_id 1 is used before its VariableName"),
        (15, {"Call": {"function_id": 2, "args": [{"variable_id": 2, "value": INT(5)}]}},
         "Call arg 0 variable_id 2"),
        (11, {"Value": {"variable_id": 0, "value": INT(5, type_id=2)}}, "value of 'x': Int type_id 2"),
        (11, {"Value": {"variable_id": 0, "value": {"kind": "Tuple", "type_id": 1, "elements": [
            INT(1), {"kind": "Sequence", "type_id": 1, "is_slice": False, "elements": [INT(1, 9)]}]}}},
         "value of 'x'.elements[1].elements[0]: Int type_id 9"),
        (18, {"Return": {"return_value": {"kind": "Variant", "type_id": 1, "discriminator": "A",
                                          "contents": INT(1, 5)}}},
         "return value.contents: Int type_id 5"),
        (4, {"Type": {"kind": 6, "lang_type": "P", "specific_info": {
            "kind": "Struct", "fields": [{"name": "x", "type_id": 1}]}}}, "Struct field 0 type_id 1"),
        (4, {"Type": {"kind": 23, "lang_type": "P", "specific_info": {
            "kind": "Pointer", "dereference_type_id": 4}}}, "Pointer dereference_type_id 4"),
    ],
)
def test_define_before_use(tmp_path, index, event, fragment):
    events = valid()
    events[index] = event
    vs = check_folder(write_trace(tmp_path / "t", events))
    first = vs[0]
    assert (first.rule, first.index) == ("undefined-id", index), vs
    assert fragment in first.message


def test_type_defined_after_its_use(tmp_path):
    events = valid()
    events[3:3] = [
        {"Step": {"path_id": 0, "line": 1}},
        {"VariableName": "early"},
        {"Value": {"variable_id": 0, "value": INT(5)}},  # 5: TypeId 1 is defined at 7
    ]
    assert found(tmp_path, events) == [("undefined-id", 5)]


# -- rule 2: the top-level call first -------------------------------------------------------------


def test_must_start_with_path(tmp_path):
    events = valid()
    events.insert(0, {"VariableName": "z"})
    result = found(tmp_path, events)
    assert ("toplevel", 0) in result and ("toplevel", 1) in result and ("toplevel", 2) in result


def test_toplevel_function_shape(tmp_path):
    events = valid()
    events[1] = {"Function": {"path_id": 0, "line": 1, "name": "<module>"}}
    assert messages(tmp_path, events) == [
        'event 1: the second event must be Function {"path_id": 0, "line": 1, "name": "<toplevel>"} (rule 2)'
    ]


def test_toplevel_call_has_no_args(tmp_path):
    events = valid()
    events[2] = {"Call": {"function_id": 0, "args": [{"variable_id": 0, "value": NONE}]}}
    events.insert(2, {"VariableName": "argv"})
    result = found(tmp_path, events)
    assert ("toplevel", 2) in result


def test_step_before_first_call(tmp_path):
    events = valid()
    events.insert(2, {"Step": {"path_id": 0, "line": 1}})
    assert messages(tmp_path, events) == [
        'event 2: the third event must be Call {"function_id": 0, "args": []} (rule 2)',
        "event 2: Step before the first Call: the backend would invent a function and shift"
        " every FunctionId (rule 2)",
    ]


def test_type_zero_must_be_none(tmp_path):
    events = valid()
    events[3], events[4] = events[4], events[3]
    result = found(tmp_path, events)
    assert result[0] == ("toplevel", 3)


def test_empty_stream(tmp_path):
    assert [str(v) for v in check_folder(write_trace(tmp_path / "t", []))] == [
        "trace.json: the event stream is empty"
    ]


# -- rule 3: a Step right before every other Call -------------------------------------------------


def test_call_without_step(tmp_path):
    events = valid()
    events[14] = {"Event": {"kind": 0, "metadata": "", "content": "x"}}
    events.insert(12, {"Return": {"return_value": NONE}})  # <__main__> returns ...
    events.insert(13, {"Call": {"function_id": 1, "args": []}})  # ... and is re-entered at once
    assert found(tmp_path, events) == [("step-before-call", 13), ("step-before-call", 17)]


def test_call_after_return_without_step(tmp_path):
    events = valid()
    # after f returns, call it again at once: the last Step is before the Return
    events[19:19] = [
        {"Call": {"function_id": 2, "args": []}},
        {"Return": {"return_value": INT(6)}},
    ]
    assert found(tmp_path, events) == [("step-before-call", 19)]


def test_values_between_step_and_call_are_fine(tmp_path):
    events = valid()
    events.insert(15, {"Value": {"variable_id": 0, "value": INT(5)}})
    assert found(tmp_path, events) == []


def test_step_before_call_in_wrong_file(tmp_path):
    events = valid()
    events.insert(12, {"Path": LIB})
    events[13] = {"Function": {"path_id": 1, "line": 3, "name": "f"}}
    (violation,) = check_folder(write_trace(tmp_path / "t", events))
    assert (violation.rule, violation.index) == ("step-before-call", 16)
    assert violation.message == (
        f"the Step before Call of 'f' is at {PROG}:3, not at its definition {LIB}:3 (rule 3)"
    )


def test_step_before_call_at_wrong_line(tmp_path):
    events = valid()
    events[14] = {"Step": {"path_id": 0, "line": 2}}  # the call site, not the def line
    assert found(tmp_path, events) == [("step-before-call", 15)]


def test_dropped_step_before_call_does_not_count(tmp_path):
    events = valid()
    events.insert(15, "DropLastStep")  # retracts the Step at 14: the last one is now at 9
    assert found(tmp_path, events) == [("step-before-call", 16)]


# -- rule 5: balanced calls -----------------------------------------------------------------------


def test_return_with_no_open_call(tmp_path):
    events = valid()
    events.append({"Return": {"return_value": NONE}})
    assert messages(tmp_path, events) == ["event 24: Return with no open Call (rule 5)"]


def test_stream_ends_with_open_calls(tmp_path):
    events = valid()[:22]
    assert messages(tmp_path, events) == [
        "event 7: Call of '<__main__>' never returns: the stream ends with 2 open calls (rule 5)"
    ]


def test_events_after_toplevel_return(tmp_path):
    events = valid()
    events += [
        {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}},
        {"Step": {"path_id": 0, "line": 9}},
        {"Event": {"kind": 11, "metadata": "", "content": "late"}},
    ]
    assert found(tmp_path, events) == [("after-toplevel", 25), ("after-toplevel", 26)]


# -- steps and values -----------------------------------------------------------------------------


def test_drop_last_step_needs_two_steps(tmp_path):
    events = valid()
    events.insert(7, "DropLastStep")
    result = found(tmp_path, events)
    assert result[0] == ("drop-last-step", 7)


def test_drop_last_step_counts_earlier_drops(tmp_path):
    events = valid()
    events[9:9] = ["DropLastStep"]  # steps 6, 8 -> 6
    events[10:10] = ["DropLastStep"]  # only step 6 left: refused
    assert ("drop-last-step", 10) in found(tmp_path, events)


def test_value_before_any_step(tmp_path):
    events = valid()
    events[5:5] = [{"VariableName": "x"}, {"Value": {"variable_id": 0, "value": INT(1)}}]
    assert ("value-before-step", 6) in found(tmp_path, events)


# -- ValueRecords ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, fragment",
    [
        (INT(2**63), "Int i 9223372036854775808 is outside the signed 64-bit range"),
        (INT(-(2**63) - 1), "outside the signed 64-bit range"),
        ({"kind": "Int", "type_id": 1, "i": 5.0}, "Int i must be an integer, not a number"),
        ({"kind": "Int", "type_id": 1, "i": True}, "Int i must be an integer, not a boolean"),
        ({"kind": "Int", "i": 5}, "Int lacks 'type_id'"),
        ({"kind": "Float", "type_id": 1, "f": 2.5}, "Float f must be a string"),
        ({"kind": "Float", "type_id": 1, "f": "2,5"}, "is not a float literal"),
        ({"kind": "Float", "type_id": 1, "f": "1_000"}, "is not a float literal"),
        ({"kind": "Bool", "type_id": 1, "b": 1}, "Bool b must be a boolean"),
        ({"kind": "String", "type_id": 1, "text": None}, "String text must be a string"),
        ({"kind": "Sequence", "type_id": 1, "elements": []}, "is_slice must be a boolean"),
        ({"kind": "Sequence", "type_id": 1, "is_slice": False, "elements": {}}, "elements must be an array"),
        ({"kind": "Tuple", "type_id": 1}, "Tuple elements must be an array"),
        ({"kind": "Variant", "type_id": 1, "discriminator": 3, "contents": NONE}, "discriminator must be a string"),
        ({"kind": "Variant", "type_id": 1, "discriminator": "A"}, "Variant lacks 'contents'"),
        ({"kind": "Reference", "type_id": 1, "dereferenced": NONE, "address": -1, "mutable": True},
         "address must be an unsigned 64-bit integer"),
        ({"kind": "Reference", "type_id": 1, "dereferenced": NONE, "address": 1, "mutable": 0},
         "mutable must be a boolean"),
        ({"kind": "Reference", "type_id": 1, "address": 1, "mutable": False}, "lacks 'dereferenced'"),
        ({"kind": "Raw", "type_id": 1, "r": 5}, "Raw r must be a string"),
        ({"kind": "Error", "type_id": 1}, "Error msg must be a string"),
        ({"kind": "BigInt", "type_id": 1, "b": "AQ", "negative": False}, "is not standard base64"),
        ({"kind": "BigInt", "type_id": 1, "b": "AR==", "negative": False}, "not canonical"),
        ({"kind": "BigInt", "type_id": 1, "b": "AQ==", "negative": "no"}, "negative must be a boolean"),
        ({"kind": "Char", "type_id": 1, "c": "x"}, "Char is read by newer readers only"),
        ({"kind": "Complex", "type_id": 1}, "unknown ValueRecord kind 'Complex'"),
        ([1, 2], "a ValueRecord must be an object, not an array"),
    ],
)
def test_value_shapes(tmp_path, record, fragment):
    (violation,) = check_folder(write_trace(tmp_path / "t", with_value(record)))
    assert (violation.rule, violation.index) == ("value-shape", 11)
    assert violation.message.startswith("value of 'x'")
    assert fragment in violation.message


def test_nested_value_location_is_named(tmp_path):
    record = {"kind": "Sequence", "type_id": 1, "is_slice": False,
              "elements": [INT(1), {"kind": "Tuple", "type_id": 1, "elements": [INT(2), INT(2**64)]}]}
    (violation,) = check_folder(write_trace(tmp_path / "t", with_value(record)))
    assert violation.message.startswith("value of 'x'.elements[1].elements[1]: Int i")


def test_deeply_nested_value_does_not_recurse(tmp_path):
    record = INT(2**64)
    for _ in range(10_000):  # deeper than any recursion limit
        record = {"kind": "Tuple", "type_id": 1, "elements": [record]}
    trace = Trace(tmp_path, with_value(record), METADATA, [PROG], "trace.json")
    (violation,) = check_trace(trace)
    assert (violation.rule, violation.index) == ("value-shape", 11)
    assert violation.message.endswith("Int i 18446744073709551616 is outside the signed 64-bit range; use BigInt")


@pytest.mark.parametrize(
    "where, event_index",
    [("Value", 11), ("Call", 15), ("Return", 18)],
)
def test_cell_values_are_refused_everywhere(tmp_path, where, event_index):
    cell = {"kind": "Cell", "place": 3}
    nested = {"kind": "Sequence", "type_id": 1, "is_slice": False, "elements": [INT(1), cell]}
    events = valid()
    if where == "Value":
        events[11]["Value"]["value"] = nested
    elif where == "Call":
        events[15]["Call"]["args"][0]["value"] = nested
    else:
        events[18]["Return"]["return_value"] = cell
    assert found(tmp_path, events) == [("cell-value", event_index)]


def test_struct_value_field_count(tmp_path):
    events = valid()
    events.insert(5, {"Type": {"kind": 6, "lang_type": "P", "specific_info": {
        "kind": "Struct", "fields": [{"name": "x", "type_id": 1}, {"name": "y", "type_id": 1}]}}})
    events[12]["Value"]["value"] = {"kind": "Struct", "type_id": 2, "field_values": [INT(1)]}
    (violation,) = check_folder(write_trace(tmp_path / "t", events))
    assert (violation.rule, violation.index) == ("struct-type", 12)
    assert "1 field_values but its Type 2 has 2 fields" in violation.message


def test_struct_value_needs_struct_type(tmp_path):
    events = valid()
    events[11]["Value"]["value"] = {"kind": "Struct", "type_id": 1, "field_values": []}
    assert found(tmp_path, events) == [("struct-type", 11)]


def test_struct_type_must_be_kind_6(tmp_path):
    events = valid()
    events.insert(5, {"Type": {"kind": 27, "lang_type": "P", "specific_info": {
        "kind": "Struct", "fields": [{"name": "x", "type_id": 1}]}}})
    events[12]["Value"]["value"] = {"kind": "Struct", "type_id": 2, "field_values": [INT(1)]}
    assert found(tmp_path, events) == [("struct-type", 12)]


# -- strings --------------------------------------------------------------------------------------


def test_lone_surrogates_are_refused(tmp_path):
    events = with_value({"kind": "String", "type_id": 1, "text": "bad \udc80 byte"})
    events[10] = {"VariableName": "\ud800"}
    assert found(tmp_path, events) == [("bad-string", 10), ("value-shape", 11)]


def test_lone_surrogate_in_path(tmp_path):
    events = valid()
    events[0] = {"Path": "/tmp/\udcff.py"}
    assert ("bad-string", 0) in found(tmp_path, events)


# -- rule 7: threads ------------------------------------------------------------------------------


def test_return_on_another_thread(tmp_path):
    events = valid()
    events.insert(15, {"ThreadSwitch": 1})  # Call f made on thread 1
    events.insert(18, {"ThreadSwitch": 2})  # ... and its Return (now at 20) on thread 2
    assert found(tmp_path, events) == [("thread-mispair", 20)]


def test_threads_that_nest_properly(tmp_path):
    events = valid()
    events.insert(15, {"ThreadStart": 2})
    events.insert(19, {"ThreadExit": 2})
    assert found(tmp_path, events) == []


# -- side files -----------------------------------------------------------------------------------


def test_paths_file_must_match_path_events(tmp_path):
    assert messages(tmp_path, valid(), paths=[PROG, LIB]) == [
        "trace_paths.json: has 2 entries but the stream has 1 Path events"
    ]
    assert messages(tmp_path, valid(), paths=[LIB]) == [
        f"trace_paths.json: entry 0 is {LIB!r} but PathId 0 is {PROG!r}"
    ]


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"workdir": "/w", "args": []}, "trace_metadata.json: lacks 'program'"),
        ({"workdir": "/w", "program": PROG}, "trace_metadata.json: lacks 'args'"),
        ({"program": PROG, "args": []}, "trace_metadata.json: lacks 'workdir'"),
        ({"workdir": "/w", "program": PROG, "args": "a b"}, "trace_metadata.json: args must be an array of strings, not a string"),
        ({"workdir": "/w", "program": PROG, "args": ["a", 1]}, "trace_metadata.json: args[1] must be a string, not an integer"),
        ({"workdir": 1, "program": PROG, "args": []}, "trace_metadata.json: workdir must be a string, not an integer"),
    ],
)
def test_metadata_file(tmp_path, metadata, message):
    assert messages(tmp_path, valid(), metadata=metadata) == [message]


def test_metadata_extra_keys_are_allowed(tmp_path):
    metadata = {"workdir": "/w", "program": PROG, "args": ["-v"], "recorder": "timelapse"}
    assert found(tmp_path, valid(), metadata=metadata) == []


def test_source_copies(tmp_path):
    source = tmp_path / "src" / "main.py"
    source.parent.mkdir()
    source.write_text("x = 5\n")
    events = valid()
    events[0] = {"Path": str(source)}
    folder = write_trace(tmp_path / "t", events)
    assert check_folder(folder) == []  # no files/ folder: nothing to check
    (folder / "files").mkdir()
    (violation,) = check_folder(folder)
    assert (violation.rule, violation.index, violation.file) == ("source-copy", None, "files/")
    copy_path = folder / "files" / str(source).lstrip("/")
    assert f"files/{str(source).lstrip('/')}" in str(violation)
    copy_path.parent.mkdir(parents=True)
    copy_path.write_text("x = 5\n")
    assert check_folder(folder) == []


# -- limits and reporting -------------------------------------------------------------------------


def test_violations_of_one_rule_are_capped(tmp_path):
    events = valid() + [{"Return": {"return_value": NONE}}] * (LIMIT_PER_RULE + 50)
    violations = check_folder(write_trace(tmp_path / "t", events))
    assert len(violations) == LIMIT_PER_RULE + 1
    assert all(v.rule == "unbalanced" for v in violations)
    last = violations[-1]
    assert last.suppressed == 50 and last.index is None
    assert str(last) == "... and 50 more 'unbalanced' violations"


def test_run_check_invalid_output(tmp_path):
    events = valid() + [{"Return": {"return_value": NONE}}] * (LIMIT_PER_RULE + 2)
    folder = write_trace(tmp_path / "t", events, paths=[])
    out = io.StringIO()
    assert run_check(folder, out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "event 24: Return with no open Call (rule 5)"
    assert lines[LIMIT_PER_RULE - 1] == f"event {24 + LIMIT_PER_RULE - 1}: Return with no open Call (rule 5)"
    assert lines[LIMIT_PER_RULE] == "trace_paths.json: has 0 entries but the stream has 1 Path events"
    assert lines[LIMIT_PER_RULE + 1] == "... and 2 more 'unbalanced' violations"
    assert lines[-1] == f"{folder}: INVALID trace ({len(events)} events): {LIMIT_PER_RULE + 3} violations"
    assert len(lines) == LIMIT_PER_RULE + 3


def test_violation_str():
    assert str(Violation(12, "Return with no open Call")) == "event 12: Return with no open Call"
    assert str(Violation(None, "lacks 'program'", file="trace_metadata.json")) == (
        "trace_metadata.json: lacks 'program'"
    )


# -- unreadable folders ---------------------------------------------------------------------------


def unreadable(folder) -> str:
    """The one error line of a folder that cannot be read: on err, with exit status 2 (issue 9)."""
    out, err = io.StringIO(), io.StringIO()
    assert run_check(folder, out=out, err=err) == 2
    text = err.getvalue()
    assert text.count("\n") == 1 and text.startswith("timelapse: error: ")
    assert out.getvalue() == ""
    with pytest.raises(TraceUnreadable):
        check_folder(folder)
    return text


def test_missing_folder(tmp_path):
    assert "no such folder" in unreadable(tmp_path / "nope")


def test_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    assert "not a folder" in unreadable(tmp_path / "file")


def test_missing_stream(tmp_path):
    folder = write_trace(tmp_path / "t", valid())
    (folder / "trace.json").unlink()
    assert "has no trace.json or trace.bin" in unreadable(folder)


@pytest.mark.parametrize("name", ["trace_metadata.json", "trace_paths.json"])
def test_missing_side_file(tmp_path, name):
    folder = write_trace(tmp_path / "t", valid())
    (folder / name).unlink()
    assert f"missing {name}" in unreadable(folder)


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"Path": "/a.py"},', "trace.json is not valid JSON"),
        ('{"Path": "/a.py"}', "trace.json is not a JSON array"),
        ('[{"Value": NaN}]', "trace.json is not valid JSON"),
        ("", "trace.json is not valid JSON"),
    ],
)
def test_unparseable_stream(tmp_path, text, reason):
    folder = write_trace(tmp_path / "t", valid())
    (folder / "trace.json").write_text(text)
    assert reason in unreadable(folder)


def test_invalid_utf8(tmp_path):
    folder = write_trace(tmp_path / "t", valid())
    (folder / "trace.json").write_bytes(b'[{"Path": "/\xff.py"}]')
    assert "not valid UTF-8" in unreadable(folder)


def test_side_file_of_wrong_type(tmp_path):
    folder = write_trace(tmp_path / "t", valid(), metadata=[])  # type: ignore[arg-type]
    assert "trace_metadata.json is not an object" in unreadable(folder)


# -- trace.bin ------------------------------------------------------------------------------------


def write_bin(folder: Path, events, header: bytes = BIN_MAGIC) -> Path:
    cbor2 = pytest.importorskip("cbor2")
    pyzstd = pytest.importorskip("pyzstd")
    write_trace(folder, events, stream=False)
    with open(folder / "trace.bin", "wb") as f:
        f.write(header)
        with pyzstd.SeekableZstdFile(f, "w", max_frame_content_size=256) as z:
            for event in events:
                z.write(cbor2.dumps(event))
    return folder


def test_bin_trace_checks_like_json(tmp_path):
    assert check_folder(write_bin(tmp_path / "ok", valid())) == []
    broken = valid()[:22]
    assert [(v.rule, v.index) for v in check_folder(write_bin(tmp_path / "bad", broken))] == [
        ("unbalanced", 7)
    ]


def test_bin_bigint_as_byte_string(tmp_path):
    record = {"kind": "BigInt", "type_id": 1, "b": b"\x01" + bytes(9), "negative": False}
    assert check_folder(write_bin(tmp_path / "t", with_value(record))) == []
    # ... but not in JSON, which has no byte strings (and a list of ints is not base64)
    record["b"] = list(record["b"])
    assert found(tmp_path, with_value(record)) == [("value-shape", 11)]


def test_bin_bad_header(tmp_path):
    folder = write_bin(tmp_path / "t", valid(), header=b"\xc0\xde\x72\xac\xe2\x00\x00\x00")
    assert "not the CBOR + seekable zstd encoding" in unreadable(folder)
    (folder / "trace.bin").write_bytes(b"PK\x03\x04" + bytes(20))
    assert "magic" in unreadable(folder)


def test_bin_without_seek_table(tmp_path):
    cbor2 = pytest.importorskip("cbor2")
    pyzstd = pytest.importorskip("pyzstd")
    folder = write_bin(tmp_path / "t", valid())
    payload = b"".join(cbor2.dumps(e) for e in valid())
    frame = pyzstd.compress(payload)
    (folder / "trace.bin").write_bytes(BIN_MAGIC + frame)
    assert unreadable(folder) == (f"timelapse: error: trace.bin is truncated: it ends at byte"
                                  f" {8 + len(frame)}, after frame 0; the seek table is missing\n")


def test_bin_truncated_cbor(tmp_path):
    pyzstd = pytest.importorskip("pyzstd")
    cbor2 = pytest.importorskip("cbor2")
    folder = write_bin(tmp_path / "t", valid())
    with open(folder / "trace.bin", "wb") as f:
        f.write(BIN_MAGIC)
        with pyzstd.SeekableZstdFile(f, "w") as z:
            z.write(cbor2.dumps(valid()[0]) + cbor2.dumps(valid()[1])[:-3])
    assert "CBOR item 1 cannot be decoded" in unreadable(folder)


# -- trace.bin: frames, seek table, truncation ------------------------------------------------------


def write_framed(folder: Path, events, per_frame: int = 8, *, table: bool = True):
    """Write trace.bin as the recorder frames it (``per_frame`` events a frame); return each frame's
    (offset, compressed size, decompressed size) and the offset of the seek table."""
    cbor2 = pytest.importorskip("cbor2")
    from timelapse.cbor_format import SeekableFrames, seek_table

    write_trace(folder, events, stream=False)
    framing = SeekableFrames()
    data = bytearray(BIN_MAGIC)
    frames = []
    for start in range(0, len(events), per_frame):
        raw = b"".join(cbor2.dumps(e) for e in events[start:start + per_frame])
        frame = framing.frame(raw)
        frames.append((len(data), len(frame), len(raw)))
        data += frame
    table_at = len(data)
    if table:
        data += seek_table([(c, d) for _, c, d in frames])
    (folder / "trace.bin").write_bytes(bytes(data))
    return frames, table_at


def cut(folder: Path, size: int) -> Path:
    data = (folder / "trace.bin").read_bytes()
    (folder / "trace.bin").write_bytes(data[:size])
    return folder


def test_bin_summary_names_frames_sizes_and_ratio(tmp_path):
    frames, _ = write_framed(tmp_path / "t", valid())
    out = io.StringIO()
    assert run_check(tmp_path / "t", out=out) == 0
    size = (tmp_path / "t" / "trace.bin").stat().st_size
    cbor = sum(d for _, _, d in frames)
    assert out.getvalue() == (f"{tmp_path / 't'}: valid trace (24 events; trace.bin: 3 frames, {cbor} B -> "
                              f"{size} B, ratio {cbor / size:.1f}x)\n")
    broken = valid()[:22]
    write_framed(tmp_path / "bad", broken, per_frame=100)
    out = io.StringIO()
    assert run_check(tmp_path / "bad", out=out) == 1
    assert out.getvalue().splitlines()[-1].startswith(
        f"{tmp_path / 'bad'}: INVALID trace (22 events; trace.bin: 1 frame, ")


def test_bin_summary_of_a_recording(tmp_path):
    out = tmp_path / "t"
    result = run_timelapse(["record", "-q", "--format", "bin", "-o", str(out), str(PROGRAMS / "values_tricky.py")])
    assert result.returncode == 0, result.stderr
    result = run_timelapse(["check", str(out)])
    assert result.returncode == 0 and result.stderr == "", result
    line = result.stdout
    assert re.fullmatch(rf"{re.escape(str(out))}: valid trace \(\d+ events; trace\.bin: 1 frame,"
                        r" \d+\.\d KB -> \d+\.\d KB, ratio \d+\.\dx\)\n", line), line


def test_empty_bin_stream_is_valid_but_header_alone_is_truncated(tmp_path):
    from timelapse.cbor_format import seek_table

    folder = write_trace(tmp_path / "t", [], stream=False)
    (folder / "trace.bin").write_bytes(BIN_MAGIC + seek_table([]))
    assert [v.rule for v in check_folder(folder)] == ["toplevel"]  # an empty stream, read fine
    (folder / "trace.bin").write_bytes(BIN_MAGIC)
    assert unreadable(folder) == ("timelapse: error: trace.bin is truncated: it ends after its 8-byte header;"
                                  " frame 0 and the seek table are missing\n")


def truncated_message(frames, table_at, size):
    """What check says of the trace written by write_framed, cut to ``size`` bytes."""
    if size == 0:
        return "trace.bin is empty (truncated: not even its 8-byte header)"
    if size < 8:
        return f"trace.bin is truncated: it ends at byte {size}, inside its 8-byte header"
    if size == 8:
        return "trace.bin is truncated: it ends after its 8-byte header; frame 0 and the seek table are missing"
    if size > table_at:
        return (f"trace.bin is truncated: the seek table (at byte {table_at}, after frame {len(frames) - 1})"
                " is cut short")
    for index, (start, compressed, _) in enumerate(frames):
        if size == start:
            return (f"trace.bin is truncated: it ends at byte {size}, after frame {index - 1}; the seek"
                    " table is missing")
        if size < start + compressed:
            return (f"trace.bin is truncated: frame {index} (at byte {start}) is cut short; the seek table"
                    " is missing")
    return (f"trace.bin is truncated: it ends at byte {size}, after frame {len(frames) - 1}; the seek table"
            " is missing")


@pytest.mark.parametrize(
    "where",
    ["empty", "in the header", "after the header", "in frame 0's magic", "in frame 0", "after frame 0",
     "in frame 1", "in frame 1's last byte", "in frame 2", "after frame 2", "in the table's magic",
     "in the table's entries", "in the footer", "a byte short"],
)
def test_truncated_bin_names_the_frame_it_was_cut_in(tmp_path, where):
    frames, table_at = write_framed(tmp_path / "t", valid())
    end = (tmp_path / "t" / "trace.bin").stat().st_size
    (f0, c0, _), (f1, c1, _), (f2, c2, _) = frames
    size = {
        "empty": 0, "in the header": 5, "after the header": 8, "in frame 0's magic": 10,
        "in frame 0": f0 + c0 // 2, "after frame 0": f1, "in frame 1": f1 + 7, "in frame 1's last byte": f2 - 1,
        "in frame 2": f2 + c2 - 3, "after frame 2": table_at, "in the table's magic": table_at + 2,
        "in the table's entries": table_at + 12, "in the footer": end - 5, "a byte short": end - 1,
    }[where]
    message = unreadable(cut(tmp_path / "t", size))
    assert message == f"timelapse: error: {truncated_message(frames, table_at, size)}\n"


def test_truncated_bin_keeps_the_events_of_whole_frames(tmp_path):
    from timelapse.reader import iter_events

    frames, _ = write_framed(tmp_path / "t", valid())
    cut(tmp_path / "t", frames[2][0] + 5)
    events = iter_events(tmp_path / "t")
    assert [next(events) for _ in range(16)] == valid()[:16]
    with pytest.raises(TraceUnreadable, match=r"frame 2 \(at byte \d+\) is cut short"):
        next(events)


def test_truncated_bin_on_the_command_line(tmp_path):
    frames, _ = write_framed(tmp_path / "t", valid())
    cut(tmp_path / "t", frames[1][0] + 3)
    result = run_timelapse(["check", str(tmp_path / "t")])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"timelapse: error: trace.bin is truncated: frame 1 (at byte {frames[1][0]}) is cut"
                             " short; the seek table is missing\n")


def rewrite_table(folder: Path, frames, table_at, *, entries=None, footer=None, header=None) -> Path:
    """Replace the seek table of a write_framed trace by one with other entries, footer or header."""
    import struct

    entries = [(c, d) for _, c, d in frames] if entries is None else entries
    body = b"".join(struct.pack("<II", c, d) for c, d in entries)
    body += struct.pack("<IBI", len(entries), 0, 0x8F92EAB1) if footer is None else footer
    head = struct.pack("<II", 0x184D2A5E, len(body)) if header is None else header
    data = (folder / "trace.bin").read_bytes()[:table_at]
    (folder / "trace.bin").write_bytes(data + head + body)
    return folder


def test_a_seek_table_whose_sizes_lie(tmp_path):
    import struct

    frames, table_at = write_framed(tmp_path / "t", valid())
    folder = tmp_path / "t"
    (f0, c0, d0), (f1, c1, d1), (f2, c2, d2) = frames
    mismatch = "timelapse: error: trace.bin's seek table does not match its frames: "
    damaged = "timelapse: error: trace.bin's seek table is damaged: "
    # one frame given a byte more, the next one less: the sum is right, the frames are not
    rewrite_table(folder, frames, table_at, entries=[(c0 + 1, d0), (c1 - 1, d1), (c2, d2)])
    assert unreadable(folder) == mismatch + f"frame 0 (at byte 8) is {c0} bytes, not the {c0 + 1} it gives\n"
    rewrite_table(folder, frames, table_at, entries=[(c0 - 1, d0), (c1 + 1, d1), (c2, d2)])
    assert unreadable(folder) == mismatch + f"frame 0 (at byte 8) is longer than the {c0 - 1} bytes it gives\n"
    rewrite_table(folder, frames, table_at, entries=[(c0, d0), (c1, d1 + 1), (c2, d2)])
    assert unreadable(folder) == mismatch + f"frame 1 (at byte {f1}) decompresses to {d1} bytes, not the" \
        f" {d1 + 1} it gives\n"
    rewrite_table(folder, frames, table_at, entries=[(c0, d0), (c1, d1), (c2, d2 - 1)])
    assert unreadable(folder) == mismatch + f"frame 2 (at byte {f2}) decompresses to more than the {d2 - 1}" \
        " bytes it gives\n"
    rewrite_table(folder, frames, table_at, entries=[(c0, d0), (c1 + 1, d1), (c2, d2)])
    assert unreadable(folder) == mismatch + f"its 3 frames add up to {c0 + c1 + c2 + 1} bytes, but" \
        f" {c0 + c1 + c2} bytes lie between the header and the table\n"
    rewrite_table(folder, frames, table_at, entries=[(c0, d0), (0, 5), (c1 + c2, d1 + d2)])
    assert unreadable(folder) == mismatch + "it gives frame 1 0 bytes that decompress to 5\n"
    # the table itself broken
    size = table_at + 8 + 3 * 8 + 9
    rewrite_table(folder, frames, table_at, footer=struct.pack("<IBI", 1000, 0, 0x8F92EAB1))
    assert unreadable(folder) == damaged + f"it lists 1000 frames, more than a file of {size} bytes can hold\n"
    rewrite_table(folder, frames, table_at, footer=struct.pack("<IBI", 3, 0x04, 0x8F92EAB1))
    assert unreadable(folder) == damaged + "the reserved bits of its descriptor are set\n"
    rewrite_table(folder, frames, table_at, header=struct.pack("<II", 0x184D2A5E, 7))
    assert unreadable(folder) == damaged + f"the header of its skippable frame (at byte {table_at}) is wrong\n"
    rewrite_table(folder, frames, table_at, footer=struct.pack("<IBI", 2, 0, 0x8F92EAB1))
    assert unreadable(folder) == damaged + f"the header of its skippable frame (at byte {table_at + 8}) is wrong\n"


def test_a_seek_table_with_checksums_is_read(tmp_path):
    import struct

    frames, table_at = write_framed(tmp_path / "t", valid())
    body = b"".join(struct.pack("<III", c, d, 0) for _, c, d in frames) + struct.pack("<IBI", 3, 0x80, 0x8F92EAB1)
    rewrite_table(tmp_path / "t", frames, table_at, entries=[], footer=body)
    data = (tmp_path / "t" / "trace.bin").read_bytes()
    assert data[table_at + 4:table_at + 8] == (3 * 12 + 9).to_bytes(4, "little")
    assert check_folder(tmp_path / "t") == []


def test_a_damaged_frame_is_not_called_truncated(tmp_path):
    frames, table_at = write_framed(tmp_path / "t", valid())
    data = bytearray((tmp_path / "t" / "trace.bin").read_bytes())
    f1 = frames[1][0]
    data[f1:f1 + 4] = b"junk"
    (tmp_path / "t" / "trace.bin").write_bytes(bytes(data))
    message = unreadable(tmp_path / "t")
    assert message.startswith(f"timelapse: error: trace.bin is damaged: frame 1 (at byte {f1}) cannot be"
                              " decompressed: ")
    assert message.endswith("Unknown frame descriptor\n")  # zstd's words
    cut(tmp_path / "t", table_at)  # and without the table: the walk stops at it
    assert unreadable(tmp_path / "t") == (f"timelapse: error: trace.bin is damaged: frame 1 (at byte {f1}) is not a"
                                          " zstd frame; the seek table is missing\n")

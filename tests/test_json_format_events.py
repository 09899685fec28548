"""The events half of the JSON format (json_format.JsonEvents): every piece, alone and joined the way
format.EventSpelling says, parses as the event trace-format.md describes, byte for byte what a
JSON serializer makes of that event."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from timelapse.format import EventKind, TypeKind
from timelapse.json_format import JSON, JsonEvents, side_file
from timelapse.jsonbytes import to_json

E = JSON.events
ids = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.text()   # lone surrogates included: to_json's careful path replaces them, as before
records = st.sampled_from([
    b'{"kind":"None","type_id":0}',
    b'{"kind":"Int","type_id":1,"i":-5}',
    b'{"kind":"String","type_id":2,"text":"a\\"b"}',
    b'{"kind":"Sequence","type_id":3,"elements":[{"kind":"Int","type_id":1,"i":1}],"is_slice":false}',
])


def same_as_serialized(spelled: bytes, event: object) -> None:
    """``spelled`` is what the JSON serializer makes of the JSON-shaped ``event``, and valid JSON alone."""
    assert spelled == to_json(event)
    assert json.loads(spelled).keys() == event.keys()


@given(texts)
def test_path_and_variable_name(text):
    same_as_serialized(E.path(text), {"Path": text})
    same_as_serialized(E.variable_name(text), {"VariableName": text})


@given(ids, ids, texts)
def test_function(path_id, line, name):
    same_as_serialized(E.function(path_id, line, name),
                       {"Function": {"path_id": path_id, "line": line, "name": name}})


@given(st.sampled_from(list(TypeKind)), texts,
       st.none() | st.lists(st.tuples(texts, ids), max_size=4))
def test_type_with_and_without_struct_fields(kind, lang_type, fields):
    info = ({"kind": "None"} if fields is None else
            {"kind": "Struct", "fields": [{"name": n, "type_id": t} for n, t in fields]})
    same_as_serialized(E.type(kind, lang_type, fields),
                       {"Type": {"kind": int(kind), "lang_type": lang_type, "specific_info": info}})


@given(ids, ids)
def test_step(path_id, line):
    same_as_serialized(E.step(path_id, line), {"Step": {"path_id": path_id, "line": line}})


@given(ids, records)
def test_value_is_head_record_tail(variable_id, record):
    value = json.loads(record)
    spelled = E.value_head(variable_id) + record + E.value_tail
    same_as_serialized(spelled, {"Value": {"variable_id": variable_id, "value": value}})


@given(ids, st.lists(st.tuples(ids, records), max_size=4))
def test_call_and_its_arguments(function_id, arguments):
    args = [E.arg_head(v) + r + E.arg_tail for v, r in arguments]
    shaped = [{"variable_id": v, "value": json.loads(r)} for v, r in arguments]
    pieced = E.call_head(function_id) + E.arg_separator.join(args) + E.call_tail
    same_as_serialized(pieced, {"Call": {"function_id": function_id, "args": shaped}})
    assert E.call(function_id, args) == pieced


@given(records)
def test_return(record):
    expected = {"Return": {"return_value": json.loads(record)}}
    same_as_serialized(E.return_head + record + E.return_tail, expected)
    same_as_serialized(E.return_event(record), expected)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_thread_events(number):
    same_as_serialized(E.thread_start(number), {"ThreadStart": number})
    same_as_serialized(E.thread_switch(number), {"ThreadSwitch": number})
    same_as_serialized(E.thread_exit(number), {"ThreadExit": number})


@given(st.sampled_from(list(EventKind)), texts, texts)
def test_event(kind, metadata, content):
    same_as_serialized(E.event(kind, metadata, content),
                       {"Event": {"kind": int(kind), "metadata": metadata, "content": content}})


def test_event_metadata_is_a_json_object_in_a_string():
    assert json.loads(E.event_metadata("stdout", 2, (0, 31), None)) == {
        "stream": "stdout", "thread": 2, "path_id": 0, "line": 31}
    assert json.loads(E.event_metadata("raise", 1, None, {"exception": "ValueError"})) == {
        "stream": "raise", "thread": 1, "exception": "ValueError"}
    # The keys in this order, spelled as json.dumps spells them (what earlier traces hold).
    assert E.event_metadata("stdout", 1, (0, 3), {"source": "fd"}) == (
        '{"stream": "stdout", "thread": 1, "path_id": 0, "line": 3, "source": "fd"}')


@given(st.lists(st.lists(st.sampled_from([E.step(0, 1), E.thread_start(1), b'"DropLastStep"']),
                         min_size=1, max_size=5), min_size=1, max_size=4))
def test_framing_makes_one_array_of_every_batch(batches):
    text = E.begin + E.batch_separator.join(E.separator.join(b) for b in batches) + E.end
    assert json.loads(text) == [json.loads(e) for b in batches for e in b]
    assert JsonEvents.file_name == "trace.json"


def test_side_files_are_indented_json_with_text_as_it_is():
    text = side_file({"program": "/tmp/ü.py", "args": []})
    assert json.loads(text) == {"program": "/tmp/ü.py", "args": []}
    assert "ü" in text and text.endswith("\n") and "\n " in text

"""The JSON trace format (``trace.json``): every piece of JSON syntax timelapse writes.

The two halves implement ``format.EventSpelling`` and ``format.ValueSpelling``. They return ``bytes``:
compact UTF-8 JSON, serialized by orjson (or the standard library, see ``jsonbytes``), with the
fixed parts written as byte templates the hot path caches and concatenates.
"""

from __future__ import annotations

import json
import json.scanner
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from timelapse.jsonbytes import from_json, to_json

__all__ = ["JSON", "JsonEvents", "JsonValues", "JsonFormat"]


# -- events (format.EventSpelling) ------------------------------------------------------------------
# (monitor/writer side: the framing, the id-defining events, the Step, Value, Call, Return, thread and
# Event templates, and the side files)

class JsonEvents:
    """The events of ``trace.json`` and its framing (a JSON array, one event per element).

    Each event is ``{"Variant":payload}``, compact, byte for byte what ``to_json`` makes of the
    JSON-shaped event (the tests hold the two equal). Numbers are formatted with ``%d``; strings go
    through ``to_json`` (orjson, or the standard library for what orjson refuses)."""

    file_name = "trace.json"
    # The array: "[\n", events joined by "," inside a batch and ",\n" between batches, "\n]\n".
    begin = b"[\n"
    separator = b","
    batch_separator = b",\n"
    end = b"\n]\n"

    # Pieces of the hot path's events (format.EventSpelling says how they join).
    value_tail = b"}}"
    arg_tail = b"}"
    arg_separator = b","
    call_tail = b"]}}"
    return_head = b'{"Return":{"return_value":'
    return_tail = b"}}"

    @staticmethod
    def path(path: str) -> bytes:
        return b'{"Path":%b}' % to_json(path)

    @staticmethod
    def function(path_id: int, line: int, name: str) -> bytes:
        return b'{"Function":{"path_id":%d,"line":%d,"name":%b}}' % (path_id, line, to_json(name))

    @staticmethod
    def type(kind: int, lang_type: str, fields: Sequence[tuple[str, int]] | None) -> bytes:
        """A Type; ``fields`` (name, type_id) pairs make its specific_info a Struct's, None a None."""
        if fields is None:
            info = b'{"kind":"None"}'
        else:
            info = b'{"kind":"Struct","fields":[%b]}' % b",".join(
                [b'{"name":%b,"type_id":%d}' % (to_json(name), type_id) for name, type_id in fields])
        return b'{"Type":{"kind":%d,"lang_type":%b,"specific_info":%b}}' % (kind, to_json(lang_type), info)

    @staticmethod
    def variable_name(name: str) -> bytes:
        return b'{"VariableName":%b}' % to_json(name)

    @staticmethod
    def step(path_id: int, line: int) -> bytes:
        return b'{"Step":{"path_id":%d,"line":%d}}' % (path_id, line)

    @staticmethod
    def value_head(variable_id: int) -> bytes:
        return b'{"Value":{"variable_id":%d,"value":' % variable_id

    @staticmethod
    def arg_head(variable_id: int) -> bytes:
        return b'{"variable_id":%d,"value":' % variable_id

    @staticmethod
    def call_head(function_id: int) -> bytes:
        return b'{"Call":{"function_id":%d,"args":[' % function_id

    @classmethod
    def call(cls, function_id: int, args: Sequence[bytes] = ()) -> bytes:
        return cls.call_head(function_id) + cls.arg_separator.join(args) + cls.call_tail

    @classmethod
    def return_event(cls, record: bytes) -> bytes:
        return cls.return_head + record + cls.return_tail

    @staticmethod
    def thread_start(thread: int) -> bytes:
        return b'{"ThreadStart":%d}' % thread

    @staticmethod
    def thread_switch(thread: int) -> bytes:
        return b'{"ThreadSwitch":%d}' % thread

    @staticmethod
    def thread_exit(thread: int) -> bytes:
        return b'{"ThreadExit":%d}' % thread

    @staticmethod
    def event(kind: int, metadata: str, content: str) -> bytes:
        return b'{"Event":{"kind":%d,"metadata":%b,"content":%b}}' % (kind, to_json(metadata), to_json(content))

    @staticmethod
    def event_metadata(stream: str, thread: int, where: tuple[int, int] | None,
                       extra: Mapping[str, str] | None = None) -> str:
        """The JSON object an Event carries as its metadata *string* (as the 0.3.0 recorder does):
        stream, thread, path and line of the step, then ``extra``. JSON in every format: it is text
        that CodeTracer shows."""
        metadata: dict[str, Any] = {"stream": stream, "thread": thread}
        if where is not None:
            metadata["path_id"], metadata["line"] = where
        if extra:
            metadata.update(extra)
        return json.dumps(metadata)


#: The side files of a trace folder: JSON whatever the format of the event stream.
PATHS_FILE = "trace_paths.json"
METADATA_FILE = "trace_metadata.json"


def side_file(data: Any) -> str:
    """The text of a side file (``trace_paths.json``, ``trace_metadata.json``): indented JSON, non-ASCII
    as it is (the writer encodes it as UTF-8, replacing what is not text)."""
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


# -- values (format.ValueSpelling) ------------------------------------------------------------------

class JsonValues:
    """ValueRecords as JSON. Strings given here are already valid text (the walk replaced lone
    surrogates); the JSON string syntax is orjson's."""

    separator = b","
    sequence_tail = b'],"is_slice":false}'
    tuple_tail = b"]}"
    struct_tail = b"]}"
    int_tail = b"}"
    #: The bytes of an int's value and of a float's text, between int_head/float_head and the tail.
    int_text = staticmethod(b"%d".__mod__)
    float_text = staticmethod(str.encode)

    @staticmethod
    def none(type_id: int) -> bytes:
        return b'{"kind":"None","type_id":%d}' % type_id

    @staticmethod
    def int(type_id: int, value: int) -> bytes:
        return b'{"kind":"Int","type_id":%d,"i":%d}' % (type_id, value)

    @staticmethod
    def int_head(type_id: int) -> bytes:
        return b'{"kind":"Int","type_id":%d,"i":' % type_id

    float_tail = b'"}'

    @staticmethod
    def float_head(type_id: int) -> bytes:
        return b'{"kind":"Float","type_id":%d,"f":"' % type_id

    @staticmethod
    def float(type_id: int, text: str) -> bytes:
        # float texts are ASCII (repr of a float): no escaping needed
        return b'{"kind":"Float","type_id":%d,"f":"%b"}' % (type_id, text.encode("ascii"))

    @staticmethod
    def bool(type_id: int, value: bool) -> bytes:
        return b'{"kind":"Bool","type_id":%d,"b":%b}' % (type_id, b"true" if value else b"false")

    @staticmethod
    def string(type_id: int, text: str) -> bytes:
        return b'{"kind":"String","type_id":%d,"text":%b}' % (type_id, to_json(text))

    @staticmethod
    def raw(type_id: int, text: str) -> bytes:
        return b'{"kind":"Raw","type_id":%d,"r":%b}' % (type_id, to_json(text))

    @staticmethod
    def error(type_id: int, message: str) -> bytes:
        return b'{"kind":"Error","type_id":%d,"msg":%b}' % (type_id, to_json(message))

    @staticmethod
    def big_int(type_id: int, base64: str, negative: bool) -> bytes:
        return b'{"kind":"BigInt","type_id":%d,"b":"%b","negative":%b}' % (
            type_id, base64.encode("ascii"), b"true" if negative else b"false")

    @staticmethod
    def sequence_head(type_id: int) -> bytes:
        return b'{"kind":"Sequence","type_id":%d,"elements":[' % type_id

    @staticmethod
    def tuple_head(type_id: int) -> bytes:
        return b'{"kind":"Tuple","type_id":%d,"elements":[' % type_id

    @staticmethod
    def struct_head(type_id: int) -> bytes:
        return b'{"kind":"Struct","type_id":%d,"field_values":[' % type_id

    @staticmethod
    def variant(type_id: int, discriminator: str, contents: bytes) -> bytes:
        return b'{"kind":"Variant","type_id":%d,"discriminator":%b,"contents":%b}' % (
            type_id, to_json(discriminator), contents)

    @staticmethod
    def order_key(data: bytes) -> bytes:
        """What orders set members that tie: the record's JSON spelling (here, the record itself)."""
        return data

    @staticmethod
    def decode(data: bytes) -> Any:
        """A ValueRecord as a dict: for tests and tools (``ValueEncoder.encode``), never the hot path."""
        try:
            return from_json(data)
        except RecursionError:  # nested deeper than the C decoder goes (a --max-depth in the thousands)
            return _decode_deep(data)


def _decode_deep(data: bytes) -> Any:
    """JSON nested deeper than the C decoders allow: the standard library's pure-Python scanner, whose
    recursion is Python's own (no C stack in CPython 3.11+), with the limit raised for the call."""
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    text = data.decode("utf-8")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * text.count("[") + 1000))
    try:
        return decoder.decode(text)
    finally:
        sys.setrecursionlimit(limit)


class JsonFormat:
    """``format.TraceFormat`` for ``trace.json``."""

    name = "json"
    events = JsonEvents()
    values = JsonValues()

    @staticmethod
    def frames() -> None:
        """A plain stream: the writer writes ``events.begin``, the batches and ``events.end``."""
        return None


#: The JSON format (stateless: one instance serves every trace).
JSON = JsonFormat()

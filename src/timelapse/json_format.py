"""The JSON trace format (``trace.json``): every piece of JSON syntax timelapse writes.

The two halves implement ``format.EventSpelling`` and ``format.ValueSpelling``. They return ``bytes``:
compact UTF-8 JSON, serialized by orjson (or the standard library, see ``jsonbytes``), with the
fixed parts written as byte templates the hot path caches and concatenates.
"""

from __future__ import annotations

from typing import Any

from timelapse.jsonbytes import from_json, to_json

__all__ = ["JSON", "JsonEvents", "JsonValues", "JsonFormat"]


# -- events (format.EventSpelling) ------------------------------------------------------------------
# (monitor/writer side: the Step, Value, Call, Return, thread and Event templates)

class JsonEvents:
    """The events of ``trace.json`` and its framing (a JSON array, one event per element)."""

    file_name = "trace.json"


# -- values (format.ValueSpelling) ------------------------------------------------------------------

class JsonValues:
    """ValueRecords as JSON. Strings given here are already valid text (the walk replaced lone
    surrogates); the JSON string syntax is orjson's."""

    separator = b","
    sequence_tail = b'],"is_slice":false}'
    tuple_tail = b"]}"
    struct_tail = b"]}"
    int_tail = b"}"
    none = b'{"kind":"None","type_id":0}'

    @staticmethod
    def int(type_id: int, value: int) -> bytes:
        return b'{"kind":"Int","type_id":%d,"i":%d}' % (type_id, value)

    @staticmethod
    def int_head(type_id: int) -> bytes:
        return b'{"kind":"Int","type_id":%d,"i":' % type_id

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
    def decode(data: bytes) -> Any:
        """A ValueRecord as a dict: for tests and tools (``ValueEncoder.encode``), never the hot path."""
        return from_json(data)


class JsonFormat:
    """``format.TraceFormat`` for ``trace.json``."""

    name = "json"
    events = JsonEvents()
    values = JsonValues()


#: The JSON format (stateless: one instance serves every trace).
JSON = JsonFormat()

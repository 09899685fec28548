"""The CodeTracer trace vocabulary, apart from how any one format spells it.

``shared/trace-format.md`` is the format as its real consumer reads it. This module names its numbers
(type kinds, event-log kinds) and states, as protocols, what a format must be able to spell: the
events of the stream (``EventSpelling``) and the value records inside them (``ValueSpelling``). The
JSON format (``json_format.py``, ``trace.json``) and the binary one (``cbor_format.py``,
``trace.bin``: CBOR in a seekable zstd stream) implement the same two protocols. No module but a format's writes syntax: the
recorder (``monitor.py``), the value walk (``encoder.py``) and the writer only call these methods and
join their results.

Every method returns ``bytes`` (a whole event, or a piece of one): the hot path caches them per code
object, per variable and per type, and concatenates.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Mapping, Protocol, Sequence


class TypeKind(IntEnum):
    """``TypeKind`` numbers of a ``Type`` event (trace-format.md, section 3)."""

    SEQ = 0
    SET = 1
    HASH_SET = 2
    ORDERED_SET = 3
    ARRAY = 4
    VARARGS = 5
    STRUCT = 6
    INT = 7
    FLOAT = 8
    STRING = 9
    CSTRING = 10
    CHAR = 11
    BOOL = 12
    LITERAL = 13
    REF = 14
    RECURSION = 15
    RAW = 16
    ENUM = 17
    ENUM16 = 18
    ENUM32 = 19
    C = 20
    TABLE_KIND = 21
    UNION = 22
    POINTER = 23
    ERROR = 24
    FUNCTION_KIND = 25
    TYPE_VALUE = 26
    TUPLE = 27
    VARIANT = 28
    HTML = 29
    NONE = 30
    NON_EXPANDED = 31
    ANY = 32
    SLICE = 33


class EventKind(IntEnum):
    """``EventLogKind`` numbers of an ``Event`` (trace-format.md, section 3)."""

    WRITE = 0           # stdout
    WRITE_FILE = 1
    WRITE_OTHER = 2     # stderr
    READ = 3            # stdin
    READ_FILE = 4
    READ_OTHER = 5
    READ_DIR = 6
    OPEN_DIR = 7
    CLOSE_DIR = 8
    SOCKET = 9
    OPEN = 10
    ERROR = 11          # the last Event, on the last step, of kind ERROR: "the program ended in error"
    TRACE_LOG_EVENT = 12
    EVM_EVENT = 13


#: The TypeId of None in every trace: the writer defines it right after the top-level call.
NONE_TYPE_ID = 0


class ValueSpelling(Protocol):
    """How a format spells ValueRecords. The value walk (``encoder.py``) decides *what* is shown and
    calls these; a container is spelled as ``<kind>_head(type_id) + separator.join(parts) +
    <KIND>_TAIL``, so that the walk can cache heads and join parts itself."""

    separator: bytes
    sequence_tail: bytes
    tuple_tail: bytes
    struct_tail: bytes

    def none(self, type_id: int) -> bytes: ...

    def int(self, type_id: int, value: int) -> bytes: ...
    def int_head(self, type_id: int) -> bytes: ...      # int_head(t) + int_text(i) + int_tail
    int_tail: bytes
    def int_text(self, value: int) -> bytes: ...        # a 64-bit int's value (JSON: b"%d" % i)
    def float(self, type_id: int, text: str) -> bytes: ...
    def float_head(self, type_id: int) -> bytes: ...    # float_head(t) + float_text(s) + float_tail
    float_tail: bytes
    def float_text(self, text: str) -> bytes: ...       # a float's repr (JSON: its ASCII bytes)
    def bool(self, type_id: int, value: bool) -> bytes: ...
    def string(self, type_id: int, text: str) -> bytes: ...
    def raw(self, type_id: int, text: str) -> bytes: ...
    def error(self, type_id: int, message: str) -> bytes: ...
    def big_int(self, type_id: int, base64: str, negative: bool) -> bytes: ...
    def sequence_head(self, type_id: int) -> bytes: ...
    def tuple_head(self, type_id: int) -> bytes: ...
    def struct_head(self, type_id: int) -> bytes: ...
    def variant(self, type_id: int, discriminator: str, contents: bytes) -> bytes: ...
    def order_key(self, data: bytes) -> bytes: ...      # a record's JSON spelling: orders set ties
    def decode(self, data: bytes) -> dict: ...          # for tests and tools, never the hot path


class EventSpelling(Protocol):
    """How a format spells the events of the stream and frames them in the trace file.

    Framing: the file is ``begin``, the events, ``end``. The writer writes events in batches: the
    events of a batch are joined by ``separator``, batches by ``batch_separator``.

    Whole events come from the methods. The hot path builds its events from pieces it caches (per
    code object, per variable) and one ValueRecord ``record`` spelled by the same format's
    ``ValueSpelling``:

    - a Value: ``value_head(variable_id) + record + value_tail``;
    - a Call argument: ``arg = arg_head(variable_id) + record + arg_tail``; the Call:
      ``call_head(function_id) + arg_separator.join(args) + call_tail`` (= ``call(function_id, args)``),
      with no Values after the call's Step (the consumer adds the arguments to its variables);
    - a Return: ``return_head + record + return_tail`` (= ``return_event(record)``).

    Strings given here are valid text already (the writer and the walk replace lone surrogates).
    """

    file_name: str                      # "trace.json"
    begin: bytes
    separator: bytes
    batch_separator: bytes
    end: bytes

    # id-defining events: the n-th of each kind defines id n
    def path(self, path: str) -> bytes: ...
    def function(self, path_id: int, line: int, name: str) -> bytes: ...
    def type(self, kind: int, lang_type: str, fields: Sequence[tuple[str, int]] | None) -> bytes: ...
    def variable_name(self, name: str) -> bytes: ...

    def step(self, path_id: int, line: int) -> bytes: ...
    def value_head(self, variable_id: int) -> bytes: ...
    value_tail: bytes
    def arg_head(self, variable_id: int) -> bytes: ...
    arg_tail: bytes
    arg_separator: bytes
    def call_head(self, function_id: int) -> bytes: ...
    call_tail: bytes
    def call(self, function_id: int, args: Sequence[bytes]) -> bytes: ...
    return_head: bytes
    return_tail: bytes
    def return_event(self, record: bytes) -> bytes: ...
    def thread_start(self, thread: int) -> bytes: ...
    def thread_switch(self, thread: int) -> bytes: ...
    def thread_exit(self, thread: int) -> bytes: ...
    def event(self, kind: int, metadata: str, content: str) -> bytes: ...
    def event_metadata(self, stream: str, thread: int, where: tuple[int, int] | None,
                       extra: Mapping[str, str] | None) -> str: ...


class TraceFormat(Protocol):
    """A trace format: its event spelling and its value spelling. Chosen in one place: the
    ``TraceWriter`` is given one (``fmt``, default ``json_format.JSON``), and every other part of a
    recording asks the writer (``writer.format``)."""

    name: str                           # "json" or "bin"
    events: EventSpelling
    values: ValueSpelling

    def frames(self) -> Framing | None: ...     # a new file's framing; None: a plain stream


class Framing(Protocol):
    """How a compressed format frames its file (``cbor_format.SeekableFrames``): ``header``, then
    each batch the writer flushes as frames (``frames_of`` the batch's events: the frames'
    compressed pieces, made before anything is written, and each frame's sizes), then ``end`` of
    the (compressed, decompressed) sizes of all the frames."""

    header: bytes
    def frame(self, data: bytes) -> bytes: ...
    def frames_of(self, events: list[bytes]) -> tuple[list[bytes], list[tuple[int, int]]]: ...
    def end(self, frames: Sequence[tuple[int, int]]) -> bytes: ...

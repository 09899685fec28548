"""The binary trace format (``trace.bin``): CBOR items in a Zstandard seekable stream.

``shared/trace-format.md`` section 5: the file is the 8-byte header ``C0 DE 72 AC E2 01 00 00``, then
a zstd *seekable* stream (independent frames, then the seek-table skippable frame). Decompressed, the
frames hold one CBOR item per event, no array around them, each the JSON-shaped event of
``json_format`` encoded as standard CBOR (maps with text keys, in the same key order).

The two halves implement ``format.EventSpelling`` and ``format.ValueSpelling`` with byte templates,
like the JSON format's, so the hot path does the same work in either format: cached heads, joined
parts. Two CBOR choices make that possible:

- Maps have a definite length (every event and record has a fixed set of keys), written in the head.
- Arrays whose length the walk learns only as it joins them (a Sequence's ``elements``, a Call's
  ``args``) are *indefinite-length* arrays (RFC 8949, section 3.2.2): ``0x9F``, the items, the
  ``0xFF`` break. So a container is still ``head + b"".join(parts) + tail`` and no head depends on
  a count. Every conforming decoder reads both kinds (cbor2, and the cbor4ii crate CodeTracer's
  reader uses); fixed, known-length arrays (a Type's fields) are definite.

The container (``SeekableFrames``): each batch the writer flushes becomes one zstd frame (more
than one past ``FRAME_BYTES``), made whole by a fresh compressor before anything of it is written
(``frames_of``), and ``seek_table`` ends the file. pyzstd's ``SeekableZstdFile`` writes the same
layout, but from Python code that a Ctrl-C can split between a frame and its entry in the table; the
writer needs each frame as bytes it writes (and completes after an interruption) itself. The table
is 9 + 8 n bytes of ``struct.pack``; the tests read every file written here with
``SeekableZstdFile`` and cbor2 (independent decoders).

cbor2 is imported with this module, not when it is first needed: ``CborValues.order_key`` decodes
records inside monitoring callbacks, where an import would run import machinery (import hooks,
``sys.modules``, a replaced ``__import__``) that the program can see. Missing, it stops only a
``trace.bin`` recording, when its file is set up (``SeekableFrames``). A ``trace.json`` recording
imports neither this module nor cbor2 (``Session.start``: start-up).

The zstd binding (``zstd_binding``) is the standard library's ``compression.zstd`` (Python 3.14),
else ``backports.zstd``, its backport, else pyzstd: pyzstd 0.20 and later are a layer over those two
(the same compressor, the same bytes), and importing that layer costs about four times the
binding's own import (7 ms of a recording's start-up).
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from timelapse.json_format import JsonEvents
from timelapse.jsonbytes import to_json

try:
    import cbor2
except ImportError:     # a broken install: trace.json still records; SeekableFrames() says what is missing
    cbor2 = None

__all__ = ["BIN", "HEADER", "CborEvents", "CborFormat", "CborValues", "SeekableFrames", "zstd_binding",
           "seek_table"]

#: The first 8 bytes of every ``trace.bin`` of this encoding (byte 5 = 1: CBOR + seekable zstd).
HEADER = bytes.fromhex("C0DE72ACE2010000")

#: zstd level of the frames: chosen from measurements (benchmarks/README.md, "trace.bin").
ZSTD_LEVEL = 3

# Seekable format (zstd contrib/seekable_format): a skippable frame at the end of the stream.
_SKIPPABLE_MAGIC = 0x184D2A5E
_SEEKABLE_MAGIC = 0x8F92EAB1
#: Events are handed to the compressor about this many bytes at a time (SeekableFrames.frames_of).
_FEED_BYTES = 1 << 20
#: The most decompressed bytes in one frame: a batch holding more becomes several frames. The seek
#: table's sizes are u32, and the seekable format caps a frame at 1 GiB; the writer's batches are a
#: few MiB, so only a batch of huge events (a raised --max-string) reaches this.
FRAME_BYTES = 256 << 20


# -- CBOR items (RFC 8949): the few this format writes ----------------------------------------------

def _head(major: int, n: int) -> bytes:
    """The initial bytes of an item of major type ``major`` with argument ``n`` (shortest form)."""
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    return bytes((m | 27,)) + n.to_bytes(8, "big")


# Hot path (values and events are spelled at every step): the small heads come from tables, the
# rest from one struct.pack; measured on `generators` (benchmarks/README.md), building every head
# with _head cost a third more instructions than the JSON format's one ``%`` formatting.
_SMALL_INTS = {n: _head(0, n) if n >= 0 else _head(1, -1 - n) for n in range(-256, 256)}
_TEXT_HEADS = [_head(3, n) for n in range(256)]
_pack_u16, _pack_u32, _pack_u64 = struct.Struct(">BH").pack, struct.Struct(">BI").pack, struct.Struct(">BQ").pack


def cbor_int(n: int) -> bytes:
    """An integer item (the walk gives only 64-bit ints; larger ones are BigInt records)."""
    data = _SMALL_INTS.get(n)
    if data is not None:
        return data
    major = 0
    if n < 0:
        major, n = 0x20, -1 - n
    if n < 0x10000:
        return _pack_u16(major | 25, n) if n >= 0x100 else bytes((major | 24, n))
    if n < 0x100000000:
        return _pack_u32(major | 26, n)
    return _pack_u64(major | 27, n)


def cbor_text(text: str) -> bytes:
    """A text string item. ``text`` is valid text already (the walk and the writer replaced lone
    surrogates), so it encodes to UTF-8."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the caller did not replace: "?" as in JSON
        data = text.encode("utf-8", "replace")
    size = len(data)
    if size < 256:
        return _TEXT_HEADS[size] + data
    return _head(3, size) + data


def _map(count: int) -> bytes:
    return _head(5, count)


def _key(name: str) -> bytes:
    return cbor_text(name)


_TRUE, _FALSE = b"\xf5", b"\xf4"
_ARRAY_START, _BREAK = b"\x9f", b"\xff"   # an indefinite-length array and its end


def _pairs(*items: bytes) -> bytes:
    return b"".join(items)


def _one(variant: str) -> bytes:
    """The head of an externally tagged event ``{variant: payload}``: the payload follows."""
    return _map(1) + _key(variant)


# -- events (format.EventSpelling) ------------------------------------------------------------------

_VALUE = _one("Value")
_K_VARIABLE_ID, _K_VALUE = _key("variable_id"), _key("value")


class CborEvents:
    """The events of ``trace.bin``, one CBOR item each, byte for byte the JSON format's events as
    standard CBOR (same keys, same order), arrays of unknown length indefinite. The framing of the
    file (header, zstd frames, seek table) is ``SeekableFrames``: the items themselves are only
    concatenated."""

    file_name = "trace.bin"
    begin = b""
    separator = b""
    batch_separator = b""
    end = b""

    value_tail = b""
    arg_tail = b""
    arg_separator = b""
    call_tail = _BREAK
    return_head = _one("Return") + _map(1) + _key("return_value")
    return_tail = b""

    @staticmethod
    def path(path: str) -> bytes:
        return _one("Path") + cbor_text(path)

    @staticmethod
    def function(path_id: int, line: int, name: str) -> bytes:
        return _pairs(_one("Function"), _map(3), _key("path_id"), cbor_int(path_id),
                      _key("line"), cbor_int(line), _key("name"), cbor_text(name))

    @staticmethod
    def type(kind: int, lang_type: str, fields: Sequence[tuple[str, int]] | None) -> bytes:
        """A Type; ``fields`` (name, type_id) pairs make its specific_info a Struct's, None a None."""
        if fields is None:
            info = _map(1) + _key("kind") + cbor_text("None")
        else:
            info = _pairs(_map(2), _key("kind"), cbor_text("Struct"), _key("fields"),
                          _head(4, len(fields)), *[
                              _pairs(_map(2), _key("name"), cbor_text(name), _key("type_id"),
                                     cbor_int(type_id)) for name, type_id in fields])
        return _pairs(_one("Type"), _map(3), _key("kind"), cbor_int(kind), _key("lang_type"),
                      cbor_text(lang_type), _key("specific_info"), info)

    @staticmethod
    def variable_name(name: str) -> bytes:
        return _one("VariableName") + cbor_text(name)

    @staticmethod
    def step(path_id: int, line: int) -> bytes:
        return _pairs(_one("Step"), _map(2), _key("path_id"), cbor_int(path_id),
                      _key("line"), cbor_int(line))

    @staticmethod
    def value_head(variable_id: int) -> bytes:
        return _VALUE + CborEvents.arg_head(variable_id)

    @staticmethod
    def arg_head(variable_id: int) -> bytes:
        return _map(2) + _K_VARIABLE_ID + cbor_int(variable_id) + _K_VALUE

    @staticmethod
    def call_head(function_id: int) -> bytes:
        return _pairs(_one("Call"), _map(2), _key("function_id"), cbor_int(function_id),
                      _key("args"), _ARRAY_START)

    @classmethod
    def call(cls, function_id: int, args: Sequence[bytes] = ()) -> bytes:
        return cls.call_head(function_id) + cls.arg_separator.join(args) + cls.call_tail

    @classmethod
    def return_event(cls, record: bytes) -> bytes:
        return cls.return_head + record + cls.return_tail

    @staticmethod
    def thread_start(thread: int) -> bytes:
        return _one("ThreadStart") + cbor_int(thread)

    @staticmethod
    def thread_switch(thread: int) -> bytes:
        return _one("ThreadSwitch") + cbor_int(thread)

    @staticmethod
    def thread_exit(thread: int) -> bytes:
        return _one("ThreadExit") + cbor_int(thread)

    @staticmethod
    def event(kind: int, metadata: str, content: str) -> bytes:
        return _pairs(_one("Event"), _map(3), _key("kind"), cbor_int(kind), _key("metadata"),
                      cbor_text(metadata), _key("content"), cbor_text(content))

    @staticmethod
    def event_metadata(stream: str, thread: int, where: tuple[int, int] | None,
                       extra: Mapping[str, str] | None = None) -> str:
        # The metadata is a JSON *string* in every format (text that CodeTracer shows).
        return JsonEvents.event_metadata(stream, thread, where, extra)


# -- values (format.ValueSpelling) ------------------------------------------------------------------

_K_KIND, _K_TYPE_ID = _key("kind"), _key("type_id")


@functools.lru_cache(maxsize=4096)
def _record_head(kind: str, keys: int, type_id: int) -> bytes:
    """``{"kind": kind, "type_id": type_id, ...``: the head of a ValueRecord of ``keys`` keys (cached:
    a few kinds times the type ids of a trace)."""
    return _map(keys) + _K_KIND + cbor_text(kind) + _K_TYPE_ID + cbor_int(type_id)


_K_I, _K_F, _K_B, _K_TEXT, _K_R, _K_MSG = map(_key, ("i", "f", "b", "text", "r", "msg"))


class CborValues:
    """ValueRecords as CBOR: the JSON format's records (same keys, same order), containers'
    ``elements`` / ``field_values`` as indefinite-length arrays."""

    separator = b""
    sequence_tail = _BREAK + _key("is_slice") + _FALSE
    tuple_tail = _BREAK
    struct_tail = _BREAK
    int_tail = b""
    float_tail = b""
    #: The bytes of an int's value and of a float's text, between int_head/float_head and the tail.
    int_text = staticmethod(cbor_int)
    float_text = staticmethod(cbor_text)

    @staticmethod
    def none(type_id: int) -> bytes:
        return _record_head("None", 2, type_id)

    @staticmethod
    def int(type_id: int, value: int) -> bytes:
        return CborValues.int_head(type_id) + cbor_int(value)

    @staticmethod
    def int_head(type_id: int) -> bytes:
        return _record_head("Int", 3, type_id) + _K_I

    @staticmethod
    def float_head(type_id: int) -> bytes:
        return _record_head("Float", 3, type_id) + _K_F

    @staticmethod
    def float(type_id: int, text: str) -> bytes:
        return CborValues.float_head(type_id) + cbor_text(text)

    @staticmethod
    def bool(type_id: int, value: bool) -> bytes:
        return _record_head("Bool", 3, type_id) + _K_B + (_TRUE if value else _FALSE)

    @staticmethod
    def string(type_id: int, text: str) -> bytes:
        return _record_head("String", 3, type_id) + _K_TEXT + cbor_text(text)

    @staticmethod
    def raw(type_id: int, text: str) -> bytes:
        return _record_head("Raw", 3, type_id) + _K_R + cbor_text(text)

    @staticmethod
    def error(type_id: int, message: str) -> bytes:
        return _record_head("Error", 3, type_id) + _K_MSG + cbor_text(message)

    @staticmethod
    def big_int(type_id: int, base64: str, negative: bool) -> bytes:
        return _pairs(_record_head("BigInt", 4, type_id), _K_B, cbor_text(base64),
                      _key("negative"), _TRUE if negative else _FALSE)

    @staticmethod
    def sequence_head(type_id: int) -> bytes:
        return _record_head("Sequence", 4, type_id) + _key("elements") + _ARRAY_START

    @staticmethod
    def tuple_head(type_id: int) -> bytes:
        return _record_head("Tuple", 3, type_id) + _key("elements") + _ARRAY_START

    @staticmethod
    def struct_head(type_id: int) -> bytes:
        return _record_head("Struct", 3, type_id) + _key("field_values") + _ARRAY_START

    @staticmethod
    def variant(type_id: int, discriminator: str, contents: bytes) -> bytes:
        return _pairs(_record_head("Variant", 4, type_id), _key("discriminator"),
                      cbor_text(discriminator), _key("contents"), contents)

    @staticmethod
    def order_key(data: bytes) -> bytes:
        """What orders set members that tie (tuples, frozensets, objects): the record's JSON
        spelling, so that a set lists its members in the same order in both formats. Rare (only
        ties need it), so decoding is affordable; a record nested too deep for the decoders is
        ordered by its own bytes."""
        try:
            return to_json(CborValues.decode(data))
        except (RecursionError, ValueError, TypeError):
            return data

    @staticmethod
    def decode(data: bytes) -> Any:
        """A ValueRecord as a dict: for tests and tools (``ValueEncoder.encode``), never the hot path."""
        return cbor2.loads(data, max_depth=8 * 100 + 64)


def zstd_binding() -> Any:
    """The module trace.bin's frames are compressed with: ``compression.zstd`` (Python 3.14), else
    ``backports.zstd``, else pyzstd. The three take ``compress(data, level)`` and
    ``ZstdCompressor(level)`` alike, with ``ZstdCompressor.FLUSH_FRAME``; pyzstd 0.20 and later
    are a layer over the first two (the same compressor, the same frames byte for byte:
    tests/test_cbor_format.py). ImportError naming pyzstd (the dependency) if there is none."""
    try:
        if sys.version_info >= (3, 14):
            import compression.zstd as zstd  # imported when used: start-up (a trace.json needs none)
        else:
            import backports.zstd as zstd  # (pyzstd >= 0.20 installs it: the same compressor)
    except ImportError:
        import pyzstd as zstd
    return zstd


# -- the file: header, frames, seek table -----------------------------------------------------------

def seek_table(frames: Sequence[tuple[int, int]]) -> bytes:
    """The seek-table skippable frame that ends a seekable stream: for each frame its compressed and
    decompressed size (u32 each, no checksums), the frame count, the descriptor byte (0: no
    checksums), the seekable magic; little-endian."""
    entries = b"".join([struct.pack("<II", compressed, size) for compressed, size in frames])
    footer = struct.pack("<IBI", len(frames), 0, _SEEKABLE_MAGIC)
    body = entries + footer
    return struct.pack("<II", _SKIPPABLE_MAGIC, len(body)) + body


class SeekableFrames:
    """How ``trace.bin`` is framed: ``HEADER``, then every batch of events as independent zstd
    frames of at most ``FRAME_BYTES`` each (``frames_of``), then ``seek_table`` of the frames."""

    header = HEADER

    def __init__(self, level: int = ZSTD_LEVEL) -> None:
        zstd = zstd_binding()
        if cbor2 is None:   # imported with this module (order_key needs it), or not installed
            raise ImportError("trace.bin needs the cbor2 package", name="cbor2")
        self.level = level
        self._compress = zstd.compress
        self._compressor = zstd.ZstdCompressor
        self._end_frame = zstd.ZstdCompressor.FLUSH_FRAME

    def frame(self, data: bytes) -> bytes:
        """One complete zstd frame holding ``data`` (at most ``FRAME_BYTES``), made whole before it
        is returned (the binding's ``compress``: Python code around one compression in C)."""
        return self._compress(data, self.level)

    def frames_of(self, events: list[bytes]) -> tuple[list[bytes], list[tuple[int, int]]]:
        """The concatenated ``events`` as complete zstd frames: their compressed bytes in pieces,
        and each frame's (compressed, decompressed) size, its seek-table entry. A frame ends once
        it holds ``FRAME_BYTES`` (cut wherever that falls: the frames decompress to one stream, and
        an item may go on in the next frame, as ``SeekableZstdFile`` writes them too).

        Fed in pieces of about ``_FEED_BYTES``: joining a whole batch first would double its memory
        (a batch of IO can be tens of MB). A fresh compressor per frame, so a frame cut short by an
        interruption leaves nothing behind."""
        make, level, end_frame, limit = self._compressor, self.level, self._end_frame, FRAME_BYTES
        pieces: list[bytes] = []
        frames: list[tuple[int, int]] = []
        compressor, compressed, size = make(level), 0, 0     # the frame being made
        for data in _joined(events, _FEED_BYTES):
            view = memoryview(data)
            while view:
                if size == limit:       # full, and more to come: end it, start the next
                    last = compressor.flush(end_frame)
                    pieces.append(last)
                    frames.append((compressed + len(last), size))
                    compressor, compressed, size = make(level), 0, 0
                part, view = view[:limit - size], view[limit - size:]
                size += len(part)
                piece = compressor.compress(part)
                if piece:
                    pieces.append(piece)
                    compressed += len(piece)
        last = compressor.flush(end_frame)
        pieces.append(last)
        frames.append((compressed + len(last), size))
        return pieces, frames

    @staticmethod
    def end(frames: Sequence[tuple[int, int]]) -> bytes:
        return seek_table(frames)


def _joined(events: list[bytes], size: int) -> Iterator[bytes]:
    """``events`` joined into runs of about ``size`` bytes (an event over ``size``: alone)."""
    start, pending = 0, 0
    for i, event in enumerate(events):
        pending += len(event)
        if pending >= size:
            yield b"".join(events[start:i + 1])
            start, pending = i + 1, 0
    if start < len(events):
        yield b"".join(events[start:])


class CborFormat:
    """``format.TraceFormat`` for ``trace.bin``."""

    name = "bin"
    events = CborEvents()
    values = CborValues()

    @staticmethod
    def frames() -> SeekableFrames:
        """The framing of a new file (imports the zstd binding: a JSON recording never needs it)."""
        return SeekableFrames()


#: The binary format (stateless: one instance serves every trace).
BIN = CborFormat()


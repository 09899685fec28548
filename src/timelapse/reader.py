"""Load a CodeTracer trace folder and resolve its ids.

A trace stream never writes an id: each one is the ordinal of its defining event (the third
``Path`` event defines PathId 2). Reading a trace therefore means replaying the stream the way
CodeTracer's db-backend does, and this module does that once so that ``timelapse check``, the tests
and users can ask "which calls were made, with which arguments" without re-deriving the id rules.

The reader does not validate: :mod:`timelapse.checker` does. ``Trace.load`` only refuses a folder
whose files are missing or cannot be parsed (:class:`TraceUnreadable`); resolving the calls and
steps of a stream that breaks the format's rules raises :class:`ValueError` naming the event.

The format is described in ``shared/trace-format.md``; section numbers below refer to it.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import functools
import gc
import io
import itertools
import json
import os
import re
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from timelapse.cbor_format import HEADER

__all__ = [
    "BIN_MAGIC",
    "Call",
    "ErrorValue",
    "LeftOut",
    "RawValue",
    "Step",
    "SeekTable",
    "Trace",
    "TraceUnreadable",
    "decode_raw_value",
    "decode_value",
    "iter_events",
    "read_seek_table",
    "read_side_files",
    "split_event",
    "stream_path",
]

#: The first 8 bytes of a ``trace.bin`` in the CBOR + seekable zstd encoding (section 5): the
#: header the recorder writes, under the reader's name.
BIN_MAGIC = HEADER

#: A JSON-shaped ValueRecord, e.g. ``{"kind": "Int", "type_id": 3, "i": 5}``.
ValueRecord = dict[str, Any]


class TraceUnreadable(Exception):
    """The trace folder, or one of its files, is missing or cannot be parsed.

    The message is one line, fit to be printed after ``timelapse: error:``.
    """


@dataclass(frozen=True)
class ErrorValue:
    """What :func:`decode_value` returns for an ``Error`` ValueRecord: a value not captured."""

    msg: str


@dataclass(eq=False)
class Call:
    """One function activation: a ``Call`` event and, if it came, its ``Return``."""

    function: str
    path: str
    line: int
    args: dict[str, ValueRecord]
    #: The ValueRecord of the ``Return``, or None if the call never returned.
    return_value: ValueRecord | None
    #: 0 for ``<toplevel>``, 1 for the calls it makes, ...
    depth: int
    #: The thread of the latest ThreadStart/ThreadSwitch before the call, None if there was none.
    thread: int | None
    #: Index of the ``Call`` event in ``Trace.events``.
    index: int
    function_id: int
    children: list[Call] = field(default_factory=list, repr=False)
    parent: Call | None = field(default=None, repr=False)


@dataclass(eq=False)
class Step:
    """One executed line, with the Values recorded after it (section 4, rule 4) and the arguments
    of a Call that follows it."""

    path: str
    line: int
    #: Variable name -> ValueRecord: the ``Value`` events that follow this Step, and the arguments
    #: of a ``Call`` that follows it (the db-backend adds a Call's args to the variables of the step
    #: before it, its def-line Step: timelapse writes no Values there). A name given twice: the
    #: later event's record.
    values: dict[str, ValueRecord]
    #: Index of the ``Step`` event in ``Trace.events``.
    index: int
    #: The call this step is shown in: the innermost open Call, except that the step right before a
    #: ``Call`` belongs to that new call, as the db-backend binds it (section 4, rule 3).
    call: Call | None = field(default=None, repr=False)


def split_event(event: Any) -> tuple[str | None, Any]:
    """Return ``(variant, payload)`` of a raw event; ``(None, event)`` if it has no valid envelope.

    ``"DropLastStep"`` splits into ``("DropLastStep", None)``.
    """
    if type(event) is dict:
        if len(event) == 1:
            for variant, payload in event.items():
                if type(variant) is str:
                    return variant, payload
        return None, event
    if event == "DropLastStep":
        return "DropLastStep", None
    return None, event


class Trace:
    """A loaded trace folder: the raw event stream, the side files, and views with ids resolved."""

    def __init__(
        self,
        folder: Path,
        events: list[Any],
        metadata: dict[str, Any],
        paths: list[Any],
        stream_file: str,
    ) -> None:
        self.folder = folder
        #: The raw, JSON-shaped events, in stream order.
        self.events = events
        #: The parsed ``trace_metadata.json`` object.
        self.metadata = metadata
        #: The parsed ``trace_paths.json`` array.
        self.paths = paths
        #: ``"trace.json"`` or ``"trace.bin"``: which file the events came from.
        self.stream_file = stream_file
        self._tables: _Tables | None = None
        self._replayed: tuple[list[Call], list[Step]] | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Trace:
        """Read a trace folder. Raises :class:`TraceUnreadable` with a one-line reason."""
        folder = Path(folder)
        path = stream_path(folder)
        with _gc_paused():
            events = list(_iter_stream(path))
        metadata, paths = read_side_files(folder)
        return cls(folder, events, metadata, paths, path.name)

    def __repr__(self) -> str:
        return f"<Trace {str(self.folder)!r}: {len(self.events)} events from {self.stream_file}>"

    # -- id tables -------------------------------------------------------------------------------

    @property
    def path_names(self) -> list[str]:
        """PathId -> path, from the ``Path`` events."""
        return self._get_tables().paths

    @property
    def functions(self) -> list[dict[str, Any]]:
        """FunctionId -> ``Function`` payload (``path_id``, ``line``, ``name``)."""
        return self._get_tables().functions

    @property
    def types(self) -> list[dict[str, Any]]:
        """TypeId -> ``Type`` payload (``kind``, ``lang_type``, ``specific_info``)."""
        return self._get_tables().types

    @property
    def variable_names(self) -> list[str]:
        """VariableId -> name, from the ``VariableName`` events."""
        return self._get_tables().variables

    def _get_tables(self) -> _Tables:
        if self._tables is None:
            self._tables = _Tables.build(self.events)
        return self._tables

    # -- views -----------------------------------------------------------------------------------

    def calls(self) -> list[Call]:
        """Every Call, in stream order (so ``calls()[0]`` is ``<toplevel>``)."""
        return self._replay()[0]

    def steps(self) -> list[Step]:
        """Every Step still standing after ``DropLastStep`` retractions, in stream order."""
        return self._replay()[1]

    def events_of(self, variant: str) -> list[Any]:
        """The payloads of one variant's events, e.g. ``events_of("Event")``, in stream order."""
        return [payload for kind, payload in map(split_event, self.events) if kind == variant]

    def _replay(self) -> tuple[list[Call], list[Step]]:
        if self._replayed is None:
            with _gc_paused():
                self._replayed = _Replay(self._get_tables()).run(self.events)
        return self._replayed


@dataclass
class _Tables:
    """The id tables of a stream: index i of each list is the id i."""

    paths: list[str]
    functions: list[dict[str, Any]]
    types: list[dict[str, Any]]
    variables: list[str]

    @classmethod
    def build(cls, events: list[Any]) -> _Tables:
        tables = cls([], [], [], [])
        by_variant = {
            "Path": tables.paths,
            "Function": tables.functions,
            "Type": tables.types,
            "VariableName": tables.variables,
            "Variable": tables.variables,  # the legacy spelling of VariableName
        }
        for event in events:
            if type(event) is dict and len(event) == 1:
                for variant, payload in event.items():
                    table = by_variant.get(variant)
                    if table is not None:
                        table.append(payload)
        return tables


class _Replay:
    """Rebuild calls and steps from the stream, as the db-backend's trace processor does."""

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables
        self.calls: list[Call] = []
        self.steps: list[Step] = []
        self.stack: list[Call] = []
        self.thread: int | None = None

    def run(self, events: list[Any]) -> tuple[list[Call], list[Step]]:
        handlers = {
            "Step": self.on_step,
            "Value": self.on_value,
            "Call": self.on_call,
            "Return": self.on_return,
            "DropLastStep": self.on_drop_last_step,
            "ThreadStart": self.on_thread,
            "ThreadSwitch": self.on_thread,
        }
        for index, event in enumerate(events):
            if type(event) is dict and len(event) == 1:  # split_event for the usual event,
                ((variant, payload),) = event.items()  # inlined: one call less per event
            else:
                variant, payload = split_event(event)
            handler = handlers.get(variant)  # type: ignore[arg-type]
            if handler is None:
                continue
            try:
                handler(index, payload)
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise ValueError(
                    f"event {index}: cannot resolve {variant} ({type(exc).__name__}: {exc});"
                    " run `timelapse check` on the trace"
                ) from exc
        return self.calls, self.steps

    def on_step(self, index: int, payload: dict[str, Any]) -> None:
        path = self.tables.paths[_id(payload["path_id"])]
        call = self.stack[-1] if self.stack else None
        self.steps.append(Step(path, payload["line"], {}, index, call))

    def on_value(self, index: int, payload: dict[str, Any]) -> None:
        if self.steps:  # a Value before any Step belongs to no step
            name = self.tables.variables[_id(payload["variable_id"])]
            self.steps[-1].values[name] = payload["value"]

    def on_call(self, index: int, payload: dict[str, Any]) -> None:
        function_id = _id(payload["function_id"])
        function = self.tables.functions[function_id]
        args = {
            self.tables.variables[_id(arg["variable_id"])]: arg["value"]
            for arg in payload.get("args", ())
        }
        parent = self.stack[-1] if self.stack else None
        call = Call(
            function=function["name"],
            path=self.tables.paths[_id(function["path_id"])],
            line=function["line"],
            args=args,
            return_value=None,
            depth=len(self.stack),
            thread=self.thread,
            index=index,
            function_id=function_id,
            parent=parent,
        )
        if parent is not None:
            parent.children.append(call)
        if self.steps:
            # The db-backend binds the step before a Call to it, and adds the Call's arguments to
            # that step's variables.
            self.steps[-1].call = call
            self.steps[-1].values.update(args)
        self.calls.append(call)
        self.stack.append(call)

    def on_return(self, index: int, payload: dict[str, Any]) -> None:
        if self.stack:  # a Return with no open Call is the checker's business
            self.stack.pop().return_value = payload["return_value"]

    def on_drop_last_step(self, index: int, payload: None) -> None:
        if self.steps:
            self.steps.pop()

    def on_thread(self, index: int, payload: int) -> None:
        self.thread = payload


def _id(value: Any) -> int:
    """An id from the stream; negative or non-integer ids are not list indexes."""
    if type(value) is not int or value < 0:
        raise IndexError(f"invalid id {value!r}")
    return value


# -- loading ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of containers that are all kept.

    Each collection would traverse everything built so far, for nothing: loading a trace of a few
    million events takes about half as long without them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str, filename: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise TraceUnreadable(
            f"{filename} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise TraceUnreadable(f"{filename} is not valid JSON: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceUnreadable(f"missing {path.name} in {path.parent}") from None
    except UnicodeDecodeError as exc:
        raise TraceUnreadable(
            f"{path.name} is not valid UTF-8 (byte offset {exc.start})"
        ) from None
    except OSError as exc:
        raise TraceUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None


def read_side_files(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Any]]:
    """The parsed ``trace_metadata.json`` object and ``trace_paths.json`` array of a trace folder
    (small files, read whole). Raises :class:`TraceUnreadable` if one is missing or malformed."""
    folder = Path(folder)
    metadata = _load_json_file(folder / "trace_metadata.json", dict, "an object")
    paths = _load_json_file(folder / "trace_paths.json", list, "an array")
    return metadata, paths


def _load_json_file(path: Path, expected: type, described: str) -> Any:
    data = _parse_json(_read_text(path), path.name)
    if type(data) is not expected:
        raise TraceUnreadable(f"{path.name} is not {described}")
    return data


# -- streaming the events ----------------------------------------------------------------------
#
# A trace's stream can be gigabytes: parsing it whole costs 7-10 times its size in memory. The
# functions below yield one event at a time, holding only the block being parsed (and, at most,
# the largest single event), so that ``timelapse check`` runs in bounded memory.

#: How much of ``trace.json`` is read at a time (more when one event is larger than this).
_BLOCK_SIZE = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_CHARS = re.compile(r"[0-9.eE+-]*")
#: What a file cut inside a number or a literal ("tru", "-1.") leaves after the error position.
_PARTIAL_TOKEN = re.compile(r"[0-9A-Za-z.+-]*")
#: An error this close to the end of the text read so far may just mean the event continues in
#: the next block (``tru`` of ``true``, ``-`` of ``-5``, ``\\u00`` of an escape): read on, retry.
_NEAR_END = 16


def stream_path(folder: str | os.PathLike[str]) -> Path:
    """The event stream file of a trace folder: ``trace.json``, else ``trace.bin`` (as the
    db-backend looks for them). Raises :class:`TraceUnreadable` if there is neither."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise TraceUnreadable(f"{what}: {folder}")
    for name in ("trace.json", "trace.bin"):
        if (folder / name).is_file():
            return folder / name
    raise TraceUnreadable(f"{folder} has no trace.json or trace.bin")


@dataclass
class LeftOut:
    """How many Value events ``iter_events(..., values=False, left_out=...)`` has left out so far."""

    values: int = 0


class RawValue:
    """A Value event not decoded yet (``iter_events(raw_values=True)``): ``data`` is its CBOR bytes
    or its JSON text, or (where it was decoded after all: no compiled scanner, or an event spelled
    otherwise than the recorder spells it) the event itself. ``decode()`` gives the event, as
    ``iter_events`` would have; it raises ``ValueError`` (or cbor2's error) for a damaged one."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | str | dict) -> None:
        self.data = data

    def decode(self) -> dict:
        return decode_raw_value(self.data)


def decode_raw_value(data: bytes | str | dict) -> Any:
    """The event a ``RawValue.data`` holds (see ``RawValue``)."""
    if type(data) is bytes:
        import cbor2

        return cbor2.loads(data, max_depth=_CBOR_DEPTH)
    if type(data) is str:
        return _decode_json_whole(data)
    return data


def iter_events(folder: str | os.PathLike[str], *, values: bool = True, left_out: LeftOut | None = None,
                raw_values: bool = False) -> Iterator[Any]:
    """Yield the raw, JSON-shaped events of a trace folder one at a time, in stream order.

    Memory stays bounded by the largest single event, whatever the size of the stream, so this is
    the way to go through a huge trace (``Trace.load`` keeps every event). Raises
    :class:`TraceUnreadable` (one line, naming the byte offset or the event) if the folder has no
    stream or the stream cannot be read; the events before the damage have been yielded by then.

    ``values=False`` leaves the ``Value`` events out, for a reader that never looks at them
    (``timelapse summary``): with the compiled ``timelapse._eventscan`` they are not even decoded,
    only their ends found (several times faster: Values are most of a trace), and then they are
    not checked either (a damaged Value is not reported; ``timelapse check`` reports it).
    ``left_out`` counts them. ``raw_values=True`` gives each Value event as a :class:`RawValue`,
    to be decoded when (and if) it is looked at (``timelapse view``); the same scanner finds them.
    """
    mode = "leave" if not values else "raw" if raw_values else "keep"
    return _iter_stream(stream_path(folder), mode, left_out or LeftOut())


def _iter_stream(path: Path, mode: str = "keep", left_out: LeftOut | None = None) -> Iterator[Any]:
    """``mode``: what becomes of Value events: "keep" (as any event), "leave" (out, counted in
    ``left_out``) or "raw" (a ``RawValue`` each)."""
    left_out = left_out or LeftOut()
    if path.name == "trace.bin":
        return _iter_bin_stream(path, mode, left_out)
    return _iter_json_stream(path, mode, left_out)


def _iter_json_stream(path: Path, mode: str, left_out: LeftOut) -> Iterator[Any]:
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed by the generator)
    except OSError as exc:
        raise TraceUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    with file:
        yield from _JsonArrayReader(file, path.name).elements(mode, left_out)


def _load_eventscan() -> Any:
    """``timelapse._eventscan`` if it is built and not refused (``TIMELAPSE_PURE``, the same rule
    as ``snapshot``'s), else None: then every event is decoded, and Values dropped afterwards."""
    if os.environ.get("TIMELAPSE_PURE", "") not in ("", "0"):
        return None
    try:
        from timelapse import _eventscan
    except ImportError:
        return None
    return _eventscan


#: The compiled event scanner, or None (see ``iter_events``'s ``values``).
EVENTSCAN = _load_eventscan()
#: How a Value event starts, in each format as the recorder spells it (a map of one entry whose key
#: is "Value"); an event spelled otherwise is decoded and then dropped, which is only slower.
_CBOR_VALUE_START = b"\xa1\x65Value"
_JSON_VALUE_KEY = "Value"


def _is_value(event: Any) -> bool:
    return type(event) is dict and len(event) == 1 and "Value" in event


def _as_mode(event: Any, mode: str, left_out: LeftOut) -> Any:
    """An event decoded the ordinary way, as ``mode`` wants it (``_NOTHING``: left out)."""
    if mode == "keep" or not _is_value(event):
        return event
    if mode == "raw":
        return RawValue(event)
    left_out.values += 1
    return _NOTHING


_NOTHING = object()


def _scanner(stream_format: str, mode: str) -> Any:
    """The compiled scan for a format ("cbor" or "json") and a mode, or None: with "leave" the one
    that skips Values (``*_events``), with "raw" the one that flags them (``*_split``)."""
    if EVENTSCAN is None or mode == "keep":
        return None
    return getattr(EVENTSCAN, f"{stream_format}_{'events' if mode == 'leave' else 'split'}")


def _scanned(items: list, flags: list | int, decode: Any, mode: str, left_out: LeftOut
             ) -> tuple[list, int] | None:
    """The events of one batch the compiled scanner found whole (``items``, bytes or texts), in
    order, as ``mode`` wants them, and how many events of the stream the batch was: with "leave",
    ``flags`` is the count of Values it skipped; with "raw", ``flags[i]`` says whether ``items[i]``
    is a Value, kept undecoded. None if an item that must be decoded cannot be: then the ordinary
    way decodes the batch (and counts it) and says what is wrong where."""
    events = []
    try:
        if mode == "leave":
            dropped = flags     # skipped by the scanner, and below, Values spelled otherwise
            for item in items:
                event = decode(item)
                if _is_value(event):
                    dropped += 1  # type: ignore[operator]
                else:
                    events.append(event)
            left_out.values += dropped  # type: ignore[operator]
            return events, len(items) + flags  # type: ignore[operator]
        else:
            for item, is_value in zip(items, flags):  # type: ignore[call-overload]
                if is_value:
                    events.append(RawValue(item))
                else:
                    event = decode(item)
                    events.append(RawValue(event) if _is_value(event) else event)
    except Exception:
        return None
    return events, len(items)


_JSON_SCAN = json.JSONDecoder(parse_constant=_reject_constant).scan_once


def _decode_json_whole(text: str) -> Any:
    """One element's whole text, decoded as ``_JsonArrayReader.element`` decodes it."""
    try:
        value, end = _JSON_SCAN(text, 0)
    except StopIteration:
        raise ValueError("expecting a value") from None
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


class _JsonArrayReader:
    """Yields the elements of the JSON array in a binary file, reading it block by block.

    Any valid JSON array is accepted (one line, one event a line, pretty-printed). Each element is
    decoded by the C scanner of :mod:`json` straight from the text buffer, which also tells where
    the element ends, so strings holding ``,``, ``]`` or escaped quotes need no scanning of ours.
    Damage raises :class:`TraceUnreadable` naming the byte offset and the event.
    """

    def __init__(self, file: io.BufferedIOBase | Any, name: str) -> None:
        self.file = file
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.scan = _JSON_SCAN
        self.text = ""  # decoded text not yet consumed (from self.pos on)
        self.pos = 0
        self.bytes_read = 0
        self.eof = False

    def elements(self, mode: str = "keep", left_out: LeftOut | None = None) -> Iterator[Any]:
        """The array's elements; the Value events as ``mode`` says (``_iter_stream``)."""
        first = self.next_char()
        if first != "[":
            if first and (first in '{"' or self.starts_a_value()):
                raise TraceUnreadable(f"{self.name} is not a JSON array")
            found = "the file is empty" if not first else f"found {first!r}"
            self.fail(f"expected '[' at byte {self.byte_offset(self.pos)}, {found}")
        self.pos += 1
        if self.next_char() == "]":
            self.pos += 1
            self.expect_end()
            return
        index = 0
        left_out = left_out or LeftOut()
        scan = _scanner("json", mode)
        while True:
            if scan is not None:
                # The elements whole in the buffer, at C speed: the Values skipped or kept
                # undecoded, the others decoded as below. Anything it stops at (the buffer's
                # end, a number, damage) is left to the ordinary way, one element, then this again.
                texts, flags, end, closed = scan(self.text, self.pos, _JSON_VALUE_KEY)
                if texts or flags:
                    batch = _scanned(texts, flags, _decode_json_whole, mode, left_out)
                    if batch is None:
                        scan = None     # damage among them: the ordinary way says what and where
                    else:
                        yield from batch[0]
                        index += batch[1]
                        self.pos = end
                        if closed:      # text[end] is the ']'
                            self.pos += 1
                            self.expect_end()
                            return
                        continue        # at the next element, after its ','
            element = _as_mode(self.element(index), mode, left_out)
            if element is not _NOTHING:
                yield element
            char = self.next_char()
            if char == ",":
                self.pos += 1
                index += 1
            elif char == "]":
                self.pos += 1
                self.expect_end()
                return
            elif not char:
                self.fail(f"the file ends after event {index} without the closing ']' (truncated?)")
            else:
                self.fail(
                    f"expected ',' or ']' after event {index}, found {char!r}"
                    f" at byte {self.byte_offset(self.pos)}"
                )

    def starts_a_value(self) -> bool:
        """Whether the text at the current position begins with a JSON value (a number, ...)."""
        try:
            self.scan(self.text, self.pos)
        except (StopIteration, ValueError, RecursionError):
            return False
        return True

    def element(self, index: int) -> Any:
        """Decode the element at the current position, reading more of the file as needed."""
        while True:
            if not self.next_char():
                self.fail(f"the file ends after a ',' where event {index} should be (truncated?)")
            try:
                value, end = self.scan(self.text, self.pos)
            except StopIteration as exc:  # how the scanner says "Expecting value"
                message, at = "expecting a value", exc.value
            except json.JSONDecodeError as exc:
                message, at = exc.msg, exc.pos
            except ValueError as exc:  # NaN or Infinity, refused by _reject_constant
                message, at = str(exc), self.pos
            except RecursionError:
                self.fail(f"event {index} is nested too deeply to decode")
            else:
                # A number is the one element that does not say where it ends: "12" or "0." at
                # the end of the buffer may be the start of "1234" or "0.5". Read on and retry.
                at_end = end == len(self.text) or (
                    type(value) in (int, float)
                    and _NUMBER_CHARS.match(self.text, end).end() == len(self.text)  # type: ignore[union-attr]
                )
                if not at_end or not self.read_more():
                    self.pos = end
                    return value
                continue
            unterminated = message.startswith("Unterminated")
            if unterminated or at >= len(self.text) - _NEAR_END:
                start = self.pos
                if self.read_more():
                    continue  # the event may go on in the next block: decode it again, whole
                at -= start - self.pos  # read_more dropped what was consumed
            # The whole rest of the file is in the buffer now: did it end mid-event?
            if unterminated or _PARTIAL_TOKEN.fullmatch(self.text[at:].strip()):
                start = self.byte_offset(self.pos)
                self.fail(
                    f"the file ends inside event {index}, which starts at byte {start}"
                    " (truncated?)"
                )
            self.fail(f"{message} at byte {self.byte_offset(at)} (in event {index})")

    def next_char(self) -> str:
        """Skip whitespace; return the next character, or "" at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.read_more():
                return ""

    def read_more(self) -> bool:
        """Append the next block to the buffer (dropping what was consumed); False at the end.

        The block is at least as large as the unfinished event, so that an event spanning many
        blocks is decoded O(log size) times, not once per block.
        """
        if self.eof:
            return False
        self.text = self.text[self.pos :]
        self.pos = 0
        while True:
            data = self.file.read(max(_BLOCK_SIZE, len(self.text)))
            before = self.bytes_read - len(self.decoder.getstate()[0])
            self.bytes_read += len(data)
            try:
                decoded = self.decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise TraceUnreadable(
                    f"{self.name} is not valid UTF-8 (byte offset {before + exc.start})"
                ) from None
            if not data:
                self.eof = True
            if decoded or self.eof:
                self.text += decoded
                return bool(decoded)

    def byte_offset(self, at: int) -> int:
        """The offset in the file of the character at ``self.text[at]``."""
        end_of_text = self.bytes_read - len(self.decoder.getstate()[0])
        return end_of_text - len(self.text[at:].encode("utf-8", "surrogatepass"))

    def expect_end(self) -> None:
        if self.next_char():
            self.fail(f"extra data after the closing ']' at byte {self.byte_offset(self.pos)}")

    def fail(self, reason: str) -> NoReturn:
        raise TraceUnreadable(f"{self.name} is not valid JSON: {reason}")


# -- trace.bin ---------------------------------------------------------------------------------
#
# trace.bin (section 5) is read frame by frame here rather than through pyzstd.SeekableZstdFile:
# that class refuses a file without its seek table, so a file cut short (the usual damage: a
# killed writer, a full disk, a partial copy) could only be reported as "not seekable", and it
# never compares the table's per-frame sizes with the frames. Each frame is decompressed on its
# own (pyzstd.ZstdDecompressor, in pieces of at most _PIECE bytes) and checked against its entry
# in the table; a file without a table is walked from byte 8 frame by frame, so the message can
# name the frame the cut falls in. The CBOR items are decoded from each piece in memory, an item
# that goes on in the next piece being decoded again once that piece is there: cbor2 reads a
# seekable file 4 KB at a time and seeks back over what it did not use, cheap on a BytesIO and
# costly on a decompressing file (through SeekableZstdFile, 2 times slower with the writer's
# 4 MB frames, 80 times with frames of 64 bytes: measured).

#: The magic numbers of the Zstandard seekable format (little-endian in the file).
_ZSTD_MAGIC = 0xFD2FB528
_SEEK_TABLE_MAGIC = 0x184D2A5E     # the seek table's skippable frame
_SEEKABLE_MAGIC = 0x8F92EAB1       # the last 4 bytes of the file
_FOOTER = struct.Struct("<IBI")    # frame count, descriptor, seekable magic
_HEADER_SIZE = len(BIN_MAGIC)
#: Compressed bytes read at a time, and the most decompressed bytes in one piece.
_READ = 1 << 17
_PIECE = 1 << 20


@dataclass(frozen=True)
class SeekTable:
    """The seek table that ends a ``trace.bin``: each frame's (compressed, decompressed) size."""

    frames: tuple[tuple[int, int], ...]
    #: The size of the whole file: header, frames and table.
    file_size: int

    @property
    def decompressed_size(self) -> int:
        """Bytes of CBOR the frames hold."""
        return sum(size for _, size in self.frames)


def read_seek_table(path: str | os.PathLike[str]) -> SeekTable | None:
    """The seek table of the ``trace.bin`` at ``path``, or None if the file has none (it was cut
    short: ``iter_events`` names the frame where). Only the table is read: that it matches the
    frames is checked as ``iter_events`` decompresses them. Raises :class:`TraceUnreadable` if the
    header is not this encoding's or the table is damaged."""
    path = Path(path)
    with _open_bin(path) as file:
        return _seek_table(file, os.fstat(file.fileno()).st_size)


#: Nesting a valid trace can reach: 4 CBOR levels per value level (a dict's entries are Tuples),
#: at most 100 levels (config.MAX_DEPTH_LIMIT), and the event around the value.
_CBOR_DEPTH = 8 * 100 + 64


def _iter_bin_stream(path: Path, mode: str = "keep", left_out: LeftOut | None = None) -> Iterator[Any]:
    """Decode ``trace.bin``: the header, then CBOR items in a zstd seekable stream (section 5).

    Frames are decompressed as the items are read, so memory stays bounded by a frame's
    compressed size, one piece and the largest item.
    """
    try:
        import cbor2
        import pyzstd
    except ImportError as exc:
        raise TraceUnreadable(
            f"reading trace.bin needs the cbor2 and pyzstd packages ({exc.name} is not installed:"
            f" pip install {exc.name})"
        ) from None
    with _open_bin(path) as file:
        size = os.fstat(file.fileno()).st_size
        table = _seek_table(file, size)
        total = table.decompressed_size if table is not None else None
        yield from _cbor_items(_bin_pieces(file, size, table, pyzstd), cbor2, total, mode,
                               left_out or LeftOut())


def _open_bin(path: Path) -> io.BufferedReader:
    """``trace.bin`` opened, its 8-byte header read and checked."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (the callers close it)
    except OSError as exc:
        raise TraceUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    header = file.read(_HEADER_SIZE)
    problem = None
    if len(header) < _HEADER_SIZE and BIN_MAGIC.startswith(header):
        problem = ("trace.bin is empty (truncated: not even its 8-byte header)" if not header else
                   f"trace.bin is truncated: it ends at byte {len(header)}, inside its 8-byte header")
    elif header[:5] != BIN_MAGIC[:5]:
        problem = "trace.bin does not start with the magic C0 DE 72 AC E2"
    elif header != BIN_MAGIC:
        problem = (f"trace.bin header {header.hex(' ').upper()} is not the CBOR + seekable zstd"
                   f" encoding ({BIN_MAGIC.hex(' ').upper()})")
    if problem is not None:
        file.close()
        raise TraceUnreadable(problem)
    return file


def _seek_table(file: io.BufferedReader, size: int) -> SeekTable | None:
    """Read and check the seek table at the end of the file; None if the file does not end with
    one (the footer's magic is the last 4 bytes of a complete file)."""
    if size < _HEADER_SIZE + 8 + _FOOTER.size:
        return None
    file.seek(size - _FOOTER.size)
    count, descriptor, magic = _FOOTER.unpack(file.read(_FOOTER.size))
    if magic != _SEEKABLE_MAGIC:
        return None
    if descriptor & 0x7C:
        raise _bad_table("the reserved bits of its descriptor are set")
    entry = struct.Struct("<III" if descriptor & 0x80 else "<II")  # with checksums, or not
    table_size = 8 + count * entry.size + _FOOTER.size
    start = size - table_size
    if start < _HEADER_SIZE:
        raise _bad_table(f"it lists {count} frames, more than a file of {size} bytes can hold")
    file.seek(start)
    table = file.read(table_size)
    frame_magic, frame_size = struct.unpack_from("<II", table)
    if frame_magic != _SEEK_TABLE_MAGIC or frame_size != table_size - 8:
        raise _bad_table(f"the header of its skippable frame (at byte {start}) is wrong")
    frames = tuple(entry[:2] for entry in entry.iter_unpack(table[8:-_FOOTER.size]))
    total = sum(compressed for compressed, _ in frames)
    if total != start - _HEADER_SIZE:
        raise _table_mismatch(
            f"its {count} frames add up to {total} bytes, but {start - _HEADER_SIZE} bytes lie"
            " between the header and the table")
    return SeekTable(frames, size)


def _bin_pieces(file: io.BufferedReader, size: int, table: SeekTable | None, zstd: Any
                ) -> Iterator[bytes]:
    """The decompressed bytes of the file's frames, in order, in pieces of at most _PIECE bytes
    (``table``: the file's seek table, or None; ``zstd``: the pyzstd module)."""
    if table is None:
        yield from _walk_frames(file, size, zstd)
        return
    start = _HEADER_SIZE
    for index, (compressed, expected) in enumerate(table.frames):
        if compressed == 0:
            if expected:
                raise _table_mismatch(f"it gives frame {index} 0 bytes that decompress to"
                                      f" {expected}")
            continue  # an empty entry: nothing there (pyzstd skips these too)
        where = f"frame {index} (at byte {start})"
        produced = 0
        pieces = _frame_pieces(file, index, start, start + compressed, zstd)
        while True:
            try:
                piece = next(pieces)
            except StopIteration as stop:
                end = stop.value
                break
            produced += len(piece)
            if produced > expected:
                raise _table_mismatch(
                    f"{where} decompresses to more than the {expected} bytes it gives")
            yield piece
        if end is None:
            raise _table_mismatch(f"{where} is longer than the {compressed} bytes it gives")
        if end != start + compressed:
            raise _table_mismatch(f"{where} is {end - start} bytes, not the {compressed} it gives")
        if produced != expected:
            raise _table_mismatch(
                f"{where} decompresses to {produced} bytes, not the {expected} it gives")
        start = end


def _walk_frames(file: io.BufferedReader, size: int, zstd: Any) -> Iterator[bytes]:
    """The frames of a file without a seek table, walked from byte 8; then the error that names
    where the file was cut (a table is always there at the end of a complete file)."""
    start, index = _HEADER_SIZE, 0
    while start < size:
        file.seek(start)
        head = file.read(8)
        magic = int.from_bytes(head[:4], "little")
        if _SEEK_TABLE_MAGIC.to_bytes(4, "little").startswith(head[:4]):
            frame_end = start + 8 + int.from_bytes(head[4:8], "little")
            if len(head) < 8 or frame_end > size:
                after = f"after frame {index - 1}" if index else "before any frame"
                raise _truncated(f"the seek table (at byte {start}, {after}) is cut short")
            if frame_end == size:
                raise _bad_table(f"its footer (at byte {size - _FOOTER.size}) is wrong")
            # A complete skippable frame with more after it: the decompressor skips it.
        elif len(head) < 4:
            if not _ZSTD_MAGIC.to_bytes(4, "little").startswith(head):
                raise _damaged(f"frame {index} (at byte {start}) is not a zstd frame; the seek table"
                               " is missing")
        elif magic != _ZSTD_MAGIC and magic & 0xFFFFFFF0 != 0x184D2A50:  # nor a skippable frame
            raise _damaged(f"frame {index} (at byte {start}) is not a zstd frame; the seek table is"
                           " missing")
        end = yield from _frame_pieces(file, index, start, size, zstd)
        if end is None:
            raise _truncated(f"frame {index} (at byte {start}) is cut short; the seek table is"
                             " missing")
        start, index = end, index + 1
    if index == 0:
        raise _truncated("it ends after its 8-byte header; frame 0 and the seek table are missing")
    raise _truncated(f"it ends at byte {size}, after frame {index - 1}; the seek table is missing")


def _frame_pieces(file: io.BufferedReader, index: int, start: int, limit: int, zstd: Any
                  ) -> Generator[bytes, None, int | None]:
    """Decompress the frame at byte ``start``, reading no further than ``limit``; yield its bytes
    in pieces. Return where the frame ends, or None if it does not end before ``limit``."""
    decompressor = zstd.ZstdDecompressor()
    file.seek(start)
    position = start
    while not decompressor.eof:
        data = b""
        if decompressor.needs_input:   # else it holds output it could not give in one piece
            if position >= limit:
                return None
            data = file.read(min(_READ, limit - position))
            if not data:
                return None
            position += len(data)
        try:
            piece = decompressor.decompress(data, _PIECE)
        except zstd.ZstdError as exc:
            raise _damaged(f"frame {index} (at byte {start}) cannot be decompressed:"
                           f" {_zstd_reason(exc)}") from None
        if piece:
            yield piece
    return position - len(decompressor.unused_data)


def _cbor_items(pieces: Iterator[bytes], cbor2: Any, total: int | None = None, mode: str = "keep",
                left_out: LeftOut | None = None) -> Iterator[Any]:
    """The CBOR items of the concatenated pieces (``total`` bytes of them, if the seek table says).
    An item cut by the end of a piece is decoded again from its start once more bytes are there:
    at least what its heads say it needs and twice what it has, so that an item spanning many
    pieces is decoded O(log size) times. An item whose heads claim more than the stream holds
    after its start (damage: a length of 2^40) is refused at once, before anything is gathered
    for it: what the reader holds stays bounded by the frames' real sizes.

    Value items as ``mode`` says (``_iter_stream``); for "leave" and "raw", with the compiled
    scanner, the items whole in a piece are found at C speed, the Values among them skipped or kept
    undecoded and the others decoded as below; what it stops at (an item cut by the piece's end,
    damage) is left to the decoder below, one item, then the scanner again."""
    index = 0
    left_out = left_out or LeftOut()
    decode = functools.partial(cbor2.loads, max_depth=_CBOR_DEPTH)
    unfinished: list[bytes] = []   # the start of an item cut by the end of a piece, and more
    gathered = wanted = 0
    offset = 0      # where ``piece`` starts in the decompressed stream
    for piece in itertools.chain(pieces, (None,)):
        final = piece is None    # after the last piece: what is left must decode now
        if unfinished:
            if piece is not None:
                unfinished.append(piece)
                gathered += len(piece)
                if gathered < wanted:
                    continue
            piece = b"".join(unfinished)
            unfinished.clear()
        elif piece is None:
            return
        stream = io.BytesIO(piece)
        decoder = cbor2.CBORDecoder(stream, max_depth=_CBOR_DEPTH)
        scan = _scanner("cbor", mode)
        while (start := stream.tell()) < len(piece):
            if scan is not None:
                raws, flags, end = scan(piece, start, _CBOR_VALUE_START)
                if raws or flags:
                    batch = _scanned(raws, flags, decode, mode, left_out)
                    if batch is None:
                        scan = None     # damage among them: the decoder below says what and where
                    else:
                        yield from batch[0]
                        index += batch[1]
                        stream.seek(end)
                        continue
            try:
                event = decoder.decode()
            except cbor2.CBORDecodeEOF as exc:
                if final:  # the stream ends inside an item
                    raise _bad_item(index, exc) from None
                rest = piece[start:]
                needed = _least_size(rest)
                if total is not None and needed > total - (offset + start):
                    raise TraceUnreadable(
                        f"trace.bin: CBOR item {index} cannot be decoded: it claims at least"
                        f" {needed} bytes, but the seek table gives the frames {total - (offset + start)}"
                        f" from its start (byte {offset + start} of the decompressed stream)")
                unfinished.append(rest)
                gathered, wanted = len(rest), max(needed, 2 * len(rest))
                break
            except Exception as exc:  # CBORDecodeError, and ValueError-likes
                raise _bad_item(index, exc) from None
            event = _as_mode(event, mode, left_out)
            if event is not _NOTHING:
                yield event
            index += 1
        offset += start     # the piece's end, or where its unfinished item starts


#: The argument sizes of a CBOR head by its additional information (24-27); 28-30 are not
#: well-formed (cbor2 says so when it gets there).
_ARGUMENT_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


def _least_size(data: bytes) -> int:
    """At least how many bytes the CBOR item at the start of ``data`` takes, from its heads as far
    as ``data`` goes: a string's length, one byte at least for each element still to come."""
    position, size = 0, len(data)
    open_items: list[int] = []   # per open container: elements still to read, -1 if indefinite
    while True:
        if position >= size:
            return position + _still_to_come(open_items, between=True)
        initial = data[position]
        major, info = initial >> 5, initial & 31
        position += 1
        if initial == 0xFF:     # the break that ends an indefinite-length item
            if not open_items or open_items[-1] != -1:
                return position     # not well-formed: cbor2 says so
            open_items.pop()
        elif info == 31:        # an indefinite-length string, array or map: items, then a break
            if major not in (2, 3, 4, 5):
                return position
            open_items.append(-1)
            continue
        else:
            length = _ARGUMENT_BYTES.get(info, 0) if info >= 24 else 0
            if info > 27:
                return position
            if position + length > size:    # cut in this head
                return position + length + _still_to_come(open_items, between=False)
            argument = int.from_bytes(data[position:position + length], "big") if length else info
            position += length
            if major in (2, 3):     # a definite string: its bytes follow
                position += argument
            elif major in (4, 5) and argument:      # a definite array, a map: its elements follow
                open_items.append(argument * (2 if major == 5 else 1))
                continue
            elif major == 6:        # a tag: one item follows
                open_items.append(1)
                continue
        # An item is complete: count it off its container, and the containers it completes.
        while open_items and open_items[-1] > 0:
            open_items[-1] -= 1
            if open_items[-1]:
                break
            open_items.pop()
        if not open_items:
            return position


def _still_to_come(open_items: list[int], between: bool) -> int:
    """At least how many bytes the open containers still need past the item being read (if
    ``between`` items: past the last one read): one for each element not begun, one for each
    break. Each container's count includes the element being read, the one open inside it."""
    needed = sum(n - 1 if n > 0 else 1 for n in open_items)
    if between and open_items and open_items[-1] > 0:
        needed += 1     # the innermost container's next element has not begun either
    return needed


def _bad_item(index: int, exc: BaseException) -> TraceUnreadable:
    return TraceUnreadable(f"trace.bin: CBOR item {index} cannot be decoded: {_one_line(exc)}")


def _truncated(where: str) -> TraceUnreadable:
    return TraceUnreadable(f"trace.bin is truncated: {where}")


def _damaged(what: str) -> TraceUnreadable:
    return TraceUnreadable(f"trace.bin is damaged: {what}")


def _bad_table(what: str) -> TraceUnreadable:
    return TraceUnreadable(f"trace.bin's seek table is damaged: {what}")


def _table_mismatch(what: str) -> TraceUnreadable:
    return TraceUnreadable(f"trace.bin's seek table does not match its frames: {what}")


def _zstd_reason(exc: BaseException) -> str:
    """zstd's own words, without pyzstd's advice around them."""
    text = _one_line(exc)
    _, found, reason = text.partition("Zstd error message: ")
    return reason if found else text


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


# -- values ----------------------------------------------------------------------------------------


def decode_value(record: ValueRecord, trace: Trace | None = None) -> Any:
    """Approximate a ValueRecord as a plain Python value, for tests and quick looks.

    Int and BigInt -> int, Float -> float, String -> str, Bool -> bool, None -> None,
    Tuple -> tuple, Sequence -> list, Struct -> dict of field name -> value (needs ``trace`` for
    the field names), Variant -> ``(discriminator, contents)``, Reference -> the referenced value,
    Raw -> str, Char -> str, Error -> :class:`ErrorValue`. Raises :class:`ValueError` otherwise.
    """
    kind = record.get("kind") if type(record) is dict else None
    decoder = _DECODERS.get(kind)  # type: ignore[arg-type]
    if decoder is None:
        raise ValueError(f"cannot decode ValueRecord {record!r}")
    return decoder(record, trace)


def _decode_bigint(record: ValueRecord, trace: Trace | None) -> int:
    magnitude = record["b"]
    if isinstance(magnitude, str):  # JSON, and CBOR written as the JSON shape
        magnitude = base64.b64decode(magnitude, validate=True)
    value = int.from_bytes(magnitude, "big")
    return -value if record["negative"] else value


def _decode_struct(record: ValueRecord, trace: Trace | None) -> dict[str, Any]:
    if trace is None:
        raise ValueError("decoding a Struct needs the trace, for its field names")
    info = trace.types[record["type_id"]]["specific_info"]
    names = [f["name"] for f in info["fields"]]
    values = record["field_values"]
    if len(names) != len(values):
        raise ValueError(f"Struct has {len(values)} values for {len(names)} fields")
    return {name: decode_value(value, trace) for name, value in zip(names, values)}


_DECODERS: dict[str, Any] = {
    "Int": lambda r, t: r["i"],
    "BigInt": _decode_bigint,
    "Float": lambda r, t: float(r["f"]),
    "String": lambda r, t: r["text"],
    "Bool": lambda r, t: r["b"],
    "None": lambda r, t: None,
    "Tuple": lambda r, t: tuple(decode_value(e, t) for e in r["elements"]),
    "Sequence": lambda r, t: [decode_value(e, t) for e in r["elements"]],
    "Struct": _decode_struct,
    "Variant": lambda r, t: (r["discriminator"], decode_value(r["contents"], t)),
    "Reference": lambda r, t: decode_value(r["dereferenced"], t),
    "Raw": lambda r, t: r["r"],
    "Char": lambda r, t: r["c"],
    "Error": lambda r, t: ErrorValue(r["msg"]),
}

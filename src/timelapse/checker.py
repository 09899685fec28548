"""Validate a trace folder against the CodeTracer trace format (``timelapse check DIR``).

CodeTracer's db-backend trusts its input: an undefined type id, a ``Return`` with no open call or
a ``Cell`` value aborts it, and a misplaced ``Step`` silently attaches lines to the wrong function.
So a recorder bug shows up, at best, as a crash far from its cause. This module replays the event
stream with the same id rules as the consumer and reports each broken rule of
``shared/trace-format.md`` at the index of the event that breaks it, so that a test can assert
"this trace is valid" and a person can find the first bad event.

Each violation belongs to a *rule* (a short name such as ``undefined-id``, listed in
``docs/checker.md``). At most :data:`LIMIT_PER_RULE` violations of one rule are kept; the rest are
counted, so a huge broken trace yields a readable report.

A trace can be gigabytes, so :func:`check_folder` streams it (``reader.iter_events``) and runs
every rule in that one pass, keeping only what the rules need: the id tables, the open calls, a few
recent steps and counters, never the list of events.
"""

from __future__ import annotations

import ast
import base64
import binascii
import os
import re
import sys
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from timelapse.format import NONE_TYPE_ID, EventKind, TypeKind
from timelapse.reader import (
    SeekTable,
    Trace,
    TraceUnreadable,
    iter_events,
    read_seek_table,
    read_side_files,
    split_event,
    stream_path,
)

Record = dict[str, Any]
#: ValueRecords still to visit, each with its location (see ``_where``).
Pending = list[tuple[Any, Any]]
#: Checks one kind of ValueRecord: returns what is wrong, and queues the records it contains.
ValueCheck = Callable[["_StreamChecker", Record, Any, Pending], "str | None"]

__all__ = ["LIMIT_PER_RULE", "Violation", "check_folder", "check_trace", "run_check"]

#: At most this many violations of one rule are reported; the rest are only counted.
LIMIT_PER_RULE = 100

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1
_TYPE_KIND_MAX = int(max(TypeKind))  # TypeKind numbers are 0 (Seq) .. 33 (Slice)
_EVENT_KIND_MAX = int(max(EventKind))  # EventLogKind numbers are 0 (Write) .. 13 (EvmEvent)
_NONE_TYPE_KIND = int(TypeKind.NONE)
_STRUCT_TYPE_KIND = int(TypeKind.STRUCT)
#: How many of the latest steps since the last Call/Return are kept for rule 3, so that a run of
#: DropLastStep can still find the step it leaves standing. Past this many drops in a row the rule
#: is skipped for that Call rather than keep every step of a long loop.
_RECENT_STEPS = 64

#: What both Python's float() and Rust's f64::from_str accept (no "_", no surrounding spaces).
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)\Z", re.IGNORECASE
)

#: Variants the db-backend aborts on (``unimplemented!()``); Assignment cannot even be serialized.
_ABORTING_VARIANTS = frozenset({"Assignment", "BindVariable", "DropVariables"})
#: Variants that exist in the format but are outside what a recorder writes (section 2).
_OTHER_VARIANTS = frozenset(
    {
        "Variable",
        "Asm",
        "CompoundValue",
        "CellValue",
        "AssignCompoundItem",
        "AssignCell",
        "VariableCell",
        "DropVariable",
    }
)


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (event index, or a side file) and what."""

    #: Index of the offending event in the stream, or None for side files and whole-stream rules.
    index: int | None
    message: str
    #: The rule's short name, e.g. ``"undefined-id"`` (see ``docs/checker.md``).
    rule: str = ""
    #: The side file concerned (``"trace_paths.json"``, ...), or None for the event stream.
    file: str | None = None
    #: For the closing line of a rule that hit the limit: how many violations were left out.
    suppressed: int = 0

    def __str__(self) -> str:
        if self.index is not None:
            return f"event {self.index}: {self.message}"
        if self.file is not None:
            return f"{self.file}: {self.message}"
        return self.message


def check_folder(
    folder: str | os.PathLike[str], *, limit: int = LIMIT_PER_RULE
) -> list[Violation]:
    """Validate the trace folder, streaming its events; an empty list means valid.

    Raises :class:`~timelapse.reader.TraceUnreadable` if the folder, a side file or the stream
    cannot be read (a truncated or malformed stream included), whatever was found before that.
    """
    return _check_folder(folder, limit)[0]


def _check_folder(folder: str | os.PathLike[str], limit: int) -> tuple[list[Violation], int]:
    """The violations of a trace folder and the number of events in its stream."""
    stream_file = stream_path(folder)  # refuses a folder without a stream before anything else
    metadata, paths = read_side_files(folder)  # small files: read them before the long part
    return _check(Path(folder), stream_file.name, iter_events(folder), metadata, paths, limit)


def check_trace(trace: Trace, *, limit: int = LIMIT_PER_RULE) -> list[Violation]:
    """Validate an already loaded :class:`~timelapse.reader.Trace`."""
    folder = Path(trace.folder)
    return _check(folder, trace.stream_file, trace.events, trace.metadata, trace.paths, limit)[0]


def _check(
    folder: Path,
    stream_file: str,
    events: Iterable[Any],
    metadata: dict[str, Any],
    paths: list[Any],
    limit: int,
) -> tuple[list[Violation], int]:
    """Every rule, over the stream (one pass) and then the side files: (violations, event count)."""
    report = _Report(limit)
    stream = _StreamChecker(
        report, binary=stream_file == "trace.bin", sources=_SourceExtents(folder)
    )
    count = stream.check(events)
    _check_paths_file(report, paths, stream.path_names)
    _check_metadata_file(report, metadata)
    _check_source_copies(report, folder, stream.path_names)
    return report.violations(), count


def run_check(
    folder: str | os.PathLike[str], out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Print the violations and a summary line on ``out``; return 0 valid, 1 invalid.

    A folder that cannot be read gives one line ``timelapse: error: ...`` on ``err`` (default
    stderr) and 2, as the command line's other bad input does. For a ``trace.bin`` the summary
    also gives its frames and how well they compress.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        violations, count = _check_folder(folder, LIMIT_PER_RULE)
        stream_file = stream_path(folder)
        # The whole stream was read, every frame checked against its entry: the table is true.
        table = read_seek_table(stream_file) if stream_file.name == "trace.bin" else None
    except TraceUnreadable as exc:
        print(f"timelapse: error: {exc}", file=err)
        return 2
    except MemoryError:  # one event larger than the memory left: nothing sensible can go on
        print(f"timelapse: error: {folder}: out of memory while reading the trace", file=err)
        return 2
    for violation in violations:
        print(violation, file=out)
    total = sum(v.suppressed or 1 for v in violations)
    size = f"{count} events" if table is None else f"{count} events; {_bin_summary(table)}"
    if not violations:
        print(f"{folder}: valid trace ({size})", file=out)
        return 0
    print(f"{folder}: INVALID trace ({size}): {total} violation{'s' * (total != 1)}", file=out)
    return 1


def _bin_summary(table: SeekTable) -> str:
    """``trace.bin: 3 frames, 12.6 MB -> 1.1 MB, ratio 11.5x``: CBOR bytes, then the file's.
    (ASCII: the summary goes to stdout, which may not take an arrow.)"""
    frames = len(table.frames)
    text = (f"trace.bin: {frames} frame{'s' * (frames != 1)},"
            f" {_human_size(table.decompressed_size)} -> {_human_size(table.file_size)}")
    if table.decompressed_size:
        text += f", ratio {table.decompressed_size / table.file_size:.1f}x"
    return text


def _human_size(size: float) -> str:
    """Decimal units, as the recorder's summary line gives them."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class _Report:
    """Collects violations, keeping at most ``limit`` of each rule."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept: list[Violation] = []
        self.counts: dict[str, int] = {}

    def add(self, rule: str, index: int | None, message: str, file: str | None = None) -> None:
        count = self.counts.get(rule, 0) + 1
        self.counts[rule] = count
        if count <= self.limit:
            self.kept.append(Violation(index, message, rule, file))

    def violations(self) -> list[Violation]:
        result = sorted(self.kept, key=_order)
        for rule, count in self.counts.items():
            if count > self.limit:
                extra = count - self.limit
                result.append(
                    Violation(None, f"... and {extra} more {rule!r} violations", rule, None, extra)
                )
        return result


def _order(violation: Violation) -> tuple[int, int]:
    """Stream violations in event order, then those about the whole stream or the side files."""
    if violation.index is None:
        return (1, 0)
    return (0, violation.index)


# -- the event stream ------------------------------------------------------------------------------


def _bad_string(value: Any) -> str | None:
    """Why ``value`` is not a valid string, or None if it is one."""
    if type(value) is not str:
        return f"must be a string, not {_json_type(value)}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid UTF-8)"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
        bytes: "a byte string",
    }.get(type(value), type(value).__name__)


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


class _Root:
    """The start of a value's location, e.g. "value of 'x'", named only if a violation needs it."""

    __slots__ = ("prefix", "names", "variable_id")

    def __init__(self, prefix: str, names: list[str], variable_id: Any) -> None:
        self.prefix = prefix
        self.names = names
        self.variable_id = variable_id

    def __str__(self) -> str:
        variable_id = self.variable_id
        if type(variable_id) is int and 0 <= variable_id < len(self.names):
            return f"{self.prefix}{self.names[variable_id]!r}"
        return f"{self.prefix}variable {variable_id!r}"


def _where(where: Any) -> str:
    """Render a lazily built location such as ``((_Root(...), ".elements"), 3)``."""
    parts = []
    while type(where) is tuple:
        where, suffix = where
        parts.append(f"[{suffix}]" if type(suffix) is int else suffix)
    parts.append(str(where))
    return "".join(reversed(parts))


def _is_valid_scalar(record: Any, type_count: int) -> bool:
    """Fast path for the common case: a well-formed Int, None, Bool or ASCII String/Raw.

    False only means "not decided here": the full checks then run and report what is wrong.
    """
    if type(record) is not dict:
        return False
    type_id = record.get("type_id")
    if type(type_id) is not int or not 0 <= type_id < type_count:
        return False
    kind = record.get("kind")
    if kind == "Int":
        value = record.get("i")
        return type(value) is int and _I64_MIN <= value <= _I64_MAX
    if kind == "None":
        return True
    if kind == "String":
        text = record.get("text")
        return type(text) is str and text.isascii()
    if kind == "Bool":
        return type(record.get("b")) is bool
    if kind == "Raw":
        text = record.get("r")
        return type(text) is str and text.isascii()
    return False


#: The first three events of every trace (rule 2): (ordinal, variant, payload test, description).
_START: tuple[tuple[str, str, Callable[[Any], bool], str], ...] = (
    ("first", "Path", lambda payload: True, "the program's Path"),
    (
        "second",
        "Function",
        lambda payload: payload == {"path_id": 0, "line": 1, "name": "<toplevel>"},
        'Function {"path_id": 0, "line": 1, "name": "<toplevel>"}',
    ),
    (
        "third",
        "Call",
        lambda payload: payload == {"function_id": 0, "args": []},
        'Call {"function_id": 0, "args": []}',
    ),
)


class _StreamChecker:
    """Replays the event stream once, tracking ids, steps and the call stack."""

    def __init__(self, report: _Report, *, binary: bool, sources: _SourceExtents) -> None:
        self.report = report
        self.sources = sources
        self.binary = binary  # CBOR may carry a BigInt magnitude as a byte string
        self.path_names: list[str] = []
        self.function_sites: list[tuple[Any, Any] | None] = []  # FunctionId -> (path_id, line)
        self.function_names: list[str] = []
        #: TypeId -> number of fields if the type is a Struct (TypeKind.STRUCT) with Struct info,
        #: else None.
        self.struct_fields: list[int | None] = []
        self.variable_names: list[str] = []
        self.steps = 0  # steps still standing after DropLastStep
        #: How many steps stand since the last Call/Return, and the (path_id, line) of the latest
        #: of them (None for a malformed Step): rule 3 looks at the last one standing.
        self.steps_since_call = 0
        self.recent_steps: deque[tuple[Any, Any] | None] = deque(maxlen=_RECENT_STEPS)
        #: The open calls: (event index, function_id, thread, extent of the function's source)
        self.stack: list[tuple[int, Any, int | None, _Extent | None]] = []
        #: FunctionId -> where its steps may lie, None if that cannot be told (see _SourceExtents)
        self.extents: dict[int, _Extent | None] = {}
        #: The extent of the innermost open call's function, None if not known
        self.extent: _Extent | None = None
        #: A step outside the innermost call's function, reported unless a Call follows it (the
        #: step before a Call belongs to that call): (index, (path_id, line), function_id, extent)
        self.suspect: tuple[int, tuple[int, int], Any, _Extent] | None = None
        self.calls = 0
        self.ended_at: int | None = None  # index of the Return that closed <toplevel>
        self.thread: int | None = None
        self.event: Any = None  # the event being checked
        self.index = 0
        self._handlers: dict[str, Callable[[Any], None]] = {
            "Path": self.on_path,
            "Function": self.on_function,
            "Type": self.on_type,
            "VariableName": self.on_variable_name,
            "Step": self.on_step,
            "Value": self.on_value,
            "Call": self.on_call,
            "Return": self.on_return,
            "Event": self.on_event,
            "ThreadStart": self.on_thread_switch,
            "ThreadSwitch": self.on_thread_switch,
            "ThreadExit": self.on_thread_exit,
            "DropLastStep": self.on_drop_last_step,
        }

    def add(self, rule: str, message: str) -> None:
        self.report.add(rule, self.index, message)

    # -- driver ----------------------------------------------------------------------------------

    def check(self, events: Iterable[Any]) -> int:
        """Check the stream, in one pass; return the number of events."""
        handlers = self._handlers
        count = 0
        for self.index, event in enumerate(events):
            count += 1
            if count <= len(_START):
                self.check_start(event)
            self.event = event
            if type(event) is dict and len(event) == 1:  # split_event for the usual event,
                ((variant, payload),) = event.items()  # inlined: one call less per event
            else:
                variant, payload = split_event(event)
            handler = handlers.get(variant)  # type: ignore[arg-type]
            if handler is not None:
                handler(payload)
            else:
                self.on_other(variant, event)
        self.check_end(count)
        return count

    def check_start(self, event: Any) -> None:
        """Rule 2: Path of the program, Function <toplevel>, Call of it with no args."""
        ordinal, variant, accept, described = _START[self.index]
        kind, payload = split_event(event)
        if kind != variant or not accept(payload):
            self.add("toplevel", f"the {ordinal} event must be {described} (rule 2)")

    def check_end(self, count: int) -> None:
        """Rule 2 for a stream too short to start properly; rule 5: every call returned."""
        if count == 0:
            self.report.add("toplevel", None, "the event stream is empty", "trace.json")
        elif count < len(_START):
            described = _START[count][3]
            self.report.add("toplevel", None, f"the stream ends before {described}", "trace.json")
        self.report_suspect()
        if self.stack:
            index, function_id, _, _ = self.stack[-1]
            self.report.add(
                "unbalanced",
                index,
                f"Call of {self.function_label(function_id)} never returns: the stream ends"
                f" with {len(self.stack)} open call{'s' * (len(self.stack) != 1)} (rule 5)",
            )

    # -- shared checks ---------------------------------------------------------------------------

    def payload_object(self, variant: str, payload: Any, keys: tuple[str, ...]) -> bool:
        """Check that ``payload`` is an object with ``keys``; report and return False if not."""
        if type(payload) is not dict:
            self.add(
                "payload-shape", f"{variant} payload must be an object, not {_json_type(payload)}"
            )
            return False
        missing = [key for key in keys if key not in payload]
        if missing:
            self.add("payload-shape", f"{variant} lacks {', '.join(map(repr, missing))}")
            return False
        return True

    def check_string(self, what: str, value: Any) -> None:
        problem = _bad_string(value)
        if problem is not None:
            rule = "bad-string" if type(value) is str else "payload-shape"
            self.add(rule, f"{what} {problem}")

    def check_id(self, what: str, value: Any, defined: int, defining: str) -> bool:
        """An id must be an index into the ids defined so far (rule 1)."""
        if type(value) is not int or value < 0:
            self.add("payload-shape", f"{what} must be a non-negative integer, not {value!r}")
            return False
        if value >= defined:
            self.add(
                "undefined-id",
                f"{what} {value} is used before its {defining} event ({defined} defined so far)",
            )
            return False
        return True

    def check_line(self, variant: str, line: Any) -> None:
        if not _is_int(line, _I64_MIN, _I64_MAX):
            self.add("payload-shape", f"{variant} line must be a 64-bit integer, not {line!r}")

    def check_after_end(self, variant: str) -> None:
        if self.ended_at is not None:
            self.add(
                "after-toplevel",
                f"{variant} after the <toplevel> call returned at event {self.ended_at} (rule 5)",
            )

    def function_label(self, function_id: Any) -> str:
        if type(function_id) is int and 0 <= function_id < len(self.function_names):
            return repr(self.function_names[function_id])
        return f"function {function_id!r}"

    def site_label(self, site: tuple[Any, Any]) -> str:
        path_id, line = site
        if type(path_id) is int and 0 <= path_id < len(self.path_names):
            return f"{self.path_names[path_id]}:{line}"
        return f"path {path_id!r}:{line}"

    # -- definitions -----------------------------------------------------------------------------

    def on_path(self, payload: Any) -> None:
        self.check_string("Path", payload)
        self.path_names.append(payload if type(payload) is str else repr(payload))

    def on_function(self, payload: Any) -> None:
        site = name = None
        if self.payload_object("Function", payload, ("path_id", "line", "name")):
            path_id, name = payload["path_id"], payload["name"]
            site = (path_id, payload["line"])
            self.check_id("Function path_id", path_id, len(self.path_names), "Path")
            self.check_line("Function", payload["line"])
            self.check_string("Function name", name)
        self.function_sites.append(site)
        self.function_names.append(name if type(name) is str else "?")

    def on_variable_name(self, payload: Any) -> None:
        self.check_string("VariableName", payload)
        self.variable_names.append(payload if type(payload) is str else repr(payload))

    def on_type(self, payload: Any) -> None:
        type_id = len(self.struct_fields)
        fields = None
        if self.payload_object("Type", payload, ("kind", "lang_type", "specific_info")):
            kind = payload["kind"]
            if not _is_int(kind, 0, _TYPE_KIND_MAX):
                self.add(
                    "payload-shape",
                    f"Type kind must be an integer 0..{_TYPE_KIND_MAX}, not {kind!r}",
                )
            self.check_string("Type lang_type", payload["lang_type"])
            fields = self.check_specific_info(payload["specific_info"])
            if kind != _STRUCT_TYPE_KIND:
                fields = None
            if type_id == NONE_TYPE_ID and (
                kind != _NONE_TYPE_KIND or payload["lang_type"] != "None"
            ):
                self.add(
                    "toplevel",
                    f"TypeId {NONE_TYPE_ID} must be the None type"
                    f' {{"kind": {_NONE_TYPE_KIND}, "lang_type": "None"}}, '
                    f"not kind {kind!r} {payload['lang_type']!r} (rule 2)",
                )
        self.struct_fields.append(fields)

    def check_specific_info(self, info: Any) -> int | None:
        """Validate a TypeSpecificInfo; return the field count if it is a Struct."""
        if type(info) is not dict:
            self.add(
                "payload-shape", f"Type specific_info must be an object, not {_json_type(info)}"
            )
            return None
        kind = info.get("kind")
        defined = len(self.struct_fields)
        if kind == "None":
            return None
        if kind == "Pointer":
            self.check_id(
                "Pointer dereference_type_id", info.get("dereference_type_id"), defined, "Type"
            )
            return None
        if kind != "Struct":
            self.add("payload-shape", f"unknown Type specific_info kind {kind!r}")
            return None
        fields = info.get("fields")
        if type(fields) is not list:
            self.add(
                "payload-shape",
                f"Struct specific_info fields must be an array, not {_json_type(fields)}",
            )
            return None
        for position, item in enumerate(fields):
            if type(item) is not dict:
                self.add("payload-shape", f"Struct field {position} must be an object")
                continue
            self.check_string(f"Struct field {position} name", item.get("name"))
            self.check_id(
                f"Struct field {position} type_id", item.get("type_id"), defined, "Type"
            )
        return len(fields)

    # -- steps, calls, values --------------------------------------------------------------------

    def on_step(self, payload: Any) -> None:
        if self.ended_at is not None:
            self.check_after_end("Step")
        if self.calls == 0:
            self.add(
                "toplevel",
                "Step before the first Call: the backend would invent a function and shift"
                " every FunctionId (rule 2)",
            )
        path_id = line = None
        if type(payload) is dict:
            path_id = payload.get("path_id")
            line = payload.get("line")
        if (  # fast path: the well-formed Step of a valid trace
            type(path_id) is int
            and 0 <= path_id < len(self.path_names)
            and type(line) is int
            and _I64_MIN <= line <= _I64_MAX
        ):
            site = (path_id, line)
        else:
            site = self.check_step_payload(payload)
        self.steps += 1
        self.steps_since_call += 1
        self.recent_steps.append(site)
        if self.suspect is not None:
            self.report_suspect()
        extent = self.extent
        if extent is not None and site is not None and type(site[1]) is int:
            if site[0] != extent[0] or not extent[1] <= site[1] <= extent[2]:
                self.suspect = (self.index, site, self.stack[-1][1], extent)

    def report_suspect(self) -> None:
        """The latest step lay outside its call's function and no Call took it: report it."""
        if self.suspect is None:
            return
        index, site, function_id, (path_id, first, last) = self.suspect
        self.suspect = None
        source = self.path_names[path_id]
        where = f"{source}:{first}-{last}" if last < _I64_MAX else f"the whole of {source}"
        self.report.add(
            "step-outside-function",
            index,
            f"Step at {self.site_label(site)} is shown in a call of"
            f" {self.function_label(function_id)}, whose source is {where}: the step is"
            " attributed to the wrong call",
        )

    def check_step_payload(self, payload: Any) -> tuple[Any, Any] | None:
        """Report what is wrong with a Step payload; return its (path_id, line) if it has them."""
        if not self.payload_object("Step", payload, ("path_id", "line")):
            return None
        site = (payload["path_id"], payload["line"])
        self.check_id("Step path_id", site[0], len(self.path_names), "Path")
        self.check_line("Step", site[1])
        return site

    def on_drop_last_step(self, payload: None) -> None:
        self.suspect = None  # a retracted step is nobody's
        if type(self.event) is not str:
            self.add("event-shape", 'DropLastStep must be the bare string "DropLastStep"')
        self.check_after_end("DropLastStep")
        if self.steps < 2:
            self.add(
                "drop-last-step",
                f"DropLastStep needs at least 2 steps to retract one, there are {self.steps}",
            )
            return
        self.steps -= 1
        if self.steps_since_call:
            self.steps_since_call -= 1
            if self.recent_steps:
                self.recent_steps.pop()

    def on_value(self, payload: Any) -> None:
        if self.ended_at is not None:
            self.check_after_end("Value")
        if type(payload) is not dict or "variable_id" not in payload or "value" not in payload:
            self.payload_object("Value", payload, ("variable_id", "value"))
            return
        if self.steps == 0:
            self.add(
                "value-before-step",
                "Value before any Step: values belong to the most recent Step (rule 4)",
            )
        variable_id = payload["variable_id"]
        defined = len(self.variable_names)
        if type(variable_id) is not int or not 0 <= variable_id < defined:
            self.check_id("Value variable_id", variable_id, defined, "VariableName")
        self.check_value(_Root("value of ", self.variable_names, variable_id), payload["value"])

    def on_call(self, payload: Any) -> None:
        self.check_after_end("Call")
        self.suspect = None  # the step before a Call is the new call's (rule 3 checks it)
        first = self.calls == 0
        self.calls += 1
        function_id = None
        if self.payload_object("Call", payload, ("function_id", "args")):
            function_id = payload["function_id"]
            if self.check_id("Call function_id", function_id, len(self.function_names), "Function"):
                if not first:
                    self.check_step_before_call(function_id)
            self.check_args(payload["args"])
        self.steps_since_call = 0
        self.recent_steps.clear()
        self.extent = None if first else self.extent_of(function_id)
        self.stack.append((self.index, function_id, self.thread, self.extent))

    def extent_of(self, function_id: Any) -> _Extent | None:
        """Where the steps of a call of ``function_id`` may lie, None if that cannot be told."""
        if type(function_id) is not int or not 0 < function_id < len(self.function_sites):
            return None  # <toplevel> (function 0) shows whatever runs outside any other call
        if function_id not in self.extents:
            extent = None
            site = self.function_sites[function_id]
            if site is not None and type(site[0]) is int and 0 <= site[0] < len(self.path_names):
                path_id, line = site
                lines = self.sources.extent(
                    self.path_names[path_id], line, self.function_names[function_id]
                )
                if lines is not None:
                    extent = (path_id, *lines)
            self.extents[function_id] = extent
        return self.extents[function_id]

    def check_step_before_call(self, function_id: int) -> None:
        """Rule 3: a Step at the callee's definition (its Function's path and line) is the last
        Step before the Call, with no Call/Return between: the backend binds it to the new call."""
        label = self.function_label(function_id)
        if not self.steps_since_call:
            self.add(
                "step-before-call",
                f"Call of {label} has no Step since the previous Call/Return: the backend binds"
                " the step before a Call to the new call (rule 3)",
            )
            return
        if not self.recent_steps:
            return  # more DropLastStep in a row than steps kept: the step left is not known
        step = self.recent_steps[-1]
        definition = self.function_sites[function_id]
        if step is not None and definition is not None and step != definition:
            self.add(
                "step-before-call",
                f"the Step before Call of {label} is at {self.site_label(step)}, not at its"
                f" definition {self.site_label(definition)} (rule 3)",
            )

    def check_args(self, args: Any) -> None:
        if type(args) is not list:
            self.add("payload-shape", f"Call args must be an array, not {_json_type(args)}")
            return
        for position, arg in enumerate(args):
            if type(arg) is not dict or "variable_id" not in arg or "value" not in arg:
                self.add(
                    "payload-shape",
                    f"Call arg {position} must be an object with variable_id and value",
                )
                continue
            variable_id = arg["variable_id"]
            what = f"Call arg {position} variable_id"
            self.check_id(what, variable_id, len(self.variable_names), "VariableName")
            self.check_value(_Root("arg ", self.variable_names, variable_id), arg["value"])

    def on_return(self, payload: Any) -> None:
        if self.payload_object("Return", payload, ("return_value",)):
            self.check_value("return value", payload["return_value"])
        self.report_suspect()
        self.steps_since_call = 0
        self.recent_steps.clear()
        if not self.stack:
            self.add("unbalanced", "Return with no open Call (rule 5)")
            return
        _, function_id, thread, _ = self.stack.pop()
        self.extent = self.stack[-1][3] if self.stack else None
        if thread is not None and self.thread is not None and thread != self.thread:
            self.add(
                "thread-mispair",
                f"Return on thread {self.thread} closes the Call of"
                f" {self.function_label(function_id)} made on thread {thread} (rule 7)",
            )
        if not self.stack:
            self.ended_at = self.index

    def on_event(self, payload: Any) -> None:
        self.check_after_end("Event")
        if not self.payload_object("Event", payload, ("kind", "metadata", "content")):
            return
        kind = payload["kind"]
        if not _is_int(kind, 0, _EVENT_KIND_MAX):
            self.add(
                "payload-shape",
                f"Event kind must be an integer 0..{_EVENT_KIND_MAX}, not {kind!r}",
            )
        self.check_string("Event metadata", payload["metadata"])
        self.check_string("Event content", payload["content"])

    def on_thread_switch(self, payload: Any) -> None:
        """ThreadStart and ThreadSwitch: the events that follow belong to this thread."""
        if self.check_thread_id(payload):
            self.thread = payload

    def on_thread_exit(self, payload: Any) -> None:
        self.check_thread_id(payload)

    def check_thread_id(self, payload: Any) -> bool:
        if _is_int(payload, 0, _U64_MAX):
            return True
        self.add(
            "payload-shape", f"a thread id must be an unsigned 64-bit integer, not {payload!r}"
        )
        return False

    def on_other(self, variant: str | None, event: Any) -> None:
        """Events outside the variants a recorder writes (section 2), and malformed envelopes."""
        if variant is None:
            if type(event) is str:
                self.add("unknown-variant", f"unknown unit event {event!r}")
                return
            shape = _json_type(event)
            if type(event) is dict:
                shape += f" with keys {sorted(map(str, event))}"
            self.add(
                "event-shape",
                f'an event must be {{"Variant": payload}} or "DropLastStep", not {shape}',
            )
        elif variant in _ABORTING_VARIANTS:
            self.add(
                "unsupported-variant",
                f"{variant} must not be written: the db-backend cannot handle it",
            )
        elif variant in _OTHER_VARIANTS:
            self.add(
                "unsupported-variant",
                f"{variant} is not part of the format a recorder writes (section 2)",
            )
            if variant == "Variable":  # the legacy VariableName: it still defines an id
                self.on_variable_name(event[variant])
        else:
            self.add("unknown-variant", f"unknown event variant {variant!r}")

    # -- ValueRecords ----------------------------------------------------------------------------

    def check_value(self, where: Any, record: Any) -> None:
        """Validate a ValueRecord tree (iteratively: values may nest deeply)."""
        type_count = len(self.struct_fields)
        if _is_valid_scalar(record, type_count):
            return
        pending: Pending = [(record, where)]
        while pending:
            record, where = pending.pop()
            if _is_valid_scalar(record, type_count):
                continue
            if type(record) is not dict:
                self.add_value("value-shape", where, f"a ValueRecord must be an object, not"
                               f" {_json_type(record)}")
                continue
            kind = record.get("kind")
            check = _VALUE_CHECKS.get(kind)  # type: ignore[arg-type]
            if check is None:
                self.check_odd_value(where, kind)
                continue
            type_id = record.get("type_id")
            if type(type_id) is not int or not 0 <= type_id < type_count:
                self.check_type_id(where, kind, record)
                type_id = None
            problem = check(self, record, where, pending)
            if problem:
                self.add_value("value-shape", where, f"{kind} {problem}")
            elif kind == "Struct" and type_id is not None:
                self.check_struct_type(where, record, type_id)

    def add_value(self, rule: str, where: Any, message: str) -> None:
        self.add(rule, f"{_where(where)}: {message}")

    def check_type_id(self, where: Any, kind: str, record: dict[str, Any]) -> None:
        """Report a missing or undefined ``type_id`` (the slow path of ``check_value``)."""
        if "type_id" not in record:
            self.add_value("value-shape", where, f"{kind} lacks 'type_id'")
        else:
            what = f"{_where(where)}: {kind} type_id"
            self.check_id(what, record["type_id"], len(self.struct_fields), "Type")

    def check_odd_value(self, where: Any, kind: Any) -> None:
        if kind == "Cell":
            message = "a Cell value inside Value/Call/Return aborts the db-backend"
            self.add_value("cell-value", where, message)
        elif kind == "Char":
            message = "Char is read by newer readers only; use String (section 3)"
            self.add_value("value-shape", where, message)
        else:
            self.add_value("value-shape", where, f"unknown ValueRecord kind {kind!r}")

    def check_struct_type(self, where: Any, record: dict[str, Any], type_id: int) -> None:
        fields = self.struct_fields[type_id]
        if fields is None:
            message = (
                f"Struct type_id {type_id} is not a kind {_STRUCT_TYPE_KIND} Type with Struct"
                " specific_info"
            )
            self.add_value("struct-type", where, message)
        elif fields != len(record["field_values"]):
            message = (
                f"Struct has {len(record['field_values'])} field_values but its"
                f" Type {type_id} has {fields} fields"
            )
            self.add_value("struct-type", where, message)


def _push_elements(
    checker: _StreamChecker, record: dict[str, Any], key: str, where: Any, pending: Pending
) -> str | None:
    """Queue the items of ``record[key]`` that the scalar fast path does not settle."""
    elements = record.get(key)
    if type(elements) is not list:
        return f"{key} must be an array, not {_json_type(elements)}"
    type_count = len(checker.struct_fields)
    suffix = (where, "." + key)
    for position, element in enumerate(elements):
        if not _is_valid_scalar(element, type_count):
            pending.append((element, (suffix, position)))
    return None


def _check_int(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    value = record.get("i")
    if type(value) is not int:
        return f"i must be an integer, not {_json_type(value)}"
    if not _I64_MIN <= value <= _I64_MAX:
        return f"i {value} is outside the signed 64-bit range; use BigInt"
    return None


def _check_float(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    value = record.get("f")
    if type(value) is not str:
        return f"f must be a string such as \"2.5\", not {_json_type(value)}"
    if not _FLOAT_TEXT.match(value):
        return f"f {value!r} is not a float literal"
    return None


def _check_bool(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    if type(record.get("b")) is not bool:
        return f"b must be a boolean, not {_json_type(record.get('b'))}"
    return None


def _string_field(key: str) -> ValueCheck:
    def check(checker: _StreamChecker, record: Record, where: Any, pending: Pending) -> str | None:
        problem = _bad_string(record.get(key))
        return None if problem is None else f"{key} {problem}"

    return check


def _check_sequence(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    if type(record.get("is_slice")) is not bool:
        return f"is_slice must be a boolean, not {_json_type(record.get('is_slice'))}"
    return _push_elements(checker, record, "elements", where, pending)


def _check_tuple(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    return _push_elements(checker, record, "elements", where, pending)


def _check_struct(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    return _push_elements(checker, record, "field_values", where, pending)


def _push_contained(record: Record, key: str, where: Any, pending: Pending) -> str | None:
    """Queue the one ValueRecord ``record[key]`` (a Variant's contents, a Reference's target)."""
    if key not in record:
        return f"lacks {key!r}"
    pending.append((record[key], (where, "." + key)))
    return None


def _check_variant(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    problem = _bad_string(record.get("discriminator"))
    if problem is not None:
        return f"discriminator {problem}"
    return _push_contained(record, "contents", where, pending)


def _check_reference(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    if not _is_int(record.get("address"), 0, _U64_MAX):
        return f"address must be an unsigned 64-bit integer, not {record.get('address')!r}"
    if type(record.get("mutable")) is not bool:
        return f"mutable must be a boolean, not {_json_type(record.get('mutable'))}"
    return _push_contained(record, "dereferenced", where, pending)


def _check_bigint(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    if type(record.get("negative")) is not bool:
        return f"negative must be a boolean, not {_json_type(record.get('negative'))}"
    magnitude = record.get("b")
    if type(magnitude) is bytes and checker.binary:
        return None  # a CBOR byte string: the Rust reader accepts it as well as base64 text
    if type(magnitude) is not str:
        return f"b must be a base64 string, not {_json_type(magnitude)}"
    try:
        decoded = base64.b64decode(magnitude, validate=True)
    except (binascii.Error, ValueError):
        return f"b {magnitude!r} is not standard base64"
    if base64.b64encode(decoded).decode("ascii") != magnitude:
        return f"b {magnitude!r} is not canonical standard base64"
    return None


def _check_none(
    checker: _StreamChecker, record: Record, where: Any, pending: Pending
) -> str | None:
    return None


_VALUE_CHECKS: dict[str, ValueCheck] = {
    "Int": _check_int,
    "Float": _check_float,
    "Bool": _check_bool,
    "String": _string_field("text"),
    "Sequence": _check_sequence,
    "Tuple": _check_tuple,
    "Struct": _check_struct,
    "Variant": _check_variant,
    "Reference": _check_reference,
    "Raw": _string_field("r"),
    "Error": _string_field("msg"),
    "None": _check_none,
    "BigInt": _check_bigint,
}


# -- where each function's steps may lie -----------------------------------------------------------

#: (path_id, first line, last line) of a function's source; a module's spans its whole file.
_Extent = tuple[int, int, int]

#: The nodes that compile to a code object of their own, hence to a Function of the stream.
_CODE_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.GeneratorExp,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
)


class _SourceExtents:
    """Reads the source copies in ``files/`` to tell which lines a function's steps may be on.

    A code object's lines are those of its definition, from its first line (``co_firstlineno``,
    the first decorator's line if it has decorators: the Function's ``line``) to the definition's
    last line. A step of a call elsewhere means the recorder attached it to the wrong call.
    Functions whose copy is missing or does not parse, or whose line starts no definition there
    (hand-made traces, code compiled from strings), are not checked.
    """

    def __init__(self, folder: Path) -> None:
        self.files = folder / "files"
        #: path -> {first line of a definition: the last line of the longest one starting there}
        self.definitions: dict[str, dict[int, int] | None] = {}

    def extent(self, path: str, line: Any, name: str) -> tuple[int, int] | None:
        """The (first, last) lines that the steps of function ``name`` defined at ``path:line``
        may be on, or None if unknown. A module (``<__main__>``, ``<pkg.mod>``) may step anywhere
        in its file."""
        if path not in self.definitions:
            self.definitions[path] = self.read(path)
        definitions = self.definitions[path]
        if definitions is None or type(line) is not int:
            return None
        if name.startswith("<") and name.endswith(">"):
            return (_I64_MIN, _I64_MAX)
        last = definitions.get(line)
        return None if last is None else (line, last)

    def read(self, path: str) -> dict[int, int] | None:
        if not path.startswith("/") or not self.files.is_dir():
            return None
        try:
            source = (self.files / path.lstrip("/")).read_bytes()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes: not our business
                tree = ast.parse(source)
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        definitions: dict[int, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, _CODE_NODES):
                first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
                last = node.end_lineno or node.lineno
                definitions[first] = max(definitions.get(first, first), last)
        return definitions


# -- side files ------------------------------------------------------------------------------------


def _check_paths_file(report: _Report, paths: list[Any], path_events: list[str]) -> None:
    """``trace_paths.json`` lists the Path events' paths, in order (PathId i at index i)."""
    name = "trace_paths.json"
    for position, path in enumerate(paths):
        problem = _bad_string(path)
        if problem is not None:
            report.add("paths-file", None, f"entry {position} {problem}", name)
    if paths == path_events:
        return
    if len(paths) != len(path_events):
        report.add(
            "paths-file",
            None,
            f"has {len(paths)} entries but the stream has {len(path_events)} Path events",
            name,
        )
    for position, (listed, recorded) in enumerate(zip(paths, path_events)):
        if listed != recorded:
            report.add(
                "paths-file",
                None,
                f"entry {position} is {listed!r} but PathId {position} is {recorded!r}",
                name,
            )
            break


def _check_metadata_file(report: _Report, metadata: dict[str, Any]) -> None:
    """``trace_metadata.json`` has strings ``program`` and ``workdir``, a string list ``args``."""
    name = "trace_metadata.json"
    for key in ("program", "workdir"):
        if key not in metadata:
            report.add("metadata-file", None, f"lacks {key!r}", name)
            continue
        problem = _bad_string(metadata[key])
        if problem is not None:
            report.add("metadata-file", None, f"{key} {problem}", name)
    args = metadata.get("args")
    if "args" not in metadata:
        report.add("metadata-file", None, "lacks 'args'", name)
    elif type(args) is not list:
        message = f"args must be an array of strings, not {_json_type(args)}"
        report.add("metadata-file", None, message, name)
    else:
        for position, arg in enumerate(args):
            problem = _bad_string(arg)
            if problem is not None:
                report.add("metadata-file", None, f"args[{position}] {problem}", name)


def _check_source_copies(report: _Report, folder: Path, path_events: list[str]) -> None:
    """If ``files/`` exists, each absolute recorded path has its copy at ``files/<path>``.

    A source that does not exist on this machine either is not reported: it could not be copied.
    """
    files = folder / "files"
    if not files.is_dir():
        return
    for path in dict.fromkeys(path_events):
        if not path.startswith("/"):
            continue
        copy = files / path.lstrip("/")
        if not copy.is_file() and os.path.isfile(path):
            message = f"no copy of {path!r} at files/{path.lstrip('/')}"
            report.add("source-copy", None, message, "files/")

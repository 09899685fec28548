"""Exception Events: where an exception is raised, handled and re-raised — once each.

A module of its own because the rule for telling a new exception event from a repeat is subtle and
stateful, and has nothing to do with the rest of the callbacks' work.

CPython reports RAISE again in every frame an exception propagates through, and the code the compiler
adds around ``except`` and ``finally`` blocks handles and re-raises it again at the same line; those
repeats carry nothing new, so they are left out. The exception itself is never kept (that would keep
it, its traceback and their frames alive): a repeat is recognized by the exception's id *and* by
nothing having been written since the event it repeats (``TraceWriter.position()``, which counts every
event ever appended, so a flush in between cannot fake "nothing written since").

Events: ``raise`` and ``reraise`` are Error Events (kind ``EventKind.ERROR``), ``handled`` a log Event
(``EventKind.TRACE_LOG_EVENT``); each carries the exception's ``Type: message`` as its content and
``{"stream": what, "thread": n, "path_id": p, "line": l, "exception": "module.Type"}`` as its metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from timelapse.encoder import type_name
from timelapse.format import EventKind

if TYPE_CHECKING:
    from timelapse.threads import ThreadState
    from timelapse.writer import TraceWriter

_ERROR, _LOG = int(EventKind.ERROR), int(EventKind.TRACE_LOG_EVENT)

#: Where the thread is for the trace, writing a fresh Step there if needed: (path_id, line) or None.
StepHere = Callable[["ThreadState", "FrameType | None"], "tuple[int, int] | None"]


class ExceptionEvents:
    """Writes the exception Events of one recording (under the recorder's lock)."""

    def __init__(self, writer: TraceWriter, redact_text: Callable[[str], str] | None = None) -> None:
        self._writer = writer
        self._spelling = writer.format.events
        #: A message with the secrets in it replaced (redact.Redactor.redact_text), or None.
        self.redact_text = redact_text

    def note(self, what: str, exception: BaseException, state: ThreadState, frame: FrameType,
             step_here: StepHere) -> None:
        """``what`` ("raise", "reraise", "handled") happened to ``exception`` in ``frame``."""
        position = self._writer.position
        line = frame.f_lineno
        key = id(exception)
        if state.unopened_frame == id(frame):
            frame = frame.f_back  # a call not open in the stream: for the trace, its caller raised
            line = frame.f_lineno if frame is not None else None
        in_flight, recent = state.in_flight, state.recent
        thrown, state.thrown = state.thrown, None
        if what == "handled":
            if recent is not None and recent[:2] == ("reraise", key) and recent[2] == line \
                    and recent[3] == position():
                return  # the cleanup code of an `except` block, about to re-raise it again
            state.in_flight = None
        elif in_flight is not None and in_flight[0] == key and in_flight[1] == position():
            return  # still the same exception, on its way out through another frame
        elif what == "raise" and thrown is not None and thrown[0] == key and thrown[1] == position():
            state.in_flight = (key, position())
            return  # GeneratorExit thrown in by close(): the program raised nothing
        where = step_here(state, frame)
        spelling = self._spelling
        metadata = spelling.event_metadata(what, state.number, where, {"exception": type_name(type(exception))})
        kind = _LOG if what == "handled" else _ERROR
        content = describe_exception(exception)
        if self.redact_text is not None:
            content = self.redact_text(content)
        self._writer.events.append(spelling.event(kind, metadata, content))
        if what != "handled":
            state.in_flight = (key, position())
        state.recent = (what, key, line, position())


_exception_args = BaseException.__dict__["args"].__get__


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` without running the exception's own Python code (no ``__str__`` call)."""
    name = type_name(type(exc))
    args = _exception_args(exc)
    if not args:
        return name
    if len(args) == 1 and type(args[0]) is str:
        return f"{name}: {args[0]}"
    return f"{name}: {', '.join(_safe_text(a) for a in args)}"


def _safe_text(value: object) -> str:
    t = type(value)     # compared by identity: `in` could call a metaclass __eq__
    if t is str or t is int or t is float or t is bool or value is None:
        return repr(value)
    return f"<{type_name(type(value))}>"

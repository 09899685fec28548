"""The ``sys.monitoring`` callbacks: interpreter events in, trace events out.

One ``Recorder`` per recording. It claims a monitoring tool id and listens to:

- PY_START / PY_RESUME / PY_THROW (global) → ``Step`` at the callee's definition + ``Call``;
- LINE / PY_RETURN / PY_YIELD (local: switched on per in-scope code object) → ``Step`` + ``Value``\\ s,
  ``Return``;
- PY_UNWIND, RAISE, RERAISE, EXCEPTION_HANDLED (global: CPython cannot switch them on per code object)
  → ``Return`` of the exception, exception ``Event``\\ s.

Everything about a code object (is it in scope, its ids, its argument names, the globals it reads) is
worked out once, on its first event, and cached in a ``_CodeInfo`` keyed by ``id(code)`` (the info keeps
the code alive, so the id is never reused). Out-of-scope code gets ``sys.monitoring.DISABLE`` back and
costs nothing after its first event.

Values at a step are the values *before* its line runs. So that the effect of the last line of a frame
is visible too, a frame that returns (or yields, or unwinds) gets one more Step on the line it leaves
from, with its values at that moment, right before its ``Return`` — unless that line can change no local
(a plain ``return x``). See ``docs/values.md``.

Threads: every thread has its own call stack. The trace has one stream and CodeTracer keeps one call
stack, so when another thread starts producing events the recorder closes the calls of the thread that
ran before, writes ``ThreadSwitch``, and re-opens the new thread's calls. See ``docs/threads.md``.

The callbacks are the hot path: they are closures over local variables (no attribute lookups), they
cache every event that can be cached, and they hold one lock per event so that a thread switch can never
split a ``Step`` from its ``Value``\\ s.
"""

from __future__ import annotations

import dis
import functools
import gc
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any

from timelapse.encoder import ValueEncoder, type_name
from timelapse.errors import RecorderError
from timelapse.interrupts import deferral
from timelapse.jsonbytes import to_json
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

_monitoring = sys.monitoring
_events = _monitoring.events
DISABLE = _monitoring.DISABLE

TOOL_NAME = "timelapse"
#: Tool ids we try, the unreserved ones first (0 debugger, 1 coverage, 2 profiler, 5 optimizer).
_TOOL_ID_PREFERENCE = (3, 4, 0, 2, 5, 1)
_GLOBAL_EVENTS = (
    _events.PY_START | _events.PY_RESUME | _events.PY_THROW | _events.PY_UNWIND
    | _events.RAISE | _events.RERAISE | _events.EXCEPTION_HANDLED
)
_LOCAL_EVENTS = _events.LINE | _events.PY_RETURN | _events.PY_YIELD
_ALL_EVENTS = (
    _events.PY_START, _events.PY_RESUME, _events.PY_THROW, _events.PY_UNWIND, _events.LINE,
    _events.PY_RETURN, _events.PY_YIELD, _events.RAISE, _events.RERAISE, _events.EXCEPTION_HANDLED,
)
_CO_OPTIMIZED = 0x0001
_CO_VARARGS = 0x0004
_CO_VARKEYWORDS = 0x0008
_CO_ASYNC_GENERATOR = 0x0200

#: Event kinds (trace-format.md §3).
ERROR_EVENT = 11
LOG_EVENT = 12

_FUNCTION, _MODULE, _NAMESPACE, _THREAD_ROOT, _OUT_OF_SCOPE = range(5)
# threading.Thread._bootstrap_inner starts and ends every threading.Thread: its return is a ThreadExit.
_THREAD_ROOT_CODE = threading.Thread._bootstrap_inner.__code__
#: Instructions that only read and compute: a line made only of these (``return x``,
#: ``return d[k] + 1``) changes no local, so a returning frame needs no step after it. (An operator or
#: attribute implemented in Python could still mutate something; calls are never on this list.)
_QUIET_OPCODES = frozenset({
    "RESUME", "NOP", "CACHE", "EXTENDED_ARG", "COPY_FREE_VARS", "MAKE_CELL", "RETURN_GENERATOR",
    "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "LOAD_CONST", "LOAD_DEREF",
    "LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_SMALL_INT", "RETURN_VALUE", "RETURN_CONST",
    "POP_TOP", "COPY", "SWAP", "BUILD_TUPLE", "BUILD_LIST", "BUILD_MAP", "BUILD_SET",
    "BUILD_STRING", "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE",
    "BINARY_OP", "BINARY_SUBSCR", "BINARY_SLICE", "COMPARE_OP", "CONTAINS_OP", "IS_OP",
    "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "TO_BOOL",
})
#: Globals of these types are code, not data: a step does not show them (module level still does).
#: By id: `type(value) in a_set` would hash the class, which could run a metaclass __hash__.
_CODE_TYPE_IDS = frozenset(map(id, (
    ModuleType, FunctionType, BuiltinFunctionType, MethodType, functools.partial,
)))
#: How many frames of its own a callback may need on top of the program's deepest frame.
RECURSION_HEADROOM = 100
#: Python 3.12's frame.f_locals is a snapshot dict kept by the frame (PEP 667 replaced it in 3.13).
_SNAPSHOT_LOCALS = sys.version_info < (3, 13)
#: Names through which a function hands its own frame's locals dict to the program.
_LOCALS_NAMES = frozenset({"locals", "vars", "exec", "eval", "_getframe", "currentframe", "f_locals"})


def _is_code(value: object) -> bool:
    """Functions, classes and modules: what a global step leaves out (it shows global *data*)."""
    # issubclass(type(x), type), not isinstance(x, type): isinstance reads x.__class__, which a
    # class may define in Python.
    return id(type(value)) in _CODE_TYPE_IDS or issubclass(type(value), type)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _CodeInfo:
    """What the recorder needs to know about one code object, worked out once."""

    __slots__ = (
        "code", "kind", "path_id", "function_id", "def_step", "steps", "arg_vars",
        "var_ids", "global_vars", "quiet_lines", "async_generator", "implicit_handler",
        "shares_locals",
    )

    def __init__(self, code: CodeType, kind: int) -> None:
        self.code = code  # keeps the code alive, so id(code) stays unique
        self.kind = kind
        self.path_id = -1
        self.function_id = -1
        self.def_step = b""
        self.steps: dict[int, bytes] = {}  # line -> its Step event, serialized
        #: (name, b'{"variable_id":V,"value":') per argument, in order.
        self.arg_vars: tuple[tuple[str, bytes], ...] = ()
        #: local name -> b'{"Value":{"variable_id":V,"value":' ; None: never shown (dunders).
        self.var_ids: dict[str, bytes | None] = {}
        self.global_vars: tuple[tuple[str, bytes], ...] = ()
        self.quiet_lines: frozenset[int] = frozenset()
        self.async_generator = bool(code.co_flags & _CO_ASYNC_GENERATOR)
        #: Offsets of the handler CPython wraps around a generator's body (not the program's code).
        self.implicit_handler: frozenset[int] = frozenset()
        #: Python 3.12: the code may hand its frame's f_locals dict to the program (locals(), vars(),
        #: exec/eval, its own frame): then ``read_locals`` keeps the program's view of that dict.
        self.shares_locals = False


class _ThreadState:
    __slots__ = (
        "ident", "number", "stack", "started", "last_step", "base_depth", "in_flight", "thrown",
        "recent", "unopened_frame",
    )

    def __init__(self, ident: int, number: int, base_depth: int = 0) -> None:
        self.ident = ident
        #: The thread's id in the trace: 1 for the thread that started recording, then 2, 3, ... in
        #: order of appearance — so that a deterministic program always gives the same stream.
        self.number = number
        self.stack: list[_CodeInfo] = []  # the calls this thread has open, innermost last
        self.started = False
        #: The Step this thread emitted last, while it still describes where the thread is; None after
        #: a call or a return, when an event at the current line needs a fresh Step first.
        self.last_step: bytes | None = None
        #: Frames below the program's first frame (timelapse's own, under the CLI).
        self.base_depth = base_depth
        # Exceptions are never kept (they hold tracebacks, frames, locals): these hold an exception's
        # id and the stream's position (TraceWriter.position()) right after the event that noted it.
        #: The exception propagating now (raised, not yet handled): (id, position).
        self.in_flight: tuple | None = None
        #: A GeneratorExit thrown in by close() that CPython is about to report as raised.
        self.thrown: tuple | None = None
        #: The last exception Event: (what, id, line, position).
        self.recent: tuple | None = None
        #: id() of a frame running that is not open in the stream: one whose call the recursion limit
        #: refused, or one already closed when a signal handler's exception is raised in it.
        self.unopened_frame: int | None = None


def claim_tool_id() -> int:
    """Claim a free ``sys.monitoring`` tool id, or explain who holds them all."""
    for tool_id in _TOOL_ID_PREFERENCE:
        if _monitoring.get_tool(tool_id) is None:
            _monitoring.use_tool_id(tool_id, TOOL_NAME)
            return tool_id
    holders = ", ".join(f"{i}: {_monitoring.get_tool(i)}" for i in range(6))
    raise RecorderError(f"no free sys.monitoring tool id (held by {holders})")


class Recorder:
    """Turns the monitoring events of one recording into trace events."""

    def __init__(
        self,
        writer: TraceWriter,
        encoder: ValueEncoder,
        scope: Scope,
        *,
        on_failure: Callable[[BaseException], None],
        fault: Callable[[CodeType, int], None] | None = None,
    ) -> None:
        self.writer = writer
        self.encoder = encoder
        self.scope = scope
        self._on_failure = on_failure
        self._fault = fault
        self.tool_id: int | None = None
        self.active = False
        self.steps = 0
        #: Calls open in the stream (<toplevel> included), and all Call events written. Exact: a
        #: callback cut short takes its events back before it changes them (see _make_callbacks).
        self.open_calls = 1
        self.calls = 0
        #: Thread switches written (ThreadSwitch / ThreadStart after the first thread).
        self.switches = 0
        #: True if the program freed our sys.monitoring tool id (recording stopped there).
        self.tool_lost = False
        #: Event groups left out because memory ran out while writing them.
        self.lost_for_memory = 0
        self._lost_return = b""
        # Not re-entrant: program code (which could come back in) never runs inside a section.
        self._lock = threading.Lock()
        self._deferral = deferral
        #: Python 3.12: id(frame) -> the dict its f_locals returns, for frames with a call open.
        self._held_locals: dict[int, dict] = {}
        self._infos: dict[int, _CodeInfo] = {}
        self._code_paths: dict[int, str] = {}  # id(code) -> its source version's path
        self._code_refs: list[CodeType] = []
        self._threads: dict[int, _ThreadState] = {}
        self._threads_seen = 0
        self._current: _ThreadState | None = None
        self._switch_return: bytes | None = None
        self._recursion_limit = sys.getrecursionlimit()
        #: Call depth (recorded calls of one thread) from which on_start counts the real depth.
        self._depth_check_from = 0
        self._saved_recursion_functions: tuple[Any, Any] | None = None
        # Set by _make_callbacks: the shared pieces of the hot path, for io_event.
        self._thread_state: Callable[[], _ThreadState]
        self._step_here: Callable[[_ThreadState, FrameType], tuple[int, int] | None]

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, caller: FrameType | None = None, base_depth: int = 0) -> None:
        """Switch monitoring on.

        ``caller`` frames (and their callers) already running get their lines recorded too, as steps
        of the enclosing recorded call; their returns are not recorded. ``base_depth``: how many frames
        of the calling thread are not the program's (see ``_keep_recursion_limit``).
        """
        self.tool_id = claim_tool_id()
        self.active = True
        ident = threading.get_ident()
        state = self._threads[ident] = self._new_thread_state(ident, base_depth)
        state.started = True
        self._current = state
        self.writer.emit({"ThreadStart": state.number})
        lost = self.writer.type_id(16, "<out of memory>")
        self._lost_return = to_json(
            {"Return": {"return_value": {"kind": "Raw", "type_id": lost, "r": "<out of memory>"}}})
        _monitoring.restart_events()
        for event, callback in self._make_callbacks().items():
            _monitoring.register_callback(self.tool_id, event, callback)
        # Frames already running (the caller's, and other threads') get their lines recorded too.
        running = [caller, *(f for i, f in sys._current_frames().items() if i != ident)]
        for frame in running:
            while frame is not None:
                self._learn(frame.f_code, frame)
                frame = frame.f_back
        self._keep_recursion_limit(base_depth)
        self._deferral.install()
        _monitoring.set_events(self.tool_id, _GLOBAL_EVENTS)

    def stop(self, locked: bool = True) -> None:
        """No more callbacks, on any thread, from now on. Safe to call twice.

        Under the lock (``locked``), so that no thread is learning a code object meanwhile; not after
        fork(), where a thread that no longer exists may hold it.
        """
        if locked:
            with self._lock:
                self._switch_off_now()
        else:
            self._switch_off_now()

    _switch_off = stop  # the old name, until session.py calls stop()

    def end_stream(self, stopped_by: str, exit_status: int | None, error_text: str | None) -> None:
        """End the event stream (after ``stop()``, before ``writer.close()``): a Return of
        ``stopped_by`` for every call still open but ``<toplevel>``, the Error Event of
        ``error_text`` if any (last, on the last step: "the program ended in error"), and the
        ``<toplevel>`` Return, carrying ``exit_status`` (an Int) or None. Under the recorder's lock:
        a callback still running in another thread finishes its event group first."""
        writer = self.writer
        with self._lock:
            stop_type = writer.type_id(16, "<recording stopped>")
            still_open = {"Return": {"return_value": {"kind": "Raw", "type_id": stop_type, "r": stopped_by}}}
            for _ in range(self.open_calls - 1):
                writer.emit(still_open)
            if exit_status is None:
                toplevel_value: dict[str, Any] = {"kind": "None", "type_id": 0}
            else:
                int_type = writer.type_id(7, "int")
                toplevel_value = {"kind": "Int", "type_id": int_type, "i": exit_status}
            if error_text is not None:
                writer.emit({"Event": {"kind": ERROR_EVENT, "metadata": "", "content": error_text}})
            writer.emit({"Return": {"return_value": toplevel_value}})

    def release_signals(self) -> None:
        """The recording is over (the trace saved, or given up): the program's signal handlers
        are its own again, and those that waited for us run now. Signals wait until this, so a
        Ctrl-C or SIGTERM while the trace is being saved does not lose it."""
        self._deferral.uninstall()
        self._deferral.run_pending()

    def _switch_off_now(self) -> None:
        self.active = False
        tool_id, self.tool_id = self.tool_id, None
        if tool_id is None:
            return
        self._restore_recursion_limit()
        if _monitoring.get_tool(tool_id) != TOOL_NAME:
            # The program freed our tool id (and so our callbacks): recording had stopped there.
            # The id may belong to another tool now: leave it alone.
            self.tool_lost = True
            return
        _monitoring.set_events(tool_id, 0)
        for info in list(self._infos.values()):
            if info.kind != _OUT_OF_SCOPE:
                _monitoring.set_local_events(tool_id, info.code, 0)
        for event in _ALL_EVENTS:
            _monitoring.register_callback(tool_id, event, None)
        _monitoring.free_tool_id(tool_id)

    def _fail(self, exc: Exception) -> object:
        """The recorder itself failed inside a callback (whose events were taken back, its lock
        released): stop everything at once, then report."""
        self.stop()
        self._on_failure(exc)
        return None

    def forget_in_child(self) -> None:
        """After fork(), in the child: record nothing more and never touch the parent's trace."""
        self.active = False
        if self.tool_id is not None:
            self.stop(locked=False)
        self._deferral.pending.clear()  # the parent's
        self._deferral._queued.clear()
        self._deferral.uninstall()

    # -- the recursion limit -----------------------------------------------------------------------

    def _keep_recursion_limit(self, base_depth: int) -> None:
        """Keep the program's recursion limit where it is without the recorder.

        The callbacks are Python functions: their frames count against the limit, and under the CLI the
        program runs below a few frames of timelapse's own. So the real limit is raised by that much,
        ``sys.getrecursionlimit()`` / ``sys.setrecursionlimit()`` keep showing and taking the program's
        limit, and ``on_start`` raises RecursionError where the program would have hit its limit.
        """
        extra = base_depth + RECURSION_HEADROOM
        get_limit, set_limit = sys.getrecursionlimit, sys.setrecursionlimit
        self._saved_recursion_functions = (get_limit, set_limit)
        self._recursion_limit = get_limit()
        self._depth_check_from = max(self._recursion_limit - RECURSION_HEADROOM, 0)
        recorder = self

        def getrecursionlimit() -> int:
            return recorder._recursion_limit

        def setrecursionlimit(limit: int) -> None:
            set_limit(limit)  # validates, raises as the real one does
            recorder._recursion_limit = limit
            recorder._depth_check_from = max(limit - RECURSION_HEADROOM, 0)
            set_limit(limit + extra)

        getrecursionlimit.__doc__ = get_limit.__doc__
        setrecursionlimit.__doc__ = set_limit.__doc__
        set_limit(self._recursion_limit + extra)
        sys.getrecursionlimit, sys.setrecursionlimit = getrecursionlimit, setrecursionlimit

    def _restore_recursion_limit(self) -> None:
        if self._saved_recursion_functions is None:
            return
        get_limit, set_limit = self._saved_recursion_functions
        self._saved_recursion_functions = None
        sys.getrecursionlimit, sys.setrecursionlimit = get_limit, set_limit
        try:
            set_limit(self._recursion_limit)
        except RecursionError:  # stopped while deeper than the program's own limit
            pass

    # -- what we know about code objects -----------------------------------------------------------

    def _learn(self, code: CodeType, frame: FrameType | None, locked: bool = True) -> _CodeInfo | None:
        """Decide once whether ``code`` is recorded, and cache everything its events need.

        Code that is not recorded is decided without the lock (``locked=False``): the decision writes
        nothing to the trace, and a thread that a program's ``__del__`` or signal handler starts must
        be able to get through ``threading``'s own code while another thread holds the lock. Recorded
        code defines ids in the trace, so it needs the lock: without it, None is returned.
        """
        info = self._infos.get(id(code))
        if info is not None:
            return info
        path = self.scope.source_path(code.co_filename)
        if code is _THREAD_ROOT_CODE:
            info = _CodeInfo(code, _THREAD_ROOT)
            self._set_local_events(code, _events.PY_RETURN)
        elif path is None:
            info = _CodeInfo(code, _OUT_OF_SCOPE)
        elif not locked:
            return None
        else:
            info = self._describe(code, self._source_path(code, path), frame)
            self._set_local_events(code, _LOCAL_EVENTS)
        self._infos[id(code)] = info
        return info

    def _set_local_events(self, code: CodeType, event_set: int) -> None:
        tool_id = self.tool_id
        if tool_id is None:
            return
        try:
            _monitoring.set_local_events(tool_id, code, event_set)
        except ValueError:  # the tool id was freed meanwhile (we stopped, or the program freed it)
            pass

    def _source_path(self, code: CodeType, path: str) -> str:
        """The recorded path of ``code``'s source: a module's code, and all code nested in it, point
        at the version of the file that module was compiled from (see ``TraceWriter.source_version``)."""
        versioned = self._code_paths.get(id(code))
        if versioned is not None:
            return versioned
        if code.co_name != "<module>":
            return path
        versioned = self.writer.source_version(path)
        pending = [code]
        while pending:
            nested = pending.pop()
            self._code_paths[id(nested)] = versioned
            self._code_refs.append(nested)  # keeps the id unique
            pending.extend(c for c in nested.co_consts if isinstance(c, CodeType))
        return versioned

    def _describe(self, code: CodeType, path: str, frame: FrameType | None) -> _CodeInfo:
        writer = self.writer
        if code.co_flags & _CO_OPTIMIZED:
            kind, name = _FUNCTION, code.co_qualname
        elif code.co_name == "<module>":
            # dict.get, not .get: exec() accepts a dict subclass whose methods are Python code.
            module = dict.get(frame.f_globals, "__name__") if frame is not None else None
            kind, name = _MODULE, f"<{module if type(module) is str else code.co_filename}>"
        else:
            kind, name = _NAMESPACE, code.co_qualname  # class bodies
        info = _CodeInfo(code, kind)
        info.path_id = writer.path_id(path)
        info.function_id = writer.function_id(info.path_id, code.co_firstlineno, name)
        info.def_step = info.steps[code.co_firstlineno] = _step_event(info.path_id, code.co_firstlineno)
        if kind == _FUNCTION:
            arg_count = code.co_argcount + code.co_kwonlyargcount
            arg_count += bool(code.co_flags & _CO_VARARGS) + bool(code.co_flags & _CO_VARKEYWORDS)
            info.arg_vars = tuple(
                (name, _arg_prefix(writer.variable_id(name))) for name in code.co_varnames[:arg_count]
            )
        for name in (*code.co_varnames, *code.co_cellvars, *code.co_freevars):
            info.var_ids[name] = None if _is_dunder(name) else _value_prefix(writer.variable_id(name))
        instructions = list(dis.get_instructions(code))
        if kind != _MODULE:
            local_names = set(info.var_ids)
            f_globals = frame.f_globals if frame is not None else {}
            info.global_vars = tuple(
                (name, _value_prefix(writer.variable_id(name)))
                for name in _global_names_read(instructions)
                if name not in local_names and not _is_dunder(name)
                and not _is_code(dict.get(f_globals, name))  # the functions and classes it calls
            )
        info.quiet_lines = _quiet_lines(instructions)
        info.implicit_handler = _implicit_handler(code, instructions)
        info.shares_locals = _SNAPSHOT_LOCALS and kind == _FUNCTION and not _LOCALS_NAMES.isdisjoint(code.co_names)
        return info

    # -- the callbacks (hot path) ------------------------------------------------------------------

    def _make_callbacks(self) -> dict[int, Callable[..., Any]]:
        """Build the callbacks as closures over locals: the hot path pays no attribute lookups.

        Every callback is a *section* (module docstring): it takes the lock without blocking when it
        can (``acquire_slowly`` otherwise), notes ``mark = len(events)`` once its thread is the
        stream's, appends its event group, changes the recorder's state only once nothing can fail
        any more, lets go of the step memo and the lock, and last runs what waited (``pending``).
        """
        recorder = self
        lock_acquire, lock_release = self._lock.acquire, self._lock.release
        acquire_slowly = self._acquire_slowly
        infos = self._infos
        threads = self._threads
        writer = self.writer
        events = writer.events
        append = events.append
        rollback = writer.rollback
        encode = self.encoder.encode_json
        memo = self.encoder.step_memo()  # valid only while the program does not run: cleared below
        forget = memo.clear
        pending = self._deferral.pending
        run_pending = self._deferral.run_pending
        after_failure = self._after_failure
        learn = self._learn
        fault = self._fault
        get_ident = threading.get_ident
        getframe = sys._getframe
        get_referents = gc.get_referents
        getrefcount = sys.getrefcount
        module_type = ModuleType
        code_type_ids = _CODE_TYPE_IDS
        missing = object()
        FUNCTION, THREAD_ROOT, OUT_OF_SCOPE = _FUNCTION, _THREAD_ROOT, _OUT_OF_SCOPE
        snapshot_locals = _SNAPSHOT_LOCALS
        held = self._held_locals
        batch_size = writer.batch_size

        def flush_when_full() -> None:
            nonlocal batch_size
            writer.flush_if_full()
            batch_size = writer.batch_size

        def failed(exc: BaseException, mark: int, closing: _CodeInfo | None = None) -> object:
            """An exception inside a section, the lock held: take back the torn event group, let go
            of the lock, then the program's exceptions go on as the program's and ours stop us.
            ``closing``: the call whose Return was being written (it is closed all the same when
            memory ran out, so that the stream keeps following the program)."""
            if mark >= 0:
                rollback(mark)
            if closing is not None and issubclass(type(exc), MemoryError):
                recorder._close_without_memory(threads.get(get_ident()), closing)
            state = threads.get(get_ident())
            if state is not None:
                state.last_step = None  # the Step it points at may have been taken back
            forget()
            lock_release()
            try:
                return after_failure(exc)
            finally:
                if pending:
                    run_pending()

        def ran_pending(result: object) -> object:
            """An early way out of a callback: what waited for it runs first (a signal may have
            landed at its very start)."""
            run_pending()
            return result

        def thread_state() -> _ThreadState:
            """The calling thread's state, made current in the stream (caller holds the lock)."""
            ident = get_ident()
            state = threads.get(ident)
            if state is None:
                state = threads[ident] = recorder._new_thread_state(ident)
            if state is not recorder._current:
                recorder._switch_to(state)
            return state

        def read_locals(frame: FrameType) -> tuple[dict, dict | None]:
            """Python 3.12: ``frame.f_locals`` re-syncs the one dict a function frame keeps (the dict
            ``locals()`` returns too) and leaves it holding the values. Returns it, and what it held for
            the program before, if the program holds it (``l = locals()``): see ``let_go``."""
            key = id(frame)
            kept = held.get(key)
            # References to a dict nobody else has: the frame's, ``held``'s, ``kept``, the argument.
            saved = dict.copy(kept) if kept is not None and getrefcount(kept) > 4 else None
            f_locals = frame.f_locals
            if f_locals is not kept:  # the frame's first step
                held[key] = f_locals
                saved = None
            return f_locals, saved

        def let_go(f_locals: dict, saved: dict | None) -> None:
            """Python 3.12: leave the frame's dict as the program last saw it — empty if it never
            asked for it, so that no object lives longer for the recorder's sake."""
            dict.clear(f_locals)
            if saved is not None:
                dict.update(f_locals, saved)

        def emit_values(info: _CodeInfo, frame: FrameType) -> None:
            """Every visible variable, after the Step just emitted (values do not carry forward)."""
            var_ids = info.var_ids
            if info.kind == FUNCTION:
                if snapshot_locals:
                    if info.shares_locals:
                        f_locals, saved = read_locals(frame)
                    else:
                        f_locals, saved = frame.f_locals, None
                    try:
                        for name, value in f_locals.items():
                            try:
                                prefix = var_ids[name]
                            except KeyError:
                                prefix = new_variable(var_ids, name)
                            if prefix is not None:
                                append(prefix + encode(value) + b"}}")
                    finally:
                        let_go(f_locals, saved)
                else:
                    for name, value in frame.f_locals.items():
                        try:
                            prefix = var_ids[name]
                        except KeyError:
                            prefix = new_variable(var_ids, name)
                        if prefix is not None:
                            append(prefix + encode(value) + b"}}")
                namespace = None
            else:
                namespace = frame.f_locals
                if not issubclass(type(namespace), dict):  # a class body's custom __prepare__ mapping
                    return
                # One C call copies the items: another thread may add globals while we encode.
                for name, value in list(dict.items(namespace)):
                    try:
                        prefix = var_ids[name]
                    except KeyError:
                        prefix = new_variable(var_ids, name)
                    if prefix is not None and type(value) is not module_type:
                        append(prefix + encode(value) + b"}}")
            if info.global_vars:
                f_globals = frame.f_globals
                for name, prefix in info.global_vars:
                    value = dict.get(f_globals, name, missing)
                    if (value is missing or id(type(value)) in code_type_ids
                            or issubclass(type(value), type)):  # as _is_code
                        continue  # global data only: not the functions, classes, modules it uses
                    if namespace is not None and dict.__contains__(namespace, name):
                        continue
                    append(prefix + encode(value) + b"}}")

        def new_variable(var_ids: dict[str, bytes | None], name: str) -> bytes | None:
            """A local the code object did not declare (module and class namespaces, exec)."""
            prefix = var_ids[name] = (
                None if type(name) is not str or _is_dunder(name) else _value_prefix(writer.variable_id(name))
            )
            return prefix

        def emit_step(state: _ThreadState, info: _CodeInfo, frame: FrameType, line: int) -> None:
            step = info.steps.get(line)
            if step is None:
                step = info.steps[line] = _step_event(info.path_id, line)
            append(step)
            if memo:
                forget()
            emit_values(info, frame)
            state.last_step = step
            recorder.steps += 1

        def step_here(state: _ThreadState, frame: FrameType | None) -> tuple[int, int] | None:
            """Make sure the stream's last Step is the line ``frame`` (or its innermost recorded
            caller) is on now — after a call returned mid-line it is not — and say where that is."""
            while frame is not None:
                info = infos.get(id(frame.f_code))
                if info is not None and info.kind < THREAD_ROOT:
                    break
                frame = frame.f_back
            else:
                return None
            line = frame.f_lineno
            if not line:
                return None
            if state.last_step is None or state.last_step is not info.steps.get(line):
                emit_step(state, info, frame, line)
            return info.path_id, line

        def emit_call(state: _ThreadState, info: _CodeInfo, frame: FrameType, args: list[bytes]) -> None:
            """Step at the definition line, Call with the arguments, and the arguments as the Values
            of that step. ``args``: serialized arguments already known (a thrown exception)."""
            stack = state.stack
            if memo:
                forget()
            if len(stack) >= recorder._depth_check_from:
                check_depth(state, frame)
            if info.arg_vars:
                if snapshot_locals and info.shares_locals:
                    f_locals, saved = read_locals(frame)
                else:
                    f_locals, saved = frame.f_locals, None
                try:
                    for name, prefix in info.arg_vars:
                        try:
                            value = f_locals[name]
                        except KeyError:
                            continue
                        args.append(prefix + encode(value) + b"}")
                finally:
                    if snapshot_locals:
                        let_go(f_locals, saved)
            append(info.def_step)
            append(b'{"Call":{"function_id":%d,"args":[%b]}}' % (info.function_id, b",".join(args)))
            for arg in args:
                append(b'{"Value":' + arg + b"}")
            # Nothing can fail from here on: the call is open.
            stack.append(info)
            recorder.open_calls += 1
            recorder.calls += 1
            state.last_step = None

        def check_depth(state: _ThreadState, frame: FrameType) -> None:
            """RecursionError where the program, unrecorded, would have hit its limit."""
            depth = 0
            probe: FrameType | None = frame
            while probe is not None:
                depth += 1
                probe = probe.f_back
            if depth - state.base_depth > recorder._recursion_limit:
                state.unopened_frame = id(frame)  # its unwind is not a Return: no Call was written
                raise _ProgramRecursionError("maximum recursion depth exceeded")

        def entered(code: CodeType, resumed: bool, thrown: BaseException | None) -> object:
            """A frame starts (PY_START) or goes on (PY_RESUME, PY_THROW): Step + Call; a resumed
            frame then gets a Step where it really goes on. Out of scope: DISABLE."""
            info = infos.get(id(code))
            if info is None:
                info = learn(code, None, False)  # code we do not record: decided without the lock
            if info is not None and info.kind >= THREAD_ROOT:
                return DISABLE if not pending else ran_pending(DISABLE)
            frame = getframe(2)
            if not lock_acquire(False) and not acquire_slowly():
                return None if not pending else ran_pending(None)
            mark = -1
            try:
                if recorder.active:
                    if info is None:
                        info = learn(code, frame)
                if recorder.active and info.kind < THREAD_ROOT:
                    state = thread_state()
                    mark = len(events)
                    args = []
                    if thrown is not None:
                        if memo:
                            forget()
                        prefix = _arg_prefix(writer.variable_id("exception"))
                        args.append(prefix + encode(thrown) + b"}")
                    emit_call(state, info, frame, args)
                    mark = len(events)
                    if resumed:
                        line = frame.f_lineno
                        if line:
                            emit_step(state, info, frame, line)
                    mark = -1  # committed: a failing flush takes nothing back
                    if len(events) >= batch_size:
                        flush_when_full()
                    if thrown is not None and type(thrown) is GeneratorExit:
                        # close(): CPython reports RAISE where it lands, next; the program raised nothing.
                        state.thrown = (id(thrown), writer.position())
            except BaseException as exc:
                return failed(exc, mark)
            if memo:
                forget()
            lock_release()
            if pending:
                run_pending()
            return DISABLE if info is not None and info.kind >= THREAD_ROOT else None

        def on_start(code: CodeType, offset: int) -> object:
            return entered(code, False, None)

        def on_resume(code: CodeType, offset: int) -> object:
            """A generator or coroutine goes on."""
            return entered(code, True, None)

        def on_throw(code: CodeType, offset: int, exception: BaseException) -> None:
            """An exception thrown into a generator (``throw()``, ``close()``) resumes it; PY_THROW
            cannot be switched off per code object, so DISABLE is not an answer here."""
            entered(code, True, exception)

        def on_line(code: CodeType, line: int) -> object:
            # The hottest callback: emit_step and the common case of emit_values are inlined.
            info = infos.get(id(code))
            if info is None:  # LINE is only switched on for recorded code
                return DISABLE if not pending else ran_pending(DISABLE)
            frame = getframe(1)
            if not lock_acquire(False) and not acquire_slowly():
                return None if not pending else ran_pending(None)
            mark = -1
            try:
                if fault is not None:
                    fault(code, line)
                if recorder.active:
                    state = threads.get(get_ident())
                    if state is None or state is not recorder._current:
                        state = thread_state()
                    mark = len(events)
                    step = info.steps.get(line)
                    if step is None:
                        if line < 1:  # an empty module's body "runs" on line 0: there is no line
                            raise _NoLine
                        step = info.steps[line] = _step_event(info.path_id, line)
                    append(step)
                    if memo:
                        forget()
                    if info.kind == FUNCTION and not info.global_vars:
                        var_ids = info.var_ids
                        if snapshot_locals:
                            if info.shares_locals:
                                f_locals, saved = read_locals(frame)
                            else:
                                f_locals, saved = frame.f_locals, None
                            try:
                                for name, value in f_locals.items():
                                    try:
                                        prefix = var_ids[name]
                                    except KeyError:
                                        prefix = new_variable(var_ids, name)
                                    if prefix is not None:
                                        append(prefix + encode(value) + b"}}")
                            finally:
                                f_locals.clear()  # 3.12: see let_go
                                if saved is not None:
                                    f_locals.update(saved)
                        else:
                            for name, value in frame.f_locals.items():
                                try:
                                    prefix = var_ids[name]
                                except KeyError:
                                    prefix = new_variable(var_ids, name)
                                if prefix is not None:
                                    append(prefix + encode(value) + b"}}")
                    else:
                        emit_values(info, frame)
                    state.last_step = step
                    recorder.steps += 1
                    mark = -1  # committed: a failing flush takes nothing back
                    if len(events) >= batch_size:
                        flush_when_full()
            except _NoLine:
                lock_release()
                if pending:
                    run_pending()
                return None
            except BaseException as exc:
                return failed(exc, mark)
            if memo:
                forget()
            lock_release()
            if pending:
                run_pending()
            return None

        def returned(code: CodeType, offset: int, value: object, unwound: bool = False,
                     depth: int = 1, yielded: bool = False) -> None:
            """PY_RETURN and PY_YIELD (directly), PY_UNWIND (through on_unwind, ``depth`` 2): the
            frame's last values, then its Return."""
            info = infos.get(id(code))
            if info is None or info.kind == OUT_OF_SCOPE:
                return None if not pending else ran_pending(None)
            frame = getframe(depth)
            if not lock_acquire(False) and not acquire_slowly():
                return None if not pending else ran_pending(None)
            mark = -1
            try:
                state = threads.get(get_ident()) if recorder.active else None
                if state is None:
                    pass
                elif state.unopened_frame is not None and state.unopened_frame == id(frame):
                    state.unopened_frame = None  # a refused call, or one closed already: no Return
                elif state.stack and state.stack[-1] is info:
                    if state is not recorder._current:
                        recorder._switch_to(state)
                    mark = len(events)
                    if memo:
                        forget()
                    line = frame.f_lineno
                    if line and line not in info.quiet_lines:
                        emit_step(state, info, frame, line)
                    if info.async_generator and type(value).__name__ == "async_generator_wrapped_value":
                        wrapped = get_referents(value)  # C-level: the value the program yielded
                        value = wrapped[0] if len(wrapped) == 1 else None
                    append(b'{"Return":{"return_value":' + encode(value) + b"}}")
                    # Nothing can fail from here on: the call is closed.
                    state.stack.pop()
                    recorder.open_calls -= 1
                    state.last_step = None
                    mark = -1  # committed: a failing flush takes nothing back
                    if len(events) >= batch_size:
                        flush_when_full()
                    if unwound:  # CPython reports RAISE again in the caller, right after this
                        state.in_flight = (id(value), writer.position())
                elif info.kind == THREAD_ROOT:
                    mark = len(events)
                    recorder._thread_exit(state)
            except BaseException as exc:
                if info.shares_locals:
                    held.pop(id(frame), None)
                failed(exc, mark, info if mark >= 0 else None)
                return
            if info.shares_locals and not yielded:
                held.pop(id(frame), None)  # the frame is done with its dict (a yield keeps it)
            if memo:
                forget()
            lock_release()
            if pending:
                # A handler's exception would be raised in this frame, which the stream has closed
                # already: its raise and unwind are then the caller's (see _exception_event).
                state = threads.get(get_ident())
                if state is not None:
                    state.unopened_frame = id(frame)
                run_pending()
                if state is not None:
                    state.unopened_frame = None

        def on_unwind(code: CodeType, offset: int, exception: BaseException) -> None:
            returned(code, offset, exception, True, 2)

        def on_yield(code: CodeType, offset: int, value: object) -> None:
            # Python 3.12: a yield keeps the frame, and the locals dict the program may hold.
            returned(code, offset, value, False, 2, True)

        def exception_event(what: str) -> Callable[[CodeType, int, BaseException], None]:
            """RAISE / RERAISE / EXCEPTION_HANDLED in recorded code → an Event on the step where it
            happens. These events cannot be switched off per code object: out of scope, return fast."""

            def on_exception(code: CodeType, offset: int, exception: BaseException) -> None:
                info = infos.get(id(code))
                if info is None or info.kind >= THREAD_ROOT:
                    return None if not pending else ran_pending(None)
                if what != "raise" and offset in info.implicit_handler:
                    # The compiler's own handler around a generator's body: not the program's.
                    return None if not pending else ran_pending(None)
                frame = getframe(1)
                if not lock_acquire(False) and not acquire_slowly():
                    return None if not pending else ran_pending(None)
                mark = -1
                try:
                    if recorder.active:
                        state = thread_state()
                        mark = len(events)
                        recorder._exception_event(what, exception, state, frame, step_here)
                except BaseException as exc:
                    failed(exc, mark)
                    return
                if memo:
                    forget()
                lock_release()
                if pending:
                    run_pending()

            return on_exception

        self._thread_state = thread_state
        self._step_here = step_here
        self._flush_when_full = flush_when_full
        callbacks = {
            _events.PY_START: on_start,
            _events.PY_RESUME: on_resume,
            _events.PY_THROW: on_throw,
            _events.LINE: on_line,
            _events.PY_RETURN: returned,
            _events.PY_YIELD: on_yield if _SNAPSHOT_LOCALS else returned,
            _events.PY_UNWIND: on_unwind,
            _events.RAISE: exception_event("raise"),
            _events.RERAISE: exception_event("reraise"),
            _events.EXCEPTION_HANDLED: exception_event("handled"),
        }
        self._deferral.add_section(entered, on_line, *callbacks.values())
        return callbacks

    def _acquire_slowly(self) -> bool:
        """The lock is busy: wait for it without queueing on it. False if this very thread holds it.

        A thread that blocks in ``acquire()`` is handed the lock the moment its holder lets go, while
        the holder still runs (it has the GIL): the holder's next event then has to wait for the
        waiter, and so on — the threads take turns event by event, and every turn is a ThreadSwitch
        in the trace. Polling leaves the lock to whoever runs, so threads change about as often as
        the GIL makes them, as without recording.

        This thread holds the lock already only when program code runs inside one of our sections
        (the garbage collector calling a ``__del__`` that prints): then the caller must not wait.
        """
        if self._deferral.holds_lock(sys._getframe(2)):
            return False
        acquire = self._lock.acquire
        delay = 0.0
        while not acquire(False):
            time.sleep(delay)
            delay = min(delay * 2 or 1e-6, 1e-3)
        return True

    def _after_failure(self, exc: BaseException) -> object:
        """After a section let go of its lock (its events taken back): the recursion limit the
        program reached, and exceptions that are not ours (a signal handler's, where handlers could
        not be deferred) go on into the program; memory running out costs that one event group
        (counted in ``lost_for_memory``: the program gets no MemoryError it would not get anyway);
        any other exception is the recorder's failure and stops it."""
        if type(exc) is _ProgramRecursionError:
            raise RecursionError(*exc.args) from None
        if issubclass(type(exc), MemoryError):
            self.lost_for_memory += 1
            return None
        if not issubclass(type(exc), Exception):
            raise exc
        return self._fail(exc)  # type: ignore[arg-type]

    def _close_without_memory(self, state: _ThreadState | None, info: _CodeInfo) -> None:
        """A Return that could not be written for lack of memory: close the call with a ready-made
        one (no allocation but the list's), so that the stream still follows the program."""
        if state is None or not state.stack or state.stack[-1] is not info:
            return
        self.writer.events.append(self._lost_return)
        state.stack.pop()
        self.open_calls -= 1
        state.last_step = None

    # -- events that are not steps (under the lock) ------------------------------------------------

    def io_event(self, kind: int, stream: str, content: str, from_fd: bool = False) -> None:
        """Output written or input read by the program, on the step of the line that did it.

        Called by the stream proxies (``iocapture``) in the thread that wrote, during the write.
        Output captured at the file-descriptor level (``from_fd``) comes from a reader thread and
        goes on the step the stream is at when it arrives. Consecutive writes of one kind on one
        step become one Event. A section (see the module docstring).
        """
        if not self.active:
            return
        if not self._lock.acquire(False) and not self._acquire_slowly():
            # Program code inside our own section wrote (a __del__ run by the garbage collector):
            # its output goes on once the section is done.
            self._deferral.pending.append(lambda: self.io_event(kind, stream, content, from_fd))
            return
        writer = self.writer
        mark = -1
        try:
            if self.active:
                if from_fd:
                    state = self._current
                    if state is None:
                        self._lock.release()
                        return
                    mark = len(writer.events)
                    metadata = _event_metadata(stream, state, _step_location(state.last_step), {"source": "fd"})
                else:
                    state = self._thread_state()
                    mark = len(writer.events)
                    where = self._step_here(state, sys._getframe(1))
                    metadata = _event_metadata(stream, state, where, None)
                writer.emit_io(kind, metadata, content)
                mark = -1
                if len(writer.events) >= writer.batch_size:
                    self._flush_when_full()
        except BaseException as exc:
            writer.rollback(mark) if mark >= 0 else None
            self.encoder.step_memo().clear()
            self._lock.release()
            self._after_failure(exc)
            return
        self.encoder.step_memo().clear()
        self._lock.release()
        if self._deferral.pending:
            self._deferral.run_pending()

    def _exception_event(
        self, what: str, exception: BaseException, state: _ThreadState, frame: FrameType,
        step_here: Callable[[_ThreadState, FrameType | None], tuple[int, int] | None],
    ) -> None:
        """Record where an exception is raised, handled and re-raised — once each.

        CPython reports RAISE again in every frame an exception propagates through, and the code the
        compiler adds around ``except`` and ``finally`` blocks handles and re-raises it again at the same
        line; those repeats carry nothing new, so they are left out. The exception itself is never kept
        (that would keep it, its traceback and their frames alive): a repeat is recognized by the
        exception's id *and* by nothing having been written since the event it repeats.
        """
        writer = self.writer
        line = frame.f_lineno
        key = id(exception)
        if state.unopened_frame == id(frame):
            frame = frame.f_back  # a call not open in the stream: for the trace, its caller raised
            line = frame.f_lineno if frame is not None else None
        in_flight, recent = state.in_flight, state.recent
        thrown, state.thrown = state.thrown, None
        if what == "handled":
            if recent is not None and recent[:2] == ("reraise", key) and recent[2] == line \
                    and recent[3] == writer.position():
                return  # the cleanup code of an `except` block, about to re-raise it again
            state.in_flight = None
        elif in_flight is not None and in_flight[0] == key and in_flight[1] == writer.position():
            return  # still the same exception, on its way out through another frame
        elif what == "raise" and thrown is not None and thrown[0] == key and thrown[1] == writer.position():
            state.in_flight = (key, writer.position())
            return  # GeneratorExit thrown in by close(): the program raised nothing
        where = step_here(state, frame)
        kind = LOG_EVENT if what == "handled" else ERROR_EVENT
        self._append_event(
            kind, what, describe_exception(exception), state, where,
            {"exception": type_name(type(exception))},
        )
        if what != "handled":
            state.in_flight = (key, writer.position())
        state.recent = (what, key, line, writer.position())

    def _append_event(
        self, kind: int, stream: str, content: str, state: _ThreadState,
        where: tuple[int, int] | None, extra: dict | None,
    ) -> None:
        metadata = _event_metadata(stream, state, where, extra)
        self.writer.emit({"Event": {"kind": kind, "metadata": metadata, "content": content}})

    # -- threads (under the lock) ------------------------------------------------------------------

    def _switch_to(self, state: _ThreadState) -> None:
        """Make ``state``'s thread the one the stream follows, keeping the stream balanced. All or
        nothing: a failure half-way takes its events back and changes no state."""
        writer = self.writer
        previous = self._current
        mark = len(writer.events)
        try:
            if previous is not None and previous.stack:
                if self._switch_return is None:
                    type_id = writer.type_id(16, "<thread switch>")
                    self._switch_return = to_json(
                        {"Return": {"return_value": {"kind": "Raw", "type_id": type_id, "r": "<thread switch>"}}}
                    )
                writer.events.extend([self._switch_return] * len(previous.stack))
            writer.emit({"ThreadSwitch" if state.started else "ThreadStart": state.number})
            for info in state.stack:
                writer.events.append(info.def_step)
                writer.emit({"Call": {"function_id": info.function_id, "args": []}})
        except BaseException:
            writer.rollback(mark)
            raise
        if previous is not None:
            self.open_calls -= len(previous.stack)
        self.open_calls += len(state.stack)
        self.calls += len(state.stack)
        self.switches += 1
        state.started = True
        state.last_step = None
        self._current = state

    def _new_thread_state(self, ident: int, base_depth: int = 0) -> _ThreadState:
        self._threads_seen += 1
        return _ThreadState(ident, self._threads_seen, base_depth)

    def _thread_exit(self, state: _ThreadState) -> None:
        if not state.started:
            return
        if state is self._current:
            for _ in state.stack:
                self.writer.emit({"Return": {"return_value": {"kind": "None", "type_id": 0}}})
        self.writer.emit({"ThreadExit": state.number})
        if state is self._current:
            self.open_calls -= len(state.stack)
            state.stack.clear()
            self._current = None  # the next event, from any thread, re-opens its own calls
        del self._threads[state.ident]


def _step_event(path_id: int, line: int) -> bytes:
    return b'{"Step":{"path_id":%d,"line":%d}}' % (path_id, line)


_STEP_PATTERN = re.compile(rb'{"Step":{"path_id":(\d+),"line":(\d+)}}')


def _step_location(step: bytes | None) -> tuple[int, int] | None:
    """(path_id, line) of a serialized Step (off the hot path: only fd-level output needs it)."""
    match = _STEP_PATTERN.fullmatch(step) if step else None
    return (int(match[1]), int(match[2])) if match else None


def _value_prefix(variable_id: int) -> bytes:
    """A Value event up to its ValueRecord: prefix + record + b"}}" is the event."""
    return b'{"Value":{"variable_id":%d,"value":' % variable_id


def _arg_prefix(variable_id: int) -> bytes:
    """A Call argument up to its ValueRecord: prefix + record + b"}" is the argument."""
    return b'{"variable_id":%d,"value":' % variable_id


def _event_metadata(
    stream: str, state: _ThreadState, where: tuple[int, int] | None, extra: dict | None
) -> str:
    """The JSON object an Event carries as its metadata string: stream, thread, path and line."""
    metadata: dict[str, Any] = {"stream": stream, "thread": state.number}
    if where is not None:
        metadata["path_id"], metadata["line"] = where
    if extra:
        metadata.update(extra)
    return json.dumps(metadata)


class _NoLine(Exception):
    """Internal: a LINE event for line 0, which has no source line (never leaves on_line)."""


class _ProgramRecursionError(Exception):
    """Internal: the program went past its recursion limit (re-raised as RecursionError)."""


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


def _global_names_read(instructions: list[dis.Instruction]) -> list[str]:
    """Names the code object loads as globals (LOAD_GLOBAL, or LOAD_NAME in class bodies)."""
    names: dict[str, None] = {}
    for instruction in instructions:
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instruction.argval, str):
            names[instruction.argval] = None
    return list(names)


def _quiet_lines(instructions: list[dis.Instruction]) -> frozenset[int]:
    """Lines whose instructions cannot change any local (``return x``): no step needed after them."""
    noisy: set[int] = set()
    lines: set[int] = set()
    line = None
    for instruction in instructions:
        position = instruction.positions
        if position is not None and position.lineno is not None:
            line = position.lineno
        if line is None:
            continue
        lines.add(line)
        if instruction.opname not in _QUIET_OPCODES:
            noisy.add(line)
    return frozenset(lines - noisy)


def _implicit_handler(code: CodeType, instructions: list[dis.Instruction]) -> frozenset[int]:
    """Offsets of the handler the compiler puts around a generator's or coroutine's whole body
    (``CALL_INTRINSIC_1 INTRINSIC_STOPITERATION_ERROR`` then ``RERAISE``): the exceptions it handles and
    re-raises were not handled by anything the program wrote."""
    offsets: set[int] = set()
    for i, instruction in enumerate(instructions):
        if instruction.opname == "CALL_INTRINSIC_1" and "STOPITERATION" in str(instruction.argrepr):
            offsets.add(instruction.offset)
            for following in instructions[i + 1:i + 3]:
                offsets.add(following.offset)
                if following.opname == "RERAISE":
                    break
    return frozenset(offsets)


# io_event holds the lock like the callbacks: a signal that lands in it waits for its end.
deferral.add_section(Recorder.io_event)

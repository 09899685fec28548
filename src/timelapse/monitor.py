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
from collections.abc import Callable
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any

from timelapse.encoder import ValueEncoder
from timelapse.errors import RecorderError
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
        "var_ids", "global_vars", "quiet_lines", "async_generator",
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


class _ThreadState:
    __slots__ = (
        "ident", "number", "stack", "started", "last_step", "base_depth", "exception_in_flight",
        "last_exception_event",
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
        #: The exception propagating now (raised, not yet handled), and the last exception Event.
        self.exception_in_flight: BaseException | None = None
        self.last_exception_event: tuple[str, BaseException, int | None] | None = None


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
        #: Calls open in the stream (<toplevel> included), kept as events are written, and all Call
        #: events written. If an exception from outside (Ctrl-C, a signal handler) cut a callback
        #: short, ``interrupted`` says so and the stream itself is counted instead.
        self.open_calls = 1
        self.calls = 0
        self.interrupted = False
        # Re-entrant: a signal handler may finish the trace while a callback holds the lock.
        self._lock = threading.RLock()
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
        _monitoring.set_events(self.tool_id, _GLOBAL_EVENTS)

    def _switch_off(self) -> None:
        """No more callbacks, on any thread, from now on. Safe to call twice."""
        self.active = False
        tool_id, self.tool_id = self.tool_id, None
        if tool_id is None:
            return
        _monitoring.set_events(tool_id, 0)
        for info in self._infos.values():
            if info.kind != _OUT_OF_SCOPE:
                _monitoring.set_local_events(tool_id, info.code, 0)
        for event in _ALL_EVENTS:
            _monitoring.register_callback(tool_id, event, None)
        _monitoring.free_tool_id(tool_id)
        self._restore_recursion_limit()

    def _fail(self, exc: Exception) -> object:
        """The recorder itself failed inside a callback: stop everything at once, then report."""
        self.interrupted = True  # the failing callback may have written half an event group
        self._switch_off()
        self._on_failure(exc)
        return None

    def forget_in_child(self) -> None:
        """After fork(), in the child: record nothing more and never touch the parent's trace."""
        self.active = False
        if self.tool_id is not None:
            self._switch_off()

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

    def _learn(self, code: CodeType, frame: FrameType | None) -> _CodeInfo:
        """Decide once whether ``code`` is recorded, and cache everything its events need."""
        info = self._infos.get(id(code))
        if info is not None:
            return info
        path = self.scope.source_path(code.co_filename)
        if code is _THREAD_ROOT_CODE:
            info = _CodeInfo(code, _THREAD_ROOT)
            _monitoring.set_local_events(self.tool_id, code, _events.PY_RETURN)
        elif path is None:
            info = _CodeInfo(code, _OUT_OF_SCOPE)
        else:
            info = self._describe(code, self._source_path(code, path), frame)
            _monitoring.set_local_events(self.tool_id, code, _LOCAL_EVENTS)
        self._infos[id(code)] = info
        return info

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
            module = frame.f_globals.get("__name__") if frame is not None else None
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
                and not _is_code(f_globals.get(name))  # the functions and classes it calls
            )
        info.quiet_lines = _quiet_lines(instructions)
        return info

    # -- the callbacks (hot path) ------------------------------------------------------------------

    def _make_callbacks(self) -> dict[int, Callable[..., Any]]:
        """Build the callbacks as closures over locals: the hot path pays no attribute lookups."""
        recorder = self
        lock = self._lock
        # The lock is taken as `try: acquire() ... finally: release()`: a KeyboardInterrupt that
        # lands right after acquire() still releases it, and one that interrupts a blocked acquire()
        # does not release what it never got (hence lock_owned).
        lock_acquire, lock_release, lock_owned = lock.acquire, lock.release, lock._is_owned
        infos = self._infos
        threads = self._threads
        writer = self.writer
        events = writer.events
        append = events.append
        batch_size = writer.batch_size
        flush = writer.flush
        encode = self.encoder.encode_json
        memo = self.encoder.step_memo()  # valid only while the program does not run: cleared below
        forget = memo.clear
        learn = self._learn
        fail = self._fail
        fault = self._fault
        get_ident = threading.get_ident
        getframe = sys._getframe
        get_referents = gc.get_referents
        module_type = ModuleType
        code_type_ids = _CODE_TYPE_IDS
        missing = object()
        FUNCTION, THREAD_ROOT = _FUNCTION, _THREAD_ROOT

        def thread_state() -> _ThreadState:
            """The calling thread's state, made current in the stream (caller holds the lock)."""
            ident = get_ident()
            state = threads.get(ident)
            if state is None:
                state = threads[ident] = recorder._new_thread_state(ident)
            if state is not recorder._current:
                recorder._switch_to(state)
            return state


        def emit_values(info: _CodeInfo, frame: FrameType) -> None:
            """Every visible variable, after the Step just emitted (values do not carry forward)."""
            f_locals = frame.f_locals
            var_ids = info.var_ids
            if info.kind == FUNCTION:
                for name, value in f_locals.items():
                    try:
                        prefix = var_ids[name]
                    except KeyError:
                        prefix = new_variable(var_ids, name)
                    if prefix is not None:
                        append(prefix + encode(value) + b"}}")
            elif issubclass(type(f_locals), dict):  # not a class body's custom __prepare__ mapping
                for name, value in dict.items(f_locals):
                    try:
                        prefix = var_ids[name]
                    except KeyError:
                        prefix = new_variable(var_ids, name)
                    if prefix is not None and type(value) is not module_type:
                        append(prefix + encode(value) + b"}}")
            else:
                return
            if info.global_vars:
                f_globals = frame.f_globals
                for name, prefix in info.global_vars:
                    value = f_globals.get(name, missing)
                    if (value is missing or id(type(value)) in code_type_ids
                            or issubclass(type(value), type)):  # as _is_code
                        continue  # global data only: not the functions, classes, modules it uses
                    if info.kind != FUNCTION and name in f_locals:
                        continue
                    append(prefix + encode(value) + b"}}")

        def new_variable(var_ids: dict[str, bytes | None], name: str) -> bytes | None:
            """A local the code object did not declare (module and class namespaces, exec)."""
            prefix = var_ids[name] = (
                None if _is_dunder(name) else _value_prefix(writer.variable_id(name))
            )
            return prefix

        def emit_step(state: _ThreadState, info: _CodeInfo, frame: FrameType, line: int) -> None:
            step = info.steps.get(line)
            if step is None:
                step = info.steps[line] = _step_event(info.path_id, line)
            append(step)
            state.last_step = step
            recorder.steps += 1
            if memo:
                forget()
            emit_values(info, frame)

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
            if line is None:
                return None
            if state.last_step is None or state.last_step is not info.steps.get(line):
                emit_step(state, info, frame, line)
            return info.path_id, line

        def emit_call(info: _CodeInfo, frame: FrameType, args: list[bytes]) -> _ThreadState:
            """Step at the definition line, Call with the arguments, and the arguments as the Values
            of that step. ``args``: serialized arguments already known (a thrown exception)."""
            state = thread_state()
            stack = state.stack
            if memo:
                forget()
            if len(stack) >= recorder._depth_check_from:
                check_depth(state, frame)
            if info.arg_vars:
                f_locals = frame.f_locals
                for name, prefix in info.arg_vars:
                    try:
                        value = f_locals[name]
                    except KeyError:
                        continue
                    args.append(prefix + encode(value) + b"}")
            append(info.def_step)
            append(b'{"Call":{"function_id":%d,"args":[%b]}}' % (info.function_id, b",".join(args)))
            recorder.open_calls += 1
            recorder.calls += 1
            for arg in args:
                append(b'{"Value":' + arg + b"}")
            stack.append(info)
            state.last_step = None
            return state

        def check_depth(state: _ThreadState, frame: FrameType) -> None:
            """RecursionError where the program, unrecorded, would have hit its limit."""
            depth = 0
            while frame is not None:
                depth += 1
                frame = frame.f_back
            if depth - state.base_depth > recorder._recursion_limit:
                raise _ProgramRecursionError("maximum recursion depth exceeded")

        def entered(code: CodeType, resumed: bool, thrown: BaseException | None) -> object:
            """A frame starts (PY_START) or goes on (PY_RESUME, PY_THROW): Step + Call; a resumed
            frame then gets a Step where it really goes on. Out of scope: DISABLE."""
            try:
                info = infos.get(id(code))
                frame = getframe(2)
                if info is None:
                    try:  # not `with lock`, which costs twice as much; see _make_callbacks
                        lock_acquire()
                        if not recorder.active:
                            return DISABLE
                        info = learn(code, frame)
                    finally:
                        if lock_owned():
                            lock_release()
                if info.kind >= THREAD_ROOT:
                    return DISABLE
                try:  # not `with lock`, which costs twice as much; see _make_callbacks
                    lock_acquire()
                    if recorder.active:
                        args = []
                        if thrown is not None:
                            if memo:
                                forget()
                            prefix = _arg_prefix(writer.variable_id("exception"))
                            args.append(prefix + encode(thrown) + b"}")
                        state = emit_call(info, frame, args)
                        if resumed:
                            emit_step(state, info, frame, frame.f_lineno)
                finally:
                    if lock_owned():
                        lock_release()
            except _ProgramRecursionError as exc:
                raise RecursionError(*exc.args) from None
            except Exception as exc:
                return fail(exc)
            except BaseException:  # Ctrl-C or a signal handler's exception, mid-callback
                recorder.interrupted = True
                raise
            return None

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
                return DISABLE
            frame = getframe(1)
            try:
                if fault is not None:
                    fault(code, line)
                try:  # not `with lock`, which costs twice as much; see _make_callbacks
                    lock_acquire()
                    if recorder.active:
                        state = threads.get(get_ident())
                        if state is None or state is not recorder._current:
                            state = thread_state()
                        step = info.steps.get(line)
                        if step is None:
                            step = info.steps[line] = _step_event(info.path_id, line)
                        append(step)
                        state.last_step = step
                        recorder.steps += 1
                        if memo:
                            forget()
                        if info.kind == FUNCTION and not info.global_vars:
                            var_ids = info.var_ids
                            for name, value in frame.f_locals.items():
                                try:
                                    prefix = var_ids[name]
                                except KeyError:
                                    prefix = new_variable(var_ids, name)
                                if prefix is not None:
                                    append(prefix + encode(value) + b"}}")
                        else:
                            emit_values(info, frame)
                        if len(events) >= batch_size:
                            flush()
                finally:
                    if lock_owned():
                        lock_release()
            except Exception as exc:
                return fail(exc)
            except BaseException:  # Ctrl-C or a signal handler's exception, mid-callback
                recorder.interrupted = True
                raise
            return None

        def on_return(code: CodeType, offset: int, value: object) -> object:
            """PY_RETURN, PY_YIELD and PY_UNWIND: the frame's last values, then its Return."""
            info = infos.get(id(code))
            if info is None:
                return None
            try:
                try:  # not `with lock`, which costs twice as much; see _make_callbacks
                    lock_acquire()
                    if not recorder.active:
                        return None
                    state = threads.get(get_ident())
                    if state is None:
                        return None
                    stack = state.stack
                    if stack and stack[-1] is info:
                        if state is not recorder._current:
                            recorder._switch_to(state)
                        if memo:
                            forget()
                        frame = getframe(1)
                        line = frame.f_lineno
                        if line is not None and line not in info.quiet_lines:
                            emit_step(state, info, frame, line)
                        if info.async_generator and type(value).__name__ == "async_generator_wrapped_value":
                            wrapped = get_referents(value)  # C-level: the value the program yielded
                            value = wrapped[0] if len(wrapped) == 1 else None
                        append(b'{"Return":{"return_value":' + encode(value) + b"}}")
                        recorder.open_calls -= 1
                        stack.pop()
                        state.last_step = None
                    elif info.kind == THREAD_ROOT:
                        recorder._thread_exit(state)
                finally:
                    if lock_owned():
                        lock_release()
            except Exception as exc:
                return fail(exc)
            except BaseException:  # Ctrl-C or a signal handler's exception, mid-callback
                recorder.interrupted = True
                raise
            return None

        def exception_event(what: str) -> Callable[[CodeType, int, BaseException], None]:
            """RAISE / RERAISE / EXCEPTION_HANDLED in recorded code → an Event on the step where it
            happens. These events cannot be switched off per code object: out of scope, return fast."""

            def on_exception(code: CodeType, offset: int, exception: BaseException) -> None:
                info = infos.get(id(code))
                if info is None or info.kind >= THREAD_ROOT:
                    return
                try:
                    try:  # not `with lock`, which costs twice as much; see _make_callbacks
                        lock_acquire()
                        if recorder.active:
                            recorder._exception_event(what, exception, thread_state(), getframe(1))
                    finally:
                        if lock_owned():
                            lock_release()
                except Exception as exc:
                    fail(exc)
                except BaseException:  # Ctrl-C or a signal handler's exception, mid-callback
                    recorder.interrupted = True
                    raise

            return on_exception

        self._thread_state = thread_state
        self._step_here = step_here
        return {
            _events.PY_START: on_start,
            _events.PY_RESUME: on_resume,
            _events.PY_THROW: on_throw,
            _events.LINE: on_line,
            _events.PY_RETURN: on_return,
            _events.PY_YIELD: on_return,
            _events.PY_UNWIND: on_return,
            _events.RAISE: exception_event("raise"),
            _events.RERAISE: exception_event("reraise"),
            _events.EXCEPTION_HANDLED: exception_event("handled"),
        }

    # -- events that are not steps (under the lock) ------------------------------------------------

    def io_event(self, kind: int, stream: str, content: str, from_fd: bool = False) -> None:
        """Output written or input read by the program, on the step of the line that did it.

        Called by the stream proxies (``iocapture``) in the thread that wrote, during the write.
        Output captured at the file-descriptor level (``from_fd``) comes from a reader thread and
        goes on the step the stream is at when it arrives. Consecutive writes of one kind on one
        step become one Event.
        """
        if not self.active:
            return
        try:
            with self._lock:
                if not self.active:
                    return
                if from_fd:
                    state = self._current
                    if state is None:
                        return
                    where = _step_location(state.last_step)
                    metadata = _event_metadata(stream, state, where, {"source": "fd"})
                else:
                    state = self._thread_state()
                    where = self._step_here(state, sys._getframe(1))
                    metadata = _event_metadata(stream, state, where, None)
                self.writer.emit_io(kind, metadata, content)
        except Exception as exc:
            self._fail(exc)
        except BaseException:
            self.interrupted = True
            raise

    def _exception_event(
        self, what: str, exception: BaseException, state: _ThreadState, frame: FrameType
    ) -> None:
        """Record where an exception is raised, handled and re-raised — once each.

        CPython reports RAISE again in every frame an exception propagates through, and the code the
        compiler adds around ``except`` and ``finally`` blocks handles and re-raises it again at the same
        line; those repeats carry nothing new, so they are left out.
        """
        in_flight = state.exception_in_flight
        line = frame.f_lineno
        if what == "handled":
            last = state.last_exception_event
            if last == ("reraise", exception, line):
                return  # the cleanup code of an `except` block, about to re-raise it again
            state.exception_in_flight = None
        elif exception is in_flight:
            return  # still the same exception, on its way out through another frame
        else:
            state.exception_in_flight = exception
        state.last_exception_event = (what, exception, line)
        where = self._step_here(state, frame)
        kind = LOG_EVENT if what == "handled" else ERROR_EVENT
        self._append_event(
            kind, what, describe_exception(exception), state, where,
            {"exception": _type_name(type(exception))},
        )

    def _append_event(
        self, kind: int, stream: str, content: str, state: _ThreadState,
        where: tuple[int, int] | None, extra: dict | None,
    ) -> None:
        metadata = _event_metadata(stream, state, where, extra)
        self.writer.emit({"Event": {"kind": kind, "metadata": metadata, "content": content}})

    # -- threads (under the lock) ------------------------------------------------------------------

    def _switch_to(self, state: _ThreadState) -> None:
        """Make ``state``'s thread the one the stream follows, keeping the stream balanced."""
        writer = self.writer
        previous = self._current
        if previous is not None and previous.stack:
            if self._switch_return is None:
                type_id = writer.type_id(16, "<thread switch>")
                self._switch_return = to_json(
                    {"Return": {"return_value": {"kind": "Raw", "type_id": type_id, "r": "<thread switch>"}}}
                )
            for _ in previous.stack:
                writer.events.append(self._switch_return)
            self.open_calls -= len(previous.stack)
        writer.emit({"ThreadSwitch" if state.started else "ThreadStart": state.number})
        state.started = True
        for info in state.stack:
            writer.events.append(info.def_step)
            writer.emit({"Call": {"function_id": info.function_id, "args": []}})
        self.open_calls += len(state.stack)
        self.calls += len(state.stack)
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
            self.open_calls -= len(state.stack)
            state.stack.clear()
            self._current = None  # the next event, from any thread, re-opens its own calls
        self.writer.emit({"ThreadExit": state.number})
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


class _ProgramRecursionError(Exception):
    """Internal: the program went past its recursion limit (re-raised as RecursionError)."""


_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_exception_args = BaseException.__dict__["args"].__get__


def _type_name(cls: type) -> str:
    """``module.QualName`` of a class, read through C-level descriptors (a metaclass cannot run)."""
    module = _type_module(cls, type)
    qualname = _type_qualname(cls, type)
    return qualname if module in ("builtins", None) or type(module) is not str else f"{module}.{qualname}"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` without running the exception's own Python code (no ``__str__`` call)."""
    name = _type_name(type(exc))
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
    return f"<{_type_name(type(value))}>"


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

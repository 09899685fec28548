"""The ``sys.monitoring`` callbacks: interpreter events in, trace events out.

One ``Recorder`` per recording. It claims a monitoring tool id and listens to:

- PY_START / PY_RESUME / PY_THROW (global) → ``Step`` at the callee + ``Call``;
- LINE / PY_RETURN / PY_YIELD (local, switched on per in-scope code object) → ``Step`` + ``Value``\\ s,
  ``Return``;
- PY_UNWIND (global: CPython cannot switch it on per code object) → ``Return`` of the exception.

Everything about a code object (is it in scope, its ids, its argument names, the globals it reads) is
worked out once, on its first event, and cached in a ``_CodeInfo`` keyed by ``id(code)`` (the info keeps
the code alive, so the id is never reused). Out-of-scope code gets ``sys.monitoring.DISABLE`` back and
costs nothing after its first event.

Threads: every thread has its own call stack. The trace has one stream, and CodeTracer keeps one call
stack, so when another thread starts producing events the recorder closes the calls of the thread that
ran before (``Return`` of a "thread switch" marker), writes ``ThreadSwitch``, and re-opens the new
thread's calls (``Step`` + ``Call``). The stream is always balanced and every Return pairs with its
own thread's Call. See ``docs/threads.md``.

The callbacks are the hot path: they are closures over local variables (no attribute lookups), they
cache every event that can be cached, and they hold one lock per event so that a thread switch can never
split a ``Step`` from its ``Value``\\ s.
"""

from __future__ import annotations

import dis
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType, ModuleType
from typing import Any

from timelapse.encoder import ValueEncoder
from timelapse.errors import RecorderError
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

_monitoring = sys.monitoring
_events = _monitoring.events
DISABLE = _monitoring.DISABLE

TOOL_NAME = "timelapse"
#: Tool ids we try, the unreserved ones first (0 debugger, 1 coverage, 2 profiler, 5 optimizer).
_TOOL_ID_PREFERENCE = (3, 4, 0, 2, 5, 1)
_GLOBAL_EVENTS = _events.PY_START | _events.PY_RESUME | _events.PY_THROW | _events.PY_UNWIND
_LOCAL_EVENTS = _events.LINE | _events.PY_RETURN | _events.PY_YIELD
_CO_OPTIMIZED = 0x0001
_CO_VARARGS = 0x0004
_CO_VARKEYWORDS = 0x0008

_FUNCTION, _MODULE, _NAMESPACE, _THREAD_ROOT, _OUT_OF_SCOPE = range(5)
# threading.Thread._bootstrap_inner starts and ends every threading.Thread: its return is a ThreadExit.
_THREAD_ROOT_CODE = threading.Thread._bootstrap_inner.__code__


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _CodeInfo:
    """What the recorder needs to know about one code object, worked out once."""

    __slots__ = (
        "code", "kind", "path_id", "function_id", "def_step", "steps", "arg_vars",
        "var_ids", "global_vars",
    )

    def __init__(self, code: CodeType, kind: int) -> None:
        self.code = code  # keeps the code alive, so id(code) stays unique
        self.kind = kind
        self.path_id = -1
        self.function_id = -1
        self.def_step: dict | None = None
        self.steps: dict[int, dict] = {}  # line -> cached Step event
        self.arg_vars: tuple[tuple[str, int], ...] = ()
        self.var_ids: dict[str, int | None] = {}  # local name -> VariableId, None = never shown
        self.global_vars: tuple[tuple[str, int], ...] = ()


class _ThreadState:
    __slots__ = ("ident", "stack", "started")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.stack: list[_CodeInfo] = []  # the calls this thread has open, innermost last
        self.started = False


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
        self.calls = 0
        self._lock = threading.RLock()  # re-entrant: a signal handler may finish the trace mid-callback
        self._infos: dict[int, _CodeInfo] = {}
        self._threads: dict[int, _ThreadState] = {}
        self._current: _ThreadState | None = None
        self._switch_return: dict | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, caller: FrameType | None = None) -> None:
        """Switch monitoring on. ``caller`` frames (and their callers) already running get their lines
        recorded too, as steps of the enclosing recorded call; their returns are not recorded."""
        self.tool_id = claim_tool_id()
        self.active = True
        ident = threading.get_ident()
        state = self._threads[ident] = _ThreadState(ident)
        state.started = True
        self._current = state
        self.writer.events.append({"ThreadStart": ident})
        _monitoring.restart_events()
        for event, callback in self._make_callbacks().items():
            _monitoring.register_callback(self.tool_id, event, callback)
        frame = caller
        while frame is not None:
            self._learn(frame.f_code, frame)
            frame = frame.f_back
        _monitoring.set_events(self.tool_id, _GLOBAL_EVENTS)

    def stop(self, return_value: dict) -> None:
        """Switch monitoring off and close the calls still open in the stream."""
        self._switch_off()
        with self._lock:
            current = self._current
            if current is not None:
                append = self.writer.events.append
                for _ in current.stack:
                    append({"Return": {"return_value": return_value}})
                current.stack.clear()

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
        for event in (
            _events.PY_START, _events.PY_RESUME, _events.PY_THROW, _events.PY_UNWIND,
            _events.LINE, _events.PY_RETURN, _events.PY_YIELD,
        ):
            _monitoring.register_callback(tool_id, event, None)
        _monitoring.free_tool_id(tool_id)

    def _fail(self, exc: Exception) -> object:
        """The recorder itself failed inside a callback: stop everything at once, then report."""
        self._switch_off()
        self._on_failure(exc)
        return None

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
            info = self._describe(code, path, frame)
            _monitoring.set_local_events(self.tool_id, code, _LOCAL_EVENTS)
        self._infos[id(code)] = info
        return info

    def _describe(self, code: CodeType, path: str, frame: FrameType | None) -> _CodeInfo:
        writer = self.writer
        if code.co_flags & _CO_OPTIMIZED:
            kind, name = _FUNCTION, code.co_qualname
        elif code.co_name == "<module>":
            module = frame.f_globals.get("__name__") if frame is not None else None
            kind, name = _MODULE, f"<{module if isinstance(module, str) else code.co_filename}>"
        else:
            kind, name = _NAMESPACE, code.co_qualname  # class bodies
        info = _CodeInfo(code, kind)
        info.path_id = writer.path_id(path)
        info.function_id = writer.function_id(info.path_id, code.co_firstlineno, name)
        info.def_step = {"Step": {"path_id": info.path_id, "line": code.co_firstlineno}}
        if kind == _FUNCTION:
            arg_count = code.co_argcount + code.co_kwonlyargcount
            arg_count += bool(code.co_flags & _CO_VARARGS) + bool(code.co_flags & _CO_VARKEYWORDS)
            info.arg_vars = tuple(
                (name, writer.variable_id(name)) for name in code.co_varnames[:arg_count]
            )
        for name in (*code.co_varnames, *code.co_cellvars, *code.co_freevars):
            info.var_ids[name] = None if _is_dunder(name) else writer.variable_id(name)
        if kind != _MODULE:
            local_names = set(info.var_ids)
            info.global_vars = tuple(
                (name, writer.variable_id(name))
                for name in _global_names_read(code)
                if name not in local_names and not _is_dunder(name)
            )
        return info

    # -- the callbacks (hot path) ------------------------------------------------------------------

    def _make_callbacks(self) -> dict[int, Callable[..., Any]]:
        """Build the callbacks as closures over locals: the hot path pays no attribute lookups."""
        recorder = self
        lock = self._lock
        infos = self._infos
        threads = self._threads
        writer = self.writer
        events = writer.events
        append = events.append
        batch_size = writer.batch_size
        flush = writer.flush
        encode = self.encoder.encode
        learn = self._learn
        fail = self._fail
        fault = self._fault
        get_ident = threading.get_ident
        getframe = sys._getframe
        module_type = ModuleType
        missing = object()
        FUNCTION, MODULE, THREAD_ROOT, OUT = _FUNCTION, _MODULE, _THREAD_ROOT, _OUT_OF_SCOPE

        def thread_state() -> _ThreadState:
            """The calling thread's state, made current in the stream (caller holds the lock)."""
            ident = get_ident()
            state = threads.get(ident)
            if state is None:
                state = threads[ident] = _ThreadState(ident)
            if state is not recorder._current:
                recorder._switch_to(state)
            return state

        def emit_call(info: _CodeInfo, frame: FrameType, step: dict, extra: list) -> None:
            state = thread_state()
            args = extra
            if info.arg_vars:
                f_locals = frame.f_locals
                for name, variable_id in info.arg_vars:
                    try:
                        value = f_locals[name]
                    except KeyError:
                        continue
                    args.append({"variable_id": variable_id, "value": encode(value)})
            append(step)
            append({"Call": {"function_id": info.function_id, "args": args}})
            for arg in args:  # the arguments are the locals at the definition-line step
                append({"Value": arg})
            state.stack.append(info)
            recorder.calls += 1

        def emit_values(info: _CodeInfo, frame: FrameType) -> None:
            f_locals = frame.f_locals
            var_ids = info.var_ids
            kind = info.kind
            if kind != FUNCTION and not isinstance(f_locals, dict):
                return  # a class body with a custom __prepare__ mapping: reading it runs user code
            items = dict.items(f_locals) if kind != FUNCTION else f_locals.items()
            for name, value in items:
                try:
                    variable_id = var_ids[name]
                except KeyError:
                    variable_id = var_ids[name] = (
                        None if _is_dunder(name) else writer.variable_id(name)
                    )
                if variable_id is None:
                    continue
                if kind == MODULE and type(value) is module_type:
                    continue
                append({"Value": {"variable_id": variable_id, "value": encode(value)}})
            if info.global_vars:
                f_globals = frame.f_globals
                for name, variable_id in info.global_vars:
                    value = f_globals.get(name, missing)
                    if value is missing or type(value) is module_type:
                        continue
                    if kind != FUNCTION and name in f_locals:
                        continue
                    append({"Value": {"variable_id": variable_id, "value": encode(value)}})

        def known(code: CodeType) -> _CodeInfo | None:
            """The code's info, learning it on its first event (None once recording is over)."""
            info = infos.get(id(code))
            if info is None:
                with lock:
                    if not recorder.active:
                        return None
                    info = learn(code, getframe(2))
            return info

        def on_start(code: CodeType, offset: int) -> object:
            try:
                info = infos.get(id(code)) or known(code)
                if info is None or info.kind >= THREAD_ROOT:
                    return DISABLE
                frame = getframe(1)
                with lock:
                    if recorder.active:
                        emit_call(info, frame, info.def_step, [])
            except Exception as exc:
                return fail(exc)
            return None

        def emit_resume(info: _CodeInfo, frame: FrameType, extra: list) -> None:
            """A generator or coroutine resumes: Call (after a Step at its definition, as every
            Call), then a Step where it really goes on, with its locals."""
            emit_call(info, frame, info.def_step, extra)
            append({"Step": {"path_id": info.path_id, "line": frame.f_lineno}})
            recorder.steps += 1
            emit_values(info, frame)

        def on_resume(code: CodeType, offset: int) -> object:
            try:
                info = infos.get(id(code)) or known(code)
                if info is None or info.kind >= THREAD_ROOT:
                    return DISABLE
                frame = getframe(1)
                with lock:
                    if recorder.active:
                        emit_resume(info, frame, [])
            except Exception as exc:
                return fail(exc)
            return None

        def on_throw(code: CodeType, offset: int, exception: BaseException) -> None:
            info = infos.get(id(code))
            if info is None or info.kind >= THREAD_ROOT:
                return
            frame = getframe(1)
            try:
                with lock:
                    if recorder.active:
                        thrown = {"variable_id": writer.variable_id("exception"),
                                  "value": encode(exception)}
                        emit_resume(info, frame, [thrown])
            except Exception as exc:
                fail(exc)

        def on_line(code: CodeType, line: int) -> object:
            info = infos.get(id(code))
            if info is None or info.kind >= THREAD_ROOT:
                return DISABLE
            frame = getframe(1)
            try:
                if fault is not None:
                    fault(code, line)
                with lock:
                    if recorder.active:
                        thread_state()
                        step = info.steps.get(line)
                        if step is None:
                            step = info.steps[line] = {
                                "Step": {"path_id": info.path_id, "line": line}
                            }
                        append(step)
                        recorder.steps += 1
                        emit_values(info, frame)
                        if len(events) >= batch_size:
                            flush()
            except Exception as exc:
                return fail(exc)

        def on_return(code: CodeType, offset: int, value: object) -> object:
            info = infos.get(id(code))
            if info is None:
                return None
            try:
                with lock:
                    if not recorder.active:
                        return None
                    state = threads.get(get_ident())
                    if state is None:
                        return None
                    stack = state.stack
                    if stack and stack[-1] is info:
                        if state is not recorder._current:
                            recorder._switch_to(state)
                        append({"Return": {"return_value": encode(value)}})
                        stack.pop()
                    elif info.kind == THREAD_ROOT:
                        recorder._thread_exit(state)
            except Exception as exc:
                return fail(exc)
            return None

        return {
            _events.PY_START: on_start,
            _events.PY_RESUME: on_resume,
            _events.PY_THROW: on_throw,
            _events.LINE: on_line,
            _events.PY_RETURN: on_return,
            _events.PY_YIELD: on_return,
            _events.PY_UNWIND: on_return,
        }

    # -- threads (under the lock) ------------------------------------------------------------------

    def _switch_to(self, state: _ThreadState) -> None:
        """Make ``state``'s thread the one the stream follows, keeping the stream balanced."""
        append = self.writer.events.append
        previous = self._current
        if previous is not None and previous.stack:
            if self._switch_return is None:
                type_id = self.writer.type_id(16, "<thread switch>")
                self._switch_return = {
                    "Return": {"return_value": {"kind": "Raw", "type_id": type_id, "r": "<thread switch>"}}
                }
            for _ in previous.stack:
                append(self._switch_return)
        if state.started:
            append({"ThreadSwitch": state.ident})
        else:
            append({"ThreadStart": state.ident})
            state.started = True
        for info in state.stack:
            append(info.def_step)
            append({"Call": {"function_id": info.function_id, "args": []}})
        self._current = state

    def _thread_exit(self, state: _ThreadState) -> None:
        if not state.started:
            return
        if state is self._current:
            self._switch_to_none()
        self.writer.events.append({"ThreadExit": state.ident})
        del self._threads[state.ident]

    def _switch_to_none(self) -> None:
        """The current thread ended; the next event from any thread re-opens its own calls."""
        current = self._current
        if current is not None and current.stack:
            for _ in current.stack:
                self.writer.events.append(
                    {"Return": {"return_value": {"kind": "None", "type_id": 0}}}
                )
        self._current = None


def _global_names_read(code: CodeType) -> list[str]:
    """Names the code object loads as globals (LOAD_GLOBAL, or LOAD_NAME in class bodies)."""
    names: dict[str, None] = {}
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instruction.argval, str):
            names[instruction.argval] = None
    return list(names)

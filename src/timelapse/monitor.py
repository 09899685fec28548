"""The ``sys.monitoring`` plumbing and callbacks: interpreter events in, trace events out.

One ``Recorder`` per recording. It claims a monitoring tool id and listens to:

- PY_START / PY_RESUME / PY_THROW (global) → ``Step`` at the callee's definition + ``Call``;
- LINE / PY_RETURN / PY_YIELD (local: switched on per in-scope code object) → ``Step`` + ``Value``\\ s,
  ``Return``;
- PY_UNWIND, RAISE, RERAISE, EXCEPTION_HANDLED (global: CPython cannot switch them on per code object)
  → ``Return`` of the exception, exception ``Event``\\ s.

Where things are:

- this module: the ``Recorder`` (its life cycle, the one lock and the transactional guard every
  callback follows, IO events) and ``_make_callbacks``, the hot path, one closure per event
  (``on_py_start``, ``on_line``, ``on_py_return``, ...);
- ``codeinfo``: what is known about a code object — facts cached per process, ids and byte
  templates per trace (``CodeTable``); out-of-scope code gets ``sys.monitoring.DISABLE`` back and costs
  nothing after its first event;
- ``threads``: per-thread state and the one-stream switch protocol, with its invariants;
- ``recursion``: the program's recursion limit, kept where it is without the recorder;
- ``exception_events``: raise / re-raise / handled Events, once each;
- the spelling of every event is the trace format's (``writer.format.events``); this module writes
  no syntax.

A *gated* recording (``record_only``, ``activation_path``: ``activation``, docs/activation.md)
records a thread only while it is inside an activation. While no thread is, only PY_START / PY_RESUME
/ PY_THROW are on, and every code object that does not start an activation gets ``DISABLE`` back: one
event per code object, then nothing — but while another tool holds a monitoring id, ``None`` (the
restart that DISABLE calls for would undo that tool's DISABLEs too). An activation switches the other
global events on and, if timelapse DISABLEd anything since, calls ``restart_events()`` (the DISABLEs
are undone, for every tool); its end, when no other thread is
active, switches them off again along with the local events of every code it recorded. Threads
outside an activation while another is inside drop their events at the top of each callback, never
with DISABLE (that would switch the location off for the active thread too).

Values at a step are the values *before* its line runs. So that the effect of the last line of a frame
is visible too, a frame that returns (or yields, or unwinds) gets one more Step on the line it leaves
from, with its values at that moment, right before its ``Return`` — unless that line can change no local
(a plain ``return x``). See ``docs/values.md``.

The callbacks are the hot path: they are closures over local variables (no attribute lookups), they
cache every event that can be cached, and they hold one lock per event so that a thread switch can never
split a ``Step`` from its ``Value``\\ s.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType, ModuleType
from typing import Any

from timelapse.activation import Activation
from timelapse.codeinfo import (
    CODE_TYPE_IDS, FUNCTION, OUT_OF_SCOPE, SNAPSHOT_LOCALS, THREAD_ROOT, CodeInfo, CodeTable,
)
from timelapse import encoder as _encoder
from timelapse.encoder import ValueEncoder
from timelapse.errors import RecorderError
from timelapse.exception_events import ExceptionEvents
from timelapse.exception_events import describe_exception as describe_exception  # for cli.py
from timelapse.format import NONE_TYPE_ID, EventKind, TypeKind
from timelapse.interrupts import deferral
from timelapse.recursion import ProgramRecursionError, RecursionLimit
from timelapse.scope import Scope
from timelapse.threads import Threads, ThreadState
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
#: A gated recording while no thread is inside an activation: what can start one.
_INACTIVE_EVENTS = _events.PY_START | _events.PY_RESUME | _events.PY_THROW
#: co_flags of a function's code (not of a module or class body).
_CO_OPTIMIZED = 0x1
_ALL_EVENTS = (
    _events.PY_START, _events.PY_RESUME, _events.PY_THROW, _events.PY_UNWIND, _events.LINE,
    _events.PY_RETURN, _events.PY_YIELD, _events.RAISE, _events.RERAISE, _events.EXCEPTION_HANDLED,
)


def _other_tools(tool_id: int) -> bool:
    """Does a tool other than timelapse's own hold a ``sys.monitoring`` id (one that DISABLE and
    ``restart_events()`` could concern)?"""
    for i in range(6):
        if i != tool_id:
            name = _monitoring.get_tool(i)
            if name is not None and not name.startswith(TOOL_NAME):
                return True
    return False


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
        activation: Activation | None = None,
    ) -> None:
        self.writer = writer
        self.encoder = encoder
        self.scope = scope
        self._on_failure = on_failure
        self._fault = fault
        self.tool_id: int | None = None
        #: A gated recording's rules (None: everything in scope is recorded, from start to stop).
        self.activation = activation
        #: Activations begun (a gated recording), in every thread.
        self.activations = 0
        #: id(code) -> code, of the recorded code objects whose local events are on (gated only:
        #: switched off when the last activation ends, on again at the code's next entry).
        self._armed: dict[int, CodeType] = {}
        #: A gated recording, read by the hot path: [timelapse answered DISABLE to code that may run
        #: in an activation since the last restart_events(), another tool holds a monitoring id].
        self._gate = [False, False]
        self.active = False
        self.steps = 0
        #: True if the program freed our sys.monitoring tool id (recording stopped there).
        self.tool_lost = False
        #: Event groups left out because memory ran out while writing them.
        self.lost_for_memory = 0
        self._lost_return = b""
        # Not re-entrant: program code (which could come back in) never runs inside a section.
        self._lock = threading.Lock()
        self._deferral = deferral
        self.codes = CodeTable(writer, scope, self._watch, encoder.redactor)
        self.threads = Threads(writer)
        redactor = encoder.redactor
        self.exceptions = ExceptionEvents(writer, redactor.redact_text if redactor is not None else None)
        self._recursion = RecursionLimit()
        #: Python 3.12: id(frame) -> the dict its f_locals returns, for frames with a call open.
        self._held_locals: dict[int, dict] = {}
        # Set by _make_callbacks: the shared pieces of the hot path, for io_event.
        self._thread_state: Callable[[], ThreadState]
        self._step_here: Callable[[ThreadState, FrameType], tuple[int, int] | None]
        self._flush_when_full: Callable[[], None]

    @property
    def calls(self) -> int:
        """Call events written (the re-opened calls of thread switches included)."""
        return self.threads.calls

    @property
    def open_calls(self) -> int:
        """Calls open in the stream, ``<toplevel>`` included."""
        return self.threads.open_calls

    @property
    def switches(self) -> int:
        """Thread switches written (ThreadSwitch / ThreadStart after the first thread)."""
        return self.threads.switches

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, caller: FrameType | None = None, base_depth: int = 0) -> None:
        """Switch monitoring on.

        ``caller`` frames (and their callers) already running get their lines recorded too, as steps
        of the enclosing recorded call; their returns are not recorded. ``base_depth``: how many frames
        of the calling thread are not the program's (see ``recursion``).
        """
        self.tool_id = claim_tool_id()
        self.active = True
        ident = threading.get_ident()
        self.threads.begin(ident, base_depth)
        writer = self.writer
        lost = writer.type_id(TypeKind.RAW, "<out of memory>")
        self._lost_return = writer.format.events.return_event(writer.format.values.raw(lost, "<out of memory>"))
        _monitoring.restart_events()
        for event, callback in _make_callbacks(self).items():
            _monitoring.register_callback(self.tool_id, event, callback)
        # Frames already running (the caller's, and other threads') get their lines recorded too;
        # not in a gated recording, which records only from an activation's first event.
        gated = self.activation is not None
        running = [] if gated else [caller, *(f for i, f in sys._current_frames().items() if i != ident)]
        for frame in running:
            while frame is not None:
                self.codes.learn(frame.f_code, frame)
                frame = frame.f_back
        self._recursion.keep(base_depth)
        self._deferral.install()
        _monitoring.set_events(self.tool_id, _INACTIVE_EVENTS if gated else _GLOBAL_EVENTS)

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

    def end_stream(self, stopped_by: str, exit_status: int | None, error_text: str | None) -> None:
        """End the event stream (after ``stop()``, before ``writer.close()``): a Return of
        ``stopped_by`` for every call still open but ``<toplevel>``, the Error Event of
        ``error_text`` if any (last, on the last step: "the program ended in error"), and the
        ``<toplevel>`` Return, carrying ``exit_status`` (an Int) or None. Under the recorder's lock:
        a callback still running in another thread finishes its event group first."""
        writer = self.writer
        spelling, values = writer.format.events, writer.format.values
        with self._lock:
            events = writer.events
            stop_type = writer.type_id(TypeKind.RAW, "<recording stopped>")
            still_open = spelling.return_event(values.raw(stop_type, stopped_by))
            events.extend([still_open] * (self.open_calls - 1))
            if exit_status is None:
                toplevel_value = values.none(NONE_TYPE_ID)
            else:
                toplevel_value = values.int(writer.type_id(TypeKind.INT, "int"), exit_status)
            if error_text is not None:
                redact_text = self.exceptions.redact_text
                if redact_text is not None:     # the traceback shows the exception's message
                    error_text = redact_text(error_text)
                events.append(spelling.event(EventKind.ERROR, "", error_text))
            events.append(spelling.return_event(toplevel_value))

    def release_signals(self) -> None:
        """The recording is over (the trace saved, or given up): the program's signal handlers
        are its own again, and those that waited for us run now. Signals wait until this, so a
        Ctrl-C or SIGTERM while the trace is being saved does not lose it."""
        self._deferral.uninstall()
        self._deferral.run_pending()

    def forget_in_child(self) -> None:
        """After fork(), in the child: record nothing more and never touch the parent's trace."""
        self.active = False
        if self.tool_id is not None:
            self.stop(locked=False)
        self._deferral.forget_pending()  # the parent's
        self._deferral.uninstall()

    def _switch_off_now(self) -> None:
        self.active = False
        tool_id, self.tool_id = self.tool_id, None
        if tool_id is None:
            return
        self._recursion.restore()
        if _monitoring.get_tool(tool_id) != TOOL_NAME:
            # The program freed our tool id (and so our callbacks): recording had stopped there.
            # The id may belong to another tool now: leave it alone.
            self.tool_lost = True
            return
        _monitoring.set_events(tool_id, 0)
        for code in self.codes.recorded():
            _monitoring.set_local_events(tool_id, code, 0)
        for event in _ALL_EVENTS:
            _monitoring.register_callback(tool_id, event, None)
        _monitoring.free_tool_id(tool_id)

    def _watch(self, code: CodeType, kind: int) -> None:
        """A code object just learned (``CodeTable.learn``): switch its local events on."""
        tool_id = self.tool_id
        if tool_id is None:
            return
        try:
            _monitoring.set_local_events(tool_id, code, _events.PY_RETURN if kind == THREAD_ROOT else _LOCAL_EVENTS)
        except ValueError:  # the tool id was freed meanwhile (we stopped, or the program freed it)
            return
        if self.activation is not None and kind != THREAD_ROOT:
            self._armed[id(code)] = code  # the thread root stays on: it ends threads, active or not

    # -- activations (a gated recording; under the lock) -------------------------------------------

    def _begin_activation(self, state: ThreadState, code: CodeType, frame: FrameType) -> None:
        """``state``'s thread just wrote the Call of ``code`` (running in ``frame``), which starts an
        activation: it is active until its stack is empty again (threads.py, invariant 6). The first
        active thread switches the recorder's events on, and undoes the DISABLEs of the inactive
        time if there were any."""
        active = self.threads.active
        first = not active
        active[state.ident] = state
        state.activation = code
        self.activations += 1
        assert self.activation is not None
        self.activation.began(code, id(frame), state.ident)
        if first:
            self._set_gated_events(True)

    def _end_activation(self, state: ThreadState, finished: bool) -> None:
        """``state``'s activation is over (its stack just became empty): ``finished`` if the call
        returned or unwound, False for a yield. The last active thread switches the events off."""
        code, state.activation = state.activation, None
        self.threads.active.pop(state.ident, None)
        if code is not None and self.activation is not None:
            self.activation.ended(state.ident, finished)
        if state.held:
            # Python 3.12: the frames whose dicts this activation read and that are not done (a
            # suspended generator): forget them, or a frame finishing outside any activation would
            # stay in _held_locals, its dict and what it holds alive for good. A later resume inside
            # an activation reads such a frame as one seen for the first time (read_locals).
            held = self._held_locals
            for key in state.held:
                held.pop(key, None)
            state.held.clear()
        if not self.threads.active:
            self._set_gated_events(False)

    def _set_gated_events(self, active: bool) -> None:
        """A gated recording's events, for some thread active or none (see the module docstring)."""
        tool_id = self.tool_id
        if tool_id is None:
            return
        try:
            if active:
                _monitoring.set_events(tool_id, _GLOBAL_EVENTS)
                gate = self._gate
                gate[1] = _other_tools(tool_id)  # a tool freed since is no reason to keep paying
                if gate[0]:
                    # What returned DISABLE while no thread was active may be what this one records.
                    # It re-enables the DISABLEd events of every tool (docs/activation.md): only
                    # when timelapse DISABLEd something since the last restart.
                    gate[0] = False
                    _monitoring.restart_events()
            else:
                _monitoring.set_events(tool_id, _INACTIVE_EVENTS)
                codes = list(self._armed.values())
                self._armed.clear()  # in place: the callbacks hold this dict
                for code in codes:
                    _monitoring.set_local_events(tool_id, code, 0)
        except ValueError:  # the tool id was freed (the program freed it): recording stopped there
            pass

    def _arm(self, code: CodeType) -> None:
        """A recorded code object entered in an activation after its local events were switched
        off at the end of an earlier one: on again."""
        self._watch(code, FUNCTION)

    # -- the section guard (every callback, and io_event) ------------------------------------------

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
        if self._deferral.holds_lock(sys._getframe(1)):   # the asking section's frame
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
        if type(exc) is ProgramRecursionError:
            raise RecursionError(*exc.args) from None
        if issubclass(type(exc), MemoryError):
            self.lost_for_memory += 1
            return None
        if not issubclass(type(exc), Exception):
            raise exc
        return self._fail(exc)  # type: ignore[arg-type]

    def _fail(self, exc: Exception) -> object:
        """The recorder itself failed inside a callback (whose events were taken back, its lock
        released): stop everything at once, then report."""
        self.stop()
        self._on_failure(exc)
        return None

    def _close_without_memory(self, state: ThreadState | None, info: CodeInfo) -> None:
        """A Return that could not be written for lack of memory: close the call with a ready-made
        one (no allocation but the list's), so that the stream still follows the program."""
        self.threads.close_call(state, info, self._lost_return)
        if state is not None and state.activation is not None and not state.stack:
            self._end_activation(state, True)

    # -- events that are not steps (under the lock) ------------------------------------------------

    def io_event(self, kind: int, stream: str, content: str, from_fd: bool = False) -> None:
        """Output written or input read by the program, on the step of the line that did it.

        Called by the stream proxies (``iocapture``) in the thread that wrote, during the write.
        Output captured at the file-descriptor level (``from_fd``) comes from a reader thread and
        goes on the step the stream is at when it arrives. Consecutive writes of one kind on one
        step become one Event. A section (``timelapse.interrupts``): signals wait for its end.
        """
        if not self.active:
            return
        if self.activation is not None and (
                not self.threads.active if from_fd else threading.get_ident() not in self.threads.active):
            return  # a gated recording: outside an activation, IO is not recorded
        if not self._lock.acquire(False) and not self._acquire_slowly():
            # Program code inside our own section wrote (a __del__ run by the garbage collector):
            # its output goes on once the section is done.
            self._deferral.pending.append(lambda: self.io_event(kind, stream, content, from_fd))
            return
        writer = self.writer
        event_metadata = writer.format.events.event_metadata
        mark = -1
        try:
            if self.active:
                if from_fd:
                    state = self.threads.current
                    if state is None:
                        self._lock.release()
                        return
                    mark = len(writer.events)
                    where = self.codes.place_of(state.last_step)
                    metadata = event_metadata(stream, state.number, where, {"source": "fd"})
                else:
                    state = self._thread_state()
                    mark = len(writer.events)
                    where = self._step_here(state, sys._getframe(1))
                    metadata = event_metadata(stream, state.number, where, None)
                writer.emit_io(kind, metadata, content)
                mark = -1
                if len(writer.events) >= writer.batch_size:
                    self._flush_when_full()
        except BaseException as exc:
            writer.rollback(mark) if mark >= 0 else None
            self._lock.release()
            self._after_failure(exc)
            return
        self._lock.release()
        if self._deferral.pending:
            self._deferral.run_pending()


# io_event holds the lock like the callbacks: a signal that lands in it waits for its end.
deferral.add_section(Recorder.io_event)


class _NoLine(Exception):
    """Internal: a LINE event for line 0, which has no source line (never leaves on_line)."""


def _make_callbacks(recorder: Recorder) -> dict[int, Callable[..., Any]]:
    """Build the callbacks of ``recorder`` as closures over locals: the hot path pays no attribute
    lookups. One function, long, because every name the callbacks use must be a local of it; the
    callbacks are named for their events.

    Every callback is a *section* (``timelapse.interrupts``): it takes the lock without blocking when it
    can (``acquire_slowly`` otherwise), notes ``mark = len(events)`` once its thread is the
    stream's, appends its event group, changes the recorder's state only once nothing can fail
    any more, lets go of the lock, and last runs what waited (``pending``).

    The event pieces are the format's (``format.EventSpelling``), read into locals once: a Value is
    ``head + record + value_tail``, with the head cached per variable in the code's ``CodeInfo``.
    """
    lock_acquire, lock_release = recorder._lock.acquire, recorder._lock.release
    acquire_slowly = recorder._acquire_slowly
    codes = recorder.codes
    infos = codes.infos
    learn = codes.learn
    new_step = codes.new_step
    new_variable = codes.new_variable
    threads = recorder.threads
    by_ident = threads.by_ident
    switch_to = threads.switch_to
    note_exception = recorder.exceptions.note
    limits = recorder._recursion
    writer = recorder.writer
    events = writer.events
    append = events.append
    rollback = writer.rollback
    spelling = writer.format.events
    value_tail = spelling.value_tail
    arg_tail = spelling.arg_tail
    join_args = spelling.arg_separator.join
    call_tail = spelling.call_tail
    return_head, return_tail = spelling.return_head, spelling.return_tail
    encode = recorder.encoder.encode_json
    # The step's locals loop in C (``_speedups.locals_values``: the Python loops below are its
    # specification, and its fallback: it answers False, having appended nothing, where they must
    # do it), or None: TIMELAPSE_PURE=1, or no extension.
    locals_ctx = recorder.encoder.locals_context(new_variable, events, value_tail)
    compiled_locals = _encoder.compiled_locals if locals_ctx is not None else None
    redacted = recorder.encoder.redacted   # the record of a value whose name is a secret's
    pending = recorder._deferral.pending
    run_pending = recorder._deferral.run_pending
    after_failure = recorder._after_failure
    close_without_memory = recorder._close_without_memory
    fault = recorder._fault
    get_ident = threading.get_ident
    getframe = sys._getframe
    get_referents = gc.get_referents
    getrefcount = sys.getrefcount
    module_type = ModuleType
    code_type_ids = CODE_TYPE_IDS
    missing = object()
    snapshot_locals = SNAPSHOT_LOCALS
    held = recorder._held_locals
    batch_size = writer.batch_size
    # A gated recording (record_only / activation_path): `active` holds the threads inside an
    # activation; every callback drops the events of the others first thing.
    gated = recorder.activation is not None
    active = threads.active
    starts = recorder.activation.starts if recorder.activation is not None else None
    armed = recorder._armed
    arm = recorder._arm
    begin_activation = recorder._begin_activation
    gate = recorder._gate
    restart_events = _monitoring.restart_events
    tool_id = recorder.tool_id
    end_activation = recorder._end_activation

    def flush_when_full() -> None:
        nonlocal batch_size
        writer.flush_if_full()
        batch_size = writer.batch_size

    def failed(exc: BaseException, mark: int, closing: CodeInfo | None = None) -> object:
        """An exception inside a section, the lock held: take back the torn event group, let go
        of the lock, then the program's exceptions go on as the program's and ours stop us.
        ``closing``: the call whose Return was being written (it is closed all the same when
        memory ran out, so that the stream keeps following the program)."""
        if mark >= 0:
            rollback(mark)
        if closing is not None and issubclass(type(exc), MemoryError):
            close_without_memory(by_ident.get(get_ident()), closing)
        state = by_ident.get(get_ident())
        if state is not None:
            state.last_step = None  # the Step it points at may have been taken back
        lock_release()
        try:
            return after_failure(exc)
        finally:
            if pending:
                run_pending(1)  # one helper frame (this one) between the callback and the call

    def ran_pending(result: object) -> object:
        """An early way out of a callback: what waited for it runs first (a signal may have
        landed at its very start)."""
        run_pending(1)  # one helper frame (this one) between the callback and the call
        return result

    def thread_state() -> ThreadState:
        """The calling thread's state, made current in the stream (caller holds the lock)."""
        ident = get_ident()
        state = by_ident.get(ident)
        if state is None:
            state = threads.new_state(ident)
        if state is not threads.current:
            switch_to(state)
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
        if f_locals is not kept:  # the first read of this frame
            held[key] = f_locals
            # A frame first seen where it goes on (a generator resumed in an activation, a frame
            # running when recording started) may have given the program its dict already: then
            # keep what it holds now (synced just now: what locals() would show), never clear it.
            # References to a dict nobody else has: the frame's, ``f_locals``, the argument.
            saved = dict.copy(f_locals) if getrefcount(f_locals) > 3 else None
            if gated:
                threads.current.held.append(key)  # forgotten when the activation ends
        return f_locals, saved

    def let_go(f_locals: dict, saved: dict | None) -> None:
        """Python 3.12: leave the frame's dict as the program last saw it — empty if it never
        asked for it, so that no object lives longer for the recorder's sake."""
        dict.clear(f_locals)
        if saved is not None:
            dict.update(f_locals, saved)

    def emit_values(info: CodeInfo, frame: FrameType) -> None:
        """Every visible variable, after the Step just emitted (values do not carry forward)."""
        var_ids = info.var_ids
        if info.kind == FUNCTION:
            if snapshot_locals and info.shares_locals:
                f_locals, saved = read_locals(frame)
            else:
                f_locals, saved = frame.f_locals, None
            try:
                if compiled_locals is None or not compiled_locals(locals_ctx, f_locals, var_ids, info):
                    for name, value in f_locals.items():
                        try:
                            head = var_ids[name]
                        except KeyError:
                            head = new_variable(info, name)
                        if head is not None:
                            append(head + encode(value) + value_tail)
                if info.secret_vars:
                    emit_secrets(info, f_locals)
            finally:
                if snapshot_locals:  # 3.12: see let_go
                    let_go(f_locals, saved)
            namespace = None
        else:
            namespace = frame.f_locals
            if not issubclass(type(namespace), dict):  # a class body's custom __prepare__ mapping
                return
            # One C call copies the items: another thread may add globals while we encode.
            for name, value in list(dict.items(namespace)):
                try:
                    head = var_ids[name]
                except KeyError:
                    head = new_variable(info, name)
                if head is not None and type(value) is not module_type:
                    append(head + encode(value) + value_tail)
            if info.secret_vars:
                emit_secrets(info, namespace)
        if info.global_vars:
            f_globals = frame.f_globals
            for name, head, secret in info.global_vars:
                value = dict.get(f_globals, name, missing)
                if (value is missing or id(type(value)) in code_type_ids
                        or issubclass(type(value), type)):  # as codeinfo.is_code
                    continue  # global data only: not the functions, classes, modules it uses
                if namespace is not None and dict.__contains__(namespace, name):
                    continue
                append(head + (redacted(value) if secret else encode(value)) + value_tail)

    def emit_secrets(info: CodeInfo, values: Any) -> None:
        """The Values of the variables whose names are secrets' (``info.secret_vars``), after the
        others of the step: redacted records, their type kept. ``values``: the mapping the step
        read (a function's f_locals, a module's or class body's namespace)."""
        is_namespace = info.kind != FUNCTION
        # dict.get on dicts (a namespace may be a dict subclass with Python methods); 3.13's
        # FrameLocalsProxy.get is C.
        get = dict.get if issubclass(type(values), dict) else type(values).get
        for name, head in info.secret_vars:
            value = get(values, name, missing)
            if value is missing or (is_namespace and type(value) is module_type):
                continue    # not bound (yet)
            append(head + redacted(value) + value_tail)

    def emit_step(state: ThreadState, info: CodeInfo, frame: FrameType, line: int) -> None:
        step = info.steps.get(line)
        if step is None:
            step = new_step(info, line)
        append(step)
        emit_values(info, frame)
        state.last_step = step
        recorder.steps += 1

    def step_here(state: ThreadState, frame: FrameType | None) -> tuple[int, int] | None:
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

    def emit_call(state: ThreadState, info: CodeInfo, frame: FrameType, args: list[bytes]) -> None:
        """Step at the definition line, then Call with the arguments. No Values follow that Step:
        the consumer adds a Call's arguments to the variables of the Step before it (written as
        Values too, each would be listed twice there). ``args``: spelled arguments already known
        (a thrown exception)."""
        stack = state.stack
        if len(stack) >= limits.check_from:
            check_depth(state, frame)
        if info.arg_vars:
            if snapshot_locals and info.shares_locals:
                f_locals, saved = read_locals(frame)
            else:
                f_locals, saved = frame.f_locals, None
            try:
                for name, head, secret in info.arg_vars:
                    try:
                        value = f_locals[name]
                    except KeyError:
                        continue
                    args.append(head + (redacted(value) if secret else encode(value)) + arg_tail)
            finally:
                if snapshot_locals:
                    let_go(f_locals, saved)
        append(info.def_step)
        append(info.call_head + join_args(args) + call_tail)
        # Nothing can fail from here on: the call is open.
        stack.append(info)
        threads.calls += 1
        state.last_step = None

    def check_depth(state: ThreadState, frame: FrameType) -> None:
        """RecursionError where the program, unrecorded, would have hit its limit."""
        if limits.exceeded(frame, state.base_depth):
            state.unopened_frame = id(frame)  # its unwind is not a Return: no Call was written
            raise ProgramRecursionError("maximum recursion depth exceeded")

    def entered(code: CodeType, resumed: bool, thrown: BaseException | None) -> object:
        """A frame starts (PY_START) or goes on (PY_RESUME, PY_THROW): Step + Call; a resumed
        frame then gets a Step where it really goes on. Out of scope: DISABLE."""
        info = infos.get(id(code))
        if info is None:
            info = learn(code, None, False)  # code we do not record: decided without the lock
        if info is not None and info.kind >= THREAD_ROOT:
            return DISABLE if not pending else ran_pending(DISABLE)
        activating = False
        if gated and get_ident() not in active:
            if not starts(code):
                if active or pending:
                    return None if not pending else ran_pending(None)
                if not code.co_flags & _CO_OPTIMIZED:
                    return None  # a module or class body: it runs once, DISABLE would save nothing
                if gate[1] or _other_tools(tool_id):
                    # Another tool is there: DISABLE would call for a restart_events() at the next
                    # activation, which re-enables what that tool DISABLEd too. One callback per
                    # call outside activations instead (docs/activation.md). What timelapse
                    # DISABLEd before it came is undone now, when the other tool has DISABLEd
                    # the least yet.
                    if not gate[1]:
                        gate[1] = True
                        if gate[0]:
                            gate[0] = False
                            restart_events()
                    return None
                if active:  # _other_tools made calls: another thread may have begun meanwhile
                    return None
                # No thread is active: this code's entries cost nothing until one is (the first
                # activation's restart_events undoes this). Race-free without the lock: between
                # the test of `active` and this return no call is made, so no other thread can run
                # (CPython switches threads at calls and backward jumps) and begin an activation
                # between them; one that begins after it sees gate[0] and restarts the events.
                gate[0] = True
                return DISABLE
            activating = True
        frame = getframe(2)
        if not lock_acquire(False) and not acquire_slowly():
            return None if not pending else ran_pending(None)
        mark = -1
        try:
            if recorder.active:
                if info is None:
                    info = learn(code, frame)
            if activating and not starts(code):
                # Decided without the lock: activation_path's window closed meanwhile.
                activating = False
                info = None
            if recorder.active and info is not None and info.kind < THREAD_ROOT:
                if gated and id(code) not in armed:
                    arm(code)  # local events off since the last activation ended
                state = thread_state()
                if activating:  # what the thread's bookkeeping held is from before (a refused call)
                    state.in_flight = state.thrown = state.recent = state.unopened_frame = None
                mark = len(events)
                args = []
                if thrown is not None:
                    args.append(codes.arg_head("exception") + encode(thrown) + arg_tail)
                emit_call(state, info, frame, args)
                mark = len(events)
                if resumed:
                    line = frame.f_lineno
                    if line:
                        emit_step(state, info, frame, line)
                mark = -1  # committed: a failing flush takes nothing back
                if activating:
                    begin_activation(state, code, frame)
                if len(events) >= batch_size:
                    flush_when_full()
                if thrown is not None and type(thrown) is GeneratorExit:
                    # close(): CPython reports RAISE where it lands, next; the program raised nothing.
                    state.thrown = (id(thrown), writer.position())
        except BaseException as exc:
            return failed(exc, mark)
        lock_release()
        if pending:
            run_pending()
        return DISABLE if info is not None and info.kind >= THREAD_ROOT else None

    def on_py_start(code: CodeType, offset: int) -> object:
        return entered(code, False, None)

    def on_py_resume(code: CodeType, offset: int) -> object:
        """A generator or coroutine goes on."""
        return entered(code, True, None)

    def on_py_throw(code: CodeType, offset: int, exception: BaseException) -> None:
        """An exception thrown into a generator (``throw()``, ``close()``) resumes it; PY_THROW
        cannot be switched off per code object, so DISABLE is not an answer here."""
        entered(code, True, exception)

    def on_line(code: CodeType, line: int) -> object:
        # The hottest callback: emit_step and the common case of emit_values are inlined.
        info = infos.get(id(code))
        if info is None:  # LINE is only switched on for recorded code
            return DISABLE if not pending else ran_pending(DISABLE)
        if gated and get_ident() not in active:  # not DISABLE: an active thread may run it too
            return None if not pending else ran_pending(None)
        frame = getframe(1)
        if not lock_acquire(False) and not acquire_slowly():
            return None if not pending else ran_pending(None)
        mark = -1
        try:
            if fault is not None:
                fault(code, line)
            if recorder.active:
                state = by_ident.get(get_ident())
                if state is None or state is not threads.current:
                    state = thread_state()
                mark = len(events)
                step = info.steps.get(line)
                if step is None:
                    if line < 1:  # an empty module's body "runs" on line 0: there is no line
                        raise _NoLine
                    step = new_step(info, line)
                append(step)
                if info.plain:  # a function with no globals or secrets to show
                    var_ids = info.var_ids
                    if snapshot_locals and info.shares_locals:
                        f_locals, saved = read_locals(frame)
                    else:
                        f_locals, saved = frame.f_locals, None
                    try:
                        # Hot: the C loop when there is one (False: it left this step to us).
                        if compiled_locals is None or not compiled_locals(locals_ctx, f_locals, var_ids, info):
                            for name, value in f_locals.items():
                                try:
                                    head = var_ids[name]
                                except KeyError:
                                    head = new_variable(info, name)
                                if head is not None:
                                    append(head + encode(value) + value_tail)
                    finally:
                        if snapshot_locals:  # 3.12: see let_go
                            f_locals.clear()
                            if saved is not None:
                                f_locals.update(saved)
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
        lock_release()
        if pending:
            run_pending()
        return None

    def on_py_return(code: CodeType, offset: int, value: object, unwound: bool = False,
                     depth: int = 1, yielded: bool = False) -> None:
        """PY_RETURN (and PY_YIELD from 3.13) directly, PY_UNWIND and 3.12's PY_YIELD through their
        callbacks (``depth`` 2): the frame's last values, then its Return."""
        info = infos.get(id(code))
        if info is None or info.kind == OUT_OF_SCOPE:
            return None if not pending else ran_pending(None)
        if gated and info.kind != THREAD_ROOT and get_ident() not in active:
            if info.shares_locals and not yielded:
                # 3.12: a frame read in another thread's activation (a generator), done outside one.
                held.pop(id(getframe(depth)), None)
            return None if not pending else ran_pending(None)
        frame = getframe(depth)
        if not lock_acquire(False) and not acquire_slowly():
            return None if not pending else ran_pending(None)
        mark = -1
        try:
            state = by_ident.get(get_ident()) if recorder.active else None
            if state is None:
                pass
            elif state.unopened_frame is not None and state.unopened_frame == id(frame):
                state.unopened_frame = None  # a refused call, or one closed already: no Return
            elif state.stack and state.stack[-1] is info:
                if state is not threads.current:
                    switch_to(state)
                mark = len(events)
                line = frame.f_lineno
                if line and line not in info.quiet_lines:
                    emit_step(state, info, frame, line)
                if info.async_generator and type(value).__name__ == "async_generator_wrapped_value":
                    wrapped = get_referents(value)  # C-level: the value the program yielded
                    value = wrapped[0] if len(wrapped) == 1 else None
                append(return_head + (redacted(value) if info.secret_return else encode(value))
                       + return_tail)
                # Nothing can fail from here on: the call is closed.
                state.stack.pop()
                state.last_step = None
                mark = -1  # committed: a failing flush takes nothing back
                if gated and not state.stack and state.activation is not None:
                    end_activation(state, not yielded)  # the activation's own call ended
                if len(events) >= batch_size:
                    flush_when_full()
                if unwound:  # CPython reports RAISE again in the caller, right after this
                    state.in_flight = (id(value), writer.position())
            elif info.kind == THREAD_ROOT:
                mark = len(events)
                if state.activation is not None:
                    end_activation(state, True)
                threads.exit(state)
        except BaseException as exc:
            if info.shares_locals:
                held.pop(id(frame), None)
            failed(exc, mark, info if mark >= 0 else None)
            return
        if info.shares_locals and not yielded:
            held.pop(id(frame), None)  # the frame is done with its dict (a yield keeps it)
        lock_release()
        if pending:
            # A handler's exception would be raised in this frame, which the stream has closed
            # already: its raise and unwind are then the caller's (see exception_events).
            state = by_ident.get(get_ident())
            if state is not None:
                state.unopened_frame = id(frame)
            run_pending()
            if state is not None:
                state.unopened_frame = None

    def on_py_unwind(code: CodeType, offset: int, exception: BaseException) -> None:
        on_py_return(code, offset, exception, True, 2)

    def on_py_yield(code: CodeType, offset: int, value: object) -> None:
        # Python 3.12: a yield keeps the frame, and the locals dict the program may hold.
        on_py_return(code, offset, value, False, 2, True)

    def exception_callback(what: str, name: str) -> Callable[[CodeType, int, BaseException], None]:
        """RAISE / RERAISE / EXCEPTION_HANDLED in recorded code → an Event on the step where it
        happens. These events cannot be switched off per code object: out of scope, return fast."""

        def on_exception(code: CodeType, offset: int, exception: BaseException) -> None:
            info = infos.get(id(code))
            if info is None or info.kind >= THREAD_ROOT:
                return None if not pending else ran_pending(None)
            if what != "raise" and offset in info.implicit_handler:
                # The compiler's own handler around a generator's body: not the program's.
                return None if not pending else ran_pending(None)
            if gated and get_ident() not in active:
                return None if not pending else ran_pending(None)
            frame = getframe(1)
            if not lock_acquire(False) and not acquire_slowly():
                return None if not pending else ran_pending(None)
            mark = -1
            try:
                if recorder.active:
                    state = thread_state()
                    mark = len(events)
                    note_exception(what, exception, state, frame, step_here)
            except BaseException as exc:
                failed(exc, mark)
                return
            lock_release()
            if pending:
                run_pending()

        on_exception.__name__ = on_exception.__qualname__ = name
        return on_exception

    on_raise = exception_callback("raise", "on_raise")
    on_reraise = exception_callback("reraise", "on_reraise")
    on_exception_handled = exception_callback("handled", "on_exception_handled")

    recorder._thread_state = thread_state
    recorder._step_here = step_here
    recorder._flush_when_full = flush_when_full
    callbacks = {
        _events.PY_START: on_py_start,
        _events.PY_RESUME: on_py_resume,
        _events.PY_THROW: on_py_throw,
        _events.LINE: on_line,
        _events.PY_RETURN: on_py_return,
        # A gated recording needs to tell a yield from a return (an activation_path's generator
        # is spent only when it finishes): on_py_yield then on 3.13 too.
        _events.PY_YIELD: on_py_yield if snapshot_locals or gated else on_py_return,
        _events.PY_UNWIND: on_py_unwind,
        _events.RAISE: on_raise,
        _events.RERAISE: on_reraise,
        _events.EXCEPTION_HANDLED: on_exception_handled,
    }
    recorder._deferral.add_section(entered, on_line, *callbacks.values(), callback=True)
    return callbacks

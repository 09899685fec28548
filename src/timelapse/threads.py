"""Threads in one stream: per-thread state, and the switch protocol that keeps the stream balanced.

Every thread has its own call stack; the trace has one stream, and CodeTracer keeps one call stack
for it (it ignores the thread events). So the stream follows one thread at a time, the *current* one,
and when another thread's event comes, ``Threads.switch_to`` closes the calls of the thread that ran
before, writes ``ThreadSwitch`` (``ThreadStart`` the first time), and re-opens the new thread's calls.
``docs/threads.md`` describes what a consumer sees.

Invariants (each method keeps them; the monitor relies on them):

1. **One thread's calls are open.** Above ``<toplevel>``, the calls open in the stream are exactly
   ``current.stack``, outermost first: so ``open_calls == 1 + len(current.stack)`` (1 with no current
   thread), and the stream is balanced whenever it is cut between event groups.
2. **A thread writes only while it is current.** A callback makes its thread current before its
   first event and holds the recorder's lock for its whole event group, so a switch never splits a
   Step from its Values or a Call from its arguments. Every method here is called with that lock held.
3. **A switch is all or nothing.** If writing it fails half-way, its events are taken back and no
   state changed (the thread that was current still is).
4. **Numbers are stable.** The thread that started the recording is 1, then 2, 3, ... in order of
   first event (not ``threading.get_ident()``, which the OS reuses and randomizes): a deterministic
   program gives the same stream every time. Each number has one ThreadStart and at most one
   ThreadExit.
5. **``<toplevel>`` belongs to the process.** No switch or thread exit closes it: only the end of
   the stream (``Recorder.end_stream``).
6. **Activations (a gated recording: ``record_only``, ``activation_path``).** A thread writes only
   while it is inside an activation (``ident in active``), and outside one its stack is empty: an
   activation begins with the thread's stack empty (its call is the outermost of the thread) and
   ends the moment the stack is empty again. So threads that are active at different times need
   nothing more than the switch above: leaving an activation leaves no call open, and the next
   thread's ThreadSwitch (ThreadStart) closes nothing. A thread that is never active gets no number.

A thread's state goes at its ThreadExit (when ``threading.Thread._bootstrap_inner`` returns). A
thread started with ``_thread.start_new_thread`` never has one: its state stays until the recording
ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from timelapse.format import NONE_TYPE_ID, TypeKind

if TYPE_CHECKING:
    from types import CodeType

    from timelapse.codeinfo import CodeInfo
    from timelapse.writer import TraceWriter


class ThreadState:
    """One thread as the recorder follows it."""

    __slots__ = (
        "ident", "number", "stack", "started", "last_step", "base_depth", "in_flight", "thrown",
        "recent", "unopened_frame", "activation", "held",
    )

    def __init__(self, ident: int, number: int, base_depth: int = 0) -> None:
        self.ident = ident
        #: The thread's id in the trace (invariant 4).
        self.number = number
        self.stack: list[CodeInfo] = []  # the calls this thread has open, innermost last
        self.started = False
        #: The Step this thread emitted last, while it still describes where the thread is; None after
        #: a call or a return, when an event at the current line needs a fresh Step first.
        #: (``CodeTable.place_of`` says where it is.)
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
        #: In a gated recording: the code object whose call began this thread's activation, while
        #: it lasts (invariant 6); None outside one.
        self.activation: CodeType | None = None
        #: Python 3.12, a gated recording: id() of the frames this thread's activation read the
        #: locals dict of (``Recorder._held_locals``), forgotten when the activation ends.
        self.held: list[int] = []


class Threads:
    """The threads of one recording, and which one the stream follows (under the recorder's lock)."""

    def __init__(self, writer: TraceWriter) -> None:
        self._writer = writer
        self._spelling = writer.format.events
        #: threading.get_ident() -> its state. The hot path reads it directly.
        self.by_ident: dict[int, ThreadState] = {}
        #: The thread the stream follows now (None: none yet, or the last one exited).
        self.current: ThreadState | None = None
        #: A gated recording's threads inside an activation, by ident (invariant 6). The hot path
        #: reads it without the lock: only a thread itself adds or removes its own entry.
        self.active: dict[int, ThreadState] = {}
        #: Call events written (the hot path counts its own here too) and switches written.
        self.calls = 0
        self.switches = 0
        self._numbered = 0
        self._switch_return: bytes | None = None
        self._none_return = self._spelling.return_event(writer.format.values.none(NONE_TYPE_ID))

    @property
    def open_calls(self) -> int:
        """Calls open in the stream, ``<toplevel>`` included (invariant 1)."""
        current = self.current
        return 1 + len(current.stack) if current is not None else 1

    def new_state(self, ident: int, base_depth: int = 0) -> ThreadState:
        """The state of a thread not seen before, with the next number."""
        self._numbered += 1
        state = self.by_ident[ident] = ThreadState(ident, self._numbered, base_depth)
        return state

    def begin(self, ident: int, base_depth: int) -> ThreadState:
        """The thread that starts the recording: current from the first event on."""
        state = self.new_state(ident, base_depth)
        self._writer.events.append(self._spelling.thread_start(state.number))
        state.started = True
        self.current = state
        return state

    def switch_to(self, state: ThreadState) -> None:
        """Make ``state``'s thread the one the stream follows (invariants 1 and 3)."""
        writer = self._writer
        spelling = self._spelling
        events = writer.events
        previous = self.current
        mark = len(events)
        try:
            if previous is not None and previous.stack:
                if self._switch_return is None:
                    type_id = writer.type_id(TypeKind.RAW, "<thread switch>")
                    self._switch_return = spelling.return_event(
                        writer.format.values.raw(type_id, "<thread switch>"))
                events.extend([self._switch_return] * len(previous.stack))
            events.append((spelling.thread_switch if state.started else spelling.thread_start)(state.number))
            for info in state.stack:  # re-opened outermost first, without their arguments
                events.append(info.def_step)
                events.append(spelling.call(info.function_id, ()))
        except BaseException:
            writer.rollback(mark)
            raise
        self.calls += len(state.stack)
        self.switches += 1
        state.started = True
        state.last_step = None
        self.current = state

    def exit(self, state: ThreadState) -> None:
        """``state``'s thread ends: its open calls are closed if the stream follows it, ThreadExit,
        and its state goes. The next event, from whichever thread, re-opens that thread's calls."""
        if not state.started:
            return
        events = self._writer.events
        if state is self.current:
            events.extend([self._none_return] * len(state.stack))
        events.append(self._spelling.thread_exit(state.number))
        if state is self.current:
            state.stack.clear()
            self.current = None
        del self.by_ident[state.ident]
        self.active.pop(state.ident, None)

    def close_call(self, state: ThreadState | None, info: CodeInfo, event: bytes) -> None:
        """Close ``info``'s call, if it is the innermost open one of the current thread, with a
        ready-made Return ``event`` (what a Return that memory ran out for is replaced with)."""
        if state is None or state is not self.current or not state.stack or state.stack[-1] is not info:
            return
        self._writer.events.append(event)
        state.stack.pop()
        state.last_step = None

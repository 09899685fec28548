"""Program code never runs inside the recorder: signal handlers wait until it is out.

The problem
-----------
CPython runs a Python-level signal handler in the main thread at the next "eval breaker" check: at a
function's start, a backward jump, after a call. Such checks happen inside the recorder too — inside a
``sys.monitoring`` callback, half-way through writing an event group, with the recorder's lock held —
so without care the program's own handler would run there:

- a SIGTERM handler that starts a thread deadlocks (``Thread.start()`` waits for the new thread, whose
  first callback waits for the lock the handler's thread holds);
- a handler that raises (``Timeout`` from SIGALRM, ``KeyboardInterrupt`` from SIGINT) cuts the callback
  short: the exception looks like the recorder's own failure, or tears the event stream;
- a handler's code runs unrecorded (callbacks do not fire inside a callback).

The rule
--------
While a thread is inside a *section* of the recorder (a monitoring callback, an IO event, finishing the
trace), a signal's Python handler does not run: the wrapper that stands in for it notes the signal and
returns. The section, as its last act — its lock released, its events complete — runs what was noted
(``run_pending``), in the order the signals came. So the handler runs a few microseconds late, at a
point where the program itself is about to go on, exactly as if the signal had arrived there; its
exception, if any, goes to the program at that point, as the program's.

How a section is recognized: the wrapper gets the interrupted frame and walks the stack outwards,
looking for a frame of a registered section's code (``add_section``). That costs a walk of the stack
per signal, and nothing at all on the hot path: a section's only extra work is ``if pending:`` on its
way out. Program code on top of a section (a ``__del__`` the garbage collector calls inside one) is
inside it too: its signals wait as well.

What it changes for the program, and what it cannot
---------------------------------------------------
- ``signal.signal`` and ``signal.getsignal`` are replaced by wrappers while recording: a handler the
  program installs is wrapped, ``getsignal`` shows the program's own handler, ``signal.signal`` returns
  it. ``signal.signal is`` the original is false while recording.
- Only Python-level handlers are deferred; ``SIG_DFL``/``SIG_IGN`` and handlers installed in C are not
  Python code and are left alone.
- Handlers can be installed only from the main thread: recording started in another thread defers
  nothing (the callbacks then still roll back a torn event group, see monitor.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

Handler = Callable[[int, FrameType | None], Any]


class SignalDeferral:
    """Wraps the program's signal handlers so that they never run inside a recorder section."""

    def __init__(self) -> None:
        #: Work waiting for the current section to end: zero-argument callables, oldest first. The
        #: sections read it as a closure variable (``if pending:``): always the same list object.
        self.pending: list[Callable[[], Any]] = []
        self._sections: set[CodeType] = set()
        #: The monitoring callbacks and the bodies they share (``add_section(..., callback=True)``).
        self._callbacks: set[CodeType] = set()
        #: Signals whose handler waits in ``pending`` (a signal is queued once until it runs).
        self._queued: set[int] = set()
        #: The sections that hold the recorder's lock (the callbacks), for ``holds_lock``.
        self._lock_sections: set[CodeType] = set()
        self._real_signal: Callable[..., Any] | None = None
        self._real_getsignal: Callable[[int], Any] | None = None
        self._wrappers: dict[int, Handler] = {}   # signum -> the wrapper installed for it
        #: id(wrapper) -> (wrapper, the program's handler). Looked up by id, never by the handler
        #: itself: hashing or comparing a program's callable object could run its code.
        self._inner: dict[int, tuple[Handler, Any]] = {}

    # -- sections ----------------------------------------------------------------------------------

    def add_section(self, *functions: Callable[..., Any], holds_lock: bool = True,
                    callback: bool = False) -> None:
        """Mark functions as sections: signals that land inside them wait for ``run_pending``.
        ``holds_lock``: the function holds the recorder's lock while it runs (the callbacks).
        ``callback``: a monitoring callback (or the body callbacks share): a chain of these is one
        section, the caller's own, when it asks for the lock or runs what waited."""
        for function in functions:
            self._sections.add(function.__code__)
            if holds_lock:
                self._lock_sections.add(function.__code__)
            if callback:
                self._callbacks.add(function.__code__)

    def in_section(self, frame: FrameType | None) -> bool:
        """True if ``frame`` (a thread's innermost frame) is inside a section: a section's frame is
        anywhere on its stack. The whole stack, since sections call the standard library (json,
        shutil, ...); a signal's cost only, never the hot path's."""
        return _on_stack(frame, self._sections)

    def holds_lock(self, frame: FrameType | None) -> bool:
        """True if ``frame``'s thread is inside a section that holds the recorder's lock: program
        code that section let run (the garbage collector calling a ``__del__``) is on top of it.
        ``frame`` is the asking section's own: it and the sections it was called from directly (a
        callback and the shared body it calls: ``on_py_start`` → ``entered``) do not count — they
        are asking for the lock, not holding it. For slow paths only."""
        while frame is not None and frame.f_code in self._callbacks:
            frame = frame.f_back
        if frame is not None and frame.f_code in self._sections:
            frame = frame.f_back    # the asking section itself (io_event)
        return _on_stack(frame, self._lock_sections)

    def run_pending(self, helpers: int = 0) -> None:
        """Run what waited for the section to end (called by a section, last, outside its lock;
        ``helpers``: how many frames of helper functions are between that section and this call).

        Only in the main thread, where the signal would have run its handler, and only once no
        other section encloses the caller (a callback fired inside ``io_event`` or the excepthook's
        report): the outermost section runs it on its way out. The caller's own section frames
        (a callback and the shared body it calls: ``on_py_unwind`` → ``returned``) do not count."""
        if threading.get_ident() != threading.main_thread().ident:
            return
        frame = sys._getframe(1 + helpers)
        if frame is not None and frame.f_code in self._callbacks:
            # A callback: the frame below it is where its event fired. If that is a section's own
            # frame (the PY_START of ProgramEnd._at_exit), the section is not done: it runs them.
            while frame is not None and frame.f_code in self._callbacks:
                frame = frame.f_back
        elif frame is not None and frame.f_code in self._sections:
            frame = frame.f_back    # the caller itself (io_event, Session.finish, ...)
        if _on_stack(frame, self._sections):
            return
        pending = self.pending
        while pending:
            pending.pop(0)()

    def forget_pending(self) -> None:
        """Drop what waits (after fork(), in the child: the parent's signals are the parent's)."""
        self.pending.clear()
        self._queued.clear()

    # -- installing --------------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap every Python-level handler now installed, and those the program installs later."""
        if threading.current_thread() is not threading.main_thread() or self._real_signal is not None:
            return
        real_signal, real_getsignal = signal.signal, signal.getsignal
        self._real_signal, self._real_getsignal = real_signal, real_getsignal
        for signum in signal.valid_signals():
            try:
                handler = real_getsignal(signum)
            except (OSError, ValueError):
                continue
            if callable(handler):
                real_signal(signum, self._wrap(signum, handler))
        deferral = self

        def signal_(signalnum: int, handler: Any) -> Any:
            previous = real_signal(signalnum, deferral._wrap(signalnum, handler) if callable(handler) else handler)
            return deferral._unwrap(signalnum, previous)

        def getsignal(signalnum: int) -> Any:
            return deferral._unwrap(signalnum, real_getsignal(signalnum))

        signal_.__doc__, getsignal.__doc__ = real_signal.__doc__, real_getsignal.__doc__
        signal_.__name__, getsignal.__name__ = "signal", "getsignal"
        signal.signal, signal.getsignal = signal_, getsignal

    def uninstall(self) -> None:
        """Put the program's handlers back, unwrapped, and the real ``signal.signal``."""
        real_signal, real_getsignal = self._real_signal, self._real_getsignal
        if real_signal is None or real_getsignal is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread; they stay wrapped (harmless)
        self._real_signal = self._real_getsignal = None
        signal.signal, signal.getsignal = real_signal, real_getsignal
        for signum, wrapper in list(self._wrappers.items()):
            try:
                if real_getsignal(signum) is wrapper:
                    real_signal(signum, self._unwrap(signum, wrapper))
            except (OSError, ValueError):
                pass
        self._wrappers.clear()
        self._inner.clear()

    def _wrap(self, signum: int, handler: Handler) -> Handler:
        if self._unwrap(signum, handler) is not handler:
            return handler  # already one of ours
        pending = self.pending
        queued = self._queued
        in_section = self.in_section

        def deferring_handler(signum: int, frame: FrameType | None) -> Any:
            if in_section(frame):
                if signum in queued:
                    return None  # the same signal again before its handler ran: one, as the OS does
                queued.add(signum)
                program_frame = _program_frame(frame, self._sections)

                def run_handler() -> Any:
                    queued.discard(signum)
                    return handler(signum, program_frame)

                pending.append(run_handler)
                return None
            return handler(signum, frame)

        old = self._wrappers.get(signum)
        if old is not None:
            self._inner.pop(id(old), None)
        self._wrappers[signum] = deferring_handler
        self._inner[id(deferring_handler)] = (deferring_handler, handler)
        return deferring_handler

    def _unwrap(self, signum: int, handler: Any) -> Any:
        """The program's handler behind ``handler`` if it is one of our wrappers, else ``handler``."""
        entry = self._inner.get(id(handler))
        return entry[1] if entry is not None and entry[0] is handler else handler


def _on_stack(frame: FrameType | None, codes: set[CodeType]) -> bool:
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _program_frame(frame: FrameType | None, sections: set[CodeType]) -> FrameType | None:
    """The frame the program was in when the recorder's section began: what the handler would have
    been given (the one below the outermost section, past timelapse's own frames)."""
    outermost = None
    while frame is not None:
        if frame.f_code in sections:
            outermost = frame
        frame = frame.f_back
    frame = outermost.f_back if outermost is not None else None
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return frame


#: The one deferral of this process (handlers are per process).
deferral = SignalDeferral()

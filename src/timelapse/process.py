"""The ends of the process: atexit, SIGTERM, ``os._exit``, ``os.exec*``, ``fork()``, the uncaught
exception — and the rules that keep a trace whole however the process ends or splits.

A recording lives inside the program's process, so every way that process can end is a way the trace
can be cut short. This module holds all of them. ``ProcessHooks`` is what any recording (API or CLI)
hooks into its process while it runs: ``os._exit`` and ``os.exec*`` save the trace first, and a fork
child lets go of it. ``ProgramEnd`` is the end of a program that ``timelapse record`` runs: its exit
status, its uncaught exception's report, atexit, SIGTERM, and the summary line.

What a signal may interrupt
---------------------------
CPython runs a Python-level signal handler in the main thread, at the next eval-breaker check: at a
function's start, a backward jump, after a call. Such checks happen inside timelapse too, so without
care the program's handler (or our own SIGTERM handler) would run half-way through an event group,
with the recorder's lock held. ``interrupts.py`` prevents that: while a thread is inside a *section*,
a handler does not run; its signal is noted in ``deferral.pending`` and the outermost section runs
it as its last act, its locks released, in the main thread, as if the signal had landed right there.
The sections are the monitoring callbacks and ``Recorder.io_event`` (monitor.py), ``Session.finish``
(saving the trace) and, here, every step of the process's end: noting the uncaught exception,
printing Python's report of it, the atexit handler from its first instruction (a Ctrl-C burst
that reached its start used to end it before it saved anything), the ``os._exit`` and
``os.exec*`` wrappers, saving on SIGTERM. So:

- a handler never runs inside the recorder; it may run anywhere in the program, and our SIGTERM
  handler, which lands only in program code, can save the trace right where it lands;
- what waited for the saving of the trace is run once out of it: by ``Session.stop()`` (the API:
  a Ctrl-C during ``stop()`` is a KeyboardInterrupt right after it), and as their last act by
  ``ProgramEnd._at_exit`` and the ``os._exit`` / ``os.exec*`` wrappers (``_run_what_waited``). Never
  later: a handler left queued would run in some later recording's callback, long after its signal;
- a second Ctrl-C or SIGTERM while the trace is being saved waits until it is saved, then acts
  (SIGTERM kills the process; a Ctrl-C at the very end of the process is dropped, since the process
  ends anyway; at ``os._exit`` and ``os.exec*`` the exit or the exec goes ahead whatever the handler
  does);
- handlers installed in C, ``SIG_DFL`` and ``SIG_IGN`` are not Python code and are not deferred: a
  SIGKILL, or SIGTERM with its default action, ends the process wherever it is. The output folder is
  then left as it was, and the hidden ``.NAME.*.recording`` folder (unlocked once the process is gone)
  is removed by the next recording into the same place (session.py).

The lock order
--------------
One way only, outermost first::

    ProgramEnd's summary lock -> Session._finish_lock -> IOCapture._lock -> FdCapture.lock
        -> Recorder._lock

``ProgramEnd.finish`` holds its lock while the session saves; saving holds the session's finish lock
while it uninstalls the IO capture (which drains the pipes into the trace: the fd lock, then the
recorder's), and ``Recorder.end_stream`` takes the recorder's lock last. A monitoring callback that
fails lets go of the recorder's lock *before* it reports to the session (``Recorder._fail`` ->
``Session._recorder_failed`` -> ``Session.finish``), so the order holds there too; the one path that
could go the other way (uninstalling the fd capture from a thread that holds the recorder's lock) is
bounded by a timeout in fdcapture.py. The summary lock and the finish lock are re-entrant: a section
that fails (a write error while saving) reports into the same thread's finish.

What a fork child may and may not touch
---------------------------------------
``fork()`` copies only the thread that calls it. Every lock another thread held at that moment stays
held for ever in the child, and the trace, the hidden folder and its lock are the parent's. So, in a
child (``_after_fork_in_child``, then every finish in it):

- it takes none of the parent's locks: the recorder is stopped without its lock
  (``Recorder.forget_in_child``), ``Session.finish`` and ``ProgramEnd.finish`` return before theirs,
  the fd capture gets a new lock of its own (fdcapture.py);
- it writes nothing to the parent's trace (the writer is detached, its pending events dropped) and
  closes its copy of the hidden folder's locked descriptor, so that the lock is not kept once the
  parent is gone;
- the signals that waited for the parent's sections are the parent's: dropped in the child;
- SIGTERM is back to its default action (a pool's ``terminate()`` counts on its workers dying at
  once), and SIGTERM is blocked while fork() runs, so that one arriving in between is delivered
  after the reset rather than caught by our handler in the child;
- it prints no summary line: there is nothing of its own to publish.

What is never kept
------------------
Nothing here keeps the program's objects: an exit status is read with ``int.__index__`` (no program
code), the uncaught exception's text is made without its ``__str__`` and then replaced by the report
Python's own excepthook printed (so ``__str__`` and ``__notes__`` run once, as without recording).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from timelapse.errors import RecorderError
from timelapse.interrupts import deferral
from timelapse.monitor import describe_exception
from timelapse.runner import program_traceback

__all__ = ["ProcessHooks", "ProgramEnd", "Recording", "exit_status"]


class Recording(Protocol):
    """What this module needs of a recording (``session.Session`` is one)."""

    #: The process's exit status, ``exit_signal`` the signal that ended it, ``error_text`` the text
    #: of the uncaught exception: set here, written into the trace when it is saved.
    exit_status: int | None
    exit_signal: int | None
    error_text: str | None
    #: Called instead of ``finish`` before ``os.exec*`` (the CLI prints its summary then too).
    before_exec: Callable[[], None] | None

    @property
    def finished(self) -> bool: ...
    def finish(self, stopped_by: str) -> Path | None: ...
    def stop(self) -> Path | None: ...
    def forget_in_child(self) -> None: ...
    def summary(self) -> str: ...


# -- os._exit, os.exec*, fork(): what every recording hooks into its process ---------------------------

#: The hooks of the recording now running in this process (at most one: see Session.start).
_hooks: ProcessHooks | None = None
#: Our SIGTERM handler (ProgramEnd), which a fork child must not keep.
_sigterm_handler: object | None = None
#: The end of the program this process runs (the last ProgramEnd installed): a fork child that
#: records itself adopts it (timelapse.children).
_program_end: ProgramEnd | None = None
#: Per thread: SIGTERM was blocked by this thread's fork() (unblocked after it, in both processes).
_fork_state = threading.local()


class ProcessHooks:
    """From ``install()`` to ``remove()``: ``os._exit`` and ``os.exec*`` save ``recording``'s trace
    before the process goes, and a fork child forgets the recording.

    ``os._exit`` skips atexit, and ``exec`` replaces the process image: neither ever reaches the
    session's normal end, so both are wrapped. Only ``os.execv`` and ``os.execve`` are: the other six
    (``execl``, ``execvp``, ...) call them. If the exec then fails, the program gets its OSError as
    usual and goes on unrecorded: the trace, saved up to the exec, stays as it is.
    """

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        #: name -> (the real function, our wrapper), while installed.
        self._wrapped: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}

    def install(self) -> None:
        global _hooks
        self._wrap("_exit", self._exit_wrapper(os._exit))
        for name in ("execv", "execve"):
            self._wrap(name, self._exec_wrapper(name, getattr(os, name)))
        _hooks = self

    def remove(self) -> None:
        """The recording no longer runs: the real functions back (unless the program replaced our
        wrappers since), and fork() no longer concerns it."""
        global _hooks
        for name, (real, wrapper) in self._wrapped.items():
            if getattr(os, name) is wrapper:
                setattr(os, name, real)
        self._wrapped = {}
        if _hooks is self:
            _hooks = None

    def _wrap(self, name: str, wrapper: Callable[..., Any]) -> None:
        real = getattr(os, name)
        wrapper.__name__ = wrapper.__qualname__ = name
        wrapper.__doc__ = real.__doc__
        # A section: a signal that lands at its start waits until the trace is saved (below).
        deferral.add_section(wrapper, holds_lock=False)
        self._wrapped[name] = (real, wrapper)
        setattr(os, name, wrapper)

    def _exit_wrapper(self, real_exit: Callable[[int], Any]) -> Callable[[int], Any]:
        hooks, recording = self, self.recording

        def _exit(status: int) -> None:
            if "_exit" in hooks._wrapped and not recording.finished:
                recording.exit_status = _int_status(status)
                try:
                    recording.finish("<os._exit>")
                    _run_what_waited()
                except BaseException:  # noqa: BLE001 - exiting anyway; never block the exit
                    pass
            real_exit(status)

        return _exit

    def _exec_wrapper(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        hooks, recording = self, self.recording

        def exec_(*args: Any) -> Any:
            if name in hooks._wrapped and not recording.finished:
                recording.exit_status = None
                try:
                    if recording.before_exec is not None:
                        recording.before_exec()
                    else:
                        recording.finish("<os.exec>")
                    _run_what_waited()
                except BaseException:  # noqa: BLE001 - the exec goes ahead whatever happened
                    pass
            return real(*args)

        return exec_


def _run_what_waited() -> None:
    """Run the signal handlers that waited for the sections the caller has just left: a signal
    that landed while the trace was saved acts now, where the program is. The caller is a section
    itself (so that a signal at its very start waits too: its PY_START callback is where a handler
    would otherwise run) and calls this last; nothing below it may be one."""
    deferral.run_pending(helpers=1)  # one helper frame (this one) between the caller and the call


def program_end() -> ProgramEnd | None:
    """The ``ProgramEnd`` installed in this process (a fork child: its parent's), if any."""
    return _program_end


def _sigterm_is_ours() -> bool:
    return _sigterm_handler is not None and signal.getsignal(signal.SIGTERM) is _sigterm_handler


def _before_fork() -> None:
    # A SIGTERM that reached the child before its SIGTERM is reset (in _after_fork_in_child) would be
    # caught by our handler and then dropped: held back over fork(), it is delivered after.
    if _hooks is not None and _sigterm_is_ours() and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _fork_state.held = True


def _let_sigterm_through() -> None:
    if getattr(_fork_state, "held", False):
        _fork_state.held = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    """The trace belongs to the parent: record and write nothing, and die of SIGTERM at once."""
    hooks = _hooks
    if hooks is not None:
        hooks.recording.forget_in_child()
        hooks.remove()  # os._exit and os.exec* are the child's own
        if _sigterm_handler is not None:
            try:
                if signal.getsignal(signal.SIGTERM) is _sigterm_handler:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except (ValueError, OSError):
                pass
    _let_sigterm_through()


os.register_at_fork(before=_before_fork, after_in_parent=_let_sigterm_through,
                    after_in_child=_after_fork_in_child)


def exit_status(code: object) -> int:
    """The process exit status for ``SystemExit(code)``, as the interpreter computes it."""
    if code is None:
        return 0
    status = _int_status(code)
    return 1 if status is None else status


def _int_status(value: object) -> int | None:
    """``value & 0xFF`` for an int (bool, IntEnum, ...), read in C as the interpreter's own check
    does: no program code runs, ``value.__class__`` is not even read. None for anything else."""
    return int.__index__(value) & 0xFF if issubclass(type(value), int) else None


# -- the end of a program run by `timelapse record` ---------------------------------------------------

#: The colours Python 3.13 puts in a traceback printed on a terminal (not kept in the trace).
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class ProgramEnd:
    """How ``timelapse record``'s program ends, and the trace with it.

    The program's last moments go in this order, as under plain python: its code returns, exits or
    raises (``returned`` / ``exited`` / ``uncaught`` record how, from ``cli.main``); Python prints an
    uncaught exception's report (``_report``); non-daemon threads are joined; the atexit handlers
    run, the program's first (registered later, run earlier) and so recorded; then ours
    (``_at_exit``) saves the trace and prints the summary line. A SIGTERM the program does not handle
    saves the trace where it lands and then kills the process as the default action would;
    ``os.exec*`` saves it and prints the summary before the new image replaces the process.
    """

    def __init__(self, session: Recording, *, quiet: bool) -> None:
        self.session = session
        self.quiet = quiet
        self._lock = threading.RLock()  # a SIGTERM may arrive while the main thread holds it
        self._summary_printed = False
        self._pid = os.getpid()
        self._program_hook: Callable[..., Any] | None = None

    def install(self, sigterm: bool = True) -> None:
        """Called once recording has started, right before the program runs. ``sigterm``: save
        the trace on SIGTERM (not in multiprocessing's workers: ``terminate()`` counts on them
        dying at once, also inside a long call into C, where a Python handler would wait)."""
        global _program_end
        _program_end = self
        # atexit runs after non-daemon threads are joined and after the program's own atexit
        # handlers (registered later, run earlier), so those are recorded too.
        atexit.register(self._at_exit)
        if sigterm:
            self._finish_on_sigterm()
        # os.exec* replaces the process (no atexit): the trace is saved and the summary printed first.
        # The program's unflushed output is not flushed: exec drops it, as without recording.
        self.session.before_exec = lambda: self.finish(flush_output=False)

    def adopt(self, session: Recording) -> None:
        """After fork(), in a child that records itself (``children``): the end of this process is
        now the child's recording's. The atexit registration and ``cli.main``'s (or autostart's)
        calls into this object were inherited; they now end the child's trace, quietly."""
        # What is known of the exit so far (autostart: 0 until __main__ ends by an exception).
        session.exit_status = self.session.exit_status
        self.session = session
        self.quiet = True
        self._pid = os.getpid()
        self._lock = threading.RLock()  # another thread of the parent may have held it at fork
        self._summary_printed = False
        session.before_exec = lambda: self.finish(flush_output=False)
        # SIGTERM stays SIG_DFL (_after_fork_in_child): a pool's terminate() counts on its forked
        # workers dying at once; a child killed so is listed as lost.

    # -- how the program's code ended ----------------------------------------------------------------

    def returned(self) -> None:
        self.session.exit_status = 0

    def exited(self, code: object) -> None:
        """``SystemExit(code)``: ``code`` read once by the caller, as the interpreter would."""
        self.session.exit_status = exit_status(code)

    def uncaught(self, exc: BaseException) -> None:
        """The program ends with an uncaught exception: its status, and the trace's last Error event."""
        session = self.session
        tb = program_traceback(exc.__traceback__)
        # Made without the program's code (no __str__, no __notes__); replaced by Python's own report
        # once the excepthook has printed it (see _report).
        session.error_text = "Traceback (most recent call last):\n" + "".join(
            traceback.format_list(traceback.extract_tb(tb))) + describe_exception(exc) + "\n"
        if isinstance(exc, KeyboardInterrupt):
            session.exit_status, session.exit_signal = 128 + signal.SIGINT, int(signal.SIGINT)
        else:
            session.exit_status = 1
        self._program_hook = sys.excepthook
        sys.excepthook = self._report

    def _report(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        """Python's report of the program's uncaught exception, starting at the program's own frame;
        the report Python printed becomes the trace's last Error event: formatting it a second time
        would run the exception's ``__str__`` and ``__notes__`` twice."""
        hook = self._program_hook
        assert hook is not None
        trimmed = program_traceback(tb)
        exc = exc.with_traceback(trimmed)
        stderr = sys.stderr
        if hook is not sys.__excepthook__ or stderr is None:
            hook(exc_type, exc, trimmed)  # the program's own hook: the trace keeps our text
            return
        copying = _Copying(stderr)
        sys.stderr = copying    # (a signal waits until the report is printed and kept: a section)
        try:
            hook(exc_type, exc, trimmed)
        finally:
            if sys.stderr is copying:
                sys.stderr = stderr
        self.session.error_text = _ANSI_COLOUR.sub("", "".join(copying.parts))

    # -- saving the trace ----------------------------------------------------------------------------

    def finish(self, flush_output: bool = True) -> None:
        """Publish the trace and say where it is (once), or why it is not saved."""
        if os.getpid() != self._pid:
            return  # a fork child: nothing of its own to publish, and the lock may be held for ever
        session = self.session
        with self._lock:
            try:
                try:
                    folder = session.stop()
                except KeyboardInterrupt:
                    # A Ctrl-C while saving waited until the trace was saved (timelapse.interrupts);
                    # the process is ending anyway.
                    folder = session.stop()
            except RecorderError as exc:  # a full disk, ...: the message says what happened
                print(f"timelapse: error: {exc}", file=sys.stderr)
                return
            except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit
                print(f"timelapse: error: could not save the trace: {exc}", file=sys.stderr)
                return
            # None: nothing was published by this process (a forked child, or already said).
            if folder is None or self.quiet or self._summary_printed:
                return
            self._summary_printed = True
            if flush_output:
                try:
                    sys.stdout.flush()  # the program's last output first, then our line
                except (OSError, ValueError):
                    pass
            print(session.summary(), file=sys.stderr)

    def _at_exit(self) -> None:
        try:
            self._save_at_exit()
            # A SIGTERM that came while the trace was saved kills the process now, as it would have.
            _run_what_waited()
        except KeyboardInterrupt:
            pass  # Ctrl-C again while the process ends: the trace is saved, the process ends as it was

    def _save_at_exit(self) -> None:
        self.finish()
        if self.session.exit_signal == signal.SIGTERM:  # the program ended before the handler ran
            os.kill(os.getpid(), signal.SIGTERM)

    def _finish_on_sigterm(self) -> None:
        """On SIGTERM (if the program does not handle it), save the trace, then die of SIGTERM as usual."""
        global _sigterm_handler
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: object) -> None:
            # Never inside the recorder: a signal that lands in one of its sections waits until the
            # section is done (timelapse.interrupts), so the trace can be finished right here.
            session = self.session  # (a fork child's own, once it adopted this end)
            session.exit_status, session.exit_signal = 128 + signum, signum
            # SIGTERM again while the trace is saved waits for it (this handler stays in place until
            # then); only then the default action, and the process dies of SIGTERM as without us.
            self.finish()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        _sigterm_handler = on_sigterm  # a forked child gets SIG_DFL back (_after_fork_in_child)


class _Copying:
    """``sys.stderr`` while Python's own excepthook prints: everything goes on to the real stream,
    and is kept for the trace."""

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> object:
        self.parts.append(text)
        return self.stream.write(text)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


# After the program, the end of the process is timelapse's: a signal that lands here (a second
# Ctrl-C, a SIGTERM) waits until the trace is saved (timelapse.interrupts).
deferral.add_section(ProgramEnd.uncaught, ProgramEnd._report, ProgramEnd.finish,
                     ProgramEnd._at_exit, ProgramEnd._save_at_exit, holds_lock=False)

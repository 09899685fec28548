"""File-descriptor capture: fds 1 and 2 behind pipes, and the reader thread that empties them.

Why: ``os.write(1, ...)``, C extensions (``printf``) and child processes write to fds 1 and 2
without going through ``sys.stdout``/``sys.stderr``, so the stream proxies (``iocapture.py``) never
see that output. Only the fds can. This module is used by ``IOCapture`` when the session asks for
``capture_fd`` (``--capture-fd``); see ``docs/io.md``, "The file-descriptor level".

How: for fd 1 and fd 2, a ``_Channel`` keeps a dup of what the fd pointed at (``saved``: the
terminal, a file, the test runner's pipe) and points the fd at a pipe (``dup2``). A reader thread
polls the pipes and copies every chunk to the saved fd, at once, then reports it (decoded
incrementally) through ``report(kind, stream, content)``. Python-level writes do not go through the
pipe: ``IOCapture`` re-points the proxies of ``sys.stdout``/``sys.stderr`` at a *private*
``TextIOWrapper`` (``FdCapture.private_stream``) that writes through ``_DirectRaw`` straight to the
saved fd, after forwarding whatever waits in the pipe. So the pipe carries only what the proxies
did not see, and nothing is reported twice.

The lock
--------
``FdCapture.lock`` (an RLock) is held to pump a pipe, to write to (or seek) a saved fd, and to change
the channels (uninstall). It keeps the output on the terminal in the order it was written, and keeps
the fds from being closed while someone uses them. Who takes it: the reader thread (around each round
of pumping), a thread about to make a Python-level write (``drain``, via the proxies'
``before_write``), the private streams' ``_DirectRaw.write``/``seek``, and ``uninstall``.

Lock order, one way only::

    Session._finish_lock  ->  IOCapture._lock  ->  FdCapture.lock  ->  Recorder._lock

A pump reports while holding this lock, and the report is ``Recorder.io_event``, which takes the
recorder's lock: so the recorder's lock is always taken *inside* this one. The session finishes a
trace under its finish lock and uninstalls the IO capture first (to drain what is still on its way
into the trace): so this lock is taken inside the session's. ``IOCapture._lock`` only serializes
install and uninstall. Python-level reports (``_TextProxy.write`` in iocapture) hold neither
iocapture lock nor this one.

The one path that goes the other way round: ``uninstall`` called by a thread that already holds the
recorder's lock, or that holds the session's finish lock while the reader thread, holding this lock,
is failing into the session (a recorder failure inside a monitoring callback, a signal handler that
stops the recording in the middle of an event). So ``uninstall`` waits at most ``_LOCK_TIMEOUT``
seconds for this lock. If it does not get it, it sets ``lock_abandoned`` and finishes without it:
no final drain (what is left in the pipes is forwarded by the reader thread, unreported), and from
then on nothing of ours waits for this lock again (``_DirectRaw`` writes without it).

At fork
-------
``os.register_at_fork(after_in_child=...)`` calls ``after_fork_in_child`` for every live
``FdCapture``. In a child made by ``fork()`` without ``exec``:

- the lock is replaced by a new one: the parent's may be held by a thread that does not exist in the
  child (the reader thread, in the middle of a pump);
- ``in_child`` is set and reporting stops: there is no reader thread in the child, and the pipes
  remain the parent's to read. The child neither pumps, nor reports, nor wakes the parent's reader;
- the child's Python-level output goes through its copy of the private streams to the inherited
  saved fds (the terminal); what it writes to fd 1 / fd 2 itself (``os.write``, its own children)
  goes into the inherited pipe, and the *parent's* reader forwards it (and, while the parent
  records, reports it on the parent's current step).

The reader thread is started with ``_thread.start_new_thread``, not ``threading.Thread``, so that it
never shows up in ``threading.enumerate()``; it does make the process multi-threaded, hence CPython's
warning on ``os.fork()`` (docs/io.md, "Limits").
"""

from __future__ import annotations

import _thread
import codecs
import io
import os
import select
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from timelapse.errors import RecorderError
from timelapse.format import EventKind

__all__ = ["FdCapture", "flush_quietly"]

#: ``report(kind, stream, content)``: fd-level output, from whichever thread forwarded it.
Report = Callable[[int, str, str], None]

#: The file descriptors fd-level capture takes over: (fd, stream name, kind of what is written).
_CAPTURED_FDS = ((1, "stdout", EventKind.WRITE), (2, "stderr", EventKind.WRITE_OTHER))

_PIPE_SIZE = 1 << 20  # ask for a 1 MiB pipe: writers block later (see docs/io.md, "limits")
_READ_SIZE = 1 << 16  # one read, one report: whatever a child writes, nothing more is kept
_LOCK_TIMEOUT = 5.0  # seconds uninstall waits for the fd lock before giving up on the drain


def _file_identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _write_all(fd: int, data: Any) -> None:
    """os.write until everything is written (a pipe or terminal may take part of it)."""
    view = memoryview(data).cast("B")
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # the destination is non-blocking and full: wait, as a blocking fd would
            select.select([], [fd], [])
            continue
        view = view[n:]


class _Channel:
    """One captured fd (1 or 2): the pipe now behind it, and a dup of what was there (``saved``).

    The reader thread owns the pipe's read end: whoever pumps only marks it finished (``open``
    False), the reader thread unregisters and closes it.
    """

    def __init__(self, fd: int, stream: str, kind: int, encoding: str) -> None:
        self.fd = fd
        self.stream = stream
        self.kind = kind
        self.saved = os.dup(fd)  # close-on-exec: child processes never see it
        try:
            read_end, write_end = os.pipe()
        except OSError:
            os.close(self.saved)
            raise
        try:
            import fcntl

            fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
        except (ImportError, OSError):
            pass  # the default size (64 KiB on Linux) works too
        self.pipe = _file_identity(write_end)
        self.read_end = read_end
        os.set_blocking(read_end, False)
        self.was_tty = os.isatty(self.saved)
        try:
            self.decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        except LookupError:
            self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            os.dup2(write_end, fd)  # inheritable, as fd 1 was: child processes write into the pipe
        except OSError:
            for end in (read_end, write_end, self.saved):
                os.close(end)
            raise
        os.close(write_end)
        #: False once uninstalled: the fd is restored (if still ours) and Python writes go to ``fd``.
        self.capturing = True
        #: False at EOF (no writer left) or when the destination is gone.
        self.open = True
        self.saved_closed = False

    def is_ours(self) -> bool:
        """Is ``fd`` still our pipe? (The program may have pointed it elsewhere, or closed it.)"""
        return _file_identity(self.fd) == self.pipe

    def destination(self) -> int:
        """Where Python-level writes go now: the saved fd while capturing, else the fd itself."""
        return self.saved if self.capturing and self.is_ours() else self.fd

    def pump(self, report: Report | None) -> None:
        """Forward everything waiting in the pipe to the saved fd, reporting it. Caller holds the lock."""
        while self.open:
            try:
                data = os.read(self.read_end, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.open = False  # EOF: no writer is left
                return
            try:
                _write_all(self.saved, data)
            except OSError:
                # The destination is gone (EPIPE: whoever read our output exited). Stop reading, so
                # that writers get EPIPE / SIGPIPE as they would without recording.
                self.open = False
            if report is not None:
                content = self.decoder.decode(data)
                if content:
                    report(self.kind, self.stream, content)

    def restore(self) -> None:
        """Point ``fd`` back at the saved original, unless the program has pointed it elsewhere."""
        if self.capturing:
            self.capturing = False
            if self.is_ours():
                os.dup2(self.saved, self.fd)

    def close_saved(self) -> None:
        if not self.saved_closed:
            self.saved_closed = True
            os.close(self.saved)


class _DirectRaw(io.RawIOBase):
    """The raw file under the private stream that replaces the real ``sys.stdout`` under fd capture:
    writes go to the saved fd (the terminal), not into the pipe, after the pipe's pending data.

    It says it is fd 1 (``fileno()``), and answers ``isatty()`` for the terminal."""

    def __init__(self, channel: _Channel, fd_capture: FdCapture, name: Any, mode: str) -> None:
        super().__init__()
        self._channel = channel
        self._fd_capture = fd_capture
        self.name = name
        self.mode = mode

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._channel.fd

    def isatty(self) -> bool:
        channel = self._channel
        return channel.was_tty if channel.capturing else os.isatty(channel.fd)

    def seekable(self) -> bool:
        try:
            self.tell()
        except OSError:
            return False
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        fd_capture = self._fd_capture
        if fd_capture.lock_abandoned:
            return os.lseek(self._channel.destination(), pos, whence)
        with fd_capture.lock:
            return os.lseek(self._channel.destination(), pos, whence)

    def tell(self) -> int:
        return self.seek(0, os.SEEK_CUR)

    def write(self, b: Any) -> int:
        # Called when the buffered layer above flushes: each line on a terminal, each block otherwise.
        size = memoryview(b).nbytes
        fd_capture = self._fd_capture
        channel = self._channel
        if fd_capture.lock_abandoned:  # uninstall could not get the lock: never wait for it again
            _write_all(channel.destination(), b)
            return size
        with fd_capture.lock:
            destination = channel.destination()
            if destination != channel.fd and not fd_capture.in_child:
                channel.pump(fd_capture.report_fd)  # what C code wrote before us goes out first
            _write_all(destination, b)
        return size


class FdCapture:
    """Fds 1 and 2 behind pipes, a reader thread, and the private streams for Python-level writes.

    ``report(kind, stream, content)`` receives the fd-level output (``EventKind.WRITE`` / "stdout",
    ``EventKind.WRITE_OTHER`` / "stderr"), from the reader thread or from a thread draining the
    pipes before its own write; the fd lock is held then (see the module docstring)."""

    def __init__(self, report: Report) -> None:
        self._report = report
        #: See the module docstring: what it guards, and its place in the lock order.
        self.lock = threading.RLock()
        self.lock_abandoned = False
        self.channels: list[_Channel] = []
        self.reporting = True  # fd-level output is reported until uninstall's final drain
        self.in_child = False
        self.reader_done = False
        self._wake: tuple[int, int] | None = None
        #: (private stream, original stream, give_back) for each Python stream re-pointed at a
        #: saved fd; ``give_back(original)`` at uninstall points its proxy at the original again.
        self.redirected: list[tuple[io.TextIOWrapper, Any, Callable[[Any], None]]] = []
        self._libc = _libc()

    # -- install ---------------------------------------------------------------------------------

    def install(self) -> None:
        """Put fds 1 and 2 (those that are open) behind pipes and start the reader thread. Raises
        RecorderError if that cannot be done; nothing is left changed then."""
        encodings = {
            fd: getattr(getattr(sys, f"__{name}__", None), "encoding", None) or "utf-8"
            for fd, name, _kind in _CAPTURED_FDS
        }
        for _fd, name, _kind in _CAPTURED_FDS:  # earlier output goes out the old way
            flush_quietly(getattr(sys, name, None))
            flush_quietly(getattr(sys, f"__{name}__", None))
        _c_flush(self._libc)
        try:
            for fd, stream, kind in _CAPTURED_FDS:
                if _file_identity(fd) is None:
                    continue  # not open: nothing to capture (and nothing to restore)
                self.channels.append(_Channel(fd, stream, kind, encodings[fd]))
            self._wake = os.pipe()
        except OSError as exc:
            for channel in self.channels:
                channel.restore()
                os.close(channel.read_end)
                channel.close_saved()
            self.channels.clear()
            raise RecorderError(f"cannot capture file descriptors 1 and 2: {exc}") from None
        for channel in self.channels:
            if channel.fd == 1 and channel.was_tty:
                _c_line_buffered_stdout(self._libc)  # as C stdio would be on the terminal
        _thread.start_new_thread(self._read_loop, ())  # not a threading.Thread: invisible to the program
        _fd_captures.add(self)

    def channel_for(self, stream: Any) -> _Channel | None:
        """The channel a Python stream object writes to (its ``fileno()``), if captured."""
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        for channel in self.channels:
            if channel.fd == fd:
                return channel
        return None

    def private_stream(self, original: Any, channel: _Channel) -> io.TextIOWrapper:
        """A text stream like ``original`` (encoding, errors, buffering), writing to the saved fd.
        Raises AttributeError, OSError or ValueError if ``original`` is not a standard text stream."""
        encoding, errors = original.encoding, original.errors
        line_buffering, write_through = original.line_buffering, original.write_through
        original_buffer = original.buffer
        original.flush()
        raw = _DirectRaw(channel, self, getattr(original, "name", channel.fd), "wb")
        buffer: Any = raw
        if not isinstance(original_buffer, io.RawIOBase):
            size = getattr(getattr(original_buffer, "raw", None), "_blksize", 0)
            buffer = io.BufferedWriter(raw, size if size > 1 else io.DEFAULT_BUFFER_SIZE)
        stream = io.TextIOWrapper(
            buffer, encoding=encoding, errors=errors, newline="\n",
            line_buffering=line_buffering, write_through=write_through,
        )
        stream.mode = getattr(original, "mode", "w")  # type: ignore[misc]
        return stream

    def add_redirect(self, private: io.TextIOWrapper, original: Any,
                     give_back: Callable[[Any], None]) -> None:
        """``private`` now stands in for ``original``; at uninstall, what the program changed on it
        is carried over to ``original`` and ``give_back(original)`` is called."""
        self.redirected.append((private, original, give_back))

    # -- report ----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Forward and report what is waiting in the pipes now (the proxies' ``before_write``)."""
        if self.in_child or not self.reporting:
            return
        with self.lock:
            for channel in self.channels:
                if channel.capturing and channel.open:
                    channel.pump(self.report_fd)

    def report_fd(self, kind: int, stream: str, content: str) -> None:
        """Report fd-level output. Caller holds the lock.

        A failure here is the recorder's (it has already handled it: switched itself off, saved the
        trace); it must not reach a write half done, so fd reporting just stops."""
        if not self.reporting:
            return
        try:
            self._report(kind, stream, content)
        except Exception:  # noqa: BLE001
            self.reporting = False

    def _read_loop(self) -> None:
        """The reader thread: forward (and report) pipe data as it arrives, until every pipe is at EOF.

        After uninstall it only forwards: a child process that outlives the recording still reaches
        the terminal."""
        assert self._wake is not None
        wake_read = self._wake[0]
        poller = select.poll()
        registered = {}
        for channel in self.channels:
            poller.register(channel.read_end, select.POLLIN)
            registered[channel.read_end] = channel
        poller.register(wake_read, select.POLLIN)
        try:
            while registered:
                ready = poller.poll()
                with self.lock:
                    for fd, _mask in ready:
                        if fd == wake_read:
                            try:
                                os.read(wake_read, 64)
                            except OSError:
                                pass
                            continue
                        channel = registered.get(fd)
                        if channel is not None:
                            channel.pump(self.report_fd if self.reporting else None)
                    for fd, channel in list(registered.items()):
                        if not channel.open:  # at EOF, or closed by whoever pumped last
                            poller.unregister(fd)
                            del registered[fd]
                            os.close(fd)
        finally:
            with self.lock:
                self.reader_done = True
                for fd in registered:
                    os.close(fd)
                for channel in self.channels:
                    if not channel.capturing:
                        channel.close_saved()
                os.close(self._wake[0])
                os.close(self._wake[1])

    # -- uninstall -------------------------------------------------------------------------------

    def uninstall(self) -> None:
        """Flush, give fds 1 and 2 back, forward and report what is left in the pipes."""
        # A timeout, not a deadlock: see the module docstring, "The lock".
        acquired = self.lock.acquire(timeout=_LOCK_TIMEOUT)
        if not acquired:
            self.lock_abandoned = True  # the flushes below must not wait for the lock
        try:
            for private, _original, _give_back in self.redirected:
                flush_quietly(private)
            _c_flush(self._libc)  # C stdio's buffered output goes into the pipe, to be reported
            for private, original, give_back in self.redirected:
                _carry_over(private, original)
                give_back(original)
            for channel in self.channels:
                channel.restore()
            if acquired and not self.in_child:
                for channel in self.channels:
                    channel.pump(self.report_fd)
            self.reporting = False
            if acquired and not self.reader_done and self._wake is not None and not self.in_child:
                os.write(self._wake[1], b"x")  # the reader re-checks its pipes: it ends at EOF
            elif acquired and self.reader_done:
                for channel in self.channels:
                    channel.close_saved()
        finally:
            if acquired:
                self.lock.release()

    def after_fork_in_child(self) -> None:
        """In a forked child: the pipes are the parent's to read; just write to the saved fds."""
        self.lock = threading.RLock()
        self.in_child = True
        self.reporting = False


def _carry_over(private: io.TextIOWrapper, original: Any) -> None:
    """What the program changed on the private stream (reconfigure, close) now applies to the original."""
    try:
        if private.closed:
            original.close()
            return
        changes = {
            name: getattr(private, name)
            for name in ("encoding", "errors", "line_buffering", "write_through")
            if getattr(private, name) != getattr(original, name, None)
        }
        if changes:
            original.reconfigure(**changes)
    except Exception:  # noqa: BLE001 - the original stays as it was
        pass


def flush_quietly(stream: Any) -> None:
    """Flush ``stream`` if it is there and open; a closed or broken stream has nothing to flush."""
    try:
        if stream is not None and not stream.closed:
            stream.flush()
    except Exception:  # noqa: BLE001
        pass


# -- C stdio ---------------------------------------------------------------------------------------


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (ImportError, OSError):
        return None


def _c_flush(libc: Any) -> None:
    """``fflush(NULL)``: C stdio's buffered output (printf from C extensions) goes to the fds now."""
    if libc is not None:
        try:
            libc.fflush(None)
        except Exception:  # noqa: BLE001
            pass


def _c_line_buffered_stdout(libc: Any) -> None:
    """C stdio line-buffers stdout on a terminal; fd 1 is now a pipe, so say so explicitly."""
    if libc is None:
        return
    try:
        import ctypes

        for symbol in ("stdout", "__stdoutp"):  # glibc / musl, macOS
            try:
                file_pointer = ctypes.c_void_p.in_dll(libc, symbol)
            except ValueError:
                continue
            libc.setvbuf(file_pointer, None, 1, 0)  # _IOLBF
            return
    except Exception:  # noqa: BLE001
        pass


# -- fork ------------------------------------------------------------------------------------------

_fd_captures: weakref.WeakSet[FdCapture] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for fd_capture in list(_fd_captures):
        fd_capture.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""Capture the program's terminal IO (stdout, stderr, stdin) as trace ``Event``\\ s.

Why: CodeTracer shows what a program printed next to the line that printed it. That needs every piece
of output (and every line of input) reported *while it happens*, from the thread that did it, so the
recorder can attribute it to the step of the line that produced it (``Recorder.io_event``). And it must
not change what the program does: the output has to reach the real terminal at once and byte for byte,
and everything a program may ask of ``sys.stdout`` (``fileno()``, ``isatty()``, ``encoding``,
``reconfigure()``, ``buffer``, ...) must answer as before.

Two levels (see ``docs/io.md``):

**Python level** (always on, unless the session says ``capture_io=False``). ``sys.stdin``,
``sys.stdout``, ``sys.stderr`` and their ``sys.__std*__`` twins are replaced by thin proxies. A proxy
performs the operation on the real stream object *first*, then reports what was written or read (so a
write that fails — an encoding error, a closed stream — is reported as nothing and its exception
reaches the program unchanged). Everything it does not intercept is delegated to the real stream, and
``isinstance(sys.stdout, io.TextIOWrapper)`` stays true. The proxies hold no buffer of their own: the
real stream's buffering is the only buffering there is, exactly as without recording. Writes that never
reach the real stream (``redirect_stdout`` into a ``StringIO``, a logging handler on a file, a test
runner's capture) never pass through a proxy, so they are not output and are not reported.

**File-descriptor level** (``capture_fd=True``, off by default). ``os.write(1, ...)``, C extensions and
child processes write to fds 1 and 2 without going through ``sys.stdout``. To see them, fd 1 (and 2) is
pointed at a pipe (``dup2``) and a reader thread copies the pipe to the saved original fd — so the
output still reaches the terminal at once — and reports it. The Python-level streams are re-pointed at
the saved fds directly (a private ``TextIOWrapper`` that mirrors the real one), so the pipe only ever
carries writes that did *not* go through the proxies, and nothing is reported twice. ``fileno()`` still
says 1 and 2, ``isatty()`` still tells the truth about the terminal. Before any Python-level write
reaches the terminal, whatever is waiting in the pipe is forwarded first, so the terminal shows output
in the order it was written.
"""

from __future__ import annotations

import _thread
import builtins
import codecs
import functools
import io
import os
import select
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from timelapse.errors import RecorderError

__all__ = ["READ", "WRITE", "WRITE_OTHER", "IOCapture", "StreamProxy"]

#: EventLogKind numbers (trace-format.md §3).
WRITE = 0  #: stdout
WRITE_OTHER = 2  #: stderr
READ = 3  #: stdin

#: ``on_event(kind, stream, content)``; fd-level output adds ``from_fd=True``.
OnEvent = Callable[..., None]

#: (sys attribute, event kind of what is written to it).
_STANDARD_STREAMS = (("stdin", READ), ("stdout", WRITE), ("stderr", WRITE_OTHER))
#: The file descriptors fd-level capture takes over: (fd, stream name, kind).
_CAPTURED_FDS = ((1, "stdout", WRITE), (2, "stderr", WRITE_OTHER))

_PIPE_SIZE = 1 << 20  # ask for a 1 MiB pipe: writers block later (see docs/io.md, "limits")
_READ_SIZE = 1 << 16
_LOCK_TIMEOUT = 5.0  # seconds uninstall waits for the reader thread before giving up on the drain


# -- the Python level ------------------------------------------------------------------------------


class _Reporter:
    """The one gate between the proxies and ``on_event``.

    ``active`` goes False at uninstall (the proxies keep passing data through, unreported). A thread
    that is already inside ``on_event`` is never reported again: output made while an event is being
    recorded is the recorder's own, not the program's.
    """

    __slots__ = ("on_event", "active", "before_write", "_local")

    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self.active = True
        #: Fd capture only: forwards (and reports) the fd-level output still in the pipes, so that it
        #: comes before a Python-level write in the trace as on the terminal.
        self.before_write: Callable[[], None] | None = None
        self._local = threading.local()

    def report(self, kind: int, stream: str, content: str, from_fd: bool = False) -> None:
        """Tell the recorder, unless this thread is already inside ``on_event`` (its own writes)."""
        local = self._local
        if getattr(local, "busy", False):
            return
        local.busy = True
        try:
            if from_fd:
                self.on_event(kind, stream, content, from_fd=True)
            else:
                self.on_event(kind, stream, content)
        finally:
            local.busy = False

    def report_from_fd(self, kind: int, stream: str, content: str) -> None:
        self.report(kind, stream, content, from_fd=True)

    def report_read(self, stream: str, content: str) -> None:
        """A read through a proxy (counted even when empty: ``input()`` needs to know it happened)."""
        local = self._local
        local.reads = getattr(local, "reads", 0) + 1
        if content and self.active:
            self.report(READ, stream, content)

    def reads(self) -> int:
        return getattr(self._local, "reads", 0)


class StreamProxy:
    """A stand-in for a stream object: what a subclass does not intercept is the real stream's.
    The base of every proxy class (the encoder recognizes proxies by it, by identity).

    ``_target`` is the object the operations go to; ``_original`` the object the program would see
    without recording (the same, except under fd capture: there ``_target`` is the private stream on
    the saved fd). The proxy looks like ``_original``: its class has the same ``__name__``,
    ``__qualname__`` and ``__module__`` (``_proxy_class``), ``__class__`` is ``_original``'s class
    (so ``isinstance`` answers as before), and the encoder records ``_original`` in its place.
    """

    __slots__ = ("_target", "_original", "__weakref__")

    # isinstance(sys.stdout, io.TextIOWrapper) stays true (isinstance falls back to __class__).
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(object.__getattribute__(self, "_original"))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target, name)

    def __dir__(self) -> list[str]:
        return dir(self._target)

    def __repr__(self) -> str:
        return repr(self._target)

    def __enter__(self) -> Any:
        self._target.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._target.__exit__(*exc_info)

    def writelines(self, lines: Any) -> None:
        # Not delegated: the real writelines would call the real write, unreported.
        for line in lines:
            self.write(line)

    def flush(self) -> Any:
        return self._target.flush()


class _TextProxy(StreamProxy):
    """Stands in for ``sys.stdout`` (or stderr, stdin): reports writes and reads, delegates the rest.

    The real stream object is ``_target``; under fd capture it is the private stream on the saved fd
    until uninstall, then the original again (so a proxy kept by, say, a logging handler still works).
    """

    __slots__ = ("_reporter", "_stream", "_kind", "_binary")

    def __init__(self, target: Any, original: Any, reporter: _Reporter, stream: str, kind: int) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_reporter", reporter)
        object.__setattr__(self, "_stream", stream)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_binary", None)

    # -- the write path (hot: one call per print() argument, separator and end) --

    def write(self, s: str) -> int:
        reporter = self._reporter
        if reporter.before_write is not None:
            reporter.before_write()
        written = self._target.write(s)  # first: if it raises, nothing was output
        if s and reporter.active:
            reporter.report(self._kind, self._stream, s)
        return written

    # -- the read path --

    def read(self, *args: Any) -> str:
        data = self._target.read(*args)
        self._reporter.report_read(self._stream, data)
        return data

    def readline(self, *args: Any) -> str:
        data = self._target.readline(*args)
        self._reporter.report_read(self._stream, data)
        return data

    def readlines(self, *args: Any) -> list[str]:
        lines = self._target.readlines(*args)
        self._reporter.report_read(self._stream, "".join(lines))
        return lines

    def __iter__(self) -> _TextProxy:
        self._target.__iter__()  # raises as the real one does on a closed stream
        return self

    def __next__(self) -> str:
        line = self._target.__next__()
        self._reporter.report_read(self._stream, line)
        return line

    # -- the binary layer --

    @property
    def buffer(self) -> _BinaryProxy:
        real = self._target.buffer  # raises as the real one does (detached stream)
        proxy = self._binary
        if proxy is None or proxy._target is not real:
            proxy = _new_proxy(_BinaryProxy, real, _stood_for(self, "buffer", real), self)
            object.__setattr__(self, "_binary", proxy)
        return proxy

    def _retarget(self, target: Any) -> None:
        """Fd capture ends: go back to the original stream (the binary proxy follows)."""
        binary = self._binary
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_original", target)
        if binary is not None:
            try:
                buffer = target.buffer
            except (AttributeError, ValueError):
                object.__setattr__(self, "_binary", None)
            else:
                object.__setattr__(binary, "_target", buffer)
                object.__setattr__(binary, "_original", buffer)


class _BinaryProxy(StreamProxy):
    """``sys.stdout.buffer`` (and ``.buffer.raw``): binary writes and reads are reported too,
    decoded with the text stream's encoding and ``errors="replace"`` (incrementally, so a character
    split over two writes is not mangled)."""

    __slots__ = ("_text", "_decoders", "_raw")

    def __init__(self, target: Any, original: Any, text: _TextProxy) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_decoders", {})
        object.__setattr__(self, "_raw", None)

    def _decode(self, direction: str, data: bytes) -> str:
        encoding = getattr(self._text._target, "encoding", None) or "utf-8"
        entry = self._decoders.get(direction)
        if entry is None or entry[0] != encoding:
            try:
                decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
            except LookupError:
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            entry = self._decoders[direction] = (encoding, decoder)
        return entry[1].decode(data)

    def write(self, b: Any) -> Any:
        text = self._text
        reporter = text._reporter
        if reporter.before_write is not None:
            reporter.before_write()
        written = self._target.write(b)
        if reporter.active:
            data = bytes(b)
            if type(written) is int and written < len(data):
                data = data[:written]  # a raw (unbuffered) write may take only part
            content = self._decode("w", data)
            if content:
                reporter.report(text._kind, text._stream, content)
        return written

    def _report_read(self, data: bytes) -> None:
        text = self._text
        content = self._decode("r", data) if data and text._reporter.active else ""
        text._reporter.report_read(text._stream, content)

    def read(self, *args: Any) -> Any:
        data = self._target.read(*args)
        if data is not None:
            self._report_read(data)
        return data

    def read1(self, *args: Any) -> bytes:
        data = self._target.read1(*args)
        self._report_read(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._target.readline(*args)
        self._report_read(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self._target.readlines(*args)
        self._report_read(b"".join(lines))
        return lines

    def _readinto(self, method: Callable[[Any], Any], b: Any) -> Any:
        n = method(b)
        if n:
            self._report_read(bytes(memoryview(b).cast("B")[:n]))
        return n

    def readinto(self, b: Any) -> Any:
        return self._readinto(self._target.readinto, b)

    def readinto1(self, b: Any) -> Any:
        return self._readinto(self._target.readinto1, b)

    def __iter__(self) -> _BinaryProxy:
        self._target.__iter__()
        return self

    def __next__(self) -> bytes:
        line = self._target.__next__()
        self._report_read(line)
        return line

    @property
    def raw(self) -> Any:
        real = self._target.raw
        proxy = self._raw
        if proxy is None or proxy._target is not real:
            proxy = _new_proxy(_BinaryProxy, real, _stood_for(self, "raw", real), self._text)
            object.__setattr__(self, "_raw", proxy)
        return proxy


def _stood_for(proxy: StreamProxy, name: str, real: Any) -> Any:
    """What ``proxy._original.<name>`` is (``buffer``, ``raw``): the object a new proxy of ``real``
    stands for. Under fd capture the original's, not the private stream's."""
    original = proxy._original
    if original is proxy._target:
        return real
    try:
        return getattr(original, name)
    except (AttributeError, ValueError):
        return real


#: (id(base proxy class), id(class of the stood-for object)) -> (that class, our proxy class for it):
#: the classes made by _proxy_class. A handful in practice (text, buffered, raw streams); bounded anyway.
_proxy_classes: dict[tuple[int, int], tuple[type, type]] = {}
_PROXY_CLASSES_MAX = 64
_type_name = type.__dict__["__name__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_module = type.__dict__["__module__"].__get__


def _proxy_class(base: type, shown: type) -> type:
    """A subclass of ``base`` named like ``shown`` (``__name__``, ``__qualname__``, ``__module__``):
    ``type(sys.stdout).__name__`` is ``TextIOWrapper`` as without recording.

    The names are read through ``type``'s own C descriptors, so nothing of a stream class the
    program made runs; the new class is not a subclass of ``shown`` (a subclass of a C stream class
    would carry an uninitialized C stream of its own: see docs/io.md)."""
    key = (id(base), id(shown))
    entry = _proxy_classes.get(key)
    if entry is not None and entry[0] is shown:
        return entry[1]
    namespace: dict[str, Any] = {"__slots__": ()}
    name = _type_name(shown)
    qualname = _type_qualname(shown)
    if type(qualname) is str:
        namespace["__qualname__"] = qualname
    module = _type_module(shown)
    namespace["__module__"] = module if type(module) is str else base.__module__
    cls = type(name if type(name) is str else base.__name__, (base,), namespace)
    if len(_proxy_classes) >= _PROXY_CLASSES_MAX:
        _proxy_classes.clear()
    _proxy_classes[key] = (shown, cls)
    return cls


def _new_proxy(base: type, target: Any, original: Any, *args: Any) -> Any:
    """A proxy of ``target`` (a ``base``) that looks like ``original``."""
    return _proxy_class(base, type(original))(target, original, *args)



def _make_input(original: Callable[..., str], capture: IOCapture) -> Callable[..., str]:
    """``input()`` for a terminal: there CPython reads and prompts through the C-level stdin/stdout
    (GNU readline), around ``sys.stdin``/``sys.stdout``, so the proxies see neither the prompt nor the
    line. This wrapper reports both when the proxies saw no read."""

    @functools.wraps(original)
    def input(*args: Any) -> str:  # noqa: A001 - it is builtins.input
        reporter = capture._reporter
        stdin = sys.stdin
        ours = capture._proxies
        if not reporter.active or not any(stdin is p for p in ours):
            return original(*args)
        reads_before = reporter.reads()
        try:
            line = original(*args)
        except (EOFError, KeyboardInterrupt):
            if reporter.reads() == reads_before and reporter.active:
                _report_prompt(reporter, args)
            raise
        if reporter.reads() == reads_before and reporter.active:  # the terminal path
            _report_prompt(reporter, args)
            reporter.report_read("stdin", line + "\n")
        return line

    return input


def _report_prompt(reporter: _Reporter, args: tuple[Any, ...]) -> None:
    if args:
        prompt = str(args[0])
        if prompt:
            reporter.report(WRITE, "stdout", prompt)


# -- the file-descriptor level ---------------------------------------------------------------------


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

    def pump(self, report: Callable[[int, str, str], None] | None) -> None:
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

    def __init__(self, channel: _Channel, fd_capture: _FdCapture, name: Any, mode: str) -> None:
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


class _FdCapture:
    """Fds 1 and 2 behind pipes, a reader thread, and the private streams for Python-level writes."""

    def __init__(self, reporter: _Reporter, encodings: dict[int, str]) -> None:
        self.reporter = reporter
        #: Held to pump a pipe, to write to a saved fd, and to change the channels: keeps the order of
        #: output on the terminal, and keeps fds from being closed while in use.
        #:
        #: Lock order. iocapture has two locks: ``IOCapture._lock`` (install / uninstall only) and this
        #: one. The recorder's lock (``Recorder._lock`` in monitor.py) is taken *inside* this one: a
        #: pump reports through ``on_event`` -> ``Recorder.io_event`` while holding it (the reader
        #: thread, and a writing thread draining the pipes before its own write). Python-level
        #: reports (``_TextProxy.write``) hold neither iocapture lock. The one path that takes this
        #: lock the other way round is ``uninstall`` called by a thread that already holds the
        #: recorder's lock (or the session's, or ``IOCapture._lock`` while the reader thread is
        #: failing into the session's ``_finish``): a recorder failure inside a monitoring callback,
        #: a signal handler. So uninstall waits at most ``_LOCK_TIMEOUT`` for this lock; if it does
        #: not get it, it sets ``lock_abandoned`` and finishes without the lock (no final drain), and
        #: from then on nothing of ours waits for this lock again (``_DirectRaw.write``).
        self.lock = threading.RLock()
        self.lock_abandoned = False
        self.channels: list[_Channel] = []
        self.reporting = True  # fd-level output is reported until uninstall's final drain
        self.in_child = False
        self.reader_done = False
        self._encodings = encodings
        self._wake: tuple[int, int] | None = None
        #: (proxy, original stream, private stream) for each proxy re-pointed at a saved fd.
        self.redirected: list[tuple[_TextProxy, Any, io.TextIOWrapper]] = []
        self._libc = _libc()

    # -- install ---------------------------------------------------------------------------------

    def install(self) -> None:
        _c_flush(self._libc)
        try:
            for fd, stream, kind in _CAPTURED_FDS:
                if _file_identity(fd) is None:
                    continue  # not open: nothing to capture (and nothing to restore)
                self.channels.append(_Channel(fd, stream, kind, self._encodings.get(fd, "utf-8")))
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
        """A text stream like ``original`` (encoding, errors, buffering), writing to the saved fd."""
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

    # -- report ----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Forward and report what is waiting in the pipes now (``_Reporter.before_write``)."""
        if self.in_child or not self.reporting:
            return
        with self.lock:
            for channel in self.channels:
                if channel.capturing and channel.open:
                    channel.pump(self.report_fd)

    def report_fd(self, kind: int, stream: str, content: str) -> None:
        """Report fd-level output: ``on_event(..., from_fd=True)``. Caller holds the lock.

        A failure here is the recorder's (it has already handled it: switched itself off, saved the
        trace); it must not reach a write half done, so fd reporting just stops."""
        if not self.reporting:
            return
        try:
            self.reporter.report_from_fd(kind, stream, content)
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
        # A timeout, not a deadlock, if the reader thread is stuck reporting to a recorder whose lock
        # this thread holds (a signal handler that stops the recording in the middle of an event).
        acquired = self.lock.acquire(timeout=_LOCK_TIMEOUT)
        if not acquired:
            self.lock_abandoned = True  # the flushes below must not wait for the lock (see __init__)
        try:
            for _proxy, _original, private in self.redirected:
                _flush_quietly(private)
            _c_flush(self._libc)  # C stdio's buffered output goes into the pipe, to be reported
            for proxy, original, private in self.redirected:
                _carry_over(private, original)
                proxy._retarget(original)
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


_fd_captures: weakref.WeakSet[_FdCapture] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for fd_capture in list(_fd_captures):
        fd_capture.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the public object -----------------------------------------------------------------------------


class IOCapture:
    """Reports the program's stdout, stderr and stdin to ``on_event`` while installed.

    ``on_event(kind, stream, content)`` is called in the thread that wrote or read, during the call:
    kind 0 / "stdout", 2 / "stderr", 3 / "stdin". With ``capture_fd=True``, output that reaches fds 1
    and 2 without going through ``sys.stdout``/``sys.stderr`` is reported as
    ``on_event(kind, "stdout" | "stderr", content, from_fd=True)``, from whichever thread forwarded it
    (usually the reader thread): attribute it to the step during which it arrived.
    """

    def __init__(self, on_event: OnEvent, capture_fd: bool = False) -> None:
        self.capture_fd = capture_fd
        self._reporter = _Reporter(on_event)
        self._lock = threading.RLock()
        self._installed = False
        self._uninstalled = False
        #: sys attribute name -> (our proxy, the object it replaced).
        self._replaced: dict[str, tuple[_TextProxy, Any]] = {}
        self._proxies: list[_TextProxy] = []
        self._fd: _FdCapture | None = None
        self._input: tuple[Callable[..., str], Callable[..., str]] | None = None

    def install(self) -> None:
        """Put the proxies (and, with ``capture_fd``, the pipes) in place. Raises RecorderError if the
        file descriptors cannot be captured; nothing is left changed then."""
        with self._lock:
            if self._installed:
                return
            self._installed = True
            if self.capture_fd and os.name == "posix":
                encodings = {
                    fd: getattr(getattr(sys, f"__{name}__", None), "encoding", None) or "utf-8"
                    for fd, name, _kind in _CAPTURED_FDS
                }
                for name in ("stdout", "stderr"):
                    _flush_quietly(getattr(sys, name, None))
                    _flush_quietly(getattr(sys, f"__{name}__", None))
                fd_capture = _FdCapture(self._reporter, encodings)
                fd_capture.install()
                self._fd = fd_capture
                self._reporter.before_write = fd_capture.drain
            elif self.capture_fd:
                raise RecorderError("--capture-fd needs a POSIX system (Linux, macOS)")
            by_object: dict[int, _TextProxy | None] = {}
            for name, kind in _STANDARD_STREAMS:
                for attribute in (name, f"__{name}__"):
                    stream = getattr(sys, attribute, None)
                    if stream is None:
                        continue
                    if id(stream) not in by_object:
                        by_object[id(stream)] = self._proxy_for(stream, name, kind)
                    proxy = by_object[id(stream)]
                    if proxy is not None:
                        self._replaced[attribute] = (proxy, stream)
                        setattr(sys, attribute, proxy)
            self._proxies = [proxy for proxy in by_object.values() if proxy is not None]
            self._wrap_input()

    def _proxy_for(self, stream: Any, name: str, kind: int) -> _TextProxy | None:
        """The proxy to put in place of ``stream``; None: leave it (fd capture sees its writes)."""
        fd_capture = self._fd
        if fd_capture is not None and name != "stdin":
            channel = fd_capture.channel_for(stream)
            if channel is not None:
                try:
                    private = fd_capture.private_stream(stream, channel)
                except (AttributeError, OSError, ValueError):
                    return None  # not a standard text stream: its writes reach the pipe, reported there
                proxy = _new_proxy(_TextProxy, private, stream, self._reporter, name, kind)
                fd_capture.redirected.append((proxy, stream, private))
                return proxy
        return _new_proxy(_TextProxy, stream, stream, self._reporter, name, kind)

    def _wrap_input(self) -> None:
        """On a terminal, ``input()`` bypasses the proxies (see ``_make_input``)."""
        if self._fd is not None:
            return  # fd 1 is a pipe: input() takes the path through sys.stdin/sys.stdout
        try:
            interactive = sys.stdin.isatty() and sys.stdout.isatty()
        except (AttributeError, OSError, ValueError):
            return
        if interactive:
            original = builtins.input
            wrapper = _make_input(original, self)
            builtins.input = wrapper
            self._input = (original, wrapper)

    def uninstall(self) -> None:
        """Stop reporting and put back what was replaced (where it is still ours). Flushes the real
        streams, and with ``capture_fd`` forwards and reports what is still in the pipes. Safe to
        call more than once, and from any thread."""
        with self._lock:
            if not self._installed or self._uninstalled:
                return
            self._uninstalled = True
            self._reporter.active = False  # Python-level writes from now on pass through unreported
            self._reporter.before_write = None
            if self._fd is not None:
                self._fd.uninstall()
            for attribute, (proxy, original) in self._replaced.items():
                if getattr(sys, attribute, None) is proxy:
                    setattr(sys, attribute, original)
            if self._input is not None:
                original_input, wrapper = self._input
                if builtins.input is wrapper:
                    builtins.input = original_input
            for proxy in self._proxies:
                if proxy._stream != "stdin":
                    _flush_quietly(proxy._target)  # the output is out before the process ends

    @property
    def installed(self) -> bool:
        return self._installed and not self._uninstalled


def _flush_quietly(stream: Any) -> None:
    try:
        if stream is not None and not stream.closed:
            stream.flush()
    except Exception:  # noqa: BLE001 - a closed or broken stream: nothing to flush
        pass

"""Capture the program's terminal IO (stdout, stderr, stdin) as trace ``Event``\\ s.

Why: CodeTracer shows what a program printed next to the line that printed it. That needs every piece
of output (and every line of input) reported *while it happens*, from the thread that did it, so the
recorder can attribute it to the step of the line that produced it (``Recorder.io_event``). And it must
not change what the program does: the output has to reach the real terminal at once and byte for byte,
and everything a program may ask of ``sys.stdout`` (``fileno()``, ``isatty()``, ``encoding``,
``reconfigure()``, ``buffer``, ...) must answer as before.

Two levels (see ``docs/io.md``):

**Python level** (this module; always on, unless the session says ``capture_io=False``).
``sys.stdin``, ``sys.stdout``, ``sys.stderr`` and their ``sys.__std*__`` twins are replaced by thin
proxies. A proxy performs the operation on the real stream object *first*, then reports what was
written or read (so a write that fails — an encoding error, a closed stream — is reported as nothing
and its exception reaches the program unchanged). Everything it does not intercept is delegated to
the real stream, and ``isinstance(sys.stdout, io.TextIOWrapper)`` stays true. The proxies hold no
buffer of their own: the real stream's buffering is the only buffering there is, exactly as without
recording. Writes that never reach the real stream (``redirect_stdout`` into a ``StringIO``, a logging
handler on a file, a test runner's capture) never pass through a proxy, so they are not output and are
not reported.

**File-descriptor level** (``capture_fd=True``, off by default; ``fdcapture.py``). ``os.write(1, ...)``,
C extensions and child processes write to fds 1 and 2 without going through ``sys.stdout``. To see
them, fd 1 (and 2) is pointed at a pipe and a reader thread copies the pipe to the saved original fd
and reports it. This module's part: the proxies of ``sys.stdout``/``sys.stderr`` are re-pointed at
fdcapture's private streams on the saved fds (so the pipe only ever carries writes that did *not* go
through the proxies, and nothing is reported twice), and before a Python-level write the pipes are
drained (``_Reporter.before_write``), so that the terminal and the trace show output in the order it
was written. The fd lock, its place in the lock order and what happens at fork are written down in
``fdcapture.py``.
"""

from __future__ import annotations

import builtins
import codecs
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from timelapse.errors import RecorderError
from timelapse.fdcapture import FdCapture, flush_quietly
from timelapse.format import EventKind

__all__ = ["READ", "WRITE", "WRITE_OTHER", "IOCapture", "StreamProxy"]

#: The kinds of the Events this module reports (trace-format.md §3), by their old names.
WRITE = EventKind.WRITE  #: stdout
WRITE_OTHER = EventKind.WRITE_OTHER  #: stderr
READ = EventKind.READ  #: stdin

#: ``on_event(kind, stream, content)``; fd-level output adds ``from_fd=True``.
OnEvent = Callable[..., None]

#: (sys attribute, event kind of what is written to it).
_STANDARD_STREAMS = (("stdin", READ), ("stdout", WRITE), ("stderr", WRITE_OTHER))


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


# -- the public object -----------------------------------------------------------------------------


class IOCapture:
    """Reports the program's stdout, stderr and stdin to ``on_event`` while installed.

    ``on_event(kind, stream, content)`` is called in the thread that wrote or read, during the call:
    ``EventKind.WRITE`` / "stdout", ``EventKind.WRITE_OTHER`` / "stderr", ``EventKind.READ`` /
    "stdin". With ``capture_fd=True`` (``fdcapture.FdCapture``), output that reaches fds 1 and 2
    without going through ``sys.stdout``/``sys.stderr`` is reported as
    ``on_event(kind, "stdout" | "stderr", content, from_fd=True)``, from whichever thread forwarded it
    (usually the reader thread), with the fd lock held: attribute it to the step during which it
    arrived.
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
        self._fd: FdCapture | None = None
        self._input: tuple[Callable[..., str], Callable[..., str]] | None = None

    def install(self) -> None:
        """Put the proxies (and, with ``capture_fd``, the pipes) in place. Raises RecorderError if the
        file descriptors cannot be captured; nothing is left changed then."""
        with self._lock:  # install and uninstall only (lock order: see fdcapture.py)
            if self._installed:
                return
            self._installed = True
            if self.capture_fd and os.name == "posix":
                fd_capture = FdCapture(self._reporter.report_from_fd)
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
                fd_capture.add_redirect(private, stream, proxy._retarget)
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
                    flush_quietly(proxy._target)  # the output is out before the process ends

    @property
    def installed(self) -> bool:
        return self._installed and not self._uninstalled


"""Stream trace events into a trace folder.

The writer is the one place that defines ids. In the CodeTracer format an id is never written: it is the
ordinal of its defining event (the third ``Path`` event defines PathId 2). So the writer keeps the id
tables (paths, functions, types, variable names), emits each defining event the first time an id is
asked for, and that keeps "define before use" true by construction.

The format is chosen here, once: ``TraceWriter(folder, program, fmt=...)`` (``json_format.JSON`` by
default); the writer frames the file with it and spells the id-defining events and IO Events with it,
and the recorder and the encoder take their spelling from ``writer.format``. This module writes no
syntax of its own.

Events go into ``TraceWriter.events`` already serialized (``bytes``, one event each): encoding a
small event where it happens, with its parts cached (a Step's bytes per line, a variable's ``Value``
head), is about twice as fast as building dicts and serializing them later, and keeps the garbage
collector out of the way (bytes are not tracked). ``flush()`` writes the batch (joined in buffers of a few
hundred events, with ``os.writev``), so memory stays bounded however long the program runs.
``close()`` ends the stream and writes the side files (JSON in every format): after it, the folder is a
complete trace. A compressed format (``trace.bin``) frames the file itself (``fmt.frames()``): each
flushed batch is one zstd frame (several past ``cbor_format.FRAME_BYTES``), compressed whole before
it is written, and ``close()`` ends the file with the seek table of those frames. Everything the
stream file gets, its first and last bytes too, goes through the one interrupt-safe write below
(``_settle``), the same for both formats.

Batches are bounded by bytes, not only by events: the recorder calls ``flush_if_full()`` whenever
``len(events)`` reaches ``batch_size``, and the writer measures what came since the last check and either
writes the batch (past ``_BATCH_BYTES``) or moves ``batch_size`` on by ``_CHECK_EVERY`` events. So the hot
path only compares two ints, and a batch never holds much more than ``_BATCH_BYTES`` plus
``_CHECK_EVERY`` events.

Transactions: the recorder writes an event group (a Step and its Values, a Call and its arguments) with
several appends; if it fails half-way, ``rollback(mark)`` takes back what was appended since
``mark = len(events)`` — except the id-defining events (Path, Function, Type, VariableName), which the id
tables already count on: they stay, in order, so "define before use" still holds.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from timelapse.encoder import sanitize_text
from timelapse.format import TraceFormat, TypeKind
from timelapse.json_format import JSON, METADATA_FILE, PATHS_FILE, side_file


def _iov_max() -> int:
    """Buffers per os.writev call: the system's IOV_MAX (1024 on Linux and macOS; POSIX says >= 16)."""
    try:
        return max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
    except (AttributeError, ValueError, OSError):
        return 16


_IOV_MAX = _iov_max()
#: Small events are joined into buffers of about this size before writing: below malloc's mmap
#: threshold (128 KiB), so the buffers are recycled memory, not fresh pages.
_BUFFER_BYTES = 64 * 1024
#: Events this big on average (values of containers and objects) are written from their own buffers:
#: measured on the benchmarks, joining them costs more than the kernel's per-buffer cost.
_BIG_EVENT = 128
#: A batch is written once it holds this many bytes (or _MAX_BATCH_EVENTS events).
_BATCH_BYTES = 4 * 1024 * 1024
_MAX_BATCH_EVENTS = 8192
#: Events between two measurements of a growing batch.
_CHECK_EVERY = 256
#: Output merged into one IO Event at most (characters); longer output is split over several Events.
_MAX_IO_EVENT = 64 * 1024


class TraceWriter:
    """Owns the id tables and the open event stream (``trace.json`` or ``trace.bin``) of one trace
    folder."""

    def __init__(self, folder: Path, program: str, *, batch_size: int = _CHECK_EVERY,
                 fmt: TraceFormat = JSON) -> None:
        self.folder = folder
        #: The trace format: every part of the recording spells its events and values with it.
        self.format = fmt
        spelling = self._spelling = fmt.events
        #: The recorder calls ``flush_if_full()`` when ``len(events)`` reaches this.
        self.batch_size = batch_size
        self._check_every = batch_size
        #: The batch of serialized events not yet written. Hot path: the recorder appends to it.
        self.events: list[bytes] = []
        #: Events written out by earlier flushes: ``position()`` counts every event ever appended.
        self.events_flushed = 0
        #: Bytes of ``events[:_measured]`` (measured by flush_if_full).
        self._batch_bytes = 0
        self._measured = 0
        #: Indices in ``events`` of the id-defining events (kept by ``rollback``).
        self._definitions: list[int] = []
        #: The IO Event at the end of the batch, still open to more output: [index, kind, metadata,
        #: chunks]. Consecutive writes of one step become one Event without re-serializing it each time.
        self._open_io: list[Any] | None = None
        self._open_io_size = 0     # characters in the open IO Event
        #: An IO Event's content -> the same with its secrets replaced (redact.IORedactor.redact),
        #: applied once the Event is complete (a secret written piece by piece is whole there).
        self.redact_io: Callable[[int, str], str] | None = None
        self.bytes_written = 0  # = the size of the stream file
        #: What is being written: its pieces (separators and events, or compressed frames), the
        #: file's size before it, and for frames (the index in _frames of the first, their entries).
        self._unwritten: tuple[list[bytes], int, tuple[int, list[tuple[int, int]]] | None] | None = None
        self._paths: dict[str, int] = {}
        self._functions: dict[tuple[int, int, str], int] = {}
        self._types: dict[tuple[int, str, tuple[tuple[str, int], ...] | None], int] = {}
        self._variables: dict[str, int] = {}
        self._copied_sources: set[str] = set()
        #: A compressed format's framing (``trace.bin``: zstd frames and a seek table), else None.
        self._framing = fmt.frames()
        #: (compressed, decompressed) sizes of the frames written so far (for the seek table).
        self._frames: list[tuple[int, int]] = []
        # Unbuffered: after fork() a child must find no half-written bytes of ours to flush.
        self._file = open(folder / spelling.file_name, "wb", buffering=0)
        self.detached = False
        begin = spelling.begin if self._framing is None else self._framing.header
        if begin:
            self._unwritten = ([begin], 0, None)
            self._settle()      # short writes completed, as for every batch
        self._ended = False     # the stream's end (JSON's "]", the seek table) is on its way
        self._separator = b""   # before the next batch: nothing before the first
        self.closed = False
        # Format rule: the top-level call comes first, and None is TypeId 0.
        self.path_id(program)
        toplevel = self.function_id(0, 1, "<toplevel>")
        self.events.append(spelling.call(toplevel, ()))
        self.type_id(TypeKind.NONE, "None")

    # -- id tables ---------------------------------------------------------------------------------

    def path_id(self, path: str) -> int:
        """The PathId of ``path`` (absolute), defining it and copying the source on first use."""
        path_id = self._paths.get(path)
        if path_id is None:
            path_id = self._paths[path] = len(self._paths)
            self._define(self._spelling.path(sanitize_text(path)))
            self._copy_source(path)
        return path_id

    def function_id(self, path_id: int, line: int, name: str) -> int:
        key = (path_id, line, name)
        function_id = self._functions.get(key)
        if function_id is None:
            function_id = self._functions[key] = len(self._functions)
            self._define(self._spelling.function(path_id, line, sanitize_text(name)))
        return function_id

    def type_id(self, kind: int, lang_type: str, fields: Sequence[tuple[str, int]] | None = None) -> int:
        """The TypeId of a type, emitting its ``Type`` event the first time (deduplicated on all
        three arguments). ``fields``: a Struct type's (field name, field TypeId) pairs, names already
        valid text, spelled as its specific_info; None for a type without them."""
        if fields is not None:
            fields = tuple(fields)
        key = (kind, lang_type, fields)
        type_id = self._types.get(key)
        if type_id is None:
            type_id = self._types[key] = len(self._types)
            self._define(self._spelling.type(kind, sanitize_text(lang_type), fields))
        return type_id

    def variable_id(self, name: str) -> int:
        variable_id = self._variables.get(name)
        if variable_id is None:
            variable_id = self._variables[name] = len(self._variables)
            self._define(self._spelling.variable_name(sanitize_text(name)))
        return variable_id

    @property
    def paths(self) -> list[str]:
        return [sanitize_text(p) for p in self._paths]

    # -- output ------------------------------------------------------------------------------------

    def position(self) -> int:
        """How many events the stream holds so far, written or pending (a rollback takes back)."""
        return self.events_flushed + len(self.events)

    def _define(self, event: bytes) -> None:
        """Append an id-defining event: ``rollback`` keeps these."""
        self._definitions.append(len(self.events))
        self.events.append(event)

    def rollback(self, mark: int) -> None:
        """Take back the events appended since ``mark`` (``len(events)`` then), keeping the id-defining
        ones in their order. A batch written since ``mark`` is not taken back (the recorder flushes
        only once an event group is complete, so that does not happen)."""
        events = self.events
        if mark >= len(events):
            return
        definitions = self._definitions
        kept = [events[i] for i in definitions if i >= mark]
        if self._open_io is not None and self._open_io[0] >= mark:
            self._open_io = None
        del events[mark:]
        del definitions[len(definitions) - len(kept):]
        definitions.extend(range(mark, mark + len(kept)))
        events.extend(kept)
        self._measured = min(self._measured, mark)

    def emit_io(self, kind: int, metadata: str, content: str) -> None:
        """An IO Event; output right after an IO Event of the same kind (nothing in between, so the
        same step) is added to it instead of making a new one."""
        while len(content) > _MAX_IO_EVENT:  # long output: several Events, none over the bound
            self.emit_io(kind, metadata, content[:_MAX_IO_EVENT])
            content = content[_MAX_IO_EVENT:]
        open_io = self._open_io
        events = self.events
        if (open_io is not None and open_io[0] == len(events) - 1 and open_io[1] == kind
                and self._open_io_size + len(content) <= _MAX_IO_EVENT):
            open_io[3].append(content)
            self._open_io_size += len(content)
            return
        self._close_io()
        events.append(b"")  # replaced by the Event when it is complete
        self._open_io = [len(events) - 1, kind, metadata, [content]]
        self._open_io_size = len(content)

    def _close_io(self) -> None:
        open_io = self._open_io
        if open_io is not None:
            index, kind, metadata, chunks = open_io
            content = "".join(chunks)
            if self.redact_io is not None:
                content = self.redact_io(kind, content)
            content = sanitize_text(content)
            # Serialized first, cleared after: a failure leaves no b"" placeholder in the stream.
            self.events[index] = self._spelling.event(kind, metadata, content)
            self._open_io = None

    def flush_if_full(self) -> None:
        """Write the batch if it holds ``_BATCH_BYTES`` (or ``_MAX_BATCH_EVENTS`` events); otherwise
        measure it and ask again ``_check_every`` events later. Called when ``len(events)`` reaches
        ``batch_size``, by the recorder once an event group is complete."""
        events = self.events
        count = len(events)
        self._batch_bytes += sum(map(len, events[self._measured:]))
        self._measured = count
        if (self._batch_bytes + self._open_io_size >= _BATCH_BYTES
                or count >= _MAX_BATCH_EVENTS):
            self.flush()
        else:
            self.batch_size = count + self._check_every

    def flush(self) -> None:
        """Write the pending batch as a run of array elements.

        A KeyboardInterrupt can surface after any call here, so the order matters: the batch is
        kept in ``_unwritten`` before it is cleared, and ``_settle`` tells from the file's size how
        much of it an interrupted write wrote. Nothing is lost or written twice.
        """
        self._settle()
        self._close_io()
        events = self.events
        if not events:
            return
        # Not one separator.join(events): a fresh multi-megabyte buffer per batch costs more in page
        # faults than the copy. Big events are written from where they are; small ones joined in
        # buffers of _BUFFER_BYTES (one buffer per small event would cost the kernel more).
        spelling = self._spelling
        separator = spelling.separator
        frame = None
        if self._framing is not None:
            # Independent zstd frames (one per batch below FRAME_BYTES; the events are only
            # concatenated: the format's separator is empty), their sizes kept for the seek table
            # once they are in the file (_settle).
            pieces, entries = self._framing.frames_of(events)
            frame = (len(self._frames), entries)
        else:
            sample = events[:: len(events) // 32 + 1]    # a few events from all over the batch
            average = sum(map(len, sample)) // len(sample) + 1
            if average >= _BIG_EVENT:
                buffers = events
            else:
                step = _BUFFER_BYTES // average     # events per buffer
                join = separator.join
                buffers = [join(events[i:i + step]) for i in range(0, len(events), step)]
            pieces = [separator] * (2 * len(buffers))
            pieces[0] = self._separator
            pieces[1::2] = buffers
        # One statement: no signal handler runs between the two assignments (pending signals are
        # handled after calls and backward jumps), then the batch is cleared.
        self._unwritten, self._separator = (pieces, self.bytes_written, frame), spelling.batch_separator
        self.events_flushed += len(events)
        events.clear()  # the same list object: the recorder holds a reference to it
        self._definitions.clear()
        self._batch_bytes = self._measured = 0
        self.batch_size = self._check_every
        self._settle()

    def _settle(self) -> None:
        """Write what the file does not hold yet of ``_unwritten`` (a batch, the header, the end)."""
        if self._unwritten is None:
            return
        pieces, start, frame = self._unwritten
        if not self.detached:
            fd = self._file.fileno()
            done = os.fstat(fd).st_size - start
            if done > 0:    # an interrupted flush wrote part of it
                pieces = _skip_bytes(pieces, done)
            sent = 0    # pieces[sent:] are still to write
            while sent < len(pieces):
                chunk = pieces[sent:sent + _IOV_MAX]
                written = os.writev(fd, chunk)
                if written == 0:    # nothing written and no error: never loop on it
                    raise OSError(errno.ENOSPC, "no space left on the device (a write wrote nothing)")
                if written == sum(map(len, chunk)):
                    # The usual: all of it (one C sum; _skip_bytes is a Python loop over the
                    # pieces, and a batch of big events is thousands of them: hot path).
                    sent += len(chunk)
                else:   # a short write: the rest again
                    pieces, sent = _skip_bytes(pieces[sent:], written), 0
            self.bytes_written = os.fstat(fd).st_size
        if frame is not None and len(self._frames) == frame[0]:    # once, even if interrupted here
            self._frames.extend(frame[1])   # one call: all of the batch's entries or none
        self._unwritten = None

    def close(self, metadata: dict[str, Any]) -> None:
        """Write what is pending, end the stream, and write the side files."""
        if self.closed:
            return
        self.flush()
        if not self._ended:     # written once: a close interrupted while writing it completes it
            end = self._spelling.end if self._framing is None else self._framing.end(self._frames)
            # One statement (as in flush): no signal handler runs between the two assignments.
            self._unwritten, self._ended = ([end], self.bytes_written, None) if end else None, True
        self._settle()
        self._file.close()
        self.closed = True
        _write_side_file(self.folder / PATHS_FILE, self.paths)
        _write_side_file(self.folder / METADATA_FILE, metadata)

    def detach(self) -> None:
        """In a forked child: never write to the parent's trace again (not even at exit)."""
        self.detached = True
        self.closed = True
        self.events.clear()

    def abandon(self) -> None:
        """Close the file without finishing it (the folder is about to be discarded)."""
        if not self.closed:
            self._file.close()
            self.closed = True

    def source_version(self, path: str) -> str:
        """The path to record for the source now in ``path``.

        Normally ``path`` itself. If the file changed since it was first copied (the program rewrote it
        and ``importlib.reload``-ed it), the new text is kept as a new version, ``name@v2.py`` beside it,
        so that the steps of the old and of the new code each point at their own source.
        """
        if path not in self._copied_sources:
            return path
        current = _read_bytes(path)
        version, candidate = 1, path
        while True:
            if _read_bytes(self._copy_of(candidate)) == current or current is None:
                return candidate
            version += 1
            stem, dot, suffix = path.rpartition(".")
            candidate = f"{stem}@v{version}.{suffix}" if dot else f"{path}@v{version}"
            if candidate not in self._copied_sources:
                self._copy_source(candidate, source=path)
                return candidate

    def _copy_of(self, path: str) -> Path:
        return self.folder / "files" / path.lstrip(os.sep)

    def _copy_source(self, path: str, source: str | None = None) -> None:
        """Keep the source as it was when first executed: CodeTracer shows ``files/`` copies."""
        if not os.path.isabs(path) or path in self._copied_sources:
            return
        self._copied_sources.add(path)
        target = self._copy_of(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source or path, target)
        except OSError:
            pass  # a source that cannot be read is shown without text; the trace stays valid


def _read_bytes(path: str | Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _skip_bytes(pieces: list[bytes], count: int) -> list[bytes]:
    """`pieces` without their first `count` bytes."""
    for i, piece in enumerate(pieces):
        if count < len(piece):
            return [piece[count:], *pieces[i + 1:]]
        count -= len(piece)
    return []


def _write_side_file(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8", errors="replace") as f:
        f.write(side_file(data))


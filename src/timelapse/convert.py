"""Convert a trace folder's event stream between ``trace.json`` and ``trace.bin`` (``timelapse convert``).

The events are streamed: read one at a time with ``reader.iter_events``, encoded one at a time
(``jsonbytes.to_json`` or ``cbor2.dumps``), and written in batches of about ``_BATCH_BYTES``, so a
trace of any size converts in bounded memory. The output is framed as the recorder frames it:
``trace.json`` as ``json_format.JSON.events`` does (so a recording that fits in one batch of the
recorder converts to the very bytes the JSON recorder writes), ``trace.bin`` as
``cbor_format.SeekableFrames`` does (the header, one zstd frame per batch, the seek table).

Nothing half-written is ever seen where a trace is looked for. In place, the new stream is
written to a hidden file in the folder, then renamed to its name and the old stream removed,
with SIGINT and SIGTERM held back between the two (CodeTracer reads ``trace.json`` before
``trace.bin``: the folder must never keep both). With ``out``, a new folder is built hidden beside
``out`` and renamed to it. Any failure, a damaged source included, removes what was written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from timelapse.json_format import JSON, METADATA_FILE, PATHS_FILE
from timelapse.jsonbytes import to_json
from timelapse.reader import TraceUnreadable, iter_events, read_side_files, stream_path

__all__ = ["FORMATS", "ConvertError", "convert", "run_convert"]

#: The formats, by the name ``--to`` takes, and the stream file of each.
FORMATS = {"json": "trace.json", "bin": "trace.bin"}

#: Encoded events are written in batches of about this many bytes (as the recorder's writer
#: does): one zstd frame each in ``trace.bin``.
_BATCH_BYTES = 4 * 1024 * 1024
#: Encoded events are joined into pieces of about this many bytes as they come (see _batches).
_JOIN_BYTES = 64 * 1024


class ConvertError(Exception):
    """The conversion cannot be done; the message is one line, fit for ``timelapse: error:``."""


def convert(folder: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None = None
            ) -> tuple[Path, int]:
    """Convert the event stream of the trace folder ``folder`` to format ``to`` (``"json"`` or
    ``"bin"``): in place, or into the new folder ``out`` (which must not exist, or be empty) with
    copies of the side files and ``files/``. Returns the new stream file and its event count.

    Raises :class:`ConvertError` (nothing to do, both stream files in ``folder``, ``out`` taken, an
    event the format cannot hold, a write that fails) or :class:`~timelapse.reader.TraceUnreadable` (the source is not a readable
    trace); either way nothing is left of the conversion.
    """
    if to not in FORMATS:
        raise ConvertError(f"unknown format {to!r} (expected 'json' or 'bin')")
    folder = Path(folder)
    source = stream_path(folder)
    if all((folder / name).is_file() for name in FORMATS.values()):
        # Never made by timelapse (recording and converting leave one stream): which one the side
        # files belong to is not ours to guess, and converting either would overwrite the other.
        raise ConvertError(f"{folder} holds both trace.json and trace.bin (CodeTracer reads trace.json):"
                           " remove the one that is not this trace's, then convert")
    target_name = FORMATS[to]
    if source.name == target_name:
        raise ConvertError(f"{folder} is already in the {to} format ({target_name}): nothing to convert")
    read_side_files(folder)  # a folder without readable side files is no trace: refuse it first
    if out is None:
        return _convert_in_place(source, target_name, to)
    return _convert_into(source, Path(out), target_name, to)


def run_convert(folder: str | os.PathLike[str], to: str, out: str | os.PathLike[str] | None = None,
                *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``timelapse convert``: convert, print one line on ``stdout``, return 0; or print one line
    ``timelapse: error: ...`` on ``stderr`` and return 2 (130 if interrupted by Ctrl-C)."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        target, count = convert(folder, to, out)
    except (ConvertError, TraceUnreadable) as exc:
        message = str(exc)
    except ImportError as exc:  # writing trace.bin: pyzstd or cbor2 is not installed
        name = exc.name or "pyzstd"
        message = f"converting to trace.bin needs the {name} package: pip install {name}"
    except OSError as exc:  # reading the source (the reader's errors are TraceUnreadable)
        message = f"cannot read {exc.filename or folder}: {exc.strerror or exc}"
    except MemoryError:
        message = f"{folder}: out of memory while converting"
    except KeyboardInterrupt:
        # The folders are as they were, or converted whole: never anything in between.
        print("timelapse: error: interrupted", file=stderr)
        return 130
    else:
        source = next(name for name in FORMATS.values() if name != target.name)
        print(f"{target}: {count} events converted from {source} to {target.name}", file=stdout)
        return 0
    print(f"timelapse: error: {message}", file=stderr)
    return 2


# -- where the stream goes ----------------------------------------------------------------------


def _convert_in_place(source: Path, target_name: str, to: str) -> tuple[Path, int]:
    folder = source.parent
    target = folder / target_name
    fd, temp_name = _make_temp(lambda: tempfile.mkstemp(prefix=f".{target_name}.", suffix=".converting",
                                                        dir=folder), folder)
    temp = Path(temp_name)
    try:
        _same_mode(temp, source)
        with open(fd, "wb") as file:
            count = _write_stream(source.parent, to, file, temp)
        with _signals_held():  # the rename and the removal, or neither: never both streams
            _commit(temp, target, source)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return target, count


def _commit(temp: Path, target: Path, source: Path) -> None:
    """Rename ``temp`` to ``target`` and remove ``source``; if the removal fails, take the
    rename back (a source already gone was converted by someone else: ours stays)."""
    try:
        os.replace(temp, target)
    except OSError as exc:
        raise ConvertError(f"cannot rename {temp.name} to {target}: {exc.strerror or exc}") from None
    try:
        source.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise ConvertError(f"cannot remove {source}: {exc.strerror or exc}") from None


def _convert_into(source: Path, out: Path, target_name: str, to: str) -> tuple[Path, int]:
    if os.path.lexists(out) and not _is_empty_folder(out):
        raise ConvertError(f"{out} already exists and is not an empty folder (give a new -o)")
    if out.resolve().is_relative_to(source.parent.resolve()):
        raise ConvertError(f"{out} is inside the trace folder {source.parent} (give another -o)")
    parent = out.parent
    made = _make_parents(parent)
    try:
        temp = Path(_make_temp(lambda: tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".converting",
                                                        dir=parent), parent))
        try:
            _same_mode(temp, source.parent)
            try:
                file = open(temp / target_name, "wb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise ConvertError(f"cannot write in {parent}: {exc.strerror or exc}") from None
            with file:
                count = _write_stream(source.parent, to, file, temp / target_name)
            _copy_side_files(source.parent, temp)
            try:
                os.rename(temp, out)  # onto nothing, or onto an empty folder: atomic either way
            except OSError as exc:
                raise ConvertError(f"cannot create {out}: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return out / target_name, count


def _is_empty_folder(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return next(os.scandir(path), None) is None
    except OSError:
        return False


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; the folders it made, outermost first (to remove them on failure)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    missing.reverse()
    for path in missing:
        try:
            path.mkdir()
        except OSError as exc:
            for made in reversed(missing[: missing.index(path)]):
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise ConvertError(f"cannot create {path}: {exc.strerror or exc}") from None
    return missing


def _make_temp(make: Any, where: Path) -> Any:
    try:
        return make()
    except OSError as exc:
        raise ConvertError(f"cannot write in {where}: {exc.strerror or exc}") from None


def _same_mode(path: Path, model: Path) -> None:
    """Give the temporary ``path`` (mkstemp and mkdtemp make it for its owner only) the
    permissions of ``model``: the source stream, the source folder. Whoever could read the
    trace can read the converted one, and no one else."""
    try:
        path.chmod(model.stat().st_mode & 0o777)
    except OSError as exc:
        raise ConvertError(f"cannot write {path}: {exc.strerror or exc}") from None


def _copy_side_files(source: Path, target: Path) -> None:
    try:
        for name in (METADATA_FILE, PATHS_FILE):
            shutil.copy2(source / name, target / name)
        if (source / "files").is_dir():
            shutil.copytree(source / "files", target / "files", symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise ConvertError(f"cannot copy the side files of {source}: {_one_line(exc)}") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back (in the main thread, where signals are handled)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} if hasattr(signal, "SIGHUP") else set()
    if not held or not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not on POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# -- the stream -----------------------------------------------------------------------------------


def _write_stream(folder: Path, to: str, file: BinaryIO, path: Path) -> int:
    """Write the events of ``folder`` to ``file`` in format ``to``; return how many there were."""
    counted = _Counted(iter_events(folder))
    write = _checked_write(file, path)
    if to == "bin":
        _write_bin(counted, write)
    else:
        _write_json(counted, write)
    try:
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename publishes it
    except OSError as exc:
        raise ConvertError(f"cannot write {path}: {exc.strerror or exc}") from None
    return counted.count


def _write_bin(events: _Counted, write: Any) -> None:
    import cbor2

    from timelapse.cbor_format import SeekableFrames

    framing = SeekableFrames()
    dumps = cbor2.dumps
    write(framing.header)
    frames: list[tuple[int, int]] = []
    for data in _batches(_encoded(events, dumps, "CBOR"), b""):
        pieces, entries = framing.frames_of([data])    # more than one past FRAME_BYTES
        for piece in pieces:
            write(piece)
        frames.extend(entries)
    write(framing.end(frames))


def _write_json(events: _Counted, write: Any) -> None:
    spelling = JSON.events
    write(spelling.begin)
    separator = b""
    for data in _batches(_encoded(events, _to_json, "JSON"), spelling.separator):
        write(separator)
        write(data)
        separator = spelling.batch_separator
    write(spelling.end)


class _Counted:
    """The events, counted as they go by (the count names an event that cannot be encoded)."""

    def __init__(self, events: Iterable[Any]) -> None:
        self.events = iter(events)
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for event in self.events:
            yield event
            self.count += 1


def _encoded(events: _Counted, encode: Any, name: str) -> Iterator[bytes]:
    for event in events:
        try:
            yield encode(event)
        except Exception as exc:  # a lone surrogate for CBOR, a CBOR tag for JSON, ...
            raise ConvertError(f"event {events.count} cannot be written as {name}:"
                               f" {_one_line(exc)}") from None


def _batches(items: Iterable[bytes], separator: bytes) -> Iterator[bytes]:
    """The items joined by ``separator`` in batches of about _BATCH_BYTES. They are joined into
    pieces of _JOIN_BYTES as they come: orjson's bytes keep the buffer it wrote them in (8 KB
    for an event of 1 KB), so a batch of them held whole would cost several times its size."""
    join = separator.join
    pieces: list[bytes] = []   # the batch so far, joined
    items_held: list[bytes] = []
    held = size = 0
    for item in items:
        items_held.append(item)
        held += len(item)
        if held >= _JOIN_BYTES:
            pieces.append(join(items_held))
            items_held.clear()
            size += held
            held = 0
            if size >= _BATCH_BYTES:
                yield join(pieces)
                pieces.clear()
                size = 0
    if items_held:
        pieces.append(join(items_held))
    if pieces:
        yield join(pieces)


def _to_json(event: Any) -> bytes:
    """An event as the JSON recorder writes it (compact, by ``jsonbytes.to_json``). A CBOR byte
    string (a BigInt's magnitude may be one in ``trace.bin``) becomes its base64 text, the JSON
    spelling; nothing else in an event is bytes."""
    try:
        return to_json(event)
    except TypeError:  # bytes somewhere (orjson's error is a TypeError too)
        return to_json(_bytes_as_base64(event))


def _bytes_as_base64(value: Any) -> Any:
    import base64

    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if type(value) is dict:
        return {key: _bytes_as_base64(item) for key, item in value.items()}
    if type(value) is list:
        return [_bytes_as_base64(item) for item in value]
    return value


def _checked_write(file: BinaryIO, path: Path) -> Any:
    def write(data: bytes) -> None:
        try:
            file.write(data)
        except OSError as exc:
            raise ConvertError(f"cannot write {path}: {exc.strerror or exc}") from None

    return write


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())

"""A recording session: one trace folder, from ``start()`` to ``stop()``.

The session owns the pieces (writer, encoder, scope, recorder) and the folder's life cycle. The trace is
written into a hidden folder ``.NAME.*.recording`` beside the output folder and moved into place only when
it is complete, so the output folder always holds a complete trace or is left as it was. A folder that is
not a timelapse trace is never overwritten. An output folder that cannot be renamed over (a mount point,
a symlink to a folder) gets the hidden folder inside it, and the finished files are moved into it.

Every path is resolved when the session is made: the program may change or delete its working directory.
While a hidden folder is in use, its recording holds an advisory lock on it, so a folder left by a killed
run (no lock) is told apart from one of a recording still running, and removed at the next start.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any, Literal

from timelapse._version import __version__
from timelapse.encoder import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_NODES,
    DEFAULT_MAX_STRING,
    ValueEncoder,
)
from timelapse.errors import RecorderError
from timelapse.interrupts import deferral
from timelapse.iocapture import IOCapture
from timelapse.monitor import Recorder
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

try:
    import fcntl
except ImportError:  # not on Windows: no locks, and leftovers of killed runs are never cleaned
    fcntl = None  # type: ignore[assignment]

_ERROR_EVENT = 11
#: The deepest max_depth: each level is two levels of JSON nesting, and readers stop at a few hundred.
MAX_DEPTH_LIMIT = 100
_active: Session | None = None
_active_lock = threading.Lock()


def _sigterm_is_ours() -> bool:
    handler = _active.sigterm_handler if _active is not None else None
    return handler is not None and signal.getsignal(signal.SIGTERM) is handler


def _before_fork() -> None:
    # A SIGTERM that reached the child before its SIGTERM is reset (in _forget_in_child) would be
    # caught by the CLI's handler and then dropped: held back over fork(), it is delivered after.
    if _active is not None and _sigterm_is_ours() and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _active._sigterm_held = True


def _let_sigterm_through(session: Session | None) -> None:
    if session is not None and session._sigterm_held:
        session._sigterm_held = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_parent() -> None:
    _let_sigterm_through(_active)


def _after_fork_in_child() -> None:
    session = _active
    if session is not None:
        session._forget_in_child()
    _let_sigterm_through(session)


class _SessionWriter(TraceWriter):
    """The trace writer, remembering a write that failed (a full disk): that is not a recorder bug,
    so the session throws the partial trace away and lets the program go on (see _recorder_failed)."""

    write_error: OSError | None = None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self.write_error = exc
            raise


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def is_recording() -> bool:
    """True while a session is recording in this process."""
    return _active is not None


def is_trace_folder(folder: Path) -> bool:
    """True if ``folder`` holds a trace written by timelapse (so it may be replaced)."""
    try:
        with open(folder / "trace_metadata.json", encoding="utf-8") as f:
            metadata = json.load(f)
        return metadata["recorder"]["name"] == "timelapse"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The absolute output folder, or RecorderError if writing it would destroy something."""
    target = Path(out_dir).absolute()
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise RecorderError(f"output folder {str(out_dir)!r} exists and is not a folder")
        if _trace_entries(target) and not is_trace_folder(target):
            raise RecorderError(
                f"output folder {str(out_dir)!r} exists and is not a timelapse trace; "
                "not overwriting it (choose another folder with -o)"
            )
    return target


def _is_ours(name: str) -> bool:
    """A hidden folder of a recording (``.NAME.*.recording``, and its ``.old`` / ``.starting``)."""
    return name.startswith(".") and any(
        name.endswith(suffix) for suffix in (".recording", ".recording.old", ".starting"))


def _trace_entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, without the hidden folders of recordings."""
    return [entry for entry in folder.iterdir() if not _is_ours(entry.name)]


def _lock(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive lock on it, or None if it is locked
    already (by a recording that is running). The lock goes with the process: killed, it is free."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_leftovers(folder: Path, name: str) -> None:
    """Remove the hidden folders that killed recordings into ``name`` left in ``folder``.

    A folder whose lock can be taken has no recording any more. An ``.old`` folder is an old trace
    set aside while publishing: if the run was killed before the new trace took its place, it goes
    back in place, otherwise it is removed.
    """
    if fcntl is None:
        return
    try:
        entries = [e for e in folder.iterdir() if e.name.startswith(f".{name}.") and _is_ours(e.name)]
    except OSError:
        return
    for entry in sorted(entries, key=lambda e: e.name.endswith(".old")):  # the .old ones last
        try:
            if entry.name.endswith(".recording"):
                fd = _lock(entry)
                if fd is not None:
                    try:
                        shutil.rmtree(entry)
                    finally:
                        os.close(fd)
            elif entry.name.endswith(".recording.old") and not entry.with_suffix("").exists():
                target = folder / name
                if folder.name != name and not target.exists():
                    os.rename(entry, target)
                else:
                    shutil.rmtree(entry)
        except OSError:
            pass  # someone else's, or being removed by another recording: not ours to insist on


class Session:
    """One recording into one trace folder. Use ``timelapse.start()`` or ``timelapse.record()``."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str] = "trace-out",
        *,
        program: str | None = None,
        args: list[str] | None = None,
        on_error: Literal["raise", "continue"] = "raise",
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_string: int = DEFAULT_MAX_STRING,
        max_nodes: int = DEFAULT_MAX_NODES,
        capture_io: bool = True,
        capture_fd: bool = False,
        exclude_files: tuple[str, ...] = (),
        _fault: Callable[[CodeType, int], None] | None = None,
    ) -> None:
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', not {on_error!r}")
        for name, limit, highest in (("max_depth", max_depth, MAX_DEPTH_LIMIT),
                                     ("max_items", max_items, None), ("max_string", max_string, None),
                                     ("max_nodes", max_nodes, None)):
            if type(limit) is not int or limit < 1 or (highest is not None and limit > highest):
                bound = f"from 1 to {highest}" if highest else "of at least 1"
                raise ValueError(f"{name} must be a whole number {bound}, not {limit!r}")
        self.out_dir = check_out_dir(out_dir)
        # Read now: the program may change or delete its working directory before the end.
        self.workdir = os.getcwd()
        relative = os.path.relpath(self.out_dir)
        self._shown_out = str(self.out_dir) if relative.startswith("..") else relative
        self.program = os.path.abspath(program if program is not None else _guess_program())
        self.args = list(args) if args is not None else sys.argv[1:]
        self.on_error = on_error
        self.limits = {"max_depth": max_depth, "max_items": max_items, "max_string": max_string,
                       "max_nodes": max_nodes}
        self.exclude_files = exclude_files
        self.capture_io = capture_io
        self.capture_fd = capture_fd and capture_io
        self._io: IOCapture | None = None
        self._real_os_exit: Callable[[int], Any] | None = None
        self._exit_wrapper: Callable[[int], Any] | None = None
        #: os.execv / os.execve as they were, and our wrappers (see _finish_before_exec).
        self._real_execs: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}
        #: Set by the CLI: called before the process image is replaced (finish, print the summary).
        self.before_exec: Callable[[], None] | None = None
        #: Set by the CLI: its SIGTERM handler, which a forked child must not keep.
        self.sigterm_handler: object | None = None
        self._sigterm_held = False  # SIGTERM blocked while fork() runs
        self._fault = _fault
        #: Set by the CLI: the exit status and, for an uncaught exception, its traceback text.
        self.exit_status: int | None = None
        self.exit_signal: int | None = None
        self.error_text: str | None = None
        self.recorder: Recorder | None = None
        self.writer: TraceWriter | None = None
        self.failure: BaseException | None = None
        self._temp_dir: Path | None = None
        self._temp_lock: int | None = None  # a descriptor of _temp_dir, holding its lock
        #: A mount point or a symlink: it cannot be renamed over, the trace is moved into it.
        self._in_place = False
        self._published = False
        self._in_child = False
        #: Why the trace could not be saved, until stop() has said it.
        self._save_error: str | None = None
        self._started_at = ""
        self._finished = False
        self._finish_lock = threading.RLock()

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, caller: FrameType | None = None, *, base_depth: int = 0) -> Session:
        """Start recording. ``caller``: the frame whose remaining lines belong to the recording;
        ``base_depth``: frames of the calling thread below the program's own (the CLI's)."""
        global _active
        with _active_lock:
            if _active is not None:
                raise RecorderError(
                    f"already recording into {str(_active.out_dir)!r}; stop that session first"
                )
            try:
                self._make_temp_dir()
            except OSError as exc:
                raise RecorderError(
                    f"cannot write output folder {str(self.out_dir)!r}: {exc.strerror or exc}"
                ) from None
            self._started_at = _now()
            self.writer = _SessionWriter(self._temp_dir, self.program)
            encoder = ValueEncoder(self.writer.type_id, **self.limits)
            self.recorder = Recorder(
                self.writer,
                encoder,
                Scope(self.exclude_files),
                on_failure=self._recorder_failed,
                fault=self._fault,
            )
            try:
                self.recorder.start(caller, base_depth)
                if self.capture_io:
                    self._io = IOCapture(self.recorder.io_event, capture_fd=self.capture_fd)
                    self._io.install()
            except BaseException:
                if self._io is not None:
                    self._io.uninstall()
                self.recorder._switch_off()
                self.recorder.release_signals()
                self.writer.abandon()
                self._remove_temp_dir()
                raise
            self._finish_before_os_exit()
            self._finish_before_exec()
            _active = self
        return self

    def _make_temp_dir(self) -> None:
        """Make the hidden folder the trace is written into, locked; this is also the check, before
        the program runs, that the output folder can be written at all."""
        target = self.out_dir
        # A mount point cannot be renamed over, and a symlink must stay a symlink: write inside.
        self._in_place = target.is_dir() and (target.is_symlink() or os.path.ismount(target))
        home = target if self._in_place else target.parent
        home.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(target.parent, target.name)
        if target.is_dir():
            _remove_leftovers(target, target.name)
        # Made under a name the leftover check ignores, locked, then renamed: another recording
        # never sees it unlocked.
        starting = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".starting", dir=home))
        self._temp_lock = _lock(starting)
        self._temp_dir = starting.with_name(starting.name[: -len(".starting")] + ".recording")
        os.rename(starting, self._temp_dir)

    def _remove_temp_dir(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._release_temp_lock()

    def _release_temp_lock(self) -> None:
        fd, self._temp_lock = self._temp_lock, None
        if fd is not None:
            os.close(fd)

    def _finish_before_os_exit(self) -> None:
        """``os._exit`` skips atexit: save the trace first (then exit exactly as asked)."""
        real_exit = self._real_os_exit = os._exit
        session = self

        def _exit(status: int) -> None:
            if session._real_os_exit is real_exit and not session._finished:
                is_int = issubclass(type(status), int)     # bool, IntEnum: read in C, no user code
                session.exit_status = int.__index__(status) & 0xFF if is_int else None
                try:
                    session._finish(stopped_by="<os._exit>")
                except Exception:  # noqa: BLE001 - exiting anyway; never block the exit
                    pass
            real_exit(status)

        _exit.__doc__ = real_exit.__doc__
        os._exit = self._exit_wrapper = _exit

    def _restore_os_exit(self) -> None:
        if self._real_os_exit is not None and os._exit is self._exit_wrapper:
            os._exit = self._real_os_exit
        self._real_os_exit = None
        for name, (real, wrapper) in self._real_execs.items():
            if getattr(os, name) is wrapper:
                setattr(os, name, real)
        self._real_execs = {}

    def _finish_before_exec(self) -> None:
        """``os.exec*`` replaces the process: atexit never runs. Save the trace first, then exec.

        Only ``os.execv`` and ``os.execve`` are wrapped: the other six (``execl``, ``execvp``, ...)
        call them. If the exec then fails, the program gets its OSError as usual and goes on
        unrecorded: the trace, saved up to the exec, stays as it is.
        """
        session = self
        for name in ("execv", "execve"):
            real = getattr(os, name)

            def exec_(*args: Any, _real: Callable[..., Any] = real) -> Any:
                if not session._finished and session._real_execs:
                    session.exit_status = None
                    try:
                        if session.before_exec is not None:
                            session.before_exec()
                        else:
                            session._finish(stopped_by="<os.exec>")
                    except Exception:  # noqa: BLE001 - the exec goes ahead whatever happened
                        pass
                return _real(*args)

            exec_.__name__ = exec_.__qualname__ = name
            exec_.__doc__ = real.__doc__
            self._real_execs[name] = (real, exec_)
            setattr(os, name, exec_)

    def _forget_in_child(self) -> None:
        """After fork(), in the child: the trace belongs to the parent; record and write nothing."""
        global _active
        self._finished = True
        self._in_child = True
        if self.recorder is not None:
            self.recorder.forget_in_child()
        if self.writer is not None:
            self.writer.detach()
        # The lock on the hidden folder is the parent's: the child's copy of the descriptor must not
        # keep it held after the parent is gone.
        self._release_temp_lock()
        # The CLI's SIGTERM handler finishes the parent's trace; the child dies of SIGTERM at once,
        # as it would without recording (a pool's terminate() counts on it).
        if self.sigterm_handler is not None:
            try:
                if signal.getsignal(signal.SIGTERM) is self.sigterm_handler:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        _active = None

    def stop(self) -> Path | None:
        """Stop recording and publish the trace folder; returns it, or None if there is nothing (more)
        to publish. Safe to call more than once. RecorderError if the trace could not be saved (a
        full disk: nothing is left of it, and the output folder is as it was)."""
        return self._finish()

    def __enter__(self) -> Session:
        if self.recorder is None:
            self.start(sys._getframe(1))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def recording(self) -> bool:
        return self.recorder is not None and self.recorder.active

    # -- ending ------------------------------------------------------------------------------------

    def _finish(self, stopped_by: str = "<recording stopped>") -> Path | None:
        """Switch monitoring off, close every open call, write the side files, publish the folder.

        A section (timelapse.interrupts): a signal's handler that lands in here waits until the trace
        is saved (a second Ctrl-C, a SIGTERM), then runs. Lock order: this session's finish lock,
        then the recorder's lock — never the other way round (a failing callback lets go of the
        recorder's lock before it calls ``_recorder_failed``).
        """
        try:
            return self._finish_now(stopped_by)
        finally:
            if self.recorder is not None and self._finished and not self._in_child:
                self.recorder.release_signals()

    def _finish_now(self, stopped_by: str) -> Path | None:
        global _active
        with self._finish_lock:
            if self._save_error is not None:
                message, self._save_error = self._save_error, None
                raise RecorderError(message)
            if self._finished or self.recorder is None or self.writer is None:
                return self.out_dir if self._published and not self._in_child else None
            recorder, writer = self.recorder, self.writer
            if self._io is not None:
                self._io.uninstall()  # first: drains what is still on its way into the trace
            self._finished = True
            recorder._switch_off()
            self._restore_os_exit()
            with recorder._lock:
                stop_type = writer.type_id(16, "<recording stopped>")
                still_open = {"Return": {"return_value": {"kind": "Raw", "type_id": stop_type, "r": stopped_by}}}
                for _ in range(recorder.open_calls - 1):
                    writer.emit(still_open)
                if self.exit_status is None:
                    toplevel_value: dict[str, Any] = {"kind": "None", "type_id": 0}
                else:
                    int_type = writer.type_id(7, "int")
                    toplevel_value = {"kind": "Int", "type_id": int_type, "i": self.exit_status}
                if self.error_text is not None:  # the last Event, on the last step: "ended in error"
                    writer.emit(
                        {"Event": {"kind": _ERROR_EVENT, "metadata": "", "content": self.error_text}}
                    )
                writer.emit({"Return": {"return_value": toplevel_value}})
                try:
                    writer.close(self._metadata())
                except OSError as exc:
                    _active = None
                    self._save_failed(exc)
                    raise RecorderError(self._take_save_error()) from None
            _active = None
            try:
                self._publish()
            except OSError as exc:
                self._save_failed(exc, publishing=True)
                raise RecorderError(self._take_save_error()) from None
            self._published = True
            return self.out_dir

    def _save_failed(self, exc: OSError, publishing: bool = False) -> None:
        """The trace cannot be saved (a full disk, ...): remove what we made, keep the reason."""
        temp = self._temp_dir
        if self.writer is not None:
            self.writer.abandon()
        self._remove_temp_dir()
        what = "publishing" if publishing else "writing"
        self._save_error = (
            f"could not save the trace: {exc.strerror or exc} ({what} {str(temp)!r}); the partial "
            f"trace was removed and {str(self.out_dir)!r} was left as it was"
        )

    def _take_save_error(self) -> str:
        message, self._save_error = self._save_error or "could not save the trace", None
        return message

    def _recorder_failed(self, exc: Exception) -> None:
        """Called from inside a monitoring callback that failed; monitoring is already off."""
        global _active
        writer = self.writer
        if writer is not None and writer.write_error is not None and exc is writer.write_error:
            # Writing the trace failed (a full disk): not the program's business, and no bug of ours
            # to raise. Stop, free the disk, and let stop() (the CLI: at the end) say what happened.
            with self._finish_lock:
                if not self._finished:
                    self._finished = True
                    if self._io is not None:
                        self._io.uninstall()
                    self._restore_os_exit()
                    _active = None
                    self._save_failed(exc)
            return
        self.failure = exc
        message = f"timelapse recorder error: {type(exc).__name__}: {exc}"
        self.error_text = message
        try:
            self._finish(stopped_by="<recorder error>")
        except Exception as finish_exc:  # noqa: BLE001 - report both, never mask the original
            message += f" (and the trace could not be saved: {finish_exc})"
        if self.on_error == "continue":
            print(f"timelapse: {message}; the program goes on unrecorded", file=sys.stderr)
            return
        raise RecorderError(message) from exc

    def discard(self) -> None:
        """Stop recording and throw the partial trace away (the program never ran)."""
        global _active
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            if self._io is not None:
                self._io.uninstall()
            if self.recorder is not None:
                self.recorder._switch_off()
                self.recorder.release_signals()
            self._restore_os_exit()
            if self.writer is not None:
                self.writer.abandon()
            self._remove_temp_dir()
            _active = None

    def _publish(self) -> None:
        """Move the finished folder into place: the old trace (if any) is replaced in one step, or,
        for a folder that cannot be renamed over, the files are moved into it."""
        temp, target = self._temp_dir, self.out_dir
        assert temp is not None
        old_trace = target.is_dir() and bool(_trace_entries(target))
        if old_trace and not is_trace_folder(target):
            self._release_temp_lock()  # what is in it is the user's to take: never cleaned up
            raise RecorderError(
                f"output folder {str(target)!r} was filled by something else while recording; "
                f"the trace is left in {str(temp)!r}"
            )
        if not self._in_place:
            try:
                _replace(temp, target, old_trace)
                self._release_temp_lock()
                return
            except OSError as exc:
                # A mount point (EBUSY, or EXDEV for some bind mounts), or a folder that became a
                # symlink: not to be renamed over. Anything else is a failure to save.
                if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.ENOTDIR):
                    raise
        _move_into(temp, target)
        self._release_temp_lock()

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "workdir": self.workdir,
            "program": self.program,
            "args": self.args,
            "recorder": {"name": "timelapse", "version": __version__},
            "python": {
                "version": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
            },
            "process_exit_status": self.exit_status,
            "start_time": self._started_at,
            "end_time": _now(),
        }
        if self.exit_signal is not None:
            metadata["exit_signal"] = self.exit_signal
        if self.failure is not None:
            metadata["recorder_error"] = f"{type(self.failure).__name__}: {self.failure}"
        recorder = self.recorder
        if recorder is not None and recorder.tool_lost:
            metadata["recorder_error"] = (
                "the program freed timelapse's sys.monitoring tool id: recording stopped there")
        if recorder is not None and recorder.lost_for_memory:
            metadata["events_lost_for_memory"] = recorder.lost_for_memory
        return metadata

    def summary(self) -> str:
        """One line for the end of a CLI run: what was recorded and where."""
        steps = self.recorder.steps if self.recorder else 0
        calls = self.recorder.calls if self.recorder else 0
        size = sum(f.stat().st_size for f in self.out_dir.rglob("*") if f.is_file())
        # Relative to the working directory at the start (where the user typed the command).
        return f"timelapse: {steps:,} steps, {calls:,} calls → {self._shown_out}{os.sep} ({_human_size(size)})"


def _replace(temp: Path, target: Path, old_trace: bool) -> None:
    """Rename ``temp`` to ``target``; an old trace there is set aside first and put back on failure."""
    if not old_trace:
        os.rename(temp, target)  # replaces an empty folder atomically
        return
    old = temp.with_name(temp.name + ".old")
    os.rename(target, old)
    try:
        os.rename(temp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _move_into(temp: Path, target: Path) -> None:
    """Publish into ``target`` itself (a mount point, a symlink's folder): the old trace's files are
    set aside inside it, the new ones moved in; on failure the old ones are put back."""
    old = target / (temp.name + ".old")
    old.mkdir()
    for entry in _trace_entries(target):
        os.rename(entry, old / entry.name)
    moved: list[Path] = []
    try:
        for entry in sorted(temp.iterdir()):
            moved.append(target / entry.name)
            shutil.move(entry, target / entry.name)  # a rename, or a copy across file systems
    except OSError:
        for path in moved:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
        for entry in old.iterdir():
            os.rename(entry, target / entry.name)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(temp, ignore_errors=True)


def _guess_program() -> str:
    """The program's path for an API recording: ``__main__.__file__``, read from the module's dict
    (``getattr`` could reach a module-level ``__getattr__`` of the program)."""
    main = sys.modules.get("__main__")
    path = vars(main).get("__file__") if type(main) is ModuleType else None
    return path if type(path) is str else (sys.argv[0] or "<python>")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


# Saving the trace is a section: a signal that lands in it waits until the trace is saved.
deferral.add_section(Session._finish, holds_lock=False)

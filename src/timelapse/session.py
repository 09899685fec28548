"""A recording session: one trace folder, from ``start()`` to ``stop()``.

The session owns the pieces (writer, encoder, scope, recorder) and the folder's life cycle. The trace is
written into a hidden sibling folder and moved into place only when it is complete, so the output folder
always holds a complete trace or is left as it was. A folder that is not a timelapse trace is never
overwritten.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
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
from timelapse.iocapture import IOCapture
from timelapse.monitor import Recorder
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

_ERROR_EVENT = 11
#: The deepest max_depth: each level is two levels of JSON nesting, and readers stop at a few hundred.
MAX_DEPTH_LIMIT = 100
_active: Session | None = None
_active_lock = threading.Lock()


def _after_fork_in_child() -> None:
    if _active is not None:
        _active._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
        if any(target.iterdir()) and not is_trace_folder(target):
            raise RecorderError(
                f"output folder {str(out_dir)!r} exists and is not a timelapse trace; "
                "not overwriting it (choose another folder with -o)"
            )
    return target


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
        self._fault = _fault
        #: Set by the CLI: the exit status and, for an uncaught exception, its traceback text.
        self.exit_status: int | None = None
        self.exit_signal: int | None = None
        self.error_text: str | None = None
        self.recorder: Recorder | None = None
        self.writer: TraceWriter | None = None
        self.failure: BaseException | None = None
        self._temp_dir: Path | None = None
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
                self.out_dir.parent.mkdir(parents=True, exist_ok=True)
                self._temp_dir = Path(
                    tempfile.mkdtemp(
                        prefix=f".{self.out_dir.name}.", suffix=".recording", dir=self.out_dir.parent
                    )
                )
            except OSError as exc:
                raise RecorderError(
                    f"cannot write output folder {str(self.out_dir)!r}: {exc.strerror or exc}"
                ) from None
            self._started_at = _now()
            self.writer = TraceWriter(self._temp_dir, self.program)
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
                self.writer.abandon()
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                raise
            self._finish_before_os_exit()
            _active = self
        return self

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

    def _forget_in_child(self) -> None:
        """After fork(), in the child: the trace belongs to the parent; record and write nothing."""
        global _active
        self._finished = True
        if self.recorder is not None:
            self.recorder.forget_in_child()
        if self.writer is not None:
            self.writer.detach()
        _active = None

    def stop(self) -> Path | None:
        """Stop recording and publish the trace folder; returns it. Safe to call more than once."""
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
        """Switch monitoring off, close every open call, write the side files, publish the folder."""
        global _active
        with self._finish_lock:
            if self._finished or self.recorder is None or self.writer is None:
                return None if self.recorder is None else self.out_dir
            recorder, writer = self.recorder, self.writer
            if self._io is not None:
                self._io.uninstall()  # first: drains what is still on its way into the trace
            self._finished = True
            recorder._switch_off()
            self._restore_os_exit()
            with recorder._lock:
                stop_type = writer.type_id(16, "<recording stopped>")
                still_open = {"Return": {"return_value": {"kind": "Raw", "type_id": stop_type, "r": stopped_by}}}
                open_calls = writer.count_open_calls() if recorder.interrupted else recorder.open_calls
                for _ in range(open_calls - 1):
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
                writer.close(self._metadata())
            _active = None
            self._publish()
            return self.out_dir

    def _recorder_failed(self, exc: Exception) -> None:
        """Called from inside a monitoring callback that failed; monitoring is already off."""
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
            self._restore_os_exit()
            if self.writer is not None:
                self.writer.abandon()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            _active = None

    def _publish(self) -> None:
        """Move the finished folder into place: the old trace (if any) is replaced in one step."""
        temp, target = self._temp_dir, self.out_dir
        assert temp is not None
        if target.is_dir() and any(target.iterdir()):
            if not is_trace_folder(target):
                raise RecorderError(
                    f"output folder {str(target)!r} was filled by something else while recording; "
                    f"the trace is left in {str(temp)!r}"
                )
            old = temp.with_name(temp.name + ".old")
            os.rename(target, old)
            os.rename(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, target)  # replaces an empty folder atomically

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "workdir": os.getcwd(),
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
        return metadata

    def summary(self) -> str:
        """One line for the end of a CLI run: what was recorded and where."""
        steps = self.recorder.steps if self.recorder else 0
        calls = self.recorder.calls if self.recorder else 0
        size = sum(f.stat().st_size for f in self.out_dir.rglob("*") if f.is_file())
        shown = os.path.relpath(self.out_dir) if not os.path.relpath(self.out_dir).startswith("..") else str(self.out_dir)
        return f"timelapse: {steps:,} steps, {calls:,} calls → {shown}{os.sep} ({_human_size(size)})"


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

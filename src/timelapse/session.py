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

import dataclasses
import datetime
import errno
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
from typing import Any, Unpack

from timelapse._version import __version__
from timelapse.activation import Activation
from timelapse import children
from timelapse.children import Member
from timelapse.config import Loaded, Options, OptionValues, load
from timelapse.encoder import ValueEncoder
from timelapse.json_format import JSON
from timelapse.errors import RecorderError
from timelapse.redact import REDACTED, IORedactor, Redactor
from timelapse.interrupts import deferral
from timelapse.iocapture import IOCapture
from timelapse.monitor import Recorder
from timelapse.process import ProcessHooks
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

try:
    import fcntl
except ImportError:  # not on Windows: no locks, and leftovers of killed runs are never cleaned
    fcntl = None  # type: ignore[assignment]

_active: Session | None = None
_active_lock = threading.Lock()


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


def _set_fields(options: Options) -> dict[str, Any]:
    """The fields of ``options`` that differ from the defaults: what a caller's Options sets."""
    defaults = Options()
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(Options)
            if getattr(options, f.name) != getattr(defaults, f.name)}


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
    """One recording into one trace folder. Use ``timelapse.start()`` or ``timelapse.record()``.

    ``out_dir``: the trace folder to write (checked now: a folder that is not a trace is refused with
    RecorderError). ``program``, ``args``: the trace's metadata (default: ``__main__``'s file and
    ``sys.argv[1:]``). The recording options are keyword arguments (``max_depth=3``, ...), or an
    ``Options`` (``options=``) that keyword arguments override; see ``timelapse.config.Options``.
    They are the last layer over the environment (``TIMELAPSE_*``) and the configuration file
    (``[tool.timelapse]`` in the nearest pyproject.toml; ``config=`` names another, ``config=False``
    reads none): see ``timelapse.config.load``. ``out_dir`` is the ``out`` option (default
    ``trace-out``). A bad option is an ``OptionError`` (a ValueError), an unknown one a TypeError.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        program: str | None = None,
        args: list[str] | None = None,
        options: Options | None = None,
        config: str | os.PathLike[str] | bool | None = None,
        _loaded: Loaded | None = None,
        _fault: Callable[[CodeType, int], None] | None = None,
        _member: Member | None = None,
        **option_values: Unpack[OptionValues],
    ) -> None:
        if _loaded is None:
            # The API is the last layer: what the caller set (in ``options`` or as keywords) over
            # the environment, over the configuration file (``config``: see config.load).
            given: dict[str, Any] = _set_fields(options) if options is not None else {}
            given.update(option_values)
            if out_dir is not None:
                given["out"] = out_dir
            _loaded = load(given, given_by="API", config=config)
        #: The effective options and where each came from (recorded in the metadata).
        self.loaded = _loaded
        self.options = _loaded.options
        self.out_dir = check_out_dir(self.options.out)
        # Read now: the program may change or delete its working directory before the end.
        self.workdir = os.getcwd()
        relative = os.path.relpath(self.out_dir)
        self._shown_out = str(self.out_dir) if relative.startswith("..") else relative
        program = program if program is not None else _guess_program()
        # "<string>" (python -c, under TIMELAPSE_RECORD) names no file: kept as Python names it.
        self.program = program if program.startswith("<") else os.path.abspath(program)
        self.args = list(args) if args is not None else sys.argv[1:]
        self._io: IOCapture | None = None
        #: The recording's secret names and forms, and what cuts them out of IO events (None:
        #: redaction is off).
        self._redactor: Redactor | None = None
        self._io_redactor: IORedactor | None = None
        #: os._exit, os.exec* and fork() while recording (timelapse.process).
        self._hooks: ProcessHooks | None = None
        #: Set by the CLI (process.ProgramEnd): called instead of finishing before os.exec*.
        self.before_exec: Callable[[], None] | None = None
        self._fault = _fault
        #: Set by the CLI: the exit status and, for an uncaught exception, its traceback text.
        self.exit_status: int | None = None
        self.exit_signal: int | None = None
        self.error_text: str | None = None
        self.recorder: Recorder | None = None
        self.writer: _SessionWriter | None = None
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
        #: Its place among the recordings of a process and its children (timelapse.children): a
        #: child's from the start, the root's made in start() when ``children`` is on.
        self._member = _member
        #: The frames below the program's (start's base_depth): a fork child records with them too.
        self.base_depth = 0
        #: More keys for trace_metadata.json, written as they are (JSON-shaped values) when the
        #: trace is saved; the session's own keys win. The pytest plugin writes ``"test"`` here.
        self.extra_metadata: dict[str, Any] = {}
        # Re-entrant: a failure while saving (a write error draining the IO capture) reports into
        # this thread's own finish. The outermost lock of a recording (timelapse.process).
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
            # Before anything is made: a bad include/exclude pattern is refused here (PatternError).
            scope = Scope(self.options.exclude_files, include=self.options.include,
                          exclude=self.options.exclude, main=self.program, cwd=self.workdir)
            # Likewise an activation_path naming no file (ActivationError).
            activation = None
            if self.options.record_only or self.options.activation_path is not None:
                activation = Activation(scope, self.options.record_only, self.options.activation_path,
                                        cwd=self.workdir)
            try:
                self._make_temp_dir()
            except OSError as exc:
                raise RecorderError(
                    f"cannot write output folder {str(self.out_dir)!r}: {exc.strerror or exc}"
                ) from None
            if self.options.children:
                try:
                    self._join_family()
                except OSError as exc:
                    self._remove_temp_dir()
                    raise RecorderError(f"cannot record child processes: {exc.strerror or exc}") from None
            self.base_depth = base_depth
            self._started_at = _now()
            options = self.options
            # The one place the trace format is chosen: the writer spells the events with it (and
            # frames the file), the encoder the values.
            if options.format == "bin":
                # imported when used: start-up (a trace.json recording needs neither it nor cbor2)
                from timelapse.cbor_format import BIN as fmt
            else:
                fmt = JSON
            try:
                self.writer = _SessionWriter(self._temp_dir, self.program, fmt=fmt)
            except ImportError as exc:  # pyzstd or cbor2 (cbor_format.SeekableFrames) is not installed
                self._remove_temp_dir()
                raise RecorderError(f"trace.bin (--format bin, the default) needs the {exc.name} package: "
                                    f"pip install {exc.name}, or record trace.json with --format json"
                                    ) from None
            # Secrets (docs/redaction.md): by name and form in values, by form in IO.
            redactor = self._redactor = (
                Redactor(options.redact_names, options.redact_patterns) if options.redact else None)
            self._io_redactor = redactor.io() if redactor is not None else None
            if self._io_redactor is not None:
                self.writer.redact_io = self._io_redactor.redact
            encoder = ValueEncoder(self.writer.type_id, max_depth=options.max_depth,
                                   max_items=options.max_items, max_string=options.max_string,
                                   max_nodes=options.max_nodes, spelling=self.writer.format.values,
                                   redactor=redactor)
            self.recorder = Recorder(
                self.writer,
                encoder,
                scope,
                on_failure=self._recorder_failed,
                fault=self._fault,
                activation=activation,
            )
            try:
                self.recorder.start(caller, base_depth)
                if options.capture_io:
                    self._io = IOCapture(self.recorder.io_event, capture_fd=options.records_fd)
                    self._io.install()
            except BaseException:
                if self._io is not None:
                    self._io.uninstall()
                self.recorder.stop()
                self.recorder.release_signals()
                self.writer.abandon()
                self._remove_temp_dir()
                raise
            self._hooks = ProcessHooks(self)
            self._hooks.install()
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
        self._leave_family()

    def _join_family(self) -> None:
        """``children``: a root makes the family's staging folder; then both tell the process's
        future children where to record (timelapse.children)."""
        if self._member is None:
            assert self._temp_dir is not None
            values = self.options.values()
            if values["activation_path"]:  # the children's working directory may be another
                values["activation_path"] = os.path.join(self.workdir, values["activation_path"])
            self._member = Member.make_root(self._temp_dir, self.out_dir, values)
        self._member.export()

    def _leave_family(self) -> None:
        if self._member is not None:
            self._member.leave()

    def _release_temp_lock(self) -> None:
        fd, self._temp_lock = self._temp_lock, None
        if fd is not None:
            os.close(fd)

    def _deactivate(self) -> None:
        """This session no longer records in this process: ``os._exit`` and ``os.exec*`` are
        Python's own again, a fork no longer concerns it, and another session may start."""
        global _active
        if self._hooks is not None:
            self._hooks.remove()
        if _active is self:
            _active = None

    def forget_in_child(self) -> None:
        """After fork(), in the child (timelapse.process): the trace belongs to the parent; record
        and write nothing, take none of its locks."""
        self._finished = True
        self._in_child = True
        if self.recorder is not None:
            self.recorder.forget_in_child()
        if self.writer is not None:
            self.writer.detach()
        # The lock on the hidden folder is the parent's: the child's copy of the descriptor must not
        # keep it held after the parent is gone.
        self._release_temp_lock()
        if self._member is not None:
            self._member.forget_in_child()
        self._deactivate()

    def stop(self) -> Path | None:
        """Stop recording and publish the trace folder; returns it, or None if there is nothing (more)
        to publish. Safe to call more than once. RecorderError if the trace could not be saved (a
        full disk: nothing is left of it, and the output folder is as it was)."""
        try:
            return self.finish()
        finally:
            # A signal that landed while the trace was saved waited for it (finish is a section): its
            # handler runs now, here, as if the signal had come right after stop(). Not if stop() is
            # itself inside a section (the CLI's end of the process), which then runs it on its way
            # out; never left queued for a later recording.
            deferral.run_pending()

    def __enter__(self) -> Session:
        if self.recorder is None:
            self.start(sys._getframe(1))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def recording(self) -> bool:
        """True from ``start()`` until recording stops (``stop()``, a recorder failure, ...)."""
        return self.recorder is not None and self.recorder.active

    @property
    def finished(self) -> bool:
        """True once the trace is saved, given up, or (in a fork child) the parent's."""
        return self._finished

    # -- ending ------------------------------------------------------------------------------------

    def finish(self, stopped_by: str = "<recording stopped>") -> Path | None:
        """``stop()``, giving the calls still open a Return of ``stopped_by`` (timelapse.process:
        ``<os._exit>``, ``<os.exec>``). Switches monitoring off, writes the end of the stream and the
        side files, publishes the folder.

        A section (timelapse.interrupts): a signal's handler that lands in here waits until the trace
        is saved (a second Ctrl-C, a SIGTERM), then runs. Lock order (timelapse.process): this
        session's finish lock, then the IO capture's, then the recorder's — never the other way round.
        """
        if self._in_child:
            return None  # the finish lock may be held for ever by a thread the child does not have
        try:
            return self._finish_now(stopped_by)
        finally:
            if self.recorder is not None and self._finished and not self._in_child:
                self.recorder.release_signals()

    def _finish_now(self, stopped_by: str) -> Path | None:
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
            recorder.stop()
            recorder.end_stream(stopped_by, self.exit_status, self.error_text)
            try:
                writer.close(self._metadata())
            except OSError as exc:
                self._deactivate()
                self._save_failed(exc)
                raise RecorderError(self._take_save_error()) from None
            self._deactivate()
            try:
                self._publish()
            except OSError as exc:
                self._save_failed(exc, publishing=True)
                raise RecorderError(self._take_save_error()) from None
            finally:
                self._leave_family()   # however publishing went (a RecorderError too)
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
        writer = self.writer
        if writer is not None and writer.write_error is not None and exc is writer.write_error:
            # Writing the trace failed (a full disk): not the program's business, and no bug of ours
            # to raise. Stop, free the disk, and let stop() (the CLI: at the end) say what happened.
            with self._finish_lock:
                if not self._finished:
                    self._finished = True
                    if self._io is not None:
                        self._io.uninstall()
                    self._deactivate()
                    self._save_failed(exc)
            return
        self.failure = exc
        message = f"timelapse recorder error: {type(exc).__name__}: {exc}"
        self.error_text = message
        try:
            self.finish(stopped_by="<recorder error>")
        except Exception as finish_exc:  # noqa: BLE001 - report both, never mask the original
            message += f" (and the trace could not be saved: {finish_exc})"
        if self.options.on_error == "continue":
            print(f"timelapse: {message}; the program goes on unrecorded", file=sys.stderr)
            return
        raise RecorderError(message) from exc

    def discard(self) -> None:
        """Stop recording and throw the partial trace away (the program never ran)."""
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            if self._io is not None:
                self._io.uninstall()
            if self.recorder is not None:
                self.recorder.stop()
                self.recorder.release_signals()
            self._deactivate()
            if self.writer is not None:
                self.writer.abandon()
            self._remove_temp_dir()

    def _publish(self) -> None:
        """Move the finished folder into place: the old trace (if any) is replaced in one step, or,
        for a folder that cannot be renamed over, the files are moved into it. In a family of
        recordings (children), under its lock, into the place it says."""
        member = self._member
        if member is None:
            self._publish_into(self.out_dir)
            return
        with member.saving() as target:
            try:
                self._publish_into(target)
            except BaseException:
                member.saved(None, self.exit_status, self.exit_signal)
                raise
            self.out_dir = target
            member.saved(target, self.exit_status, self.exit_signal)

    def _publish_into(self, target: Path) -> None:
        temp = self._temp_dir
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
        redactor = self._redactor
        args, options = self.args, self.loaded.as_metadata()
        if redactor is not None:
            # The command line is redacted like IO (`--token=...`, a Bearer credential, the value
            # after `--password`), and redact_patterns are named, not shown: a pattern may be the
            # very secret it hides.
            args = redactor.redact_args(args)
            options["values"]["redact_patterns"] = [REDACTED] * len(options["values"]["redact_patterns"])
        metadata: dict[str, Any] = {
            "workdir": self.workdir,
            "program": self.program,
            "args": args,
            "recorder": {"name": "timelapse", "version": __version__},
            "python": {
                "version": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
            },
            "options": options,
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
        if recorder is not None and recorder.activation is not None:
            metadata["activations"] = recorder.activations  # record_only / activation_path
        if self._member is not None:
            metadata.update(self._member.metadata())   # parent, children
        if recorder is not None and redactor is not None:
            # Redacted records in Value, Call (its arguments, written there only) and Return events
            # (reused ones counted at each step they are in), and secrets cut out of IO and
            # exception Events and of the arguments above.
            metadata["redacted"] = {"values": recorder.encoder.redactions,
                                    "in_events": redactor.cut}
        for key, value in self.extra_metadata.items():
            metadata.setdefault(key, value)
        return metadata

    def summary(self) -> str:
        """One line for the end of a CLI run: what was recorded and where."""
        steps = self.recorder.steps if self.recorder else 0
        calls = self.recorder.calls if self.recorder else 0
        size = sum(f.stat().st_size for f in self.out_dir.rglob("*") if f.is_file())
        # Relative to the working directory at the start (where the user typed the command).
        gated = self.recorder is not None and self.recorder.activation is not None
        count = self.recorder.activations if gated else 0
        activations = f", {count:,} activation{'' if count == 1 else 's'}" if gated else ""
        if self._member is not None and self._member.last_listing:
            count = len(self._member.last_listing)
            activations += f", {count:,} child process{'' if count == 1 else 'es'}"
        return (f"timelapse: {steps:,} steps, {calls:,} calls{activations} → {self._shown_out}{os.sep} "
                f"({_human_size(size)})")


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
deferral.add_section(Session.finish, holds_lock=False)


# -- fork(): a child in a family of recordings records itself (timelapse.children) -------------------

#: The recording the forking thread's fork() lets go of: what its child records with.
_forked_from = threading.local()


def _before_fork() -> None:
    session = _active
    _forked_from.session = (session.program, session.args, session.base_depth) if session is not None else None


def _after_fork_in_child() -> None:
    # After process._after_fork_in_child (registered first), which let go of the parent's recording.
    global _active_lock
    _active_lock = threading.Lock()  # another thread of the parent may have held it
    forked = getattr(_forked_from, "session", None)
    _forked_from.session = None
    caller = sys._getframe(1)
    if caller is not None and caller.f_code.co_name == "_execute_child" and \
            caller.f_code.co_filename.endswith("subprocess.py"):
        return  # subprocess's own fork (preexec_fn): it execs at once; the new image records itself
    program, args, base_depth = forked if forked is not None else (None, sys.argv[1:], 0)
    children.record_fork_child(caller, program, args, base_depth)


def _after_fork_in_parent() -> None:
    _forked_from.session = None


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


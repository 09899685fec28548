"""Child processes: with the ``children`` option, every Python process a recording starts records
itself into a trace of its own (docs/children.md is the user's side).

The layout
----------
The recording's folder DIR holds its own trace; its children's traces end in
``DIR/children/<pid>-<n>/``. Flat: a grandchild's folder sits beside its parent's, and every trace
names its parent (``parent`` in its metadata) and lists its own children (``children``). ``n``
counts the traces of one pid in one family (``os.exec*`` in a child is the same pid, and a long
run may reuse a pid), so no two processes ever publish into the same folder.

Where children publish while the parent runs
--------------------------------------------
DIR does not exist until the root recording is saved (one rename, session.py), and that rename
must not move a folder a child is still writing. So the family has a *staging* folder, hidden
beside the root's own hidden folder (``.DIR.<token>.children.recording``), that never moves:

- every recording of the family holds a shared ``flock`` on it while it runs; a family that was
  killed leaves it unlocked, and the next recording into DIR removes it like any other leftover;
- saving is serialized by an exclusive ``flock`` on its ``lock`` file. The root publishes DIR,
  moves the children published so far into ``DIR/children/`` and writes ``published``; a child
  saved after that sees the note and publishes straight into ``DIR/children/``. The last one out
  (the note there, no shared lock left) removes the staging folder;
- each child's entry ``<parent>~<pid>-<n>.json`` there (``root~`` for the root's children) says
  how it started (its command line, redacted) and, once it is saved, how it ended (its exit
  status). A trace's ``children`` are read from its own children's entries when it is saved,
  again right after it is published (under the lock), and a child saved after its parent merges
  its own ending into the parent's ``trace_metadata.json`` (rewritten whole, in one rename);
- a child that starts after the last one out removed the folder makes it again (whole: made
  under another name, then renamed), only if DIR still holds its run's trace: the root's
  metadata names the family (``family``, the staging folder's name), so a late child of an old run
  never lands in a new run's folder.

How a child learns it is one
----------------------------
``TIMELAPSE_PARENT`` (``VARIABLE``), JSON: the root folder, the staging folder, the parent, the
options. It is in ``os.environ`` while a recording with children runs, so every process started
meanwhile inherits it. A new interpreter (``subprocess``, multiprocessing's spawn and forkserver)
runs the startup hook (``timelapse-record.pth`` → autostart.py), which records it; ``os.fork()``
(also multiprocessing's fork) goes on in this interpreter, and ``record_fork_child`` (session.py's
fork hook) starts the child's recording right where the fork returns. multiprocessing's own
helper processes (its resource tracker, its fork server) are not recorded; the fork server's
children are. Nothing here runs program code; what goes wrong is one line on stderr and the child
runs unrecorded, printing nothing (its output is the program's): a child that had joined is
``not recorded`` in its parent's list, with the reason. subprocess's own fork (``preexec_fn``,
which runs between its fork and its exec) is not a child: the program it execs is.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from timelapse.config import Loaded

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: children are not recorded there
    fcntl = None  # type: ignore[assignment]

__all__ = ["VARIABLE", "Context", "Member", "from_environ", "record_fork_child"]

#: The variable a recording with children puts in ``os.environ`` for its children.
VARIABLE = "TIMELAPSE_PARENT"
#: Where the children's traces end, inside the root's folder.
CHILDREN = "children"
_LOCK, _PUBLISHED, _ENDED = "lock", "published", "ended"
#: multiprocessing's helper processes (``python -c 'from multiprocessing.X import main; ...'``):
#: its machinery, not the program's.
_HELPERS = {"from multiprocessing.resource_tracker import": "resource tracker",
            "from multiprocessing.forkserver import": "fork server"}


class Member:
    """One recording's place in a family: the root (``trace == "."``) or a child.

    ``root``: the root's trace folder (DIR); ``staging``: the family's staging folder; ``trace``:
    this recording's folder relative to ``root`` (``.`` or ``children/<pid>-<n>``); ``parent``: for
    a child, who started it (``pid``, ``trace``, ``command``); ``options``: the recording options,
    as JSON values, that this member's children record with.
    """

    def __init__(self, root: Path, staging: Path, trace: str, parent: dict[str, Any] | None,
                 options: dict[str, Any], lock_fd: int | None) -> None:
        self.root, self.staging, self.trace, self.parent = root, staging, trace, parent
        self.options = options
        #: The family's name (its staging folder's), in the root's metadata: a child that ends
        #: after the root publishes only into a root folder that still holds this family's trace.
        self.token = staging.name
        #: Secrets cut out of command lines (set from the recording's redaction options).
        self.redact: Callable[[list[str]], list[str]] = _redactor_for(options)
        self._lock_fd = lock_fd       # the shared flock on the staging folder, while recording
        self._previous: str | None = None
        self._exported = False
        #: The listing last written into this member's metadata.
        self.last_listing: list[dict[str, Any]] = []

    # -- making members ------------------------------------------------------------------------

    @classmethod
    def make_root(cls, temp_dir: Path, out_dir: Path, options: dict[str, Any]) -> Member:
        """The root of a new family: its staging folder beside the root's hidden folder."""
        if fcntl is None:
            raise OSError("recording child processes needs a POSIX system (Linux, macOS)")
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".children.starting",
                                        dir=temp_dir.parent))
        fd = os.open(staging, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        (staging / _LOCK).touch()
        final = staging.with_name(staging.name[: -len(".starting")] + ".recording")
        os.rename(staging, final)   # under a name leftovers are looked for in only once locked
        return cls(out_dir, final, ".", None, options, fd)

    @property
    def name(self) -> str:
        """This member's folder name (``<pid>-<n>``; ``.`` for the root)."""
        return os.path.basename(self.trace)

    @property
    def key(self) -> str:
        """The prefix of its children's entries in the staging folder (``root~``, ``<pid>-<n>~``):
        a member reads its own children's entries only, not the whole family's."""
        return "root" if self.trace == "." else self.name

    @property
    def out_dir(self) -> Path:
        """Where this child's recording writes (its session's out): the staging folder's entry."""
        return self.staging / self.name

    def metadata(self) -> dict[str, Any]:
        """The member's keys in its trace_metadata.json: ``parent`` (for a child) and ``children``."""
        data: dict[str, Any] = {}
        if self.parent is not None:
            parent = dict(self.parent)
            parent["trace"] = _relative(self.root / parent["trace"], self.root / self.trace)
            data["parent"] = parent
        else:
            data["family"] = self.token
        data[CHILDREN] = self.last_listing = self.listing()
        return data

    def listing(self) -> list[dict[str, Any]]:
        """This member's own children, as their entries say now, oldest first."""
        children = [self._shown(entry) for entry in _entries(self.staging, f"{self.key}~")]
        return sorted(children, key=lambda c: (c["started_at"], c["trace"]))

    def _shown(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A child's entry as this member's listing shows it."""
        shown = {"pid": entry["pid"], "command": entry["command"], "start": entry["start"],
                 "trace": _relative(self.root / CHILDREN / entry["name"], self.root / self.trace),
                 "started_at": entry["started_at"]}
        if "ended_at" in entry:
            state = entry.get("state") or ("saved" if entry["saved"] else "not saved")
            shown.update(state=state, exit_status=entry["exit_status"], exit_signal=entry["exit_signal"],
                         ended_at=entry["ended_at"])
            if "reason" in entry:
                shown["reason"] = entry["reason"]
        else:
            shown.update(state=self._state_of(entry["name"]), exit_status=None, exit_signal=None)
        return shown

    def _state_of(self, name: str) -> str:
        """A child with no ending yet: still ``running``, or ``lost`` (killed: its hidden folder,
        or its entry, is no longer locked by anybody)."""
        for hidden in self.staging.glob(f".{name}.*.recording"):
            fd = _try_lock(hidden, exclusive=True)
            if fd is None:
                return "running"
            os.close(fd)
            return "lost"
        return "running"  # starting: its hidden folder is not made yet

    # -- the variable ----------------------------------------------------------------------------

    def export(self) -> None:
        """Tell this process's future children about the family (until ``leave``)."""
        value = json.dumps({
            "root": str(self.root), "staging": str(self.staging), "options": self.options,
            "parent": {"pid": os.getpid(), "trace": self.trace, "command": self.redact(_command())},
            "token": self.token,
        })
        self._previous = os.environ.get(VARIABLE)
        os.environ[VARIABLE] = value
        self._exported = True

    def _unexport(self) -> None:
        if not self._exported:
            return
        self._exported = False
        if self._previous is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = self._previous

    # -- saving ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def saving(self) -> Iterator[Path]:
        """Publish under the family's lock: yields the folder to publish into (``DIR`` for the
        root; for a child, its folder in staging, or in ``DIR/children`` once the root is
        published). The caller publishes there and then calls ``saved``."""
        with self._locked():
            if self.trace == ".":
                yield self.root
            elif (self.staging / _PUBLISHED).exists():
                if _token_of(self.root) != self.token:
                    raise FileNotFoundError(f"{self.root} now holds another recording: this child's "
                                            f"trace has nowhere to go")
                (self.root / CHILDREN).mkdir(exist_ok=True)
                yield self.root / self.trace
            else:
                yield self.out_dir

    def saved(self, folder: Path | None, exit_status: int | None, exit_signal: int | None) -> None:
        """Inside ``saving``: this recording is published in ``folder`` (None: it could not be
        saved). Its ending goes into its entry and its parent's listing; the root adopts the
        children published so far; every published trace's own listing is brought up to date."""
        if self.parent is not None:
            self._end_entry(saved=folder is not None, exit_status=exit_status, exit_signal=exit_signal)
        if self.trace == "." and folder is not None:
            children = self.root / CHILDREN
            for published in sorted(self.staging.iterdir()):
                if published.is_dir() and not published.name.startswith("."):
                    children.mkdir(exist_ok=True)
                    os.rename(published, children / published.name)
            (self.staging / _PUBLISHED).write_text(str(self.root), encoding="utf-8")
        if folder is not None:
            self.last_listing = self.listing()
            _update_listing(folder, self.last_listing)

    def _end_entry(self, **ending: Any) -> None:
        """Write this child's ending into its entry, and into its parent's listing if the parent's
        trace is published already (merged: the listing there may hold more than staging does)."""
        entry_path = self._entry_path()
        entry = _read(entry_path)
        if entry is None:
            return
        entry.update(ending, ended_at=_now())
        _write_json(entry_path, entry)
        assert self.parent is not None
        parent_folder = self._published_folder(self.parent["trace"])
        if parent_folder is not None:
            _update_listing(parent_folder, [self._member_for(self.parent["trace"])._shown(entry)])

    def _entry_path(self) -> Path:
        assert self.parent is not None
        parent_key = "root" if self.parent["trace"] == "." else os.path.basename(self.parent["trace"])
        return self.staging / f"{parent_key}~{self.name}.json"

    def not_recorded(self, reason: str) -> None:
        """This child joined but its recording could not start: its entry says so (``state``
        ``not recorded``), and it leaves."""
        try:
            with self._locked():
                self._end_entry(saved=False, state="not recorded", reason=reason,
                                exit_status=None, exit_signal=None)
        except OSError:
            pass
        self.leave()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.staging / _LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _member_for(self, trace: str) -> Member:
        return Member(self.root, self.staging, trace, None, self.options, None)

    def _published_folder(self, trace: str) -> Path | None:
        """Where the trace ``trace`` (relative to the root) is published now, if it is."""
        if (self.staging / _PUBLISHED).exists() and (self.root / trace / "trace_metadata.json").exists():
            return self.root / trace
        in_staging = self.staging / os.path.basename(trace)
        if trace != "." and (in_staging / "trace_metadata.json").exists():
            return in_staging
        return None

    def leave(self) -> None:
        """This recording is over (saved, failed or discarded): no more children are told about
        it, its shared lock goes, and the last one out of a family whose root has ended removes
        the staging folder (with what is left in it: if the root's trace could not be saved, its
        children's are not kept either)."""
        self._unexport()
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        os.close(fd)
        try:
            lock = os.open(self.staging / _LOCK, os.O_RDWR)
        except OSError:
            return  # removed already
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.trace == ".":
                (self.staging / _ENDED).touch()
            if (self.staging / _ENDED).exists():
                nobody = _try_lock(self.staging, exclusive=True)
                if nobody is not None:
                    # Out of the way first, the probe still held: a child about to join (waiting
                    # for its shared lock) then finds no folder by that name, never a half-removed one.
                    gone = self.staging.with_name(self.staging.name.replace(".children.", ".removed."))
                    try:
                        os.rename(self.staging, gone)
                    except OSError:
                        gone = self.staging
                    os.close(nobody)
                    shutil.rmtree(gone, ignore_errors=True)
        finally:
            os.close(lock)

    def forget_in_child(self) -> None:
        """After fork(), in the child: the parent's membership is the parent's (its lock stays
        with it); the child's own, if it records, is made anew."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
        self._exported = False


# -- a child's side --------------------------------------------------------------------------------

class Context:
    """What ``VARIABLE`` says: the family this process was started in."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.root = Path(data["root"])
        self.staging = Path(data["staging"])
        self.parent: dict[str, Any] = dict(data["parent"])
        self.options: dict[str, Any] = dict(data["options"])
        self.token: str = data.get("token", self.staging.name)

    def join(self, start: str) -> Member:
        """Become a child of the family (``start``: ``"exec"`` or ``"fork"``): its entry, its
        folder name and its shared lock. OSError if the family is gone."""
        if fcntl is None:
            raise OSError("recording child processes needs a POSIX system (Linux, macOS)")
        fd = self._lock_staging()
        try:
            parent_key = "root" if self.parent["trace"] == "." else os.path.basename(self.parent["trace"])
            pid, n = os.getpid(), 1
            while True:  # the first free name: a marker file per name, made exclusively
                name = f"{pid}-{n}"
                try:
                    marker = os.open(self.staging / f".{name}.name", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    n += 1
                    continue
                os.close(marker)
                if (self.root / CHILDREN / name).exists():   # a staging folder made again
                    n += 1
                    continue
                break
            member = Member(self.root, self.staging, f"{CHILDREN}/{name}", self.parent, self.options, fd)
            member.token = self.token
            _write_json(self.staging / f"{parent_key}~{name}.json", {
                "name": name, "pid": pid, "command": member.redact(_command()), "start": start,
                "started_at": _now(), "parent": {"pid": self.parent["pid"], "trace": self.parent["trace"]},
            })
        except BaseException:
            os.close(fd)
            raise
        return member


    def loaded(self, out: Path, *, fork: bool) -> Loaded:
        """The child's options: its parent's, into ``out``; a failure of the recorder is reported
        and the child runs on (nobody asked it to handle one). A fork child shares its parent's
        file descriptors, whose capture stays the parent's: only ``sys.stdout``/``stderr`` are its."""
        from timelapse.config import Loaded, Options

        values = dict(self.options)
        values.update(out=str(out), on_error="continue", children=True)
        if fork:
            values["capture_fd"] = False
        where = f"parent process ({self.parent['pid']})"
        return Loaded(Options.from_mapping(values), dict.fromkeys(values, where), None)

    def _lock_staging(self) -> int:
        """A shared lock on the staging folder. A child that starts after the family's last
        member left (and removed the folder: a shell that runs Python a moment later) makes it
        again, as published, if the root's trace is there: it still belongs in ``DIR/children``."""
        for _ in range(100):
            try:
                fd = os.open(self.staging, os.O_RDONLY)
            except FileNotFoundError:
                if _token_of(self.root) != self.token:
                    raise FileNotFoundError(f"its parent's recording is over: {self.root}") from None
                with contextlib.suppress(FileExistsError):
                    made = self.staging.with_name(self.staging.name + ".starting")
                    made.mkdir()
                    for note in (_LOCK, _PUBLISHED, _ENDED):
                        (made / note).touch()
                    try:
                        os.rename(made, self.staging)   # whole, or not at all
                    except OSError:
                        shutil.rmtree(made, ignore_errors=True)
                continue
            fcntl.flock(fd, fcntl.LOCK_SH)
            if (self.staging / _LOCK).exists():
                return fd
            os.close(fd)        # removed (or being made again) meanwhile: look again
            time.sleep(0.005)
        raise FileNotFoundError(f"its parent's recording is over: {self.root}")


def record_fork_child(caller: FrameType | None, program: str | None, args: list[str],
                      base_depth: int) -> None:
    """Right after fork(), in the child, once the parent's recording was let go: if the process is
    in a family, record the child from ``caller`` (the frame that called fork) on, into a trace
    of its own; the end of the process (``process.ProgramEnd``) is then the child's."""
    context = from_environ()
    if context is None:
        return
    from timelapse.process import ProgramEnd, program_end
    from timelapse.session import Session

    member = None
    try:
        member = context.join("fork")
        session = Session(program=program if program is not None else _main_file(), args=args,
                          _loaded=context.loaded(member.out_dir, fork=True), _member=member)
        session.start(caller, base_depth=base_depth)
    except Exception as exc:  # noqa: BLE001 - the child runs on, unrecorded
        if member is not None:
            member.not_recorded(f"{type(exc).__name__}: {exc}")
        not_recorded()
        return
    ending = program_end()
    if ending is not None:
        ending.adopt(session)   # the parent's: cli.main and atexit end this process through it
    else:
        ProgramEnd(session, quiet=True).install(sigterm=False)


def not_recorded() -> None:
    """A process of the family that is not recorded: neither are the processes it starts. Nothing
    is printed: the child's output is its own (a program may capture it); why it is not recorded
    is in its parent's listing (``state``, ``reason``) once it had joined."""
    os.environ.pop(VARIABLE, None)


def _main_file() -> str:
    """``__main__``'s file, read from its dict (no module ``__getattr__``), or ``<string>``."""
    main = sys.modules.get("__main__")
    path = vars(main).get("__file__") if main is not None else None
    return path if type(path) is str else "<string>"


def from_environ() -> Context | None:
    """The family this process was started in, if ``VARIABLE`` says so (and is ours)."""
    text = os.environ.get(VARIABLE)
    if not text:
        return None
    try:
        return Context(json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None


def helper(orig_argv: list[str]) -> str | None:
    """Which of multiprocessing's own helper processes this command line starts (``"resource
    tracker"``, ``"fork server"``), if it is one: they are not recorded."""
    try:
        code = orig_argv[orig_argv.index("-c") + 1].lstrip()
    except (ValueError, IndexError):
        return None
    return next((name for start, name in _HELPERS.items() if code.startswith(start)), None)


# -- helpers -----------------------------------------------------------------------------------------

def _command() -> list[str]:
    return list(getattr(sys, "orig_argv", sys.argv))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _try_lock(path: Path, exclusive: bool) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entries(staging: Path, prefix: str) -> Iterator[dict[str, Any]]:
    try:
        paths = sorted(staging.glob(f"{glob_escape(prefix)}*.json"))
    except OSError:
        return
    for path in paths:
        entry = _read(path)
        if entry is not None and "name" in entry:
            yield entry


def _write_json(path: Path, data: Any) -> None:
    """Write ``path`` whole, in one rename: a reader sees the old text or the new."""
    from timelapse.json_format import side_file

    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(side_file(data), encoding="utf-8")
    os.replace(temp, path)


def _update_listing(folder: Path, listing: list[dict[str, Any]]) -> None:
    """Bring the ``children`` of a published trace's metadata up to date (if it changed)."""
    path = folder / "trace_metadata.json"
    metadata = _read(path)
    if metadata is None:
        return
    # Merged by folder: what is there already stays (a staging folder made again holds only the
    # entries of the children that joined since).
    merged = {child["trace"]: child for child in metadata.get(CHILDREN, []) if isinstance(child, dict)}
    merged.update((child["trace"], child) for child in listing)
    children = sorted(merged.values(), key=lambda c: (c.get("started_at", ""), c["trace"]))
    if metadata.get(CHILDREN) == children:
        return
    metadata[CHILDREN] = children
    _write_json(path, metadata)


def _token_of(root: Path) -> str | None:
    """The family whose trace ``root`` holds now (its metadata's ``family``), if any."""
    metadata = _read(root / "trace_metadata.json")
    return metadata.get("family") if metadata is not None else None


def _redactor_for(options: dict[str, Any]) -> Callable[[list[str]], list[str]]:
    """Command lines redacted as the recording redacts its own arguments (``redact`` on)."""
    if not options.get("redact", True):
        return list
    from timelapse.redact import Redactor

    redactor = Redactor(options.get("redact_names", ()), options.get("redact_patterns", ()))
    return lambda argv: [redactor.redact_text(arg) for arg in argv]

"""Recording by environment: ``TIMELAPSE_RECORD=DIR python app.py`` records app.py into DIR.

The package installs ``timelapse-record.pth`` at the top of site-packages (setup.py). ``site`` runs
its one line at every interpreter start, before the program: unless ``TIMELAPSE_RECORD`` is in the
environment it does nothing more than that lookup; set, it imports this module and calls ``start``.
docs/autostart.md is the user's side; the rules and their reasons:

- **Claimed once, by the first process.** ``start`` takes the variable out of ``os.environ`` at once
  (whatever it then decides), so no child process sees it: a ``subprocess.run([sys.executable,
  ...])``, a build backend that pip starts, the new image of an ``os.exec*`` never record into the
  parent's folder. With ``children`` (on by default here) the recording tells them about itself in
  ``TIMELAPSE_PARENT`` instead, and a process started with that records as a child, into its
  family's folder (timelapse.children); multiprocessing's helpers and the tools below are not
  recorded, and take ``TIMELAPSE_PARENT`` away from their own children (the fork server keeps it:
  its forks are the program's workers). ``site`` may run the line twice (a venv's ``lib64`` is a
  link to ``lib``): the second call is a no-op.
- **What is recorded.** ``python script.py``, ``python -m module`` and ``python -c CODE`` (for ``-c``
  the code in files that it runs: code compiled from a string has no source to show), with the same
  options as ``timelapse record`` (the ``[tool.timelapse]`` of the working directory's nearest
  pyproject.toml, the ``TIMELAPSE_*`` variables, the defaults), ``TIMELAPSE_RECORD`` naming the
  trace folder over ``TIMELAPSE_OUT``. Not recorded: timelapse itself (``timelapse record`` under
  the variable records its own program, once: see ``step_aside``), pip, the interactive
  interpreter, a program read from stdin, a directory or zip application (each of the last three
  says so in one line). ``TIMELAPSE_RECORD=`` (empty) is off.
- **The program is untouched.** Python runs it itself: ``sys.argv``, ``sys.path``, ``__main__``, its
  stack, tracebacks and exit status are exactly python's. Nothing is printed on success (no
  summary line: the program's stderr stays its own); a recording that cannot start is one line on
  stderr, ``timelapse: TIMELAPSE_RECORD: not recording: ...``, and the program runs unrecorded.
  A recorder failure while it runs is reported and the program goes on unrecorded (``on_error``
  defaults to ``"continue"`` here, since nobody asked the program to handle RecorderError).
- **When it starts.** A script's and ``-c``'s recording starts in the .pth line itself; ``-m``'s when
  runpy looks the module up (``runpy._get_module_details``, wrapped once), because only then is
  ``sys.path`` final and can the module's file be known without importing anything; its packages'
  ``__init__`` code runs after, recorded, as under ``timelapse record -m``.
- **How it ends.** As under ``timelapse record``: ``process.ProgramEnd`` saves the trace at exit
  (after the program's own atexit handlers), on SIGTERM, before ``os.exec*``, and ``os._exit`` saves
  it first (``process.ProcessHooks``). What ``timelapse record`` learns by catching the program's
  exception around its code is learnt here from the one ``PY_UNWIND`` that matters: the program's
  ``__main__`` module body ending by an exception (``_MainEnd``), on a ``sys.monitoring`` tool id of
  its own that sees nothing else. ``SystemExit`` gives the exit status, anything else is the
  uncaught exception whose report Python prints and the trace keeps; no such unwind means the
  program returned: status 0.
"""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from timelapse.children import Context
    from timelapse.process import ProgramEnd
    from timelapse.session import Session

__all__ = ["VARIABLE", "start", "step_aside"]

#: The variable: the trace folder of the process started with it.
VARIABLE = "TIMELAPSE_RECORD"
#: Programs that are tools, not the user's: recording them would replace the user's trace.
_TOOL_SCRIPTS = {"timelapse", "codetracer-python-recorder", "pip", "pip3",
                 f"pip{sys.version_info[0]}.{sys.version_info[1]}"}
_TOOL_MODULES = {"timelapse", "pip"}
#: The name of the tool id that watches for the program's end (the recorder's is "timelapse").
_WATCHER_NAME = "timelapse-autostart"
#: The free tool ids tried, the recorder's own preferences (3, 4) last but one.
_WATCHER_TOOL_IDS = (4, 3, 2, 0, 5, 1)

_claimed = False
#: The recording this module started, while it is this process's (None in a child, after step_aside).
_current: _EnvRecording | None = None


def start() -> None:
    """Called by ``timelapse-record.pth`` when the variable is set: claim it and record the program.
    Never raises: whatever goes wrong is one line on stderr and the program runs unrecorded."""
    global _claimed
    if _claimed:
        return
    _claimed = True
    out = os.environ.pop(VARIABLE, None)  # claimed: no child process sees it (see the module doc)
    if out:
        try:
            _start(out, None)
        except Exception as exc:  # noqa: BLE001 - the program must start whatever happened here
            _say(f"not recording: {_reason(exc)}")
        return
    from timelapse import children

    family = children.from_environ()  # a child of a recording with children (timelapse.children)
    if family is None:
        return
    try:
        helper = children.helper(sys.orig_argv)
        if helper == "fork server":
            # multiprocessing's machinery, unrecorded; its children are, from their fork on (the
            # fork hook is session.py's).
            import timelapse.session  # noqa: F401
            return
        if helper is not None:
            children.not_recorded()  # the resource tracker, and what it might start
            return
        if not _start(None, family):
            children.not_recorded()  # a tool (pip, timelapse): nor are the processes it starts
    except Exception:  # noqa: BLE001 - the program must start whatever happened here
        children.not_recorded()  # (stdin, a zip application, ...: silent; see not_recorded)


def step_aside() -> None:
    """``timelapse record`` (or its CodeTracer launcher) runs in a process that the variable is
    recording: the CLI records its program itself, so this recording is thrown away, leaving the
    process as it was before it started (atexit, SIGTERM, monitoring)."""
    global _current
    current, _current = _current, None
    if current is not None:
        current.discard()


# -- what the program is ------------------------------------------------------------------------------

def _start(out: str | None, family: Context | None) -> bool:
    """Record the program into ``out`` (TIMELAPSE_RECORD), or as a child of ``family``; False if
    it is not to be recorded (a tool, a file python cannot open)."""
    argv = sys.argv
    first = argv[0] if argv else ""
    if first in ("", "-"):
        raise _Skip("the program is typed in or read from stdin: it has no source file to record")
    if first == "-c":
        _EnvRecording(out, "<string>", family).begin()
        return True
    if first == "-m":
        module = _module_name(sys.orig_argv, argv)
        if module.split(".")[0] in _TOOL_MODULES:
            return False
        _record_module_when_found(out, module, family)
        return True
    if os.path.basename(first) in _TOOL_SCRIPTS:
        return False
    if os.path.isdir(first) or (os.path.isfile(first) and _is_zip(first)):
        raise _Skip(f"{first!r} is a directory or zip application: record its __main__.py instead")
    if not os.path.isfile(first):
        return False  # python says it cannot open the file, and exits 2: nothing ran, nothing to record
    _EnvRecording(out, os.path.abspath(first), family).begin()
    return True


def _module_name(orig_argv: list[str], argv: list[str]) -> str:
    """The module of ``python [options] -m MODULE [args]``: ``sys.argv`` is ``['-m', *args]`` until
    runpy has found it, and ``sys.orig_argv`` ends with ``MODULE, *args`` or ``-mMODULE, *args``
    (options bundled in front: ``-Im MODULE``, ``-Bmjson.tool``)."""
    word = orig_argv[len(orig_argv) - len(argv)]
    if word.startswith("-"):
        return word[word.index("m") + 1:]
    return word


def _is_zip(path: str) -> bool:
    if path.endswith((".py", ".pyw")):
        return False  # (zipfile costs 15 ms to import: a script's start, every child's)
    import zipfile

    return zipfile.is_zipfile(path)


def _record_module_when_found(out: str | None, module: str, family: Context | None) -> None:
    """``-m``: record from the moment runpy looks the module up (see the module doc)."""
    import runpy

    real = runpy._get_module_details  # type: ignore[attr-defined]

    def _get_module_details(mod_name: str, error: type[Exception] = ImportError) -> Any:
        runpy._get_module_details = real  # type: ignore[attr-defined]  # once: the program's lookup
        if mod_name != module:
            return real(mod_name, error)
        try:  # found as timelapse record -m finds it, importing nothing, on python's final sys.path
            from timelapse.runner import prepare_module

            program: str | None = prepare_module(module, [], search_path=list(sys.path)).path
        except Exception:  # noqa: BLE001 - UsageError (not a plain file, a syntax error) or worse
            program = None
        if program is None:
            # Not a plain file on sys.path (an import hook's: an editable install's finder): runpy
            # finds it, importing its packages unrecorded; missing, python says so and nothing runs.
            details = real(mod_name, error)
            origin = getattr(details[1], "origin", None)
            if isinstance(origin, str) and os.path.isfile(origin):
                _begin(out, origin, family)
            return details
        _begin(out, program, family)
        return real(mod_name, error)

    runpy._get_module_details = _get_module_details  # type: ignore[attr-defined]


def _begin(out: str | None, program: str, family: Context | None) -> None:
    try:
        _EnvRecording(out, program, family).begin()
    except Exception as exc:  # noqa: BLE001 - the program runs unrecorded
        if family is None:
            _say(f"not recording: {_reason(exc)}")
        else:
            from timelapse.children import not_recorded

            not_recorded()


# -- the recording --------------------------------------------------------------------------------

class _EnvRecording:
    """One process's recording: the session, its end (``ProgramEnd``), and the watch on ``__main__``."""

    def __init__(self, out: str | None, program: str, family: Context | None) -> None:
        #: The trace folder (None: a child's, in its family's), the program's file (``<string>``
        #: for ``-c``), and the family of recordings this process is a child in.
        self.out, self.program, self.family = out, program, family
        self.session: Session | None = None
        self.ending: ProgramEnd | None = None
        self.watch: _MainEnd | None = None

    def begin(self) -> None:
        global _current
        from timelapse import config
        from timelapse.process import ProgramEnd
        from timelapse.session import Session

        if self.family is None:
            # The variable is the trace folder, over TIMELAPSE_OUT and the configuration file's
            # out; child processes are recorded unless an option says not.
            loaded = config.load({"out": self.out}, given_by=f"environment ({VARIABLE})",
                                 base=config.Options(on_error="continue", children=True))
            member = None
        else:
            member = self.family.join("exec")  # a child: its parent's options, its own folder
        try:
            if member is not None:
                assert self.family is not None
                loaded = self.family.loaded(member.out_dir, fork=False)
            session = Session(program=self.program, args=sys.argv[1:], _loaded=loaded, _member=member)
            # Python runs the program itself: its first frame is the first of the thread (base_depth
            # 0), and -m's runpy frames below it count against its recursion limit as without us.
            session.start(base_depth=0)
        except BaseException:
            if member is not None:
                member.not_recorded(_reason(sys.exc_info()[1] or Exception()))
            raise
        self.session = session
        self.ending = ProgramEnd(session, quiet=True)
        # multiprocessing's spawned workers die of SIGTERM at once, as its terminate() expects.
        self.ending.install(sigterm="--multiprocessing-fork" not in sys.orig_argv)
        self.watch = _MainEnd(self.ending)
        if self.watch.install():
            session.exit_status = 0  # until the program's __main__ ends by an exception
        _current = self

    def discard(self) -> None:
        import atexit
        import signal

        from timelapse import process

        if self.watch is not None:
            self.watch.remove()
        if self.ending is not None:
            atexit.unregister(self.ending._at_exit)
            if process._sigterm_is_ours():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if self.session is not None:
            self.session.before_exec = None
            self.session.discard()


#: ``SystemExit.code`` as the C slot holds it: read without running any of the program's code.
_SYSTEM_EXIT_CODE = SystemExit.__dict__["code"]


class _MainEnd:
    """Tells ``ProgramEnd`` how the program's code ended, as ``cli.main`` does by catching: the
    ``PY_UNWIND`` of the ``__main__`` module body — the frame running in ``__main__``'s namespace
    with no frame below it (a script, ``-c``) or runpy's ``_run_code`` (``-m``), so that an
    ``exec(code, globals())`` of the program's own is not mistaken for it."""

    def __init__(self, ending: ProgramEnd) -> None:
        self.ending = ending
        main = sys.modules.get("__main__")
        self.main_globals = vars(main) if main is not None else None
        runpy = sys.modules.get("runpy")
        self.run_code: CodeType | None = runpy._run_code.__code__ if runpy is not None else None  # type: ignore[attr-defined]
        self.tool_id: int | None = None
        self.done = False

    def install(self) -> bool:
        """Watch, on a tool id of its own; False if none is free (the exit status is then unknown)."""
        monitoring = sys.monitoring
        for tool_id in _WATCHER_TOOL_IDS:
            if monitoring.get_tool(tool_id) is None:
                monitoring.use_tool_id(tool_id, _WATCHER_NAME)
                monitoring.register_callback(tool_id, monitoring.events.PY_UNWIND, self._unwound)
                monitoring.set_events(tool_id, monitoring.events.PY_UNWIND)
                self.tool_id = tool_id
                return True
        return False

    def remove(self) -> None:
        tool_id, self.tool_id = self.tool_id, None
        monitoring = sys.monitoring
        if tool_id is not None and monitoring.get_tool(tool_id) == _WATCHER_NAME:
            monitoring.set_events(tool_id, 0)
            monitoring.register_callback(tool_id, monitoring.events.PY_UNWIND, None)
            monitoring.free_tool_id(tool_id)

    def _unwound(self, code: CodeType, offset: int, exception: BaseException) -> None:
        # Every frame that an exception leaves comes here: the test that rejects most is first.
        if code.co_name != "<module>" or self.done:
            return
        frame: FrameType = sys._getframe(1)  # the frame being unwound
        if frame.f_globals is not self.main_globals:
            return
        below = frame.f_back
        if below is not None and (self.run_code is None or below.f_code is not self.run_code):
            return
        self.done = True
        if isinstance(exception, SystemExit):
            self.ending.exited(_SYSTEM_EXIT_CODE.__get__(exception))
        else:
            self.ending.uncaught(exception)


# -- saying why not --------------------------------------------------------------------------------

class _Skip(Exception):
    """Nothing this process runs can be recorded: the message says why."""


def _reason(exc: BaseException) -> str:
    from timelapse.errors import RecorderError

    if isinstance(exc, (_Skip, RecorderError, ValueError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a bug of ours: its type helps the report


def _say(message: str) -> None:
    stderr = sys.stderr
    if stderr is not None:
        try:
            print(f"timelapse: {VARIABLE}: {message}", file=stderr, flush=True)
        except (OSError, ValueError):
            pass

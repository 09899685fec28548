"""CodeTracer's ``ct record`` with timelapse as its Python recorder: the launcher and its shim.

``ct record app.py`` runs the executable named ``codetracer-python-recorder`` that comes first on
``PATH`` (shared/trace-format.md §7), as::

    codetracer-python-recorder --out-dir DIR [--activation-path FILE] PROGRAM [ARGS ...]
    codetracer-python-recorder --out-dir DIR [--activation-path FILE] --pytest ARGS ...
    codetracer-python-recorder --out-dir DIR [--activation-path FILE] --unittest ARGS ...

(earlier CodeTracer versions also pass ``--format json``, and spell ``--out-dir`` ``--trace-dir``).
``main`` takes exactly that command line and records as ``timelapse record`` does: it translates it
into ``timelapse record`` words and runs ``cli.main`` on them, so the program runs, ends and is
refused exactly as under ``timelapse record`` (docs/recording.md). ``--pytest ARGS`` is
``timelapse record -m pytest ARGS``: one trace of the whole test run, as CodeTracer expects.

What differs, and why (docs/codetracer.md):

- The trace is ``trace.json`` unless a configuration says otherwise (``--format``,
  ``TIMELAPSE_FORMAT``, ``[tool.timelapse] format``): it is the stream every CodeTracer version
  reads, the one the versions that pass ``--format`` ask for, and the one the db-backend looks for
  before ``trace.bin``. It is the launcher's default, under every configuration layer.
- The exit status. ``ct record`` treats any non-zero exit of the recorder as its failure and then
  does not import the trace. So, as the reference recorder does by default, a program that exits
  non-zero (or dies of an uncaught exception) still gives exit status 0 once its trace is saved;
  the program's status is the trace's ``process_exit_status`` and one line on stderr says it.
  ``--propagate-script-exit`` (the reference's flag) returns the program's status instead. A run
  whose trace could not be saved exits 1 whatever the program did: there is nothing to import.

The shim (``timelapse codetracer-shim --install DIR``) is a small executable
``DIR/codetracer-python-recorder`` that runs ``main`` with the interpreter that installed it. It is
written into a folder of the user's choosing, never over a file that is not a shim of ours (a real
``codetracer-python-recorder``), so putting ``DIR`` first on ``PATH`` or taking it off chooses
between timelapse and the reference recorder without installing or removing either.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from timelapse import cli, config
from timelapse._version import __version__
from timelapse.errors import UsageError
from timelapse.process import exit_status

#: The name ``ct record`` looks for on PATH.
RECORDER_NAME = "codetracer-python-recorder"
#: The line that marks a file as a shim of ours (``--install`` replaces it, ``--uninstall`` removes it).
SHIM_MARKER = "# timelapse codetracer-shim"
#: The launcher's own defaults: the lowest layer, under the configuration file and the environment.
LAUNCHER_DEFAULTS = {"format": "json"}

USAGE = f"""\
{RECORDER_NAME} [--out-dir DIR] [--activation-path FILE] [--format json|bin] [--propagate-script-exit] PROGRAM [ARGS ...]
       {RECORDER_NAME} [options] --pytest [PYTEST_ARGS ...]
       {RECORDER_NAME} [options] --unittest [UNITTEST_ARGS ...]

timelapse {__version__} as CodeTracer's Python recorder (installed by `timelapse codetracer-shim`).
Records PROGRAM (or python -m pytest / python -m unittest with the rest of the command line) into
DIR as `timelapse record -o DIR` does, in trace.json unless a configuration or --format says
otherwise. Exit status: 0 once the trace is saved, whatever the program's own status (kept in the
trace's metadata as process_exit_status); with --propagate-script-exit, the program's status; 1 if
no trace could be saved; 2 for bad input (one line on stderr). See docs/codetracer.md."""

#: The options that take a value, each with the ``timelapse record`` flag it becomes.
_VALUE_OPTIONS = {"--out-dir": "-o", "--trace-dir": "-o", "--activation-path": "--activation-path",
                  "--format": "--format"}
#: The reference's format names, as timelapse's (it also writes CTFS, which timelapse does not).
_FORMATS = {"json": "json", "bin": "bin", "binary": "bin"}


@dataclass
class Launch:
    """A launcher command line, read: the ``timelapse record`` words it stands for."""

    record_args: list[str] = field(default_factory=list)
    out_dir: str | None = None
    propagate_exit: bool = False
    info: str | None = None  #: --help / --version: print this and record nothing


def parse(argv: list[str]) -> Launch:
    """Read a ``codetracer-python-recorder`` command line; UsageError (one line) if it is not one.

    Options come first; the first word that is not one is the program, and everything after it
    belongs to the program, as under ``timelapse record``. ``--pytest`` / ``--unittest`` take the
    rest of the command line, whatever it holds, as the framework's arguments (none is fine:
    ``python -m pytest`` alone runs the project's tests).
    """
    launch = Launch()
    options: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("-h", "--help"):
            launch.info = "usage: " + USAGE
            return launch
        if word == "--version":
            launch.info = f"{RECORDER_NAME} (timelapse {__version__})"
            return launch
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in _VALUE_OPTIONS:
            if not equals:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i + 1]
                i += 1
            i += 1
            if name == "--format":
                value = _format(value)
            elif name in ("--out-dir", "--trace-dir"):
                launch.out_dir = value
            options += [_VALUE_OPTIONS[name], value]
            continue
        if word in ("--propagate-script-exit", "--no-propagate-script-exit"):
            launch.propagate_exit = word == "--propagate-script-exit"
            i += 1
            continue
        if word in ("--pytest", "--unittest"):
            launch.record_args = ["record", *options, "-m", word[2:], *argv[i + 1:]]
            return launch
        if word == "--":
            if i + 1 >= len(argv):
                break
            word, i = argv[i + 1], i + 1
        elif word.startswith("-") and word != "-":
            raise UsageError(f"unknown option {word!r} (this launcher takes --out-dir DIR, "
                             f"--activation-path FILE, --format json|bin, --propagate-script-exit, "
                             f"then PROGRAM [ARGS ...], --pytest [ARGS ...] or --unittest [ARGS ...])")
        # "--" keeps a program whose name starts with "-" from being read as a timelapse option.
        launch.record_args = ["record", *options, "--", word, *argv[i + 1:]]
        return launch
    raise UsageError(f"missing the program to record (usage: {RECORDER_NAME} --out-dir DIR PROGRAM "
                     f"[ARGS ...] | --pytest [ARGS ...] | --unittest [ARGS ...])")


def _format(value: str) -> str:
    if value.lower() == "ctfs":
        raise UsageError("--format ctfs: timelapse writes trace.json or trace.bin, not a CTFS .ct "
                         "container (CodeTracer reads both: --format json or --format bin)")
    if value.lower() not in _FORMATS:
        raise UsageError(f"--format must be json or bin (binary), not {value!r}")
    return _FORMATS[value.lower()]


def main(argv: list[str] | None = None) -> int:
    """The ``codetracer-python-recorder`` command (the shim runs it): record as ``ct record`` asks."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        launch = parse(argv)
    except UsageError as exc:
        print(f"timelapse: error: {exc}", file=sys.stderr)
        return 2
    if launch.info is not None:
        print(launch.info)
        return 0
    ending = _LaunchEnd(_trace_folder(launch), propagate=launch.propagate_exit)
    # Registered before cli.main registers its own: atexit runs it after the trace is saved.
    atexit.register(ending.at_exit)
    try:
        status = cli.main(launch.record_args, defaults=LAUNCHER_DEFAULTS)
    except SystemExit as exc:
        # cli.main read the program's code once and raised it again as a plain value.
        code = exc.code
        if launch.propagate_exit:
            raise
        ending.program_status = exit_status(code)
        if code is not None and not isinstance(code, int) and sys.stderr is not None:
            print(code, file=sys.stderr)  # what the interpreter prints for sys.exit("message")
        return 0
    except KeyboardInterrupt:
        # Ctrl-C: the process dies of SIGINT as without the launcher (the trace is saved at exit);
        # an interrupted recording is not one that ct record should go on with.
        raise
    except BaseException as exc:  # the program's uncaught exception (cli.main re-raises it)
        if launch.propagate_exit:
            raise
        ending.program_status = 1
        # What the interpreter does with it at the top: the report (timelapse's hook trims it to
        # the program's frames and keeps it as the trace's last Error event), then exit status 1.
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 0
    if status == 2:  # bad input, reported in one line: nothing ran, no trace to wait for
        ending.recording = False
    return status


def _trace_folder(launch: Launch) -> Path | None:
    """The folder the trace will be published in (to tell at exit whether it was), or None if the
    options cannot be read (cli.main then says why, and records nothing)."""
    out = launch.out_dir
    if out is None:
        try:
            out = config.load(base=config.Options(**LAUNCHER_DEFAULTS)).options.out
        except (config.OptionError, TypeError):
            return None
    return Path(os.path.abspath(out)) if out else None


def _stamp(folder: Path | None) -> tuple[int, int, int] | None:
    """What tells one published trace from another: its metadata file's identity and time (a
    trace is published by renaming or moving new files in, so a new trace has a new file)."""
    if folder is None:
        return None
    try:
        st = os.stat(folder / "trace_metadata.json")
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


class _LaunchEnd:
    """The launcher's last word, after timelapse has saved the trace at exit (its atexit handler
    runs before this one): whether a trace was published, and what the program's status was."""

    def __init__(self, folder: Path | None, *, propagate: bool) -> None:
        self.folder = folder
        self.propagate = propagate
        self.before = _stamp(folder)
        self.pid = os.getpid()
        self.recording = True
        self.program_status = 0

    def at_exit(self) -> None:
        if os.getpid() != self.pid or not self.recording or self.folder is None:
            return  # a forked child (the trace is the parent's), or nothing was recorded
        stamp = _stamp(self.folder)
        if stamp is None or stamp == self.before:
            # timelapse said why on stderr. ct record must fail rather than import an old trace
            # or none, and only os._exit can still change the exit status at this point.
            print(f"timelapse: error: no trace was saved in {self.folder}; exit status 1",
                  file=sys.stderr)
            _flush()
            os._exit(1)
        if self.program_status and not self.propagate:
            print(f"timelapse: the program's exit status was {self.program_status} (kept in the "
                  f"trace as process_exit_status); exit status 0, so that ct record keeps the trace "
                  f"(--propagate-script-exit returns the program's)", file=sys.stderr)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


# -- the shim on PATH -------------------------------------------------------------------------------

def shim_text(python: str | None = None) -> str:
    """The shim's source: run ``main`` with ``python`` (the interpreter that has timelapse)."""
    python = python or sys.executable
    # A shebang line cannot hold spaces and the kernel cuts it at 127 bytes on older systems: then
    # /bin/sh starts the interpreter, in a line Python reads as a string (as pip's scripts do).
    if " " in python or len(python) > 120:
        start = f"#!/bin/sh\n'''exec' {shlex.quote(python)} \"$0\" \"$@\"\n' '''\n"
    else:
        start = f"#!{python}\n"
    return (
        start
        + f"{SHIM_MARKER}: CodeTracer's `ct record` runs this file as its Python recorder\n"
        f"# ({RECORDER_NAME}, found on PATH); it records with timelapse, run by the interpreter above.\n"
        f"# Written by `timelapse codetracer-shim --install DIR`; `--uninstall DIR` removes it.\n"
        "import sys\n"
        "\n"
        "from timelapse.codetracer import main\n"
        "\n"
        "sys.exit(main())\n"
    )


def is_shim(path: Path) -> bool:
    """Whether ``path`` is a shim of ours (a regular file, not a link, with our marker near the top)."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", "replace").splitlines()[:5]
    except OSError:
        return False
    return any(line.startswith(SHIM_MARKER) for line in head)


def install_shim(folder: str | os.PathLike[str], *, force: bool = False, python: str | None = None) -> Path:
    """Write ``folder/codetracer-python-recorder`` (the folder is made if need be) and return it.
    A shim of ours there is replaced; anything else only with ``force``: UsageError otherwise."""
    target = Path(os.path.abspath(folder)) / RECORDER_NAME
    if target.is_dir() and not target.is_symlink():
        raise UsageError(f"{target} is a folder: not replaced")
    if (target.exists() or target.is_symlink()) and not is_shim(target) and not force:
        raise UsageError(f"{target} exists and is not timelapse's shim (CodeTracer's own recorder?): "
                         f"left as it is (--force replaces it)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside it and renamed over it: ct record never finds half a file, and a link
        # there is replaced itself, never the file it points to.
        handle, temp = tempfile.mkstemp(prefix=f".{RECORDER_NAME}.", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                f.write(shim_text(python))
            os.chmod(temp, 0o755)
            os.replace(temp, target)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def uninstall_shim(folder: str | os.PathLike[str]) -> Path | None:
    """Remove our shim from ``folder``; None if there is none. UsageError for a file not ours."""
    target = Path(os.path.abspath(folder)) / RECORDER_NAME
    if not (target.exists() or target.is_symlink()):
        return None
    if not is_shim(target):
        raise UsageError(f"{target} is not timelapse's shim: left as it is")
    try:
        target.unlink()
    except OSError as exc:
        raise UsageError(f"cannot remove {target}: {exc.strerror or exc}") from None
    return target


def where_on_path(target: Path, path: str | None = None) -> str:
    """What ``ct record`` would run with ``path`` (default: this PATH), said for the installer."""
    found = shutil.which(RECORDER_NAME, path=path)
    folder = str(target.parent)
    if found is not None and os.path.realpath(found) == os.path.realpath(target):
        return f"{folder} comes first on PATH: ct record records Python with timelapse"
    export = f"export PATH={shlex.quote(folder)}:\"$PATH\""
    if found is None:
        return f"{folder} is not on PATH; for ct record to use it: {export}"
    return f"ct record would run {found}, which comes first on PATH; to use timelapse: {export}"


def shim_main(args: list[str]) -> int:
    """``timelapse codetracer-shim --install DIR [--force] | --uninstall DIR``."""
    parser = cli._Parser(
        prog="timelapse codetracer-shim",
        usage="timelapse codetracer-shim --install DIR [--force] | --uninstall DIR",
        description=f"Put timelapse on PATH as CodeTracer's Python recorder: write (or remove) "
                    f"DIR/{RECORDER_NAME}, a small executable that records with timelapse using "
                    f"this interpreter. Put DIR first on PATH for `ct record` to use it. A file "
                    f"there that is not timelapse's shim is never replaced without --force.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--install", metavar="DIR", help=f"write DIR/{RECORDER_NAME}")
    action.add_argument("--uninstall", metavar="DIR", help=f"remove DIR/{RECORDER_NAME} if it is ours")
    parser.add_argument("--force", action="store_true",
                        help=f"with --install: replace a {RECORDER_NAME} that is not timelapse's")
    options = parser.parse_args(args)
    if options.uninstall is not None:
        if options.force:
            raise UsageError("--force goes with --install (--uninstall removes only timelapse's shim)")
        removed = uninstall_shim(options.uninstall)
        print(f"removed {removed}" if removed else
              f"no {RECORDER_NAME} in {os.path.abspath(options.uninstall)}: nothing to remove")
        return 0
    target = install_shim(options.install, force=options.force)
    print(f"wrote {target} (timelapse {__version__}, {sys.executable})")
    print(where_on_path(target))
    return 0

"""Run a script or a module the way ``python script.py`` / ``python -m module`` does.

The program must not be able to tell it is being recorded: it runs in a fresh ``__main__`` module,
``sys.argv`` is ``[script, *args]``, ``sys.path[0]`` is the script's folder (for ``-m``: the working
directory), and its exceptions propagate unchanged. Everything that can be checked before the program
runs (the file exists, is readable, compiles; the module exists) is checked by ``prepare_*`` so that bad
input is reported before a trace folder is made.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import io
import os
import runpy
import sys
import types
from dataclasses import dataclass, field
from types import CodeType, TracebackType

from timelapse.errors import UsageError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass
class Program:
    """A program ready to run: a compiled script, or a module name for ``-m``."""

    argv0: str  #: ``sys.argv[0]`` as given on the command line
    path: str  #: absolute path of the script / module file (the trace's ``program``)
    args: list[str] = field(default_factory=list)
    module: str | None = None
    code: CodeType | None = None


def prepare_script(script: str, args: list[str]) -> Program:
    """Check and compile ``script``; UsageError (one line) if it cannot run."""
    path = os.path.abspath(script)
    if not os.path.exists(path):
        raise UsageError(f"cannot record {script!r}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"cannot record {script!r}: it is a directory, not a Python file")
    code = _compile(path, repr(script))
    return Program(argv0=script, path=path, args=list(args), code=code)


def prepare_module(module: str, args: list[str], search_path: list[str] | None = None) -> Program:
    """Find the file of ``module`` (a package: its ``__main__``) without running any of its code.

    The packages' ``__init__`` code then runs while recording, as part of the program.
    ``search_path``: where to look (default: the sys.path the program will have).
    """
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        raise UsageError(f"cannot record module {module!r}: not a module name")
    # Looked up on the sys.path the program will have: the working directory first, as for
    # ``python -m`` (ours starts with the folder of whatever started timelapse: the console script's).
    search: list[str] | None = [os.getcwd(), *sys.path[1:]] if search_path is None else search_path
    spec = None
    sources = []  # the files that will run: each package's __init__, then the module
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            raise UsageError(f"cannot record module {module!r}: no module named {name!r}")
        sources.append(spec.origin)
        search = spec.submodule_search_locations
        if search is None and depth + 1 < len(parts):
            raise UsageError(f"cannot record module {module!r}: {name!r} is not a package")
    assert spec is not None
    if spec.submodule_search_locations is not None:
        spec = importlib.machinery.PathFinder.find_spec(module + ".__main__", spec.submodule_search_locations)
        if spec is None:
            raise UsageError(
                f"cannot record module {module!r}: it is a package with no __main__ module"
            )
        sources.append(spec.origin)
    if not spec.origin or not os.path.isfile(spec.origin):
        raise UsageError(f"cannot record module {module!r}: it has no source file")
    for source in sources:  # a syntax error is bad input, as for a script (compiled, not run)
        if source and source.endswith(".py") and os.path.isfile(source):
            _compile(source, f"module {module!r}", in_file=True)
    return Program(argv0=module, path=os.path.abspath(spec.origin), args=list(args), module=module)


def _compile(path: str, what: str, *, in_file: bool = False) -> CodeType:
    """Compile the Python file ``path``; UsageError (one line) naming ``what`` (and with ``in_file``,
    the file) if it cannot be."""
    try:
        with io.open_code(path) as f:
            source = f.read()
    except OSError as exc:
        raise UsageError(f"cannot record {what}: {exc.strerror or exc}") from None
    try:
        return compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "unknown line"
        file = f" of {path}" if in_file else ""
        raise UsageError(f"cannot record {what}: {exc.msg} ({where}{file})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot record {what}: {exc}") from None


def set_up_process(program: Program) -> None:
    """``sys.argv`` and ``sys.path[0]`` as ``python`` sets them for this program."""
    sys.argv[:] = [program.argv0 if program.module is None else program.path, *program.args]
    if program.module is None:
        first = os.path.dirname(os.path.realpath(program.path))
    else:
        first = os.getcwd()
    if sys.path:
        sys.path[0] = first
    else:
        sys.path.append(first)


def run(program: Program) -> None:
    """Run the program in a fresh ``__main__``; its exceptions (SystemExit too) propagate."""
    if program.module is not None:
        runpy.run_module(program.module, run_name="__main__", alter_sys=True)
        return
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=program.path,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", program.path),
        __spec__=None,
        __package__=None,
        __annotations__={},
    )
    sys.modules["__main__"] = main
    exec(program.code, main.__dict__)  # the program's own frames start right below this one


def program_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` as ``python`` shows it: the frames of timelapse above the program's cut. For ``-m``,
    runpy's ``_run_code`` stays, as under ``python -m`` (whose ``_run_module_as_main`` frame above it
    we cannot have: it is private to runpy)."""
    entry = tb
    while entry is not None and entry.tb_frame.f_code is not run.__code__:
        entry = entry.tb_next
    if entry is None:
        return tb  # not an exception of the program's
    entry = entry.tb_next
    while entry is not None and (
        entry.tb_frame.f_code.co_filename in (runpy.__file__, "<frozen runpy>")
        and entry.tb_frame.f_code.co_name != "_run_code"
    ):
        entry = entry.tb_next
    return _without_recorder_frames(entry)


def _without_recorder_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without the frames of timelapse's callbacks inside it (an exception of a signal
    handler that waited for a callback to end passes through that callback): the same chain when
    there are none, else a new chain of the program's entries."""
    entries = []
    has_ours = False
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            has_ours = True
        else:
            entries.append(tb)
        tb = tb.tb_next
    if not has_ours:
        return entries[0] if entries else None
    chain = None
    for entry in reversed(entries):
        chain = TracebackType(chain, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return chain

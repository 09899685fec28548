"""The ``timelapse`` command: ``record`` a program into a trace folder, ``check`` a trace folder,
``convert`` its event stream between trace.json and trace.bin.

Bad input (a missing script, an unknown option, an output folder we must not touch, ...) is one line on
stderr and exit status 2, before anything is recorded. Once the program runs, everything about it (its
output, exceptions, exit status) is the program's own: timelapse only adds one summary line at the end.

This module only parses the command line, makes the ``Options`` (config.py checks every value), and
runs the program; how the process ends — atexit, SIGTERM, the uncaught exception's report, the
summary line — is ``process.ProgramEnd``'s.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from timelapse import autostart, config
from timelapse._version import __version__
from timelapse.config import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, DEFAULT_MAX_NODES, DEFAULT_MAX_STRING, Options
from timelapse.errors import RecorderError, UsageError
from timelapse.process import ProgramEnd
from timelapse.runner import Program, prepare_module, prepare_script, run, set_up_process
from timelapse.session import Session

USAGE = """\
timelapse record [options] script.py [args ...]
       timelapse record [options] -m module [args ...]
       timelapse check TRACE_DIR
       timelapse summary TRACE_DIR [--json]
       timelapse view TRACE_DIR [--port N] [--no-browser]
       timelapse convert TRACE_DIR --to {json,bin} [-o OUT_DIR]
       timelapse config [options]
       timelapse codetracer-shim --install DIR [--force] | --uninstall DIR"""

#: Recorder options that take a value (needed to find where the program's own arguments start).
_VALUE_OPTIONS = {
    "-o", "--out", "--on-recorder-error", "--max-depth", "--max-items", "--max-string", "--max-nodes",
    "--format", "--config", "--include", "--exclude", "--redact-name", "--redact-pattern",
    "--record-only", "--activation-path",
}
#: The Options fields that flags of `timelapse record` set (each flag's dest is the field's name).
_OPTION_FLAGS = ("on_error", "max_depth", "max_items", "max_string", "max_nodes", "capture_io", "capture_fd",
                 "format", "out", "include", "exclude", "redact", "redact_names", "redact_patterns",
                 "record_only", "activation_path", "children")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised as UsageError), not usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _option(name: str) -> Callable[[str], Any]:
    """An argparse ``type``: the word, read and checked by config (the one validator), or the
    reason it is refused, which argparse prints after ``argument --flag:``."""

    def read(text: str) -> Any:
        try:
            return config.parse(name, text)
        except config.OptionError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    read.__name__ = name
    return read


def _activation_path(text: str) -> Any:
    """``--activation-path FILE``: an empty FILE is refused (the environment's and a configuration
    file's "" mean none; on the command line it is a mistake, which would record the whole run)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path: name a file (or leave the option out)")
    return _option("activation_path")(text)


def _word(name: str) -> Callable[[str], str]:
    """An argparse ``type`` for one element of a list option (``--include P``, repeatable)."""

    def read(text: str) -> str:
        try:
            return config.check(name, (text,))[0]
        except config.OptionError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    read.__name__ = name
    return read


def _record_parser() -> _Parser:
    # The recording options have no argparse default: only the flags given end up in the namespace,
    # over Options' own defaults (the command line is the last layer: see config.py).
    given = argparse.SUPPRESS
    parser = _Parser(prog="timelapse record", usage=USAGE, description="Record a Python program.")
    parser.add_argument("-o", "--out", type=_option("out"), default=given, metavar="DIR",
                        help="trace folder to write (default: ./trace-out)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="read the options in FILE's [tool.timelapse] table (default: the nearest "
                             "pyproject.toml that has one, from the working directory upwards)")
    parser.add_argument("--no-config", dest="config", action="store_false",
                        help="read no configuration file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line at the end")
    parser.add_argument("--on-recorder-error", dest="on_error", type=_option("on_error"), default=given,
                        metavar="{raise,continue}",
                        help="if the recorder itself fails: raise timelapse.RecorderError in the "
                             "program (default), or report it and let the program run on unrecorded")
    parser.add_argument("--max-depth", type=_option("max_depth"), default=given, metavar="N",
                        help=f"nesting depth of recorded values (default {DEFAULT_MAX_DEPTH})")
    parser.add_argument("--max-items", type=_option("max_items"), default=given, metavar="N",
                        help=f"elements recorded per container (default {DEFAULT_MAX_ITEMS})")
    parser.add_argument("--max-string", type=_option("max_string"), default=given, metavar="N",
                        help=f"characters recorded per string or bytes (default {DEFAULT_MAX_STRING})")
    parser.add_argument("--max-nodes", type=_option("max_nodes"), default=given, metavar="N",
                        help=f"elements recorded per value, all its containers together (default "
                             f"{DEFAULT_MAX_NODES}); lower it to record object-heavy programs faster")
    parser.add_argument("--capture-fd", action="store_true", default=given,
                        help="also capture output written to file descriptors 1 and 2 directly "
                             "(os.write, C extensions, child processes)")
    parser.add_argument("--no-capture-io", dest="capture_io", action="store_false", default=given,
                        help="do not record stdin/stdout/stderr")
    parser.add_argument("--format", type=_option("format"), default=given, metavar="{json,bin}",
                        help=f"trace format: json (trace.json) or bin (trace.bin: CBOR in seekable "
                             f"zstd, much smaller) (default {config.DEFAULT_FORMAT})")
    parser.add_argument("--include", action="append", type=_word("include"), default=given,
                        metavar="PATTERN",
                        help="also record this code: a module name pattern (myapp.*, requests.*) or a "
                             "file path pattern (src/**/*.py); repeatable")
    parser.add_argument("--exclude", action="append", type=_word("exclude"), default=given,
                        metavar="PATTERN",
                        help="do not record this code (module or path pattern; wins over --include); "
                             "repeatable")
    parser.add_argument("--no-redact", dest="redact", action="store_false", default=given,
                        help="record values whose names or forms look like secrets as they are "
                             "(default: recorded as <redacted>)")
    parser.add_argument("--redact-name", dest="redact_names", action="append", type=_word("redact_names"),
                        default=given, metavar="NAME",
                        help="also redact variables, arguments, attributes and keys named NAME; repeatable")
    parser.add_argument("--redact-pattern", dest="redact_patterns", action="append",
                        type=_word("redact_patterns"), default=given, metavar="REGEX",
                        help="also redact strings matching REGEX; repeatable")
    parser.add_argument("--record-only", dest="record_only", action="append", type=_word("record_only"),
                        default=given, metavar="PATTERN",
                        help="record only inside these functions, from each entry to its return: "
                             "module:qualname, globs allowed (myapp.handlers:checkout, '*:Cart.*', "
                             "checkout); repeatable (docs/activation.md)")
    parser.add_argument("--activation-path", dest="activation_path", type=_activation_path,
                        default=given, metavar="FILE",
                        help="start recording when code of FILE first runs, stop when that call "
                             "returns; every thread meanwhile (as CodeTracer's recorder)")
    parser.add_argument("--children", action="store_true", default=given,
                        help="also record the Python processes the program starts (subprocess, "
                             "multiprocessing, os.fork), each into a trace of its own in the trace "
                             "folder's children/ (docs/children.md)")
    parser.add_argument("--no-children", dest="children", action="store_false", default=given,
                        help="do not record child processes (the default, but for TIMELAPSE_RECORD)")
    parser.add_argument("-m", dest="module", metavar="MODULE", help="record a module, as python -m")
    return parser


@dataclass
class _RecordCommand:
    options: argparse.Namespace
    program: Program


def _split_record_args(tokens: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split into (recorder options, script-or-None, program args); ``-m MOD`` stays in the options.

    Everything after the script path or the module name belongs to the program, even words that look
    like our options.
    """
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            if i + 1 < len(tokens):
                return tokens[:i], tokens[i + 1], tokens[i + 2:]
            return tokens[:i], None, []
        if token.startswith("--"):
            i += 2 if token in _VALUE_OPTIONS else 1
            continue
        if token.startswith("-") and token != "-":
            # Short options, maybe bundled (-qo DIR, -oDIR, -qm MODULE): the first one that takes a
            # value takes the rest of the word, or else the next word.
            for position, letter in enumerate(token[1:], start=2):
                if letter in "om":
                    value_follows = position == len(token)
                    end = i + (2 if value_follows else 1)
                    if letter == "m":
                        return tokens[:end], None, tokens[end:]
                    i = end
                    break
            else:
                i += 1
            continue
        return tokens[:i], token, tokens[i + 1:]
    return tokens, None, []


def parse_record(tokens: list[str]) -> _RecordCommand:
    options_part, script, program_args = _split_record_args(tokens)
    options = _record_parser().parse_args(options_part)
    if options.module is not None:
        if script is not None:
            raise UsageError("give either a script or -m MODULE, not both")
        program = prepare_module(options.module, program_args)
    elif script is None:
        raise UsageError("missing the script to record (usage: timelapse record [options] script.py [args ...])")
    else:
        program = prepare_script(script, program_args)
    return _RecordCommand(options, program)


def main(argv: list[str] | None = None, *, defaults: Mapping[str, Any] | None = None) -> int:
    """Entry point of the ``timelapse`` console script and of ``python -m timelapse``.

    ``defaults``: option values under every layer (the configuration file, the environment, the
    command line): the CodeTracer launcher's trace.json (codetracer.py).
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:  # bad input like any other: one line on stderr, exit status 2
            raise UsageError("missing the command (usage: timelapse record [options] script.py [args ...]"
                             " | timelapse check TRACE_DIR | timelapse convert TRACE_DIR --to {json,bin};"
                             " see timelapse --help)")
        if argv[0] in ("-h", "--help"):
            print(f"usage: {USAGE}\n\nRun 'timelapse record --help' for the recording options,"
                  " 'timelapse summary --help' for what a trace holds, in the terminal,"
                  " 'timelapse view --help' for stepping through it in the browser,"
                  " 'timelapse convert --help' for converting a trace between trace.json and trace.bin,"
                  " 'timelapse codetracer-shim --help' for recording with timelapse from CodeTracer's ct record.")
            return 0
        if argv[0] == "--version":
            from timelapse import snapshot  # which signature is in use: a bug report needs it
            how = ("compiled speedups" if snapshot.IMPLEMENTATION == "c"
                   else "pure Python: TIMELAPSE_PURE" if snapshot._pure_forced()
                   else "pure Python: speedups not built")
            print(f"timelapse {__version__} ({how})")
            return 0
        command, rest = argv[0], argv[1:]
        if command == "check":
            return _check(rest)
        if command == "summary":
            return _summary(rest)
        if command == "view":
            return _view(rest)
        if command == "convert":
            return _convert(rest)
        if command == "config":
            return _config(rest)
        if command == "codetracer-shim":
            from timelapse.codetracer import shim_main

            return shim_main(rest)
        if command != "record":
            raise UsageError(f"unknown command {command!r} (expected 'record', 'check', 'summary', 'view', "
                             f"'convert', 'config' or 'codetracer-shim')")
        # A process that TIMELAPSE_RECORD records from its start: its program is recorded here instead.
        autostart.step_aside()
        record = parse_record(rest)
        session = _make_session(record, defaults)
    except (UsageError, RecorderError, config.OptionError) as exc:
        print(f"timelapse: error: {exc}", file=sys.stderr)
        return 2
    # The program's first frame will sit right below run(), one frame below this one: under plain
    # python it is the first frame of all, so its recursion limit is counted from there.
    ending = _start(record, session, base_depth=_frame_depth(sys._getframe()) + 1)
    if ending is None:
        return 2
    # The program runs from here, not from a helper: of timelapse, its stack (inspect.stack(),
    # traceback.extract_stack()) shows only main() and run(), the fewest frames pure Python allows.
    # Its exceptions propagate, so Python reports them itself.
    try:
        run(record.program)
    except SystemExit as exc:
        # ``code`` is read once, here, as the interpreter would (a subclass may compute it); the
        # interpreter then gets the value itself, so the program's code does not run a second time.
        code = exc.code
        ending.exited(code)
        raise SystemExit(code) from None
    except BaseException as exc:
        ending.uncaught(exc)
        raise
    ending.returned()
    return 0


def _check(args: list[str]) -> int:
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError("usage: timelapse check TRACE_DIR")
    from timelapse.checker import run_check

    return run_check(args[0])


def _summary(args: list[str]) -> int:
    parser = _Parser(prog="timelapse summary", usage="timelapse summary TRACE_DIR [--json]",
                     description="What a trace holds, in the terminal: the run, counts, the busiest "
                                 "functions and lines, the call tree's beginning, exceptions, output. "
                                 "One streaming pass (bounded memory).")
    parser.add_argument("folder", metavar="TRACE_DIR", help="the trace folder")
    parser.add_argument("--json", action="store_true", help="print it as one JSON object")
    options = parser.parse_args(args)
    from timelapse.summary import run_summary

    return run_summary(options.folder, as_json=options.json)


def _view(args: list[str]) -> int:
    parser = _Parser(prog="timelapse view", usage="timelapse view TRACE_DIR [--port N] [--no-browser]",
                     description="Step through a trace in the browser: source, stack, locals, call tree, "
                                 "output, a variable's history. Serves on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("folder", metavar="TRACE_DIR", help="the trace folder")
    parser.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; print the address")
    options = parser.parse_args(args)
    if not 0 <= options.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, not {options.port}")
    from timelapse.viewer import run_view

    return run_view(options.folder, port=options.port, open_browser=not options.no_browser)


def _convert_parser() -> _Parser:
    parser = _Parser(prog="timelapse convert", usage="timelapse convert TRACE_DIR --to {json,bin} [-o OUT_DIR]",
                     description="Convert the event stream of a trace folder between trace.json and "
                                 "trace.bin, streaming (bounded memory). Without -o the folder is converted "
                                 "in place: it ends with the new stream file instead of the old one.")
    parser.add_argument("folder", metavar="TRACE_DIR", help="the trace folder to convert")
    parser.add_argument("--to", required=True, choices=("json", "bin"),
                        help="json (trace.json) or bin (trace.bin: CBOR in seekable zstd)")
    parser.add_argument("-o", "--out", metavar="OUT_DIR",
                        help="write a new trace folder (it must not exist, or be empty) with the converted "
                             "stream and copies of the side files and files/, and leave TRACE_DIR as it is")
    return parser


def _convert(args: list[str]) -> int:
    options = _convert_parser().parse_args(args)
    from timelapse.convert import run_convert

    # SIGTERM, like Ctrl-C, removes what the conversion wrote so far instead of leaving it behind.
    terminated = []

    def terminate(signum: int, frame: FrameType | None) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        status = run_convert(options.folder, options.to, options.out)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 + signal.SIGTERM if terminated else status


def _loaded(options: argparse.Namespace, defaults: Mapping[str, Any] | None = None) -> config.Loaded:
    """The effective options: the flags given (the command line, the last layer) over the
    environment and the configuration file (``--config``/``--no-config``), over ``defaults``."""
    given = vars(options)
    return config.load(
        {name: given[name] for name in _OPTION_FLAGS if name in given}, given_by="command line",
        config=options.config,
        # The console script (or python -m timelapse's __main__) is not the program's code.
        base=Options(exclude_files=(sys.argv[0],) if sys.argv and sys.argv[0] else (), **(defaults or {})),
    )


def _make_session(record: _RecordCommand, defaults: Mapping[str, Any] | None = None) -> Session:
    return Session(program=record.program.path, args=record.program.args,
                   _loaded=_loaded(record.options, defaults))


def _config(args: list[str]) -> int:
    """``timelapse config [options]``: the effective options, each with where it came from."""
    parser = _record_parser()
    parser.prog, parser.usage = "timelapse config", "timelapse config [recording options]"
    parser.description = ("Print the effective recording options as a [tool.timelapse] table, each "
                          "with where its value came from (default, configuration file, environment, "
                          "command line).")
    options = parser.parse_args(args)
    loaded = _loaded(options)
    print(f"# configuration file: {loaded.config_file or 'none'}")
    print("[tool.timelapse]")
    for name in config.LAYERED:
        value = getattr(loaded.options, name)
        print(f"{name} = {_toml(value)}  # {loaded.sources[name]}")
    return 0


def _toml(value: Any) -> str:
    """A value as TOML text (the options' values are bools, ints, strings and string tuples)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)    # a TOML basic string is a JSON string
    if value is None:
        return '""'                 # TOML has no null: the empty string, which options read as none
    return str(value)


def _start(record: _RecordCommand, session: Session, base_depth: int) -> ProgramEnd | None:
    """Start recording and set the process up for the program; None (reported) if it cannot."""
    try:
        session.start(base_depth=base_depth)
    except RecorderError as exc:
        print(f"timelapse: error: {exc}", file=sys.stderr)
        return None
    set_up_process(record.program)
    ending = ProgramEnd(session, quiet=record.options.quiet)
    ending.install()
    return ending


def _frame_depth(frame: FrameType | None) -> int:
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth

"""The ``timelapse`` command: ``record`` a program into a trace folder, ``check`` a trace folder.

Bad input (a missing script, an unknown option, an output folder we must not touch, ...) is one line on
stderr and exit status 2, before anything is recorded. Once the program runs, everything about it (its
output, exceptions, exit status) is the program's own: timelapse only adds one summary line at the end.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from types import FrameType, TracebackType

from timelapse._version import __version__
from timelapse.encoder import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, DEFAULT_MAX_NODES, DEFAULT_MAX_STRING
from timelapse.errors import RecorderError, UsageError
from timelapse.interrupts import deferral
from timelapse.monitor import describe_exception
from timelapse.runner import Program, prepare_module, prepare_script, program_traceback, run, set_up_process
from timelapse.session import MAX_DEPTH_LIMIT, Session

USAGE = """\
timelapse record [options] script.py [args ...]
       timelapse record [options] -m module [args ...]
       timelapse check TRACE_DIR"""

#: Recorder options that take a value (needed to find where the program's own arguments start).
_VALUE_OPTIONS = {
    "-o", "--out", "--on-recorder-error", "--max-depth", "--max-items", "--max-string", "--max-nodes",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (raised as UsageError), not usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _depth(text: str) -> int:
    """A nesting depth: deeper than this, a trace line would be too deeply nested for JSON readers."""
    value = _positive(text)
    if value > MAX_DEPTH_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_DEPTH_LIMIT}: {text!r}")
    return value


def _record_parser() -> _Parser:
    parser = _Parser(prog="timelapse record", usage=USAGE, description="Record a Python program.")
    parser.add_argument("-o", "--out", default="trace-out", metavar="DIR",
                        help="trace folder to write (default: ./trace-out)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line at the end")
    parser.add_argument("--on-recorder-error", choices=("raise", "continue"), default="raise",
                        help="if the recorder itself fails: raise timelapse.RecorderError in the "
                             "program (default), or report it and let the program run on unrecorded")
    parser.add_argument("--max-depth", type=_depth, default=DEFAULT_MAX_DEPTH, metavar="N",
                        help=f"nesting depth of recorded values (default {DEFAULT_MAX_DEPTH})")
    parser.add_argument("--max-items", type=_positive, default=DEFAULT_MAX_ITEMS, metavar="N",
                        help=f"elements recorded per container (default {DEFAULT_MAX_ITEMS})")
    parser.add_argument("--max-string", type=_positive, default=DEFAULT_MAX_STRING, metavar="N",
                        help=f"characters recorded per string or bytes (default {DEFAULT_MAX_STRING})")
    parser.add_argument("--max-nodes", type=_positive, default=DEFAULT_MAX_NODES, metavar="N",
                        help=f"elements recorded per value, all its containers together (default "
                             f"{DEFAULT_MAX_NODES}); lower it to record object-heavy programs faster")
    parser.add_argument("--capture-fd", action="store_true",
                        help="also capture output written to file descriptors 1 and 2 directly "
                             "(os.write, C extensions, child processes)")
    parser.add_argument("--no-capture-io", dest="capture_io", action="store_false",
                        help="do not record stdin/stdout/stderr")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``timelapse`` console script and of ``python -m timelapse``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv:  # bad input like any other: one line on stderr, exit status 2
            raise UsageError("missing the command (usage: timelapse record [options] script.py [args ...]"
                             " | timelapse check TRACE_DIR; see timelapse --help)")
        if argv[0] in ("-h", "--help"):
            print(f"usage: {USAGE}\n\nRun 'timelapse record --help' for the recording options.")
            return 0
        if argv[0] == "--version":
            print(f"timelapse {__version__}")
            return 0
        command, rest = argv[0], argv[1:]
        if command == "check":
            return _check(rest)
        if command != "record":
            raise UsageError(f"unknown command {command!r} (expected 'record' or 'check')")
        record = parse_record(rest)
        session = _make_session(record)
    except (UsageError, RecorderError) as exc:
        print(f"timelapse: error: {exc}", file=sys.stderr)
        return 2
    # The program's first frame will sit right below run(), one frame below this one: under plain
    # python it is the first frame of all, so its recursion limit is counted from there.
    if not _start(record, session, base_depth=_frame_depth(sys._getframe()) + 1):
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
        session.exit_status = _exit_status(code)
        raise SystemExit(code) from None
    except BaseException as exc:
        _note_uncaught(session, exc)
        raise
    session.exit_status = 0
    return 0


def _check(args: list[str]) -> int:
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError("usage: timelapse check TRACE_DIR")
    from timelapse.checker import run_check

    return run_check(args[0])


def _make_session(record: _RecordCommand) -> Session:
    options, program = record.options, record.program
    return Session(
        options.out,
        program=program.path,
        args=program.args,
        on_error=options.on_recorder_error,
        max_depth=options.max_depth,
        max_items=options.max_items,
        max_string=options.max_string,
        max_nodes=options.max_nodes,
        capture_io=options.capture_io,
        capture_fd=options.capture_fd,
        exclude_files=(sys.argv[0],) if sys.argv and sys.argv[0] else (),
    )


def _start(record: _RecordCommand, session: Session, base_depth: int) -> bool:
    """Start recording and set the process up for the program; False (reported) if it cannot."""
    quiet = record.options.quiet
    try:
        session.start(base_depth=base_depth)
    except RecorderError as exc:
        print(f"timelapse: error: {exc}", file=sys.stderr)
        return False
    set_up_process(record.program)
    # atexit runs after non-daemon threads are joined and after the program's own atexit handlers
    # (registered later, run earlier), so those are recorded too.
    atexit.register(_finish_at_exit, session, quiet)
    _finish_on_sigterm(session, quiet)
    # os.exec* replaces the process (no atexit): the trace is saved and the summary printed first.
    # The program's unflushed output is not flushed: exec drops it, as without recording.
    session.before_exec = lambda: _finish(session, quiet, flush_output=False)
    return True


def _note_uncaught(session: Session, exc: BaseException) -> None:
    """The program ends with an uncaught exception: its status, and the trace's last Error event."""
    tb = program_traceback(exc.__traceback__)
    # Made without the program's code (no __str__, no __notes__); replaced by Python's own report
    # once the excepthook has printed it (see _report_without_our_frames).
    session.error_text = "Traceback (most recent call last):\n" + "".join(
        traceback.format_list(traceback.extract_tb(tb))) + describe_exception(exc) + "\n"
    if isinstance(exc, KeyboardInterrupt):
        session.exit_status, session.exit_signal = 128 + signal.SIGINT, int(signal.SIGINT)
    else:
        session.exit_status = 1
    _report_without_our_frames(session)


def _frame_depth(frame: FrameType | None) -> int:
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def _exit_status(code: object) -> int:
    """The process exit status for ``SystemExit(code)``, as the interpreter computes it."""
    if code is None:
        return 0
    if issubclass(type(code), int):     # as the interpreter's C check: code.__class__ is not read
        return int.__index__(code) & 0xFF
    return 1


def _finish(session: Session, quiet: bool, flush_output: bool = True) -> None:
    """End of the process: publish the trace and say where it is (once), or why it is not saved."""
    with _summary_lock:
        try:
            try:
                folder = session.stop()
            except KeyboardInterrupt:
                # A Ctrl-C while saving waited until the trace was saved (timelapse.interrupts);
                # the process is ending anyway.
                folder = session.stop()
        except RecorderError as exc:  # a full disk, ...: the message says what happened
            print(f"timelapse: error: {exc}", file=sys.stderr)
            return
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback at exit
            print(f"timelapse: error: could not save the trace: {exc}", file=sys.stderr)
            return
        # None: nothing was published by this process (a forked child, or already said).
        if folder is None or quiet or _summary_printed:
            return
        _summary_printed.append(True)
        if flush_output:
            try:
                sys.stdout.flush()  # the program's last output first, then our line
            except (OSError, ValueError):
                pass
        print(session.summary(), file=sys.stderr)


_summary_lock = threading.RLock()  # a SIGTERM may arrive while the main thread holds it
_summary_printed: list[bool] = []


def _finish_at_exit(session: Session, quiet: bool) -> None:
    try:
        _finish(session, quiet)
        if session.exit_signal == signal.SIGTERM:  # the program ended before the handler ran
            os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt:
        pass  # Ctrl-C again while the process ends: the trace is saved, the process ends as it was


def _finish_on_sigterm(session: Session, quiet: bool) -> None:
    """On SIGTERM (if the program does not handle it), save the trace, then die of SIGTERM as usual."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: object) -> None:
        # Never inside the recorder: a signal that lands in one of its sections waits until the
        # section is done (timelapse.interrupts), so the trace can be finished right here.
        session.exit_status, session.exit_signal = 128 + signum, signum
        finish_and_die(signum)

    def finish_and_die(signum: int) -> None:
        # SIGTERM again while the trace is saved waits for it (this handler stays in place until
        # then); only then the default action, and the process dies of SIGTERM as without us.
        _finish(session, quiet)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    session.sigterm_handler = on_sigterm  # a forked child gets SIG_DFL back (Session._forget_in_child)


#: The colours Python 3.13 puts in a traceback printed on a terminal (not kept in the trace).
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class _Copying:
    """``sys.stderr`` while Python's own excepthook prints: everything goes on to the real stream,
    and is kept for the trace."""

    def __init__(self, stream: object) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> object:
        self.parts.append(text)
        return self.stream.write(text)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


def _report_without_our_frames(session: Session) -> None:
    """Make Python's report of the program's uncaught exception start at the program's own frame,
    and keep the report Python prints as the trace's last Error event: formatting it a second time
    would run the exception's ``__str__`` and ``__notes__`` twice."""
    hook = sys.excepthook

    def report(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        trimmed = program_traceback(tb)
        exc = exc.with_traceback(trimmed)
        stderr = sys.stderr
        if hook is not sys.__excepthook__ or stderr is None:
            hook(exc_type, exc, trimmed)  # the program's own hook: the trace keeps our text
            return
        copying = _Copying(stderr)
        sys.stderr = copying    # (a signal waits until the report is printed and kept: a section)
        try:
            hook(exc_type, exc, trimmed)
        finally:
            if sys.stderr is copying:
                sys.stderr = stderr
        session.error_text = _ANSI_COLOUR.sub("", "".join(copying.parts))

    deferral.add_section(report, holds_lock=False)
    sys.excepthook = report


# After the program, the end of the process is timelapse's: a signal that lands here (a second
# Ctrl-C, a SIGTERM) waits until the trace is saved (timelapse.interrupts).
deferral.add_section(_note_uncaught, _finish, _finish_at_exit, holds_lock=False)

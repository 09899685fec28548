"""IO capture at the Python level: the stream proxies in isolation, then end to end through
``timelapse record``. The file-descriptor level (``--capture-fd``) is tests/test_fdcapture.py; the
tests here that take ``--capture-fd`` as a parameter are about the proxies under it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import PROGRAMS, checked_trace, run_python
from io_trace import assert_on_their_steps, content_of, io_events, line_of, record_bytes, step_before

from timelapse.iocapture import READ, WRITE, WRITE_OTHER, IOCapture
from timelapse.reader import decode_value

# -- the proxies in isolation (a fake on_event, fake real streams) --------------------------------


class Events(list):
    """A fake ``on_event`` that remembers every call."""

    def __call__(self, kind: int, stream: str, content: str, from_fd: bool = False) -> None:
        self.append((kind, stream, content))

    def text(self, kind: int) -> str:
        return "".join(content for k, _stream, content in self if k == kind)


def fake_stream(data: bytes = b"", *, encoding: str = "utf-8", errors: str = "strict",
                line_buffering: bool = False) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding, errors=errors,
                            line_buffering=line_buffering, newline="\n")


def written(stream: io.TextIOWrapper) -> bytes:
    stream.flush()
    return stream.buffer.getvalue()


_NAMES = ("stdin", "stdout", "stderr", "__stdin__", "__stdout__", "__stderr__")


@contextlib.contextmanager
def fake_streams():
    """Fake real streams in sys (stdin holds some input), inside the test body (pytest's own capture
    sets sys.stdout at the start of each test phase)."""
    fakes = {
        "stdin": fake_stream(b"first line\nsecond line\nthird\nrest of it\n"),
        "stdout": fake_stream(),
        "stderr": fake_stream(errors="backslashreplace", line_buffering=True),
    }
    saved = {name: getattr(sys, name) for name in _NAMES}
    for name, stream in fakes.items():
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    try:
        yield fakes
    finally:
        for name, stream in saved.items():
            setattr(sys, name, stream)


@contextlib.contextmanager
def installed(on_event=None):
    """An installed IOCapture over fake streams: yields (capture, events, fake streams)."""
    events = Events()
    with fake_streams() as fakes:
        capture = IOCapture(on_event or events)
        capture.install()
        try:
            yield capture, events, fakes
        finally:
            capture.uninstall()


def test_writes_are_reported_after_they_reach_the_real_stream():
    with installed() as (cap, events, real):
        print("hello", 42)
        print("oops", file=sys.stderr)
        sys.stdout.write("more")
        assert events == [
            (WRITE, "stdout", "hello"), (WRITE, "stdout", " "), (WRITE, "stdout", "42"),
            (WRITE, "stdout", "\n"), (WRITE_OTHER, "stderr", "oops"), (WRITE_OTHER, "stderr", "\n"),
            (WRITE, "stdout", "more"),
        ]
        assert written(real["stdout"]) == b"hello 42\nmore"
        assert written(real["stderr"]) == b"oops\n"


def test_proxies_stand_in_for_the_real_streams():
    with installed() as (cap, events, real):
        out = sys.stdout
        assert out is not real["stdout"] and sys.__stdout__ is out
        assert isinstance(out, io.TextIOWrapper) and isinstance(out, io.TextIOBase)
        assert out.encoding == "utf-8" and out.errors == "strict"
        assert sys.stderr.errors == "backslashreplace" and sys.stderr.line_buffering
        assert out.closed is False and out.writable() and out.readable() == real["stdout"].readable()
        assert repr(out) == repr(real["stdout"])
        out.reconfigure(line_buffering=True)
        assert real["stdout"].line_buffering
        with pytest.raises(io.UnsupportedOperation):
            out.fileno()  # as the real (BytesIO-backed) stream says


def test_nothing_buffered_in_the_proxy():
    with installed() as (cap, events, real):
        real["stdout"].reconfigure(write_through=True)
        sys.stdout.write("at once")
        assert real["stdout"].buffer.getvalue() == b"at once"


def test_failed_write_is_not_reported_and_raises_unchanged():
    with installed() as (cap, events, real):
        with pytest.raises(UnicodeEncodeError):
            sys.stdout.write("bad \udcff")
        with pytest.raises(TypeError):
            sys.stdout.write(b"bytes to a text stream")
        sys.stderr.write("ok \udcff")  # backslashreplace: the real stream accepts it
        assert events == [(WRITE_OTHER, "stderr", "ok \udcff")]
        assert written(real["stdout"]) == b""


def test_empty_writes_are_not_reported():
    with installed() as (cap, events, real):
        print(end="")
        sys.stdout.write("")
        assert events == []


def test_binary_writes_are_reported_decoded():
    with installed() as (cap, events, real):
        buffer = sys.stdout.buffer
        assert buffer is sys.stdout.buffer
        assert isinstance(buffer, type(real["stdout"].buffer))
        data = "é!".encode()
        buffer.write(data[:1])  # half a character: reported with the next write
        buffer.write(data[1:])
        buffer.write(bytearray(b"\xff\n"))
        buffer.writelines([b"a", memoryview(b"b")])
        assert "".join(c for _k, _s, c in events) == "é!\ufffd\nab"
        assert written(real["stdout"]) == b"\xc3\xa9!\xff\nab"


def test_reads_are_reported():
    with installed() as (cap, events, real):
        assert sys.stdin.readline() == "first line\n"
        assert next(iter(sys.stdin)) == "second line\n"
        assert sys.stdin.read(3) == "thi"
        assert sys.stdin.readlines() == ["rd\n", "rest of it\n"]
        assert sys.stdin.read() == ""
        assert events == [
            (READ, "stdin", "first line\n"), (READ, "stdin", "second line\n"), (READ, "stdin", "thi"),
            (READ, "stdin", "rd\nrest of it\n"),
        ]


def test_input_prompt_and_line_without_a_terminal():
    with installed() as (cap, events, real):
        assert input("name? ") == "first line"
        assert events == [(WRITE, "stdout", "name? "), (READ, "stdin", "first line\n")]


def test_redirect_stdout_is_not_output():
    with installed() as (cap, events, real):
        target = io.StringIO()
        with contextlib.redirect_stdout(target):
            print("into the program's own StringIO")
        print("real")
        assert target.getvalue() == "into the program's own StringIO\n"
        assert events.text(WRITE) == "real\n"


def test_uninstall_restores_only_our_proxies_and_is_idempotent():
    events = Events()
    with fake_streams() as streams:
        cap = IOCapture(events)
        cap.install()
        assert cap.installed
        mine = io.StringIO()
        sys.stderr = mine  # the program replaced stderr: it keeps its own
        cap.uninstall()
        cap.uninstall()
        assert not cap.installed
        assert sys.stdout is streams["stdout"] and sys.__stdout__ is streams["stdout"]
        assert sys.stdin is streams["stdin"]
        assert sys.stderr is mine and sys.__stderr__ is streams["stderr"]
        print("after")
    assert events == []


def test_uninstall_from_another_thread():
    with fake_streams() as streams:
        cap = IOCapture(Events())
        cap.install()
        thread = threading.Thread(target=cap.uninstall)
        thread.start()
        thread.join()
        assert sys.stdout is streams["stdout"]
        cap.uninstall()


def test_a_handler_holding_the_proxy_keeps_working_after_uninstall():
    events = Events()
    logger = logging.getLogger("timelapse-test-io")
    logger.propagate = False
    with fake_streams() as streams:
        cap = IOCapture(events)
        cap.install()
        handler = logging.StreamHandler()  # holds the proxy of sys.stderr
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        try:
            logger.warning("while recording")
            cap.uninstall()
            logger.warning("after recording")
        finally:
            logger.removeHandler(handler)
        assert events.text(WRITE_OTHER) == "while recording\n"
        assert written(streams["stderr"]) == b"while recording\nafter recording\n"


def test_output_of_the_recorder_itself_is_not_reported():
    """A write made while on_event runs (on that thread) is not the program's."""
    seen = []

    def on_event(kind, stream, content, from_fd=False):
        seen.append(content)
        sys.stderr.write("[recorder talking]")

    with installed(on_event) as (cap, events, real):
        print("x")
        assert seen == ["x", "\n"]
        assert written(real["stderr"]) == b"[recorder talking][recorder talking]"


def test_on_event_failure_propagates_after_the_write():
    def on_event(kind, stream, content, from_fd=False):
        raise RuntimeError("recorder failed")

    with installed(on_event) as (cap, events, real):
        with pytest.raises(RuntimeError, match="recorder failed"):
            sys.stdout.write("still written")
        assert written(real["stdout"]) == b"still written"


def test_writes_from_threads_are_reported_in_their_thread():
    with installed() as (cap, events, real):
        reported_in = []

        def worker(k):
            for i in range(50):
                print(f"t{k}-{i}")

        def on_event(kind, stream, content, from_fd=False):
            if content != "\n":
                assert content.startswith(threading.current_thread().name)
                reported_in.append(threading.current_thread().name)
            events(kind, stream, content)

        cap._reporter.on_event = on_event
        threads = [threading.Thread(target=worker, args=(k,), name=f"t{k}") for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(set(reported_in)) == ["t0", "t1", "t2", "t3"]
        assert sorted(written(real["stdout"]).decode().splitlines()) == sorted(
            f"t{k}-{i}" for k in range(4) for i in range(50)
        )


# -- the proxies look like the streams they stand for ---------------------------------------------


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_the_program_sees_its_streams_as_without_recording(record, options):
    program = PROGRAMS / "io_proxy_visible.py"
    expected = run_python([str(program)])
    result = record(program, options=("-q", *options))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert result.stdout.startswith("TextIOWrapper TextIOWrapper _io\n")


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_objects_holding_the_streams_record_the_streams(record, options):
    result = record(PROGRAMS / "io_proxy_visible.py", options=("-q", *options))
    trace = result.trace
    steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    values = steps[-1].values
    assert values["out"]["r"] == "<file '<stdout>' mode='w'>"
    assert trace.types[values["out"]["type_id"]]["lang_type"] == "_io.TextIOWrapper"
    assert decode_value(values["holder"], trace) == {
        "out": "<file '<stdout>' mode='w'>",
        "err": "<file '<stderr>' mode='w'>",
        "buf": "<file '<stdout>' mode='wb'>",
    }


# -- end to end through the CLI -----------------------------------------------------------------


def test_stdout_and_stderr_events_on_their_lines(record):
    program = PROGRAMS / "io_streams.py"
    result = record(program)
    unrecorded = run_python([str(program)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == unrecorded.stdout
    assert result.stderr.startswith(unrecorded.stderr)
    trace = result.trace
    assert content_of(trace, WRITE) == unrecorded.stdout
    assert content_of(trace, WRITE_OTHER) == unrecorded.stderr
    assert_on_their_steps(trace)
    by_line = {}
    for _index, kind, metadata, content in io_events(trace):
        assert metadata["stream"] == {0: "stdout", 2: "stderr"}[kind]
        assert isinstance(metadata["thread"], int)
        by_line.setdefault(metadata["line"], []).append(content)
    # consecutive writes of one line are one event
    assert by_line[line_of(program, 'print("several"')] == ["several-args-3\n"]
    assert by_line[line_of(program, "writelines")] == ["lines of text\n"]
    assert by_line[line_of(program, 'print("no newline"')] == ["no newline"]
    assert by_line[line_of(program, "file=sys.stderr")] == ["to stderr\n"]


def test_output_after_a_call_returns_mid_line_is_on_the_print_line(record):
    program = PROGRAMS / "io_streams.py"
    trace = record(program).trace
    print_line = line_of(program, "print(double(21))")
    (event,) = [e for e in io_events(trace) if e[3] == "42\n"]
    index, _kind, metadata, _content = event
    assert metadata["line"] == print_line
    assert step_before(trace, index) == (0, print_line)
    (call,) = [c for c in trace.calls() if c.function == "double" and c.args["x"].get("i") == 21]
    callee_steps = [s for s in trace.steps() if s.call is call]
    assert callee_steps and all(s.index < index for s in callee_steps)


def test_output_from_several_threads(record):
    program = PROGRAMS / "io_threads.py"
    result = record(program)
    assert result.returncode == 0, result.stderr
    trace = result.trace
    # print() writes the text and the newline separately: threads interleave between the two, on
    # the terminal as in the trace. What each thread wrote, in its order, is intact.
    by_thread: dict[int, str] = {}
    for _index, kind, metadata, content in io_events(trace):
        assert kind == WRITE
        by_thread[metadata["thread"]] = by_thread.get(metadata["thread"], "") + content
    assert sorted(by_thread.values()) == sorted(
        ["all done\n"] + ["".join(f"worker {k} line {i}\n" for i in range(20)) for k in range(4)]
    )
    assert sorted(content_of(trace, WRITE)) == sorted(result.stdout)
    assert_on_their_steps(trace)
    worker_line = line_of(program, 'print(f"worker')
    for _index, _kind, metadata, content in io_events(trace):
        if content != "all done\n":
            assert metadata["line"] == worker_line


def test_input_prompts_with_piped_stdin(record):
    program = PROGRAMS / "io_input.py"
    stdin = "Ada\nsecond\nrow one\nlast row\nthe rest\n"
    result = record(program, input=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_python([str(program)], input=stdin).stdout
    assert result.stdout.startswith("name? hello Ada\n")
    trace = result.trace
    assert content_of(trace, READ) == stdin
    assert content_of(trace, WRITE) == result.stdout
    events = io_events(trace)
    input_line = line_of(program, 'input("name? ")')
    prompt, line = [e for e in events if e[2]["line"] == input_line]
    assert (prompt[1], prompt[3]) == (WRITE, "name? ")
    assert (line[1], line[3]) == (READ, "Ada\n")
    assert [e[2]["stream"] for e in events if e[1] == READ] == ["stdin"] * 5
    assert_on_their_steps(trace)


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["python", "fd"])
def test_binary_writes(tmp_path, options):
    program = PROGRAMS / "io_binary.py"
    result, trace = record_bytes(tmp_path, program, *options)
    assert result.returncode == 0, result.stderr
    assert result.stdout == subprocess.run([sys.executable, str(program)], capture_output=True).stdout
    assert result.stdout == "text first\nbinary line\nsplit é here\n".encode() + b"bad \xff byte\ntext after\n"
    expected = "text first\nbinary line\nsplit é here\nbad \ufffd byte\ntext after\n"
    assert content_of(trace, WRITE) == expected
    assert_on_their_steps(trace)


def test_streams_swapped_by_the_program(record):
    result = record(PROGRAMS / "io_redirect.py")
    assert result.returncode == 0, result.stderr
    trace = result.trace
    stdout = content_of(trace, WRITE)
    assert stdout == result.stdout
    assert "captured by the program" not in stdout.replace("'captured by the program\\n'", "")
    assert "also invisible" not in stdout
    assert "back on stdout\n" in stdout
    assert content_of(trace, WRITE_OTHER) == "log: a log line\n"


def test_encoding_error_is_not_recorded(record):
    result = record(PROGRAMS / "io_encoding.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before\ncaught UnicodeEncodeError\nutf-8 strict False 1\n"
    assert content_of(result.trace, WRITE) == result.stdout


def test_ten_megabytes_without_loss(record):
    program = PROGRAMS / "io_big.py"
    result = record(program, options=("--max-items", "1"))
    assert result.returncode == 0, result.stderr
    unrecorded = run_python([str(program)])
    assert len(unrecorded.stdout) > 9_000_000
    assert result.stdout == unrecorded.stdout
    assert content_of(result.trace, WRITE) == unrecorded.stdout


def test_no_capture_io(record):
    result = record(PROGRAMS / "io_encoding.py", options=("--no-capture-io",))
    assert result.returncode == 0, result.stderr
    assert io_events(result.trace) == []
    assert result.stdout == "before\ncaught UnicodeEncodeError\nutf-8 strict False 1\n"


ENDINGS = {
    # how: (exit status, does the trace end in an error)
    "normal": 0,
    "exit": 3,
    "exception": 1,
    "sigint": -signal.SIGINT,
    "sigterm": -signal.SIGTERM,
}


@pytest.mark.parametrize("fd", [False, True], ids=["python", "fd"])
@pytest.mark.parametrize("how", list(ENDINGS))
def test_output_at_each_process_end(record, how, fd):
    options = ("--capture-fd",) if fd else ()
    result = record(PROGRAMS / "io_ends.py", how, options=options)
    assert result.returncode == ENDINGS[how], result.stderr
    assert result.stdout == f"unflushed output for {how}"
    assert result.stderr.startswith(f"stderr for {how}\n")
    trace = result.trace
    assert content_of(trace, WRITE) == f"unflushed output for {how}"
    assert content_of(trace, WRITE_OTHER).startswith(f"stderr for {how}\n")


def test_interactive_input_on_a_terminal(tmp_path):
    """On a terminal, input() reads through readline, around sys.stdin: still recorded."""
    pty = pytest.importorskip("pty")
    program = tmp_path / "ask.py"
    program.write_text('name = input("who? ")\nprint("hi", name)\n')
    out = tmp_path / "trace"
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out), str(program)],
        stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    while b"who? " not in seen and time.monotonic() < deadline:
        seen += os.read(primary, 1024)
    os.write(primary, b"Grace\n")
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=60) == 0
    os.close(primary)
    assert b"hi Grace" in seen
    trace = checked_trace(out)
    events = [(kind, content) for _i, kind, _m, content in io_events(trace)]
    assert events == [(WRITE, "who? "), (READ, "Grace\n"), (WRITE, "hi Grace\n")]

"""Drives IOCapture(capture_fd=True) directly, one case per run, with a fake on_event (no recorder):
``python fd_cases.py CASE REPORT``. Writes a JSON report of what it saw to the file REPORT (stdout and
stderr are what is being tested). tests/test_fdcapture.py runs it."""
import ctypes  # noqa: F401 - imported before the fds run out (case "install_fails")
import fcntl  # noqa: F401 - the same
import json
import os
import sys
import threading
import time
import warnings

from timelapse.errors import RecorderError
from timelapse.iocapture import IOCapture

case, report_path = sys.argv[1], sys.argv[2]
report: dict = {}
events: list = []


def on_event(kind, stream, content, from_fd=False):
    events.append([int(kind), stream, content, from_fd])


def identity(fd):
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]


def open_fds():
    return sorted(os.listdir("/proc/self/fd"), key=int)


def take_every_free_fd():
    """Open /dev/null until no fd is left: the fds taken."""
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return taken


def wait_for_reader(capture):
    deadline = time.monotonic() + 10
    while not capture._fd.reader_done and time.monotonic() < deadline:
        time.sleep(0.01)
    return capture._fd.reader_done


if case == "fork":
    # A forked child writes while another thread of the parent holds the fd lock: the child must not
    # wait for a lock whose owner does not exist in it, nor read the parent's pipes.
    warnings.simplefilter("ignore", DeprecationWarning)  # "this process is multi-threaded"
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with capture._fd.lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:
        print("child python", flush=True)
        os.write(1, b"child fd\n")
        os._exit(0)
    deadline = time.monotonic() + 10
    status = None
    while status is None and time.monotonic() < deadline:
        done, code = os.waitpid(pid, os.WNOHANG)
        status = code if done else None
        time.sleep(0.01)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    report["child_exit"] = None if status is None else os.waitstatus_to_exitcode(status)
    release.set()
    holder.join()
    print("parent after", flush=True)
    capture.uninstall()

elif case == "install_fails":
    # Only FREE fds are left: capture fails part-way (which part depends on FREE) and must leave fds
    # 1 and 2, sys.stdout and the number of open fds as they were.
    free = int(sys.argv[3])
    before = {"stdout": identity(1), "stderr": identity(2)}
    original = sys.stdout
    fillers = take_every_free_fd()
    for _ in range(free):
        os.close(fillers.pop())
    capture = IOCapture(on_event, capture_fd=True)
    try:
        capture.install()
    except RecorderError as exc:
        report["error"] = str(exc)
    reopened = take_every_free_fd()
    report["free_after"] = len(reopened)
    for fd in fillers + reopened:
        os.close(fd)
    report["same_fds"] = before == {"stdout": identity(1), "stderr": identity(2)}
    report["same_stdout"] = sys.stdout is original and sys.__stdout__ is original
    report["threads"] = threading.active_count()
    print("still writes", flush=True)

elif case == "nothing_left":
    # The reader thread is not the program's, and once it has ended no fd of ours is left open.
    fds_before, threads_before = open_fds(), threading.enumerate()
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    report["threads_same"] = threading.enumerate() == threads_before
    report["fds_during"] = len(open_fds()) - len(fds_before)
    os.write(1, b"fd\n")
    print("python", flush=True)
    capture.uninstall()
    report["reader_done"] = wait_for_reader(capture)
    report["fds_same"] = open_fds() == fds_before

elif case == "program_redirects_fd1":
    # The program points fd 1 at a file itself: writes go there, as without recording, and
    # uninstall leaves fd 1 where the program put it.
    path = sys.argv[3]
    saved = os.dup(1)
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    print("before", flush=True)
    with open(path, "wb") as file:
        os.dup2(file.fileno(), 1)
        print("python into the file", flush=True)
        os.write(1, b"fd into the file\n")
        capture.uninstall()
        report["fd1_is_the_file"] = identity(1) == identity(file.fileno())
    os.dup2(saved, 1)
    print("after", flush=True)

elif case == "destination_gone":
    # Whoever reads our stdout goes away: writers to fd 1 get EPIPE, as without recording.
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    print("ready", flush=True)
    started = time.monotonic()
    report["epipe"] = False
    while time.monotonic() < started + 20:
        try:
            os.write(1, b"x" * 4096)
        except BrokenPipeError:
            report["epipe"] = True
            break
        time.sleep(0.001)
    report["seconds"] = round(time.monotonic() - started, 1)
    capture.uninstall()
    report["events_seen"] = bool(events)

elif case == "seek_tell":
    # stdout is a file: the private stream seeks and tells on the file, after what fd 1 wrote.
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    print("abc", flush=True)
    report["seekable"] = sys.stdout.seekable()
    tells = [sys.stdout.tell()]
    os.write(1, b"de\n")
    print("fgh", flush=True)  # forwards "de\n" first
    tells.append(sys.stdout.tell())
    report["tells"] = tells
    capture.uninstall()

elif case == "reconfigure":
    # What the program changed on the stream under capture stays changed after uninstall.
    original = sys.stdout
    before = [original.line_buffering, original.errors]
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
    report["during"] = [sys.stdout.line_buffering, sys.stdout.errors]
    capture.uninstall()
    report["before"] = before
    report["after"] = [original.line_buffering, original.errors]
    report["restored"] = sys.stdout is original

elif case == "encoding":
    # The private stream mirrors the original's encoding and errors; fd-level output is decoded
    # with that encoding.
    before = [sys.stdout.encoding, sys.stdout.errors]
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    report["before"] = before
    report["during"] = [sys.stdout.encoding, sys.stdout.errors]
    print("é", flush=True)
    os.write(1, "ü\n".encode("latin-1"))
    print("\u20ac", flush=True)  # not in latin-1: backslashreplace, as on the real stream
    capture.uninstall()

elif case == "fd_report_fails":
    # A failure reporting fd-level output stops fd reporting; the output keeps reaching stdout.
    attempts = []

    def failing_on_event(kind, stream, content, from_fd=False):
        if from_fd:
            attempts.append(content)
            raise RuntimeError("recorder failed")
        on_event(kind, stream, content, from_fd)

    capture = IOCapture(failing_on_event, capture_fd=True)
    capture.install()
    os.write(1, b"one\n")
    time.sleep(0.2)
    print("python", flush=True)
    os.write(1, b"two\n")
    time.sleep(0.2)
    print("python again", flush=True)
    capture.uninstall()
    report["fd_attempts"] = len(attempts)

elif case == "terminal":
    # On a terminal: Python's streams still say so; C code and children see a pipe until uninstall.
    capture = IOCapture(on_event, capture_fd=True)
    capture.install()
    report["during"] = [sys.stdout.isatty(), sys.stderr.isatty(), os.isatty(1), os.isatty(2)]
    print("on the terminal", flush=True)
    capture.uninstall()
    report["after"] = [sys.stdout.isatty(), os.isatty(1), os.isatty(2)]

else:
    raise SystemExit(f"unknown case {case!r}")

report["events"] = events
with open(report_path, "w", encoding="utf-8") as out:
    json.dump(report, out)

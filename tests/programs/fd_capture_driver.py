"""Drives IOCapture(capture_fd=True) directly, with a fake on_event (no recorder): prints a JSON report
of what it saw on stderr's last line (tests/test_fdcapture.py)."""
import io
import json
import logging
import os
import subprocess
import sys

from timelapse.iocapture import IOCapture

events = []


def on_event(kind, stream, content, from_fd=False):
    events.append([kind, stream, content, from_fd])


original_stdout = sys.stdout
capture = IOCapture(on_event, capture_fd=True)
capture.install()
report = {
    "fileno": [sys.stdout.fileno(), sys.stderr.fileno()],
    "isinstance": isinstance(sys.stdout, io.TextIOWrapper),
    "isatty": [sys.stdout.isatty(), os.isatty(1)],
    "replaced": sys.stdout is not original_stdout and sys.__stdout__ is sys.stdout,
}
print("python 1", flush=True)
os.write(1, b"os.write 1\n")
subprocess.run(["echo", "child 1"], check=True)
os.write(2, b"os.write 2\n")
print("python 2", flush=True)
handler = logging.StreamHandler(sys.stdout)  # holds the proxy
capture.uninstall()
capture.uninstall()
report["restored"] = sys.stdout is original_stdout and sys.__stdout__ is original_stdout
print("after uninstall", flush=True)
handler.stream.write("handler after\n")
handler.flush()
os.write(1, b"fd after\n")
report["events"] = events
sys.stderr.write(json.dumps(report) + "\n")

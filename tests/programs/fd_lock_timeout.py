"""Uninstall while the fd reader thread is stuck reporting to a "recorder" whose lock this thread holds
(a recorder failure inside a monitoring callback). Uninstall waits _LOCK_TIMEOUT for the fd lock, then
must finish without it: it must not take the lock again (that would wait forever)."""
import os
import sys
import threading

from timelapse import fdcapture
from timelapse.iocapture import IOCapture

fdcapture._LOCK_TIMEOUT = 0.5
recorder_lock = threading.Lock()
reader_waiting = threading.Event()
events = []


def on_event(kind, stream, content, from_fd=False):
    if from_fd:
        reader_waiting.set()
        with recorder_lock:  # the reader thread waits here, holding the fd lock
            events.append(content)


capture = IOCapture(on_event, capture_fd=True)
capture.install()
sys.stdout.write("buffered python output\n")  # stdout is a pipe: this waits in the stream's buffer
with recorder_lock:
    os.write(1, b"from fd\n")
    reader_waiting.wait(10)
    capture.uninstall()
print("after uninstall", flush=True)

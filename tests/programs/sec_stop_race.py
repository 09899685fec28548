"""A callback fails in one thread while the main thread stops the recording (issue 9, item 13):
the two take the session's and the recorder's locks in one order, so neither waits forever."""
import sys
import threading
import time

from timelapse.session import Session

started = threading.Event()


def fault(code, line):
    if code.co_name == "victim":
        started.set()
        time.sleep(0.05)    # inside the callback, the recorder's lock held, while stop() begins
        raise OSError("injected")


def victim():
    a = 1
    return a


def worker():
    try:
        victim()
    except Exception as exc:  # noqa: BLE001
        print("worker:", type(exc).__name__)


session = Session(sys.argv[1], on_error="continue", _fault=fault).start(sys._getframe())
t = threading.Thread(target=worker)
t.start()
started.wait(timeout=10)
session.stop()
t.join(timeout=10)
print("alive:", t.is_alive())

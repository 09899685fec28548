"""The recorder fails inside a callback (injected): argv[1] = out folder, argv[2] = raise|continue."""
import sys

import timelapse
from timelapse.session import Session


def fault(code, line):
    if code.co_name == "victim":
        raise OSError("cannot read the frame's locals (injected)")


def victim():
    a = 1
    return a + 1


def afterwards():
    b = 2
    return b * 2


session = Session(sys.argv[1], on_error=sys.argv[2], _fault=fault).start(sys._getframe())
caught = 0
try:
    victim()
except timelapse.RecorderError as exc:
    caught += 1
    print("handler:", exc)
    print("cause:", type(exc.__cause__).__name__)
print("afterwards:", afterwards())
print("recording:", timelapse.is_recording())
session.stop()
print("caught:", caught)

"""Uses the Python API: only what runs between start and stop is recorded."""
import sys

import timelapse


def before():
    return "not recorded"


def inside(x):
    y = x + 1
    return y


def outer(out):
    before()
    session = timelapse.start(out)
    assert timelapse.is_recording()
    try:
        timelapse.start(out + "-2")
    except timelapse.RecorderError as exc:
        print("second start:", exc)
    value = inside(41)
    session.stop()
    session.stop()  # a no-op
    assert not timelapse.is_recording()
    return value


print(outer(sys.argv[1]))
with timelapse.record(sys.argv[1] + "-ctx"):
    print(inside(1))
print(before())

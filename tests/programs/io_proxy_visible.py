"""What a program can see of sys.stdout: the same with and without recording (tests/test_iocapture.py)."""
import io
import sys


class Holder:
    def __init__(self):
        self.out = sys.stdout
        self.err = sys.stderr
        self.buf = sys.stdout.buffer


holder = Holder()
out = sys.stdout
kind = type(sys.stdout)
print(kind.__name__, kind.__qualname__, kind.__module__)
print(type(sys.stdin).__name__, type(sys.stdout.buffer).__name__, type(sys.stdout.buffer).__module__)
print(isinstance(sys.stdout, io.TextIOWrapper), isinstance(sys.stdout, io.TextIOBase),
      isinstance(sys.stdout.buffer, io.BufferedWriter), sys.stdout.__class__ is io.TextIOWrapper)
print(repr(sys.stdout), vars(sys.stdout), "write" in dir(sys.stdout))
print("done")

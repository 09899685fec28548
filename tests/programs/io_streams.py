"""Output on stdout and stderr, in the ways programs write it (tests/test_iocapture.py)."""
import sys


def double(x):
    y = x * 2
    return y


print("plain line")
print("several", "args", 3, sep="-")
print(double(21))
print("no newline", end="")
print(" ...continued", flush=True)
sys.stdout.write("direct write\n")
sys.stdout.writelines(["lines ", "of ", "text\n"])
print("to stderr", file=sys.stderr)
sys.stderr.write("stderr write\n")
print("stdout again")
print("é ü 日本", double(1))

"""An encoding error on the real stream: nothing is output, nothing recorded, the error propagates."""
import sys

sys.stdout.reconfigure(errors="strict")  # whatever the locale made it
print("before")
try:
    print("bad \udcff surrogate")
except UnicodeEncodeError as exc:
    caught = type(exc).__name__
print("caught", caught)
print(sys.stdout.encoding, sys.stdout.errors, sys.stdout.isatty(), sys.stdout.fileno())

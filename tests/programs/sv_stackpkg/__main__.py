"""sv_stack.py as a package run with -m: print the stack, then raise."""
import inspect
import sys
import traceback


def where():
    return [(f.function, f.filename) for f in inspect.stack()]


for function, filename in where():
    print("inspect", function, filename)
for entry in traceback.extract_stack():
    print("extract", entry.name, entry.filename)
if True:
    raise ValueError("from the stack program")

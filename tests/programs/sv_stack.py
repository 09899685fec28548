"""Print the stack as the program sees it (inspect, traceback), then raise."""
import inspect
import sys
import traceback


def where():
    return [(f.function, f.filename) for f in inspect.stack()]


for function, filename in where():
    print("inspect", function, filename)
for entry in traceback.extract_stack():
    print("extract", entry.name, entry.filename)
if sys.argv[1:] == ["raise"]:
    raise ValueError("from the stack program")

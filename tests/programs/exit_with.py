"""Exit the way argv[1] says: an int, a string, none, an exception, or a normal end."""
import sys


def leave(how):
    if how == "int":
        sys.exit(3)
    if how == "str":
        sys.exit("fatal: bad thing")
    if how == "none":
        sys.exit(None)
    if how == "raise":
        raise ValueError("boom")
    return "normal"


print("before")
leave(sys.argv[1] if len(sys.argv) > 1 else "normal")
print("after")

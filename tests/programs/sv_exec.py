"""Replace the process with os.exec*: argv[1] 'execv', 'execlp' (a PATH search), or 'fails' (the exec
fails; the program goes on)."""
import os
import sys


def work(n):
    return n * 2


print("before", work(21), flush=True)
print("buffered, lost at exec", end="")  # not flushed: exec drops it, as without recording
how = sys.argv[1]
new_image = [sys.executable, "-c", "print('new image')"]
if how == "execv":
    os.execv(sys.executable, new_image)
elif how == "execlp":
    os.execlp(os.path.basename(sys.executable), *new_image)
else:
    try:
        os.execv("/nonexistent/program", ["program"])
    except OSError as exc:
        print("\nexec failed:", type(exc).__name__, work(2))

"""Fork: a child that exits normally, and one that is sent SIGTERM while it sleeps."""
import os
import signal
import sys
import time

pid = os.fork()
if pid == 0:
    print("child sees SIGTERM default:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
    sys.exit(0)  # a normal exit: atexit handlers run in the child
os.waitpid(pid, 0)

pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
started = time.monotonic()
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print("child killed by SIGTERM:", os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
print("at once:", time.monotonic() - started < 2)

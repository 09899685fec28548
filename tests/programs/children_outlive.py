"""The parent ends before its child: the child waits for a file to appear (argv[1]), then ends 4.
A second child is killed (SIGKILL) by the parent: it leaves no trace."""
import os
import signal
import subprocess
import sys

if len(sys.argv) == 2:
    # (Not on our own stdout: whoever reads the parent's output would wait for the child too.)
    late = subprocess.Popen([sys.executable, __file__, sys.argv[1], "late"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    late.stdout.readline()  # it runs (and records) before the parent ends
    killed = subprocess.Popen([sys.executable, __file__, sys.argv[1], "killed"], stdout=subprocess.PIPE)
    killed.stdout.readline()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    print("late child", late.pid, "killed child", killed.pid, flush=True)
elif sys.argv[2] == "late":
    import time
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(4)
else:
    print("ready", flush=True)
    import time
    time.sleep(60)

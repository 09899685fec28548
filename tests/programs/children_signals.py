"""A child ended by SIGTERM (saved, then dies of it) and one recorded with -m."""
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

busy = subprocess.Popen([sys.executable, "-c", "import time\nprint('up', flush=True)\nwhile True: time.sleep(0.01)"],
                        stdout=subprocess.PIPE)
busy.stdout.readline()
busy.send_signal(signal.SIGTERM)
print("terminated", busy.wait())
done = subprocess.run([sys.executable, "-m", "children_leaf", "2"], cwd=HERE)
print("module exit", done.returncode)

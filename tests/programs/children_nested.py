"""A child that starts a child (a grandchild), and a child that replaces itself (os.execv)."""
import os
import subprocess
import sys

HERE = os.path.abspath(__file__)

if len(sys.argv) == 1:
    subprocess.run([sys.executable, HERE, "child"], check=True)
    subprocess.run([sys.executable, HERE, "exec"], check=True)
elif sys.argv[1] == "child":
    print("child starts its own", flush=True)
    subprocess.run([sys.executable, HERE, "grandchild"], check=True)
elif sys.argv[1] == "exec":
    os.execv(sys.executable, [sys.executable, HERE, "grandchild"])
else:
    print("grandchild", os.getpid(), flush=True)

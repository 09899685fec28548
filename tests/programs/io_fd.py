"""Output that bypasses sys.stdout: os.write, a child process, C code (printf through ctypes)."""
import ctypes
import os
import subprocess
import sys
import time

print("python before", flush=True)
os.write(1, b"fd one write\n")
os.write(2, b"fd two write\n")
time.sleep(0.2)
subprocess.run(["echo", "from a child"])
time.sleep(0.2)
ctypes.CDLL(None).printf(b"from C printf\n")
print("python after", flush=True)
print("python stderr", file=sys.stderr)

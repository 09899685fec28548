"""A child process writes MB megabytes through fd 1 (tests/test_fdcapture.py): with --capture-fd, all of it
goes through the recorder's pipe. 'é' is two bytes in UTF-8 and the writes have odd sizes, so pipe
reads split characters."""
import subprocess
import sys

megabytes = int(sys.argv[1])
child = f"""
import os
chunk = ("é" * 32768 + "\\n").encode()  # 65,537 bytes
for _ in range({megabytes} * 16):
    os.write(1, chunk)
"""
subprocess.run([sys.executable, "-c", child], check=True)
print("child done")

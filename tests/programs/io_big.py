"""About 10 MB of output, in big and small writes."""
import sys

chunk = "".join(chr(0x61 + i % 26) for i in range(9999)) + "\n"
for i in range(900):
    sys.stdout.write(chunk)
for i in range(20000):
    print("line", i, "é")

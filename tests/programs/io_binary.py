"""Binary writes through sys.stdout.buffer, a character split over two writes, invalid bytes."""
import sys

print("text first", flush=True)
sys.stdout.buffer.write(b"binary line\n")
data = "split é here\n".encode("utf-8")
cut = data.index(b"\xc3") + 1
sys.stdout.buffer.write(data[:cut])
sys.stdout.buffer.write(data[cut:])
sys.stdout.buffer.write(b"bad \xff byte\n")
sys.stdout.buffer.flush()
print("text after")

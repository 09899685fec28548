"""Many steps (a trace of several megabytes), then exit with the status in argv[1]."""
import sys

total = 0
for i in range(60_000):
    total += i
print("total", total)
sys.exit(int(sys.argv[1]))

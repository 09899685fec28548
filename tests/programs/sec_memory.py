"""A MemoryError the program catches (issue 9, item 5)."""
import resource
import sys

rss = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
limit = rss + 300 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
caught = 0
for attempt in range(10):
    data = []
    try:
        while True:
            data.append(bytearray(1024 * 1024))
    except MemoryError:
        caught += 1
    data = None
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("caught", caught)

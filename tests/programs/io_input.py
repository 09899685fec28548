"""Reads from stdin in every way: input() with a prompt, readline, iteration, read."""
import sys

name = input("name? ")
print("hello", name)
line = sys.stdin.readline()
print("line:", line.strip())
for row in sys.stdin:
    print("row:", row.strip())
    if row.startswith("last"):
        break
rest = sys.stdin.read()
print("rest:", rest.strip())

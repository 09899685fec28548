"""Busy, no threads, no SIGTERM handler: killed by SIGTERM while recorded (issue 9, item 1)."""
import sys


def work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


print("ready", flush=True)
while True:
    work(50)

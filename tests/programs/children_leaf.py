"""A child process: doubles its argument, exits with status 3."""
import sys


def double(n):
    return n * 2


print("leaf", double(int(sys.argv[1])), flush=True)
sys.exit(3)

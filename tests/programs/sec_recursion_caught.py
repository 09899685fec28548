"""A RecursionError caught in the deepest frame (issue 9, item 24)."""
import sys

sys.setrecursionlimit(60)


def down(n):
    try:
        return down(n + 1)
    except RecursionError:
        caught = n
        return caught


print(down(0) > 0)

"""Recurses until RecursionError, which the deepest frame catches (issue 9, item 24)."""

import sys


def dive(depth):
    try:
        return dive(depth + 1)
    except RecursionError:
        caught = depth
        return caught


sys.setrecursionlimit(60)
print(dive(0) > 0)

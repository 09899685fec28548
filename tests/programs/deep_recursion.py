import sys

reached = 0


def down(n):
    global reached
    reached = n
    return down(n + 1)


try:
    down(1)
except RecursionError as error:
    print("caught at", reached, error)
print("limit", sys.getrecursionlimit())
sys.setrecursionlimit(300)
try:
    down(1)
except RecursionError:
    print("caught at", reached)

"""Recursion: naive Fibonacci plus Ackermann; many short calls, few locals. argv[1]: fib n."""
import sys


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def ackermann(m, n):
    if m == 0:
        return n + 1
    if n == 0:
        return ackermann(m - 1, 1)
    return ackermann(m - 1, ackermann(m, n - 1))


def main(n):
    total = fib(n)
    total += ackermann(2, 200)  # recursion depth ~400
    print("checksum", total)


main(int(sys.argv[1]) if len(sys.argv) > 1 else 26)

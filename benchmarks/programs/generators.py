"""Generators: a pipeline of generator functions and a generator expression.

argv[1]: scale factor (default 1).
"""
import sys


def numbers(limit):
    n = 0
    while n < limit:
        yield n
        n += 1


def squares(source):
    for value in source:
        yield value * value


def only_odd(source):
    for value in source:
        if value & 1:
            yield value


def windows(source, size):
    window = []
    for value in source:
        window.append(value)
        if len(window) == size:
            yield tuple(window)
            window = window[1:]


def main(scale):
    total = 0
    for w in windows(only_odd(squares(numbers(90000 * scale))), 3):
        total = (total + sum(w)) % 1000000007
    total += sum(x % 13 for x in numbers(20000 * scale))
    print("checksum", total)


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

"""Definitions whose steps the rule step-outside-function must keep in their own call."""

import functools


def logged(function):
    @functools.wraps(function)
    def wrapper(*args):
        return function(*args)
    return wrapper


@logged
@logged
def squares(n):
    return [i * i for i in range(1, n + 1)]


def total(values): return sum(v for v in values)  # a one-line def with a generator expression


class Counter:
    start = 1

    def __init__(self):
        self.count = self.start

    def bump(self, by=lambda: 1):
        self.count += by() + (lambda x: x)(1)
        return self.count


def counting():
    yield 1
    yield 2


def run():
    counter = Counter()
    counter.bump()
    values = squares(3)
    for _ in counting():
        pass
    try:
        raise ValueError("x")
    except ValueError:
        ok = "ok"
    print(values, total([1, 2, 3, 4]), counter.count, ok)


run()

"""Every kind of parameter, and values of the basic types."""


def add(a, b):
    return a + b


def f(p, /, q, *args, r, **kwargs):
    total = p + q + r
    return total


def greet(name, punctuation="!"):
    message = "hello " + name + punctuation
    return message


def basics():
    n = None
    flag = True
    count = 7
    big = 2**70
    ratio = 2.5
    text = "héllo\nworld"
    items = [1, "two", 3.0]
    pair = (1, 2)
    table = {"a": 1, "b": [2]}
    return n, flag, count, big, ratio, text, items, pair, table


add(3, 4.5)
f(1, 2, 3, 4, r=5, s=6, t=7)
greet("world")
basics()

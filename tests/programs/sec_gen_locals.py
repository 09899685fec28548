"""A generator keeps its locals() dict across a yield (Python 3.12's snapshot)."""


def gen():
    x = 1
    l = locals()
    yield 1
    print(sorted(l))


g = gen()
next(g)
next(g, None)

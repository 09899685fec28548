"""Generators closed early: with no try, and with a finally (issue 9, item 25)."""


def plain():
    yield 1
    yield 2


def with_finally():
    try:
        yield 1
    finally:
        print("cleanup")


g = plain()
next(g)
g.close()
h = with_finally()
next(h)
h.close()
print("done")

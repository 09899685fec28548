"""Odd locals for the compiled locals loop (tests/test_speedups.py): many names, keys that are
not strs, names a frame gains as it runs, secrets, values of every kind."""
import sys

CALLS = []


class Key:
    """A key whose hash is that of a local's name: a dict that holds it compares it."""

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        CALLS.append("hash")
        return hash(self.name)

    def __eq__(self, other):
        CALLS.append("eq")
        return other == self.name

    def __repr__(self):
        return f"Key({self.name!r})"


class Name(str):
    pass


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def many():
    names = {}
    exec("\n".join(f"v{i} = {i} * 1.5" for i in range(300)), globals(), names)
    total = 0
    for i in range(3):
        total += i
    return total


SOURCE = "def wide(seed):\n" + "".join(f"    a{i} = seed + {i}\n" for i in range(120)) + (
    "    return a0 + a119\n")
exec(SOURCE)


def scalars(n):
    i, s, f, b, none, big = 0, "text", 0.5, True, None, 10**30
    neg, nan, inf = -0.0, float("nan"), float("inf")
    for i in range(n):
        s = s + str(i)
        f = f * 1.5
        b = not b
        big = big * 3
    return i, s, f, b, none, big, neg, nan, inf


def odd_keys():
    l = locals()
    l["added"] = 1                    # a name the code does not declare (3.12: in the dict)
    l[1] = "one"                      # keys that are not strs (3.12)
    l[Key("x")] = "collides"
    l[Name("sub")] = "a str subclass"
    x = 2
    y = [x, l.get(1)]
    del l[1]
    token = "abc"                     # a secret's name (--redact-name token)
    return x, y, token


def grows():
    f = sys._getframe()
    a = 1
    f.f_locals["later"] = 2           # 3.13: an extra local; 3.12: gone at the next step
    b = a + 1
    f.f_locals["password"] = "hunter2"  # a secret appearing mid-frame
    c = b + 1
    try:
        f.f_locals[3] = "three"       # 3.13: a non-str extra local
    except Exception as exc:
        c = type(exc).__name__
    d = Point(c, [a, b])
    return d


def generator(n):
    acc = []
    for i in range(n):
        acc.append(i)
        yield i, acc


print(many(), wide(1), scalars(5)[:6])
print(odd_keys())
print(grows().x)
print(sum(i for i, _ in generator(4)))
print(sorted(set(CALLS)))

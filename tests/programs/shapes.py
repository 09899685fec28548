"""Every code shape: decorators, context managers, closures, lambdas, comprehensions, generator
expressions, class bodies, metaclasses, properties, exec/eval."""
import contextlib
import functools


def logged(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        result = func(*args, **kwargs)
        return result

    return wrapper


@logged
def double(x):
    return x * 2


@contextlib.contextmanager
def managed(name):
    entered = name
    yield entered.upper()
    entered = None


class Meta(type):
    def __new__(mcs, name, bases, namespace):
        namespace["tag"] = name.lower()
        return super().__new__(mcs, name, bases, namespace)


class Shape(metaclass=Meta):
    sides = 0

    def __init__(self, size):
        self.size = size

    @property
    def area(self):
        return self.size * self.size


def make_counter():
    count = 0

    def bump():
        nonlocal count
        count += 1
        return count

    return bump


bump = make_counter()
bump()
bump()
squares = [n * n for n in range(4)]
evens = {n for n in range(6) if n % 2 == 0}
total = sum(n for n in range(5))
add = lambda a, b: a + b  # noqa: E731
with managed("ctx") as shout:
    doubled = double(add(1, 2))
square = Shape(3)
area = square.area
evaluated = eval("1 + 2")
exec("executed = 40 + 2")
print(squares, sorted(evens), total, shout, doubled, area, Shape.tag, evaluated, executed)

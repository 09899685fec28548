"""Values whose capture could change the program: a printing, mutating __repr__; cycles; sets."""


class Loud:
    seen = 0

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        Loud.seen += 1
        print("repr called!")
        return f"Loud({self.name})"

    def __eq__(self, other):
        Loud.seen += 100
        return False

    __hash__ = object.__hash__


def scope_demo(limit):
    outer = 10

    def inner(step):
        return outer + step + limit

    made = inner(1)
    return made


def last_line_effect():
    before = 1
    after = before + 41


class LoudMeta(type):
    """A class's class whose comparisons and hash are the program's own code."""

    def __eq__(cls, other):
        Loud.seen += 1000
        return type.__eq__(cls, other)

    def __hash__(cls):
        Loud.seen += 1000
        return type.__hash__(cls)


class Marker(metaclass=LoudMeta):
    pass


class Watched:
    """An object whose __class__ is the program's code (isinstance() would read it)."""

    @property
    def __class__(self):
        Loud.seen += 10000
        return Watched


def uses_marker():
    try:
        raise ValueError(marker, 2)     # an exception event describes its args
    except ValueError:
        return [marker, watched]        # globals read: the recorder tells code from data


loud = Loud("a")
marker = Marker()
watched = Watched()
uses_marker()
cycle = [1, 2]
cycle.append(cycle)
table = {"self": None}
table["self"] = table
names = {"pear", "apple", "fig"}
scope_demo(5)
last_line_effect()
print("seen", Loud.seen, loud.name, len(cycle), len(table))

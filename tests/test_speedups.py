"""The compiled signature (``timelapse._speedups``) is the Python one (``snapshot.python_signature``):
the same bytes, the same objects kept in the same order, None in the same cases, for random object
graphs and limits; it holds no reference after it returns, and it never runs the program's code.

The C tests are skipped when the extension is not built; under ``TIMELAPSE_PURE=1`` they still run
(the module is imported directly), only ``snapshot.signature`` is the Python one then."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import tracemalloc
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timelapse import snapshot
from timelapse.snapshot import MAX_HELD_TEXT, python_signature


def test_version_says_which_implementation():
    def version(env_pure=None, block=False):
        env = os.environ.copy()
        env.pop("TIMELAPSE_PURE", None)
        if env_pure is not None:
            env["TIMELAPSE_PURE"] = env_pure
        code = ("import sys; sys.modules['timelapse._speedups'] = None; " if block else "") + (
            "from timelapse.cli import main; raise SystemExit(main(['--version']))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    try:
        import timelapse._speedups  # noqa: F401
        built = True
    except ImportError:
        built = False
    expected = "(compiled speedups)" if built else "(pure Python: speedups not built)"
    assert version().endswith(expected)
    assert version("0").endswith(expected)
    assert version("1").endswith("(pure Python: TIMELAPSE_PURE)")
    assert version(block=True).endswith("(pure Python: speedups not built)")
    assert version().startswith("timelapse ")


def test_implementation_follows_the_environment():
    pure = os.environ.get("TIMELAPSE_PURE", "") not in ("", "0")
    if pure:
        assert snapshot.IMPLEMENTATION == "python"
        assert snapshot.signature is python_signature
    elif snapshot.IMPLEMENTATION == "c":
        from timelapse import _speedups
        assert snapshot.signature is _speedups.signature


speedups = pytest.importorskip("timelapse._speedups", reason="the compiled speedups are not built")
signature = speedups.signature


def test_constants_agree():
    assert speedups.MAX_HELD_TEXT == snapshot.MAX_HELD_TEXT
    assert speedups.MAX_DEPTH == snapshot.MAX_DEPTH


# -- The classes of the graphs ------------------------------------------------------------------

class Plain:
    """Fields in __dict__ (a getset_descriptor)."""


class PlainSub(Plain):
    """Read through its base's descriptor (descr_check: a subclass passes)."""


class Slotted:
    """Fields read through a member_descriptor (a slot that holds a dict, or not)."""
    __slots__ = ("fields", "other")


class Unknown:
    """Not in the table: no signature."""


class Impostor:
    """In the table under its id, but with another class: no signature."""


class Mismatched:
    """In the table with a descriptor of another class: descr_check fails, no signature."""


class ListSub(list):
    pass


class DictSub(dict):
    pass


OBJECTS = {
    id(Plain): (Plain, Plain.__dict__["__dict__"]),
    id(PlainSub): (PlainSub, Plain.__dict__["__dict__"]),
    id(Slotted): (Slotted, Slotted.__dict__["fields"]),
    id(Impostor): (Plain, Plain.__dict__["__dict__"]),
    id(Mismatched): (Mismatched, Slotted.__dict__["fields"]),
}

LONG_TEXTS = ["a" * MAX_HELD_TEXT, "a" * (MAX_HELD_TEXT + 1), "é" * MAX_HELD_TEXT,
              "€" * (MAX_HELD_TEXT + 1), b"x" * MAX_HELD_TEXT, b"x" * (MAX_HELD_TEXT + 1)]

held_scalars = st.one_of(
    st.integers(-300, 300),
    st.integers(-2**200, 2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0.0, math.nan, math.inf]),
    st.text(max_size=8),
    st.text(alphabet="aé€😀\x00", max_size=5),
    st.binary(max_size=8),
    st.booleans(),
    st.none(),
    st.sampled_from(LONG_TEXTS[::2]),
)
#: Rarely one that has no signature (else most graphs would have none).
scalars = st.integers(0, 29).flatmap(
    lambda k: st.sampled_from(LONG_TEXTS[1::2] + [frozenset(), len, 1j]) if k == 0 else held_scalars)

GOOD_KINDS = ["list", "tuple", "dict", "plain", "plainsub", "slotted"]
BAD_KINDS = ["slotted_nodict", "unknown", "impostor", "mismatched", "listsub", "dictsub"]
KINDS = GOOD_KINDS * 6 + BAD_KINDS

#: Small depths more often: that is where the cuts (SUMMARY) are.
depths = st.one_of(st.integers(1, 4), st.integers(1, 20))


@st.composite
def graphs(draw):
    """An object graph: nodes of KINDS whose elements are scalars or other nodes (shared
    references, cycles through the mutable ones), node 0 the root."""
    count = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=count, max_size=count))
    ref = st.one_of(st.tuples(st.just("node"), st.integers(0, count - 1)),
                    st.tuples(st.just("scalar"), scalars))
    children = [draw(st.lists(ref, max_size=6)) for _ in range(count)]
    names = [draw(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "é"]), st.text(max_size=3),
                                     st.just(1)), max_size=6)) for _ in range(count)]
    nodes: list = [None] * count
    for i, kind in enumerate(kinds):
        nodes[i] = {"list": list, "dict": dict, "plain": Plain, "plainsub": PlainSub,
                    "slotted": Slotted, "slotted_nodict": Slotted, "unknown": Unknown,
                    "impostor": Impostor, "mismatched": Mismatched, "listsub": ListSub,
                    "dictsub": DictSub, "tuple": lambda: None}[kind]()

    def resolve(child, i):
        what, it = child
        if what == "scalar":
            return it
        if kinds[it] == "tuple" and it <= i:    # tuples are made last first: no cycle through them
            return ("tuple", it)
        return nodes[it]

    def hashable(key, i):
        try:
            hash(key)
        except TypeError:
            return ("unhashable", i)
        return key

    for i in reversed(range(count)):
        if kinds[i] == "tuple":
            nodes[i] = tuple(resolve(c, i) for c in children[i])
    for i, kind in enumerate(kinds):
        node, elements = nodes[i], [resolve(c, -1) for c in children[i]]
        if kind in ("list", "listsub"):
            node.extend(elements)
        elif kind in ("dict", "dictsub"):
            for k in range(0, len(elements) - 1, 2):
                node[hashable(elements[k], i)] = elements[k + 1]
        elif kind == "tuple":
            pass
        else:
            fields = {}
            for name, element in zip(names[i], elements):
                fields[name] = element
            if kind == "slotted":
                node.fields = fields
            elif kind == "slotted_nodict":
                if elements:
                    node.fields = elements[0]    # not a dict (mostly): no signature
            elif kind != "mismatched":
                vars(node).update(fields)
    return nodes[0]


def at(items):
    """The elements shown per depth as the encoder gives them (``items[0]``: an instance's fields),
    from one number for every depth, or as they are."""
    return items if isinstance(items, tuple) else (items,) * (snapshot.MAX_DEPTH + 2)


#: One limit for every depth, or one per depth.
item_limits = st.one_of(
    st.integers(0, 10),
    st.lists(st.integers(0, 10), min_size=snapshot.MAX_DEPTH + 2,
             max_size=snapshot.MAX_DEPTH + 2).map(tuple))


def both(value, max_depth, items, max_nodes, objects=OBJECTS):
    """The two signatures, and the two kept lists (identical, object by object)."""
    kept_c: list = []
    kept_python: list = []
    items = at(items)
    compiled = signature(value, objects, max_depth, items, max_nodes, kept_c)
    python = python_signature(value, objects, max_depth, items, max_nodes, kept_python)
    assert compiled == python
    assert len(kept_c) == len(kept_python)
    assert all(a is b for a, b in zip(kept_c, kept_python))
    return compiled, kept_c


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), depths, item_limits, st.integers(0, 50))
def test_compiled_is_the_python_one(value, max_depth, items, max_nodes):
    both(value, max_depth, items, max_nodes)


@settings(max_examples=300, deadline=None)
@given(st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.tuples(inner, inner),
                                                     st.dictionaries(st.text(max_size=2), inner,
                                                                     max_size=4)),
                    max_leaves=40),
       depths, item_limits, st.integers(0, 50))
def test_compiled_is_the_python_one_for_trees(value, max_depth, items, max_nodes):
    both(value, max_depth, items, max_nodes)


@settings(max_examples=300, deadline=None)
@given(graphs(), st.integers(-3, 20),
       st.lists(st.integers(-3, 10), min_size=snapshot.MAX_DEPTH + 2,
                max_size=snapshot.MAX_DEPTH + 2).map(tuple),
       st.integers(-3, 50))
def test_negative_limits_fail_or_agree_the_same_way(value, max_depth, items, max_nodes):
    outcomes = []
    for function in (signature, python_signature):
        kept: list = []
        try:
            outcomes.append((function(value, OBJECTS, max_depth, items, max_nodes, kept), kept))
        except (OverflowError, ValueError) as exc:
            outcomes.append((type(exc), kept))
    (c, kept_c), (python, kept_python) = outcomes
    assert c == python
    assert [id(x) for x in kept_c] == [id(x) for x in kept_python]


def test_deep_values_and_huge_limits():
    value: list = []
    inner = value
    for _ in range(30):
        deeper = [1]
        inner.append(deeper)
        inner = deeper
    for max_depth in (1, 15, 16, 17, 10**30):
        both(value, max_depth, 10, 10**30)
    assert both(value, 16, 10, 100)[0] is not None
    assert both(value, 17, 10, 100)[0] is None     # the 17th level would be opened


def test_words_are_the_ones_the_docstring_says():
    text = "x"
    value = [text, (1,)]
    words, kept = both(value, 10, 10, 10)
    inner = value[1]
    expected = [id(list), id(value), 2, 2, id(text), id(tuple), id(inner), 1, 1, id(1)]
    assert words == b"".join(w.to_bytes(8, sys.byteorder) for w in expected)
    assert kept == [text, 1]


def test_cycles_shared_summaries_and_fields():
    # A container met again off its path is walked again; on its path it is a cycle.
    p = Plain()
    p.me = p
    shared = [1.5]
    value = [p, shared, shared, {"k": [[[]]]}]
    assert both(value, 3, 10, 100)[0] is not None
    assert both(value, 2, 10, 100)[0] is not None
    slot = Slotted()
    slot.fields = {"a": p, "b": shared}
    both([slot, slot], 5, 10, 100)
    slot.fields = [1]
    assert both([slot], 5, 10, 100)[0] is None
    del slot.fields
    assert both([slot], 5, 10, 100)[0] is None


def test_bad_arguments():
    with pytest.raises(TypeError):
        signature([], OBJECTS, 1, at(1), 1)
    with pytest.raises(TypeError):
        signature([], OBJECTS, 1.0, at(1), 1, [])
    with pytest.raises(TypeError):
        signature([], DictSub(), 1, at(1), 1, [])
    with pytest.raises(TypeError):
        signature([], OBJECTS, 1, at(1), 1, ListSub())
    one = [1]
    assert signature(value=one, objects=OBJECTS, max_depth=2, items=at(3), max_nodes=4, keep=[]) == \
        python_signature(one, OBJECTS, 2, at(3), 4, [])
    with pytest.raises(TypeError):
        signature([1], OBJECTS, 2, at(3), 4, [], bogus=1)
    with pytest.raises(TypeError):
        signature([1], OBJECTS, 2, 3, 4, [])                # items is one limit per depth
    # items[d] is read when a container at depth d is opened, not before: the same errors.
    # (The compiled one takes ints only: the Python one would also take a float limit.)
    value = [[[1]]]
    for items in [(1,), (1, 1), (0, 2, "no"), (0, 2, 2, 1), (0, 2, 2, 1, "unused")]:
        outcomes = []
        for function in (signature, python_signature):
            try:
                outcomes.append(function(value, OBJECTS, 3, items, 10, []))
            except (IndexError, TypeError) as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], items
    with pytest.raises(TypeError):
        signature([1], OBJECTS, 2, at(3), 4, keep=[], value=1)


# -- References ---------------------------------------------------------------------------------

def test_no_reference_is_kept_or_lost():
    p = Plain()
    p.a = [1, "text", (2.5, b"b")]
    p.b = 10**18
    container = [p, p.a, {"k": p.a, 7: None}, (p,), "é" * 100, -(10**18), -0.0]
    elements = list(container) + [p.a[2], vars(p)]
    before = [sys.getrefcount(container)] + [sys.getrefcount(e) for e in elements]
    for _ in range(1000):
        kept: list = []
        assert signature(container, OBJECTS, 10, at(10), 100, kept) is not None
        signature(container + [set()], OBJECTS, 10, at(10), 100, kept)     # None, on the way out
        signature([container], OBJECTS, 1, at(10), 100, kept)               # a summary
    del kept
    after = [sys.getrefcount(container)] + [sys.getrefcount(e) for e in elements]
    assert after == before


def test_the_graph_is_not_kept_alive():
    p = Plain()
    p.self = [p]
    graph = [p, {"p": p}, (p,)]
    dead = weakref.ref(p)
    kept: list = []
    assert signature(graph, OBJECTS, 10, at(10), 100, kept) is not None
    del p, graph
    gc.collect()
    assert dead() is None

    q = Plain()         # no cycle: it dies at once, without the collector
    graph = [q, [q]]
    dead = weakref.ref(q)
    assert signature(graph, OBJECTS, 10, at(10), 100, kept) is not None
    del q, graph
    assert dead() is None


def test_no_memory_is_leaked():
    # Large enough for every buffer to leave the C stack: > 512 words, > 64 containers held,
    # > 64 marks.
    value = [[i, [i], {"k": i}] for i in range(300)]
    assert len(signature(value, OBJECTS, 10, at(1000), 10**6, [])) > 512 * 8
    for _ in range(200):
        signature(value, OBJECTS, 10, at(1000), 10**6, [])
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(5000):
            signature(value, OBJECTS, 10, at(1000), 10**6, [])
            signature(value + [set()], OBJECTS, 10, at(1000), 10**6, [])
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


# -- The program's code never runs ----------------------------------------------------------------

CALLS: list = []


def counted(name):
    def method(self, *args, **kwargs):
        CALLS.append(name)
        raise AssertionError(f"{name} was called")
    return method


class Meta(type):
    __eq__ = counted("Meta.__eq__")
    __ne__ = counted("Meta.__ne__")
    __hash__ = counted("Meta.__hash__")     # type: ignore[assignment]
    __len__ = counted("Meta.__len__")
    __iter__ = counted("Meta.__iter__")


class WithMeta(metaclass=Meta):
    pass


class Base:
    pass


class Tricky(Base):
    """Every hook a walk could trip over; its fields are read through its base's C getter."""
    __getattr__ = counted("Tricky.__getattr__")
    __getattribute__ = counted("Tricky.__getattribute__")
    __eq__ = counted("Tricky.__eq__")
    __hash__ = counted("Tricky.__hash__")   # type: ignore[assignment]
    __len__ = counted("Tricky.__len__")
    __iter__ = counted("Tricky.__iter__")
    __getitem__ = counted("Tricky.__getitem__")
    __dict__ = property(counted("Tricky.__dict__"))     # type: ignore[assignment]
    __class__ = property(counted("Tricky.__class__"))   # type: ignore[assignment]


class HookedList(list):
    __len__ = counted("HookedList.__len__")
    __iter__ = counted("HookedList.__iter__")
    __getitem__ = counted("HookedList.__getitem__")
    __eq__ = counted("HookedList.__eq__")
    __hash__ = counted("HookedList.__hash__")   # type: ignore[assignment]


class HookedDict(dict):
    __len__ = counted("HookedDict.__len__")
    __iter__ = counted("HookedDict.__iter__")
    __getitem__ = counted("HookedDict.__getitem__")
    keys = counted("HookedDict.keys")
    items = counted("HookedDict.items")
    values = counted("HookedDict.values")
    __eq__ = counted("HookedDict.__eq__")
    __hash__ = counted("HookedDict.__hash__")   # type: ignore[assignment]


def test_the_programs_code_never_runs():
    objects = dict(OBJECTS)
    objects[id(WithMeta)] = (WithMeta, WithMeta.__dict__["__dict__"])
    objects[id(Tricky)] = (Tricky, Base.__dict__["__dict__"])
    objects[id(HookedDict)] = (HookedDict, HookedDict.__dict__["__dict__"])
    m = WithMeta()
    vars(m)["x"] = [1]
    tricky = Tricky.__new__(Tricky)
    object.__setattr__(tricky, "me", tricky)
    hooked_list = HookedList([1, 2])
    hooked_dict = HookedDict(a=1)
    fields_dict = Plain()
    fields_dict.__dict__ = HookedDict(a=1)      # a dict subclass as fields: no signature
    values = [
        [m, WithMeta, [m]],
        [tricky, {"t": tricky}, (tricky,)],
        [tricky, tricky],
        [1, hooked_list],
        [hooked_dict],
        [[fields_dict]],
        hooked_list,
        hooked_dict,
        {1: [m], 2: tricky},
    ]
    CALLS.clear()
    for value in values:
        for max_depth in (1, 2, 5):
            for function in (signature, python_signature):
                kept: list = []
                function(value, objects, max_depth, at(10), 100, kept)
    assert CALLS == []
    # And they agree on these too (compared after: comparing runs their __eq__).
    results = []
    for value in values:
        kept_c: list = []
        kept_python: list = []
        results.append((signature(value, objects, 5, at(10), 100, kept_c),
                        python_signature(value, objects, 5, at(10), 100, kept_python),
                        [id(x) for x in kept_c], [id(x) for x in kept_python]))
    assert CALLS == []
    for c, python, ids_c, ids_python in results:
        assert c == python
        assert ids_c == ids_python
    assert results[0][0] is None        # WithMeta (the class itself) is not in the table
    assert results[1][0] is not None    # Tricky, read through its base's getter
    assert results[3][0] is None and results[6][0] is None      # a list subclass
    assert results[4][0] is not None and results[7][0] is not None  # an instance, its __dict__ read
    assert results[5][0] is None        # fields in a dict subclass


def test_a_getter_that_fails_gives_no_signature():
    class Broken:
        pass

    def boom(self):
        raise RuntimeError("no")

    # A getset descriptor whose C getter raises: a class's __dict__ getter on an instance of
    # another type (descr_check), and a member whose slot is unset (AttributeError).
    objects = {id(Broken): (Broken, Plain.__dict__["__dict__"])}
    assert both([Broken()], 5, 10, 100, objects)[0] is None
    s = Slotted()
    assert both([1, s], 5, 10, 100)[0] is None
    # A Python descriptor (program code) in the table: the compiled one never calls it.
    called = []
    prop = property(lambda self: called.append(1) or {})
    objects = {id(Plain): (Plain, prop)}
    assert signature([Plain()], objects, 5, at(10), 100, []) is None
    assert called == []


# -- The compiled walk (``_speedups.walk``, behind encoder._make_walk) ----------------------------
#
# The encoder's Python walk is its specification: for every value, limit and redaction, an encoder
# with the compiled walk writes the same bytes as one without, registers the same types in the same
# order (their ids are in the bytes), and counts the same errors and redactions; where it gives up,
# the Python walk's bytes are what is written.

from timelapse.encoder import ValueEncoder  # noqa: E402
from timelapse.redact import Redactor  # noqa: E402

walk = speedups.walk


class Types:
    """A register_type: the types in the order they were asked for (TypeId = index)."""

    def __init__(self) -> None:
        self.types: list = [(30, "None", None)]

    def __call__(self, kind, lang_type, fields=None):
        self.types.append((kind, lang_type, fields))
        return len(self.types) - 1


def twin_encoders(limits: dict, redact: bool):
    """(encoder with the compiled walk, its types), (encoder without, its types)."""
    made = []
    for compiled in (walk, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(snapshot, "compiled_walk", compiled)
            types = Types()
            encoder = ValueEncoder(types, redactor=Redactor() if redact else None, **limits)
            made.append((encoder, types))
    return made


class Shaped:
    """Plain instances whose classes get a shape (the compiled walk's shortcut) once spelled."""

    def __init__(self, **fields):
        vars(self).update(fields)


class Other:
    def __init__(self, **fields):
        vars(self).update(fields)


class Slots2:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


walk_scalars = st.one_of(
    st.integers(-5, 5), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0.0, math.nan, 1e300]), st.text(max_size=6),
    st.sampled_from(["password", "token", "sk-" + "a" * 40, "x" * 300, "caf\udce9"]),
    st.binary(max_size=4), st.booleans(), st.none(), st.sampled_from([len, 1j, ..., frozenset({1})]),
)
secret_keys = st.sampled_from(["password", "api_key", "name", "x", b"TOKEN", b"y"])


def walk_values():
    return st.recursive(
        walk_scalars,
        lambda inner: (
            st.lists(inner, max_size=6)
            | st.tuples(inner, inner)
            | st.dictionaries(st.one_of(walk_scalars.filter(lambda k: _hashable(k)), secret_keys,
                                        st.tuples(st.integers(0, 3), st.integers(0, 3))),
                              inner, max_size=5)
            | st.builds(lambda f: Shaped(**f), st.dictionaries(
                st.sampled_from(["a", "b", "c", "password"]), inner, max_size=4))
            | st.builds(lambda f: Other(**f), st.dictionaries(st.sampled_from(["x", "y"]), inner,
                                                              max_size=2))
            | st.builds(Slots2, inner, inner)
            | st.sets(st.integers(0, 9), max_size=3)
        ),
        max_leaves=40,
    )


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _tie(value, knots):
    """Shared references and cycles: lists and Shaped instances get references to others."""
    containers, stack = [], [value]
    while stack:
        x = stack.pop()
        if type(x) in (list, Shaped):
            containers.append(x)
        if type(x) in (list, tuple):
            stack.extend(x)
        elif type(x) is dict:
            stack.extend(x.values())
        elif type(x) in (Shaped, Other):
            stack.extend(vars(x).values())
    for source, target in knots:
        if containers:
            a, b = containers[source % len(containers)], containers[target % len(containers)]
            if type(a) is list:
                a.append(b)
            else:
                a.knot = b
    return value


walk_limits = st.fixed_dictionaries({}, optional={
    "max_depth": st.integers(1, 9), "max_items": st.integers(1, 5), "max_nodes": st.integers(0, 60),
    "max_string": st.integers(1, 8),
})


@pytest.mark.parametrize("max_items", [2**31, 2**62, 2**63 - 1, 2**63, 2**64, 2**100])
def test_the_compiled_walk_takes_any_item_limit(max_items):
    """Limits past 64 bits, or at its edge (2**63-1 + 1 overflowed: a read past a list's end), are
    read clamped: the same bytes as the Python walk, which no container can tell from unlimited."""
    value = [[1, 2, 3], {"a": 1, "b": [1, 2]}, (1, 2), Shaped(x=1, y=[2]), "text"]
    check_twins([value, value], {"max_items": max_items, "max_nodes": 1000}, False)
    (fast, _), _ = twin_encoders({"max_items": max_items, "max_nodes": 1000}, False)
    fast.encode_json(value)
    assert fast.errors == 0


def check_twins(values, limits, redact):
    (fast, fast_types), (slow, slow_types) = twin_encoders(limits, redact)
    for value in values:
        assert fast.encode_json(value) == slow.encode_json(value)
        assert fast_types.types == slow_types.types
        assert (fast.errors, fast.redactions) == (slow.errors, slow.redactions)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(walk_values(), st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=3),
       walk_limits, st.booleans())
def test_the_compiled_walk_writes_what_the_python_walk_writes(value, knots, limits, redact):
    value = _tie([value], knots)
    # Three times: the first spells the shapes (the compiled walk gives up on instances until
    # their class has one), the next ones go through the caches, the shapes and reuse.
    check_twins([value, value, [value, value], value], limits, redact)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(walk_values(), min_size=1, max_size=4), walk_limits, st.booleans())
def test_the_compiled_walk_agrees_across_values_sharing_caches(values, limits, redact):
    check_twins(values + values[::-1], limits, redact)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(1, 8), st.integers(1, 5), st.integers(0, 60))
def test_the_compiled_walk_agrees_on_the_signature_graphs(value, max_depth, max_items, max_nodes):
    limits = {"max_depth": max_depth, "max_items": max_items, "max_nodes": max_nodes}
    check_twins([value, value], limits, False)


def test_the_compiled_walk_does_the_common_values_itself():
    bank = Other(name="b", accounts={})     # (a class's shape is that of its last instance)
    for i in range(5):
        bank.accounts[i] = Shaped(bank=bank, number=i, history=[(i, "deposit", 1.5, None)])
    (fast, _), (slow, _) = twin_encoders({}, True)
    assert fast.compiled_walk is walk and slow.compiled_walk is None
    fast.encode_json(bank)      # the shapes spelled (by the Python walk)
    context = fast._walk_context

    def info(value):
        return fast._infos.get(id(type(value))) or fast._classify(type(value))

    for value in (bank, bank.accounts, [bank.accounts[1], 2, "x"], (1.5, None, True)):
        data = walk(context, value, info(value))
        assert data is not None, value
        assert data == fast.encode_json(value) == slow.encode_json(value)
    # It gives up on what it does not do: a set, an instance of a class with no shape yet, a
    # secret's name as a key (the Python walk redacts the value).
    assert walk(context, {1, 2}, info({1, 2})) is None
    assert walk(context, Other(x=1), info(Other(x=1))) is None     # another shape than bank's
    assert walk(context, {"password": "x"}, info({})) is None
    assert walk(context, [{"password": "x"}], info([])) is None


def test_the_compiled_walk_runs_no_program_code():
    class Hooked:
        def __init__(self):
            vars(self)["me"] = self
            vars(self)["n"] = 1

        __eq__ = counted("Hooked.__eq__")
        __hash__ = counted("Hooked.__hash__")   # type: ignore[assignment]
        __repr__ = counted("Hooked.__repr__")
        __getattr__ = counted("Hooked.__getattr__")
        __len__ = counted("Hooked.__len__")

    h = Hooked()
    values = [[h, {"k": h}, (h,)], {1: h}, [HookedList([1]), HookedDict(a=1)], {(1, "a"): h},
              [WithMeta(), WithMeta], h]
    (fast, _), (slow, _) = twin_encoders({"max_depth": 4}, True)
    CALLS.clear()
    got = [[fast.encode_json(v) for v in values] for _ in range(3)]
    expected = [[slow.encode_json(v) for v in values] for _ in range(3)]
    assert CALLS == []
    assert got == expected


def test_the_compiled_walk_keeps_no_reference_and_leaks_nothing():
    (fast, _), _ = twin_encoders({"max_depth": 4, "max_nodes": 1000, "max_items": 100}, False)
    p = Shaped(a=[1, "text", (2.5, None)], b=10**18)
    container = [p, p.a, {"k": p.a, 7: None}, (p,), "é" * 100, -(10**18), -0.0, [p] * 30]
    fast.encode_json(container)     # shapes, caches
    elements = list(container) + [p.a[2], vars(p)]
    before = [sys.getrefcount(container)] + [sys.getrefcount(e) for e in elements]
    for _ in range(300):
        fast._forget_reuse()    # walked every time, not reused
        fast.encode_json(container)
    after = [sys.getrefcount(container)] + [sys.getrefcount(e) for e in elements]
    assert after == before
    dead = weakref.ref(p)
    del p, container, elements
    gc.collect()
    assert dead() is None
    value = [[i, [i], {"k": i}, Shaped(a=i)] for i in range(100)]    # > the C buffer's inline bytes
    tracemalloc.start()
    try:
        for _ in range(50):
            fast._forget_reuse()
            fast.encode_json(value)
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            fast._forget_reuse()
            fast.encode_json(value)
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_the_compiled_walk_is_off_where_the_python_walk_leaves_holes():
    # Deeper than the eager levels the Python walk opens containers on its stack later, and types
    # are registered in another order: the compiled walk is not used there.
    deep: list = [1]
    for _ in range(12):
        deep = [deep, Shaped(a=deep)]
    check_twins([deep, deep], {"max_depth": 12, "max_nodes": 400}, False)
    check_twins([deep, deep], {"max_depth": 8, "max_nodes": 400}, False)


# -- The compiled locals loop (``_speedups.locals_values``, behind monitor.py's on_line) ----------
#
# monitor.py's Python loop over a function frame's locals is its specification (``python_loop``
# below is a copy of it): the same Value events in the same order, new_variable and encode called
# for the same names and values in the same order (they register variables and types: ids in the
# bytes), the same exception where the Python raises one, and False, with nothing done, where it
# leaves the step to the Python loop. Then whole recordings: both paths write the same traces.

from timelapse import encoder as encoder_module  # noqa: E402

from conftest import PROGRAMS, run_timelapse  # noqa: E402

locals_values = speedups.locals_values
VALUE_TAIL = b"};"


def python_loop(f_locals, var_ids, info, new_variable, encode, append, value_tail=VALUE_TAIL):
    """monitor.py's loop (on_line, emit_values), as it is there."""
    for name, value in f_locals.items():
        try:
            head = var_ids[name]
        except KeyError:
            head = new_variable(info, name)
        if head is not None:
            append(head + encode(value) + value_tail)


class Info:
    """What the loop passes on to new_variable (a CodeInfo in the recorder)."""


class Side:
    """One side of a twin: an encoder (compiled walk, redaction), its types, the events, the
    var_ids of a code object and the new_variable calls, in order."""

    def __init__(self, redact: bool = False, limits: dict | None = None):
        self.types = Types()
        self.encoder = ValueEncoder(self.types, redactor=Redactor() if redact else None, **(limits or {}))
        self.events: list = []
        self.calls: list = []
        self.var_ids: dict = {"a": b"{a:", "b": None}   # b: declared, not shown (a secret's)
        self.info = Info()

    def new_variable(self, info, name):
        assert info is self.info
        self.calls.append(("new", name))
        head = None if type(name) is not str or name.startswith("_") else b"{" + name.encode() + b":"
        self.var_ids[name] = head
        return head

    def encode(self, value):
        self.calls.append(("encode", type(value).__name__))
        return self.encoder.encode_json(value)

    def context(self, encode=None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(encoder_module, "compiled_locals", locals_values)
            context = self.encoder.locals_context(self.new_variable, self.events, VALUE_TAIL)
        assert context is not None
        if encode is not None:  # a stand-in encode_json (the cache look-ups stay the encoder's)
            context = context[:4] + (encode,) + context[5:]
        return context

    def compiled(self, f_locals, encode=None):
        return locals_values(self.context(encode), f_locals, self.var_ids, self.info)

    def python(self, f_locals, encode=None):
        python_loop(f_locals, self.var_ids, self.info, self.new_variable, encode or self.encoder.encode_json,
                    self.events.append)

    def seen(self):
        return self.events, self.calls, self.types.types, self.var_ids, self.encoder.errors, \
            self.encoder.redactions


def twin_loops(steps, redact=False, limits=None):
    """Run each step's f_locals through both loops, each with its own encoder; compare."""
    fast, slow = Side(redact, limits), Side(redact, limits)
    for f_locals in steps:
        assert fast.compiled(f_locals) is True
        slow.python(f_locals)
        assert fast.seen() == slow.seen()
    return fast


frame_names = st.sampled_from(["a", "b", "c", "i", "total", "password", "_hidden", "__dunder__",
                               "é", "x" * 40])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(frame_names, walk_values(), max_size=8), min_size=1, max_size=4),
       walk_limits, st.booleans())
def test_the_compiled_locals_loop_is_the_python_one(steps, limits, redact):
    twin_loops(steps + steps[::-1], redact, limits)


def test_the_compiled_locals_loop_spells_scalars_from_the_caches():
    values = {"a": 1, "i": 10**20, "f": 0.5, "s": "text", "t": True, "n": None, "z": -0.0,
              "nan": math.nan, "big": 2**70, "l": [1, 2], "o": Shaped(a=1), "neg": -5}
    twin_loops([values, values, dict(values, a=2, f=1.5), values])
    # With a recording stand-in for encode_json: the second time round the scalars come from the
    # caches, and encode is called only for what no cache holds (containers, objects, ints beyond
    # 64 bits, -0.0 and nan).
    side = Side()
    assert side.compiled(values, side.encode) is True
    first = [what for kind, what in side.calls if kind == "encode"]
    assert sorted(first) == sorted(type(v).__name__ for v in values.values())
    side.calls.clear()
    assert side.compiled(values, side.encode) is True
    again = [what for kind, what in side.calls if kind == "encode"]
    assert sorted(again) == ["Shaped", "float", "float", "int", "int", "list"]


def test_many_locals_and_names_that_arrive_mid_frame():
    wide = {f"v{i}": i * 1.5 for i in range(500)}
    steps = [wide, dict(wide, late=1), dict(wide, late=2, later="x", _skip=3), {"a": 1}]
    fast = twin_loops(steps)
    assert ("new", "late") in fast.calls and ("new", "_skip") in fast.calls


class Watched:
    """Hashes and comparisons counted in CALLS once ``armed`` (the dicts that hold them are made
    before)."""
    armed = False

    def __hash__(self):
        if Watched.armed:
            CALLS.append(f"{type(self).__name__}.__hash__")
        return hash(str.__str__(self.name) if type(self) is Key else str.__str__(self))

    def __eq__(self, other):
        if Watched.armed:
            CALLS.append(f"{type(self).__name__}.__eq__")
        return NotImplemented

    def __repr__(self):
        if Watched.armed:
            CALLS.append(f"{type(self).__name__}.__repr__")
        return "?"


class Key(Watched):
    """A frame dict's key that is not a str (a program's ``locals()[k] = v``), whose hash is some
    local's name's."""

    def __init__(self, name):
        self.name = name


class StrKey(Watched, str):
    __hash__ = Watched.__hash__
    __eq__ = Watched.__eq__
    __repr__ = Watched.__repr__


def test_keys_that_are_not_strs_are_left_to_the_python_loop():
    """Nothing hashed, compared or appended: False, and the Python loop does the step."""
    side = Side()
    frames = [{"a": 1, 2: "two"}, {"a": 1, (1, 2): 3}, {"a": 1, Key("a"): 2}, {"c": 1, StrKey("d"): 1},
              {StrKey("a"): 1}]
    with_collider = dict(side.var_ids)
    collider = Key("a")
    with_collider[collider] = None
    CALLS.clear()
    Watched.armed = True
    try:
        for f_locals in frames:
            assert side.compiled(f_locals) is False
        # A key the Python loop gave new_variable is in var_ids then: var_ids' keys are checked too.
        side.var_ids, kept = with_collider, side.var_ids
        assert side.compiled({"a": 1}) is False
        assert side.compiled({}) is False
    finally:
        Watched.armed = False
    assert CALLS == [] and side.events == [] and side.calls == []
    side.var_ids = kept
    assert side.compiled({}) is True and side.compiled({"a": 1}) is True
    assert side.events == [b"{a:" + side.encoder.encode_json(1) + VALUE_TAIL]


def test_what_the_compiled_locals_loop_does_not_take():
    side = Side()
    for f_locals in (DictSub(a=1), HookedDict(a=1), [("a", 1)], None, type(vars(Plain))(vars(Plain))):
        assert side.compiled(f_locals) is False
    assert side.events == [] and side.calls == []
    with pytest.raises(TypeError):
        locals_values(side.context()[:-1], {}, {}, side.info)
    with pytest.raises(TypeError):
        locals_values(side.context(), {}, {})
    with pytest.raises(TypeError):
        locals_values(side.context()[:6] + ((),) + side.context()[7:], {"a": 1}, side.var_ids, side.info)
    assert locals_values(side.context(), {}, DictSub(), side.info) is False


class Boom(Exception):
    pass


def raising_after(n, then):
    """A function that does `then` n times, then raises Boom."""
    count = [0]

    def call(*args):
        count[0] += 1
        if count[0] > n:
            raise Boom(count[0])
        return then(*args)
    return call


@pytest.mark.parametrize("n", [0, 1, 3])
def test_exceptions_of_encode_and_new_variable_go_through(n):
    f_locals = {"a": [1], "c": Shaped(a=2), "d": (3,), "e": 1j, "f": {4: 5}}
    for which in ("encode", "new_variable"):
        got = []
        for side_loop in ("compiled", "python"):
            side = Side()
            if which == "encode":
                encode = raising_after(n, side.encoder.encode_json)
            else:
                side.new_variable = raising_after(n, side.new_variable)
                encode = None
            with pytest.raises(Boom) as raised:
                getattr(side, side_loop)(f_locals, encode)
            got.append((side.seen(), raised.value.args))
        assert got[0] == got[1]
        # What the loop appended before the exception stays: the callback takes it back (mark).
        assert len(got[0][0][0]) == (n if which == "encode" else n + 1)    # "a" is known


def test_a_frame_dict_that_changes_size_while_its_values_are_encoded():
    """As the Python's dict iterator: RuntimeError at the next item (the collector could run a
    __del__ that reads the frame's locals again, 3.12)."""
    got = []
    for side_loop in ("compiled", "python"):
        side = Side()
        f_locals = {"a": [1], "c": [2], "d": [3]}

        def encode(value, side=side, f_locals=f_locals):
            f_locals[f"new{len(f_locals)}"] = 0
            return side.encoder.encode_json(value)

        with pytest.raises(RuntimeError) as raised:
            getattr(side, side_loop)(f_locals, encode)
        got.append((side.seen(), str(raised.value)))
    assert got[0] == got[1]
    assert got[0][1] == "dictionary changed size during iteration"


def test_the_compiled_locals_loop_runs_no_program_code():
    h = Tricky()
    f_locals = {"a": h, "c": HookedList([1]), "d": HookedDict(a=1), "e": WithMeta(), "f": WithMeta,
                "g": [h, {"k": h}], "h": StrKey("text"), "i": Key("i")}
    fast, slow = Side(), Side()
    CALLS.clear()
    Watched.armed = True
    try:
        for _ in range(3):
            assert fast.compiled(f_locals) is True
            slow.python(f_locals)
    finally:
        Watched.armed = False
    assert CALLS == []
    assert fast.seen() == slow.seen()


def test_the_compiled_locals_loop_keeps_no_reference_and_leaks_nothing():
    side = Side()
    p = Shaped(a=[1, "text"])
    values = [1, 10**20, "text", "é" * 300, 0.5, -0.0, math.nan, None, True, [p], p, (1, p), 1j]
    f_locals = {f"n{i}": v for i, v in enumerate(values)}
    f_locals["_hidden"] = p
    side.compiled(f_locals)     # the caches, the variables, the shapes
    side.events.clear()
    names = list(f_locals)
    heads = [side.var_ids[n] for n in names]
    counted_objects = [f_locals, side.var_ids, side.info, *values, *names, *(h for h in heads if h)]
    before = [sys.getrefcount(x) for x in counted_objects]
    for _ in range(300):
        side.compiled(f_locals)
        side.events.clear()
    assert [sys.getrefcount(x) for x in counted_objects] == before
    # An exception half way leaks nothing either.
    failing = raising_after(4, side.encoder.encode_json)
    context = side.context(failing)
    for _ in range(50):
        with pytest.raises(Boom):
            locals_values(context, f_locals, side.var_ids, side.info)
    side.events.clear()
    assert [sys.getrefcount(x) for x in counted_objects] == before
    dead = weakref.ref(p)
    del p, values, f_locals, counted_objects, context, failing
    side.encoder._forget_reuse()
    gc.collect()
    assert dead() is None
    wide = {f"v{i}": [i, float(i), str(i)] for i in range(200)}
    tracemalloc.start()
    try:
        for _ in range(20):
            side.compiled(wide)
            side.events.clear()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            side.compiled(wide)
            side.events.clear()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_a_real_frame_s_locals():
    """A function frame's f_locals: the frame's one dict (3.12), a FrameLocalsProxy (3.13)."""
    fast, slow = Side(), Side()

    def frame_of(x, *args, **kwargs):
        y = [x, args]
        z = kwargs
        del x
        cell = 1

        def inner():
            return cell
        return sys._getframe()

    frame = frame_of(1, 2, k=3)
    for _ in range(2):
        assert fast.compiled(frame.f_locals) is True
        slow.python(frame.f_locals)
    assert fast.seen() == slow.seen()
    names = [name for kind, name in fast.calls if kind == "new"]
    assert names[:4] == ["args", "kwargs", "y", "z"]


def test_the_encoder_gives_no_context_where_the_c_cannot_stand_in():
    class Own(ValueEncoder):
        def encode_json(self, value):
            return super().encode_json(value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder_module, "compiled_locals", locals_values)
        assert Own(Types()).locals_context(print, [], b"") is None      # not the caches' reader
        assert ValueEncoder(Types()).locals_context(print, (), b"") is None
        assert ValueEncoder(Types()).locals_context(print, [], b"") is not None
        patch.setattr(encoder_module, "compiled_locals", None)
        assert ValueEncoder(Types()).locals_context(print, [], b"") is None


# Whole recordings: the compiled path (the C loop and walk) and TIMELAPSE_PURE=1 write the same
# bytes. Programs whose traces do not depend on the run (no threads, times, addresses, memory).
DIFFERENTIAL_PROGRAMS = [
    ("locals_odd.py", ("--redact-name", "token")), ("locals_odd.py", ()), ("shapes.py", ()),
    ("values_tricky.py", ()), ("values_big.py", ()), ("generators.py", ()), ("exceptions.py", ()),
    ("recursion.py", ()), ("args_kinds.py", ()), ("callbacks.py", ()), ("async_prog.py", ()),
    ("sec_locals_exec.py", ()), ("sec_gen_locals.py", ()), ("sec_namespace.py", ()),
    ("secrets_app.py", ("--redact-name", "pin")), ("sv_exec.py", ()),
]


@pytest.mark.parametrize("program,options", DIFFERENTIAL_PROGRAMS,
                         ids=[f"{p}{'-' + '-'.join(o) if o else ''}" for p, o in DIFFERENTIAL_PROGRAMS])
@pytest.mark.parametrize("trace_format", ["json", "bin"])
def test_both_paths_record_the_same_bytes(tmp_path, program, options, trace_format):
    streams = []
    outputs = []
    for pure in ("0", "1"):
        env = dict(os.environ, TIMELAPSE_PURE=pure, PYTHONHASHSEED="0")
        out = tmp_path / f"pure{pure}"
        result = run_timelapse(["record", "-q", "--no-config", "--format", trace_format, "-o", str(out),
                                *options, str(PROGRAMS / program)], cwd=tmp_path, env=env)
        outputs.append((result.returncode, result.stdout, result.stderr))
        name = "trace.bin" if trace_format == "bin" else "trace.json"
        streams.append((out / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert streams[0] == streams[1]
    assert len(streams[0]) > 500

"""Cross-step reuse: a value that did not change is not walked again, and what is recorded is
always what a fresh encoding gives (docs/values.md, "Reuse"). Run on whichever signature
implementation is in use (``TIMELAPSE_PURE=1`` forces the Python one; .ci/run runs both)."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timelapse import snapshot
from timelapse.encoder import ValueEncoder


def type_ids():
    """A register_type that gives the same id to the same type in every encoder."""
    ids: dict = {(30, "None", None): 0}

    def register(kind, lang_type, fields=None):
        return ids.setdefault((kind, lang_type, fields), len(ids))
    return register


class Node:
    def __init__(self, **fields):
        self.__dict__.update(fields)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


LIMITS = st.fixed_dictionaries({}, optional={
    "max_depth": st.integers(1, 5), "max_items": st.integers(1, 6), "max_nodes": st.integers(1, 40),
    "max_string": st.integers(1, 8)})

scalars = st.one_of(st.integers(-3, 3), st.integers(), st.floats(), st.text(max_size=6),
                    st.binary(max_size=4), st.booleans(), st.none())
graphs = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=4),
        st.builds(lambda d: Node(**d), st.dictionaries(st.sampled_from("abcd"), inner, max_size=4)),
        st.builds(Slotted, inner, inner),
        st.frozensets(st.integers(0, 5), max_size=3),
    ),
    max_leaves=25,
)


def containers_in(value):
    """The lists, dicts and Nodes reachable from value (each once), in a stable order."""
    found, seen, stack = [], set(), [value]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        if type(x) in (list, dict, Node, tuple, Slotted):
            seen.add(id(x))
            if type(x) in (list, dict, Node):
                found.append(x)
            if type(x) is dict:
                stack.extend(x.values())
            elif type(x) is Node:
                stack.extend(x.__dict__.values())
            elif type(x) is Slotted:
                stack.extend((x.a, x.b))
            else:
                stack.extend(x)
    return found


def mutate(value, choice: int, new):
    """One change somewhere in value: append, set an item, set an attribute, delete one, or tie
    a knot (a shared reference or a cycle)."""
    targets = containers_in(value)
    if not targets:
        return
    target = targets[choice % len(targets)]
    how = choice // max(len(targets), 1) % 5
    if type(target) is list:
        if how == 0 or not target:
            target.append(new)
        elif how == 1:
            target[choice % len(target)] = new
        elif how == 2:
            del target[-1]
        elif how == 3:
            target.append(targets[(choice // 7) % len(targets)])     # a knot
        else:
            target.insert(0, new)
    elif type(target) is dict:
        keys = list(target)
        if how in (0, 3) or not keys:
            target[f"k{choice % 5}"] = new if how == 0 else targets[(choice // 7) % len(targets)]
        elif how == 1:
            target[keys[choice % len(keys)]] = new
        else:
            del target[keys[choice % len(keys)]]
    else:
        names = list(target.__dict__)
        if how == 2 and names:
            delattr(target, names[choice % len(names)])
        else:
            setattr(target, "abcd"[choice % 4], new if how != 3 else targets[(choice // 7) % len(targets)])


@settings(max_examples=300, deadline=None)
@given(graphs, LIMITS, st.lists(st.tuples(st.integers(0, 10**6), graphs), max_size=6))
def test_property_the_recorded_bytes_are_a_fresh_encoding_every_time(value, limits, changes):
    register = type_ids()
    reusing = ValueEncoder(register, **limits)
    root = [value]      # the "variable": a container that holds the generated value
    for step in range(len(changes) + 1):
        # Encoded twice without a change (the second time from the signature), then changed.
        for _ in range(2):
            assert reusing.encode_json(root) == ValueEncoder(register, **limits).encode_json(root)
        if step < len(changes):
            choice, new = changes[step]
            mutate(root, choice, new)


def test_bytes_are_reused_when_nothing_changed():
    enc = ValueEncoder(type_ids())
    data = {"a": [1, 2, 3], "b": Node(x=1, y="two"), "c": (1.5, None, True)}
    first = enc.encode_json(data)
    for _ in range(5):
        assert enc.encode_json(data) == first
    assert enc.signed == 1 and enc.reused == 4
    data["b"].x = 2
    assert enc.encode_json(data) != first and enc.reused == 4


@pytest.mark.parametrize("change", [
    lambda d: d["list"].append(4),
    lambda d: d["list"].__setitem__(0, 10**20 + 1),   # an int of the same size, made anew
    lambda d: d["node"].__setattr__("x", "changed"),
    lambda d: d["nested"]["inner"]["deep"].append(0),
    lambda d: d["node"].__dict__.pop("x"),
    lambda d: d.__setitem__("float", -0.0),             # == 0.0, but shown differently
    lambda d: d.__setitem__("int", True),               # == 1, but a bool
])
def test_every_kind_of_change_is_seen(change):
    register = type_ids()
    enc = ValueEncoder(register, max_depth=5)
    data = {"list": [10**20, 2, 3], "node": Node(x=1), "nested": {"inner": {"deep": [1]}},
            "float": 0.0, "int": 1}
    enc.encode_json(data)
    enc.encode_json(data)   # signed
    change(data)
    assert enc.encode_json(data) == ValueEncoder(register, max_depth=5).encode_json(data)


def test_a_container_freed_and_another_at_its_address_is_not_taken_for_it():
    register = type_ids()
    enc = ValueEncoder(register)
    fresh = lambda v: ValueEncoder(register).encode_json(v)     # noqa: E731
    for i in range(200):
        old = [i, "x", [i]]
        enc.encode_json(old)
        enc.encode_json(old)    # signed: its bytes are kept by id
        address = id(old)
        del old
        new = [i + 1, "y", i]       # often at the same address (the list free list)
        assert enc.encode_json(new) == fresh(new)
        if id(new) == address:
            break
    else:
        pytest.skip("no address was reused in 200 tries")


def test_no_object_of_the_program_is_kept_alive():
    enc = ValueEncoder(type_ids())
    node = Node(x=1, child=Node(y=[1, 2]))
    holder = [node]
    for _ in range(3):
        enc.encode_json(holder)
    assert enc.reused >= 1
    refs = [weakref.ref(node), weakref.ref(node.child)]
    del node, holder
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_finalizers_run_when_they_would():
    ran = []

    class Noted:
        def __del__(self):
            ran.append(1)

    enc = ValueEncoder(type_ids())
    holder = [Noted(), 1]
    for _ in range(3):
        enc.encode_json(holder)
    del holder[0]
    assert ran == [1]      # at once: nothing of the recorder holds it


def test_values_with_no_signature_are_encoded_every_time():
    enc = ValueEncoder(type_ids())
    value = [{1, 2}, print]     # a set and a function: no signature
    for _ in range(3):
        enc.encode_json(value)
    assert enc.reused == 0
    value[0].add(3)
    assert enc.encode_json(value) == ValueEncoder(enc._register).encode_json(value)


def test_a_value_changed_by_another_thread_while_it_is_walked_is_not_kept(monkeypatch):
    # The signature after the walk must be the one before: simulated by changing the value from
    # inside the walk (as another thread or a finalizer could).
    import timelapse.encoder as encoder_module

    enc = ValueEncoder(type_ids())
    value = [1, [2, 3]]
    enc.encode_json(value)          # met once
    calls = []
    real = encoder_module.signature

    def changing(*args):
        result = real(*args)
        calls.append(1)
        if len(calls) == 1:
            value[1].append(4)      # after the signature "before", before the walk
        return result

    monkeypatch.setattr(encoder_module, "signature", changing)
    register = type_ids()
    enc = ValueEncoder(register)
    enc.encode_json(value)
    enc.encode_json(value)          # before (then changed), walk, after != before: not kept
    assert enc.signed == 0
    monkeypatch.setattr(encoder_module, "signature", real)
    assert enc.encode_json(value) == ValueEncoder(register).encode_json(value)


def test_a_value_that_keeps_changing_is_signed_less_often():
    enc = ValueEncoder(type_ids())
    value = [0]
    for i in range(200):
        value[0] = i * 1000 + 10**6     # a new int each time
        assert enc.encode_json(value) == ValueEncoder(enc._register).encode_json(value)
    assert enc.signed < 20


def test_threads_see_their_own_values():
    enc = ValueEncoder(type_ids())
    errors = []

    def work(n):
        mine = [n, [n] * 3]
        for i in range(300):
            mine[0] = i
            if enc.encode_json(mine) != ValueEncoder(enc._register).encode_json(mine):
                errors.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_implementation_in_use_is_named():
    assert snapshot.IMPLEMENTATION in ("c", "python")


@settings(max_examples=300, deadline=None)
@given(st.lists(graphs, min_size=2, max_size=3), LIMITS,
       st.lists(st.tuples(st.integers(0, 10**6), graphs, st.integers(0, 10**6)), max_size=6))
def test_property_values_sharing_parts_are_fresh_encodings_every_time(values, limits, changes):
    # Several variables share containers (knots tie them, cycles through them): an element reused
    # inside one value must be what a fresh walk shows there, whatever is open above it.
    register = type_ids()
    reusing = ValueEncoder(register, **limits)
    roots = [[v] for v in values]
    everything = [roots]
    for step in range(len(changes) + 1):
        for root in roots + roots[::-1]:
            assert reusing.encode_json(root) == ValueEncoder(register, **limits).encode_json(root)
        if step < len(changes):
            choice, new, knot = changes[step]
            mutate(everything, choice, new)
            pool = containers_in(everything)
            a, b = pool[knot % len(pool)], pool[(knot // 7) % len(pool)]
            if type(a) is list:
                a.append(b)     # a shared part, or a cycle


def test_an_element_shown_as_a_cycle_here_is_not_taken_from_elsewhere():
    register = type_ids()
    enc = ValueEncoder(register, max_depth=3)
    fresh = lambda v: ValueEncoder(register, max_depth=3).encode_json(v)    # noqa: E731
    p: list = []
    a = [p]
    p.append(a)
    for root in ([a], [a], [p], [p], [[a]], [[p]], [a, p], [p, a]):
        assert enc.encode_json(root) == fresh(root)

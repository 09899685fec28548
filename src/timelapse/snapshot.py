"""Has a value changed since it was last encoded? Its *signature*, compared with the last one.

The recorder writes every visible variable again at every step (the consumer has no carry-forward),
and most of them did not change since the last step. ``encoder.ValueEncoder`` keeps the bytes of the
containers it encoded, by ``id``, with their signature; when a value's signature now is the one it
had then, its bytes are reused instead of walking and spelling it again (docs/values.md, "Reuse").

**What a signature is.** The walk's reads, replayed without spelling anything: the same elements,
charged to the same budget in the same depth-first order, cut at the same depth (the walk's rules,
``encoder``), written as 64-bit words:

- a scalar (exact ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``None``): ``id(x)``;
- a container opened (exact ``list``, ``tuple``, ``dict``; an instance whose fields are its
  ``__dict__``): ``id(type)``, ``id(x)``, its size, how many elements are shown, then each shown
  element (a dict: key, value; an instance: the ``id`` of each shown field name, then the values);
- a container met again on its own path: ``id(type)``, ``id(x)``, ``CYCLE`` (the walk shows
  ``<cycle: list>``); met again elsewhere, it is walked again, as the walk does;
- a container deeper than ``max_depth``: ``id(type)``, ``id(x)``, ``SUMMARY``, its size.

Anything else in reach (a set, a function, a subclass of list, an instance with slots, a string
longer than ``MAX_HELD_TEXT``, an int beyond 64 bits, ...) and the value has no signature (None): it
is encoded every time.

**Why equal signatures mean equal bytes.** The walk's output is a function of what it reads: the
types, sizes, shown elements, and which containers are the same object (cycles, sharing). Each word
that names an object is the ``id`` of an object that is alive while the two are compared: scalars,
field names and classes are *kept* (``keep``) for as long as the signature is; containers are not
kept, but their contents are compared in turn, so a container that died and another that took its
address compare equal only if they hold the same — and then they are shown the same. Two
signatures that agree word for word therefore describe values the walk shows the same way, and the
first word of each entry (a kept object's id) tells a scalar from a container, so the words cannot
be read two ways.

**Why keeping objects changes nothing the program sees.** Only exact ``int``, ``float``, ``str``,
``bytes``, ``bool`` and ``None`` values and classes are kept. The scalars have no ``__del__`` and
take no weak references, so no program can observe how long they live (short of
``sys.getrefcount`` or ``gc.get_referrers``), and only their memory could: long texts and big ints
are not kept, and the encoder bounds what its kept signatures hold in all. Classes are kept
already by the encoder's type cache. No container and no instance of the program's classes is ever
kept, so no ``__del__`` or weakref callback of the program runs later than it would.

Two implementations give the same words: ``signature`` here and the C one in ``_speedups``
(``timelapse._speedups``); ``IMPLEMENTATION`` says which is in use (``TIMELAPSE_PURE=1`` forces Python).
Hot path: written for speed, like the walk.
"""

from __future__ import annotations

import os
from array import array
from itertools import islice
from typing import Any

__all__ = ["IMPLEMENTATION", "MAX_HELD_TEXT", "compiled_walk", "signature", "python_signature"]

#: Texts (str, bytes) longer than this are not kept: a value holding one has no signature.
MAX_HELD_TEXT = 256
#: The deepest container a signature opens (the walk's ropes start below: encoder._FLAT_DEPTH).
MAX_DEPTH = 16

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1    # the ints that are kept: 64 bits, no more

CYCLE = 2**64 - 1
SUMMARY = 2**64 - 2

def python_signature(value: Any, objects: dict, max_depth: int, items: tuple, max_nodes: int,
                     keep: list, outer: dict | None = None) -> bytes | None:
    """The signature of ``value`` (a list, tuple, dict or instance) under the walk's limits, or
    None. ``objects`` maps ``id(cls)`` to ``(cls, descriptor)`` for the classes whose instances
    are shown as their ``__dict__``, read through that C-level descriptor (a ``getset_descriptor``
    or ``member_descriptor`` found in the class dictionaries; the encoder fills the table as it
    classifies classes). ``items[d]`` is how many elements a list, tuple or dict at depth ``d``
    shows (d >= 1), ``items[0]`` how many fields an instance shows. The kept objects are appended
    to ``keep``. ``outer``: the ids of the containers open above ``value`` when it is an element of
    a value being walked (the walk shows them as cycles too), or None."""
    words: list[int] = []
    put = words.append
    held = keep.append
    budget = [max_nodes]
    path: dict[int, None] = {}      # containers being opened (an ordered set)
    alive: list = []                # every container met, while this runs (their ids stay theirs)

    def open_container(x: Any, t: type, depth: int) -> list | None:
        """Put ``x``'s words up to its elements; return the elements to sign, [] if none (met
        again, or too deep), None if ``x`` has no signature."""
        if t is list or t is tuple or t is dict:
            getter = None
        else:
            entry = objects.get(id(t))
            if entry is None or entry[0] is not t:
                return None
            getter = entry[1]
        key = id(x)
        put(id(t))
        put(key)
        alive.append(x)
        if key in path or (outer is not None and key in outer):
            put(CYCLE)
            return []
        if depth > max_depth:
            put(SUMMARY)
            put(len(x) if getter is None else 0)
            return []
        if depth > MAX_DEPTH:
            return None
        if getter is None:
            total = len(x)
            limit = items[depth]
        else:
            try:
                x = getter.__get__(x)
            except Exception:
                return None
            if type(x) is not dict:
                return None
            total = len(x)
            limit = items[0]
        n = total if total <= limit + 1 else limit   # the walk never says "… 1 more"
        left = budget[0]
        if n > left:
            n = left if left > 0 else 0
        budget[0] = left - n
        put(total)
        put(n)
        if t is list or t is tuple:
            return x[:n]
        if getter is None:
            return [e for item in islice(dict.items(x), n) for e in item]
        pairs = list(islice(dict.items(x), n))
        for name, _ in pairs:
            if type(name) is not str:
                return None
            put(id(name))
            held(name)
        return [v for _, v in pairs]

    elements = open_container(value, type(value), 1)
    if elements is None:
        return None
    # Depth first, with an explicit stack of (elements left, the container's id, its depth).
    path[id(value)] = None
    stack = [(iter(elements), id(value), 1)]
    while stack:
        it, key, depth = stack[-1]
        for x in it:
            t = type(x)
            if t is int:
                if not _I64_MIN <= x <= _I64_MAX:     # a big int is not kept (its memory)
                    return None
                put(id(x))
                held(x)
            elif t is float or t is bool or x is None:
                put(id(x))
                held(x)
            elif t is str or t is bytes:
                if len(x) > MAX_HELD_TEXT:
                    return None
                put(id(x))
                held(x)
            else:
                inner = open_container(x, t, depth + 1)
                if inner is None:
                    return None
                if inner:   # (on the path while its elements are signed)
                    path[id(x)] = None
                    stack.append((iter(inner), id(x), depth + 1))
                    break
        else:
            stack.pop()
            del path[key]
    return array("Q", words).tobytes()


def _pure_forced() -> bool:
    """``TIMELAPSE_PURE`` set to anything but empty or ``0`` forces the Python implementation."""
    return os.environ.get("TIMELAPSE_PURE", "") not in ("", "0")


#: The implementation in use: "c" (the compiled ``timelapse._speedups``) or "python".
IMPLEMENTATION = "python"
signature = python_signature
#: The compiled part of the encoder's walk (``_speedups.walk``, see ``encoder._make_walk``), or
#: None: the encoder's Python walk does it all. Chosen here with the signature, in one place.
compiled_walk = None
if not _pure_forced():
    try:
        from timelapse._speedups import signature  # type: ignore[no-redef]  # noqa: F811
        from timelapse._speedups import walk as compiled_walk  # type: ignore[no-redef]  # noqa: F811
    except ImportError:     # not built (no compiler when installed): the Python one
        signature = python_signature
    else:
        IMPLEMENTATION = "c"

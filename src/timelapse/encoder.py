"""The value walk: a Python value in, its ValueRecord, spelled by the trace format, out.

The recorder captures every visible variable at every executed line, so this module runs on the hot
path, in the middle of the program being recorded. That dictates its shape.

**One walk decides what is shown.** Classification (per class, ``valuetypes.describe_type``), the
limits (depth, elements per container, characters per string, elements per value), cycles, the
reuse of a value's bytes while it does not change, and the order of set members are all decided
here, once; the format (``format.ValueSpelling``,
``json_format.JsonValues`` today) only spells what the walk hands it. ``encode_json`` gives the spelled
record; ``encode`` decodes it back into a dict, for tests and tools.

**Capturing a value must not change what the program does.** The walk never runs code written by the
user or by a library: no ``__repr__``, ``__eq__``, ``__hash__``, ``__len__``, ``__iter__``, properties
or ``__getattr__``. It dispatches on exact types through tables keyed by ``id(type)`` (hashing a class
could run a metaclass ``__hash__``) and reads values through C-level accessors (``valuetypes``). Set
members are ordered by keys it computes itself, never by comparing the program's objects.

**Capturing is bounded and never fails.** Containers are walked with an explicit stack, never by
recursion, so a deeply nested value or a program close to its recursion limit cannot make it fail;
every cut is visible in the output; whatever goes wrong becomes an ``Error`` record for that one value.

How a container is walked: its *opener* (``_open_*``) charges its shown elements to the value's budget,
spells the scalars among them at once (one list comprehension: most elements are ints, strings and
floats) and returns either the container's bytes or, when some elements are not scalars, a frame
``(parts, holes, spell, arg)``: ``parts`` with None in the holes, ``holes`` the (index, element) pairs
to fill, and ``spell(parts, arg)`` to call once they are filled. ``_fill`` fills them depth first with
an explicit stack. The budget is charged in that depth-first order, so a value's output depends only
on the value and the limits. ``docs/values.md`` lists the encoding of every kind of value.
"""

from __future__ import annotations

import base64
import gc
import heapq
from itertools import islice
from operator import is_
from typing import TYPE_CHECKING, Any, Callable

from timelapse.config import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, DEFAULT_MAX_NODES, DEFAULT_MAX_STRING
from timelapse.format import TypeKind, ValueSpelling
from timelapse.json_format import JSON
from timelapse.redact import REDACTED
from timelapse import snapshot
from timelapse.snapshot import signature
from timelapse.valuetypes import (
    ELLIPSIS,
    Family,
    TypeInfo,
    all_of_type,
    bytes_text,
    describe_failure,
    describe_type,
    enum_name,
    exc_args,
    exception_message,
    is_dict,
    named_fields,
    pick_attributes,
    read_attributes,
    sanitize_text,
    sort_key,
    summary_text,
    type_name,
)

if TYPE_CHECKING:
    from timelapse.redact import Redactor

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_STRING",
    "ValueEncoder",
    "sanitize_text",
    "type_name",
]


_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_SCALAR_CACHE_SIZE = 4096   # spelled scalars per cache before it is emptied
_SHORT_STRING = 64          # strings up to this length have cached records
# Every cache is bounded (a program may meet any number of classes and attribute sets) and is
# emptied when full: refilling costs one classification or one register_type call per entry.
_TYPE_CACHE_SIZE = 2048     # classified types kept at most (each keeps its class alive)
_TYPE_ID_CACHE_SIZE = 4096  # type ids kept at most, struct shapes of all classes together
#: Characters past max_string searched for a secret's form (a form the clip would cut).
_FORM_MARGIN = 512
_TRUNCATED = "<truncated>"  # lang_type of the "... N more" marker
_FALLBACK_TEXT = "<value could not be captured>"
#: Containers nested deeper than this are ropes until their ancestor at this depth is done (_join).
_FLAT_DEPTH = 16
#: Container levels ``child`` opens at once below the one ``fill`` opened (a bounded recursion:
#: about three Python frames a level, well within the recorder's RECURSION_HEADROOM; the default
#: max_depth, so that values within the default limits never need fill's stack).
_EAGER_LEVELS = 8
_NO_EAGER = 1 << 62     # a base depth that leaves child nothing to open at once
#: Deeper collections show fewer elements (collection_items): a quarter a level, at least two.
_TAPER_SHIFT = 2
_FEWEST_ITEMS = 2
#: Cross-step reuse: values remembered at most, and the bytes they may hold together.
_REUSE_ENTRIES = 4096
_REUSE_BYTES = 16 << 20
_REUSE_BACKOFF = 63     # encodings without a signature after a value had none (a set in reach)
_NOT_SIGNED = (None, b"", None, 0, 0, 0)    # a value met once before: signed this time
_KEPT_OBJECT_SIZE = 80  # what one kept object is counted for (texts are kept up to snapshot.MAX_HELD_TEXT)

#: The compiled loop over a function frame's locals at a step (``_speedups.locals_values``, see
#: ``ValueEncoder.locals_context``), or None: chosen with the compiled walk (``snapshot``).
compiled_locals: Callable[..., bool] | None = None
if snapshot.IMPLEMENTATION == "c":
    try:
        from timelapse._speedups import locals_values as compiled_locals  # type: ignore[no-redef]  # noqa: F811
    except ImportError:     # an extension built before it had one: the Python loop
        compiled_locals = None


class ValueEncoder:
    """Encode Python values as ValueRecords, registering their types.

    ``register_type(kind, lang_type, fields=None) -> int`` is called once per distinct type;
    ``fields`` are a Struct type's ``(field name, type id)`` pairs. One encoder may be used from
    several threads at once. The limits are taken as given (``config.Options`` validates them) and
    fixed once it is made (the walk's closures hold them).
    """

    def __init__(
        self,
        register_type: Callable[..., int],
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_string: int = DEFAULT_MAX_STRING,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
        spelling: ValueSpelling = JSON.values,
        redactor: Redactor | None = None,
    ) -> None:
        self._register = register_type
        #: The recording's secret names and forms (redact.py); None: nothing is redacted.
        self.redactor = redactor
        #: Redacted records written, those inside reused bytes included (the metadata's count).
        self.redactions = 0
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_string = max_string
        self.max_nodes = max_nodes
        #: Elements shown per collection (list, tuple, dict, set, ...) by its depth (1: a value's
        #: own elements; ``[0]``: the fields of an object, at any depth): see ``collection_items``.
        self._items = (max_items,) + tuple(collection_items(max_items, d) for d in range(1, max_depth + 2))
        self._spell = spelling
        self._type_ids: dict[tuple, int] = {}
        self._infos: dict[int, TypeInfo] = {}
        # The spelled records of ints, floats, short strings, None/True/False and "... N more"
        # markers, by value: the same few come back at every step.
        self._spelled_ints: dict[int, bytes] = {}
        self._spelled_strs: dict[str, bytes] = {}
        self._spelled_floats: dict[float, bytes] = {}
        self._spelled_constants: dict[object, bytes] = {}
        self._spelled_more: dict[int, bytes] = {}
        #: The records of containers shown as summaries (below max_depth) by (TypeInfo, size; -1
        #: for none), and as cycles by TypeInfo: most are the same few at every step (an
        #: account's bank's other accounts). They name type ids, so they are dropped with the
        #: type-id cache (and with the class cache: their infos keep classes).
        self._spelled_summaries: dict[tuple, bytes] = {}
        self._spelled_cycles: dict[TypeInfo, bytes] = {}
        #: The spelled heads of exact ints and floats (their TypeIds), once known, and their tails.
        self._int_head = self._float_head = b""
        self._int_tail, self._float_tail = spelling.int_tail, spelling.float_tail
        self._int_text, self._float_text = spelling.int_text, spelling.float_text
        #: Cross-step reuse (docs/values.md, "Reuse"): the containers encoded as values, by id,
        #: with their signature and bytes (see ``walk`` in _make_walk, and ``snapshot``).
        self._reuse: dict[int, Any] = {}
        self._reused_bytes = 0      # what _reuse holds (_held_size), bounded by _REUSE_BYTES
        self._met_once: dict[int, None] = {}    # the ids of values (and elements) met once
        self._node_reuse: dict[int, Any] = {}   # the same for containers inside values
        self._node_bytes = 0
        #: The classes whose instances are their ``__dict__``, for signatures: id -> (class, descriptor).
        self._plain_objects: dict[int, tuple] = {}
        #: Error records made (a value that gave one is not kept for reuse: its bytes say a failure).
        self.errors = 0
        #: Values whose bytes were reused / encoded afresh with a signature (for benchmarks and tests).
        self.reused = self.signed = 0
        self._pair_heads = [b""]
        #: The stand-in for a value shown redacted inside a container (``_Secret``).
        self._secret_info = TypeInfo(_Secret, REDACTED)
        self._secret_info.handler = self._leaf_secret
        #: With a redactor, the spelled records of dict keys that are not secrets' names (the keys
        #: of ``_spelled_strs`` that were decided: see ``entries``).
        self._spelled_keys: dict[str, bytes] = {}
        hot = _make_walk(self)
        self._walk, self._scalars, self._entries = hot["walk"], hot["scalars"], hot["entries"]
        #: The compiled walk in use (``snapshot.compiled_walk``) or None, and what it is given of
        #: this encoder (for tests and benchmarks: the walk calls it itself).
        self.compiled_walk, self._walk_context = hot["compiled"], hot["context"]
        self._openers: dict[int, Callable[..., Any]] = {
            Family.LIST: hot["open_list"], Family.TUPLE: hot["open_list"],
            Family.SEQUENCE: hot["open_sequence"], Family.SET: self._open_set,
            Family.DICT: hot["open_mapping"], Family.MAPPING: hot["open_mapping"],
            Family.MAPPINGPROXY: self._open_mappingproxy, Family.NAMED_TUPLE: self._open_named_tuple,
            Family.OBJECT: hot["open_object"], Family.EXCEPTION: self._open_exception,
            Family.ENUM: self._open_enum,
        }
        self._leaves: dict[int, Callable[[Any, TypeInfo], bytes]] = {
            Family.NONE: self._leaf_none, Family.BOOL: self._leaf_bool, Family.INT: self._leaf_int,
            Family.FLOAT: self._leaf_float, Family.STR: self._leaf_str, Family.BYTES: self._leaf_bytes,
            Family.CONSTANT: self._leaf_constant, Family.TEXT: self._leaf_text,
            Family.STREAM_PROXY: self._leaf_stream_proxy, Family.OPAQUE: self._leaf_opaque,
        }

    # -- public API -----------------------------------------------------------------------------------

    def encode_json(self, value: object) -> bytes:
        """The ValueRecord of `value`, spelled by the format (what the recorder writes). Never
        raises, never runs the program's code."""
        # Hot path. Exact ints, floats and strings (most values at most steps) come from a cache.
        t = type(value)
        if t is int:
            data = self._spelled_ints.get(value)
            if data is None and self._int_head and _I64_MIN <= value <= _I64_MAX:
                # Spelled here, not by _leaf_int: loop counters miss the cache all the time (and
                # _remember inlined: hot path).
                data = self._int_head + self._int_text(value) + self._int_tail
                cache = self._spelled_ints
                if len(cache) >= _SCALAR_CACHE_SIZE:
                    cache.clear()
                cache[value] = data
        elif t is str:
            data = self._spelled_strs.get(value)
        elif t is float:
            data = self._spelled_floats.get(value)
            if data is None and self._float_head:
                # Spelled here, not by _leaf_float: 0.0 and nan are never in the cache.
                data = self._float_head + self._float_text(float.__repr__(value)) + self._float_tail
                if value == value and value != 0.0:  # -0.0 == 0.0 would alias, nan never hits
                    cache = self._spelled_floats
                    if len(cache) >= _SCALAR_CACHE_SIZE:
                        cache.clear()
                    cache[value] = data
        elif value is None or t is bool:
            data = self._spelled_constants.get(value)
        else:
            data = None
        if data is not None:
            return data
        try:
            info = self._infos.get(id(t))
            if info is None or info.type is not t:
                info = self._classify(t)
            if not info.container:
                try:
                    return info.handler(value, info)
                except Exception as exc:
                    return self._error(info.lang, exc)
            return self._walk(value, info)
        except Exception:
            return self._fallback()

    def locals_context(self, new_variable: Callable[..., bytes | None], events: list,
                       value_tail: bytes) -> tuple | None:
        """What ``compiled_locals`` needs to do a step's locals loop with this encoder (see
        monitor.py's ``on_line``): its scalar caches, ``encode_json`` for the rest, the recorder's
        ``new_variable`` and event list, or None when the Python loop must do it (no compiled
        loop, or an encoder whose ``encode_json`` is not this one: the C reads the caches
        ``encode_json`` reads first, so it must be the same function)."""
        if compiled_locals is None or type(self).encode_json is not ValueEncoder.encode_json:
            return None
        if type(events) is not list or type(value_tail) is not bytes:
            return None
        # In the order of the LCTX_* names in _speedups.c.
        return (self._spelled_ints, self._spelled_strs, self._spelled_floats, self._spelled_constants,
                self.encode_json, new_variable, events, value_tail)

    def encode(self, value: object) -> dict:
        """The ValueRecord of `value` as a dict (``encode_json`` decoded): for tests and tools."""
        return self._spell.decode(self.encode_json(value))

    def redacted(self, value: object) -> bytes:
        """The record of a secret: a ``Raw`` ``<redacted>`` whose type is the value's own. Nothing
        of the value is read but its type. None, True and False are shown as they are: they hold
        no secret, and ``has_password = False`` or ``auth_required = True`` is worth seeing."""
        t = type(value)
        if value is None or t is bool:
            return self.encode_json(value)
        try:
            info = self._infos.get(id(t))
            if info is None or info.type is not t:
                info = self._classify(t)
            return self._redacted_record(info)
        except Exception:
            return self._fallback()

    def _redacted_record(self, info: TypeInfo) -> bytes:
        self.redactions += 1
        return self._raw(TypeKind.RAW, info.lang, REDACTED)

    # -- the walk (hot path) --------------------------------------------------------------------------

    def _reserve(self, total: int, state: list, limit: int) -> int:
        """How many of `total` elements to show (at most ``limit``), charged to the value's budget
        (``state[0]``)."""
        n = total if total <= limit + 1 else limit   # never "… 1 more": show the one
        left = state[0]
        if n > left:
            n = left if left > 0 else 0
        state[0] = left - n
        return n

    # -- openers: (x, info, depth, state) -> bytes | (parts, holes, spell, arg) ------------------------
    # The commonest (exact lists, tuples, dicts, instances) are closures made by _make_walk.

    def _open_set(self, x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        total = info.size(x)
        n = self._reserve(total, state, self._items[depth])
        if n >= total:
            members = list(info.iterate(x))
        elif all_of_type(info.iterate(x), int) or all_of_type(info.iterate(x), str):
            members = heapq.nsmallest(n, info.iterate(x))   # C comparisons only
        else:
            members = heapq.nsmallest(n, info.iterate(x), key=sort_key)
        parts = self._scalars(members, depth, state)
        head = info.head or self._head(info, False)
        more = self._more(total - len(members)) if total > len(members) else b""
        arg = (head, members, more)
        if state[1]:
            return parts, _holes(parts, members), self._spell_set, arg
        return self._spell_set(parts, arg)

    def _spell_set(self, parts: list, arg: tuple) -> bytes:
        """Members in an order of their own: by sort_key, ties (members that are not plain
        scalars) by their records — never by comparing the program's objects."""
        head, members, more = arg
        keys = [sort_key(m) for m in members]
        order = sorted(range(len(members)), key=keys.__getitem__)
        # Members whose keys tie (first item 5 or more: tuples holding objects, objects) are put in
        # the order of their records' JSON spelling in every format (order_key), so that a set
        # shows them in the same order in trace.json and trace.bin. Only ties pay for it: in
        # trace.bin, order_key decodes the record.
        order_key = self._spell.order_key
        start, count = 0, len(order)
        while start < count:
            key = keys[order[start]]
            end = start + 1
            while end < count and keys[order[end]] == key:
                end += 1
            if end - start > 1 and key[0] >= 5:
                order[start:end] = sorted(order[start:end], key=lambda i: order_key(
                    _flatten(parts[i]) if type(parts[i]) is list else parts[i]))
            start = end
        parts = [parts[i] for i in order]
        if more:
            parts.append(more)
        return _join(head, parts, self._spell.separator, self._spell.sequence_tail)

    def _open_mappingproxy(self, x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        referents = gc.get_referents(x)     # the proxied mapping, found in C
        if len(referents) != 1 or not is_dict(referents[0]):
            return self._leaf_opaque(x, info)
        mapping = referents[0]
        return self._entries(info, dict.__len__(mapping), dict.items(mapping), depth, state)

    def _spell_pairs(self, entries: list, arg: tuple) -> bytes:
        """A mapping's record from its entries, each spelled ``key<separator>value``."""
        head, pair, more = arg
        spell = self._spell
        sep, pair_tail = spell.separator, spell.tuple_tail
        if entries:     # each entry is wrapped in its Tuple by the join
            body = pair + (pair_tail + sep + pair).join(entries) + pair_tail
            if more:
                body += sep + more
        else:
            body = more
        return head + body + spell.sequence_tail

    def _spell_entries(self, parts: list, arg: tuple) -> bytes:
        """A mapping's record from its parts: key, value, key, value, ..."""
        sep = self._spell.separator
        keys, values = parts[0::2], parts[1::2]
        try:
            return self._spell_pairs([k + sep + v for k, v in zip(keys, values)], arg)
        except TypeError:   # some entry is a rope (a value nested below _FLAT_DEPTH)
            head, pair, more = arg
            tail = self._spell.tuple_tail
            entries = [_join(pair, [k, v], sep, tail) for k, v in zip(keys, values)]
            if more:
                entries.append(more)
            return _join(head, entries, sep, self._spell.sequence_tail)

    def _head(self, info: TypeInfo, is_tuple: bool) -> bytes:
        """The spelled head of a Sequence or Tuple record of ``info``'s TypeId (cached in the info)."""
        head = info.head = self._spell.tuple_head(info.tid) if is_tuple else self._spell.sequence_head(info.tid)
        return head

    def _pair_head(self) -> bytes:
        """The head of a mapping entry's Tuple (the TypeId of ``tuple``)."""
        info = self._infos.get(id(tuple))
        if info is None or info.type is not tuple:
            info = self._classify(tuple)
        head = info.head or self._head(info, True)
        if info.tid is not None and info.family == Family.TUPLE:    # not a stand-in: keep it
            self._pair_heads[0] = head
        return head

    def _open_exception(self, x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        """An exception: ``message`` (what str() would say) and ``args``, then its attributes."""
        pairs, d = read_attributes(x, info)
        total = len(pairs) + (dict.__len__(d) if d is not None else 0)
        pairs = pick_attributes(pairs, d, self._reserve(total + 2, state, self.max_items) - 2)
        pairs[:0] = [("message", exception_message(x, info.mro)), ("args", exc_args(x))]
        return self._struct(info, pairs, total + 2, False, depth, state)

    def _open_named_tuple(self, x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        names = info.extra
        total = tuple.__len__(x)
        if total != len(names):     # struct sequences can have unnamed fields
            names = names + tuple(f"[{i}]" for i in range(len(names), total))
        n = self._reserve(total, state, self.max_items)
        return self._struct(info, list(zip(names[:n], tuple.__iter__(x))), total, False, depth, state)

    def _struct(self, info: TypeInfo, pairs: Any, total: int, shape_reusable: bool,
                depth: int, state: list) -> Any:
        names, values, total = named_fields(pairs, total)
        redactor = self.redactor
        if redactor is not None:
            # A field named like a secret shows its value redacted; its shape is never the class's
            # shortcut (the shortcut spells every field as it is).
            decided = redactor.names
            for i, name in enumerate(names):
                secret = decided.get(name)
                if secret is None:
                    secret = redactor.secret_name(name)
                if secret:
                    values[i] = _Secret(values[i])
                    shape_reusable = False
        parts = self._scalars(values, depth, state)
        holes = _holes(parts, values) if state[1] else None
        cut = total > len(parts)
        if cut:
            names.append(ELLIPSIS)
            parts.append(self._more(total - len(parts)))
        arg = (info, tuple(names), shape_reusable and bool(names) and not cut)
        if holes:
            return parts, holes, self._spell_struct, arg
        return self._spell_struct(parts, arg)

    def _spell_struct(self, parts: list, arg: tuple) -> bytes:
        # The shape's Type is registered once the fields are done (their types come first).
        info, names, reusable = arg
        head = self._spell.struct_head(self._shape_tid(info, names))
        if reusable:
            info.shape = (names, head)     # the shortcut in _open_object
        return _join(head, parts, self._spell.separator, self._spell.struct_tail)

    def _open_enum(self, x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        d = info.get_dict(x)
        if not is_dict(d):
            return self._leaf_opaque(x, info)
        value = dict.get(d, "_value_")
        name = enum_name(d)
        if self.redactor is not None and type(name) is str and self.redactor.secret_name(name):
            value = _Secret(value)      # Keys.API_KEY: the member is shown, its value redacted
        arg = (info.tid, name)
        parts = self._scalars((value,), depth, state)
        if state[1]:
            return parts, [(0, value)], self._spell_variant, arg
        return self._spell_variant(parts, arg)

    def _spell_variant(self, parts: list, arg: tuple) -> bytes:
        contents = parts[0]
        return self._spell.variant(arg[0], arg[1], _flatten(contents) if type(contents) is list else contents)

    # -- leaves: (x, info) -> bytes ------------------------------------------------------------------

    def _leaf_none(self, x: Any, info: TypeInfo) -> bytes:
        data = self._spelled_constants[None] = self._spell.none(info.tid)
        return data

    def _leaf_bool(self, x: Any, info: TypeInfo) -> bytes:
        data = self._spelled_constants[x] = self._spell.bool(info.tid, x is True)
        return data

    def _leaf_int(self, x: Any, info: TypeInfo) -> bytes:
        exact = info.type is int
        if not exact:
            x = int.__index__(x)
        if _I64_MIN <= x <= _I64_MAX:
            head = self._int_head if exact and self._int_head else None
            if head is None:
                head = self._spell.int_head(info.tid)
                if exact:
                    self._int_head = head
            data = head + self._int_text(x) + self._int_tail
            if exact:
                _remember(self._spelled_ints, x, data)
            return data
        magnitude = -x if x < 0 else x
        size = (magnitude.bit_length() + 7) // 8
        if size > self.max_string:
            return self._raw(TypeKind.RAW, info.lang, f"<int: {magnitude.bit_length():,} bits>")
        data = base64.b64encode(magnitude.to_bytes(size, "big")).decode("ascii")
        return self._spell.big_int(info.tid, data, x < 0)

    def _leaf_float(self, x: Any, info: TypeInfo) -> bytes:
        if info.type is not float:
            return self._spell.float(info.tid, float.__repr__(x))
        self._float_head = self._spell.float_head(info.tid)
        data = self._spell.float(info.tid, float.__repr__(x))
        # -0.0 == 0.0 and nan != nan: such keys would alias or never hit.
        if x == x and x != 0.0:
            _remember(self._spelled_floats, x, data)
        return data

    def _leaf_str(self, x: Any, info: TypeInfo) -> bytes:
        exact = info.type is str
        if not exact:
            x = str.__str__(x)
        n = len(x)
        # A text that holds a secret by its form is shown redacted, whole. Only what could be shown
        # is searched (a long text is clipped), and a margin past it, so that a form cut by the
        # clip is still seen. Never cached in _spelled_strs: each one is counted.
        redactor = self.redactor
        if redactor is not None and redactor.secret_text(x, self.max_string + _FORM_MARGIN):
            return self._redacted_record(info)
        if n > self.max_string:
            text = f"{sanitize_text(x[:self.max_string])}{ELLIPSIS} ({n:,} chars)"
        else:
            text = sanitize_text(x)
        data = self._spell.string(info.tid, text)
        if exact and n <= _SHORT_STRING:
            _remember(self._spelled_strs, x, data)
        return data

    def _leaf_bytes(self, x: Any, info: TypeInfo) -> bytes:
        return self._spell.raw(info.tid, bytes_text(x, info, self.max_string))

    def _leaf_constant(self, x: Any, info: TypeInfo) -> bytes:
        return self._spell.raw(info.tid, info.extra)

    def _leaf_text(self, x: Any, info: TypeInfo) -> bytes:
        """Functions, modules, files, dates, ...: a short text, clipped to max_string."""
        text = info.text(x, info)
        if len(text) > self.max_string:
            text = f"{text[:self.max_string]}{ELLIPSIS} ({len(text):,} chars)"
        return self._spell.raw(info.tid, sanitize_text(text))

    def _leaf_stream_proxy(self, x: Any, info: TypeInfo) -> bytes:
        """A stream proxy of iocapture: the record of the stream it stands for (``<file '<stdout>'
        mode='w'>``), read from its ``_original`` slot. A stream that is not a file (a program's
        own object, a StringIO) is not looked into: ``<io.StringIO object>``."""
        shown = info.extra(x)
        t = type(shown)
        shown_info = self._infos.get(id(t))
        if shown_info is None or shown_info.type is not t:
            shown_info = self._classify(t)
        if shown_info.container:
            return self._leaf_opaque(shown, shown_info)
        return shown_info.handler(shown, shown_info)

    def _leaf_opaque(self, x: Any, info: TypeInfo) -> bytes:
        return self._raw(TypeKind.RAW, info.lang, f"<{info.lang} object>")

    def _leaf_secret(self, x: _Secret, info: TypeInfo) -> bytes:
        return self.redacted(x.value)

    def _spell_key(self, key: str) -> bytes | None:
        """A dict key (an exact str) spelled, or None if it is a secret's name (its entry is then
        spelled by ``entries``' slower way, which redacts the value). Keys that are not are kept in
        ``_spelled_keys`` once their string is in ``_spelled_strs``: decided once per key."""
        if self.redactor.secret_name(key):  # type: ignore[union-attr]
            return None
        data = self.encode_json(key)
        if self._spelled_strs.get(key) is data:    # a short string that is shown as it is
            _remember(self._spelled_keys, key, data)
        return data

    # -- types ----------------------------------------------------------------------------------------

    def _classify(self, t: type) -> TypeInfo:
        """Decide, once per class, how its values are encoded (``valuetypes.describe_type``), and
        register its type."""
        if t is _Secret:
            self._infos[id(t)] = self._secret_info
            return self._secret_info
        try:
            info = describe_type(t)
            if info.family == Family.OBJECT or info.family == Family.NAMED_TUPLE \
                    or info.family == Family.EXCEPTION:
                info.tid = None     # a Type per shape (field names), registered as met
            else:
                info.tid = self._type_id(info.kind, info.lang)
            info.handler = self._openers[info.family] if info.container else self._leaves[info.family]
        except Exception as exc:
            info = _opaque_info(t)
            info.handler = self._leaf_opaque
            if isinstance(exc, RecursionError):
                # Not kept: classified again once there is room. Counted as a failure, so that
                # bytes made with this stand-in are never kept for reuse.
                self.errors += 1
                return info
        infos = self._infos
        if len(infos) >= _TYPE_CACHE_SIZE:
            infos.clear()
            self._plain_objects.clear()
            self._forget_reuse()
            self._spelled_summaries.clear()
            self._spelled_cycles.clear()
        infos[id(t)] = info
        if info.family == Family.OBJECT and not info.slots and info.dict_descriptor is not None:
            self._plain_objects[id(t)] = (t, info.dict_descriptor)
        return info

    def _type_id(self, kind: int, lang_type: str, fields: tuple | None = None) -> int:
        """The TypeId for (kind, lang_type[, struct field names]), registered once."""
        key = (kind, lang_type, fields)
        tid = self._type_ids.get(key)
        if tid is None:
            if fields is None:
                tid = self._register(int(kind), lang_type)
            else:
                any_tid = self._type_id(TypeKind.ANY, "object")
                tid = self._register(int(kind), lang_type, tuple((sanitize_text(name), any_tid) for name in fields))
            if len(self._type_ids) >= _TYPE_ID_CACHE_SIZE:
                self._type_ids.clear()
                self._forget_reuse()    # kept bytes name type ids that would be registered anew
                self._spelled_summaries.clear()     # (the same)
                self._spelled_cycles.clear()
            self._type_ids[key] = tid
        return tid

    def _forget_reuse(self) -> None:
        self._reuse.clear()
        self._node_reuse.clear()
        self._met_once.clear()
        self._reused_bytes = self._node_bytes = 0

    def _shape_tid(self, info: TypeInfo, names: tuple) -> int:
        """The TypeId of a Struct with these field names."""
        # One cache for the shapes of all classes (_type_ids): a cache per class would hold
        # classes x shapes entries.
        tid = self._type_ids.get((TypeKind.STRUCT, info.lang, names))
        return tid if tid is not None else self._type_id(TypeKind.STRUCT, info.lang, names)

    # -- small records --------------------------------------------------------------------------------

    def _raw(self, kind: int, lang: str, text: str) -> bytes:
        return self._spell.raw(self._type_id(kind, lang), text)

    def _more(self, count: int) -> bytes:
        """The ``… N more`` marker after the elements shown."""
        data = self._spelled_more.get(count)
        if data is None:
            data = self._raw(TypeKind.RAW, _TRUNCATED, f"{ELLIPSIS} {count:,} more")
            _remember(self._spelled_more, count, data)
        return data

    def _cycle(self, info: TypeInfo) -> bytes:
        data = self._spelled_cycles.get(info)
        if data is None:
            data = self._raw(TypeKind.RAW, info.lang, f"<cycle: {info.lang}>")
            _remember(self._spelled_cycles, info, data)
        return data

    def _summary(self, x: Any, info: TypeInfo) -> bytes:
        """A container nested deeper than max_depth: ``<list: 3 items>``, ``<Account object>``
        (cached by class and size; an enum member's says its name, and is not)."""
        if info.family == Family.ENUM:
            return self._raw(TypeKind.RAW, info.lang, summary_text(x, info))
        key = (info, info.size(x) if info.size is not None else -1)
        data = self._spelled_summaries.get(key)
        if data is None:
            data = self._raw(TypeKind.RAW, info.lang, summary_text(x, info))
            _remember(self._spelled_summaries, key, data)
        return data

    def _error(self, lang: str, exc: BaseException) -> bytes:
        self.errors += 1
        msg = f"cannot capture {lang}: {describe_failure(exc)}"
        try:
            return self._spell.error(self._type_id(TypeKind.ERROR, lang), sanitize_text(msg))
        except Exception:
            return self._fallback()

    def _fallback(self) -> bytes:
        """The record of a value when even its Error could not be made (no type could be registered)."""
        self.errors += 1
        return self._spell.error(0, _FALLBACK_TEXT)


def _make_walk(enc: ValueEncoder) -> dict[str, Callable[..., Any]]:
    """The hot part of the walk, as closures over the encoder's caches and limits (free variables,
    not attribute lookups): ``walk`` (a container value), ``scalars`` (the element loop) with
    ``child`` (an element that is not a scalar), ``fill`` (the explicit stack), and the openers of
    the commonest containers (exact lists and tuples, any sequence, mappings, instances).

    The walk state, one list per value: ``[elements left in the budget, a hole was left in the
    container being opened, the containers on the path (a dict used as an ordered set: cycles),
    the depth of the container fill opened last]``. There is no memo: an object met twice within
    a value is walked (and charged to the budget) at each place, so a value's bytes depend on
    nothing but the value and the limits, and stay within ``max_nodes`` (a list holding the same
    big object a hundred times cannot spell it a hundred times in full). What is not walked twice
    is a value that did not change since the last step (``walk``: cross-step reuse).

    Opening children at once (``child``, from inside their parent's element loop) is what makes the
    walk fast: a container of scalars, or of containers of scalars, is spelled without any frame on
    the stack. It is bounded (``_EAGER_LEVELS`` below the container ``fill`` opened) and stops at
    the first child it cannot finish (the first hole): the later siblings are left to ``fill``, so
    that every container is opened, and its elements charged to the budget, in depth-first order
    either way — the output does not depend on which of the two opened it.
    """
    infos, classify = enc._infos, enc._classify
    int_get, str_get, float_get = enc._spelled_ints.get, enc._spelled_strs.get, enc._spelled_floats.get
    encode = enc.encode_json
    error, cycle, summary, more = enc._error, enc._cycle, enc._summary, enc._more
    spelling = enc._spell
    sep, seq_tail, tuple_tail, struct_tail = (
        spelling.separator, spelling.sequence_tail, spelling.tuple_tail, spelling.struct_tail)
    max_items, max_depth, max_nodes = enc.max_items, enc.max_depth, enc.max_nodes
    # Dict keys that are exact strs: with a redactor, spelled from a cache of decided keys, a
    # secret's name spelled as None (see entries); without, as any other string.
    redactor = enc.redactor
    if redactor is None:
        key_get, spell_key = str_get, encode
    else:
        key_get, spell_key = enc._spelled_keys.get, enc._spell_key
        secret_name = redactor.secret_name
    items_at = enc._items   # elements shown per collection, by its depth
    TUPLE = Family.TUPLE
    pair_tail = tuple_tail
    pair_end = pair_tail + sep
    pair_head = enc._pair_heads  # [the head of a mapping entry's Tuple], once known
    eager_levels = _EAGER_LEVELS
    reuse, plain_objects, met_once = enc._reuse, enc._plain_objects, enc._met_once
    gc_isenabled, gc_disable, gc_enable = gc.isenabled, gc.disable, gc.enable
    # Reuse of elements (containers inside a value), by id: (signature, bytes, elements charged,
    # kept objects), or _MET_ONCE. Only with the compiled signature: taken at every level of a
    # value, the Python one would cost more than the walk saves.
    nodes = enc._node_reuse if snapshot.IMPLEMENTATION == "c" and max_depth <= snapshot.MAX_DEPTH else None
    #: items_below[d]: the items tuple of a signature taken of an element of a container at depth d
    #: (made only for the depths signatures go to: max_depth can be 100,000).
    items_below = [(max_items,) + items_at[d + 1:] for d in range(max_depth + 1)] if nodes is not None else []
    # The compiled walk (``_speedups.walk``): what it needs of the encoder, in the order of the
    # CTX_* names in _speedups.c. It handles the commonest values whole and gives up on the rest
    # (None): the Python below is its specification and its fallback. It opens every container at
    # once, as child does within eager_levels: so only for values that can't go deeper than that
    # (the default max_depth is 3). Deeper, the Python leaves holes for fill, and types would be
    # registered in another order (their ids are in the bytes).
    compiled = snapshot.compiled_walk if max_depth <= eager_levels else None
    OBJECT = Family.OBJECT  # the families it may take: LIST, TUPLE, DICT, OBJECT (10-13)
    context = (
        infos, classify, enc._spelled_ints, enc._spelled_strs, enc._spelled_floats,
        enc._spelled_constants, enc._spelled_keys if redactor is not None else enc._spelled_strs,
        encode, spell_key, enc._spelled_more, more, cycle, summary, enc._head, enc._pair_heads,
        enc._pair_head, items_at, max_items, max_depth, max_nodes, sep, seq_tail, tuple_tail,
        struct_tail, TypeInfo, tuple(TypeInfo.__dict__[name] for name in (
            "type", "family", "container", "handler", "head", "shape", "dict_descriptor")),
        redactor is not None, enc._spelled_summaries, enc._spelled_cycles,
    )

    def scalars(elements: Any, depth: int, state: list) -> list:
        """The spelled elements of a container at ``depth``; None or an opened frame for those
        ``child`` left as holes (then ``state[1]`` is true)."""
        # Types are compared by identity: `type(x) in some_set` would hash the class, which could
        # run a metaclass __hash__.
        return [
            (int_get(x) or encode(x)) if (t := type(x)) is int
            else (str_get(x) or encode(x)) if t is str
            else (float_get(x) or encode(x)) if t is float
            else encode(x) if t is bool or x is None
            else child(x, depth, state)
            for x in elements
        ]

    def child(x: Any, depth: int, state: list) -> Any:
        """An element that is not a scalar, of a container at ``depth``: its bytes, or a hole —
        None (not opened: fill opens it) or its frame (opened, holes of its own)."""
        t = type(x)
        info = infos.get(id(t))
        if info is None or info.type is not t:
            info = classify(t)
        if not info.container:
            try:
                return info.handler(x, info)
            except RecursionError:
                raise   # too close to the recursion limit here: fill opens it again (open_here)
            except Exception as exc:
                return error(info.lang, exc)
        if state[1] or depth - state[3] >= eager_levels:
            state[1] = True     # after a hole, siblings wait for fill: depth-first order
            return None
        key = id(x)
        active = state[2]
        if key in active:
            return cycle(info)
        if nodes is not None and depth < max_depth:
            entry = nodes.get(key)
            if entry is not None or key in met_once:
                return reused_element(x, info, key, depth, state, entry)
            if len(met_once) >= _REUSE_ENTRIES:
                met_once.clear()
            met_once[key] = None
        return open_element(x, info, key, depth, state)

    def reused_element(x: Any, info: TypeInfo, key: int, depth: int, state: list, entry: tuple | None) -> Any:
        """child() for a container met before: its bytes of last time if its signature is the
        same (taken with the limits it has here: the budget left, the depth, the containers open
        above it, which it would show as cycles), else opened as child opens it."""
        left, active = state[0], state[2]
        below, sub_depth = items_below[depth], max_depth - depth
        keep: list = []
        try:
            before = signature(x, plain_objects, sub_depth, below, left, keep, active)
        except Exception:
            before = None
        if before is not None and entry is not None and before == entry[0]:
            state[0] = left - entry[2]  # what it was charged: the same elements are shown
            if entry[4]:
                enc.redactions += entry[4]  # the redacted records in the bytes reused
            return entry[1]
        errors, redactions = enc.errors, enc.redactions
        data = open_element(x, info, key, depth, state)
        if before is not None and type(data) is bytes and enc.errors == errors:
            try:
                after = signature(x, plain_objects, sub_depth, below, left, [], active)
            except Exception:
                after = None
            if after == before:     # nothing changed it while it was walked
                if entry is None:
                    met_once.pop(key, None)
                    if len(nodes) >= _REUSE_ENTRIES:
                        enc._forget_reuse()
                elif nodes.get(key) is not entry:   # forgotten while it was walked
                    entry = None
                new = (before, data, left - state[0], keep, enc.redactions - redactions)
                total = enc._node_bytes - (_held_size(entry) if entry else 0) + _held_size(new)
                if total > _REUSE_BYTES:
                    enc._forget_reuse()
                    total = _held_size(new)
                nodes[key] = new
                enc._node_bytes = total
        return data

    def open_element(x: Any, info: TypeInfo, key: int, depth: int, state: list) -> Any:
        """The rest of child(): ``x``, a container not on the path, opened (or summarized)."""
        active = state[2]
        shape = info.shape
        if shape is not None and depth < max_depth:
            # open_object's shortcut, inlined (hot path: most elements that are not scalars are
            # instances shaped like the last one of their class): no call.
            try:
                d = info.get_dict(x)
            except AttributeError:
                d = None
            if type(d) is dict:
                names = shape[0]
                values = list(dict.values(d))   # one C call: no thread runs between
                n = len(values)
                left = state[0]
                if n == len(names) and n <= left and n <= max_items + 1 and all(map(is_, d, names)):
                    state[0] = left - n
                    active[key] = None
                    parts = scalars(values, depth + 1, state)
                    if state[1]:    # opened with holes: it stays on the path until fill is done with it
                        return parts, _holes(parts, values), None, (shape[1], struct_tail)
                    del active[key]
                    return shape[1] + sep.join(parts) + struct_tail
        active[key] = None
        try:
            if depth >= max_depth:
                data = summary(x, info)
            else:
                data = info.handler(x, info, depth + 1, state)
        except RecursionError:
            raise
        except Exception as exc:
            _forget_after(active, list(active).index(key))  # what it had opened goes with it
            state[1] = False
            data = error(info.lang, exc)
        else:
            if type(data) is tuple:
                state[1] = True     # opened with holes: it stays on the path until fill is done with it
                return data
            del active[key]
        return data

    def walk(value: object, info: TypeInfo) -> bytes:
        """A container's record: its bytes of last time if it has not changed since (its
        signature is the same), else opened, then (if it holds holes) filled depth first."""
        # The garbage collector is kept from running while a value is signed and walked: a
        # finalizer or gc callback of the program could change the value in between (then undo
        # it), and bytes of one state would be kept under the signature of another. (Program code
        # cannot run otherwise: the walk calls none. Collections the walk's allocations make due
        # happen at the program's next allocation instead.)
        if gc_isenabled():
            gc_disable()
            try:
                return reused_value(value, info)
            finally:
                gc_enable()
        return reused_value(value, info)

    def reused_value(value: object, info: TypeInfo) -> bytes:
        # Cross-step reuse. reuse[id] is a tuple (signature, bytes, kept objects, misses in a
        # row, encodings left to make without a signature), replaced whole (threads may share the
        # encoder). A value is signed from the second time it is met (most containers made in a
        # loop are met once: met_once holds those); one whose signature keeps changing is signed
        # less and less often (after 2, 3, ... misses in a row: 3, 7, ... 63 encodings without).
        key = id(value)
        entry = reuse.get(key)
        before = None
        if entry is not None:
            if entry[4]:
                reuse[key] = entry[:4] + (entry[4] - 1, entry[5])
            else:
                keep: list = []
                try:
                    before = signature(value, plain_objects, max_depth, items_at, max_nodes, keep)
                except Exception:
                    before = None
                if before is None:      # no signature (a set, a function, ... in reach)
                    reuse[key] = (None, b"", None, 0, _REUSE_BACKOFF, 0)
                    enc._reused_bytes -= _held_size(entry)
                elif before == entry[0]:
                    enc.reused += 1
                    if entry[3]:
                        reuse[key] = entry[:3] + (0, 0, entry[5])
                    if entry[5]:
                        enc.redactions += entry[5]  # the redacted records in the bytes reused
                    return entry[1]
                errors, redactions = enc.errors, enc.redactions
        elif key in met_once:
            entry = _NOT_SIGNED
            keep = []
            try:
                before = signature(value, plain_objects, max_depth, items_at, max_nodes, keep)
            except Exception:
                before = None
            errors, redactions = enc.errors, enc.redactions
        result = None
        if compiled is not None and info.family <= OBJECT:
            # The compiled walk (lists, tuples, dicts, instances by their shape, scalars): the
            # same bytes, or None where it gives up; then the Python walk does it all again,
            # from the counters as they were (_speedups.c says why that is safe).
            counted, failures = enc.redactions, enc.errors
            result = compiled(context, value, info)
            if result is None:
                enc.redactions, enc.errors = counted, failures
        if result is None:
            state = [max_nodes, False, {key: None}, 1]
            counted = enc.redactions
            try:
                result = info.handler(value, info, 1, state)
            except Exception:   # (rare) too close to the recursion limit, or a failure: see open_here
                state[0], state[2] = max_nodes, {}
                enc.redactions = counted    # what was redacted is redacted again, and counted then
                result = open_here(value, info, 1, state)
            if type(result) is tuple:
                result = fill(value, info, result, state)
        if entry is None:
            if len(met_once) >= _REUSE_ENTRIES:
                met_once.clear()
            met_once[key] = None    # next time, a signature
        elif before is not None and enc.errors == errors:
            # Kept only if nothing changed while it was walked (another thread): the signature
            # after the walk must be the one before.
            try:
                after = signature(value, plain_objects, max_depth, items_at, max_nodes, [])
            except Exception:
                after = None
            if after == before:
                enc.signed += 1
                misses = entry[3] + 1 if entry[0] is not None else 0
                wait = (1 << (misses if misses < 6 else 6)) - 1 if misses > 1 else 0
                if entry is _NOT_SIGNED:
                    met_once.pop(key, None)
                    if len(reuse) >= _REUSE_ENTRIES:
                        enc._forget_reuse()
                elif reuse.get(key) is not entry:   # forgotten while it was walked
                    entry = _NOT_SIGNED
                new = (before, result, keep, misses, wait, enc.redactions - redactions)
                total = enc._reused_bytes - _held_size(entry) + _held_size(new)
                if total > _REUSE_BYTES:
                    enc._forget_reuse()
                    total = _held_size(new)
                reuse[key] = new
                enc._reused_bytes = total
        return result

    def fill(value: object, info: TypeInfo, frame: tuple, state: list) -> bytes:
        """Fill the holes of an opened container, depth first, with an explicit stack of frames."""
        active = state[2]
        parts, holes, spell, arg = frame
        # (holes left, parts, spell, arg, the container, its info, its depth, parent's parts, slot)
        stack = [(iter(holes), parts, spell, arg, value, info, 1, None, 0)]
        while True:
            it, parts, spell, arg, x, x_info, depth, outer, slot = stack[-1]
            for i, element in it:
                t = type(element)
                element_info = infos.get(id(t))
                if element_info is None or element_info.type is not t:
                    element_info = classify(t)
                result = parts[i]
                if result is None:  # not opened yet
                    if not element_info.container:
                        try:
                            parts[i] = element_info.handler(element, element_info)
                        except Exception as exc:
                            parts[i] = error(element_info.lang, exc)
                        continue
                    key = id(element)
                    if key in active:
                        parts[i] = cycle(element_info)
                        continue
                    state[1] = False
                    state[3] = depth + 1
                    left, mark, counted = state[0], len(active), enc.redactions
                    active[key] = None
                    try:
                        if depth >= max_depth:
                            result = summary(element, element_info)
                        else:
                            result = element_info.handler(element, element_info, depth + 1, state)
                    except Exception:   # (rare) too close to the recursion limit, or a failure
                        state[0] = left
                        enc.redactions = counted
                        _forget_after(active, mark)
                        result = open_here(element, element_info, depth + 1, state)
                    if type(result) is not tuple:
                        del active[key]
                        parts[i] = result
                        continue
                # An opened container with holes (by child, or just now): its holes first.
                stack.append((iter(result[1]), result[0], result[2], result[3], element, element_info,
                              depth + 1, parts, i))
                break
            else:
                stack.pop()
                try:
                    if spell is None:   # a plain container: head, parts, tail
                        try:
                            data = arg[0] + sep.join(parts) + arg[1]
                        except TypeError:   # a part is a rope
                            data = _join(arg[0], parts, sep, arg[1])
                    else:
                        data = spell(parts, arg)
                except Exception as exc:
                    data = error(x_info.lang, exc)
                # Below _FLAT_DEPTH a container is a rope (see _join): joining each level's bytes
                # would copy a deep value once per level above it.
                if type(data) is list:
                    if depth <= _FLAT_DEPTH:
                        data = _flatten(data)
                elif depth > _FLAT_DEPTH:
                    data = [data]
                if outer is None:
                    return _flatten(data) if type(data) is list else data
                del active[id(x)]
                outer[slot] = data

    def open_here(x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        """``x`` (at ``depth``) opened again after its opener raised (its budget and path undone):
        its bytes or its frame. Too close to the recursion limit for ``child`` to open anything at
        once, it is opened without; a failure of its own makes it an Error."""
        active = state[2]
        left, mark, counted = state[0], len(active), enc.redactions
        active[id(x)] = None
        for base in (depth, -_NO_EAGER):
            state[1] = False
            state[3] = base
            try:
                if depth > max_depth:
                    return summary(x, info)
                return info.handler(x, info, depth, state)
            except RecursionError as exc:
                state[0] = left
                enc.redactions = counted
                _forget_after(active, mark + 1)
                failure: Exception = exc
            except Exception as exc:
                _forget_after(active, mark + 1)     # what it had opened is given up with it
                failure = exc
                break
        state[1] = False
        return error(info.lang, failure)

    def reserve(total: int, state: list, limit: int) -> int:
        """How many of `total` elements to show (at most ``limit``), charged to the value's budget."""
        n = total if total <= limit + 1 else limit   # never "… 1 more": show the one
        left = state[0]
        if n > left:
            n = left if left > 0 else 0
        state[0] = left - n
        return n

    def sequence(info: TypeInfo, elements: Any, total: int, is_tuple: bool, depth: int, state: list) -> Any:
        """A Sequence or Tuple of ``elements``, the first of its ``total``."""
        parts = scalars(elements, depth, state)
        head = info.head or enc._head(info, is_tuple)
        tail = tuple_tail if is_tuple else seq_tail
        if len(parts) < total:
            parts.append(more(total - len(parts)))
        if state[1]:
            return parts, _holes(parts, elements), None, (head, tail)
        return head + sep.join(parts) + tail

    def open_list(x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        """An exact list or tuple (a list is copied first, one C call: another thread cannot change
        it mid-walk)."""
        total = len(x)
        limit = items_at[depth]
        n = total if total <= limit + 1 else limit  # reserve(), inlined: the commonest container
        left = state[0]
        if n > left:
            n = left if left > 0 else 0
        state[0] = left - n
        if info.family == TUPLE:
            elements = x if n == total else x[:n]
            head, tail = info.head or enc._head(info, True), tuple_tail
        else:
            elements = x[:n]
            head, tail = info.head or enc._head(info, False), seq_tail
        parts = scalars(elements, depth, state)
        if n < total:
            parts.append(more(total - n))
        if state[1]:
            return parts, _holes(parts, elements), None, (head, tail)
        return head + sep.join(parts) + tail

    def open_sequence(x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        """Any other sequence (deque, range, dict views, array, subclasses of list and tuple)."""
        total = info.size(x)
        elements = list(islice(info.iterate(x), reserve(total, state, items_at[depth])))
        return sequence(info, elements, total, info.extra, depth, state)

    def open_mapping(x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        return entries(info, info.size(x), info.iterate(x), depth, state)

    def entries(info: TypeInfo, total: int, items: Any, depth: int, state: list) -> Any:
        """A mapping: a Sequence of (key, value) Tuples."""
        n = reserve(total, state, items_at[depth])
        if n < total:
            items = list(islice(items, n))
        head = info.head or enc._head(info, False)
        pair = pair_head[0] or enc._pair_head()
        more_data = more(total - n) if n < total else b""
        counted = enc.redactions    # (the fast way may give up after redacting some value)
        try:
            # The commonest mappings hold scalars only: each entry spelled `key,value` at once (the
            # expression of `scalars`, twice: hot path). Anything else stops it (None + bytes), a
            # key that is a secret's name too (spell_key).
            body = [
                ((int_get(k) or encode(k)) if (t := type(k)) is int
                 else (key_get(k) or spell_key(k)) if t is str
                 else (float_get(k) or encode(k)) if t is float
                 else encode(k) if t is bool or k is None
                 else None)
                + sep
                + ((int_get(v) or encode(v)) if (t := type(v)) is int
                   else (str_get(v) or encode(v)) if t is str
                   else (float_get(v) or encode(v)) if t is float
                   else encode(v) if t is bool or v is None
                   else None)
                for k, v in items
            ]
        except TypeError:
            enc.redactions = counted
        else:
            if body:    # each entry is wrapped in its Tuple by the join
                body = pair + (pair_end + pair).join(body) + pair_tail
                if more_data:
                    body += sep + more_data
            else:
                body = more_data
            return head + body + seq_tail
        # (Iterated as the program's mapping is: another thread changing its size makes it an Error.)
        arg = (head, pair, more_data)
        flat = [e for item in items for e in item]  # key, value, key, value: depth-first order
        if redactor is not None:
            # Keys that are exact strs, or bytes (os.environ's _data: b'GITHUB_TOKEN'), are names.
            # (Bytes keys never take the fast way above, so this costs nothing more.)
            for i in range(0, len(flat), 2):
                k = flat[i]
                if (type(k) is str and secret_name(k)) or (
                        type(k) is bytes and secret_name(bytes.decode(k, "latin-1"))):
                    flat[i + 1] = _Secret(flat[i + 1])
        parts = scalars(flat, depth, state)
        if state[1]:
            return parts, _holes(parts, flat), enc._spell_entries, arg
        return enc._spell_entries(parts, arg)

    def open_object(x: Any, info: TypeInfo, depth: int, state: list) -> Any:
        """An instance with attributes: a Struct whose Type lists the attribute names."""
        shape = info.shape
        if shape is not None:
            # Most instances have the attributes of the last one spelled, the same name objects in
            # the same order: they reuse its Struct head.
            try:
                d = info.get_dict(x)
            except AttributeError:
                d = None
            if type(d) is dict:
                names = shape[0]
                values = list(dict.values(d))   # one C call: no thread runs between
                n = len(values)
                left = state[0]
                if n == len(names) and n <= left and n <= max_items + 1 and all(map(is_, d, names)):
                    state[0] = left - n
                    parts = scalars(values, depth, state)
                    if state[1]:
                        return parts, _holes(parts, values), None, (shape[1], struct_tail)
                    return shape[1] + sep.join(parts) + struct_tail
        pairs, d = read_attributes(x, info)
        total = len(pairs) + (dict.__len__(d) if d is not None else 0)
        if total == 0 and not info.python_class:
            return enc._leaf_opaque(x, info)
        pairs = pick_attributes(pairs, d, reserve(total, state, max_items))
        return enc._struct(info, pairs, total, not info.slots, depth, state)

    return {"walk": walk, "scalars": scalars, "open_list": open_list, "open_sequence": open_sequence,
            "open_mapping": open_mapping, "entries": entries, "open_object": open_object,
            "compiled": compiled, "context": context}

def collection_items(max_items: int, depth: int) -> int:
    """Elements shown of a collection at ``depth`` (1: a variable's own list, dict, set, ...):
    ``max_items`` at depth 1, a quarter of it a level deeper, and so on, but never fewer than
    ``_FEWEST_ITEMS`` (nor more than max_items): with the defaults 10, then 2. Objects show
    ``max_items`` fields at any depth, and no cut hides a single element (it is shown instead of
    the "… 1 more" that would stand for it).

    Why: what a step shows is a tree, and a tree with the same width at every level grows as
    width ** depth; a user reads the first level closely and only glances deeper (birdseye samples
    less further down for the same reason). docs/values.md has the measurements behind the numbers.
    """
    n = max_items >> (_TAPER_SHIFT * (depth - 1)) if depth > 1 else max_items
    floor = _FEWEST_ITEMS if _FEWEST_ITEMS < max_items else max_items
    return n if n > floor else floor


def _holes(parts: list, elements: Any) -> list:
    """The (index, element) pairs of the holes in ``parts``: None (not opened) or a frame (opened)."""
    return [(i, elements[i]) for i, part in enumerate(parts) if part is None or type(part) is tuple]


def _held_size(entry: tuple) -> int:
    """What a reuse entry (signature, bytes, ..., kept objects, ...) is counted for: its
    signature and bytes, and every object it keeps (an estimate)."""
    if entry[0] is None:
        return 0
    keep = entry[2] if type(entry[2]) is list else entry[3]
    return len(entry[0]) + len(entry[1]) + _KEPT_OBJECT_SIZE * len(keep)


def _remember(cache: dict, key: object, data: bytes) -> None:
    """Keep ``data`` in a bounded cache (emptied when full: refilling costs one spelling an entry)."""
    if len(cache) >= _SCALAR_CACHE_SIZE:
        cache.clear()
    cache[key] = data


def _forget_after(ordered: dict, mark: int) -> None:
    """Remove the keys added to ``ordered`` after its first ``mark`` (dicts keep insertion order)."""
    if len(ordered) > mark:
        for key in list(islice(ordered, mark, None)):
            del ordered[key]


def _join(head: bytes, parts: list, separator: bytes, tail: bytes) -> bytes | list:
    """``head + separator.join(parts) + tail``, or a rope when some part is one.

    A rope is a list of bytes and ropes, to be joined once (``_flatten``). The walk makes a
    container nested below ``_FLAT_DEPTH`` a rope, so that a value nested thousands of levels deep
    (``--max-depth`` that high) costs time in proportion to its size, not to its size times its depth.
    Values within the default limits never meet one.
    """
    try:
        return head + separator.join(parts) + tail
    except TypeError:   # a part is a rope
        rope = [head]
        for i, part in enumerate(parts):
            if i:
                rope.append(separator)
            rope.append(part)
        rope.append(tail)
        return rope


def _flatten(rope: list) -> bytes:
    """The bytes of a rope, with an explicit stack (ropes nest as deep as the value)."""
    out: list[bytes] = []
    stack = [iter(rope)]
    while stack:
        for piece in stack[-1]:
            if type(piece) is list:
                stack.append(iter(piece))
                break
            out.append(piece)
        else:
            stack.pop()
    return b"".join(out)


class _Secret:
    """A value shown redacted inside a container (a field or a dict entry whose name is a
    secret's): the walk spells it as ``ValueEncoder.redacted`` of the value it holds."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def _opaque_info(t: type) -> TypeInfo:
    """The class could not be described (or registered): its values are shown as opaque."""
    info = TypeInfo(t, type_name(t))
    info.family = Family.OPAQUE
    return info

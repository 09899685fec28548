"""Turn Python values into CodeTracer ValueRecords.

The recorder captures every visible variable at every executed line, so this
module runs on the hot path, in the middle of the program being recorded.
That dictates its shape.

Capturing a value must not change what the program does.  The encoder never
runs Python code written by the user or by a library: no ``__repr__``,
``__str__``, ``__eq__``, ``__hash__``, ``__len__``, ``__iter__``, properties,
descriptors or ``__getattr__``.  It looks at ``type(value)`` (never
``value.__class__``), dispatches on exact types through tables keyed by
``id(type)`` (hashing a class could run a metaclass ``__hash__``), calls the C
methods of built-in base classes explicitly (``list.__len__(v)``), and reads
instance attributes through the C-level ``__dict__`` and ``__slots__``
descriptors found in the class's own dictionaries, never through attribute
lookup.  Sets are ordered by keys it computes itself, never by comparing the
user's objects.

Capturing must be cheap and bounded.  Records of small immutable scalars are
cached and shared, every type is classified once, and containers are walked
with an explicit stack rather than recursion, so a deeply nested value or a
program already close to its recursion limit cannot make the encoder fail.
Depth, elements per container, characters per string and records per value
are all limited; a cut is always visible in the output.

Capturing never fails: whatever goes wrong becomes an ``Error`` record for
that one value and encoding goes on.  ``docs/values.md`` lists the encoding
of every kind of value.
"""

from __future__ import annotations

import _thread
import base64
import collections
import enum
import gc
import heapq
import io
import re
import sys
import time
import types
from itertools import islice, repeat
from operator import is_
from typing import Any, Callable

from timelapse.iocapture import StreamProxy
from timelapse.jsonbytes import from_json, to_json

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_STRING",
    "ValueEncoder",
    "sanitize_text",
    "type_name",
]

#: Container levels shown; a container nested deeper becomes a short summary.
DEFAULT_MAX_DEPTH = 8
#: Elements shown per container (items, entries, fields); the rest are counted.
DEFAULT_MAX_ITEMS = 100
#: Characters shown per string (bytes per bytes-like value).
DEFAULT_MAX_STRING = 1000
#: Elements shown in one encoded value, all containers together.
DEFAULT_MAX_NODES = 1000

# TypeKind numbers (shared/trace-format.md, section 3).
_SEQ = 0
_HASH_SET = 2
_ARRAY = 4
_STRUCT = 6
_INT = 7
_FLOAT = 8
_STRING = 9
_BOOL = 12
_RAW = 16
_ERROR = 24
_TUPLE = 27
_VARIANT = 28
_NONE = 30
_ANY = 32

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_SCALAR_CACHE_SIZE = 4096   # records per scalar cache before it is emptied
_SHORT_STRING = 64          # strings up to this length have cached records
# Every cache is bounded (a program may meet any number of classes and attribute sets) and is
# emptied when full: refilling costs one classification or one register_type call per entry.
_TYPE_CACHE_SIZE = 2048     # classified types kept at most (each keeps its class alive)
_TYPE_ID_CACHE_SIZE = 4096  # type ids kept at most, struct shapes of all classes together
_INT_TEXT_BITS = 3000       # ints bigger than this are described, not printed
_ELLIPSIS = "\u2026"
# How encode_json serializes a container: straight to bytes (the commonest kinds), or through records.
_WALK_GENERAL, _WALK_LIST, _WALK_TUPLE, _WALK_DICT, _WALK_OBJECT = range(5)
#: Container levels serialized by recursion; deeper ones go to the explicit-stack walk.
_RECURSION_LEVELS = 12
_TRUNCATED = "<truncated>"  # lang_type of the "... N more" marker

# C-level accessors: calling these never reaches Python code, even when a
# metaclass overrides __getattribute__ or defines properties of the same name.
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name_attr = type.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_module_dict = types.ModuleType.__dict__["__dict__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_func_module = types.FunctionType.__dict__["__module__"].__get__
_builtin_name = types.BuiltinFunctionType.__dict__["__name__"].__get__
_builtin_self = types.BuiltinFunctionType.__dict__["__self__"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_code_qualname = types.CodeType.__dict__["co_qualname"].__get__
_frame_code = types.FrameType.__dict__["f_code"].__get__
_exc_args = BaseException.__dict__["args"].__get__
_os_errno = OSError.__dict__["errno"].__get__
_os_strerror = OSError.__dict__["strerror"].__get__
_os_filename = OSError.__dict__["filename"].__get__
_text_buffer = io.TextIOWrapper.__dict__["buffer"].__get__
_fileio_mode = io.FileIO.__dict__["mode"].__get__
_fileio_closed = io.FileIO.__dict__["closed"].__get__
_object_getattribute = object.__getattribute__
_member_owner = types.MemberDescriptorType.__dict__["__objclass__"].__get__
_MEMBER = types.MemberDescriptorType
_proxy_original = StreamProxy.__dict__["_original"].__get__
_GETSET = types.GetSetDescriptorType
_HEAPTYPE = 1 << 9
_IMMUTABLETYPE = 1 << 8

_SURROGATES = re.compile("[\ud800-\udfff]")
_FALLBACK_ERROR = {"kind": "Error", "type_id": 0, "msg": "<value could not be captured>"}


def sanitize_text(s: str) -> str:
    """Return `s` with lone surrogates replaced by U+FFFD (valid UTF-8)."""
    if str.isascii(s):
        return s
    try:
        str.encode(s, "utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", s)
    return s


def _text_of(x: object) -> str | None:
    """``x`` as an exact ``str`` if it is text (a ``str`` subclass gives the text it holds), else None.

    Names (``__qualname__``, ``__name__``, ``__module__``, ``co_qualname``) may be ``str`` subclasses:
    formatting one in an f-string, or calling its methods, would run the program's ``__format__``
    etc. ``issubclass`` with ``str`` (whose metaclass is exactly ``type``) is a C walk of the MRO."""
    t = type(x)
    if t is str:
        return x
    if issubclass(t, str):
        return str.__str__(x)
    return None


def type_name(t: type) -> str:
    """The module-qualified name of a class (``int``, ``shapes.Point``), without running any of the
    program's code: the names are read through ``type``'s C descriptors (not through the metaclass),
    and compared only once they are known to be exact ``str`` (a ``__module__`` that is a ``str``
    subclass is read as the text it holds; one that is no text at all is left out). The one helper
    of the package for lang_types and exception names."""
    try:
        qualname = _text_of(_type_qualname(t))
    except Exception:
        qualname = None
    if qualname is None:
        try:
            qualname = _text_of(_type_name_attr(t))
        except Exception:
            qualname = None
        if qualname is None:
            qualname = "?"
    try:
        module = _text_of(_type_module(t))
    except Exception:
        module = None
    if module and module != "builtins":
        qualname = f"{module}.{qualname}"
    return sanitize_text(qualname)


def _items_text(n: int) -> str:
    return "1 item" if n == 1 else f"{n:,} items"


def _int_text(n: int) -> str:
    """Decimal text of an int, or a description when it is too big to print."""
    bits = int.bit_length(n)
    if bits > _INT_TEXT_BITS:
        return f"<int: {bits:,} bits>"
    return int.__repr__(n)


def _short_repr(x: object, limit: int = 200) -> str:
    """A repr for simple built-in values, a type description for anything else."""
    t = type(x)
    if t is str or t is bytes:
        text = repr(x[:limit])
        if len(x) > limit:
            text += _ELLIPSIS
        return text
    if t is int:
        return _int_text(x)
    if x is None or t is bool or t is float:
        return repr(x)
    return f"<{type_name(t)} object>"


def _exception_message(exc: BaseException, mro: tuple) -> str:
    """What str(exc) would say, computed without running the exception's code."""
    args = _exc_args(exc)
    if type(args) is not tuple:
        return ""
    if _has_base(mro, OSError):
        errno, strerror = _os_errno(exc), _os_strerror(exc)
        if type(errno) is int and type(strerror) is str:
            text = f"[Errno {errno}] {strerror}"
            filename = _os_filename(exc)
            if filename is not None:
                text += f": {_short_repr(filename)}"
            return text
    if len(args) == 0:
        return ""
    if len(args) == 1:
        arg = args[0]
        if type(arg) is str and not _has_base(mro, KeyError):
            return arg
        return _short_repr(arg)
    return "(" + ", ".join(map(_short_repr, args)) + ")"


def _named_fields(pairs: Any, total: int) -> tuple[list, list, int]:
    """The names and values of a Struct's (name, value) pairs, and its field count.

    A name that is a str subclass (a key put in vars() by hand) is shown as the str it
    stands for; a pair whose name is not a str at all is left out.
    """
    names: list = []
    values: list = []
    for name, value in pairs:
        if type(name) is not str:
            if not issubclass(type(name), str):
                total -= 1
                continue
            name = str.__str__(name)    # exact str: safe to hash
        names.append(name)
        values.append(value)
    return names, values, total


def _as_json(record_or_data: dict | bytes) -> bytes:
    """A step-memo entry as bytes (the memo holds records and serialized values)."""
    if type(record_or_data) is bytes:
        return record_or_data
    return to_json(record_or_data)


def _as_record(record_or_data: dict | bytes) -> dict:
    """A step-memo entry as a record."""
    if type(record_or_data) is dict:
        return record_or_data
    return from_json(record_or_data)


def _has_base(mro: tuple, base: type) -> bool:
    """`base in mro` by identity only (`in` could call a metaclass __eq__)."""
    return any(map(is_, mro, repeat(base)))


def _describe_exception(exc: BaseException) -> str:
    """'TypeError: message' for an exception raised inside the encoder."""
    t = type(exc)
    try:
        text = _exception_message(exc, _type_mro(t))
    except Exception:
        text = ""
    name = type_name(t)
    return f"{name}: {text[:200]}" if text else name


def _sort_key(x: object, _level: int = 0) -> tuple:
    """An ordering key for set members that compares only built-in values.

    Distinct scalars get distinct keys; other members tie in their group and
    are ordered by their encoded form.  Never calls user comparisons.
    """
    t = type(x)
    if t is int or t is bool:
        return (1, x)
    if t is str:
        return (3, x)
    if x is None:
        return (0, 0)
    if t is float:
        return (1, x) if x == x else (2, 0)
    if t is bytes:
        return (4, x)
    if t is tuple and _level < 3 and len(x) <= 16:
        return (5, tuple([_sort_key(item, _level + 1) for item in x]))
    return (6, 0)


def _range_len(r: range) -> int:
    """len(r) without OverflowError for huge ranges."""
    start, stop, step = r.start, r.stop, r.step
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _mangle(class_name: str, name: str) -> str:
    """Apply private name mangling, as the compiler does for __slots__ names."""
    if not name.startswith("__") or name.endswith("__"):
        return name
    stripped = class_name.lstrip("_")
    return f"_{stripped}{name}" if stripped else name


def _module_attr(module: str, name: str) -> object:
    """An attribute of an already imported module, read from its dict."""
    m = sys.modules.get(module)
    if type(m) is not types.ModuleType:
        return None
    return _module_dict(m).get(name)


def _is_python_class(t: type) -> bool:
    """True for classes made by a class statement (C types are immutable or static)."""
    flags = _type_flags(t)
    return bool(flags & _HEAPTYPE) and not flags & _IMMUTABLETYPE


def _is_dict(d: object) -> bool:
    # issubclass with a second argument whose metaclass is exactly `type`
    # is PyType_IsSubtype: a C walk of the MRO, no __subclasscheck__ call.
    return type(d) is dict or issubclass(type(d), dict)


class _TypeInfo:
    """What the encoder knows about one Python type: built once, then cached."""

    __slots__ = (
        "type", "lang", "handler", "container", "tid", "size", "iterate",
        "extra", "slots", "get_dict", "python_class", "brief", "mro", "walk",
        "json_shape",
    )

    def __init__(self, t: type, lang: str) -> None:
        self.type = t
        self.lang = lang
        self.handler: Callable[..., Any] | None = None
        self.container = False      # True: handler(x, info, depth, state)
        self.tid: int | None = None
        self.size: Callable[[Any], int] | None = None
        self.iterate: Callable[[Any], Any] | None = None
        self.extra: Any = None
        self.slots: list = []       # [(field name, member descriptor getter)]
        self.get_dict: Callable[[Any], Any] | None = None
        self.python_class = False   # defined by a class statement
        self.brief: Callable[[Any], str] | None = None
        self.mro: tuple = ()
        self.walk = _WALK_GENERAL   # how encode_json serializes it (see _serialized_walk)
        #: (attribute names, Struct prefix) of the last instance _object_json serialized whose
        #: fields were exactly its __dict__ (no slots, nothing cut): the shortcut in child_json.
        self.json_shape: tuple | None = None


class ValueEncoder:
    """Encode Python values as ValueRecord dicts, registering their types.

    `register_type(kind, lang_type, specific_info=None) -> int` is called once
    per distinct type.  Records are JSON-shaped dicts that may be shared
    between calls; callers must not mutate them.  One encoder may be used
    from several threads at once.
    """

    def __init__(
        self,
        register_type: Callable[[int, str, dict | None], int],
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_string: int = DEFAULT_MAX_STRING,
        *,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        self._register = register_type
        self.max_depth = max(1, int(max_depth))
        self.max_items = max(1, int(max_items))
        self.max_string = max(1, int(max_string))
        self.max_nodes = max(1, int(max_nodes))
        self._type_ids: dict[tuple, int] = {}
        self._infos: dict[int, _TypeInfo] = {}
        self._ints: dict[int, dict] = {}
        self._strs: dict[str, dict] = {}
        self._floats: dict[float, dict] = {}
        # encode_json's caches: the serialized records of ints, floats and short strings, by value.
        self._int_json: dict[int, bytes] = {}
        self._str_json: dict[str, bytes] = {}
        self._float_json: dict[float, bytes] = {}
        self._int_prefix_bytes = b""
        self._float_prefix_bytes = b""
        self._const_json: dict[object, bytes] = {}   # None, True, False
        self._prefixes: dict[type, bytes] = {}
        self._more_records: dict[int, dict] = {}
        #: The containers met since the program last ran, by id: (object, its record or its
        #: serialized record) -- see step_memo.
        self._memo: dict[int, tuple[object, dict | bytes]] | None = None
        self._child_json, self._values_json = _serialized_walk(self)

    def step_memo(self) -> dict:
        """Turn on sharing within a step and return the memo; the caller must clear it every time
        the program may have run since the last ``encode`` (the recorder: at each event).

        An object met twice among a step's values (a list of objects and a dict of the same objects)
        is then encoded once. Without a caller that clears it, a memo would show stale values.
        """
        if self._memo is None:
            self._memo = {}
        return self._memo

    def _scalar_prefix(self, t: type) -> bytes:
        """``{"kind":"Int","type_id":T,"i":`` (int) or ``{"kind":"Float","type_id":T,"f":"`` (float);
        b"" while the type cannot be classified (too close to the recursion limit)."""
        info = self._info(t)
        if info.handler == self._leaf_opaque:
            return b""
        if t is int:
            prefix = self._int_prefix_bytes = b'{"kind":"Int","type_id":%d,"i":' % info.tid
        else:
            prefix = self._float_prefix_bytes = b'{"kind":"Float","type_id":%d,"f":"' % info.tid
        return prefix

    # -- public API ---------------------------------------------------------

    def encode_json(self, value: object) -> bytes:
        """The ValueRecord of `value`, serialized (what the recorder writes).  Never raises."""
        # Hot path.  Exact ints, floats and strings (most values at most steps) are written
        # straight to bytes, without a record dict; those seen before come from a cache.
        t = type(value)
        if t is int:
            data = self._int_json.get(value)
            if data is None:
                prefix = self._int_prefix_bytes or self._scalar_prefix(int)
                if prefix and _I64_MIN <= value <= _I64_MAX:
                    data = prefix + b"%d}" % value
                    cache = self._int_json
                    if len(cache) >= _SCALAR_CACHE_SIZE:
                        cache.clear()
                    cache[value] = data
                else:
                    data = to_json(self.encode(value))
            return data
        if t is str:
            data = self._str_json.get(value)
            if data is None:
                record = self.encode(value)
                data = to_json(record)
                if len(value) <= _SHORT_STRING and record["kind"] == "String":
                    cache = self._str_json
                    if len(cache) >= _SCALAR_CACHE_SIZE:
                        cache.clear()
                    cache[value] = data
            return data
        if t is float:
            data = self._float_json.get(value)
            if data is None:
                prefix = self._float_prefix_bytes or self._scalar_prefix(float)
                if not prefix:
                    return to_json(self.encode(value))
                data = prefix + float.__repr__(value).encode() + b'"}'
                if value == value and value != 0.0:  # nan never hits, -0.0 == 0.0 would alias
                    cache = self._float_json
                    if len(cache) >= _SCALAR_CACHE_SIZE:
                        cache.clear()
                    cache[value] = data
            return data
        if value is None or t is bool:
            data = self._const_json.get(value)
            if data is None:
                record = self.encode(value)
                data = to_json(record)
                if record["kind"] in ("None", "Bool"):  # not a stand-in made near the recursion limit
                    self._const_json[value] = data
            return data
        info = self._infos.get(id(t))
        if info is None or info.type is not t:
            info = self._classify(t)
        if info.walk != _WALK_GENERAL:
            data = self._tree_json(value, info)
            if data is not None:
                return data
        return to_json(self.encode(value))

    def _prefix(self, t: type) -> bytes:
        """``{"kind":K,"type_id":T,"elements":[`` of an exact list, tuple or dict."""
        prefix = self._prefixes.get(t)
        if prefix is None:
            info = self._info(t)
            kind = b"Tuple" if t is tuple else b"Sequence"
            prefix = b'{"kind":"%b","type_id":%d,"elements":[' % (kind, info.tid)
            if info.walk:   # classified (not an opaque stand-in): keep it
                self._prefixes[t] = prefix
        return prefix

    def encode(self, value: object) -> dict:
        """Return the ValueRecord of `value`.  Never raises, never runs user code."""
        # Hot path: called for every visible variable at every executed line,
        # so the commonest cases (cached ints and short strings) come first.
        info = None
        try:
            t = type(value)
            if t is int:
                record = self._ints.get(value)
                if record is not None:
                    return record
            elif t is str:
                record = self._strs.get(value)
                if record is not None:
                    return record
            info = self._infos.get(id(t))
            if info is None or info.type is not t:
                info = self._classify(t)
            if not info.container:
                return info.handler(value, info)
            return self._encode_tree(value, info)
        except Exception as exc:
            try:
                return self._error(type_name(type(value)) if info is None else info.lang, exc)
            except Exception:
                return _FALLBACK_ERROR

    # -- the walk -----------------------------------------------------------
    #
    # Containers are encoded in two steps.  A container handler makes the
    # record at once, with the records of its leaf elements (scalars, texts)
    # and None placeholders for its container elements, listed in `pending`
    # as (target, key, value): the record of `value` goes to `target[key]`.
    # _encode_tree then fills the placeholders depth first, with an explicit
    # stack instead of recursion.

    def _info(self, t: type) -> _TypeInfo:
        info = self._infos.get(id(t))
        if info is None or info.type is not t:
            info = self._classify(t)
        return info

    def _child(self, x: object) -> dict | None:
        """The record of a leaf value, or None for a container to expand later."""
        # Hot path: called for elements that are not cached scalars.
        t = type(x)
        info = self._infos.get(id(t))
        if info is None or info.type is not t:
            info = self._classify(t)
        if info.container:
            return None
        try:
            return info.handler(x, info)
        except Exception as exc:
            return self._error(info.lang, exc)

    def _expand(self, x: object, depth: int, state: list) -> Any:
        """Encode one container: a record, or (record, pending, finish).

        `finish`, if not None, is called once all pending records are filled.
        """
        info = self._info(type(x))
        try:
            if not info.container:
                return info.handler(x, info)
            if depth > self.max_depth:
                return self._summary(x, info)
            return info.handler(x, info, depth, state)
        except Exception as exc:
            return self._error(info.lang, exc)

    def _encode_tree(
        self, value: object, info: _TypeInfo, depth: int = 1, state: list | None = None,
        active: set | None = None,
    ) -> dict:
        """Encode a container without recursion: an explicit stack of frames.

        `depth`, `state` and `active` continue a walk begun by _child_json.
        """
        memo = self._memo
        if memo is not None:
            seen = memo.get(id(value))
            if seen is not None and seen[0] is value:
                return _as_record(seen[1])
        if state is None:
            state = [self.max_nodes]   # elements left in this value's budget
        try:
            result = info.handler(value, info, depth, state)
        except Exception as exc:
            result = self._error(info.lang, exc)
        if type(result) is dict:
            if memo is not None:
                memo[id(value)] = (value, result)
            return result
        record, pending, finish = result
        if memo is not None:
            memo[id(value)] = (value, record)
        if active is None:
            active = set()         # containers on the current path: cycles
        active.add(id(value))
        stack = [(iter(pending), depth, id(value), finish)]
        expand = self._expand
        while stack:
            it, depth, key, finish = stack[-1]
            for target, slot, x in it:
                x_key = id(x)
                if x_key in active:
                    target[slot] = self._cycle(x)
                    continue
                if memo is not None:
                    seen = memo.get(x_key)
                    if seen is not None and seen[0] is x:
                        target[slot] = _as_record(seen[1])  # the same object, met again in this step
                        continue
                result = expand(x, depth + 1, state)
                if type(result) is dict:
                    target[slot] = result
                    if memo is not None:
                        memo[x_key] = (x, result)
                    continue
                target[slot] = result[0]
                if memo is not None:
                    memo[x_key] = (x, result[0])
                stack.append((iter(result[1]), depth + 1, x_key, result[2]))
                active.add(x_key)
                break
            else:
                stack.pop()
                active.discard(key)
                if finish is not None:
                    finish()
        return record

    def _items(self, iterable: Any) -> tuple[list, list | None]:
        """Records of the elements, with None placeholders listed in pending."""
        # Hot path: the element loop of every container.
        ints, strs, floats, child = self._ints, self._strs, self._floats, self._child
        elements: list = []
        append = elements.append
        pending = None
        for x in iterable:
            t = type(x)
            record = (ints.get(x) if t is int else strs.get(x) if t is str
                      else floats.get(x) if t is float else None)
            if record is None:
                record = child(x)
                if record is None:
                    if pending is None:
                        pending = []
                    pending.append((elements, len(elements), x))
            append(record)
        return elements, pending

    def _reserve(self, total: int, state: list) -> int:
        """How many of `total` elements to show, charged to the value's budget."""
        n = total if total < self.max_items else self.max_items
        left = state[0]
        if n > left:
            n = left if left > 0 else 0
        state[0] = left - n
        return n

    # -- the serialized walk ---------------------------------------------------

    def _tree_json(self, value: object, info: _TypeInfo) -> bytes | None:
        """encode_json of a container whose type has a serialized walk; None if the program is too
        close to its recursion limit for this walk (then encode() makes it).  Never raises."""
        memo = self._memo
        mark = len(memo) if memo is not None else 0
        try:
            return self._child_json(value, 0, [self.max_nodes], set())
        except RecursionError:  # the program is close to its recursion limit: walk without recursion
            if memo is not None and len(memo) > mark:   # forget this walk's entries (dicts keep order)
                for key in list(islice(memo, mark, None)):
                    del memo[key]
            return None
        except Exception as exc:
            try:
                return to_json(self._error(info.lang, exc))
            except Exception:
                return to_json(_FALLBACK_ERROR)

    def _object_json(self, x: Any, info: _TypeInfo, depth: int, state: list, active: set) -> bytes:
        """An instance with attributes, as _expand_object and _struct_record make it."""
        pairs, total = self._attributes(x, info, 0, state)
        if total == 0 and not info.python_class:
            return to_json(self._leaf_opaque(x, info, self._type_id(_RAW, info.lang)))
        names, values, total = _named_fields(pairs, total)
        parts = self._values_json(values, depth, state, active)
        cut = total > len(parts)
        if cut:
            names.append(_ELLIPSIS)
            parts.append(to_json(self._more(total - len(parts))))
        names = tuple(names)
        prefix = b'{"kind":"Struct","type_id":%d,"field_values":[' % self._shape_tid(info, names)
        if names and not cut and not info.slots:
            info.json_shape = (names, prefix)   # the shortcut in _serialized_walk
        return prefix + b",".join(parts) + b"]}"

    # -- types --------------------------------------------------------------

    def _type_id(self, kind: int, lang_type: str, fields: tuple | None = None) -> int:
        """The TypeId for (kind, lang_type[, struct fields]), registered once."""
        key = (kind, lang_type, fields)
        tid = self._type_ids.get(key)
        if tid is None:
            info = None
            if fields is not None:
                any_tid = self._type_id(_ANY, "object")
                info = {
                    "kind": "Struct",
                    "fields": [{"name": sanitize_text(name), "type_id": any_tid} for name in fields],
                }
            tid = self._register(kind, lang_type, info)
            if len(self._type_ids) >= _TYPE_ID_CACHE_SIZE:
                self._type_ids.clear()
            self._type_ids[key] = tid
        return tid

    def _shape_tid(self, info: _TypeInfo, names: tuple) -> int:
        """The TypeId of a Struct with these field names."""
        # One cache for the shapes of all classes (_type_ids): a cache per class would hold
        # classes x shapes entries.
        tid = self._type_ids.get((_STRUCT, info.lang, names))
        return tid if tid is not None else self._type_id(_STRUCT, info.lang, names)

    def _classify(self, t: type) -> _TypeInfo:
        """Decide, once per type, how its values are encoded."""
        info = _TypeInfo(t, type_name(t))
        try:
            self._setup(info)
        except Exception as exc:
            info.container = False
            info.walk = _WALK_GENERAL
            info.handler = self._leaf_opaque
            info.tid = self._type_id(_RAW, info.lang)
            if isinstance(exc, RecursionError):
                return info     # not kept: classified again once there is room
        infos = self._infos
        if len(infos) >= _TYPE_CACHE_SIZE:
            infos.clear()
        infos[id(t)] = info
        return info

    def _setup(self, info: _TypeInfo) -> None:
        t = info.type
        mro = info.mro = _type_mro(t)
        info.python_class = _is_python_class(t)
        if t is object:
            return self._setup_constant(info, t, "<object>")
        table = _BUILTIN_BASES
        optional = _optional_bases()
        for base in mro:
            # Enum before int (IntEnum), BaseException and metaclasses first.
            if base is enum.Enum:
                return self._setup_enum(info)
            if base is BaseException:
                return self._setup_exception(info)
            if base is type:
                return self._setup_leaf(info, _RAW, self._leaf_class)
            if base is StreamProxy:     # our sys.stdout & co.: recorded as the stream they stand for
                return self._setup_leaf(info, _RAW, self._leaf_stream_proxy, _proxy_original)
        for base in mro:
            entry = table.get(id(base)) or optional.get(id(base))
            if entry is not None and entry[0] is base:
                return getattr(self, entry[1])(info, base, *entry[2])
        self._setup_object(info)

    # Setup methods: fill in `info` for one family of types.

    def _setup_leaf(self, info: _TypeInfo, kind: int, handler: Callable, extra: Any = None) -> None:
        info.handler = handler
        info.tid = self._type_id(kind, info.lang)
        info.extra = extra

    def _setup_none(self, info: _TypeInfo, base: type) -> None:
        info.lang = "None"      # TypeId 0 in every trace
        self._setup_leaf(info, _NONE, self._leaf_constant)
        info.extra = {"kind": "None", "type_id": info.tid}

    def _setup_bool(self, info: _TypeInfo, base: type) -> None:
        self._setup_leaf(info, _BOOL, self._leaf_bool)
        info.extra = (
            {"kind": "Bool", "type_id": info.tid, "b": False},
            {"kind": "Bool", "type_id": info.tid, "b": True},
        )

    def _setup_constant(self, info: _TypeInfo, base: type, text: str) -> None:
        self._setup_leaf(info, _RAW, self._leaf_constant)
        info.extra = {"kind": "Raw", "type_id": info.tid, "r": text}

    def _setup_scalar(self, info: _TypeInfo, base: type, kind: int, handler: str) -> None:
        self._setup_leaf(info, kind, getattr(self, handler), base)

    def _setup_sequence(self, info: _TypeInfo, base: type, kind: int) -> None:
        info.container = True
        info.handler = self._expand_sequence
        info.tid = self._type_id(kind, info.lang)
        info.extra = "Tuple" if kind == _TUPLE else "Sequence"
        if info.type is base:
            info.size, info.iterate = len, iter
            if base is list or base is tuple:
                info.walk = _WALK_LIST if base is list else _WALK_TUPLE
        else:
            info.size, info.iterate = base.__len__, base.__iter__
        if base is range:
            info.size = _range_len

    def _setup_tuple(self, info: _TypeInfo, base: type) -> None:
        names = self._tuple_fields(info)
        if names is None:
            return self._setup_sequence(info, base, _TUPLE)
        info.container = True
        info.handler = self._expand_named_tuple
        info.extra = names
        info.size, info.iterate = tuple.__len__, tuple.__iter__

    def _tuple_fields(self, info: _TypeInfo) -> tuple | None:
        """Field names of a namedtuple or struct sequence class, else None."""
        if info.type is tuple:
            return None
        for klass in info.mro:
            if klass is tuple:
                break
            cd = _type_dict(klass)
            names = cd.get("_fields")
            if names is None and "n_sequence_fields" in cd:
                names = cd.get("__match_args__")    # os.stat_result & co.
            if type(names) is tuple and all(type(n) is str for n in names):
                return names
        return None

    def _setup_set(self, info: _TypeInfo, base: type) -> None:
        self._setup_sequence(info, base, _HASH_SET)
        info.handler = self._expand_set

    def _setup_mapping(self, info: _TypeInfo, base: type) -> None:
        info.container = True
        info.handler = self._expand_mapping
        info.tid = self._type_id(_SEQ, info.lang)
        items = base.items
        if type(items) is not types.MethodDescriptorType:   # pure-Python OrderedDict
            items = dict.items
        info.size = len if info.type is base else dict.__len__
        info.iterate = items
        if info.type is dict:
            info.walk = _WALK_DICT

    def _setup_mappingproxy(self, info: _TypeInfo, base: type) -> None:
        info.container = True
        info.handler = self._expand_mappingproxy
        info.tid = self._type_id(_SEQ, info.lang)

    def _setup_bytes(self, info: _TypeInfo, base: type) -> None:
        self._setup_leaf(info, _RAW, self._leaf_bytes, base)

    def _setup_enum(self, info: _TypeInfo) -> None:
        info.get_dict = self._find_dict_getter(info)
        if info.get_dict is None:
            return self._setup_object(info)
        info.container = True
        info.handler = self._expand_enum
        info.tid = self._type_id(_VARIANT, info.lang)
        info.brief = self._enum_brief

    def _setup_exception(self, info: _TypeInfo) -> None:
        self._setup_attributes(info)
        info.container = True
        info.handler = self._expand_exception

    def _setup_object(self, info: _TypeInfo) -> None:
        self._setup_attributes(info)
        if info.get_dict is None and not info.slots and not info.python_class:
            return self._setup_leaf(info, _RAW, self._leaf_opaque)
        info.container = True
        info.handler = self._expand_object
        info.walk = _WALK_OBJECT

    def _setup_attributes(self, info: _TypeInfo) -> None:
        """Find the C-level descriptors that give an instance's attributes."""
        info.get_dict = self._find_dict_getter(info)
        if not info.python_class:
            return
        fields: dict[str, Callable] = {}
        for klass in reversed(info.mro):
            if not _is_python_class(klass):
                continue
            cd = _type_dict(klass)
            declared = cd.get("__slots__")
            if declared is None:
                continue
            kind = type(declared)
            if kind is str:
                declared = (declared,)
            elif kind is not tuple and kind is not list and kind is not dict:
                declared = list(cd)     # an unusual iterable: the members in dict order
            class_name = _text_of(_type_name_attr(klass)) or ""
            for name in declared:
                if type(name) is not str or name in ("__dict__", "__weakref__"):
                    continue
                name = _mangle(class_name, name)
                descr = cd.get(name)
                if type(descr) is _MEMBER and _member_owner(descr) is klass:
                    fields[name] = descr.__get__
        info.slots = list(fields.items())

    def _find_dict_getter(self, info: _TypeInfo) -> Callable | None:
        """The C getter of the instance __dict__, skipping Python properties."""
        for klass in info.mro:
            descr = _type_dict(klass).get("__dict__")
            if type(descr) is _GETSET or type(descr) is _MEMBER:
                return descr.__get__
        return None

    def _setup_text(self, info: _TypeInfo, base: type, handler: str) -> None:
        """Values shown as a short text: functions, modules, files, dates, ..."""
        self._setup_leaf(info, _RAW, getattr(self, handler), base)
        if handler == "_leaf_path":
            info.extra = None
            for klass in info.mro:
                descr = _type_dict(klass).get("_raw_paths")
                if type(descr) is _MEMBER:
                    info.extra = descr.__get__
                    break
            else:   # a pathlib without _raw_paths: show its attributes
                self._setup_object(info)

    # -- container handlers: (x, info, depth, state) -------------------------

    def _expand_sequence(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        total = info.size(x)
        n = self._reserve(total, state)
        if n < total:
            it = islice(info.iterate(x), n)
        elif info.iterate is iter:
            it = x      # an exact built-in type: its own C iterator
        else:
            it = info.iterate(x)
        elements, pending = self._items(it)
        if len(elements) < total:
            elements.append(self._more(total - len(elements)))
        if info.extra == "Tuple":
            record = {"kind": "Tuple", "type_id": info.tid, "elements": elements}
        else:
            record = {"kind": "Sequence", "type_id": info.tid, "elements": elements, "is_slice": False}
        return (record, pending, None) if pending else record

    def _expand_set(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        total = info.size(x)
        n = self._reserve(total, state)
        if n >= total:
            members = list(info.iterate(x))
        elif _all_of_type(info.iterate(x), int) or _all_of_type(info.iterate(x), str):
            members = heapq.nsmallest(n, info.iterate(x))   # C comparisons only
        else:
            members = heapq.nsmallest(n, info.iterate(x), key=_sort_key)
        elements, pending = self._items(members)
        record = {"kind": "Sequence", "type_id": info.tid, "elements": elements, "is_slice": False}
        more = total - len(members)

        def finish() -> None:
            keys = [_sort_key(m) for m in members]
            order = sorted(
                range(len(members)),
                key=lambda i: (keys[i], repr(elements[i]) if keys[i][0] >= 5 else ""),
            )
            elements[:] = [elements[i] for i in order]
            if more > 0:
                elements.append(self._more(more))

        if pending:
            return record, pending, finish
        finish()
        return record

    def _expand_mapping(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        return self._mapping_record(info, info.size(x), info.iterate(x), state)

    def _expand_mappingproxy(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        referents = gc.get_referents(x)     # the proxied mapping, found in C
        if len(referents) != 1 or not _is_dict(referents[0]):
            return self._leaf_opaque(x, info, self._type_id(_RAW, info.lang))
        mapping = referents[0]
        return self._mapping_record(info, dict.__len__(mapping), dict.items(mapping), state)

    def _mapping_record(self, info: _TypeInfo, total: int, items: Any, state: list) -> Any:
        n = self._reserve(total, state)
        if n < total:
            items = islice(items, n)
        ints, strs, child = self._ints, self._strs, self._child
        pair_tid = self._type_id(_TUPLE, "tuple")
        elements: list = []
        pending: list = []
        for key, value in items:
            t = type(key)
            rk = strs.get(key) if t is str else ints.get(key) if t is int else None
            if rk is None:
                rk = child(key)
            t = type(value)
            rv = ints.get(value) if t is int else strs.get(value) if t is str else None
            if rv is None:
                rv = child(value)
            pair = [rk, rv]
            if rk is None:
                pending.append((pair, 0, key))
            if rv is None:
                pending.append((pair, 1, value))
            elements.append({"kind": "Tuple", "type_id": pair_tid, "elements": pair})
        if len(elements) < total:
            elements.append(self._more(total - len(elements)))
        record = {"kind": "Sequence", "type_id": info.tid, "elements": elements, "is_slice": False}
        return (record, pending, None) if pending else record

    def _expand_named_tuple(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        names = info.extra
        total = tuple.__len__(x)
        if total != len(names):     # struct sequences can have unnamed fields
            names = names + tuple(f"[{i}]" for i in range(len(names), total))
        n = self._reserve(total, state)
        return self._struct_record(info, zip(names[:n], tuple.__iter__(x)), total)

    def _expand_object(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        pairs, total = self._attributes(x, info, 0, state)
        if total == 0 and not info.python_class:
            return self._leaf_opaque(x, info, self._type_id(_RAW, info.lang))
        return self._struct_record(info, pairs, total)

    def _expand_exception(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        pairs, total = self._attributes(x, info, 2, state)
        pairs[:0] = [("message", _exception_message(x, info.mro)), ("args", _exc_args(x))]
        return self._struct_record(info, pairs, total + 2)

    def _expand_enum(self, x: Any, info: _TypeInfo, depth: int, state: list) -> Any:
        d = info.get_dict(x)
        if not _is_dict(d):
            return self._leaf_opaque(x, info, self._type_id(_RAW, info.lang))
        value = dict.get(d, "_value_")
        record = {
            "kind": "Variant",
            "type_id": info.tid,
            "discriminator": self._enum_name(d),
            "contents": self._child(value),
        }
        if record["contents"] is None:
            return record, [(record, "contents", value)], None
        return record

    def _enum_name(self, d: dict) -> str:
        name = dict.get(d, "_name_")
        if type(name) is str:
            return sanitize_text(name)
        value = dict.get(d, "_value_")
        return _short_repr(value) if type(value) is int else "?"

    def _enum_brief(self, x: Any, info: _TypeInfo) -> str:
        d = info.get_dict(x)
        name = self._enum_name(d) if _is_dict(d) else "?"
        return f"{info.lang}.{name}"

    def _attributes(self, x: Any, info: _TypeInfo, reserved: int, state: list) -> tuple[list, int]:
        """(name, value) pairs of the instance attributes shown, and their count.

        Slots first (base classes first), then the instance dict in its order.
        `reserved` elements of the budget are kept for fields added by the caller.
        """
        pairs: list = []
        for name, get in info.slots:
            try:
                pairs.append((name, get(x)))
            except AttributeError:      # an unset slot
                pass
        d = None
        if info.get_dict is not None:
            try:
                d = info.get_dict(x)
            except AttributeError:
                d = None
            if d is not None and not _is_dict(d):
                d = None
        size = dict.__len__(d) if d is not None else 0
        total = len(pairs) + size
        n = self._reserve(total + reserved, state) - reserved
        if n < len(pairs):
            return pairs[:max(n, 0)], total
        room = n - len(pairs)
        if room > 0:
            # One C call copies the items: no Python code runs in between.
            items = dict.items(d)
            items = list(items) if room >= size else list(islice(items, room))
            if pairs:
                pairs.extend(items)
            else:
                pairs = items
        return pairs, total

    def _struct_record(self, info: _TypeInfo, pairs: Any, total: int) -> Any:
        """A Struct of the (name, value) pairs: its type lists the names."""
        names, values, total = _named_fields(pairs, total)
        field_values, pending = self._items(values)
        if total > len(field_values):
            names.append(_ELLIPSIS)
            field_values.append(self._more(total - len(field_values)))
        tid = self._shape_tid(info, tuple(names))
        record = {"kind": "Struct", "type_id": tid, "field_values": field_values}
        return (record, pending, None) if pending else record

    # -- leaf handlers: (x, info) -------------------------------------------

    def _leaf_constant(self, x: Any, info: _TypeInfo) -> dict:
        return info.extra

    def _leaf_bool(self, x: Any, info: _TypeInfo) -> dict:
        return info.extra[1] if x is True else info.extra[0]

    def _leaf_int(self, x: Any, info: _TypeInfo) -> dict:
        exact = info.type is int
        if not exact:
            x = int.__index__(x)
        if _I64_MIN <= x <= _I64_MAX:
            record = {"kind": "Int", "type_id": info.tid, "i": x}
            if exact:
                cache = self._ints
                if len(cache) >= _SCALAR_CACHE_SIZE:
                    cache.clear()
                cache[x] = record
            return record
        magnitude = -x if x < 0 else x
        size = (magnitude.bit_length() + 7) // 8
        if size > self.max_string:
            return self._raw(_RAW, info.lang, f"<int: {magnitude.bit_length():,} bits>")
        data = base64.b64encode(magnitude.to_bytes(size, "big")).decode("ascii")
        return {"kind": "BigInt", "type_id": info.tid, "b": data, "negative": x < 0}

    def _leaf_float(self, x: Any, info: _TypeInfo) -> dict:
        if info.type is float:
            cache = self._floats
            record = cache.get(x)
            if record is not None:
                return record
            record = {"kind": "Float", "type_id": info.tid, "f": repr(x)}
            # -0.0 == 0.0 and nan != nan: such keys would alias or never hit.
            if x == x and x != 0.0:
                if len(cache) >= _SCALAR_CACHE_SIZE:
                    cache.clear()
                cache[x] = record
            return record
        return {"kind": "Float", "type_id": info.tid, "f": float.__repr__(x)}

    def _leaf_str(self, x: Any, info: _TypeInfo) -> dict:
        exact = info.type is str
        if not exact:
            x = str.__str__(x)
        n = len(x)
        if n > self.max_string:
            text = f"{sanitize_text(x[:self.max_string])}{_ELLIPSIS} ({n:,} chars)"
        else:
            text = sanitize_text(x)
        record = {"kind": "String", "type_id": info.tid, "text": text}
        if exact and n <= _SHORT_STRING:
            cache = self._strs
            if len(cache) >= _SCALAR_CACHE_SIZE:
                cache.clear()
            cache[x] = record
        return record

    def _leaf_text(self, x: Any, info: _TypeInfo) -> dict:
        """complex and Decimal: their own exact text (C code)."""
        base = info.extra
        if base is complex:
            text = complex.__repr__(x)
        else:   # decimal.Decimal, accepted only when implemented in C
            text = base.__str__(x)
        return self._raw_record(info, text)

    def _leaf_fraction(self, x: Any, info: _TypeInfo) -> dict:
        cd = _type_dict(info.extra)
        numerator = cd["_numerator"].__get__(x)
        denominator = cd["_denominator"].__get__(x)
        if type(numerator) is not int or type(denominator) is not int:
            return self._leaf_opaque(x, info)
        text = _int_text(numerator)
        if denominator != 1:
            text += "/" + _int_text(denominator)
        return self._raw_record(info, text)

    def _leaf_bytes(self, x: Any, info: _TypeInfo) -> dict:
        base = info.extra
        n = base.__len__(x)
        limit = self.max_string
        chunk = bytes(base.__getitem__(x, slice(0, limit)))
        text = bytes.__repr__(chunk)
        if base is bytearray:
            text = f"bytearray({text})"
        if n > limit:
            text += f"{_ELLIPSIS} ({n:,} bytes)"
        return {"kind": "Raw", "type_id": info.tid, "r": text}

    def _leaf_memoryview(self, x: memoryview, info: _TypeInfo) -> dict:
        try:
            nbytes, fmt, ndim = x.nbytes, x.format, x.ndim
        except ValueError:
            return {"kind": "Raw", "type_id": info.tid, "r": "<released memoryview>"}
        limit = self.max_string
        if nbytes <= limit:
            data = x.tobytes()
        elif ndim == 1:
            data = x[: max(1, limit // x.itemsize)].tobytes()
        elif x.c_contiguous:
            data = x.cast("B")[:limit].tobytes()
        else:
            data = None
        if data is None:
            text = f"<memoryview: {nbytes:,} bytes>"
        else:
            text = bytes.__repr__(data)
            if fmt != "B":
                text += f", format={fmt!r}"
            text = f"memoryview({text})"
            if nbytes > len(data):
                text += f"{_ELLIPSIS} ({nbytes:,} bytes)"
        return {"kind": "Raw", "type_id": info.tid, "r": text}

    def _leaf_class(self, x: Any, info: _TypeInfo) -> dict:
        return self._raw_record(info, f"<class {type_name(x)}>")

    def _leaf_module(self, x: Any, info: _TypeInfo) -> dict:
        name = _text_of(_module_dict(x).get("__name__"))
        return self._raw_record(info, f"<module {name}>" if name is not None else "<module>")

    def _leaf_function(self, x: Any, info: _TypeInfo) -> dict:
        return self._raw_record(info, f"<function {_function_name(x)}>")

    def _leaf_builtin(self, x: Any, info: _TypeInfo) -> dict:
        name = _builtin_name(x)
        owner = _builtin_self(x)
        if owner is None or type(owner) is types.ModuleType:
            return self._raw_record(info, f"<built-in function {name}>")
        return self._raw_record(info, f"<built-in method {name} of {type_name(type(owner))}>")

    def _leaf_method(self, x: Any, info: _TypeInfo) -> dict:
        func = _method_func(x)
        if type(func) is types.FunctionType:
            return self._raw_record(info, f"<bound method {_function_name(func)}>")
        return self._raw_record(info, f"<bound method of {type_name(type(func))}>")

    def _leaf_qualname(self, x: Any, info: _TypeInfo) -> dict:
        """Generators, coroutines, async generators: `<generator name>`."""
        name = _text_of(_type_dict(info.extra)["__qualname__"].__get__(x))
        return self._raw_record(info, f"<{info.lang} {name}>" if name is not None else f"<{info.lang}>")

    def _leaf_code(self, x: Any, info: _TypeInfo) -> dict:
        if info.extra is types.FrameType:
            return self._raw_record(info, f"<frame {_text_of(_code_qualname(_frame_code(x)))}>")
        return self._raw_record(info, f"<code {_text_of(_code_qualname(x))}>")

    def _leaf_descriptor(self, x: Any, info: _TypeInfo) -> dict:
        """method_descriptor, wrapper_descriptor, member_descriptor, ..."""
        cd = _type_dict(info.extra)
        name = cd["__name__"].__get__(x)
        if "__objclass__" in cd:
            owner = type_name(cd["__objclass__"].__get__(x))
        else:   # method-wrapper: bound to an instance
            owner = type_name(type(cd["__self__"].__get__(x)))
        return self._raw_record(info, f"<{info.lang} {owner}.{name}>")

    def _leaf_lock(self, x: Any, info: _TypeInfo) -> dict:
        if info.extra is _thread.LockType:
            state = "locked" if _thread.LockType.locked(x) else "unlocked"
            return self._raw_record(info, f"<{info.lang} {state}>")
        return self._raw_record(info, f"<{info.lang}>")

    def _leaf_file(self, x: Any, info: _TypeInfo) -> dict:
        raw, mode = x, None
        if info.extra is io.TextIOWrapper:
            if type(x) is io.TextIOWrapper:
                mode = _instance_attr(x, "mode")
            raw = _text_buffer(x)
        if id(type(raw)) in _BUFFERED_IDS:     # not `in`: no __eq__ on a user type
            raw = _type_dict(type(raw))["raw"].__get__(raw)
        if type(raw) is not io.FileIO:
            return self._raw_record(info, f"<{info.lang}>")
        name = _instance_attr(raw, "name")
        if type(mode) is not str:
            mode = _fileio_mode(raw)
        if type(name) is int:
            text = f"<file fd {name} mode={mode!r}"
        else:
            text = f"<file {_short_repr(name)} mode={mode!r}"
        if _fileio_closed(raw):
            text += " closed"
        return self._raw_record(info, text + ">")

    def _leaf_datetime(self, x: Any, info: _TypeInfo) -> dict:
        base = info.extra
        cd = _type_dict(base)
        tz = cd["tzinfo"].__get__(x) if "tzinfo" in cd else None
        timezone = _module_attr("datetime", "timezone")
        if tz is None or type(tz) is timezone:
            return self._raw_record(info, base.__repr__(x))
        if type(x) is not base:     # replace() would call the subclass
            return self._raw_record(info, f"<{info.lang} object>")
        naive = base.replace(x, tzinfo=None)
        text = base.__repr__(naive)[:-1] + f", tzinfo=<{type_name(type(tz))}>)"
        return self._raw_record(info, text)

    def _leaf_regex(self, x: Any, info: _TypeInfo) -> dict:
        base = info.extra
        cd = _type_dict(base)
        source = cd["pattern" if "pattern" in cd else "string"].__get__(x)
        if type(source) is str or type(source) is bytes:
            return self._raw_record(info, base.__repr__(x))
        return self._raw_record(info, f"<{info.lang}>")

    def _leaf_path(self, x: Any, info: _TypeInfo) -> dict:
        try:
            parts = info.extra(x)
        except AttributeError:
            parts = None
        short = _text_of(_type_qualname(info.type))
        if type(parts) is list and all(type(p) is str for p in parts):
            return self._raw_record(info, f"{short}({', '.join(map(repr, parts))})")
        return self._raw_record(info, f"<{info.lang}>")

    def _leaf_stream_proxy(self, x: Any, info: _TypeInfo) -> dict:
        """A stream proxy of iocapture: the record of the stream it stands for (``<file '<stdout>'
        mode='w'>``), read from its ``_original`` slot. A stream that is not a file (a program's
        own object, a StringIO) is not looked into: ``<io.StringIO object>``."""
        shown = info.extra(x)
        shown_info = self._info(type(shown))
        if shown_info.container:
            return self._leaf_opaque(shown, shown_info, self._type_id(_RAW, shown_info.lang))
        return shown_info.handler(shown, shown_info)

    def _leaf_opaque(self, x: Any, info: _TypeInfo, tid: int | None = None) -> dict:
        return {"kind": "Raw", "type_id": info.tid if tid is None else tid, "r": f"<{info.lang} object>"}

    # -- small records ------------------------------------------------------

    def _raw(self, kind: int, lang: str, text: str) -> dict:
        return {"kind": "Raw", "type_id": self._type_id(kind, lang), "r": text}

    def _raw_record(self, info: _TypeInfo, text: str) -> dict:
        """A Raw record of `info`'s Raw type, clipped to max_string."""
        if len(text) > self.max_string:
            text = f"{text[:self.max_string]}{_ELLIPSIS} ({len(text):,} chars)"
        return {"kind": "Raw", "type_id": info.tid, "r": sanitize_text(text)}

    def _more(self, count: int) -> dict:
        record = self._more_records.get(count)
        if record is None:  # the same few counts come back at every step: keep their records
            record = self._raw(_RAW, _TRUNCATED, f"{_ELLIPSIS} {count:,} more")
            if len(self._more_records) >= _SCALAR_CACHE_SIZE:
                self._more_records.clear()
            self._more_records[count] = record
        return record

    def _cycle(self, x: Any) -> dict:
        lang = self._info(type(x)).lang
        return self._raw(_RAW, lang, f"<cycle: {lang}>")

    def _summary(self, x: Any, info: _TypeInfo) -> dict:
        """A container nested deeper than max_depth."""
        if info.brief is not None:
            text = info.brief(x, info)
        elif info.size is not None:
            text = f"<{info.lang}: {_items_text(info.size(x))}>"
        else:
            text = f"<{info.lang} object>"
        return self._raw(_RAW, info.lang, text)

    def _error(self, lang: str, exc: BaseException) -> dict:
        msg = f"cannot capture {lang}: {_describe_exception(exc)}"
        return {"kind": "Error", "type_id": self._type_id(_ERROR, lang), "msg": sanitize_text(msg)}


def _serialized_walk(enc: ValueEncoder) -> tuple[Callable, Callable]:
    """encode_json's walk of containers, straight to bytes: (child_json, values_json).

    encode_json writes the commonest containers (exact lists, tuples and dicts, and
    instances of classes) straight to bytes, by recursion, without making records:
    about twice as fast as to_json(encode(x)) on object graphs.  It must give
    exactly what to_json(encode(x)) gives (a property test holds it to that), so it
    follows the record walk rule for rule: the budget is charged in the same
    depth-first order, and depth, cycles, the step memo and errors are handled the
    same way.  Other containers, and levels deeper than _RECURSION_LEVELS, are
    handed to _encode_tree with the walk's state.
    """
    # Hot path: closures, so that the caches are free variables, not attribute lookups.
    infos, int_get, str_get = enc._infos, enc._int_json.get, enc._str_json.get
    encode_json, classify, reserve = enc.encode_json, enc._classify, enc._reserve
    object_json, prefix_of, prefixes = enc._object_json, enc._prefix, enc._prefixes

    def values_json(values: Any, depth: int, state: list, active: set) -> list[bytes]:
        """The bytes of each value, elements of a container at `depth`."""
        # Types are compared by identity: `type(x) in some_set` would hash the class, which
        # could run a metaclass __hash__.
        return [
            (int_get(x) or encode_json(x)) if (t := type(x)) is int
            else (str_get(x) or encode_json(x)) if t is str
            else encode_json(x) if t is float or t is bool or x is None
            else child_json(x, depth, state, active)
            for x in values
        ]

    def dict_json(x: dict, depth: int, state: list, active: set) -> bytes:
        """An exact dict, as _mapping_record makes it: entries are (key, value) Tuples."""
        total = len(x)
        n = reserve(total, state)
        pair = prefixes.get(tuple) or prefix_of(tuple)
        # Iterated as _mapping_record does: another thread changing its size meanwhile makes it an Error.
        items = dict.items(x) if n == total else islice(dict.items(x), n)
        entries = [
            ((int_get(k) or encode_json(k)) if (t := type(k)) is int
             else (str_get(k) or encode_json(k)) if t is str
             else encode_json(k) if t is float or t is bool or k is None
             else child_json(k, depth, state, active))
            + b","
            + ((int_get(v) or encode_json(v)) if (t := type(v)) is int
               else (str_get(v) or encode_json(v)) if t is str
               else encode_json(v) if t is float or t is bool or v is None
               else child_json(v, depth, state, active))
            for k, v in items
        ]
        head = prefixes.get(dict) or prefix_of(dict)
        if not entries:
            body = b""
        else:   # each entry is `key,value`: wrapped in its Tuple by the join
            body = pair + (b"]}," + pair).join(entries) + b"]}"
        if n < total:
            body = (body + b"," if body else b"") + to_json(enc._more(total - n))
        return head + body + b'],"is_slice":false}'

    def child_json(x: Any, depth: int, state: list, active: set) -> bytes:
        """The bytes of `x`, an element of a container at `depth` (0: `x` is the value itself,
        at depth 1).  `state` is the value's node budget, `active` the ids of the containers
        on the path from the value down to here.

        As _child does for a leaf, and _encode_tree's loop and _expand for a container.
        """
        t = type(x)
        info = infos.get(id(t))
        if info is None or info.type is not t:
            info = classify(t)
        if not info.container:
            try:
                return to_json(info.handler(x, info))
            except RecursionError:
                raise   # to _tree_json
            except Exception as exc:
                return to_json(enc._error(info.lang, exc))
        key = id(x)
        if key in active:
            return to_json(enc._cycle(x))
        memo = enc._memo
        if memo is not None:
            seen = memo.get(key)
            if seen is not None and seen[0] is x:
                return _as_json(seen[1])
        depth += 1
        walk = info.walk
        if depth > enc.max_depth:
            try:
                data = to_json(enc._summary(x, info))
            except Exception as exc:
                data = to_json(enc._error(info.lang, exc))
        elif walk == _WALK_GENERAL or depth > _RECURSION_LEVELS:
            return to_json(enc._encode_tree(x, info, depth, state, active))
        else:
            active.add(key)
            try:
                if walk == _WALK_OBJECT:
                    data = None
                    shape = info.json_shape
                    if shape is not None:
                        # Most instances have the attributes of the last one serialized, the
                        # same name objects in the same order: they reuse its Struct prefix.
                        try:
                            d = info.get_dict(x)
                        except AttributeError:
                            d = None
                        if type(d) is dict:
                            names = shape[0]
                            values = list(dict.values(d))   # one C call: no thread runs between
                            n = len(values)
                            left = state[0]
                            if (n == len(names) and n <= left and n <= enc.max_items
                                    and all(map(is_, d, names))):
                                state[0] = left - n
                                parts = values_json(values, depth, state, active)
                                data = shape[1] + b",".join(parts) + b"]}"
                    if data is None:
                        data = object_json(x, info, depth, state, active)
                elif walk == _WALK_DICT:
                    data = dict_json(x, depth, state, active)
                else:
                    total = len(x)  # exact list or tuple: C-level len
                    n = reserve(total, state)
                    # A list is copied first (one C call), so another thread cannot change it mid-walk.
                    elements = x if n == total and walk == _WALK_TUPLE else x[:n]
                    parts = values_json(elements, depth, state, active)
                    if n < total:
                        parts.append(to_json(enc._more(total - n)))
                    end = b"]}" if walk == _WALK_TUPLE else b'],"is_slice":false}'
                    data = (prefixes.get(t) or prefix_of(t)) + b",".join(parts) + end
            except RecursionError:
                active.discard(key)
                raise   # to _tree_json
            except Exception as exc:
                data = to_json(enc._error(info.lang, exc))
            active.discard(key)
        if memo is not None:
            memo[key] = (x, data)
        return data

    return child_json, values_json


def _function_name(f: types.FunctionType) -> str:
    qualname = _text_of(_func_qualname(f))
    module = _text_of(_func_module(f))
    if module and module != "builtins":
        return f"{module}.{qualname}"
    return qualname


def _instance_attr(x: object, name: str) -> object:
    """An instance-dict attribute of an object of an exact C type; None if missing.

    Only used for exact io types, whose MRO defines no descriptor of that
    name: object.__getattribute__ then reads the instance dict and nothing else.
    """
    try:
        return _object_getattribute(x, name)
    except AttributeError:
        return None


def _all_of_type(iterable: Any, t: type) -> bool:
    """True when every element's type is exactly `t` (a C-level loop)."""
    return all(map(is_, map(type, iterable), repeat(t)))


_BUFFERED_TYPES = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)
_BUFFERED_IDS = frozenset(map(id, _BUFFERED_TYPES))

# Built-in bases, keyed by id(type): (type, setup method, extra setup args).
# The static built-in types are immortal, so their ids are stable.
_BUILTIN_BASES: dict[int, tuple] = {}


def _add_base(t: type, setup: str, *args: Any) -> None:
    _BUILTIN_BASES[id(t)] = (t, setup, args)


_add_base(type(None), "_setup_none")
_add_base(bool, "_setup_bool")
_add_base(int, "_setup_scalar", _INT, "_leaf_int")
_add_base(float, "_setup_scalar", _FLOAT, "_leaf_float")
_add_base(str, "_setup_scalar", _STRING, "_leaf_str")
_add_base(complex, "_setup_scalar", _RAW, "_leaf_text")
_add_base(type(...), "_setup_constant", "Ellipsis")
_add_base(type(NotImplemented), "_setup_constant", "NotImplemented")
_add_base(bytes, "_setup_bytes")
_add_base(bytearray, "_setup_bytes")
_add_base(memoryview, "_setup_scalar", _RAW, "_leaf_memoryview")
_add_base(list, "_setup_sequence", _SEQ)
_add_base(collections.deque, "_setup_sequence", _SEQ)
_add_base(range, "_setup_sequence", _SEQ)
_add_base(type({}.keys()), "_setup_sequence", _SEQ)
_add_base(type({}.values()), "_setup_sequence", _SEQ)
_add_base(type({}.items()), "_setup_sequence", _SEQ)
_add_base(tuple, "_setup_tuple")
_add_base(set, "_setup_set")
_add_base(frozenset, "_setup_set")
_add_base(dict, "_setup_mapping")
_add_base(collections.OrderedDict, "_setup_mapping")
_add_base(collections.defaultdict, "_setup_mapping")
_add_base(types.MappingProxyType, "_setup_mappingproxy")
_add_base(types.FunctionType, "_setup_text", "_leaf_function")
_add_base(types.BuiltinFunctionType, "_setup_text", "_leaf_builtin")
_add_base(types.MethodType, "_setup_text", "_leaf_method")
_add_base(types.ModuleType, "_setup_text", "_leaf_module")
_add_base(types.GeneratorType, "_setup_text", "_leaf_qualname")
_add_base(types.CoroutineType, "_setup_text", "_leaf_qualname")
_add_base(types.AsyncGeneratorType, "_setup_text", "_leaf_qualname")
_add_base(types.CodeType, "_setup_text", "_leaf_code")
_add_base(types.FrameType, "_setup_text", "_leaf_code")
for _t in (types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
           types.ClassMethodDescriptorType, types.MemberDescriptorType, types.GetSetDescriptorType):
    _add_base(_t, "_setup_text", "_leaf_descriptor")
for _t in (_thread.LockType, _thread.RLock):
    _add_base(_t, "_setup_text", "_leaf_lock")
for _t in (io.TextIOWrapper, io.FileIO) + _BUFFERED_TYPES:
    _add_base(_t, "_setup_text", "_leaf_file")
del _t

# Types of modules the encoder does not import itself: looked up in
# sys.modules when a new type is classified (no instance can exist before
# its module is imported).
_OPTIONAL = (
    ("decimal", "Decimal", "_setup_scalar", (_RAW, "_leaf_text")),
    ("fractions", "Fraction", "_setup_scalar", (_RAW, "_leaf_fraction")),
    ("array", "array", "_setup_sequence", (_ARRAY,)),
    ("datetime", "datetime", "_setup_text", ("_leaf_datetime",)),
    ("datetime", "time", "_setup_text", ("_leaf_datetime",)),
    ("datetime", "date", "_setup_text", ("_leaf_datetime",)),
    ("datetime", "timedelta", "_setup_text", ("_leaf_datetime",)),
    ("datetime", "timezone", "_setup_text", ("_leaf_datetime",)),
    ("re", "Pattern", "_setup_text", ("_leaf_regex",)),
    ("re", "Match", "_setup_text", ("_leaf_regex",)),
    ("pathlib", "PurePath", "_setup_text", ("_leaf_path",)),
)


def _optional_bases() -> dict[int, tuple]:
    table = {}
    for module, name, setup, args in _OPTIONAL:
        t = _module_attr(module, name)
        if not issubclass(type(t), type):   # Fraction's metaclass is ABCMeta
            continue
        if name == "Decimal" and type(_type_dict(t).get("__str__")) is not types.WrapperDescriptorType:
            continue    # the pure-Python decimal: its Decimals are plain objects
        if name == "Fraction":
            cd = _type_dict(t)
            if type(cd.get("_numerator")) is not _MEMBER or type(cd.get("_denominator")) is not _MEMBER:
                continue
        table[id(t)] = (t, setup, args)
    return table


def _benchmark(seconds: float = 1.0, serialized: bool = True) -> float:
    """Values encoded per second for a mix of typical locals (cache warm): by encode_json (what the
    recorder writes), or by encode (records) when `serialized` is false."""
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: int
        y: float

    values = [
        0, 1, 17, 123456, -5, "i", "name", "a short sentence", 2.5, None, True,
        [1, 2, 3], ["a", "b"], {"x": 1, "y": 2}, (1, "a"), Point(3, 4.5),
    ]
    encoder = ValueEncoder(lambda kind, lang, info=None: 0)
    encode = encoder.encode_json if serialized else encoder.encode
    count = 0
    start = time.perf_counter()
    while True:
        for _ in range(200):
            for v in values:
                encode(v)
        count += 200 * len(values)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed

"""What the value walk knows about a class, and how it reads values without running program code.

The encoder (``encoder.py``) decides what a value *shows*; this module gives it the facts it decides
from, worked out once per class (``describe_type``):

- the class's **family** (an int of ``Family``): how its values are walked — a scalar, a text leaf
  (functions, modules, files, dates: a short text), an exact list/tuple/dict, a general sequence, set or
  mapping, a named tuple, an enum, an exception, an instance with attributes, or opaque;
- the **C-level accessors** that read it: ``type``'s own descriptors for names and dicts, the base
  class's C methods (``list.__len__(v)``, never ``len(v)``), the ``__dict__`` and ``__slots__``
  descriptors found in the class's own dictionaries — never attribute lookup, never the program's
  ``__repr__``, ``__eq__``, ``__hash__``, properties or ``__getattr__``;
- the **leaf texts**: ``<function f>``, ``<file 'a.txt' mode='r'>``, ``datetime.date(2024, 1, 2)``.

Nothing here registers types or writes syntax: the families are format-free, so a compiled walk or a
second format reuses them as they are.
"""

from __future__ import annotations

import _thread
import collections
import enum
import io
import re
import sys
import types
from itertools import islice, repeat
from operator import is_
from typing import Any, Callable

from timelapse.format import TypeKind
from timelapse.iocapture import StreamProxy

__all__ = ["Family", "TypeInfo", "describe_type", "sanitize_text", "type_name"]

ELLIPSIS = "\u2026"
_INT_TEXT_BITS = 3000       # ints bigger than this are described, not printed

# C-level accessors: calling these never reaches Python code, even when a
# metaclass overrides __getattribute__ or defines properties of the same name.
type_mro = type.__dict__["__mro__"].__get__
type_dict = type.__dict__["__dict__"].__get__
_type_module = type.__dict__["__module__"].__get__
type_qualname = type.__dict__["__qualname__"].__get__
type_name_attr = type.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
module_dict = types.ModuleType.__dict__["__dict__"].__get__
_func_qualname = types.FunctionType.__dict__["__qualname__"].__get__
_func_module = types.FunctionType.__dict__["__module__"].__get__
_builtin_name = types.BuiltinFunctionType.__dict__["__name__"].__get__
_builtin_self = types.BuiltinFunctionType.__dict__["__self__"].__get__
_method_func = types.MethodType.__dict__["__func__"].__get__
_code_qualname = types.CodeType.__dict__["co_qualname"].__get__
_frame_code = types.FrameType.__dict__["f_code"].__get__
exc_args = BaseException.__dict__["args"].__get__
_os_errno = OSError.__dict__["errno"].__get__
_os_strerror = OSError.__dict__["strerror"].__get__
_os_filename = OSError.__dict__["filename"].__get__
_text_buffer = io.TextIOWrapper.__dict__["buffer"].__get__
_fileio_mode = io.FileIO.__dict__["mode"].__get__
_fileio_closed = io.FileIO.__dict__["closed"].__get__
_object_getattribute = object.__getattribute__
_member_owner = types.MemberDescriptorType.__dict__["__objclass__"].__get__
_MEMBER = types.MemberDescriptorType
_GETSET = types.GetSetDescriptorType
proxy_original = StreamProxy.__dict__["_original"].__get__
_HEAPTYPE = 1 << 9
_IMMUTABLETYPE = 1 << 8

_SURROGATES = re.compile("[\ud800-\udfff]")


class Family:
    """How the values of a class are walked (``TypeInfo.family``). Below ``CONTAINER``: leaves."""

    NONE, BOOL, INT, FLOAT, STR, BYTES, CONSTANT, TEXT, STREAM_PROXY, OPAQUE = range(10)
    CONTAINER = 10
    LIST, TUPLE, DICT, OBJECT = 10, 11, 12, 13     # exact list, tuple, dict; instances with attributes
    SEQUENCE, SET, MAPPING, MAPPINGPROXY, NAMED_TUPLE, ENUM, EXCEPTION = range(14, 21)


class TypeInfo:
    """What the walk knows about one class: built once by ``describe_type``, then cached."""

    __slots__ = (
        "type", "lang", "family", "kind", "container", "tid", "handler", "size", "iterate",
        "extra", "text", "slots", "get_dict", "dict_descriptor", "python_class", "mro", "head",
        "shape",
    )

    def __init__(self, t: type, lang: str) -> None:
        self.type = t
        self.lang = lang
        self.family = Family.OPAQUE
        #: The TypeKind its values are registered with (objects: per shape, see the encoder).
        self.kind = TypeKind.RAW
        self.container = False
        #: Set by the encoder: the TypeId, and the function that encodes a value of the class.
        self.tid: int | None = None
        self.handler: Callable[..., Any] | None = None
        self.size: Callable[[Any], int] | None = None
        self.iterate: Callable[[Any], Any] | None = None
        self.extra: Any = None
        #: Family.TEXT: ``text(x, info) -> str``, the value's text.
        self.text: Callable[[Any, TypeInfo], str] | None = None
        self.slots: list = []       # [(field name, member descriptor getter)]
        self.get_dict: Callable[[Any], Any] | None = None
        #: The C-level descriptor get_dict belongs to (a getset or member descriptor).
        self.dict_descriptor: Any = None
        self.python_class = False   # defined by a class statement
        self.mro: tuple = ()
        #: Set by the encoder: the spelled head of a list's, tuple's or dict's record (per TypeId).
        self.head = b""
        #: Family.OBJECT: (attribute names, Struct head) of the last instance whose fields were
        #: exactly its __dict__ (no slots, nothing cut) -- the encoder's shortcut for the next one.
        self.shape: tuple | None = None


# -- texts ------------------------------------------------------------------------------------------

def sanitize_text(s: str) -> str:
    """Return `s` with lone surrogates replaced by U+FFFD (valid UTF-8)."""
    if str.isascii(s):
        return s
    try:
        str.encode(s, "utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", s)
    return s


def text_of(x: object) -> str | None:
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
        qualname = text_of(type_qualname(t))
    except Exception:
        qualname = None
    if qualname is None:
        try:
            qualname = text_of(type_name_attr(t))
        except Exception:
            qualname = None
        if qualname is None:
            qualname = "?"
    try:
        module = text_of(_type_module(t))
    except Exception:
        module = None
    if module and module != "builtins":
        qualname = f"{module}.{qualname}"
    return sanitize_text(qualname)


def items_text(n: int) -> str:
    return "1 item" if n == 1 else f"{n:,} items"


def int_text(n: int) -> str:
    """Decimal text of an int, or a description when it is too big to print."""
    bits = int.bit_length(n)
    if bits > _INT_TEXT_BITS:
        return f"<int: {bits:,} bits>"
    return int.__repr__(n)


def short_repr(x: object, limit: int = 200) -> str:
    """A repr for simple built-in values, a type description for anything else."""
    t = type(x)
    if t is str or t is bytes:
        text = repr(x[:limit])
        if len(x) > limit:
            text += ELLIPSIS
        return text
    if t is int:
        return int_text(x)
    if x is None or t is bool or t is float:
        return repr(x)
    return f"<{type_name(t)} object>"


def has_base(mro: tuple, base: type) -> bool:
    """`base in mro` by identity only (`in` could call a metaclass __eq__)."""
    return any(map(is_, mro, repeat(base)))


def exception_message(exc: BaseException, mro: tuple) -> str:
    """What str(exc) would say, computed without running the exception's code."""
    args = exc_args(exc)
    if type(args) is not tuple:
        return ""
    if has_base(mro, OSError):
        errno, strerror = _os_errno(exc), _os_strerror(exc)
        if type(errno) is int and type(strerror) is str:
            text = f"[Errno {errno}] {strerror}"
            filename = _os_filename(exc)
            if filename is not None:
                text += f": {short_repr(filename)}"
            return text
    if len(args) == 0:
        return ""
    if len(args) == 1:
        arg = args[0]
        if type(arg) is str and not has_base(mro, KeyError):
            return arg
        return short_repr(arg)
    return "(" + ", ".join(map(short_repr, args)) + ")"


def describe_failure(exc: BaseException) -> str:
    """'TypeError: message' for an exception raised inside the encoder."""
    t = type(exc)
    try:
        text = exception_message(exc, type_mro(t))
    except Exception:
        text = ""
    name = type_name(t)
    return f"{name}: {text[:200]}" if text else name


def sort_key(x: object, _level: int = 0) -> tuple:
    """An ordering key for set members that compares only built-in values.

    Distinct scalars get distinct keys; other members tie in their group (first item 5 or more) and
    are ordered by their encoded form. Never calls the program's comparisons.
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
        return (5, tuple([sort_key(item, _level + 1) for item in x]))
    return (6, 0)


def all_of_type(iterable: Any, t: type) -> bool:
    """True when every element's type is exactly `t` (a C-level loop)."""
    return all(map(is_, map(type, iterable), repeat(t)))


def named_fields(pairs: Any, total: int) -> tuple[list, list, int]:
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


def is_dict(d: object) -> bool:
    # issubclass with a second argument whose metaclass is exactly `type`
    # is PyType_IsSubtype: a C walk of the MRO, no __subclasscheck__ call.
    return type(d) is dict or issubclass(type(d), dict)


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
    return module_dict(m).get(name)


def _is_python_class(t: type) -> bool:
    """True for classes made by a class statement (C types are immutable or static)."""
    flags = _type_flags(t)
    return bool(flags & _HEAPTYPE) and not flags & _IMMUTABLETYPE


def _function_name(f: types.FunctionType) -> str:
    qualname = text_of(_func_qualname(f))
    module = text_of(_func_module(f))
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


def read_attributes(x: Any, info: TypeInfo) -> tuple[list, dict | None]:
    """An instance's set slots as (name, value) pairs (base classes first), and its instance dict
    (None if it has none that is a dict). ``pick_attributes`` then takes as many as are shown."""
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
        if d is not None and not is_dict(d):
            d = None
    return pairs, d


def pick_attributes(pairs: list, d: dict | None, n: int) -> list:
    """The first ``n`` attributes: slots first, then the instance dict in its order."""
    if n < len(pairs):
        return pairs[:max(n, 0)]
    room = n - len(pairs)
    if room > 0 and d is not None:
        # One C call copies the items: no Python code runs in between.
        items = dict.items(d)
        items = list(items) if room >= dict.__len__(d) else list(islice(items, room))
        if pairs:
            pairs.extend(items)
        else:
            pairs = items
    return pairs


def enum_name(d: dict) -> str:
    name = dict.get(d, "_name_")
    if type(name) is str:
        return sanitize_text(name)
    value = dict.get(d, "_value_")
    return short_repr(value) if type(value) is int else "?"


def summary_text(x: Any, info: TypeInfo) -> str:
    """A container nested deeper than the depth limit: ``<list: 3 items>``, ``<Color.RED>``."""
    if info.family == Family.ENUM:
        d = info.get_dict(x)
        return f"{info.lang}.{enum_name(d) if is_dict(d) else '?'}"
    if info.size is not None:
        return f"<{info.lang}: {items_text(info.size(x))}>"
    return f"<{info.lang} object>"


# -- leaf texts: (x, info) -> str --------------------------------------------------------------------

def _text_number(x: Any, info: TypeInfo) -> str:
    """complex and Decimal: their own exact text (C code)."""
    base = info.extra
    if base is complex:
        return complex.__repr__(x)
    return base.__str__(x)     # decimal.Decimal, accepted only when implemented in C


def _text_fraction(x: Any, info: TypeInfo) -> str:
    cd = type_dict(info.extra)
    numerator = cd["_numerator"].__get__(x)
    denominator = cd["_denominator"].__get__(x)
    if type(numerator) is not int or type(denominator) is not int:
        return f"<{info.lang} object>"
    text = int_text(numerator)
    if denominator != 1:
        text += "/" + int_text(denominator)
    return text


def _text_memoryview(x: memoryview, info: TypeInfo, limit: int) -> str:
    try:
        nbytes, fmt, ndim = x.nbytes, x.format, x.ndim
    except ValueError:
        return "<released memoryview>"
    if nbytes <= limit:
        data = x.tobytes()
    elif ndim == 1:
        data = x[: max(1, limit // x.itemsize)].tobytes()
    elif x.c_contiguous:
        data = x.cast("B")[:limit].tobytes()
    else:
        data = None
    if data is None:
        return f"<memoryview: {nbytes:,} bytes>"
    text = bytes.__repr__(data)
    if fmt != "B":
        text += f", format={fmt!r}"
    text = f"memoryview({text})"
    if nbytes > len(data):
        text += f"{ELLIPSIS} ({nbytes:,} bytes)"
    return text


def bytes_text(x: Any, info: TypeInfo, limit: int) -> str:
    """bytes and bytearray (``b'..'``, ``bytearray(b'..')``) and memoryview, cut at ``limit`` bytes."""
    base = info.extra
    if base is memoryview:
        return _text_memoryview(x, info, limit)
    n = base.__len__(x)
    chunk = bytes(base.__getitem__(x, slice(0, limit)))
    text = bytes.__repr__(chunk)
    if base is bytearray:
        text = f"bytearray({text})"
    if n > limit:
        text += f"{ELLIPSIS} ({n:,} bytes)"
    return text


def _text_class(x: Any, info: TypeInfo) -> str:
    return f"<class {type_name(x)}>"


def _text_module(x: Any, info: TypeInfo) -> str:
    name = text_of(module_dict(x).get("__name__"))
    return f"<module {name}>" if name is not None else "<module>"


def _text_function(x: Any, info: TypeInfo) -> str:
    return f"<function {_function_name(x)}>"


def _text_builtin(x: Any, info: TypeInfo) -> str:
    name = _builtin_name(x)
    owner = _builtin_self(x)
    if owner is None or type(owner) is types.ModuleType:
        return f"<built-in function {name}>"
    return f"<built-in method {name} of {type_name(type(owner))}>"


def _text_method(x: Any, info: TypeInfo) -> str:
    func = _method_func(x)
    if type(func) is types.FunctionType:
        return f"<bound method {_function_name(func)}>"
    return f"<bound method of {type_name(type(func))}>"


def _text_qualname(x: Any, info: TypeInfo) -> str:
    """Generators, coroutines, async generators: `<generator name>`."""
    name = text_of(type_dict(info.extra)["__qualname__"].__get__(x))
    return f"<{info.lang} {name}>" if name is not None else f"<{info.lang}>"


def _text_code(x: Any, info: TypeInfo) -> str:
    if info.extra is types.FrameType:
        return f"<frame {text_of(_code_qualname(_frame_code(x)))}>"
    return f"<code {text_of(_code_qualname(x))}>"


def _text_descriptor(x: Any, info: TypeInfo) -> str:
    """method_descriptor, wrapper_descriptor, member_descriptor, ..."""
    cd = type_dict(info.extra)
    name = cd["__name__"].__get__(x)
    if "__objclass__" in cd:
        owner = type_name(cd["__objclass__"].__get__(x))
    else:   # method-wrapper: bound to an instance
        owner = type_name(type(cd["__self__"].__get__(x)))
    return f"<{info.lang} {owner}.{name}>"


def _text_lock(x: Any, info: TypeInfo) -> str:
    if info.extra is _thread.LockType:
        state = "locked" if _thread.LockType.locked(x) else "unlocked"
        return f"<{info.lang} {state}>"
    return f"<{info.lang}>"


_BUFFERED_TYPES = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)
_BUFFERED_IDS = frozenset(map(id, _BUFFERED_TYPES))


def _text_file(x: Any, info: TypeInfo) -> str:
    raw, mode = x, None
    if info.extra is io.TextIOWrapper:
        if type(x) is io.TextIOWrapper:
            mode = _instance_attr(x, "mode")
        raw = _text_buffer(x)
    if id(type(raw)) in _BUFFERED_IDS:     # not `in`: no __eq__ on a user type
        raw = type_dict(type(raw))["raw"].__get__(raw)
    if type(raw) is not io.FileIO:
        return f"<{info.lang}>"
    name = _instance_attr(raw, "name")
    if type(mode) is not str:
        mode = _fileio_mode(raw)
    if type(name) is int:
        text = f"<file fd {name} mode={mode!r}"
    else:
        text = f"<file {short_repr(name)} mode={mode!r}"
    if _fileio_closed(raw):
        text += " closed"
    return text + ">"


def _text_datetime(x: Any, info: TypeInfo) -> str:
    base = info.extra
    cd = type_dict(base)
    tz = cd["tzinfo"].__get__(x) if "tzinfo" in cd else None
    timezone = _module_attr("datetime", "timezone")
    if tz is None or type(tz) is timezone:
        return base.__repr__(x)
    if type(x) is not base:     # replace() would call the subclass
        return f"<{info.lang} object>"
    naive = base.replace(x, tzinfo=None)
    return base.__repr__(naive)[:-1] + f", tzinfo=<{type_name(type(tz))}>)"


def _text_regex(x: Any, info: TypeInfo) -> str:
    base = info.extra
    cd = type_dict(base)
    source = cd["pattern" if "pattern" in cd else "string"].__get__(x)
    if type(source) is str or type(source) is bytes:
        return base.__repr__(x)
    return f"<{info.lang}>"


def _text_path(x: Any, info: TypeInfo) -> str:
    try:
        parts = info.extra(x)
    except AttributeError:
        parts = None
    short = text_of(type_qualname(info.type))
    if type(parts) is list and all(type(p) is str for p in parts):
        return f"{short}({', '.join(map(repr, parts))})"
    return f"<{info.lang}>"


# -- describing a class -------------------------------------------------------------------------------

def describe_type(t: type) -> TypeInfo:
    """Decide, once per class, how its values are walked. May raise (the encoder then shows the
    class's values as opaque); never runs program code."""
    info = TypeInfo(t, type_name(t))
    mro = info.mro = type_mro(t)
    info.python_class = _is_python_class(t)
    if t is object:
        _constant(info, "<object>")
        return info
    for base in mro:
        # Enum before int (IntEnum), BaseException and metaclasses first.
        if base is enum.Enum:
            _enum(info)
            return info
        if base is BaseException:
            _attributes_of(info)
            _container(info, Family.EXCEPTION, TypeKind.STRUCT)
            return info
        if base is type:
            _text(info, _text_class)
            return info
        if base is StreamProxy:     # our sys.stdout & co.: recorded as the stream they stand for
            info.family, info.extra = Family.STREAM_PROXY, proxy_original
            return info
    optional = _optional_bases()
    for base in mro:
        entry = _BUILTIN_BASES.get(id(base)) or optional.get(id(base))
        if entry is not None and entry[0] is base:
            entry[1](info, base, *entry[2])
            return info
    _object(info)
    return info


def _container(info: TypeInfo, family: int, kind: int) -> None:
    info.family, info.kind, info.container = family, kind, True


def _text(info: TypeInfo, text: Callable[[Any, TypeInfo], str], extra: Any = None) -> None:
    info.family, info.kind, info.text, info.extra = Family.TEXT, TypeKind.RAW, text, extra


def _constant(info: TypeInfo, text: str) -> None:
    info.family, info.kind, info.extra = Family.CONSTANT, TypeKind.RAW, text


def _scalar(info: TypeInfo, base: type, family: int, kind: int) -> None:
    info.family, info.kind, info.extra = family, kind, base


def _setup_none(info: TypeInfo, base: type) -> None:
    info.lang = "None"      # TypeId 0 in every trace
    info.family, info.kind = Family.NONE, TypeKind.NONE


def _setup_constant(info: TypeInfo, base: type, text: str) -> None:
    _constant(info, text)


def _setup_text(info: TypeInfo, base: type, text: Callable) -> None:
    """Values shown as a short text: functions, modules, files, dates, ..."""
    _text(info, text, base)
    if text is _text_path:
        info.extra = None
        for klass in info.mro:
            descr = type_dict(klass).get("_raw_paths")
            if type(descr) is _MEMBER:
                info.extra = descr.__get__
                break
        else:   # a pathlib without _raw_paths: show its attributes
            _object(info)


def _setup_sequence(info: TypeInfo, base: type, kind: int) -> None:
    t = info.type
    if t is base and (base is list or base is tuple):
        _container(info, Family.LIST if base is list else Family.TUPLE, kind)
        info.size = len
        return
    _container(info, Family.SEQUENCE, kind)
    info.extra = kind == TypeKind.TUPLE     # spelled as a Tuple (else a Sequence)
    if t is base:
        info.size, info.iterate = len, iter
    else:
        info.size, info.iterate = base.__len__, base.__iter__
    if base is range:
        info.size = _range_len


def _setup_tuple(info: TypeInfo, base: type) -> None:
    names = _tuple_fields(info)
    if names is None:
        return _setup_sequence(info, base, TypeKind.TUPLE)
    _container(info, Family.NAMED_TUPLE, TypeKind.STRUCT)
    info.extra = names
    info.size, info.iterate = tuple.__len__, tuple.__iter__


def _tuple_fields(info: TypeInfo) -> tuple | None:
    """Field names of a namedtuple or struct sequence class, else None."""
    if info.type is tuple:
        return None
    for klass in info.mro:
        if klass is tuple:
            break
        cd = type_dict(klass)
        names = cd.get("_fields")
        if names is None and "n_sequence_fields" in cd:
            names = cd.get("__match_args__")    # os.stat_result & co.
        if type(names) is tuple and all(type(n) is str for n in names):
            return names
    return None


def _setup_set(info: TypeInfo, base: type) -> None:
    _setup_sequence(info, base, TypeKind.HASH_SET)
    info.family = Family.SET


def _setup_mapping(info: TypeInfo, base: type) -> None:
    if info.type is dict:
        _container(info, Family.DICT, TypeKind.SEQ)
        info.size, info.iterate = len, dict.items
        return
    _container(info, Family.MAPPING, TypeKind.SEQ)
    items = base.items
    if type(items) is not types.MethodDescriptorType:   # pure-Python OrderedDict
        items = dict.items
    info.size = len if info.type is base else dict.__len__
    info.iterate = items


def _setup_mappingproxy(info: TypeInfo, base: type) -> None:
    _container(info, Family.MAPPINGPROXY, TypeKind.SEQ)


def _enum(info: TypeInfo) -> None:
    info.get_dict = _find_dict_getter(info)
    if info.get_dict is None:
        return _object(info)
    _container(info, Family.ENUM, TypeKind.VARIANT)


def _object(info: TypeInfo) -> None:
    _attributes_of(info)
    if info.get_dict is None and not info.slots and not info.python_class:
        info.family, info.kind, info.container = Family.OPAQUE, TypeKind.RAW, False
        return
    _container(info, Family.OBJECT, TypeKind.STRUCT)


def _attributes_of(info: TypeInfo) -> None:
    """Find the C-level descriptors that give an instance's attributes."""
    info.get_dict = _find_dict_getter(info)
    if not info.python_class:
        return
    fields: dict[str, Callable] = {}
    for klass in reversed(info.mro):
        if not _is_python_class(klass):
            continue
        cd = type_dict(klass)
        declared = cd.get("__slots__")
        if declared is None:
            continue
        kind = type(declared)
        if kind is str:
            declared = (declared,)
        elif kind is not tuple and kind is not list and kind is not dict:
            declared = list(cd)     # an unusual iterable: the members in dict order
        class_name = text_of(type_name_attr(klass)) or ""
        for name in declared:
            if type(name) is not str or name in ("__dict__", "__weakref__"):
                continue
            name = _mangle(class_name, name)
            descr = cd.get(name)
            if type(descr) is _MEMBER and _member_owner(descr) is klass:
                fields[name] = descr.__get__
    info.slots = list(fields.items())


def _find_dict_getter(info: TypeInfo) -> Callable | None:
    """The C getter of the instance __dict__, skipping Python properties (its descriptor is kept
    in ``info.dict_descriptor``)."""
    for klass in info.mro:
        descr = type_dict(klass).get("__dict__")
        if type(descr) is _GETSET or type(descr) is _MEMBER:
            info.dict_descriptor = descr
            return descr.__get__
    return None


# Built-in bases, keyed by id(type): (type, setup function, extra setup args).
# The static built-in types are immortal, so their ids are stable.
_BUILTIN_BASES: dict[int, tuple] = {}


def _add_base(t: type, setup: Callable, *args: Any) -> None:
    _BUILTIN_BASES[id(t)] = (t, setup, args)


_add_base(type(None), _setup_none)
_add_base(bool, _scalar, Family.BOOL, TypeKind.BOOL)
_add_base(int, _scalar, Family.INT, TypeKind.INT)
_add_base(float, _scalar, Family.FLOAT, TypeKind.FLOAT)
_add_base(str, _scalar, Family.STR, TypeKind.STRING)
_add_base(complex, _setup_text, _text_number)
_add_base(type(...), _setup_constant, "Ellipsis")
_add_base(type(NotImplemented), _setup_constant, "NotImplemented")
for _t in (bytes, bytearray, memoryview):
    _add_base(_t, _scalar, Family.BYTES, TypeKind.RAW)
for _t in (list, collections.deque, range, type({}.keys()), type({}.values()), type({}.items())):
    _add_base(_t, _setup_sequence, TypeKind.SEQ)
_add_base(tuple, _setup_tuple)
_add_base(set, _setup_set)
_add_base(frozenset, _setup_set)
for _t in (dict, collections.OrderedDict, collections.defaultdict):
    _add_base(_t, _setup_mapping)
_add_base(types.MappingProxyType, _setup_mappingproxy)
_add_base(types.FunctionType, _setup_text, _text_function)
_add_base(types.BuiltinFunctionType, _setup_text, _text_builtin)
_add_base(types.MethodType, _setup_text, _text_method)
_add_base(types.ModuleType, _setup_text, _text_module)
for _t in (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType):
    _add_base(_t, _setup_text, _text_qualname)
for _t in (types.CodeType, types.FrameType):
    _add_base(_t, _setup_text, _text_code)
for _t in (types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
           types.ClassMethodDescriptorType, types.MemberDescriptorType, types.GetSetDescriptorType):
    _add_base(_t, _setup_text, _text_descriptor)
for _t in (_thread.LockType, _thread.RLock):
    _add_base(_t, _setup_text, _text_lock)
for _t in (io.TextIOWrapper, io.FileIO) + _BUFFERED_TYPES:
    _add_base(_t, _setup_text, _text_file)
del _t

# Types of modules the walk does not import itself: looked up in sys.modules when a new type is
# described (no instance can exist before its module is imported).
_OPTIONAL = (
    ("decimal", "Decimal", _setup_text, (_text_number,)),
    ("fractions", "Fraction", _setup_text, (_text_fraction,)),
    ("array", "array", _setup_sequence, (TypeKind.ARRAY,)),
    ("datetime", "datetime", _setup_text, (_text_datetime,)),
    ("datetime", "time", _setup_text, (_text_datetime,)),
    ("datetime", "date", _setup_text, (_text_datetime,)),
    ("datetime", "timedelta", _setup_text, (_text_datetime,)),
    ("datetime", "timezone", _setup_text, (_text_datetime,)),
    ("re", "Pattern", _setup_text, (_text_regex,)),
    ("re", "Match", _setup_text, (_text_regex,)),
    ("pathlib", "PurePath", _setup_text, (_text_path,)),
)


def _optional_bases() -> dict[int, tuple]:
    table = {}
    for module, name, setup, args in _OPTIONAL:
        t = _module_attr(module, name)
        if not issubclass(type(t), type):   # Fraction's metaclass is ABCMeta
            continue
        if name == "Decimal" and type(type_dict(t).get("__str__")) is not types.WrapperDescriptorType:
            continue    # the pure-Python decimal: its Decimals are plain objects
        if name == "Fraction":
            cd = type_dict(t)
            if type(cd.get("_numerator")) is not _MEMBER or type(cd.get("_denominator")) is not _MEMBER:
                continue
        table[id(t)] = (t, setup, args)
    return table

"""What the recorder knows about a code object: facts per process, ids per trace.

The monitor needs, for every code object whose events it handles: is it recorded at all, what kind
of frame it runs (a function, a module body, a class body), its ids in the trace, the byte templates
of its events, its argument names, the globals it reads, the lines after which a returning frame needs
no last step. Working that out costs a ``dis`` pass over the code; the pytest plugin records many traces
in one process, so the work is split in two halves:

- ``CodeFacts`` — what follows from the code object alone (no trace, no scope, no frame): its kind by
  its flags, its argument and local names, the names it loads as globals, its quiet lines, the
  compiler's handler around a generator's body, whether it may hand its locals dict to the program, and
  whether it is an async generator. ``facts_of(code)`` caches them **per process**: a second recording
  of the same code runs no ``dis``.
- ``CodeInfo`` — what *one trace* knows: whether the code is recorded in this recording (scope is per
  session), its path and function ids, the Step bytes of each line, the Value head of each variable,
  the Call head — ids of this trace only. A ``CodeTable`` per recording holds them, keyed by
  ``id(code)``; each info keeps its code alive for the recording's life, so an id is never reused
  while the table holds it. A ``CodeInfo`` copies the facts it needs into its own slots: the hot path
  reads one attribute, never two.

The process cache (``_facts``) is bounded by the code objects alive in the process: it is keyed by
``id(code)`` and holds a *weak* reference to each code, whose callback removes the entry when the code
is freed (CPython calls it while freeing the object, before its id can be given to a new one). It keeps
no object of the program alive: facts are names, line numbers and offsets. (Not a
``WeakKeyDictionary``: code objects compare and hash by value, so two equal code objects would share
one entry, and every look-up would hash the code's constants.) Only code that some recording found in
scope gets facts; code out of scope costs one ``CodeInfo`` per recording and no ``dis``.

Everything here runs on a code object's first event of a recording, under the recorder's lock for
recorded code: not the hot path.
"""

from __future__ import annotations

import dis
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timelapse.format import EventSpelling
    from timelapse.redact import Redactor
    from timelapse.scope import Scope
    from timelapse.writer import TraceWriter

_CO_OPTIMIZED = 0x0001
_CO_VARARGS = 0x0004
_CO_VARKEYWORDS = 0x0008
_CO_ASYNC_GENERATOR = 0x0200

#: What a code object is in a recording. Ordered: the hot path tests ``kind < THREAD_ROOT`` for
#: "recorded" and ``kind >= THREAD_ROOT`` for "not ours to record".
FUNCTION, MODULE, NAMESPACE, THREAD_ROOT, OUT_OF_SCOPE = range(5)
# threading.Thread._bootstrap_inner starts and ends every threading.Thread: its return is a
# ThreadExit. (A private name of the standard library: no public hook runs at that point of a thread.)
_THREAD_ROOT_CODE = threading.Thread._bootstrap_inner.__code__

#: Python 3.12's frame.f_locals is a snapshot dict kept by the frame (PEP 667 replaced it in 3.13).
SNAPSHOT_LOCALS = sys.version_info < (3, 13)
#: Names through which a function hands its own frame's locals dict to the program.
_LOCALS_NAMES = frozenset({"locals", "vars", "exec", "eval", "_getframe", "currentframe", "f_locals"})
#: Instructions that only read and compute: a line made only of these (``return x``,
#: ``return d[k] + 1``) changes no local, so a returning frame needs no step after it. (An operator or
#: attribute implemented in Python could still mutate something; calls are never on this list.)
_QUIET_OPCODES = frozenset({
    "RESUME", "NOP", "CACHE", "EXTENDED_ARG", "COPY_FREE_VARS", "MAKE_CELL", "RETURN_GENERATOR",
    "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "LOAD_CONST", "LOAD_DEREF",
    "LOAD_GLOBAL", "LOAD_NAME", "LOAD_ATTR", "LOAD_SMALL_INT", "RETURN_VALUE", "RETURN_CONST",
    "POP_TOP", "COPY", "SWAP", "BUILD_TUPLE", "BUILD_LIST", "BUILD_MAP", "BUILD_SET",
    "BUILD_STRING", "FORMAT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "CONVERT_VALUE",
    "BINARY_OP", "BINARY_SUBSCR", "BINARY_SLICE", "COMPARE_OP", "CONTAINS_OP", "IS_OP",
    "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "TO_BOOL",
})
#: Globals of these types are code, not data: a step does not show them (module level still does).
#: By id: `type(value) in a_set` would hash the class, which could run a metaclass __hash__.
CODE_TYPE_IDS = frozenset(map(id, (
    ModuleType, FunctionType, BuiltinFunctionType, MethodType, functools.partial,
)))


def is_code(value: object) -> bool:
    """Functions, classes and modules: what a global step leaves out (it shows global *data*)."""
    # issubclass(type(x), type), not isinstance(x, type): isinstance reads x.__class__, which a
    # class may define in Python.
    return id(type(value)) in CODE_TYPE_IDS or issubclass(type(value), type)


def is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


# -- per process: facts of the code object alone ---------------------------------------------------

class CodeFacts:
    """What a code object says about itself, whatever the recording (see the module docstring)."""

    __slots__ = (
        "kind", "arg_names", "local_names", "globals_read", "quiet_lines", "implicit_handler",
        "shares_locals", "async_generator",
    )

    def __init__(self, code: CodeType) -> None:
        if code.co_flags & _CO_OPTIMIZED:
            self.kind = FUNCTION
        elif code.co_name == "<module>":
            self.kind = MODULE
        else:
            self.kind = NAMESPACE  # class bodies
        arg_names: tuple[str, ...] = ()
        if self.kind == FUNCTION:
            arg_count = code.co_argcount + code.co_kwonlyargcount
            arg_count += bool(code.co_flags & _CO_VARARGS) + bool(code.co_flags & _CO_VARKEYWORDS)
            arg_names = code.co_varnames[:arg_count]
        #: The arguments, in order (functions only).
        self.arg_names = arg_names
        #: Every name the code declares as a local, a cell or a free variable.
        self.local_names = (*code.co_varnames, *code.co_cellvars, *code.co_freevars)
        instructions = list(dis.get_instructions(code))
        #: Names it loads as globals (LOAD_GLOBAL, or LOAD_NAME in class bodies), first use first.
        self.globals_read = _global_names_read(instructions)
        self.quiet_lines = _quiet_lines(instructions)
        #: Offsets of the handler CPython wraps around a generator's body (not the program's code).
        self.implicit_handler = _implicit_handler(instructions)
        #: Python 3.12: the code may hand its frame's f_locals dict to the program (locals(), vars(),
        #: exec/eval, its own frame): then the monitor keeps the program's view of that dict.
        self.shares_locals = (SNAPSHOT_LOCALS and self.kind == FUNCTION
                              and not _LOCALS_NAMES.isdisjoint(code.co_names))
        self.async_generator = bool(code.co_flags & _CO_ASYNC_GENERATOR)


#: id(code) -> (weak reference to the code, its facts). See the module docstring for its bounds.
_facts: dict[int, tuple[weakref.ref, CodeFacts]] = {}


def facts_of(code: CodeType) -> CodeFacts:
    """The facts of ``code``, worked out once per process."""
    key = id(code)
    entry = _facts.get(key)
    if entry is not None and entry[0]() is code:
        return entry[1]
    facts = CodeFacts(code)
    _facts[key] = (weakref.ref(code, functools.partial(_forget, key)), facts)
    return facts


def _forget(key: int, ref: weakref.ref, facts: dict = _facts) -> None:
    """The code of ``key`` is being freed: its entry goes (unless it is already another code's).
    ``facts`` bound at definition: a code freed late in the interpreter's shutdown still finds it."""
    entry = facts.get(key)
    if entry is not None and entry[0] is ref:
        del facts[key]


def cached_facts() -> int:
    """How many code objects have facts in the process cache (for tests and tools)."""
    return len(_facts)


# -- per trace: ids and templates --------------------------------------------------------------------

class CodeInfo:
    """What one recording knows about one code object: its kind here, its ids and byte templates in
    this trace, and (copied from its ``CodeFacts``) what the hot path reads."""

    __slots__ = (
        "code", "kind", "path_id", "function_id", "def_step", "call_head", "steps", "arg_vars",
        "var_ids", "global_vars", "secret_vars", "secret_return", "plain", "quiet_lines", "async_generator",
        "implicit_handler", "shares_locals",
    )

    def __init__(self, code: CodeType, kind: int, facts: CodeFacts | None = None) -> None:
        self.code = code  # keeps the code alive, so id(code) stays unique in the CodeTable
        self.kind = kind
        self.path_id = -1
        self.function_id = -1
        #: The Step at the definition line (written before every Call) and the Call's head.
        self.def_step = b""
        self.call_head = b""
        self.steps: dict[int, bytes] = {}  # line -> its Step event, spelled
        #: (name, arg_head of its variable, is it redacted) per argument, in order.
        self.arg_vars: tuple[tuple[str, bytes, bool], ...] = ()
        #: local name -> the value_head of its variable; None: not shown here (dunders), or shown
        #: redacted (then it is in ``secret_vars``).
        self.var_ids: dict[str, bytes | None] = {}
        #: (name, value_head, is it redacted) of the globals a step shows: data the code reads, not
        #: code.
        self.global_vars: tuple[tuple[str, bytes, bool], ...] = ()
        #: (name, value_head) of the locals (or namespace names) whose values are shown redacted
        #: (redact.py): decided once per name, so the steps of code without secrets pay nothing.
        self.secret_vars: tuple[tuple[str, bytes], ...] = ()
        #: A function named like a secret (``get_password``): what it returns is shown redacted.
        self.secret_return = False
        #: A function with no globals or secrets to show: its steps take the monitor's fastest path.
        self.plain = False
        if facts is None:   # out of scope, or the thread root: only the kind matters
            self.quiet_lines: frozenset[int] = frozenset()
            self.async_generator = False
            self.implicit_handler: frozenset[int] = frozenset()
            self.shares_locals = False
        else:
            self.quiet_lines = facts.quiet_lines
            self.async_generator = facts.async_generator
            self.implicit_handler = facts.implicit_handler
            self.shares_locals = facts.shares_locals


class CodeTable:
    """The code objects one recording has met, by ``id(code)``, and their ids in its trace.

    ``watch(code, kind)`` is called once for each code object learned as recorded or as the thread
    root, so that the monitor switches its local events on.
    """

    def __init__(self, writer: TraceWriter, scope: Scope, watch: Callable[[CodeType, int], None],
                 redactor: Redactor | None = None) -> None:
        self.writer = writer
        self.scope = scope
        #: The recording's secret names (None: nothing is redacted).
        self._redactor = redactor
        self._spelling: EventSpelling = writer.format.events
        self._watch = watch
        #: id(code) -> its CodeInfo. The hot path reads it directly (``infos.get(id(code))``).
        self.infos: dict[int, CodeInfo] = {}
        self._code_paths: dict[int, str] = {}  # id(code) -> its source version's path
        self._code_refs: list[CodeType] = []   # keeps the codes of _code_paths alive (ids unique)
        #: Step bytes -> (path_id, line): where a thread's last Step is, without reading it back.
        self._step_places: dict[bytes, tuple[int, int]] = {}

    def learn(self, code: CodeType, frame: FrameType | None, locked: bool = True) -> CodeInfo | None:
        """Decide once whether ``code`` is recorded, and cache everything its events need.

        Code that is not recorded is decided without the lock (``locked=False``): the decision writes
        nothing to the trace, and a thread that a program's ``__del__`` or signal handler starts must
        be able to get through ``threading``'s own code while another thread holds the lock. Recorded
        code defines ids in the trace, so it needs the lock: without it, None is returned.
        """
        info = self.infos.get(id(code))
        if info is not None:
            return info
        path = self.scope.source_path(code.co_filename)
        if code is _THREAD_ROOT_CODE:
            info = CodeInfo(code, THREAD_ROOT)
            self._watch(code, THREAD_ROOT)
        elif path is None:
            info = CodeInfo(code, OUT_OF_SCOPE)
        elif not locked:
            return None
        else:
            info = self._describe(code, self._source_path(code, path), frame)
            self._watch(code, info.kind)
        self.infos[id(code)] = info
        return info

    def recorded(self) -> Iterator[CodeType]:
        """The code objects whose local events are on (recorded code and the thread root)."""
        for info in list(self.infos.values()):
            if info.kind != OUT_OF_SCOPE:
                yield info.code

    def new_step(self, info: CodeInfo, line: int) -> bytes:
        """The Step of ``line`` in ``info``'s code, spelled once and cached (``info.steps``)."""
        step = info.steps[line] = self._spelling.step(info.path_id, line)
        self._step_places[step] = (info.path_id, line)
        return step

    def place_of(self, step: bytes | None) -> tuple[int, int] | None:
        """(path_id, line) of a Step this table made."""
        return self._step_places.get(step) if step is not None else None

    def new_variable(self, info: CodeInfo, name: object) -> bytes | None:
        """A local the code object did not declare (module and class namespaces, exec): its Value
        head, or None if it is not shown by the caller's loop (never shown, or a secret: then it
        joins ``info.secret_vars``, which the step shows after the loop, from now on)."""
        if type(name) is not str or is_dunder(name):
            head = None
        else:
            head = self.value_head(name)
            if self._secret(name):
                info.secret_vars += ((name, head),)
                info.plain = False
                head = None
        info.var_ids[name] = head  # type: ignore[index]
        return head

    def _secret(self, name: str) -> bool:
        """Is ``name`` the name of a secret in this recording (decided once per name)?"""
        redactor = self._redactor
        return redactor is not None and redactor.secret_name(name)

    def value_head(self, name: str) -> bytes:
        return self._spelling.value_head(self.writer.variable_id(name))

    def arg_head(self, name: str) -> bytes:
        return self._spelling.arg_head(self.writer.variable_id(name))

    def _source_path(self, code: CodeType, path: str) -> str:
        """The recorded path of ``code``'s source: a module's code, and all code nested in it, point
        at the version of the file that module was compiled from (see ``TraceWriter.source_version``)."""
        versioned = self._code_paths.get(id(code))
        if versioned is not None:
            return versioned
        if code.co_name != "<module>":
            return path
        versioned = self.writer.source_version(path)
        pending = [code]
        while pending:
            nested = pending.pop()
            self._code_paths[id(nested)] = versioned
            self._code_refs.append(nested)  # keeps the id unique
            pending.extend(c for c in nested.co_consts if isinstance(c, CodeType))
        return versioned

    def _describe(self, code: CodeType, path: str, frame: FrameType | None) -> CodeInfo:
        """A recorded code object's CodeInfo: its facts (from the process cache) and its ids here."""
        facts = facts_of(code)
        kind = facts.kind
        if kind == MODULE:
            # dict.get, not .get: exec() accepts a dict subclass whose methods are Python code.
            module = dict.get(frame.f_globals, "__name__") if frame is not None else None
            name = f"<{module if type(module) is str else code.co_filename}>"
        else:
            name = code.co_qualname
        writer = self.writer
        spelling = self._spelling
        info = CodeInfo(code, kind, facts)
        info.path_id = writer.path_id(path)
        info.function_id = writer.function_id(info.path_id, code.co_firstlineno, name)
        info.call_head = spelling.call_head(info.function_id)
        info.def_step = self.new_step(info, code.co_firstlineno)
        secret = self._secret
        info.arg_vars = tuple((name, self.arg_head(name), secret(name)) for name in facts.arg_names)
        for name in facts.local_names:
            if is_dunder(name):
                info.var_ids[name] = None
            elif secret(name):
                info.var_ids[name] = None   # shown redacted, after the others (secret_vars)
                info.secret_vars += ((name, self.value_head(name)),)
            else:
                info.var_ids[name] = self.value_head(name)
        if kind != MODULE:
            local_names = set(info.var_ids)
            f_globals = frame.f_globals if frame is not None else {}
            info.global_vars = tuple(
                (name, self.value_head(name), secret(name))
                for name in facts.globals_read
                if name not in local_names and not is_dunder(name)
                and not is_code(dict.get(f_globals, name))  # the functions and classes it calls
            )
        info.plain = kind == FUNCTION and not info.global_vars and not info.secret_vars
        info.secret_return = kind == FUNCTION and secret(code.co_name)
        return info


def _global_names_read(instructions: list[dis.Instruction]) -> tuple[str, ...]:
    """Names the code object loads as globals (LOAD_GLOBAL, or LOAD_NAME in class bodies)."""
    names: dict[str, None] = {}
    for instruction in instructions:
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(instruction.argval, str):
            names[instruction.argval] = None
    return tuple(names)


def _quiet_lines(instructions: list[dis.Instruction]) -> frozenset[int]:
    """Lines whose instructions cannot change any local (``return x``): no step needed after them."""
    noisy: set[int] = set()
    lines: set[int] = set()
    line = None
    for instruction in instructions:
        position = instruction.positions
        if position is not None and position.lineno is not None:
            line = position.lineno
        if line is None:
            continue
        lines.add(line)
        if instruction.opname not in _QUIET_OPCODES:
            noisy.add(line)
    return frozenset(lines - noisy)


def _implicit_handler(instructions: list[dis.Instruction]) -> frozenset[int]:
    """Offsets of the handler the compiler puts around a generator's or coroutine's whole body
    (``CALL_INTRINSIC_1 INTRINSIC_STOPITERATION_ERROR`` then ``RERAISE``): the exceptions it handles and
    re-raises were not handled by anything the program wrote."""
    offsets: set[int] = set()
    for i, instruction in enumerate(instructions):
        if instruction.opname == "CALL_INTRINSIC_1" and "STOPITERATION" in str(instruction.argrepr):
            offsets.add(instruction.offset)
            for following in instructions[i + 1:i + 3]:
                offsets.add(following.offset)
                if following.opname == "RERAISE":
                    break
    return frozenset(offsets)

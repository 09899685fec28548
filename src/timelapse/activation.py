"""Activation: which calls start recording, when only some of the program is to be recorded.

Two options make a recording *gated* (docs/activation.md has the user's view):

- ``record_only``: patterns of functions, ``module:qualname`` with ``fnmatch`` globs on both parts
  (``myapp.handlers:checkout``, ``myapp.*:Cart.*``, ``*:checkout``). A pattern without ``:`` is a
  qualname in any module (``checkout``, ``Cart.*``), or a whole dotted name (``myapp.handlers.checkout``
  matches ``module.qualname``). Every entry of a matching function (a call, and each resume of a
  matching generator or coroutine) starts an *activation*, which lasts until that call returns,
  yields or unwinds.
- ``activation_path``: a source file, as CodeTracer's ``--activation-path``: the first start of that
  file's code (in any thread) opens a *window*, which closes when that call, in that one frame,
  *finishes* (returns or unwinds; a yield only suspends it); then the option is spent, once per
  recording. While the window is open, every entry of recorded code in any thread (the window's own
  frame's included) starts an activation: all threads are recorded, as the reference recorder
  (codetracer-python-recorder, ``runtime/activation.rs``: one ``started`` flag for the process)
  records them. An activation begun in the window lasts until its own call ends, even if the
  window closes first. Unlike the reference, frames already running when the window opens are not
  recorded (only entries activate), and the window is tied to the frame that opened it (the
  reference stops at the first return of that code object, a recursive call's included).

A function is matched by its module's names (as ``scope`` computes them: from the longest
``sys.path`` folder; the program is ``__main__``, and keeps the name it would be imported under) and
its ``co_qualname``. Only code the scope records can activate: a function of an installed package
needs ``include`` too.

``Activation`` answers "does this code object start an activation?" (``starts``), decided once per
(file, qualname) and cached, without the recorder's lock: the monitor asks it at the first event of
each code object while no thread records, and answers ``sys.monitoring.DISABLE`` for every code that
does not, so code outside the chosen functions costs one event ever (see ``monitor``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from types import CodeType
from typing import TYPE_CHECKING

from timelapse.config import OptionError
from timelapse.errors import RecorderError
from timelapse.scope import _glob as scope_glob

if TYPE_CHECKING:
    from timelapse.scope import Scope

__all__ = ["Activation", "ActivationError", "check_function_pattern"]

#: What each part of a pattern may hold: name characters, dots, the glob characters; a qualname also
#: ``<`` and ``>`` (``f.<locals>.g``, ``<lambda>``, ``<genexpr>``, ``<module>``).
_MODULE_PART = re.compile(r"[\w.*?\[\]!]+")
_QUALNAME_PART = re.compile(r"[\w.<>*?\[\]!]+")


class ActivationError(OptionError, RecorderError):
    """An activation option that can never mean anything (``activation_path`` naming no file).

    An OptionError (a ValueError, as every bad option is) and a RecorderError: found when a recording
    starts, it is reported as a recording that could not start (the CLI: one line, exit status 2)."""


def check_function_pattern(option: str, pattern: str) -> str:
    """``pattern`` of ``option`` if it is a well-formed function pattern, else OptionError saying
    why: empty, spaces around it, more than one ``:``, an empty part, characters no module name or
    qualname holds, a ``[`` never closed."""
    if type(pattern) is not str or not pattern or pattern != pattern.strip():
        raise OptionError(option, f"has {pattern!r}, not a pattern (a non-empty string without "
                                  f"spaces around it)")
    parts = pattern.split(":")
    if len(parts) > 2:
        raise OptionError(option, f"has {pattern!r}: one ':' at most (module:qualname)")
    if any(not part for part in parts):
        raise OptionError(option, f"has {pattern!r}: an empty module or qualname around ':' "
                                  f"(use * for any: '*:checkout', 'myapp:*')")
    module, qualname = parts if len(parts) == 2 else (None, parts[0])
    if module is not None and not _MODULE_PART.fullmatch(module):
        raise OptionError(option, f"has {pattern!r}: {module!r} is not a module name pattern "
                                  f"(letters, digits, _, dots, * ? [...])")
    if not _QUALNAME_PART.fullmatch(qualname):
        raise OptionError(option, f"has {pattern!r}: {qualname!r} is not a qualified name pattern "
                                  f"(letters, digits, _, dots, <>, * ? [...])")
    for part in parts:
        _glob(part, option, pattern)  # a [ never closed: refused there
    return pattern


def _glob(text: str, option: str = "record_only", pattern: str | None = None) -> str:
    """The regular expression of glob ``text`` (a part of ``pattern``), as ``fnmatch`` reads it
    (``*`` any characters, dots too; ``?`` one; ``[...]`` a set), case-sensitive, to be joined into
    a larger one. The glob reader is the scope's (one reading of globs in timelapse)."""
    return scope_glob(option, pattern or text, text, ".*", ".", "")


class Activation:
    """The activation rules of one recording: ``record_only`` patterns and ``activation_path``.

    ``cwd``: what a relative ``activation_path`` is relative to (the session's working directory).
    ActivationError if ``activation_path`` names no file, a file the scope does not record, or one
    that is not Python source (not ``.py``/``.pyw`` and not the program itself). ``scope`` gives
    module names (and so must be the recording's own). Thread-safe without a lock: its caches are
    dicts set whole; the window's state changes under the recorder's lock, and ``starts`` (without
    it) is asked again under the lock before an activation begins.
    """

    def __init__(self, scope: Scope, record_only: Iterable[str] = (), activation_path: str | None = None,
                 cwd: str | None = None) -> None:
        self._scope = scope
        patterns = tuple(check_function_pattern("record_only", p) for p in record_only)
        qualified, bare = [], []
        for pattern in patterns:
            if ":" in pattern:
                module, qualname = pattern.split(":")
                qualified.append(f"(?:{_glob(module)}):(?:{_glob(qualname)})")
            else:
                bare.append(_glob(pattern))
        # One regular expression over "module:qualname" texts, another over qualnames and
        # "module.qualname" texts; None when no pattern of the kind is given.
        self._qualified = re.compile("|".join(f"(?:{q})" for q in qualified), re.DOTALL) if qualified else None
        self._bare = re.compile("|".join(f"(?:{b})" for b in bare), re.DOTALL) if bare else None
        self.record_only = patterns
        self.activation_path: str | None = None
        if activation_path is not None:
            path = os.path.join(os.getcwd() if cwd is None else cwd, activation_path)
            if not os.path.isfile(path):
                raise ActivationError("activation_path", f"names no file: {activation_path!r}")
            real = os.path.realpath(path)
            if scope.source_path(path) is None:
                raise ActivationError("activation_path", f"names a file that is not recorded: "
                                      f"{activation_path!r} (out of scope: see include, docs/scope.md)")
            if not real.endswith((".py", ".pyw")) and "__main__" not in scope.module_names(path):
                raise ActivationError("activation_path", f"names a file that is not Python source: "
                                      f"{activation_path!r} (a .py file, or the program itself)")
            self.activation_path = real
        #: activation_path not spent yet: its window is still to open, or open.
        self._path_pending = self.activation_path is not None
        #: The window is open: from the first start of activation_path's code to that call's end.
        self._window_open = False
        #: id() of the frame whose start opened the window (its finish closes it), and the thread
        #: whose activation it is running in now (None: suspended, a generator between resumes).
        self._path_frame: int | None = None
        self._path_ident: int | None = None
        #: (co_filename, co_qualname) -> does record_only match it.
        self._matches: dict[tuple[str, str], bool] = {}
        #: co_filename -> is it activation_path.
        self._in_path: dict[str, bool] = {}

    @property
    def window_open(self) -> bool:
        """activation_path's window is open: every entry of recorded code, in any thread, starts an
        activation."""
        return self._window_open

    def starts(self, code: CodeType) -> bool:
        """Does an entry of ``code`` (a call, a resume, a throw) start an activation? (Asked for
        recorded code only, by a thread outside an activation.)"""
        key = (code.co_filename, code.co_qualname)
        hit = self._matches.get(key)
        if hit is None:
            hit = self._matches[key] = self._match(*key)
        if hit:
            return True
        if not self._path_pending:
            return False
        if self._window_open:
            return self._scope.source_path(code.co_filename) is not None
        return self._is_path(code.co_filename)

    def _is_path(self, filename: str) -> bool:
        in_path = self._in_path.get(filename)
        if in_path is None:
            source = self._scope.source_path(filename)
            in_path = self._in_path[filename] = (
                source is not None and os.path.realpath(source) == self.activation_path)
        return in_path

    def began(self, code: CodeType, frame_id: int, ident: int) -> None:
        """An activation began in thread ``ident`` with the call of ``code`` in the frame
        ``frame_id`` (under the recorder's lock). The first of activation_path's code opens the
        window, tied to that one frame; a resume of that frame is the window's frame running again."""
        if not self._path_pending:
            return
        if not self._window_open:
            if self._is_path(code.co_filename):
                self._window_open = True
                self._path_frame = frame_id
                self._path_ident = ident
        elif frame_id == self._path_frame:
            self._path_ident = ident

    def ended(self, ident: int, finished: bool) -> None:
        """Thread ``ident``'s activation ended: ``finished`` if its call returned or unwound (not a
        yield). If it was the window's frame that finished, the window closes and the option is
        spent (under the recorder's lock)."""
        if ident != self._path_ident or not self._window_open:
            return
        self._path_ident = None
        if finished:
            self._path_pending = self._window_open = False
            self._path_frame = None

    def _match(self, filename: str, qualname: str) -> bool:
        if self._qualified is None and self._bare is None:
            return False
        if self._scope.source_path(filename) is None:
            return False  # code the scope does not record never activates
        modules = self._scope.module_names(filename)
        if self._bare is not None:
            if self._bare.fullmatch(qualname):
                return True
            if any(self._bare.fullmatch(f"{module}.{qualname}") for module in modules):
                return True
        if self._qualified is not None:
            return any(self._qualified.fullmatch(f"{module}:{qualname}") for module in modules)
        return False

"""Activation: which calls start recording, when only some of the program is to be recorded.

Two options make a recording *gated* (docs/activation.md has the user's view):

- ``record_only``: patterns of functions, ``module:qualname`` with ``fnmatch`` globs on both parts
  (``myapp.handlers:checkout``, ``myapp.*:Cart.*``, ``*:checkout``). A pattern without ``:`` is a
  qualname in any module (``checkout``, ``Cart.*``), or a whole dotted name (``myapp.handlers.checkout``
  matches ``module.qualname``). Every entry of a matching function (a call, and each resume of a
  matching generator or coroutine) starts an *activation*, which lasts until that call returns,
  yields or unwinds.
- ``activation_path``: a source file, as CodeTracer's ``--activation-path``: the first code of that
  file to start (in any thread) starts an activation, and when that call *finishes* (returns or
  unwinds; a yield only suspends it, and each resume is an activation again) the option is spent: it
  activates once per recording. This follows the reference recorder (codetracer-python-recorder,
  ``runtime/activation.rs``): it remembers the code object that activated and stops at its return;
  unlike it, nothing is recorded while that generator is suspended (the caller that drives it is
  outside the activation).

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
    ActivationError if ``activation_path`` names no file. ``scope`` gives module names (and so must
    be the recording's own). Thread-safe without a lock: its caches are dicts set whole.
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
            self.activation_path = os.path.realpath(path)
        #: activation_path still to activate (or to finish: its code's resumes activate too).
        self._path_pending = self.activation_path is not None
        #: The code object from activation_path that activated (None: none yet).
        self._path_code: CodeType | None = None
        #: (co_filename, co_qualname) -> does record_only match it.
        self._matches: dict[tuple[str, str], bool] = {}
        #: co_filename -> is it activation_path.
        self._in_path: dict[str, bool] = {}

    def starts(self, code: CodeType) -> bool:
        """Does an entry of ``code`` (a call, a resume, a throw) start an activation?"""
        key = (code.co_filename, code.co_qualname)
        hit = self._matches.get(key)
        if hit is None:
            hit = self._matches[key] = self._match(*key)
        if hit:
            return True
        if not self._path_pending:
            return False
        target = self._path_code
        if target is not None:
            return code is target
        filename = code.co_filename
        in_path = self._in_path.get(filename)
        if in_path is None:
            source = self._scope.source_path(filename)
            in_path = self._in_path[filename] = (
                source is not None and os.path.realpath(source) == self.activation_path)
        return in_path

    def began(self, code: CodeType) -> None:
        """An activation began with ``code`` (under the recorder's lock)."""
        if self._path_pending and self._path_code is None and not self._match(code.co_filename, code.co_qualname):
            self._path_code = code

    def ended(self, code: CodeType, finished: bool) -> None:
        """An activation that ``code`` began ended: ``finished`` if its call returned or unwound (not
        a yield). The activation_path's own code finishing spends that option."""
        if finished and code is self._path_code:
            self._path_pending = False
            self._path_code = None

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

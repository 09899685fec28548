"""Decide which source files are recorded: the program's own code, plus ``include``, minus ``exclude``.

By default the program's own code is recorded; the standard library, installed packages
(site-packages / dist-packages), frozen modules, code compiled from strings and timelapse itself are
not. The ``include`` and ``exclude`` options change that with patterns of module names (``myapp.*``,
``requests``) or of file paths (``src/**/*.py``, ``*/migrations/*``): an included file is recorded
even in the standard library or site-packages, an excluded one never is, and exclude wins over
include and over the defaults. timelapse's own files, the files named by ``exclude_files`` (the
CLI's console script) and code without a source file are never recorded, whatever the patterns.
docs/scope.md has the rules and the reasons for them.

The decision is made once per file name and cached; the monitor caches it again per code object and
switches that code's events off when it is out of scope (``sys.monitoring.DISABLE``), so code outside
the scope costs nearly nothing, and a pattern costs nothing per event: a file's module name is worked
out (from ``sys.path``) only when a module pattern is given, once, when its first code runs.
"""

from __future__ import annotations

import os
import re
import site
import sys
import sysconfig
from collections.abc import Iterable
from types import ModuleType

import timelapse
from timelapse.config import OptionError
from timelapse.errors import RecorderError

__all__ = ["PatternError", "Scope", "check_patterns", "module_name"]

_INSTALLED_DIR_NAMES = frozenset({"site-packages", "dist-packages"})
#: The suffixes of a Python source file that has a module name.
_SOURCE_SUFFIXES = (".py", ".pyw")
_OWN_DIR = os.path.realpath(os.path.dirname(os.path.abspath(timelapse.__file__))) + os.sep


def _library_roots() -> tuple[str, ...]:
    """Folders whose files are never the program's own code."""
    roots = set()
    paths = sysconfig.get_paths()   # once: each call expands the whole scheme again (start-up)
    for scheme_key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = paths.get(scheme_key)
        if path:
            roots.add(path)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        roots.add(sysconfig.get_path("stdlib", vars={"installed_base": prefix, "base": prefix}))
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # some virtualenv layouts
        pass
    if site.ENABLE_USER_SITE and site.USER_SITE:
        roots.add(site.USER_SITE)
    roots.add(os.path.dirname(timelapse.__file__))
    resolved = {os.path.realpath(r) for r in roots if r}
    return tuple(sorted(r.rstrip(os.sep) + os.sep for r in resolved))


# -- patterns --------------------------------------------------------------------------------------

class PatternError(OptionError, RecorderError):
    """A pattern of ``include`` / ``exclude`` that can never mean anything (``my-app``, ``src/[a``).

    An OptionError (a ValueError, as every bad option is) and a RecorderError: found when a recording
    starts, it is reported as recording that could not start (the CLI: one line, exit status 2)."""


def is_path_pattern(pattern: str) -> bool:
    """A pattern of file paths (it holds a ``/`` or ends in ``.py``), not of module names."""
    return "/" in pattern or pattern.endswith(".py")


def check_patterns(option: str, patterns: Iterable[str], cwd: str | None = None) -> tuple[str, ...]:
    """``patterns`` (of option ``option``), each checked: PatternError naming the first that can
    never match. What ``Scope`` does with them, without making one."""
    patterns = tuple(patterns)
    _Patterns(option, patterns, os.getcwd() if cwd is None else cwd)
    return patterns


def _glob(option: str, pattern: str, text: str, star: str, one: str, exclude_in_class: str) -> str:
    """The regular expression of glob ``text`` (a part of ``pattern``): ``*`` becomes ``star``,
    ``?`` ``one``, ``[seq]`` / ``[!seq]`` a character class (a negated one never matches the
    characters of ``exclude_in_class``); everything else stands for itself."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "*":
            while i < n and text[i] == "*":  # ** inside a name is one *
                i += 1
            out.append(star)
        elif c == "?":
            out.append(one)
        elif c == "[":
            j = i
            if j < n and text[j] == "!":
                j += 1
            if j < n and text[j] == "]":  # []] and [!]] hold a ]
                j += 1
            while j < n and text[j] != "]":
                j += 1
            if j >= n:
                raise PatternError(option, f"has {pattern!r}, whose [ is never closed by a ]")
            body = text[i:j]
            i = j + 1
            negated = body.startswith("!")
            if negated:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            if not negated and body.startswith("^"):
                body = "\\" + body
            out.append(f"[^{body}{re.escape(exclude_in_class)}]" if negated else f"[{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


#: What a module name pattern holds outside its [...] classes: name characters, dots, * and ?.
_MODULE_CHARS = re.compile(r"[\w.*?]+")
_CLASS = re.compile(r"\[!?\]?[^\]]*\]")


def _module_regex(option: str, pattern: str) -> str:
    """``pattern`` of module names as a regular expression matching a module's name: the name itself
    or any name inside it (``myapp`` and ``myapp.*`` both match ``myapp``, ``myapp.db``,
    ``myapp.db.models``); ``*`` matches any characters, dots too."""
    body = re.sub(r"(?:\.\*+)+$", "", pattern) or pattern  # myapp.* is myapp and all in it
    regex = _glob(option, pattern, body, ".*", ".", ".") + r"(?:\..*)?"
    if not _MODULE_CHARS.fullmatch(_CLASS.sub("?", body)):
        raise PatternError(option, f"has {pattern!r}: not a module name pattern (letters, digits, _, "
                                   f"dots, * ? [...]) nor a file path pattern (with a / or ending in .py)")
    if any(not part for part in body.split(".")):
        raise PatternError(option, f"has {pattern!r}: a module name pattern with an empty part "
                                   f"(a dot at an end, or two in a row)")
    return regex


def _path_regex(option: str, pattern: str, cwd: str) -> str:
    """``pattern`` of file paths as a regular expression matching an absolute path (with ``/``):
    the file itself, or any file in the folder it names. ``*`` and ``?`` match within one folder
    name, ``**`` any number of folders (none too); a pattern starting with ``*/`` is a pattern for
    any folder depth (``**/``); one with no ``/`` (``conftest.py``, ``test_*.py``) matches a file's
    name in any folder; other relative patterns are relative to ``cwd``."""
    if "\0" in pattern:
        raise PatternError(option, f"has {pattern!r}, with a NUL character")
    text = pattern.replace(os.sep, "/") if os.sep != "/" else pattern
    if "/" not in text:
        text = "**/" + text
    elif text.startswith("*/"):
        text = "*" + text
    elif not text.startswith(("*", "/")) and not os.path.isabs(pattern):
        text = cwd.replace(os.sep, "/").rstrip("/") + "/" + text
    segments = _normalized(text).split("/")
    out = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            out.append(".*" if index == last else "(?:[^/]*/)*")
            continue
        if "**" in segment:
            raise PatternError(option, f"has {pattern!r}: ** must be a whole folder name "
                                       f"(src/**/*.py); * matches within one name")
        out.append(_glob(option, pattern, segment, "[^/]*", "[^/]", "/"))
        if index != last:
            out.append("/")
    return "".join(out) + "(?:/.*)?"


def _normalized(text: str) -> str:
    """``text`` without ``.`` folders, ``..`` after a plain folder and repeated or trailing ``/``."""
    absolute = text.startswith("/")
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != ".." and not any(c in parts[-1] for c in "*?["):
            parts.pop()
            continue
        parts.append(part)
    joined = "/".join(parts)
    return "/" + joined if absolute else joined


class _Patterns:
    """One option's patterns, compiled: one regular expression for the module names, one for the
    paths (each None when the option has no pattern of that kind)."""

    def __init__(self, option: str, patterns: tuple[str, ...], cwd: str) -> None:
        modules, paths = [], []
        for pattern in patterns:
            if type(pattern) is not str or not pattern or pattern != pattern.strip():
                raise PatternError(option, f"has {pattern!r}, not a pattern (a non-empty string "
                                           f"without spaces around it)")
            if is_path_pattern(pattern):
                paths.append(_path_regex(option, pattern, cwd))
            else:
                modules.append(_module_regex(option, pattern))
        self.modules = _compiled(modules)
        self.paths = _compiled(paths)

    def matches(self, names: tuple[str, ...], paths: tuple[str, ...]) -> bool:
        if self.modules is not None and any(self.modules.fullmatch(name) for name in names):
            return True
        return self.paths is not None and any(self.paths.fullmatch(path) for path in paths)


def _compiled(regexes: list[str]) -> re.Pattern[str] | None:
    if not regexes:
        return None
    return re.compile("|".join(f"(?:{r})" for r in regexes), re.DOTALL)


# -- module names ----------------------------------------------------------------------------------

def module_name(path: str, search: Iterable[str] | None = None) -> str | None:
    """The name ``path`` is imported under: from the longest entry of ``search`` (``sys.path`` by
    default) that holds it, as ``import`` finds it (``pkg/__init__.py`` is ``pkg``); None if no
    entry gives it a name (a folder or file name that is not an identifier, not a ``.py`` file)."""
    return _ModuleNames().name_of((os.path.abspath(path),), search)


class _ModuleNames:
    """Names of files from ``sys.path`` (read again whenever it has changed), or failing that from
    ``sys.modules``."""

    def __init__(self) -> None:
        #: (sys.path as it was, its folders longest first): one tuple, replaced whole (threads).
        self._known: tuple[tuple[object, ...], tuple[str, ...]] = ((), ())

    def _roots_of(self, search: Iterable[str] | None) -> tuple[str, ...]:
        key = tuple(sys.path if search is None else search)
        known_key, roots = self._known
        if key != known_key:
            folders = set()
            for entry in key:
                if type(entry) is not str:
                    continue
                folder = os.path.abspath(entry or os.curdir)
                for form in (folder, os.path.realpath(folder)):
                    folders.add(form.rstrip(os.sep) + os.sep)
            roots = tuple(sorted(folders, key=len, reverse=True))
            self._known = (key, roots)
        return roots

    def name_of(self, paths: tuple[str, ...], search: Iterable[str] | None = None) -> str | None:
        for root in self._roots_of(search):
            for path in paths:
                if path.startswith(root):
                    name = _dotted(path[len(root):])
                    if name is not None:
                        return name
        if search is None:
            return _imported_name(paths)
        return None


def _dotted(relative: str) -> str | None:
    stem, suffix = os.path.splitext(relative)
    if suffix not in _SOURCE_SUFFIXES:
        return None
    parts = stem.split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def _imported_name(paths: tuple[str, ...]) -> str | None:
    """The name of a module in ``sys.modules`` whose file is one of ``paths``: for a file outside
    every ``sys.path`` entry (a module loaded by a custom finder, as editable installs do). Module
    dicts are read directly, so no program code (a module ``__getattr__``) runs."""
    for name, module in list(sys.modules.items()):
        if not isinstance(module, ModuleType) or name == "__main__":
            continue
        try:
            file = object.__getattribute__(module, "__dict__").get("__file__")
        except Exception:
            continue
        if type(file) is str and (file in paths or os.path.abspath(file) in paths):
            return name
    return None


# -- the scope -------------------------------------------------------------------------------------

class Scope:
    """Answers "is this file recorded?" for code objects' ``co_filename``.

    ``exclude_files``: files never recorded (the CLI's console script). ``include``, ``exclude``: the
    options' patterns (relative path patterns are relative to ``cwd``, by default the working
    directory now). ``main``: the program's file (the script, or the module of ``-m``), whose module
    name is ``__main__``. A pattern that can never mean anything is a PatternError, now.
    """

    def __init__(self, exclude_files: Iterable[str] = (), *, include: Iterable[str] = (),
                 exclude: Iterable[str] = (), main: str | None = None, cwd: str | None = None) -> None:
        cwd = os.getcwd() if cwd is None else cwd
        self._include = _Patterns("include", tuple(include), cwd)
        self._exclude = _Patterns("exclude", tuple(exclude), cwd)
        self._by_name = self._include.modules is not None or self._exclude.modules is not None
        self._by_path = self._include.paths is not None or self._exclude.paths is not None
        self._patterns = self._by_name or self._by_path
        self._roots = _library_roots()
        self._excluded = {os.path.realpath(f) for f in exclude_files}
        self._main = os.path.realpath(main) if main else None
        self._names = _ModuleNames()
        self._cache: dict[str, str | None] = {}

    def source_path(self, filename: str) -> str | None:
        """The absolute path to record for ``filename``, or None when it is out of scope."""
        try:
            return self._cache[filename]
        except KeyError:
            pass
        decision = self._decide(filename)
        self._cache[filename] = decision
        return decision

    def module_names(self, filename: str) -> tuple[str, ...]:
        """The module names patterns are matched against for ``filename``: the name it is imported
        under, and for the program's own file ``__main__`` first."""
        path = os.path.abspath(filename)
        real = os.path.realpath(path)
        return self._module_names(path, real)

    def _module_names(self, path: str, real: str) -> tuple[str, ...]:
        name = self._names.name_of((real, path) if real != path else (path,))
        names = () if name is None else (name,)
        return ("__main__", *names) if real == self._main else names

    def _decide(self, filename: str) -> str | None:
        if not filename or filename.startswith("<"):
            return None  # frozen modules, exec'd strings, the REPL: no source file to show
        path = os.path.abspath(filename)
        real = os.path.realpath(path)
        if real.startswith(_OWN_DIR) or real in self._excluded or not os.path.isfile(real):
            return None  # timelapse itself is never recorded, whatever the patterns
        if self._patterns:
            names = self._module_names(path, real) if self._by_name else ()
            paths = (path, real) if real != path else (path,)
            if os.sep != "/":
                paths = tuple(p.replace(os.sep, "/") for p in paths)
            if self._exclude.matches(names, paths):
                return None
            if self._include.matches(names, paths):
                return path
        if _INSTALLED_DIR_NAMES.intersection(real.split(os.sep)):
            return None
        if real.startswith(self._roots):
            return None
        return path

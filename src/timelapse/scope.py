"""Decide which source files are recorded: by default, the program's own code.

The standard library, installed packages (site-packages / dist-packages), frozen modules, code compiled
from strings and timelapse itself are out of scope. The decision is made once per file name and cached;
the monitor caches it again per code object and switches that code's events off when it is out of scope,
so code outside the scope costs nearly nothing.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig

import timelapse

_INSTALLED_DIR_NAMES = frozenset({"site-packages", "dist-packages"})


def _library_roots() -> tuple[str, ...]:
    """Folders whose files are never the program's own code."""
    roots = set()
    for scheme_key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(scheme_key)
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


class Scope:
    """Answers "is this file the program's own code?" for code objects' ``co_filename``."""

    def __init__(self, exclude_files: tuple[str, ...] = ()) -> None:
        self._roots = _library_roots()
        self._excluded = {os.path.realpath(f) for f in exclude_files}
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

    def _decide(self, filename: str) -> str | None:
        if not filename or filename.startswith("<"):
            return None  # frozen modules, exec'd strings, the REPL: no source file to show
        path = os.path.abspath(filename)
        real = os.path.realpath(path)
        if real in self._excluded or not os.path.isfile(real):
            return None
        if _INSTALLED_DIR_NAMES.intersection(real.split(os.sep)):
            return None
        if real.startswith(self._roots):
            return None
        return path

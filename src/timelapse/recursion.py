"""The program's recursion limit, kept where it is without the recorder.

A module of its own because it is a mechanism of its own: it replaces two ``sys`` functions for the
recording's life and must put them back exactly, whatever happened meanwhile.

The callbacks are Python functions: their frames count against the recursion limit, and under the CLI
the program runs below a few frames of timelapse's own. Left alone, a program would hit
RecursionError sooner recorded than not, inside a callback. So while recording:

- the real limit is raised by ``RECURSION_HEADROOM`` plus the frames below the program (``base_depth``);
- ``sys.getrecursionlimit()`` / ``sys.setrecursionlimit()`` keep showing and taking the program's limit
  (``setrecursionlimit`` validates and raises exactly as the real one);
- the monitor raises RecursionError where the program would have hit its own limit: it counts the
  real depth of a new call only from ``check_from`` recorded calls on (a thread's stack cannot be
  deeper than its frames), so shallow programs never pay for the count.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

#: How many frames of its own a callback may need on top of the program's deepest frame.
RECURSION_HEADROOM = 100


class ProgramRecursionError(Exception):
    """Internal: the program went past its recursion limit (re-raised as RecursionError)."""


class RecursionLimit:
    """The program's limit (``limit``), and from which recorded depth the monitor counts frames."""

    def __init__(self) -> None:
        self.limit = sys.getrecursionlimit()
        #: Call depth (recorded calls of one thread) from which the monitor calls ``check``.
        self.check_from = 0
        self._saved: tuple[Any, Any] | None = None

    def keep(self, base_depth: int) -> None:
        """Raise the real limit and put the program's view of it in ``sys`` (see the module docstring)."""
        extra = base_depth + RECURSION_HEADROOM
        get_limit, set_limit = sys.getrecursionlimit, sys.setrecursionlimit
        self._saved = (get_limit, set_limit)
        self.limit = get_limit()
        self.check_from = max(self.limit - RECURSION_HEADROOM, 0)
        kept = self

        def getrecursionlimit() -> int:
            return kept.limit

        def setrecursionlimit(limit: int) -> None:
            set_limit(limit)  # validates, raises as the real one does
            kept.limit = limit
            kept.check_from = max(limit - RECURSION_HEADROOM, 0)
            set_limit(limit + extra)

        getrecursionlimit.__doc__ = get_limit.__doc__
        setrecursionlimit.__doc__ = set_limit.__doc__
        set_limit(self.limit + extra)
        sys.getrecursionlimit, sys.setrecursionlimit = getrecursionlimit, setrecursionlimit

    def restore(self) -> None:
        """The real ``sys`` functions again, and the program's limit as the real one. Safe twice."""
        if self._saved is None:
            return
        get_limit, set_limit = self._saved
        self._saved = None
        sys.getrecursionlimit, sys.setrecursionlimit = get_limit, set_limit
        try:
            set_limit(self.limit)
        except RecursionError:  # stopped while deeper than the program's own limit
            pass

    def exceeded(self, frame: FrameType, base_depth: int) -> bool:
        """True if a call in ``frame`` goes deeper than the program, unrecorded, could go."""
        depth = 0
        probe: FrameType | None = frame
        while probe is not None:
            depth += 1
            probe = probe.f_back
        return depth - base_depth > self.limit

"""timelapse: record the full execution of a Python program as a CodeTracer trace.

Command line: ``timelapse record script.py [args ...]``. From Python::

    import timelapse

    with timelapse.record("trace-out"):
        ...                      # only what runs in here is recorded

    session = timelapse.start("trace-out")
    ...
    session.stop()
"""

from __future__ import annotations

import os
import sys
from typing import Any

from timelapse._version import __version__
from timelapse.errors import RecorderError
from timelapse.session import Session, is_recording

__all__ = ["RecorderError", "Session", "__version__", "is_recording", "record", "start"]


def start(out_dir: str | os.PathLike[str] = "trace-out", **options: Any) -> Session:
    """Start recording into ``out_dir`` now; call ``stop()`` on the returned session to finish.

    The lines of the calling function that run before ``stop()`` are recorded too. Options:
    ``on_error`` ("raise" or "continue"), ``max_depth``, ``max_items``, ``max_string``,
    ``program`` and ``args`` (for the trace's metadata). Raises RecorderError if already recording.
    """
    return Session(out_dir, **options).start(sys._getframe(1))


def record(out_dir: str | os.PathLike[str] = "trace-out", **options: Any) -> Session:
    """A session to use as a context manager: ``with timelapse.record("out"): ...``.

    Recording starts when the ``with`` block is entered and the trace is saved when it is left.
    """
    return Session(out_dir, **options)

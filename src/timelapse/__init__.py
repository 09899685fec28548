"""timelapse: record the full execution of a Python program as a CodeTracer trace.

Command line: ``timelapse record script.py [args ...]``. From Python::

    import timelapse

    with timelapse.record("trace-out"):
        ...                      # only what runs in here is recorded

    session = timelapse.start("trace-out", max_items=50)
    ...
    session.stop()

The options (``on_error``, ``max_depth``, ``max_items``, ``max_string``, ``max_nodes``,
``capture_io``, ``capture_fd``, ``exclude_files``) are those of ``timelapse.config.Options``, checked
there: a bad value is a ValueError (``timelapse.config.OptionError``) before anything is recorded.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Unpack

from timelapse._version import __version__
from timelapse.errors import RecorderError

if TYPE_CHECKING:
    from timelapse.config import Options, OptionValues
    from timelapse.session import Session, is_recording

__all__ = ["RecorderError", "Session", "__version__", "is_recording", "record", "start"]


def __getattr__(name: str) -> Any:
    # Lazy: ``import timelapse`` (and so the pytest plugin, loaded by every pytest run in an
    # environment where timelapse is installed) must not import the recorder, ~0.15 s of modules;
    # they are imported when a recording is first asked for.
    if name in ("Session", "is_recording"):
        from timelapse import session

        return getattr(session, name)
    raise AttributeError(f"module 'timelapse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def start(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    program: str | None = None,
    args: list[str] | None = None,
    options: Options | None = None,
    config: str | os.PathLike[str] | bool | None = None,
    **option_values: Unpack[OptionValues],
) -> Session:
    """Start recording into ``out_dir`` now; call ``stop()`` on the returned session to finish.

    The lines of the calling function that run before ``stop()`` are recorded too. ``program`` and
    ``args`` go into the trace's metadata; the recording options are keyword arguments, or an
    ``Options`` that they override, over the environment and the configuration file (``config``:
    None finds ``[tool.timelapse]`` in the nearest pyproject.toml, False reads none, or a path). Raises RecorderError if already recording, or if ``out_dir``
    holds something that is not a trace.
    """
    from timelapse.session import Session

    session = Session(out_dir, program=program, args=args, options=options, config=config, **option_values)
    return session.start(sys._getframe(1))


def record(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    program: str | None = None,
    args: list[str] | None = None,
    options: Options | None = None,
    config: str | os.PathLike[str] | bool | None = None,
    **option_values: Unpack[OptionValues],
) -> Session:
    """A session to use as a context manager: ``with timelapse.record("out"): ...``.

    Recording starts when the ``with`` block is entered and the trace is saved when it is left.
    Arguments as for ``start``.
    """
    from timelapse.session import Session

    return Session(out_dir, program=program, args=args, options=options, config=config, **option_values)

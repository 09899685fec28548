"""The recording options: one frozen ``Options`` object, its defaults, and the one validator.

Every way of giving an option — ``timelapse.start(max_depth=3)``, ``Session(out, max_depth=3)``,
``timelapse record --max-depth 3`` — ends in ``check(name, value)``, so an option is accepted or
refused by one policy, with one message: the API raises ``OptionError`` (a ``ValueError``) saying
``max_depth must be a whole number from 1 to 100, not 0``; the command line says the same reason
after argparse's ``argument --max-depth:``. Text (a command-line word) becomes a value in
``parse(name, text)``, which then calls ``check``.

An ``Options`` is frozen: a session reads its options once, when it is made, and nothing changes
them while it records. ``replace`` and ``from_mapping`` make new ones, checked again.

Where the layers will go (issue 13): defaults (here) < ``[tool.timelapse]`` in pyproject.toml <
environment < command line / API. Each layer will be a mapping of option names to values, applied
over the one below with ``Options.from_mapping(layer, base=below)``; text from pyproject or the
environment goes through ``parse`` first. Only the last layer exists today.

The output folder is not an option: it is checked against the file system (it may hold something
that is not a trace) and resolved against the working directory when the session is made, so it
stays the first argument of ``Session`` / ``start`` / ``record``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_NODES",
    "DEFAULT_MAX_STRING",
    "DEFAULT_FORMAT",
    "FORMATS",
    "MAX_DEPTH_LIMIT",
    "OptionError",
    "OptionValues",
    "Options",
    "check",
    "parse",
]

# The default detail, chosen from measurements on the benchmark programs (docs/values.md, "How
# much is shown, and what it costs"): every Step carries every visible variable again, so what one
# variable shows is paid for at every line the program runs.
#: Container levels shown; a container nested deeper becomes a short summary. Three: a variable,
#: the objects in its fields, and the objects in the containers in its fields.
DEFAULT_MAX_DEPTH = 3
#: Elements shown per container at the top (fields of an object at any depth); deeper collections
#: show fewer (encoder.collection_items); the rest are counted.
DEFAULT_MAX_ITEMS = 10
#: Characters shown per string (bytes per bytes-like value).
DEFAULT_MAX_STRING = 200
#: Elements shown in one encoded value, all containers together.
DEFAULT_MAX_NODES = 50
#: The deepest max_depth: each level is two levels of JSON nesting, and readers stop at a few hundred.
MAX_DEPTH_LIMIT = 100

#: The trace formats: ``json`` writes trace.json, ``bin`` trace.bin (CBOR in seekable zstd).
FORMATS = ("json", "bin")
#: Chosen from the benchmarks' figures (README, "Formats"): both stay first-class.
DEFAULT_FORMAT = "json"

OnError = Literal["raise", "continue"]
_ON_ERROR = ("raise", "continue")
FormatName = Literal["json", "bin"]


class OptionError(ValueError):
    """A recording option with a value it cannot have. ``option`` is its name, ``reason`` what is
    wrong, without the name (the command line puts its flag in front of it instead)."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option} {reason}")
        self.option = option
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Options:
    """What a recording records, and how it behaves if the recorder fails. Checked when made.

    ``on_error``: if the recorder itself fails, ``"raise"`` a RecorderError in the program, or
    ``"continue"``: say so on stderr and let the program run on unrecorded. ``max_depth``,
    ``max_items``, ``max_string``, ``max_nodes``: the limits of recorded values (docs/values.md).
    ``capture_io``: record stdin/stdout/stderr; ``capture_fd``: also output written to file
    descriptors 1 and 2 directly (only with ``capture_io``). ``exclude_files``: source files never
    recorded (the CLI's own console script). ``format``: the trace format, ``"json"``
    (trace.json) or ``"bin"`` (trace.bin, CBOR in a seekable zstd stream).
    """

    on_error: OnError = "raise"
    max_depth: int = DEFAULT_MAX_DEPTH
    max_items: int = DEFAULT_MAX_ITEMS
    max_string: int = DEFAULT_MAX_STRING
    max_nodes: int = DEFAULT_MAX_NODES
    capture_io: bool = True
    capture_fd: bool = False
    exclude_files: tuple[str, ...] = ()
    format: FormatName = DEFAULT_FORMAT  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for field in fields(self):
            # Frozen: the checked (normalized) value is set the way dataclasses set fields.
            object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: Options | None = None) -> Options:
        """``base`` (the defaults if None) with the options in ``values`` replacing its own. A name
        that is not an option is a TypeError, as an unknown keyword argument is."""
        unknown = [name for name in values if name not in _CHECKS]
        if unknown:
            raise TypeError(f"unknown recording option {unknown[0]!r} (the options are: "
                            f"{', '.join(_CHECKS)})")
        return dataclasses.replace(base if base is not None else cls(), **values)

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes``, checked like any other."""
        return Options.from_mapping(changes, base=self)

    @property
    def records_fd(self) -> bool:
        """File-descriptor output is captured: ``capture_fd`` counts only with ``capture_io``."""
        return self.capture_fd and self.capture_io


class OptionValues(TypedDict, total=False):
    """The options as keyword arguments (``timelapse.start(out, **options)``): the fields of
    ``Options``, for type checkers (tests/test_config.py keeps the two lists equal)."""

    on_error: OnError
    max_depth: int
    max_items: int
    max_string: int
    max_nodes: int
    capture_io: bool
    capture_fd: bool
    exclude_files: Iterable[str | os.PathLike[str]]
    format: FormatName


# -- the one validator -----------------------------------------------------------------------------

def _whole_number(highest: int | None = None) -> Callable[[str, object], int]:
    bound = f"from 1 to {highest}" if highest is not None else "of at least 1"

    def check_limit(name: str, value: object) -> int:
        # type() is int: neither bool (True is 1) nor a float or an int subclass of the program's.
        if type(value) is not int or value < 1 or (highest is not None and value > highest):
            raise OptionError(name, f"must be a whole number {bound}, not {value!r}")
        return value

    return check_limit


def _on_error(name: str, value: object) -> str:
    if type(value) is not str or value not in _ON_ERROR:
        raise OptionError(name, f"must be 'raise' or 'continue', not {value!r}")
    return value


def _format(name: str, value: object) -> str:
    if type(value) is not str or value not in FORMATS:
        raise OptionError(name, f"must be 'json' or 'bin', not {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if type(value) is not bool:
        raise OptionError(name, f"must be True or False, not {value!r}")
    return value


def _paths(name: str, value: object) -> tuple[str, ...]:
    # A single path is refused rather than read as a sequence of one-letter paths.
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        raise OptionError(name, f"must be a sequence of file paths, not {value!r}")
    paths = tuple(value)
    for path in paths:
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
            raise OptionError(name, f"must be a sequence of file paths, not {value!r}")
    return tuple(os.fspath(path) for path in paths)


#: Each option's check, in the order of Options' fields: the value as recorded, or OptionError.
_CHECKS: dict[str, Callable[[str, object], Any]] = {
    "on_error": _on_error,
    "max_depth": _whole_number(MAX_DEPTH_LIMIT),
    "max_items": _whole_number(),
    "max_string": _whole_number(),
    "max_nodes": _whole_number(),
    "capture_io": _flag,
    "capture_fd": _flag,
    "exclude_files": _paths,
    "format": _format,
}
#: How a word of text becomes each option's value, for the options that can be given as text.
_FROM_TEXT: dict[str, Callable[[str], object]] = {
    "on_error": str,
    "max_depth": int,
    "max_items": int,
    "max_string": int,
    "max_nodes": int,
    "format": str,
}


def check(name: str, value: object) -> Any:
    """The value option ``name`` records for ``value`` (a path sequence becomes a tuple of str), or
    OptionError saying why it cannot be. The one validator of every option."""
    return _CHECKS[name](name, value)


def parse(name: str, text: str) -> Any:
    """The checked value of option ``name`` written as ``text`` (a command-line word); OptionError
    if the text is not a value of the option, or the value is refused by ``check``."""
    convert = _FROM_TEXT[name]
    try:
        value = convert(text)
    except ValueError:
        raise OptionError(name, f"not a whole number: {text!r}") from None
    return check(name, value)

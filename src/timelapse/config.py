"""The recording options: one frozen ``Options`` object, its defaults, and the one validator.

Every way of giving an option — ``timelapse.start(max_depth=3)``, ``Session(out, max_depth=3)``,
``timelapse record --max-depth 3`` — ends in ``check(name, value)``, so an option is accepted or
refused by one policy, with one message: the API raises ``OptionError`` (a ``ValueError``) saying
``max_depth must be a whole number from 1 to 100, not 0``; the command line says the same reason
after argparse's ``argument --max-depth:``. Text (a command-line word) becomes a value in
``parse(name, text)``, which then calls ``check``.

An ``Options`` is frozen: a session reads its options once, when it is made, and nothing changes
them while it records. ``replace`` and ``from_mapping`` make new ones, checked again.

The layers (``load``): defaults (here) < ``[tool.timelapse]`` in the nearest ``pyproject.toml`` that
has that table (from the working directory upwards, as pytest and ruff find theirs; ``--config FILE``
or ``TIMELAPSE_CONFIG`` names another, ``--no-config`` or ``TIMELAPSE_CONFIG=""`` reads none) <
environment variables ``TIMELAPSE_<OPTION>`` < command line / API keywords. Each layer is a mapping
of option names to values applied over the one below (``Options.from_mapping``), and ``load`` keeps
where each value came from (``Loaded.sources``): the trace's metadata records both, and
``timelapse config`` prints them. Text from the environment goes through ``parse``; TOML values are
typed already and go straight to ``check``. A bad key or value in any layer is one ``OptionError``
naming where it is (the file and key, or the variable) and what was expected.

Paths: ``out``, ``activation_path`` (and the patterns of file paths) given in a configuration file are relative to that
file's folder, so a project's settings mean the same from any working directory; given on the command
line or in the environment, to the working directory.
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
    "Loaded",
    "OptionError",
    "OptionValues",
    "Options",
    "check",
    "find_config",
    "load",
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

#: The trace folder when none is given.
DEFAULT_OUT = "trace-out"
#: The trace formats: ``json`` writes trace.json, ``bin`` trace.bin (CBOR in seekable zstd).
FORMATS = ("json", "bin")
#: Chosen from the benchmarks' figures (README, "Formats"): both stay first-class.
DEFAULT_FORMAT = "bin"

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
    (trace.json) or ``"bin"`` (trace.bin, CBOR in a seekable zstd stream). ``out``: the trace
    folder when none is given to the session itself. ``include``, ``exclude``: patterns of
    module names (``myapp.*``) or file paths (``src/**/*.py``) put into or taken out of the
    recorded code, exclude winning (docs/scope.md). ``redact``: record values whose names or forms
    look like secrets as ``<redacted>``; ``redact_names``, ``redact_patterns``: more names and
    regular expressions of values to redact (docs/redaction.md). ``record_only``: patterns of
    functions (``module:qualname``, globs allowed): record only while inside one, from each entry
    to its return; ``activation_path``: a source file: record from the first start of its code to
    that call's end (docs/activation.md). ``children``: Python processes the program starts
    (``subprocess``, ``multiprocessing``, ``os.fork``) record themselves into traces of their own,
    in the folder's ``children/`` (docs/children.md).
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
    out: str = DEFAULT_OUT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    redact: bool = True
    redact_names: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    record_only: tuple[str, ...] = ()
    activation_path: str | None = None
    children: bool = False

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

    def values(self) -> dict[str, Any]:
        """Every option as JSON-shaped data (lists for tuples): ``from_mapping`` reads it back."""
        return {field.name: _shown(getattr(self, field.name)) for field in fields(self)}

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
    out: str | os.PathLike[str]
    include: Iterable[str]
    exclude: Iterable[str]
    redact: bool
    redact_names: Iterable[str]
    redact_patterns: Iterable[str]
    record_only: Iterable[str]
    activation_path: str | os.PathLike[str] | None
    children: bool


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


def _path(name: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str) \
            or not os.fspath(value):
        raise OptionError(name, f"must be a folder path, not {value!r}")
    return os.fspath(value)


def _file_or_none(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str):
        raise OptionError(name, f"must be a file path (or empty for none), not {value!r}")
    return os.fspath(value) or None   # "" (the environment, a config file) is none


def _function_patterns(name: str, value: object) -> tuple[str, ...]:
    from timelapse.activation import check_function_pattern  # the patterns' syntax lives there

    patterns = _words(name, value)
    for pattern in patterns:
        check_function_pattern(name, pattern)
    return patterns


def _words(name: str, value: object) -> tuple[str, ...]:
    # A single string is refused rather than read as a sequence of one-letter patterns.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise OptionError(name, f"must be a list of strings, not {value!r}")
    words = tuple(value)
    for word in words:
        if type(word) is not str or not word:
            raise OptionError(name, f"must be a list of non-empty strings, not {value!r}")
    return words


def _scope_patterns(name: str, value: object) -> tuple[str, ...]:
    # Checked here as the recording will read them (scope.py), so that `timelapse config` and a
    # configuration file's line name a pattern that can never match, not only `record`.
    from timelapse.scope import check_patterns     # scope.py imports this module

    return check_patterns(name, _words(name, value))


def _expressions(name: str, value: object) -> tuple[str, ...]:
    import re

    expressions = _words(name, value)
    for expression in expressions:
        try:
            compiled = re.compile(expression)
        except re.error as exc:
            raise OptionError(name, f"has {expression!r}, not a regular expression: {exc}") from None
        if compiled.search("") is not None:     # 'z*' would redact every text, between every letter
            raise OptionError(name, f"has {expression!r}, which matches an empty text")
    return expressions


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
    "out": _path,
    "include": _scope_patterns,
    "exclude": _scope_patterns,
    "redact": _flag,
    "redact_names": _words,
    "redact_patterns": _expressions,
    "record_only": _function_patterns,
    "activation_path": _file_or_none,
    "children": _flag,
}
#: How a word of text becomes each option's value, for the options that can be given as text.
_FROM_TEXT: dict[str, Callable[[str], object] | str] = {
    "on_error": str,
    "max_depth": int,
    "max_items": int,
    "max_string": int,
    "max_nodes": int,
    "format": str,
    "out": str,
    "activation_path": str,
    "capture_io": "flag",
    "capture_fd": "flag",
    "redact": "flag",
    "children": "flag",
    # Lists as text (the environment): comma-separated.
    "include": "list",
    "exclude": "list",
    "redact_names": "list",
    "record_only": "list",
    # Regular expressions hold commas ({1,3}): one a line.
    "redact_patterns": "lines",
}


def check(name: str, value: object) -> Any:
    """The value option ``name`` records for ``value`` (a path sequence becomes a tuple of str), or
    OptionError saying why it cannot be. The one validator of every option."""
    return _CHECKS[name](name, value)


def parse(name: str, text: str) -> Any:
    """The checked value of option ``name`` written as ``text`` (a command-line word or an
    environment variable); OptionError if the text is not a value of the option, or the value is
    refused by ``check``."""
    convert = _FROM_TEXT[name]
    if convert == "list":
        return check(name, tuple(word.strip() for word in text.split(",") if word.strip()))
    if convert == "lines":
        return check(name, tuple(line for line in text.splitlines() if line.strip()))
    if convert == "flag":
        word = text.strip().lower()
        if word not in _FLAG_WORDS:
            raise OptionError(name, f"must be one of {', '.join(_FLAG_WORDS)}, not {text!r}")
        return check(name, _FLAG_WORDS[word])
    try:
        value = convert(text)
    except ValueError:
        raise OptionError(name, f"not a whole number: {text!r}") from None
    return check(name, value)


_FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


# -- the layers ------------------------------------------------------------------------------------

#: What sets the environment layer: TIMELAPSE_ and the option's name in capitals.
ENV_PREFIX = "TIMELAPSE_"
#: Variables of ours that are not options (the implementation switch, the configuration file, the
#: trace folder of a process recorded by environment: autostart.py, which gives it as ``out``).
_OTHER_VARIABLES = {"TIMELAPSE_PURE", "TIMELAPSE_CONFIG", "TIMELAPSE_RECORD", "TIMELAPSE_PARENT"}
#: The options a configuration file and the environment can set (exclude_files is the CLI's own).
LAYERED = tuple(name for name in _CHECKS if name != "exclude_files")
CONFIG_TABLE = ("tool", "timelapse")


@dataclass(frozen=True)
class Loaded:
    """The effective options and, for each, where its value came from: ``"default"``, the
    configuration file (``"pyproject.toml (/path/to/it)"``), ``"environment (TIMELAPSE_X)"``, or
    the last layer's name (``"command line"``, ``"API"``)."""

    options: Options
    sources: Mapping[str, str]
    config_file: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        """The options and their sources as JSON-shaped data (the trace's metadata)."""
        values = {name: _shown(getattr(self.options, name)) for name in LAYERED}
        return {"values": values, "sources": {name: self.sources[name] for name in LAYERED},
                "config_file": self.config_file}


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def find_config(start: str | os.PathLike[str]) -> str | None:
    """The nearest ``pyproject.toml`` with a ``[tool.timelapse]`` table, from ``start`` upwards
    (a pyproject.toml without the table is passed over, as pytest and ruff do), or None."""
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(candidate) and _table(candidate, _read_toml(candidate)) is not None:
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def load(given: Mapping[str, Any] = (), *, given_by: str = "API", cwd: str | None = None,
         environ: Mapping[str, str] | None = None, config: str | os.PathLike[str] | bool | None = None,
         base: Options | None = None) -> Loaded:
    """The options of a recording, layered: defaults (or ``base``) < configuration file <
    environment < ``given`` (by ``given_by``). ``config``: None to find the file (or take
    ``TIMELAPSE_CONFIG``), False to read none, or the file to read. Raises OptionError (one line,
    naming the place) for a bad key or value in any layer, TypeError for an unknown keyword."""
    cwd = os.getcwd() if cwd is None else cwd
    environ = os.environ if environ is None else environ
    options = base if base is not None else Options()
    sources = {name: "default" for name in _CHECKS}
    path = _config_path(config, cwd, environ)
    if path is not None:
        where = f"{os.path.basename(path)} ({path})"
        layer = _file_layer(path, where)
        options = _apply(options, layer, where)
        sources.update(dict.fromkeys(layer, where))
    layer = _environment_layer(environ)
    for name, (variable, value) in layer.items():
        options = _apply(options, {name: value}, f"environment {variable}")
        sources[name] = f"environment ({variable})"
    if given:
        options = Options.from_mapping(given, base=options)
        sources.update(dict.fromkeys(given, given_by))
    return Loaded(options, sources, path)


def _apply(options: Options, layer: Mapping[str, Any], where: str) -> Options:
    try:
        return Options.from_mapping(layer, base=options)
    except OptionError as exc:
        raise OptionError(f"{where}: {exc.option}", exc.reason) from None


def _config_path(config: str | os.PathLike[str] | bool | None, cwd: str,
                 environ: Mapping[str, str]) -> str | None:
    if config is False:
        return None
    if config is None or config is True:
        named = environ.get("TIMELAPSE_CONFIG")
        if named is None:
            return find_config(cwd)
        if named == "":
            return None
        config = named
    path = os.path.join(cwd, os.fspath(config))
    if not os.path.isfile(path):
        raise OptionError("config", f"names no file: {os.fspath(config)!r}")
    return os.path.abspath(path)


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise OptionError(path, f"cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(path, f"is not valid TOML: {exc}") from None


def _table(path: str, data: dict[str, Any]) -> dict[str, Any] | None:
    table: Any = data
    for key in CONFIG_TABLE:
        if not isinstance(table, dict) or key not in table:
            return None
        table = table[key]
    if not isinstance(table, dict):
        raise OptionError(path, "has [tool.timelapse] that is not a table")
    return table


def _file_layer(path: str, where: str) -> dict[str, Any]:
    """The options set in the ``[tool.timelapse]`` table of ``path``: keys as in the API
    (``max_depth``) or as on the command line (``max-depth``); paths relative to the file's folder."""
    table = _table(path, _read_toml(path))
    if table is None:
        raise OptionError(path, "has no [tool.timelapse] table")
    layer: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in LAYERED:
            raise OptionError(f"{where}: [tool.timelapse] has no option {key!r} (the options are:",
                              f"{', '.join(LAYERED)})")
        if name in layer:
            raise OptionError(f"{where}: [tool.timelapse] {key}", "is given twice (as - and as _)")
        if type(value) is list:
            value = tuple(value)
        if name in ("out", "activation_path") and isinstance(value, str) and value:
            value = os.path.join(os.path.dirname(path), value)
        if name in ("include", "exclude") and type(value) is tuple:
            value = tuple(_from_folder(os.path.dirname(path), p) for p in value)
        layer[name] = value
    return layer


def _from_folder(folder: str, pattern: Any) -> Any:
    """A relative file-path pattern of a configuration file, made absolute against its folder
    (``src/**/*.py``); module names (no ``/``) and patterns for any folder (``*/migrations/*``,
    ``**/x.py``) stay as they are."""
    if (type(pattern) is str and "/" in pattern and not pattern.startswith(("*", "/"))
            and not os.path.isabs(pattern)):
        return os.path.join(folder, pattern)
    return pattern


def _environment_layer(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """The options set by ``TIMELAPSE_<OPTION>`` variables: option -> (variable, checked value). A
    variable of ours that names no option is refused (a typo would silently do nothing)."""
    layer: dict[str, tuple[str, Any]] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in _OTHER_VARIABLES:
            continue
        name = variable[len(ENV_PREFIX):].lower()
        if name not in LAYERED or name not in _FROM_TEXT:
            raise OptionError(f"environment {variable}", f"names no option (the variables are: "
                              f"{', '.join(ENV_PREFIX + n.upper() for n in LAYERED if n in _FROM_TEXT)})")
        try:
            layer[name] = (variable, parse(name, environ[variable]))
        except OptionError as exc:
            raise OptionError(f"environment {variable}", exc.reason) from None
    return layer

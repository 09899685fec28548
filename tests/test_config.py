"""The recording options (config.py): one frozen Options, its defaults, and one validator that the
API, Session and the command line all go through, with the same reasons."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import pytest
from conftest import PROGRAMS, run_python

import timelapse
from timelapse import config
from timelapse.config import Options, OptionError, OptionValues
from timelapse.session import Session

#: (option, a value it refuses, the reason, without the option's name)
REFUSED = [
    ("on_error", "ignore", "must be 'raise' or 'continue', not 'ignore'"),
    ("on_error", None, "must be 'raise' or 'continue', not None"),
    ("max_depth", 0, "must be a whole number from 1 to 100, not 0"),
    ("max_depth", 101, "must be a whole number from 1 to 100, not 101"),
    ("max_depth", True, "must be a whole number from 1 to 100, not True"),
    ("max_items", "5", "must be a whole number of at least 1, not '5'"),
    ("max_items", 0, "must be a whole number of at least 1, not 0"),
    ("max_string", 2.0, "must be a whole number of at least 1, not 2.0"),
    ("max_nodes", -1, "must be a whole number of at least 1, not -1"),
    ("capture_io", 1, "must be True or False, not 1"),
    ("capture_fd", "yes", "must be True or False, not 'yes'"),
    ("exclude_files", "prog.py", "must be a sequence of file paths, not 'prog.py'"),
    ("exclude_files", [1], "must be a sequence of file paths, not [1]"),
]


def test_the_defaults():
    options = Options()
    assert (options.on_error, options.max_depth, options.max_items, options.max_string,
            options.max_nodes, options.capture_io, options.capture_fd, options.exclude_files) == (
        "raise", 3, 10, 200, 50, True, False, ())
    assert (config.DEFAULT_MAX_DEPTH, config.DEFAULT_MAX_ITEMS, config.DEFAULT_MAX_STRING,
            config.DEFAULT_MAX_NODES, config.MAX_DEPTH_LIMIT) == (3, 10, 200, 50, 100)


def test_the_encoders_defaults_are_the_same_numbers():
    # encoder.py keeps its names importable until its author imports them from config.
    from timelapse import encoder

    for name in ("DEFAULT_MAX_DEPTH", "DEFAULT_MAX_ITEMS", "DEFAULT_MAX_STRING", "DEFAULT_MAX_NODES"):
        assert getattr(encoder, name) == getattr(config, name)


def test_options_are_frozen_and_replace_checks_again():
    options = Options(max_depth=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_depth = 4  # type: ignore[misc]
    assert options.replace(max_items=5) == Options(max_depth=3, max_items=5)
    assert options.max_items == config.DEFAULT_MAX_ITEMS
    with pytest.raises(OptionError, match="max_items must be a whole number of at least 1, not 0"):
        options.replace(max_items=0)


@pytest.mark.parametrize(("name", "value", "reason"), REFUSED)
def test_every_option_is_checked_by_the_one_validator(name, value, reason):
    with pytest.raises(OptionError) as caught:
        config.check(name, value)
    assert (caught.value.option, caught.value.reason, str(caught.value)) == (name, reason, f"{name} {reason}")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(OptionError) as made:
        Options(**{name: value})
    assert str(made.value) == f"{name} {reason}"


@pytest.mark.parametrize(("name", "value", "reason"), REFUSED)
def test_the_api_and_session_refuse_with_the_same_message(tmp_path, name, value, reason):
    out = tmp_path / "t"
    for make in (lambda: Session(out, **{name: value}), lambda: timelapse.start(out, **{name: value}),
                 lambda: timelapse.record(out, **{name: value})):
        with pytest.raises(ValueError) as caught:
            make()
        assert str(caught.value) == f"{name} {reason}"
    assert not timelapse.is_recording()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "word", "reason"), [
    ("--max-depth", "0", "must be a whole number from 1 to 100, not 0"),
    ("--max-depth", "101", "must be a whole number from 1 to 100, not 101"),
    ("--max-items", "0", "must be a whole number of at least 1, not 0"),
    ("--max-nodes", "many", "not a whole number: 'many'"),
    ("--on-recorder-error", "ignore", "must be 'raise' or 'continue', not 'ignore'"),
])
def test_the_command_line_says_the_same_reason_in_one_line(tmp_path, flag, word, reason):
    result = run_python(["-m", "timelapse", "record", flag, word, str(PROGRAMS / "recursion.py")], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"timelapse: error: argument {flag}: {reason}\n"
    assert list(tmp_path.iterdir()) == []


def test_text_is_read_then_checked():
    assert config.parse("max_depth", "12") == 12
    assert config.parse("on_error", "continue") == "continue"
    with pytest.raises(OptionError, match=r"^max_depth not a whole number: 'zero'$"):
        config.parse("max_depth", "zero")
    with pytest.raises(OptionError, match="max_depth must be a whole number from 1 to 100, not 0"):
        config.parse("max_depth", "0")


def test_unknown_options_are_type_errors(tmp_path):
    with pytest.raises(TypeError, match="unknown recording option 'frobnicate'"):
        Options.from_mapping({"frobnicate": 1})
    with pytest.raises(TypeError, match="unknown recording option 'max_dept'"):
        Session(tmp_path / "t", max_dept=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        timelapse.start(tmp_path / "t", max_dept=3)  # type: ignore[call-arg]
    assert not timelapse.is_recording()


def test_from_mapping_layers_over_a_base():
    base = Options(max_depth=3, capture_io=False)
    assert Options.from_mapping({"max_items": 7}, base=base) == Options(max_depth=3, capture_io=False, max_items=7)
    assert Options.from_mapping({}) == Options()


def test_exclude_files_become_a_tuple_of_paths():
    options = Options(exclude_files=[Path("/a/b.py"), "c.py"])
    assert options.exclude_files == ("/a/b.py", "c.py")
    hash(options)  # frozen, and every field hashable


def test_fd_capture_counts_only_with_io_capture():
    assert Options(capture_fd=True).records_fd
    assert not Options(capture_fd=True, capture_io=False).records_fd
    assert not Options().records_fd


def test_session_keyword_arguments_override_an_options_object(tmp_path):
    session = Session(tmp_path / "t", options=Options(max_depth=3, max_items=4), max_items=5)
    out = str(tmp_path / "t")
    assert session.options == Options(max_depth=3, max_items=5, out=out)
    assert Session(tmp_path / "t").options == Options(out=out)


def test_the_keyword_arguments_type_lists_every_option():
    hints = typing.get_type_hints(OptionValues)
    assert list(hints) == [field.name for field in dataclasses.fields(Options)]
    assert list(hints) == list(config._CHECKS)


def test_the_command_line_makes_its_options_from_the_flags_given(tmp_path, monkeypatch):
    from timelapse.cli import _make_session, parse_record

    monkeypatch.setattr(sys, "argv", ["/usr/bin/timelapse"])
    record = parse_record(["-o", str(tmp_path / "t"), "--max-depth", "3", "--no-capture-io",
                           "--on-recorder-error", "continue", str(PROGRAMS / "recursion.py")])
    session = _make_session(record)
    out = str(tmp_path / "t")
    assert session.options == Options(max_depth=3, capture_io=False, on_error="continue",
                                      exclude_files=("/usr/bin/timelapse",), out=out)
    plain = _make_session(parse_record(["-o", out, str(PROGRAMS / "recursion.py")]))
    assert plain.options == Options(exclude_files=("/usr/bin/timelapse",), out=out)

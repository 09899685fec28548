"""The layers of the options (config.load): defaults < [tool.timelapse] in pyproject.toml < TIMELAPSE_*
environment variables < command line / API, each value's source kept, every bad key or value one line
naming where it is."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_timelapse

import timelapse
from timelapse import config
from timelapse.config import OptionError, Options, load


def write_config(folder, text, name="pyproject.toml"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_each_layer_overrides_the_one_below_and_says_so(tmp_path):
    path = write_config(tmp_path, "[tool.timelapse]\nmax_depth = 5\nmax_items = 6\nmax_nodes = 7\n")
    loaded = load({"max_nodes": 9}, given_by="command line", cwd=str(tmp_path),
                  environ={"TIMELAPSE_MAX_ITEMS": "8"})
    assert (loaded.options.max_depth, loaded.options.max_items, loaded.options.max_nodes) == (5, 8, 9)
    where = f"pyproject.toml ({path})"
    assert loaded.sources["max_depth"] == where
    assert loaded.sources["max_items"] == "environment (TIMELAPSE_MAX_ITEMS)"
    assert loaded.sources["max_nodes"] == "command line"
    assert loaded.sources["max_string"] == "default"
    assert loaded.config_file == str(path)


def test_the_nearest_pyproject_with_the_table_is_found_upwards(tmp_path):
    write_config(tmp_path, "[tool.timelapse]\nmax_depth = 4\n")
    write_config(tmp_path / "a", "[project]\nname = 'x'\n")   # no [tool.timelapse]: passed over
    deep = tmp_path / "a" / "b"
    deep.mkdir()
    assert config.find_config(deep) == str(tmp_path / "pyproject.toml")
    assert load(cwd=str(deep), environ={}).options.max_depth == 4
    write_config(tmp_path / "a", "[tool.timelapse]\nmax_depth = 2\n")
    assert load(cwd=str(deep), environ={}).options.max_depth == 2


def test_a_named_file_or_none(tmp_path):
    write_config(tmp_path, "[tool.timelapse]\nmax_depth = 4\n")
    other = write_config(tmp_path / "elsewhere", "[tool.timelapse]\nmax_depth = 6\n", "tl.toml")
    assert load(cwd=str(tmp_path), environ={}, config=str(other)).options.max_depth == 6
    assert load(cwd=str(tmp_path), environ={"TIMELAPSE_CONFIG": str(other)}).options.max_depth == 6
    assert load(cwd=str(tmp_path), environ={}, config=False).options.max_depth == 3
    assert load(cwd=str(tmp_path), environ={"TIMELAPSE_CONFIG": ""}).options.max_depth == 3


def test_keys_as_in_the_api_or_as_on_the_command_line(tmp_path):
    write_config(tmp_path, '[tool.timelapse]\nmax-depth = 4\non_error = "continue"\ncapture-io = false\n'
                           'format = "bin"\n')
    options = load(cwd=str(tmp_path), environ={}).options
    assert options == Options(max_depth=4, on_error="continue", capture_io=False, format="bin")


def test_a_file_relative_out_is_relative_to_the_files_folder(tmp_path):
    write_config(tmp_path, '[tool.timelapse]\nout = "traces/latest"\n')
    (tmp_path / "sub").mkdir()
    assert load(cwd=str(tmp_path / "sub"), environ={}).options.out == str(tmp_path / "traces" / "latest")
    assert load({"out": "here"}, cwd=str(tmp_path / "sub"), environ={}).options.out == "here"


@pytest.mark.parametrize("text, message", [
    ("[tool.timelapse]\nmax_dpth = 5\n", "[tool.timelapse] has no option 'max_dpth' (the options are:"),
    ("[tool.timelapse]\nmax_depth = 0\n", "max_depth must be a whole number from 1 to 100, not 0"),
    ("[tool.timelapse]\nmax_depth = '5'\n", "max_depth must be a whole number from 1 to 100, not '5'"),
    ("[tool.timelapse]\ncapture_io = 1\n", "capture_io must be True or False, not 1"),
    ("[tool.timelapse]\nformat = 'xml'\n", "format must be 'json' or 'bin', not 'xml'"),
    ("[tool.timelapse]\nmax_depth = 2\nmax-depth = 3\n", "[tool.timelapse] max-depth is given twice"),
    ("[tool.timelapse\n", "is not valid TOML"),
    ("[tool]\ntimelapse = 3\n", "has [tool.timelapse] that is not a table"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    path = write_config(tmp_path, text, "tl.toml")
    with pytest.raises(OptionError) as caught:
        load(cwd=str(tmp_path), environ={}, config=str(path))
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("environ, message", [
    ({"TIMELAPSE_MAX_DEPTH": "0"}, "environment TIMELAPSE_MAX_DEPTH must be a whole number from 1 to 100, not 0"),
    ({"TIMELAPSE_MAX_DEPTH": "lots"}, "environment TIMELAPSE_MAX_DEPTH not a whole number: 'lots'"),
    ({"TIMELAPSE_CAPTURE_IO": "maybe"}, "environment TIMELAPSE_CAPTURE_IO must be one of 1, true, yes"),
    ({"TIMELAPSE_MAXDEPTH": "3"}, "environment TIMELAPSE_MAXDEPTH names no option"),
    ({"TIMELAPSE_CONFIG": "/nonexistent/tl.toml"}, "config names no file: '/nonexistent/tl.toml'"),
])
def test_a_bad_variable_is_one_line_naming_it(tmp_path, environ, message):
    with pytest.raises(OptionError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load(cwd=str(tmp_path), environ=environ)


@pytest.mark.parametrize("word, value", [("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                         ("0", False), ("False", False), ("no", False), ("off", False)])
def test_flags_in_the_environment(tmp_path, word, value):
    assert load(cwd=str(tmp_path), environ={"TIMELAPSE_CAPTURE_IO": word}).options.capture_io is value


def test_other_variables_of_ours_are_not_options(tmp_path):
    assert load(cwd=str(tmp_path), environ={"TIMELAPSE_PURE": "1", "TIMELAPSE_CONFIG": ""}).options == Options()


def test_every_option_can_be_set_in_every_layer(tmp_path):
    """Each layered option is a key of the file, a variable and a flag of the command line."""
    from timelapse.cli import _OPTION_FLAGS

    assert set(config.LAYERED) <= set(_OPTION_FLAGS)
    for name in config.LAYERED:
        assert name in config._FROM_TEXT, f"{name} cannot be given as text (environment)"


# -- end to end ---------------------------------------------------------------------------------------

def test_the_command_line_reads_the_layers_and_the_metadata_records_them(tmp_path):
    write_config(tmp_path, '[tool.timelapse]\nmax_depth = 5\nout = "traces/t"\nformat = "bin"\n')
    (tmp_path / "prog.py").write_text("x = 1\n")
    env = dict(os.environ, TIMELAPSE_MAX_ITEMS="7")
    result = run_timelapse(["record", "-q", "--max-nodes", "30", "prog.py"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "traces" / "t"
    assert (out / "trace.bin").is_file()
    recorded = json.loads((out / "trace_metadata.json").read_text())["options"]
    assert recorded["values"]["max_depth"] == 5 and recorded["values"]["max_items"] == 7
    assert recorded["values"]["max_nodes"] == 30 and recorded["values"]["out"] == str(out)
    assert recorded["sources"]["max_depth"].startswith("pyproject.toml (")
    assert recorded["sources"]["max_items"] == "environment (TIMELAPSE_MAX_ITEMS)"
    assert recorded["sources"]["max_nodes"] == "command line"
    assert recorded["sources"]["max_string"] == "default"
    assert recorded["config_file"] == str(tmp_path / "pyproject.toml")
    ignored = run_timelapse(["record", "-q", "--no-config", "-o", "plain", "prog.py"], cwd=tmp_path)
    assert ignored.returncode == 0 and (tmp_path / "plain" / f"trace.{config.DEFAULT_FORMAT}").is_file()


def test_a_bad_layer_stops_the_command_line_with_one_line(tmp_path):
    write_config(tmp_path, "[tool.timelapse]\nmax_depth = 0\n")
    (tmp_path / "prog.py").write_text("print('ran')\n")
    result = run_timelapse(["record", "prog.py"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"timelapse: error: pyproject.toml ({tmp_path / 'pyproject.toml'}): "
                             "max_depth must be a whole number from 1 to 100, not 0\n")
    env = dict(os.environ, TIMELAPSE_FORMAT="xml")
    result = run_timelapse(["record", "--no-config", "prog.py"], cwd=tmp_path, env=env)
    assert (result.returncode, result.stderr) == (
        2, "timelapse: error: environment TIMELAPSE_FORMAT must be 'json' or 'bin', not 'xml'\n")
    assert not (tmp_path / "trace-out").exists()


def test_timelapse_config_prints_each_value_and_its_source(tmp_path):
    write_config(tmp_path, "[tool.timelapse]\nmax_depth = 5\n")
    env = dict(os.environ, TIMELAPSE_FORMAT="bin")
    result = run_timelapse(["config", "--max-nodes", "30"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"# configuration file: {tmp_path / 'pyproject.toml'}"
    assert lines[1] == "[tool.timelapse]"
    assert f"max_depth = 5  # pyproject.toml ({tmp_path / 'pyproject.toml'})" in lines
    assert 'format = "bin"  # environment (TIMELAPSE_FORMAT)' in lines
    assert "max_nodes = 30  # command line" in lines
    assert "capture_io = true  # default" in lines
    # What it prints is a [tool.timelapse] table that reads back as the same options.
    import tomllib

    table = tomllib.loads("\n".join(lines))["tool"]["timelapse"]
    assert Options.from_mapping(table) == Options(max_depth=5, format="bin", max_nodes=30)


def test_the_api_reads_the_layers_too(tmp_path, monkeypatch):
    write_config(tmp_path, "[tool.timelapse]\nmax_depth = 5\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIMELAPSE_MAX_ITEMS", "4")
    session = timelapse.Session(tmp_path / "t", max_nodes=9)
    assert (session.options.max_depth, session.options.max_items, session.options.max_nodes) == (5, 4, 9)
    assert session.loaded.sources["max_nodes"] == "API"
    assert timelapse.Session(tmp_path / "t", config=False).options.max_depth == 3
    monkeypatch.setenv("TIMELAPSE_OUT", str(tmp_path / "from-env"))
    assert timelapse.Session().out_dir == tmp_path / "from-env"

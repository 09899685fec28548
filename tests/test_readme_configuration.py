"""README.md's "Configuration" section says what config.py does: a row for every option with its
default, its environment variable and its flags, and an example table that config.load accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from timelapse import cli, config
from timelapse.config import Options

README = Path(__file__).parent.parent / "README.md"
HEADER = "| key | meaning | default | environment | command line |"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Configuration\n")
    return text[start:text.index("\n## ", start + 1)]


def _rows() -> dict[str, list[str]]:
    """The table's rows by key: the cells after the key's."""
    lines = _section().splitlines()
    first = lines.index(HEADER) + 2     # past the header and the |---| line
    rows = {}
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        key = cells[0].strip("`")
        assert key not in rows, f"{key} has two rows"
        rows[key] = cells[1:]
    return rows


def _toml(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def test_every_option_has_a_row_with_its_default_variable_and_flags():
    rows = _rows()
    fields = [field.name for field in dataclasses.fields(Options)]
    assert sorted(rows) == sorted(fields), "a row for each Options field, and no other"
    flags = {}      # option string -> the key it sets
    for action in cli._record_parser()._actions:
        for string in action.option_strings:
            flags[string] = action.dest
    defaults = Options()
    for key, (meaning, default, variable, command_line) in rows.items():
        assert meaning, key
        assert default.startswith(_toml(getattr(defaults, key))), (key, default)
        layered = key in config.LAYERED and key in config._FROM_TEXT
        assert variable == (f"`{config.ENV_PREFIX}{key.upper()}`" if layered else "-"), key
        written = re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", command_line)
        assert [flags.get(flag) for flag in written] == [key] * len(written), (key, written)
        assert bool(written) == (key in cli._OPTION_FLAGS), key
    for string, dest in flags.items():     # every flag of an option is in the option's row
        if dest in rows:
            assert re.search(rf"(?<![\w-]){re.escape(string)}(?![\w-])", rows[dest][3]), string


def test_the_complete_example_sets_every_key_and_loads(tmp_path):
    section = _section()
    example = section[section.index("```toml\n") + 8:]
    example = example[:example.index("```")]
    (tmp_path / "pyproject.toml").write_text(example, encoding="utf-8")
    loaded = config.load(config=tmp_path / "pyproject.toml", environ={}, cwd=str(tmp_path))
    assert {name for name, source in loaded.sources.items() if source != "default"} == set(config.LAYERED)
    assert loaded.options.include == ("requests.*", "json")
    assert loaded.options.exclude == ("myapp.vendored", "*/migrations/*")
    assert loaded.options.out == str(tmp_path / "traces/latest")

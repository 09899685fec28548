"""Which files are the program's own code."""

from __future__ import annotations

import json
import os

import pytest

import timelapse
from timelapse.scope import Scope


def test_the_programs_own_files_are_in_scope(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("")
    assert Scope().source_path(str(script)) == str(script)


@pytest.mark.parametrize("filename", [
    json.__file__, os.__file__, pytest.__file__, timelapse.__file__,
    "<string>", "<frozen importlib._bootstrap>", "", "/no/such/file.py",
])
def test_libraries_and_code_without_a_file_are_not(filename):
    assert Scope().source_path(filename) is None


def test_site_packages_anywhere_is_out_of_scope(tmp_path):
    vendored = tmp_path / "venv" / "lib" / "site-packages" / "pkg.py"
    vendored.parent.mkdir(parents=True)
    vendored.write_text("")
    assert Scope().source_path(str(vendored)) is None


def test_excluded_files_and_relative_names(tmp_path, monkeypatch):
    script = tmp_path / "tool.py"
    script.write_text("")
    assert Scope(exclude_files=(str(script),)).source_path(str(script)) is None
    monkeypatch.chdir(tmp_path)
    assert Scope().source_path("tool.py") == str(script)

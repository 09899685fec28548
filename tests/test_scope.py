"""Which files are recorded: the program's own code by default, ``include`` / ``exclude`` patterns of
module names and file paths (docs/scope.md)."""

from __future__ import annotations

import json
import json.decoder
import os
import shutil
import sys
import textwrap
import types
from collections import Counter
from pathlib import Path

import pytest
from conftest import PROGRAMS, checked_trace, run_timelapse

import timelapse
import timelapse.scope
from timelapse.errors import RecorderError
from timelapse.scope import PatternError, Scope, check_patterns, module_name

APP = PROGRAMS / "scope_app"


# -- the defaults ------------------------------------------------------------------------------------

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


# -- what a pattern matches --------------------------------------------------------------------------

def matches(pattern: str, *, name: str | None = None, path: str | None = None) -> bool:
    patterns = timelapse.scope._Patterns("include", (pattern,), "/work")
    return patterns.matches((name,) if name else (), (path,) if path else ())


@pytest.mark.parametrize("pattern, name, expected", [
    # A module name pattern names a module and everything in it; ``myapp.*`` is ``myapp`` too.
    ("myapp.*", "myapp", True), ("myapp.*", "myapp.db", True), ("myapp.*", "myapp.db.models", True),
    ("myapp", "myapp", True), ("myapp", "myapp.db", True),
    ("myapp.*", "myapp2", False), ("myapp", "myapp2.db", False), ("myapp.*", "other.myapp", False),
    ("myapp.db", "myapp.db", True), ("myapp.db", "myapp.db.models", True),
    ("myapp.db", "myapp.dbx", False), ("myapp.db", "myapp", False),
    # Globs over the dotted name: * crosses dots, matched against the name and its parents.
    ("*.models", "shop.models", True), ("*.models", "shop.models.user", True),
    ("*.models", "shop.modelsx", False), ("test_*", "test_orders", True), ("test_*", "a.test_x", False),
    ("my?pp", "myapp", True), ("myapp.[a-c]*", "myapp.db", False), ("myapp.[a-d]*", "myapp.db", True),
    ("myapp.[!d]*", "myapp.db", False), ("*", "anything.at.all", True), ("myapp.**", "myapp", True),
    ("__main__", "__main__", True), ("Myapp", "myapp", False),
])
def test_module_name_patterns(pattern, name, expected):
    assert not timelapse.scope.is_path_pattern(pattern)
    assert matches(pattern, name=name) is expected


@pytest.mark.parametrize("pattern, path, expected", [
    # Relative: to the working directory (here /work); ** is any number of folders, none too.
    ("src/**/*.py", "/work/src/a.py", True), ("src/**/*.py", "/work/src/a/b/c.py", True),
    ("src/**/*.py", "/elsewhere/src/a.py", False), ("src/*.py", "/work/src/a/b.py", False),
    ("./src/*.py", "/work/src/a.py", True), ("../lib/*.py", "/lib/x.py", True),
    # A pattern starting with * is for any folder; */x/* is **/x/**.
    ("*/migrations/*", "/work/shop/migrations/m0001.py", True),
    ("*/migrations/*", "/deep/er/migrations/sub/m.py", True),
    ("*/migrations/*", "/work/shop/migrationsx/m.py", False),
    ("**/y.py", "/a/b/y.py", True), ("**/y.py", "/a/b/xy.py", False),
    # No /: a file name in any folder.
    ("conftest.py", "/a/b/conftest.py", True), ("test_*.py", "/a/test_x.py", True),
    ("main.py", "/a/domain.py", False),
    # A folder: every file in it.
    ("/opt/vendor", "/opt/vendor/x/y.py", True), ("/opt/vendor", "/opt/vendorx/y.py", False),
    ("src/", "/work/src/a.py", True), ("/opt/*/lib.py", "/opt/a/b/lib.py", False),
    ("/opt/[ab].py", "/opt/a.py", True), ("/opt/[!ab].py", "/opt/a.py", False),
])
def test_file_path_patterns(pattern, path, expected):
    assert timelapse.scope.is_path_pattern(pattern)
    assert matches(pattern, path=path) is expected


@pytest.mark.parametrize("pattern, message", [
    ("my-app", "exclude has 'my-app': not a module name pattern"),
    ("my app", "exclude has 'my app': not a module name pattern"),
    ("a!b", "exclude has 'a!b': not a module name pattern"),
    ("myapp.", "exclude has 'myapp.': a module name pattern with an empty part"),
    (".myapp", "exclude has '.myapp': a module name pattern with an empty part"),
    ("a..b", "exclude has 'a..b': a module name pattern with an empty part"),
    ("myapp.[ab", "exclude has 'myapp.[ab', whose [ is never closed"),
    ("src/[ab.py", "exclude has 'src/[ab.py', whose [ is never closed"),
    ("src/a**/x.py", "exclude has 'src/a**/x.py': ** must be a whole folder name"),
    (" myapp", "exclude has ' myapp', not a pattern"),
])
def test_a_pattern_that_can_never_match_is_refused_at_once(pattern, message):
    with pytest.raises(PatternError) as caught:
        Scope(exclude=[pattern])
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
    # A bad option (a ValueError, as config's) and a recording that cannot start.
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, RecorderError)
    with pytest.raises(PatternError):
        check_patterns("exclude", [pattern])


def test_check_patterns_gives_them_back():
    assert check_patterns("include", ["myapp.*", "src/**/*.py"]) == ("myapp.*", "src/**/*.py")


# -- module names ------------------------------------------------------------------------------------

def test_a_files_module_name_is_found_from_the_longest_search_folder(tmp_path):
    root, src = tmp_path, tmp_path / "src"
    search = [str(root), str(src)]
    assert module_name(str(src / "myapp" / "__init__.py"), search) == "myapp"
    assert module_name(str(src / "myapp" / "db.py"), search) == "myapp.db"
    assert module_name(str(src / "myapp" / "db" / "models.py"), search) == "myapp.db.models"
    assert module_name(str(root / "tests" / "test_x.py"), search) == "tests.test_x"
    assert module_name(str(root / "tests" / "data-1" / "x.py"), search) is None  # not importable
    assert module_name(str(root / "tool"), search) is None  # not a .py file
    assert module_name("/elsewhere/x.py", search) is None


def test_the_standard_library_and_installed_packages_have_their_import_names():
    assert module_name(json.__file__) == "json"
    assert module_name(json.decoder.__file__) == "json.decoder"
    assert module_name(pytest.__file__) == "pytest"
    assert module_name(timelapse.scope.__file__) == "timelapse.scope"


def test_a_file_outside_sys_path_is_named_from_sys_modules(tmp_path, monkeypatch):
    # Editable installs and plugin loaders import files from folders that are not on sys.path.
    plugin = tmp_path / "plugins" / "p1.py"
    plugin.parent.mkdir()
    plugin.write_text("")
    module = types.ModuleType("myplugins.p1")
    module.__file__ = str(plugin)
    monkeypatch.setitem(sys.modules, "myplugins.p1", module)
    assert Scope().module_names(str(plugin)) == ("myplugins.p1",)
    assert Scope(exclude=["myplugins"]).source_path(str(plugin)) is None


def test_the_program_file_is_main_and_its_import_name(tmp_path, monkeypatch):
    script = tmp_path / "app.py"
    script.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert Scope(main=str(script)).module_names(str(script)) == ("__main__", "app")
    assert Scope(exclude=["__main__"], main=str(script)).source_path(str(script)) is None
    assert Scope(exclude=["__main__"]).source_path(str(script)) == str(script)  # not the program


# -- include, exclude and the defaults ---------------------------------------------------------------

def test_include_records_the_standard_library_on_purpose():
    assert Scope(include=["json"]).source_path(json.__file__) == json.__file__
    assert Scope(include=["json"]).source_path(json.decoder.__file__) == json.decoder.__file__
    assert Scope(include=["json.*"]).source_path(json.__file__) == json.__file__
    assert Scope(include=["json.decoder"]).source_path(json.__file__) is None
    assert Scope(include=["textwrap"]).source_path(textwrap.__file__) == textwrap.__file__
    assert Scope(include=["*/json/*"]).source_path(json.decoder.__file__) == json.decoder.__file__


def test_include_records_an_installed_package(tmp_path, monkeypatch):
    site_packages = tmp_path / "venv" / "lib" / "site-packages"
    init = site_packages / "fakelib" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text("")
    monkeypatch.syspath_prepend(str(site_packages))
    assert Scope().source_path(str(init)) is None
    assert Scope(include=["fakelib.*"]).source_path(str(init)) == str(init)
    assert Scope(include=["other.*"]).source_path(str(init)) is None


def test_exclude_wins_over_include_and_the_defaults(tmp_path, monkeypatch):
    (tmp_path / "myapp").mkdir()
    db = tmp_path / "myapp" / "db.py"
    db.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert Scope().source_path(str(db)) == str(db)
    assert Scope(exclude=["myapp.*"]).source_path(str(db)) is None
    assert Scope(include=["myapp.*"], exclude=["myapp.db"]).source_path(str(db)) is None
    assert Scope(include=[str(db)], exclude=["*/myapp/*"]).source_path(str(db)) is None
    assert Scope(include=["json"], exclude=["json.*"]).source_path(json.__file__) is None


def test_relative_path_patterns_are_relative_to_the_working_directory_at_the_start(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    module = tmp_path / "src" / "m.py"
    module.write_text("")
    monkeypatch.chdir(tmp_path)
    scope = Scope(exclude=["src/*.py"])
    monkeypatch.chdir(tmp_path / "src")  # later changes of directory change nothing
    assert scope.source_path(str(module)) is None
    assert Scope(exclude=["src/*.py"]).source_path(str(module)) == str(module)
    assert Scope(exclude=["src/*.py"], cwd=str(tmp_path)).source_path(str(module)) is None


@pytest.mark.parametrize("pattern", ["timelapse", "timelapse.*", "*", "**", "*/timelapse/*", "scope.py"])
def test_timelapse_itself_is_never_recorded(pattern):
    assert Scope(include=[pattern]).source_path(timelapse.scope.__file__) is None


def test_a_file_is_decided_once(tmp_path, monkeypatch):
    (tmp_path / "myapp").mkdir()
    db = tmp_path / "myapp" / "db.py"
    db.write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    scope = Scope(exclude=["myapp.*"])
    decided = []
    decide = scope._decide
    monkeypatch.setattr(scope, "_decide", lambda filename: decided.append(filename) or decide(filename))
    assert scope.source_path(str(db)) is None
    monkeypatch.setattr(sys, "path", [])  # no module name now: the cached decision stands
    for _ in range(3):
        assert scope.source_path(str(db)) is None
    assert decided == [str(db)]


def test_without_module_patterns_no_module_name_is_worked_out(tmp_path, monkeypatch):
    script = tmp_path / "app.py"
    script.write_text("")
    monkeypatch.setattr(timelapse.scope._ModuleNames, "name_of", lambda *a: pytest.fail("named"))
    assert Scope(exclude=["*/other/*"]).source_path(str(script)) == str(script)


# -- end to end, through the command line ------------------------------------------------------------

@pytest.fixture
def app(tmp_path) -> Path:
    """A copy of tests/programs/scope_app (main.py, helpers.py, the package shop)."""
    return Path(shutil.copytree(APP, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__")))


def record_app(app: Path, *options: str, cwd: Path | None = None, env: dict | None = None):
    """Record app/main.py; the trace's calls as Counter of (function, file relative to app or the
    file's name)."""
    out = app.parent / "trace"
    result = run_timelapse(["record", "-q", "-o", str(out), *options, str(app / "main.py")],
                           cwd=cwd or app, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['a', 'bb', 'ccc'] 7 {\"total\": 7} hello [...] " + \
        ("42" if env and "PYTHONPATH" in env else "None") + "\n"
    trace = checked_trace(out)
    shutil.rmtree(out)

    def where(path: str) -> str:
        return os.path.relpath(path, app) if path.startswith(str(app) + os.sep) else path

    return Counter((c.function, where(c.path)) for c in trace.calls())


OWN = {("main", "main.py"), ("by_length", "main.py"), ("sort_words", "helpers.py"),
       ("total", "shop/orders.py"), ("migrate", "shop/migrations/m0001.py")}


def functions(calls: Counter) -> set:
    return {call for call in calls if not call[0].startswith("<")}


def test_by_default_the_programs_own_code(app):
    calls = record_app(app)
    assert functions(calls) == OWN
    assert calls[("by_length", "main.py")] == 3
    assert ("<shop.migrations.m0001>", "shop/migrations/m0001.py") in calls


@pytest.mark.parametrize("options, gone", [
    (("--exclude", "shop.orders"), {("total", "shop/orders.py")}),
    (("--exclude", "shop.*"), {("total", "shop/orders.py"), ("migrate", "shop/migrations/m0001.py")}),
    (("--exclude", "*/migrations/*"), {("migrate", "shop/migrations/m0001.py")}),
    (("--exclude", "shop/orders.py"), {("total", "shop/orders.py")}),  # relative to the cwd: app
    (("--exclude", "helpers.py", "--exclude", "*.migrations"),
     {("sort_words", "helpers.py"), ("migrate", "shop/migrations/m0001.py")}),
])
def test_exclude_by_module_name_and_by_path(app, options, gone):
    calls = record_app(app, *options)
    assert functions(calls) == OWN - gone


def test_callbacks_from_excluded_code_into_included_code_are_recorded(app):
    calls = record_app(app, "--exclude", "helpers")
    assert functions(calls) == OWN - {("sort_words", "helpers.py")}
    assert calls[("by_length", "main.py")] == 3  # sorted(key=by_length), called from helpers


@pytest.mark.parametrize("pattern", ["__main__", "main.py", "*/app/main.py"])
def test_the_script_is_main_and_its_path(app, pattern):
    calls = record_app(app, "--exclude", pattern)
    assert functions(calls) == OWN - {("main", "main.py"), ("by_length", "main.py")}


@pytest.mark.parametrize("pattern, recorded", [
    (None, {"<toplevel>", "<shop>", "<__main__>", "report"}),
    ("__main__", {"<toplevel>", "<shop>"}),
    ("shop.report", {"<toplevel>", "<shop>"}),  # -m shop.report: also its import name
    ("shop.*", {"<toplevel>"}),
])
def test_a_module_run_with_dash_m_is_main_and_keeps_its_name(app, pattern, recorded):
    (app / "shop" / "report.py").write_text("def report():\n    return 'report'\n\n\nprint(report())\n")
    out = app.parent / "trace"
    options = ["--exclude", pattern] if pattern else []
    result = run_timelapse(["record", "-q", "-o", str(out), *options, "-m", "shop.report"], cwd=app)
    assert (result.returncode, result.stdout) == (0, "report\n"), result.stderr
    assert {c.function for c in checked_trace(out).calls()} == recorded


def test_include_records_the_standard_library(app):
    calls = record_app(app, "--include", "json.*", "--include", "textwrap")
    json_init, textwrap_file = json.__file__, textwrap.__file__
    assert ("dumps", json_init) in calls and ("shorten", textwrap_file) in calls
    assert functions(calls) >= OWN
    recorded = {path for _, path in calls}
    assert recorded - {p for _, p in OWN} - {"shop/__init__.py", "shop/migrations/__init__.py"} \
        == {json_init, json.encoder.__file__, textwrap_file}


def test_include_records_an_installed_package_exclude_still_wins(app, tmp_path):
    site_packages = tmp_path / "lib" / "site-packages"
    (site_packages / "fakelib").mkdir(parents=True)
    (site_packages / "fakelib" / "__init__.py").write_text(
        "from fakelib.core import compute\n\n\ndef answer():\n    return compute(6, 7)\n")
    (site_packages / "fakelib" / "core.py").write_text("def compute(a, b):\n    return a * b\n")
    env = {**os.environ, "PYTHONPATH": str(site_packages)}
    assert functions(record_app(app, env=env)) == OWN  # installed: out by default
    calls = record_app(app, "--include", "fakelib.*", env=env)
    assert functions(calls) == OWN | {("answer", str(site_packages / "fakelib" / "__init__.py")),
                                      ("compute", str(site_packages / "fakelib" / "core.py"))}
    calls = record_app(app, "--include", "fakelib", "--exclude", "fakelib.core", env=env)
    assert functions(calls) == OWN | {("answer", str(site_packages / "fakelib" / "__init__.py"))}
    env["TIMELAPSE_INCLUDE"] = "*/site-packages/fakelib/core.py,shop"
    calls = record_app(app, env=env)
    assert functions(calls) == OWN | {("compute", str(site_packages / "fakelib" / "core.py"))}


def test_relative_path_patterns_from_the_command_line_and_from_a_pyproject(app):
    elsewhere = app / "shop" / "migrations"
    # From the command line: relative to the working directory.
    assert functions(record_app(app, "--exclude", "shop/orders.py", cwd=elsewhere)) == OWN
    # From [tool.timelapse]: relative to the file's folder, whichever the working directory.
    (app / "pyproject.toml").write_text('[tool.timelapse]\nexclude = ["shop/orders.py"]\n')
    assert functions(record_app(app, cwd=elsewhere)) == OWN - {("total", "shop/orders.py")}
    assert functions(record_app(app, "--no-config", cwd=elsewhere)) == OWN


def test_timelapse_is_never_recorded_whatever_the_patterns(app):
    calls = record_app(app, "--include", "timelapse.*", "--include", "*/timelapse/*")
    assert not any("timelapse" + os.sep in path for _, path in calls)
    assert functions(calls) == OWN


@pytest.mark.parametrize("options, env, message", [
    # Each names where the pattern came from (the option is checked as every option is: config.py).
    (["--exclude", "my-app"], {}, "timelapse: error: argument --exclude: has 'my-app': not a module "
                                  "name pattern"),
    ([], {"TIMELAPSE_INCLUDE": "shop,src/[ab"}, "timelapse: error: environment TIMELAPSE_INCLUDE has "
                                                "'src/[ab', whose [ is never closed"),
])
def test_a_bad_pattern_stops_the_command_line_with_one_line(app, options, env, message):
    out = app.parent / "trace"
    result = run_timelapse(["record", "-o", str(out), *options, str(app / "main.py")], cwd=app,
                           env={**os.environ, **env})
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""  # the program never ran
    assert sorted(os.listdir(app.parent)) == ["app"]  # nothing made


def test_a_bad_pattern_from_the_api_is_an_option_error(tmp_path):
    with pytest.raises(ValueError, match="include has 'a..b'"):
        timelapse.start(tmp_path / "t", include=["a..b"])
    assert not timelapse.is_recording()
    assert os.listdir(tmp_path) == []

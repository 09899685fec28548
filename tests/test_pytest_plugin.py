"""The pytest plugin (``pytest --timelapse``), through pytest's own ``pytester``: a small project is
written into a temporary folder and pytest is run on it, in this process (``runpytest``) or in a
new one (``runpytest_subprocess``: what is imported at startup, xdist)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

import timelapse.session
from conftest import checked_trace
from timelapse.pytest_plugin import DEFAULT_DIR, trace_folder_name

# The recorder is imported here, before any in-process run: pytester takes the modules that a run
# imports out of sys.modules again after it, and the next run would import a second copy of the
# recorder (its own per-process caches, its own "already recording" state).

pytest_plugins = ["pytester"]

#: A project with a fixture (setup and teardown), a helper, and tests of each kind and outcome.
PROJECT = {
    "conftest.py": """
        import pytest

        @pytest.fixture
        def resource():
            handle = {"open": True}
            yield handle
            handle["open"] = False

        @pytest.fixture
        def broken_setup():
            raise RuntimeError("setup breaks")

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown breaks")
    """,
    "test_project.py": """
        import unittest
        import pytest

        def add(a, b):
            return a + b

        def test_passes(resource):
            total = add(1, 2)
            assert total == 3 and resource["open"]

        def test_fails():
            total = add(1, 1)
            assert total == 3

        def test_setup_error(broken_setup):
            pass

        def test_teardown_error(broken_teardown):
            assert add(1, 1) == 2

        def test_skipped():
            pytest.skip("not today")

        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert add(0, 0) == 1

        @pytest.mark.xfail(reason="fixed since")
        def test_xpasses():
            assert add(0, 0) == 0

        @pytest.mark.parametrize("n", [1, 2])
        def test_param(n):
            assert add(n, 0) == n

        class TestGroup:
            def test_method(self):
                assert add(2, 2) == 4

        class Case(unittest.TestCase):
            def setUp(self):
                self.base = 5

            def test_unit(self):
                self.assertEqual(add(self.base, 1), 6)
    """,
}

OUTCOMES = {
    "test_project.py::test_passes": "passed",
    "test_project.py::test_fails": "failed",
    "test_project.py::test_setup_error": "error",
    "test_project.py::test_teardown_error": "error",
    "test_project.py::test_skipped": "skipped",
    "test_project.py::test_xfails": "xfailed",
    "test_project.py::test_xpasses": "xpassed",
    "test_project.py::test_param[1]": "passed",
    "test_project.py::test_param[2]": "passed",
    "test_project.py::TestGroup::test_method": "passed",
    "test_project.py::Case::test_unit": "passed",
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    for name, text in PROJECT.items():
        pytester.makepyfile(**{name.removesuffix(".py"): text})
    return pytester


def traces(folder: Path, but: Path | None = None) -> dict[str, dict]:
    """node id -> the ``test`` metadata of each trace folder in ``folder`` (all but ``but``)."""
    found = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith(".") and entry != but:
            metadata = json.loads((entry / "trace_metadata.json").read_text(encoding="utf-8"))
            assert entry.name == trace_folder_name(metadata["test"]["nodeid"])
            found[metadata["test"]["nodeid"]] = metadata["test"]
    return found


def trace_of(folder: Path, nodeid: str):
    return checked_trace(folder / trace_folder_name(nodeid))


def call_tree(call) -> list:
    """A call as [name, [children...]], for comparing structures."""
    return [call.function, [call_tree(child) for child in call.children]]


def summary_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("timelapse: ") and " in " in line]
    assert len(lines) == 1, result.outlines
    return lines[0]


# -- folder names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("nodeid", [
    "tests/test_x.py::TestA::test_b[param-1]",
    "test_x.py::test_b[a b]", "test_x.py::test_b[a_b]", "test_x.py::test_B[a_b]",
    "../outside/test_y.py::test_c", "test_ü.py::test_é[ß/..]", ".hidden::..", "::", "",
    "t.py::test_long[" + "x" * 500 + "]",
])
def test_folder_names_are_safe_and_bounded(nodeid: str) -> None:
    name = trace_folder_name(nodeid)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.~-]*", name), name
    assert len(name) <= 111
    assert name not in (".", "..") and "/" not in name
    assert trace_folder_name(nodeid) == name  # the same in every run and every worker


def test_folder_names_are_readable_and_unique() -> None:
    assert trace_folder_name("tests/test_x.py::TestA::test_b[param-1]").startswith(
        "tests_test_x.py_TestA_test_b_param-1-")
    ids = ["test_x.py::test_b[a b]", "test_x.py::test_b[a_b]", "test_x.py::test_B[a_b]",
           "test_x.py::test_b[a/b]", "test_x.py::test_b[a::b]"]
    assert len({trace_folder_name(i) for i in ids}) == len(ids)
    long_ids = [f"t.py::test_long[{'x' * 300}{i}{'y' * 300}]" for i in range(50)]
    names = {trace_folder_name(i) for i in long_ids}
    assert len(names) == 50 and all(n.startswith("t.py_test_long_xxx") for n in names)


# -- inactive unless asked -------------------------------------------------------------------------

def test_inactive_without_the_option_and_imports_none_of_the_recorder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import sys

        def test_nothing_of_the_recorder_is_imported():
            assert "timelapse.pytest_plugin" in sys.modules  # the entry point is installed
            loaded = sorted(m for m in sys.modules if m.startswith("timelapse."))
            assert loaded == ["timelapse._version", "timelapse.errors", "timelapse.pytest_plugin"]
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / DEFAULT_DIR).exists()
    assert not any(line.startswith("timelapse:") for line in result.outlines)


def test_options_are_in_help_and_a_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--timelapse" in help_text and "--timelapse-dir" in help_text
    result = pytester.runpytest("--timelapse=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--timelapse=sometimes: the value must be one of all, failed" in result.stderr.str()


# -- one trace per test ----------------------------------------------------------------------------

def test_one_trace_per_test_with_outcome_and_phases(project: pytest.Pytester) -> None:
    result = project.runpytest("--timelapse")
    result.assert_outcomes(passed=6, failed=1, errors=2, skipped=1, xfailed=1, xpassed=1)
    folder = project.path / DEFAULT_DIR
    found = traces(folder)
    assert {nodeid: test["outcome"] for nodeid, test in found.items()} == OUTCOMES
    assert summary_line(result) == f"timelapse: {len(OUTCOMES)} traces in {DEFAULT_DIR}{os.sep}"
    assert f"timelapse: recording every test into {DEFAULT_DIR}{os.sep}" in result.outlines  # header
    assert (folder / ".gitignore").read_text(encoding="utf-8").splitlines()[-1] == "*"
    for nodeid, test in found.items():
        phases = test["phases"]
        without_call = nodeid.endswith("setup_error")  # a failed setup: pytest runs no call
        assert list(phases) == (["setup", "teardown"] if without_call else ["setup", "call", "teardown"])
        assert test["duration"] == pytest.approx(sum(p["duration"] for p in phases.values()), abs=1e-5)
        assert test["recorded"] >= test["duration"] > 0
        assert test["location"][0] == "test_project.py" and test["xdist_worker"] is None
        trace = trace_of(folder, nodeid)
        assert trace.metadata["args"] == [nodeid]
        assert trace.metadata["program"] == str(project.path / "test_project.py")
        # Only the project's files: none of pytest's, pluggy's or timelapse's.
        assert {Path(p).name for p in trace.paths} <= {"test_project.py", "conftest.py"}
    assert found["test_project.py::test_teardown_error"]["phases"]["teardown"]["outcome"] == "failed"


def test_setup_call_and_teardown_are_calls_under_toplevel(project: pytest.Pytester) -> None:
    project.runpytest("--timelapse", "-k", "test_passes or unit or method or teardown_error")
    folder = project.path / DEFAULT_DIR
    # The fixture's setup, the test (calling the helper), the fixture's teardown after its yield.
    trace = trace_of(folder, "test_project.py::test_passes")
    assert call_tree(trace.calls()[0]) == [
        "<toplevel>", [["resource", []], ["test_passes", [["add", []]]], ["resource", []]]]
    values = [step.values for step in trace.steps() if step.call.function == "test_passes"]
    assert any(v.get("total") for v in values)
    teardown = trace.calls()[0].children[-1]
    assert teardown.function == "resource" and teardown.index > trace.calls()[0].children[1].index
    assert call_tree(trace_of(folder, "test_project.py::Case::test_unit").calls()[0]) == [
        "<toplevel>", [["Case.setUp", []], ["Case.test_unit", [["add", []]]]]]
    assert call_tree(trace_of(folder, "test_project.py::TestGroup::test_method").calls()[0]) == [
        "<toplevel>", [["TestGroup.test_method", [["add", []]]]]]
    # A teardown that raises: its exception is in the trace, and the test is an error.
    trace = trace_of(folder, "test_project.py::test_teardown_error")
    assert [c.function for c in trace.calls()[0].children] == [
        "broken_teardown", "test_teardown_error", "broken_teardown"]
    assert trace.metadata["test"]["outcome"] == "error"


def test_selection_x_and_the_summary_count(project: pytest.Pytester) -> None:
    result = project.runpytest("--timelapse", "-x", "test_project.py::test_passes",
                               "test_project.py::test_fails", "test_project.py::test_param")
    result.assert_outcomes(passed=1, failed=1)
    assert set(traces(project.path / DEFAULT_DIR)) == {
        "test_project.py::test_passes", "test_project.py::test_fails"}
    assert summary_line(result) == f"timelapse: 2 traces in {DEFAULT_DIR}{os.sep}"
    result = project.runpytest("--timelapse", "-k", "param")
    result.assert_outcomes(passed=2)
    assert summary_line(result) == f"timelapse: 2 traces in {DEFAULT_DIR}{os.sep}"
    assert len(traces(project.path / DEFAULT_DIR)) == 4


def test_a_bare_option_never_takes_the_next_word(project: pytest.Pytester) -> None:
    project.mkpydir("sub")
    project.path.joinpath("sub", "test_sub.py").write_text("def test_sub():\n    x = 1\n    assert x\n")
    result = project.runpytest("--timelapse", "sub")
    result.assert_outcomes(passed=1)
    assert list(traces(project.path / DEFAULT_DIR)) == ["sub/test_sub.py::test_sub"]


def test_timelapse_dir_and_a_second_run_replaces_the_traces(project: pytest.Pytester) -> None:
    project.runpytest("--timelapse", "--timelapse-dir", "out/traces", "-k", "test_passes")
    folder = project.path / "out" / "traces"
    first = traces(folder)
    assert list(first) == ["test_project.py::test_passes"]
    trace_dir = folder / trace_folder_name("test_project.py::test_passes")
    started = json.loads((trace_dir / "trace_metadata.json").read_text())["start_time"]
    result = project.runpytest("--timelapse", "--timelapse-dir", "out/traces", "-k", "test_passes")
    assert summary_line(result) == f"timelapse: 1 trace in {os.path.join('out', 'traces')}{os.sep}"
    assert json.loads((trace_dir / "trace_metadata.json").read_text())["start_time"] != started
    # Nothing of the hidden recording folders is left behind.
    assert sorted(p.name for p in folder.iterdir()) == [".gitignore", trace_dir.name]
    # The copy of test_project.py in the trace's files/ is never collected, with or without
    # --timelapse (pytest would fail on it: "import file mismatch").
    assert list(trace_dir.joinpath("files").rglob("test_project.py"))
    project.runpytest("-k", "test_passes").assert_outcomes(passed=1)
    project.runpytest_subprocess("-k", "test_passes").assert_outcomes(passed=1)


def test_failed_mode_keeps_only_failures_and_errors(project: pytest.Pytester) -> None:
    folder = project.path / DEFAULT_DIR
    project.runpytest("--timelapse", "-k", "test_passes or test_fails")  # an earlier run kept both
    assert len(traces(folder)) == 2
    result = project.runpytest("--timelapse=failed")
    kept = traces(folder)
    assert {n: t["outcome"] for n, t in kept.items()} == {
        n: o for n, o in OUTCOMES.items() if o in ("failed", "error")}
    # The passing test's trace of the earlier run is gone too: the folder says what this run found.
    assert "test_project.py::test_passes" not in kept
    assert summary_line(result) == f"timelapse: 3 traces in {DEFAULT_DIR}{os.sep}"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [".gitignore"]


def test_a_folder_that_is_not_a_trace_is_never_touched(project: pytest.Pytester) -> None:
    folder = project.path / DEFAULT_DIR
    mine = folder / trace_folder_name("test_project.py::test_passes")
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    result = project.runpytest("--timelapse=failed", "-k", "test_passes or test_fails", "-W", "default")
    result.assert_outcomes(passed=1, failed=1)  # the tests ran as they would unrecorded
    assert (mine / "notes.txt").read_text() == "mine" and sorted(os.listdir(mine)) == ["notes.txt"]
    assert summary_line(result) == (f"timelapse: 1 trace in {DEFAULT_DIR}{os.sep} "
                                    f"(1 test not fully recorded: see the warnings)")
    result.stdout.fnmatch_lines(["*PytestWarning: timelapse: test_project.py::test_passes: not "
                                 "recorded: output folder * is not a timelapse trace*"])


@pytest.fixture
def fault_in_add(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session made from now on fails inside the project's ``add`` (the recorder's own fault
    injection, ``Session(_fault=...)``): a recorder failure, as a bug of ours would be."""

    def fault(code, line):
        if code.co_name == "add":
            raise OSError("injected")

    original = timelapse.session.Session.__init__
    monkeypatch.setattr(timelapse.session.Session, "__init__",
                        lambda self, *args, **kwargs: original(self, *args, _fault=fault, **kwargs))


def test_a_recorder_failure_is_a_warning_not_a_failed_test(project: pytest.Pytester,
                                                           fault_in_add: None) -> None:
    result = project.runpytest("--timelapse", "-k", "test_passes or method", "-W", "default")
    result.assert_outcomes(passed=2)
    assert summary_line(result) == (f"timelapse: 2 traces in {DEFAULT_DIR}{os.sep} "
                                    f"(2 tests not fully recorded: see the warnings)")
    result.stdout.fnmatch_lines(["*timelapse: test_project.py::test_passes: the recorder failed, "
                                 "the trace ends there: timelapse recorder error: OSError: injected*"])
    trace = trace_of(project.path / DEFAULT_DIR, "test_project.py::test_passes")
    assert "OSError: injected" in trace.metadata["recorder_error"]
    assert trace.metadata["options"]["sources"]["on_error"] == "pytest plugin"


def test_on_error_raise_from_the_configuration_fails_the_test(project: pytest.Pytester, fault_in_add: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMELAPSE_ON_ERROR", "raise")
    result = project.runpytest("--timelapse", "-k", "test_passes")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RecorderError: timelapse recorder error: OSError: injected*"])


def test_the_configuration_applies(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makepyprojecttoml('[tool.timelapse]\nformat = "json"\nmax_items = 7\n')
    monkeypatch.setenv("TIMELAPSE_MAX_STRING", "33")
    project.runpytest("--timelapse", "-k", "test_passes")
    trace = trace_of(project.path / DEFAULT_DIR, "test_project.py::test_passes")
    assert trace.stream_file == "trace.json"
    options = trace.metadata["options"]
    assert (options["values"]["max_items"], options["values"]["max_string"]) == (7, 33)
    assert options["sources"]["max_string"] == "environment (TIMELAPSE_MAX_STRING)"
    assert options["sources"]["format"].startswith("pyproject.toml")
    assert options["sources"]["out"] == "pytest plugin"


def test_a_bad_configuration_is_a_usage_error(project: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMELAPSE_MAX_DEPTH", "0")
    result = project.runpytest("--timelapse")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "timelapse: environment TIMELAPSE_MAX_DEPTH must be a whole number" in result.stderr.str()
    monkeypatch.delenv("TIMELAPSE_MAX_DEPTH")
    # A pattern that can never match: found once, before any test runs, not once per test.
    project.makepyprojecttoml('[tool.timelapse]\ninclude = ["my-app"]\n')
    result = project.runpytest("--timelapse")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pyproject.toml): include has 'my-app'" in result.stderr.str()
    assert not list((project.path / DEFAULT_DIR).glob("test_*"))


def test_output_is_recorded_with_s_and_captured_by_pytest_without(project: pytest.Pytester) -> None:
    project.makepyfile(test_out="""
        def test_prints():
            print("hello from the test")
    """)
    folder = project.path / DEFAULT_DIR
    project.runpytest("--timelapse", "-s", "test_out.py")
    events = trace_of(folder, "test_out.py::test_prints").events_of("Event")
    assert any("hello from the test" in e["content"] for e in events)
    result = project.runpytest("--timelapse", "test_out.py")
    result.assert_outcomes(passed=1)
    assert trace_of(folder, "test_out.py::test_prints").events_of("Event") == []


def test_a_test_that_records_itself_runs_unrecorded(project: pytest.Pytester) -> None:
    project.makepyfile(test_self="""
        import timelapse
        import pytest

        def test_records(tmp_path):
            with pytest.raises(timelapse.RecorderError, match="already recording"):
                timelapse.start(tmp_path / "mine")
            assert timelapse.is_recording()
    """)
    result = project.runpytest("--timelapse", "test_self.py")
    result.assert_outcomes(passed=1)
    assert list(traces(project.path / DEFAULT_DIR)) == ["test_self.py::test_records"]


def test_an_interrupted_test_keeps_its_trace(project: pytest.Pytester) -> None:
    project.makepyfile(test_stop="""
        def test_interrupted():
            reached = "the line before"
            raise KeyboardInterrupt
    """)
    result = project.runpytest("--timelapse=failed", "test_stop.py", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    found = traces(project.path / DEFAULT_DIR)
    assert found["test_stop.py::test_interrupted"]["outcome"] == "interrupted"
    trace = trace_of(project.path / DEFAULT_DIR, "test_stop.py::test_interrupted")
    assert any(step.values.get("reached") for step in trace.steps())


def test_many_tests_share_the_code_analysis(project: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from timelapse import codeinfo

    project.makepyfile(test_many="""
        import pytest

        def helper(n):
            return n * 2

        @pytest.mark.parametrize("n", range(20))
        def test_n(n):
            assert helper(n) == 2 * n
    """)
    analysed = []

    class Counting(codeinfo.CodeFacts):
        __slots__ = ()

        def __init__(self, code):
            analysed.append(code.co_name)
            super().__init__(code)

    monkeypatch.setattr(codeinfo, "CodeFacts", Counting)
    result = project.runpytest("--timelapse", "test_many.py")
    result.assert_outcomes(passed=20)
    assert len(traces(project.path / DEFAULT_DIR)) == 20
    # 20 traces, each with its own ids for helper, and one dis pass over it in the process.
    assert analysed.count("helper") == 1 and analysed.count("test_n") == 1
    for nodeid in traces(project.path / DEFAULT_DIR):
        calls = trace_of(project.path / DEFAULT_DIR, nodeid).calls()
        assert call_tree(calls[0]) == ["<toplevel>", [["test_n", [["helper", []]]]]]


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed")
def test_xdist_workers_write_their_own_traces(project: pytest.Pytester) -> None:
    # One test's folder is not a trace: the worker that runs it says so, the controller counts it.
    mine = project.path / DEFAULT_DIR / trace_folder_name("test_project.py::test_passes")
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    result = project.runpytest_subprocess("--timelapse", "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=1, errors=2, skipped=1, xfailed=1, xpassed=1)
    found = traces(project.path / DEFAULT_DIR, but=mine)
    expected = {n: o for n, o in OUTCOMES.items() if n != "test_project.py::test_passes"}
    assert {n: t["outcome"] for n, t in found.items()} == expected
    assert {t["xdist_worker"] for t in found.values()} == {"gw0", "gw1"}
    for nodeid in found:
        trace_of(project.path / DEFAULT_DIR, nodeid)
    assert summary_line(result) == (f"timelapse: {len(expected)} traces in {DEFAULT_DIR}{os.sep} "
                                    f"(1 test not fully recorded: see the warnings)")

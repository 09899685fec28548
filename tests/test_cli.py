"""End to end: ``timelapse record`` behaves like ``python`` for the program, and refuses bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONSOLE_SCRIPT, PROGRAMS, checked_trace, run_python, run_timelapse
from timelapse.reader import stream_path


def plain(program, *args, cwd=None):
    return run_python([str(program), *args], cwd=cwd)


def timelapse(*args, cwd=None, input=None):
    return run_python(["-m", "timelapse", *args], cwd=cwd, input=input)


def test_program_sees_argv_path_and_main_as_under_python(record, tmp_path):
    args = ["--help", "-o", "x", "-m", "y"]
    expected = plain(PROGRAMS / "argv_echo.py", *args, cwd=tmp_path)
    result = record(PROGRAMS / "argv_echo.py", *args, cwd=tmp_path)
    assert result.stdout == expected.stdout
    assert result.returncode == 0
    assert result.trace.metadata["args"] == args


def test_relative_script_path_is_kept_in_argv(record):
    result = record("argv_echo.py", cwd=PROGRAMS)
    assert "argv: ['argv_echo.py']" in result.stdout
    assert f"path0: {PROGRAMS}" in result.stdout


@pytest.mark.parametrize(("how", "status"), [("normal", 0), ("int", 3), ("str", 1), ("none", 0), ("raise", 1)])
def test_exit_status_output_and_stderr_match_python(record, how, status):
    expected = plain(PROGRAMS / "exit_with.py", how)
    result = record(PROGRAMS / "exit_with.py", how, options=("-q",))
    assert expected.returncode == status
    assert (result.returncode, result.stdout, result.stderr) == (
        expected.returncode, expected.stdout, expected.stderr)
    assert result.trace.metadata["process_exit_status"] == status


def test_uncaught_exception_is_the_last_event_as_an_error(record):
    result = record(PROGRAMS / "exit_with.py", "raise")
    events = result.trace.events
    error = events[-2]["Event"]
    assert error["kind"] == 11
    assert "ValueError: boom" in error["content"]
    assert 'exit_with.py", line 13, in leave' in error["content"]


def test_summary_line_and_quiet(record):
    result = record(PROGRAMS / "recursion.py")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("timelapse: ") and " steps, " in lines[0]
    assert "calls → " in lines[0]
    quiet = record(PROGRAMS / "recursion.py", options=("-q",))
    assert quiet.stderr == ""


def test_module_mode_runs_like_python_dash_m(record):
    expected = run_python(["-m", "pkg", "a", "-q"], cwd=PROGRAMS)
    result = record("-m pkg", "a", "-q", cwd=PROGRAMS)
    assert result.stdout == expected.stdout == "pkg main ['a', '-q'] 36\n"
    names = [c.function for c in result.trace.calls()]
    assert names[:3] == ["<toplevel>", "<pkg>", "<__main__>"]
    submodule = record("-m pkg.work", "5", cwd=PROGRAMS, out=result.out)
    assert submodule.stdout == "work main ['5'] 25\n"
    assert submodule.trace.metadata["program"] == str(PROGRAMS / "pkg" / "work.py")


BAD_INPUTS = [
    ([], "missing the command"),
    (["record", "missing.py"], "no such file"),
    (["record", "."], "directory"),
    (["record", "--frobnicate", "x.py"], "unrecognized arguments"),
    (["record"], "missing the script"),
    (["record", "-m", "no_such_module_xyz"], "no module named"),
    (["record", "-m", "pkg.nothing"], "no module named"),
    (["record", "--max-depth", "zero", "x.py"], "not a whole number"),
    (["frobnicate"], "unknown command"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    result = timelapse(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "trace-out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("how", ["console script", "python -m timelapse"])
def test_module_mode_from_the_console_script_finds_the_working_directorys_modules(tmp_path, how):
    # The console script's sys.path[0] is its own folder, not the working directory.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "tool.py").write_text("import sys\nprint('tool', sys.argv[1:])\n")
    expected = run_python(["-m", "app.tool", "x"], cwd=tmp_path)
    args = ["record", "-q", "-o", "t", "-m", "app.tool", "x"]
    result = run_timelapse(args, cwd=tmp_path) if how == "console script" else timelapse(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected.stdout, "") == (0, "tool ['x']\n", "")
    checked_trace(tmp_path / "t")


def test_module_with_a_syntax_error_is_bad_input(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "broken.py").write_text("x = 1\ndef (:\n")
    result = run_timelapse(["record", "-m", "app.broken"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "line 2 of" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]


def test_bare_timelapse_is_one_line_on_stderr_but_help_is_usage_on_stdout():
    for run in (run_timelapse, lambda args: timelapse(*args)):
        bare = run([])
        assert (bare.returncode, bare.stdout, bare.stderr.count("\n")) == (2, "", 1), bare
        assert "usage: timelapse record" in bare.stderr
        helped = run(["--help"])
        assert helped.returncode == 0 and helped.stdout.startswith("usage: ") and helped.stderr == ""


def test_syntax_error_is_bad_input(tmp_path):
    (tmp_path / "broken.py").write_text("x = 1\ndef (:\n")
    result = timelapse("record", "broken.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "line 2" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.py"]


def test_unreadable_script_is_bad_input(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    script = tmp_path / "secret.py"
    script.write_text("print(1)\n")
    script.chmod(0)
    result = timelapse("record", str(script), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_a_folder_that_is_not_a_trace_is_never_overwritten(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    result = timelapse("record", "-o", str(precious), str(PROGRAMS / "recursion.py"))
    assert result.returncode == 2 and "not a timelapse trace" in result.stderr
    assert result.stderr.count("\n") == 1
    assert [p.name for p in precious.iterdir()] == ["data.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = timelapse("record", "-o", str(a_file), str(PROGRAMS / "recursion.py"))
    assert result.returncode == 2 and a_file.read_text() == "x"


def test_unwritable_output_folder_is_bad_input(tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-folder" / "out"
        (tmp_path / "file-not-folder").write_text("")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        blocked = locked / "out"
    result = timelapse("record", "-o", str(blocked), str(PROGRAMS / "recursion.py"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot write output folder" in result.stderr


def test_an_old_trace_is_replaced_whole(record, tmp_path):
    out = tmp_path / "trace"
    record(PROGRAMS / "recursion.py", out=out)
    second = record(PROGRAMS / "callbacks.py", out=out)
    assert second.trace.paths == [str(PROGRAMS / "callbacks.py")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace"]
    assert not (out / "files" / str(PROGRAMS / "recursion.py").lstrip("/")).exists()


def test_an_empty_folder_can_be_the_output(record, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert record(PROGRAMS / "recursion.py", out=out).returncode == 0


def test_sigterm_leaves_a_complete_trace_and_dies_of_sigterm(tmp_path):
    script = tmp_path / "forever.py"
    script.write_text("import time\nprint('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n    time.sleep(0.001)\n")
    out = tmp_path / "trace"
    process = subprocess.Popen(
        [sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out), str(script)],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM
    trace = checked_trace(out)
    assert trace.metadata["exit_signal"] == signal.SIGTERM
    assert len(trace.steps()) > 10


def test_ctrl_c_in_an_infinite_loop_behaves_as_under_python(tmp_path):
    script = tmp_path / "spin.py"
    script.write_text("print('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n")
    out = tmp_path / "trace"
    runs = []
    for command in ([str(script)], ["-m", "timelapse", "record", "-q", "-o", str(out), str(script)]):
        process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "ready\n"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        runs.append((process.returncode, stderr.splitlines()[-1], stderr.splitlines()[0]))
    assert runs[0] == runs[1]
    trace = checked_trace(out)
    assert "KeyboardInterrupt" in trace.events[-2]["Event"]["content"]


def test_python_dash_m_timelapse_and_the_console_script_agree(tmp_path):
    result = subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "-o", str(tmp_path / "t"),
                             str(PROGRAMS / "argv_echo.py"), "z"], capture_output=True, text=True)
    assert result.returncode == 0
    assert f"argv: ['{PROGRAMS / 'argv_echo.py'}', 'z']" in result.stdout
    assert f"path0: {PROGRAMS}" in result.stdout
    checked_trace(tmp_path / "t")


def test_version_and_help():
    assert timelapse("--version").stdout.startswith("timelapse ")
    assert "usage:" in timelapse("record", "--help").stdout


def test_a_killed_recording_leaves_the_old_trace_as_it_was(record, tmp_path):
    out = tmp_path / "trace"
    record(PROGRAMS / "recursion.py", out=out)
    stream = stream_path(out)
    before = stream.read_bytes()
    script = tmp_path / "forever.py"
    script.write_text("print('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out), str(script)],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.2)
    process.kill()
    process.wait(timeout=60)
    assert stream.read_bytes() == before
    checked_trace(out)


@pytest.mark.parametrize(("tokens", "split"), [
    (["-qo", "out", "s.py", "-o", "x"], (["-qo", "out"], "s.py", ["-o", "x"])),
    (["-oout", "s.py", "a"], (["-oout"], "s.py", ["a"])),
    (["-m", "pkg", "-q"], (["-m", "pkg"], None, ["-q"])),
    (["-qmpkg", "z"], (["-qmpkg"], None, ["z"])),
    (["--out", "d", "--quiet", "s.py", "--help"], (["--out", "d", "--quiet"], "s.py", ["--help"])),
    (["--out=d", "s.py"], (["--out=d"], "s.py", [])),
    (["--", "-s.py", "a"], ([], "-s.py", ["a"])),
])
def test_everything_after_the_program_is_the_programs(tokens, split):
    from timelapse.cli import _split_record_args

    assert _split_record_args(tokens) == split


def test_usage_help_and_errors_name_convert():
    usage = "timelapse convert TRACE_DIR --to {json,bin} [-o OUT_DIR]"
    helped = run_timelapse(["--help"])
    assert helped.returncode == 0 and usage in helped.stdout and "'timelapse convert --help'" in helped.stdout
    assert usage in run_timelapse(["record", "--help"]).stdout  # the record parser's usage is USAGE
    converting = run_timelapse(["convert", "--help"])
    assert converting.returncode == 0 and converting.stdout.startswith(f"usage: {usage}\n")
    assert "--to {json,bin}" in converting.stdout and "--out OUT_DIR" in converting.stdout
    assert "timelapse convert TRACE_DIR --to {json,bin}" in run_timelapse([]).stderr
    unknown = run_timelapse(["frobnicate"])
    assert unknown.returncode == 2 and (
        "(expected 'record', 'check', 'summary', 'view', 'convert', 'config' or 'codetracer-shim')"
        in unknown.stderr)
    summarizing = run_timelapse(["summary", "--help"])
    assert summarizing.returncode == 0 and summarizing.stdout.startswith("usage: timelapse summary TRACE_DIR")
    viewing = run_timelapse(["view", "--help"])
    assert viewing.returncode == 0 and viewing.stdout.startswith("usage: timelapse view TRACE_DIR [--port N]")
    assert "'timelapse view --help'" in helped.stdout and "timelapse view TRACE_DIR" in helped.stdout


#: Modules `timelapse record` must not import (start-up: an empty program's recording is mostly
#: imports): the other commands and the reader; pyzstd and what it brings (the zstd binding under it
#: is used directly when it is there: cbor_format.zstd_binding); for trace.json, anything of trace.bin.
NOT_IMPORTED_BY_RECORD = (
    "timelapse.reader", "timelapse.summary", "timelapse.checker", "timelapse.convert", "timelapse.viewer",
    "timelapse.codetracer", "timelapse.pytest_plugin", "pyzstd", "typing_extensions",
)
NOT_IMPORTED_BY_RECORD_JSON = ("timelapse.cbor_format", "cbor2", "backports.zstd", "compression.zstd")


@pytest.mark.parametrize("fmt", ["bin", "json"])
def test_record_imports_only_what_recording_needs(tmp_path, fmt):
    """Every module in the process once the trace is saved (an atexit handler registered before
    ``main``'s, so run after it), for both formats."""
    script = tmp_path / "empty.py"
    script.write_text("")
    listing = tmp_path / "modules.txt"
    code = (f"import atexit, sys; atexit.register(lambda: open({str(listing)!r}, 'w').write('\\n'.join(sys.modules))); "
            f"from timelapse.cli import main; "
            f"sys.exit(main(['record', '-q', '--no-config', '--format', {fmt!r}, '-o', {str(tmp_path / 't')!r}, "
            f"{str(script)!r}]))")
    result = run_python(["-c", code], cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    modules = set(listing.read_text().split("\n"))
    assert {"timelapse.session", "timelapse.monitor"} <= modules     # it did record
    unwanted = set(NOT_IMPORTED_BY_RECORD + (NOT_IMPORTED_BY_RECORD_JSON if fmt == "json" else ()))
    if fmt == "bin":
        from timelapse.cbor_format import zstd_binding

        binding = zstd_binding().__name__
        assert binding in modules
        if binding == "pyzstd":     # no binding under it here (pyzstd < 0.20): pyzstd is the one
            unwanted -= {"pyzstd", "typing_extensions"}
    assert sorted(modules & unwanted) == []
    checked_trace(tmp_path / "t")

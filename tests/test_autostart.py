"""Recording by environment (autostart.py, docs/autostart.md): ``TIMELAPSE_RECORD=DIR python ...``
through the installed ``timelapse-record.pth``, compared with the same command without the variable."""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import checked_trace

#: A program that ends as its first argument says; ``work`` is its own code, recorded.
PROGRAM = """\
import os, signal, sys, time

def work(n):
    total = 0
    for i in range(n):
        total += i
    return total

how = sys.argv[1] if len(sys.argv) > 1 else "return"
print("argv", sys.argv[1:], "path0 is mine:", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("variable seen:", os.environ.get("TIMELAPSE_RECORD"))
print("work", work(4), flush=True)
if how == "exit":
    sys.exit(3)
if how == "raise":
    raise ValueError("boom")
if how == "os_exit":
    os._exit(5)
if how == "interrupt":
    raise KeyboardInterrupt
if how == "exec":  # the new image must neither be recorded nor replace the trace
    os.execv(sys.executable, [sys.executable, "-c", "import os; print('new image sees', os.environ.get('TIMELAPSE_RECORD'))"])
if how == "sigterm":
    while True:
        work(2)
        print("waiting", flush=True)
        time.sleep(0.05)
print("done")
"""

#: How each end is recorded: process_exit_status (None: the process image was replaced).
ENDS = {"return": 0, "exit": 3, "raise": 1, "os_exit": 5, "interrupt": 128 + signal.SIGINT, "exec": None}
#: The exit status of each end, where it is not the recorded one.
RETURN_CODES = {"interrupt": -signal.SIGINT, "exec": 0}


def environment(out: Path | str | None, **more: str) -> dict:
    # Options of the caller's own stay out; TIMELAPSE_PURE (CI's pure-Python run) stays in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELAPSE_") or k == "TIMELAPSE_PURE"}
    if out is not None:
        env["TIMELAPSE_RECORD"] = str(out)
    env.update(more)
    return env


def python(args, cwd, out=None, **more) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment(out, **more),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def prog(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    return tmp_path / "prog.py"


def same(recorded, plain, *, variable_line=True):
    """Exit status, stdout and stderr as without the variable (which the program never sees)."""
    assert (recorded.returncode, recorded.stdout, recorded.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    if variable_line:
        assert "variable seen: None" in recorded.stdout


def calls(trace):
    return [c.function for c in trace.calls()]


def test_the_hook_is_installed_beside_the_package():
    [pth] = [Path(d) / "timelapse-record.pth" for d in site.getsitepackages()
             if (Path(d) / "timelapse-record.pth").exists()]
    text = pth.read_text()
    assert len(text.splitlines()) == 1 and text.startswith("import os;")
    assert "'TIMELAPSE_RECORD' in os.environ" in text


def test_unset_or_empty_the_variable_makes_nothing_and_prints_nothing(tmp_path, prog):
    plain = python(["prog.py"], tmp_path)
    assert plain.returncode == 0 and plain.stderr == "" and "work 6" in plain.stdout
    assert python(["prog.py"], tmp_path, out="").stdout == plain.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog.py"]


def test_unset_the_hook_imports_nothing(tmp_path):
    result = python(["-X", "importtime", "-c", "pass"], tmp_path)
    assert result.returncode == 0 and "import time:" in result.stderr
    assert "timelapse" not in result.stderr
    result = python(["-X", "importtime", "-c", "pass"], tmp_path, out=tmp_path / "trace")
    assert "timelapse.autostart" in result.stderr  # the test above can tell


@pytest.mark.parametrize("how", sorted(ENDS))
def test_each_end_saves_the_trace_and_the_program_is_as_under_python(tmp_path, prog, how, trace_format):
    out = tmp_path / "trace"
    plain = python(["prog.py", how], tmp_path)
    recorded = python(["prog.py", how], tmp_path, out="trace", TIMELAPSE_FORMAT=trace_format)
    same(recorded, plain)
    assert recorded.returncode == RETURN_CODES.get(how, ENDS[how])
    trace = checked_trace(out)
    assert calls(trace)[:3] == ["<toplevel>", "<__main__>", "work"]
    metadata = trace.metadata
    assert (metadata["program"], metadata["args"], metadata["process_exit_status"]) == (
        str(prog), [how], ENDS[how])
    assert metadata["options"]["sources"]["out"] == "environment (TIMELAPSE_RECORD)"
    assert (out / ("trace.bin" if trace_format == "bin" else "trace.json")).exists()
    if how in ("raise", "interrupt"):  # the trace ends with the report Python printed
        error = trace.events[-2]["Event"]
        assert error["kind"] == 11 and error["content"] == plain.stderr
    if how == "exec":
        assert recorded.stdout.endswith("new image sees None\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog.py", "trace"]  # no hidden folder left


def test_sigterm_while_running_saves_the_trace_and_dies_of_sigterm(tmp_path, prog):
    process = subprocess.Popen([sys.executable, "prog.py", "sigterm"], cwd=tmp_path, text=True,
                               env=environment("trace"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        while "waiting\n" not in lines:
            lines.append(process.stdout.readline())
            assert lines[-1], process.stderr.read()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, stderr) == (-signal.SIGTERM, "")
    trace = checked_trace(tmp_path / "trace")
    assert trace.metadata["process_exit_status"] == 128 + signal.SIGTERM
    assert trace.metadata["exit_signal"] == signal.SIGTERM
    assert calls(trace).count("work") >= 2


def test_dash_m_records_the_packages_init_and_main_module(tmp_path):
    (tmp_path / "helper.py").write_text("def work(n):\n    return n + 1\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("READY = True\n")
    (tmp_path / "app" / "__main__.py").write_text(
        "import sys\nfrom helper import work\nprint(sys.argv, work(1))\nsys.exit(4)\n")
    plain = python(["-m", "app", "x"], tmp_path)
    recorded = python(["-Im", "app", "x"], tmp_path, out="trace")  # -I: no cwd on sys.path, as -m
    assert recorded.returncode == 1 and "No module named app" in recorded.stderr  # python's own
    assert not (tmp_path / "trace").exists()
    recorded = python(["-m", "app", "x"], tmp_path, out="trace")
    same(recorded, plain, variable_line=False)
    assert plain.returncode == 4
    trace = checked_trace(tmp_path / "trace")
    assert calls(trace) == ["<toplevel>", "<app>", "<__main__>", "<helper>", "work"]
    assert trace.metadata["program"] == str(tmp_path / "app" / "__main__.py")
    assert (trace.metadata["args"], trace.metadata["process_exit_status"]) == (["x"], 4)


def test_dash_m_of_a_module_only_an_import_hook_finds(tmp_path):
    # An editable install's finder is such a hook: runpy finds the module, the recording follows.
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / "hooked.py").write_text("def work():\n    return 1\nprint(work())\n")
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(
        "import importlib.abc, importlib.util, sys\n"
        "class Finder(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'hooked':\n"
        f"            return importlib.util.spec_from_file_location(name, {str(tmp_path / 'hidden' / 'hooked.py')!r})\n"
        "sys.meta_path.append(Finder())\n")
    hooks = {"PYTHONPATH": str(tmp_path / "hooks")}
    plain = python(["-m", "hooked"], tmp_path, **hooks)
    recorded = python(["-m", "hooked"], tmp_path, out="trace", **hooks)
    same(recorded, plain, variable_line=False)
    assert plain.stdout == "1\n"
    trace = checked_trace(tmp_path / "trace")
    assert calls(trace) == ["<toplevel>", "<__main__>", "work"]
    assert trace.metadata["program"] == str(tmp_path / "hidden" / "hooked.py")


def test_dash_c_records_the_code_in_files_it_runs(tmp_path):
    (tmp_path / "helper.py").write_text("def work(n):\n    return n + 1\n")
    code = "import helper, sys; print(helper.work(2), sys.argv); raise SystemExit(2)"
    plain = python(["-c", code, "arg"], tmp_path)
    recorded = python(["-c", code, "arg"], tmp_path, out="trace")
    same(recorded, plain, variable_line=False)
    trace = checked_trace(tmp_path / "trace")
    assert calls(trace) == ["<toplevel>", "<helper>", "work"]
    assert (trace.metadata["program"], trace.metadata["args"]) == ("<string>", ["arg"])
    assert trace.metadata["process_exit_status"] == 2


CHILD_PARENT = """\
import os, subprocess, sys

def parent_work():
    return 1

parent_work()
child = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
print("child said:", child.stdout.strip(), child.returncode)
pid = os.fork()
if pid == 0:
    import child
    os._exit(0)
os.waitpid(pid, 0)
print("parent done")
"""

CHILD = """\
import os

def child_work():
    return 2

child_work()
print("child sees", os.environ.get("TIMELAPSE_RECORD"))
"""


def test_a_child_process_never_sees_the_variable_nor_touches_the_parents_trace(tmp_path):
    (tmp_path / "parent.py").write_text(CHILD_PARENT)
    (tmp_path / "child.py").write_text(CHILD)
    plain = python(["parent.py"], tmp_path)
    recorded = python(["parent.py"], tmp_path, out="trace")
    same(recorded, plain, variable_line=False)
    assert recorded.stdout.startswith("child said: child sees None 0\n")
    trace = checked_trace(tmp_path / "trace")
    assert trace.metadata["program"] == str(tmp_path / "parent.py")
    assert "parent_work" in calls(trace) and "child_work" not in calls(trace)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "child.py", "parent.py", "trace"]


@pytest.mark.parametrize("case", ["not a trace", "under a file", "bad option", "bad config"])
def test_a_recording_that_cannot_start_is_one_line_and_the_program_runs(tmp_path, prog, case):
    more = {}
    out = "trace"
    if case == "not a trace":
        (tmp_path / "trace").mkdir()
        (tmp_path / "trace" / "notes.txt").write_text("mine")
    elif case == "under a file":
        (tmp_path / "file").write_text("")
        out = "file/trace"
    elif case == "bad option":
        more["TIMELAPSE_MAX_DEPTH"] = "0"
    else:
        (tmp_path / "pyproject.toml").write_text("[tool.timelapse]\nmax_dpth = 3\n")
    plain = python(["prog.py", "exit"], tmp_path)
    recorded = python(["prog.py", "exit"], tmp_path, out=out, **more)
    assert (recorded.returncode, recorded.stdout) == (plain.returncode, plain.stdout)
    [line] = recorded.stderr.splitlines()
    assert line.startswith("timelapse: TIMELAPSE_RECORD: not recording: "), line
    if case == "not a trace":
        assert sorted(p.name for p in (tmp_path / "trace").iterdir()) == ["notes.txt"]
    else:
        assert not (tmp_path / "trace").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_program_on_stdin_is_not_recorded_and_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-"], cwd=tmp_path, env=environment("trace"), text=True,
                            input="print('hi')\n", capture_output=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "hi\n")
    assert result.stderr == ("timelapse: TIMELAPSE_RECORD: not recording: the program is typed in or "
                             "read from stdin: it has no source file to record\n")
    assert not (tmp_path / "trace").exists()


def test_timelapse_record_under_the_variable_records_once_into_its_own_folder(tmp_path, prog):
    console = Path(sys.executable).parent / "timelapse"
    for command in ([str(console)], [sys.executable, "-m", "timelapse"],
                    # through the CLI's main from a -c that the variable records: it steps aside
                    [sys.executable, "-c", "import sys; from timelapse.cli import main; sys.exit(main())"]):
        result = subprocess.run([*command, "record", "-q", "-o", "mine", "prog.py", "exit"], cwd=tmp_path,
                                env=environment("trace"), capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr) == (3, ""), command
        assert "variable seen: None" in result.stdout
        assert not (tmp_path / "trace").exists(), command
        assert calls(checked_trace(tmp_path / "mine"))[:3] == ["<toplevel>", "<__main__>", "work"]


def test_pip_is_not_recorded(tmp_path):
    result = python(["-m", "pip", "--version"], tmp_path, out="trace")
    assert result.returncode == 0 and result.stdout.startswith("pip ")
    assert not (tmp_path / "trace").exists()


def test_the_module_name_of_dash_m_from_the_original_command_line():
    from timelapse.autostart import _module_name

    assert _module_name(["python", "-m", "app", "x"], ["-m", "x"]) == "app"
    assert _module_name(["python", "-X", "dev", "-Im", "pkg.mod"], ["-m"]) == "pkg.mod"
    assert _module_name(["python", "-Bmjson.tool", "-m", "f"], ["-m", "-m", "f"]) == "json.tool"

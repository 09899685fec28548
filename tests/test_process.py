"""The process around the program, end to end through the console script: exec, fork, the uncaught
exception's report, and the stack the program sees — compared with a plain ``python`` run."""

from __future__ import annotations

import os

import pytest
from conftest import PROGRAMS, checked_trace, run_python, run_timelapse


def recorded(tmp_path, *args, options=("-q",), cwd=None, fmt="json"):
    out = tmp_path / "trace"
    result = run_timelapse(["record", "-o", str(out), "--format", fmt, *options, *args], cwd=cwd)
    return result, out


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- item 10: os.exec* ----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["execv", "execlp", "fails"])
def test_exec_saves_the_trace_first(tmp_path, how, trace_format):
    program = PROGRAMS / "sv_exec.py"
    expected = run_python([str(program), how])
    result, out = recorded(tmp_path, str(program), how, options=(), fmt=trace_format)
    assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout)
    [line] = result.stderr.splitlines()  # the summary line, once, before the exec
    assert line.startswith("timelapse: ") and " steps, " in line
    trace = checked_trace(out)
    assert "work" in [c.function for c in trace.calls()]
    assert trace.metadata["process_exit_status"] is None
    assert hidden(tmp_path) == []
    if how == "fails":  # recording ended at the exec; the program went on, unrecorded
        assert [c.function for c in trace.calls()].count("work") == 1


# -- item 15: fork --------------------------------------------------------------------------------

def test_a_forked_child_dies_of_sigterm_at_once_and_prints_no_summary(tmp_path, trace_format):
    program = PROGRAMS / "sv_fork.py"
    expected = run_python([str(program)])
    assert expected.stdout.splitlines() == [
        "child sees SIGTERM default: True", "child killed by SIGTERM: True", "at once: True"]
    result, out = recorded(tmp_path, str(program), options=(), fmt=trace_format)
    assert (result.returncode, result.stdout) == (expected.returncode, expected.stdout)
    assert len(result.stderr.splitlines()) == 1, result.stderr  # the parent's summary only
    checked_trace(out)


# -- item 19: the program's code runs as often as without recording ----------------------------------

@pytest.mark.parametrize("how", ["raise", "exit"])
def test_an_uncaught_exceptions_own_code_runs_once(tmp_path, how, trace_format):
    program = PROGRAMS / "sv_counts.py"
    expected = run_python([str(program), how])
    result, out = recorded(tmp_path, str(program), how, fmt=trace_format)
    assert (result.returncode, result.stdout, result.stderr) == (
        expected.returncode, expected.stdout, expected.stderr)
    trace = checked_trace(out)
    if how == "raise":
        error = trace.events[-2]["Event"]
        assert error["kind"] == 11 and error["content"] == expected.stderr
    else:
        assert trace.metadata["process_exit_status"] == 4


# -- item 20: the stack the program sees ----------------------------------------------------------

def _stacks(stdout):
    inspect_stack = [line.split()[1:] for line in stdout.splitlines() if line.startswith("inspect ")]
    extract = [line.split()[1:] for line in stdout.splitlines() if line.startswith("extract ")]
    return inspect_stack, extract


def test_a_scripts_stack_has_only_two_frames_of_timelapse_and_the_same_traceback(tmp_path):
    program = PROGRAMS / "sv_stack.py"
    expected = run_python([str(program), "raise"])
    result, _ = recorded(tmp_path, str(program), "raise")
    assert result.returncode == expected.returncode == 1
    assert result.stderr == expected.stderr  # the traceback, identical
    python_stack, python_extract = _stacks(expected.stdout)
    stack, extract = _stacks(result.stdout)
    assert python_stack == [["where", str(program)], ["<module>", str(program)]]
    # Below the program's <module>: timelapse's run() and main(), and the console script.
    assert stack[:2] == python_stack
    assert [name for name, _ in stack[2:]] == ["run", "main", "<module>"]
    assert extract[-1:] == python_extract and len(extract) == len(python_extract) + 3


def test_a_modules_stack_and_traceback_under_dash_m(tmp_path):
    expected = run_python(["-m", "sv_stackpkg"], cwd=PROGRAMS)
    result, _ = recorded(tmp_path, "-m", "sv_stackpkg", cwd=PROGRAMS)
    assert result.returncode == expected.returncode == 1
    # python -m shows runpy's _run_module_as_main (a private function we cannot call) and _run_code;
    # the program's frames and _run_code are the same, only _run_module_as_main's line is missing.
    lines = expected.stderr.splitlines()
    as_main = next(i for i, line in enumerate(lines) if "in _run_module_as_main" in line)
    assert result.stderr.splitlines() == lines[:as_main] + lines[as_main + 1:]
    python_stack, _ = _stacks(expected.stdout)
    stack, _ = _stacks(result.stdout)
    assert stack[:3] == python_stack[:3]  # where, <module>, _run_code
    assert os.path.basename(stack[-1][1]) == "timelapse"


# -- signals that land while the trace is saved (timelapse.process) ---------------------------------

#: A program whose os.rename (saving the trace publishes with it) sends it a signal first: the signal
#: lands inside the session's finish, a section.
_SIGNAL_WHILE_SAVING = """\
import os, signal, sys
real_rename = os.rename

def rename(src, dst):
    os.rename = real_rename
    os.kill(os.getpid(), signal.{signal})
    return real_rename(src, dst)

os.rename = rename
print("bye", flush=True)
"""


def test_a_sigterm_while_the_trace_is_saved_at_exit_kills_the_process_once_it_is_saved(tmp_path, trace_format):
    script = tmp_path / "term_at_save.py"
    script.write_text(_SIGNAL_WHILE_SAVING.format(signal="SIGTERM"))
    result, out = recorded(tmp_path, str(script), fmt=trace_format)
    assert (result.returncode, result.stdout, result.stderr) == (-15, "bye\n", "")
    checked_trace(out)
    assert hidden(tmp_path) == []


def test_a_ctrl_c_while_the_trace_is_saved_at_exit_is_dropped(tmp_path, trace_format):
    script = tmp_path / "int_at_save.py"
    script.write_text(_SIGNAL_WHILE_SAVING.format(signal="SIGINT"))
    result, out = recorded(tmp_path, str(script), fmt=trace_format)
    assert (result.returncode, result.stdout, result.stderr) == (0, "bye\n", "")
    checked_trace(out)


def test_api_a_signal_while_stop_saves_acts_after_stop_and_never_in_a_later_recording(tmp_path):
    script = tmp_path / "stop_twice.py"
    script.write_text(
        "import os, signal, sys, timelapse\n"
        "session = timelapse.start(sys.argv[1] + '-1')\n"
        "x = 1\n"
        "real_rename = os.rename\n"
        "def rename(src, dst):\n"
        "    os.rename = real_rename\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real_rename(src, dst)\n"
        "os.rename = rename\n"
        "try:\n"
        "    session.stop()\n"
        "    print('stop returned')\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt after stop, saved:', os.path.isdir(sys.argv[1] + '-1'))\n"
        "session = timelapse.start(sys.argv[1] + '-2')\n"
        "for i in range(3):\n"
        "    y = i\n"
        "session.stop()\n"
        "print('second recording done')\n")
    result = run_python([str(script), str(tmp_path / "t")])
    assert result.stdout.splitlines() == ["KeyboardInterrupt after stop, saved: True",
                                          "second recording done"], result.stderr
    assert result.returncode == 0, result.stderr
    checked_trace(tmp_path / "t-1")
    checked_trace(tmp_path / "t-2")


# -- the pieces, in process --------------------------------------------------------------------------

def test_exit_status_as_the_interpreter_computes_it():
    import enum

    from timelapse.process import exit_status

    class Code(enum.IntEnum):
        FAILED = 259

    assert [exit_status(c) for c in (None, 0, 3, 256 + 7, True, Code.FAILED, "message", 2.0)] == [
        0, 0, 3, 7, 1, 3, 1, 1]


def test_process_hooks_wrap_os_exit_and_exec_until_removed():
    from timelapse.process import ProcessHooks

    real = (os._exit, os.execv, os.execve)

    class Recording:
        finished = False

    hooks = ProcessHooks(Recording())  # type: ignore[arg-type]
    hooks.install()
    try:
        assert (os._exit.__name__, os.execv.__name__, os.execve.__name__) == ("_exit", "execv", "execve")
        assert (os._exit, os.execv, os.execve) != real
        assert os._exit.__doc__ == real[0].__doc__
    finally:
        hooks.remove()
    assert (os._exit, os.execv, os.execve) == real
    hooks.remove()  # twice: nothing more to do
    assert (os._exit, os.execv, os.execve) == real


def test_process_hooks_leave_a_wrapper_the_program_put_over_ours():
    from timelapse.process import ProcessHooks

    real = os._exit

    class Recording:
        finished = False

    hooks = ProcessHooks(Recording())  # type: ignore[arg-type]
    hooks.install()

    def programs_exit(status):
        real(status)

    os._exit = programs_exit
    try:
        hooks.remove()
        assert os._exit is programs_exit
    finally:
        os._exit = real
        hooks.remove()

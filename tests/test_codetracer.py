"""End to end: timelapse as CodeTracer's ``codetracer-python-recorder``.

Each test installs the shim (``timelapse codetracer-shim --install DIR``) and runs it by name, with
``DIR`` first on the PATH of the subprocess, with the argument lists ``ct record`` passes
(shared/trace-format.md §7): ``--out-dir DIR [--activation-path FILE] PROGRAM [ARGS]``,
``--pytest ARGS...``, ``--unittest ARGS...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import checked_trace, run_python, run_timelapse
from timelapse.codetracer import RECORDER_NAME, install_shim, is_shim, parse, shim_text
from timelapse.errors import UsageError

FOREIGN_RECORDER = "#!/bin/sh\necho 'the real codetracer-python-recorder'\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def path_env(folder: Path, **extra: str) -> dict[str, str]:
    """This environment with ``folder`` first on PATH (and no TIMELAPSE_* options of the caller's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELAPSE_") or k == "TIMELAPSE_PURE"}
    env["PATH"] = os.pathsep.join([str(folder), env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.fixture
def shim(tmp_path) -> Path:
    """The folder the shim is installed in, by the command a user runs."""
    folder = tmp_path / "ct-bin"
    result = run_timelapse(["codetracer-shim", "--install", str(folder)])
    assert result.returncode == 0, result.stderr
    assert is_shim(folder / RECORDER_NAME)
    return folder


def ct_record(shim: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``codetracer-python-recorder ARGS`` by name, as ``ct record`` does (found on PATH)."""
    return subprocess.run([RECORDER_NAME, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=path_env(shim, **env))


APP = '''\
    import sys


    def double(x):
        return x * 2


    print("doubled", double(21), sys.argv[1:])
    if len(sys.argv) > 1 and sys.argv[1].isdigit():
        sys.exit(int(sys.argv[1]))
    '''


def test_a_program_is_recorded_as_timelapse_record_does_in_trace_json(shim, tmp_path):
    app = write(tmp_path, "app.py", APP)
    out = tmp_path / "trace"
    result = ct_record(shim, "--out-dir", str(out), str(app), "--out-dir", "x", cwd=tmp_path)
    expected = run_python([str(app), "--out-dir", "x"], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, expected.stdout) == (0, "doubled 42 ['--out-dir', 'x']\n")
    assert result.stderr.startswith("timelapse: ") and len(result.stderr.splitlines()) == 1
    trace = checked_trace(out)
    assert sorted(p.name for p in out.iterdir()) == ["files", "trace.json", "trace_metadata.json",
                                                    "trace_paths.json"]
    assert [c.function for c in trace.calls()] == ["<toplevel>", "<__main__>", "double"]
    assert trace.metadata["program"] == str(app)
    assert trace.metadata["args"] == ["--out-dir", "x"]
    assert trace.metadata["process_exit_status"] == 0
    assert trace.metadata["options"]["values"]["format"] == "json"
    # The shim is not the program's code: never recorded.
    assert str(shim / RECORDER_NAME) not in json.loads((out / "trace_paths.json").read_text())


def test_the_empty_folder_ct_record_makes_first_is_written_into(shim, tmp_path):
    # ct record creates the trace folder before it starts the recorder.
    app = write(tmp_path, "app.py", APP)
    out = tmp_path / "trace-7"
    out.mkdir()
    result = ct_record(shim, "--out-dir", str(out), str(app), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checked_trace(out).metadata["process_exit_status"] == 0


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_failing_program_exits_0_with_its_status_in_the_metadata(shim, tmp_path, how):
    app = write(tmp_path, "app.py", APP if how == "exit" else 'def boom():\n    raise ValueError("boom")\n\n\nboom()\n')
    args = ["3"] if how == "exit" else []
    out = tmp_path / "trace"
    result = ct_record(shim, "--out-dir", str(out), str(app), *args, cwd=tmp_path)
    expected = run_python([str(app), *args], cwd=tmp_path)
    assert expected.returncode == (3 if how == "exit" else 1)
    # ct record fails on any non-zero exit of its recorder: the trace is saved, the status is 0.
    assert result.returncode == 0
    assert result.stdout == expected.stdout
    assert result.stderr.startswith(expected.stderr)  # the same traceback, as python prints it
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"timelapse: the program's exit status was {expected.returncode} ")
    assert "--propagate-script-exit" in last
    trace = checked_trace(out)
    assert trace.metadata["process_exit_status"] == expected.returncode
    if how == "raise":
        error = [e for e in trace.events if "Event" in e][-1]["Event"]
        assert error["kind"] == 11 and "ValueError: boom" in error["content"]
        assert 'app.py", line 2, in boom' in error["content"]


@pytest.mark.parametrize("how", ["exit", "raise", "message"])
def test_propagate_script_exit_returns_the_programs_status(shim, tmp_path, how):
    programs = {"exit": "import sys\nsys.exit(5)\n", "raise": "raise KeyError('k')\n",
                "message": "import sys\nsys.exit('bye')\n"}
    app = write(tmp_path, "app.py", programs[how])
    out = tmp_path / "trace"
    expected = run_python([str(app)], cwd=tmp_path)
    result = ct_record(shim, "--propagate-script-exit", "--out-dir", str(out), str(app), cwd=tmp_path)
    assert result.returncode == expected.returncode == {"exit": 5, "raise": 1, "message": 1}[how]
    assert result.stderr.splitlines()[:-1] == expected.stderr.splitlines()  # then the summary
    assert checked_trace(out).metadata["process_exit_status"] == expected.returncode
    # Without the flag: the same output, exit status 0.
    mapped = ct_record(shim, "--out-dir", str(out), str(app), cwd=tmp_path)
    assert mapped.returncode == 0
    assert mapped.stderr.splitlines()[:-2] == expected.stderr.splitlines()


def test_activation_path_records_from_that_files_first_code(shim, tmp_path):
    lib = write(tmp_path, "lib.py", '''\
        def double(x):
            return x * 2


        SETUP = double(21)
        ''')
    app = write(tmp_path, "app.py", '''\
        def before():
            return 1


        before()
        import lib
        print(lib.SETUP, lib.double(1))
        ''')
    out = tmp_path / "trace"
    # ct record passes the activation path made absolute.
    result = ct_record(shim, "--out-dir", str(out), "--activation-path", str(lib), str(app), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "42 2\n"), result.stderr
    trace = checked_trace(out)
    assert [c.function for c in trace.calls() if c.depth >= 1] == ["<lib>", "double"]
    assert trace.metadata["activations"] == 1
    assert trace.metadata["options"]["values"]["activation_path"] == str(lib)


TESTS = {
    "tests/test_math.py": '''\
        def add(a, b):
            return a + b


        def test_add():
            assert add(1, 2) == 3


        def test_wrong():
            assert add(1, 1) == 3
        ''',
    "tests/test_words.py": '''\
        import unittest


        def shout(word):
            return word.upper()


        class Words(unittest.TestCase):
            def test_shout(self):
                self.assertEqual(shout("a"), "A")
        ''',
}


def test_pytest_mode_is_one_trace_of_the_whole_run(shim, tmp_path):
    for name, text in TESTS.items():
        write(tmp_path, name, text)
    out = tmp_path / "trace"
    result = ct_record(shim, "--out-dir", str(out), "--pytest", "tests/", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 failed, 2 passed" in result.stdout
    assert "exit status was 1 " in result.stderr.splitlines()[-1]
    trace = checked_trace(out)
    functions = [c.function for c in trace.calls()]
    for name in ("test_add", "test_wrong", "add", "Words.test_shout", "shout"):
        assert name in functions
    assert functions.count("<toplevel>") == 1
    assert trace.metadata["program"].endswith(os.path.join("pytest", "__main__.py"))
    assert trace.metadata["args"] == ["tests/", "-q"]
    assert trace.metadata["process_exit_status"] == 1  # pytest's: a test failed


def test_unittest_mode_records_python_dash_m_unittest(shim, tmp_path):
    write(tmp_path, "tests/test_words.py", TESTS["tests/test_words.py"])
    write(tmp_path, "tests/__init__.py", "")
    out = tmp_path / "trace"
    result = ct_record(shim, "--out-dir", str(out), "--unittest", "discover", "-s", "tests", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Ran 1 test" in result.stderr and "OK" in result.stderr
    trace = checked_trace(out)
    assert {"Words.test_shout", "shout"} <= {c.function for c in trace.calls()}
    assert trace.metadata["args"] == ["discover", "-s", "tests"]
    assert trace.metadata["process_exit_status"] == 0


@pytest.mark.parametrize(("given", "stream"), [
    ((), "trace.json"),
    (("--format", "json"), "trace.json"),          # as earlier CodeTracer versions pass it
    (("--format", "bin"), "trace.bin"),
    (("--format=binary",), "trace.bin"),            # the reference recorder's name for it
    ({"TIMELAPSE_FORMAT": "bin"}, "trace.bin"),
    ("pyproject", "trace.bin"),
])
def test_trace_json_unless_a_configuration_says_otherwise(shim, tmp_path, given, stream):
    app = write(tmp_path, "app.py", APP)
    out = tmp_path / "trace"
    env = given if isinstance(given, dict) else {}
    flags = given if isinstance(given, tuple) else ()
    if given == "pyproject":
        write(tmp_path, "pyproject.toml", '[tool.timelapse]\nformat = "bin"\n')
    result = ct_record(shim, *flags, "--out-dir", str(out), str(app), cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert (out / stream).is_file()
    assert not (out / ({"trace.json", "trace.bin"} - {stream}).pop()).exists()
    checked_trace(out)


@pytest.mark.parametrize("spelling", [["--out-dir=OUT"], ["--trace-dir", "OUT"]])
def test_other_spellings_of_the_out_dir(shim, tmp_path, spelling):
    app = write(tmp_path, "app.py", APP)
    out = tmp_path / "trace"
    args = [word.replace("OUT", str(out)) for word in spelling]
    assert ct_record(shim, *args, str(app), cwd=tmp_path).returncode == 0
    checked_trace(out)


BAD_INPUTS = [
    ([], "missing the program"),
    (["--out-dir", "OUT"], "missing the program"),
    (["--out-dir", "OUT", "--"], "missing the program"),
    (["--out-dir"], "--out-dir needs a value"),
    (["--out-dir", "OUT", "--trace-filter", "f.toml", "app.py"], "unknown option '--trace-filter'"),
    (["--out-dir", "OUT", "--format", "ctfs", "app.py"], "not a CTFS .ct container"),
    (["--out-dir", "OUT", "--format", "yaml", "app.py"], "--format must be json or bin"),
    (["--out-dir", "OUT", "missing.py"], "no such file"),
    (["--out-dir", "OUT", "--activation-path", "nope.py", "app.py"], "activation_path names no file"),
    (["--out-dir", "OUT", "--pytest", "-p", "no_such_plugin_xyz"], None),  # pytest's own error
    (["--out-dir", "NOT_A_TRACE", "app.py"], "not a timelapse trace"),
    (["--out-dir", "FILE/trace", "app.py"], "cannot write output folder"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(shim, tmp_path, args, message):
    write(tmp_path, "app.py", APP)
    write(tmp_path, "NOT_A_TRACE/notes.txt", "mine\n")
    write(tmp_path, "FILE", "a file\n")
    out = tmp_path / "OUT"
    args = [a.replace("OUT", str(out)) if a == "OUT" else a for a in args]
    result = ct_record(shim, *args, cwd=tmp_path)
    if message is None:
        # Not bad input of ours: pytest ran (recorded) and refused its own arguments. The trace
        # is kept and the status is 0, as for any program that fails.
        assert result.returncode == 0, result.stderr
        assert checked_trace(out).metadata["process_exit_status"] != 0
        return
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("timelapse: error: ") and message in result.stderr
    assert not out.exists()
    assert (tmp_path / "NOT_A_TRACE" / "notes.txt").read_text() == "mine\n"


def test_a_trace_that_could_not_be_saved_is_exit_1(shim, tmp_path):
    # The program fills the output folder with its own files: timelapse never overwrites them, so
    # there is no trace to import, and ct record must fail whatever the program's status.
    out = tmp_path / "trace"
    app = write(tmp_path, "app.py", f'''\
        import os
        os.makedirs({str(out)!r})
        with open(os.path.join({str(out)!r}, "mine.txt"), "w") as f:
            f.write("mine")
        print("done")
        ''')
    result = ct_record(shim, "--out-dir", str(out), str(app), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == "done\n"
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("timelapse: error: output folder")
    assert lines[-1] == f"timelapse: error: no trace was saved in {out}; exit status 1"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_an_old_trace_in_the_out_dir_does_not_count_as_saved(shim, tmp_path):
    app = write(tmp_path, "app.py", APP)
    out = tmp_path / "trace"
    assert ct_record(shim, "--out-dir", str(out), str(app), cwd=tmp_path).returncode == 0
    before = (out / "trace_metadata.json").read_text()
    again = ct_record(shim, "--out-dir", str(out), str(app), cwd=tmp_path)
    assert again.returncode == 0
    assert (out / "trace_metadata.json").read_text() != before  # a new trace (new start time)
    checked_trace(out)


def test_the_programs_stack_below_it_is_the_shims_and_timelapses(shim, tmp_path):
    app = write(tmp_path, "app.py", '''\
        import inspect
        print([(f.function, f.filename.rsplit("/", 1)[-1]) for f in inspect.stack()])
        ''')
    result = ct_record(shim, "--out-dir", str(tmp_path / "trace"), str(app), cwd=tmp_path)
    assert result.stdout == str([("<module>", "app.py"), ("run", "runner.py"), ("main", "cli.py"),
                                 ("main", "codetracer.py"), ("<module>", RECORDER_NAME)]) + "\n"


def test_help_and_version(shim, tmp_path):
    helped = ct_record(shim, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--pytest" in helped.stdout and "--out-dir DIR" in helped.stdout
    version = ct_record(shim, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith(f"{RECORDER_NAME} (timelapse ")


# -- what the command line stands for ---------------------------------------------------------------

@pytest.mark.parametrize(("argv", "record_args"), [
    (["--out-dir", "D", "app.py"], ["record", "-o", "D", "--", "app.py"]),
    (["--out-dir", "D", "--activation-path", "F", "app.py", "-m", "x"],
     ["record", "-o", "D", "--activation-path", "F", "--", "app.py", "-m", "x"]),
    (["--out-dir", "D", "--pytest", "tests/", "-q", "--out-dir", "E"],
     ["record", "-o", "D", "-m", "pytest", "tests/", "-q", "--out-dir", "E"]),
    (["--out-dir", "D", "--unittest", "discover", "-s", "tests"],
     ["record", "-o", "D", "-m", "unittest", "discover", "-s", "tests"]),
    (["--out-dir", "D", "--pytest"], ["record", "-o", "D", "-m", "pytest"]),
    (["--format", "json", "--trace-dir=D", "--", "-odd.py"], ["record", "--format", "json", "-o", "D", "--", "-odd.py"]),
])
def test_the_command_line_is_timelapse_record(argv, record_args):
    assert parse(argv).record_args == record_args


def test_propagate_script_exit_is_read():
    assert parse(["--propagate-script-exit", "app.py"]).propagate_exit
    assert not parse(["--propagate-script-exit", "--no-propagate-script-exit", "app.py"]).propagate_exit
    with pytest.raises(UsageError, match="unknown option '-x'"):
        parse(["-x", "app.py"])


# -- the shim ---------------------------------------------------------------------------------------

def shim_command(*args: str) -> subprocess.CompletedProcess:
    return run_timelapse(["codetracer-shim", *args])


def test_the_installer_never_replaces_a_real_recorder_without_force(tmp_path):
    folder = tmp_path / "bin"
    real = write(folder, RECORDER_NAME, FOREIGN_RECORDER)
    real.chmod(0o755)
    refused = shim_command("--install", str(folder))
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1
    assert "is not timelapse's shim" in refused.stderr and "--force" in refused.stderr
    assert real.read_text() == FOREIGN_RECORDER
    assert shim_command("--uninstall", str(folder)).returncode == 2
    assert real.read_text() == FOREIGN_RECORDER
    forced = shim_command("--install", str(folder), "--force")
    assert forced.returncode == 0, forced.stderr
    assert is_shim(real) and os.access(real, os.X_OK)
    assert sorted(p.name for p in folder.iterdir()) == [RECORDER_NAME]  # no temporary file left


def test_a_link_to_a_real_recorder_is_not_followed(tmp_path):
    real = write(tmp_path / "venv" / "bin", RECORDER_NAME, FOREIGN_RECORDER)
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / RECORDER_NAME).symlink_to(real)
    assert shim_command("--install", str(folder)).returncode == 2
    assert shim_command("--install", str(folder), "--force").returncode == 0
    assert not (folder / RECORDER_NAME).is_symlink() and is_shim(folder / RECORDER_NAME)
    assert real.read_text() == FOREIGN_RECORDER


def test_install_again_updates_the_shim_and_uninstall_removes_only_it(tmp_path):
    folder = tmp_path / "made" / "bin"  # made if need be
    first = shim_command("--install", str(folder))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith(f"wrote {folder / RECORDER_NAME} (timelapse ")
    assert "is not on PATH" in first.stdout
    (folder / "other-tool").write_text("keep me")
    assert shim_command("--install", str(folder)).returncode == 0  # ours: replaced, no --force
    removed = shim_command("--uninstall", str(folder))
    assert (removed.returncode, removed.stdout) == (0, f"removed {folder / RECORDER_NAME}\n")
    assert sorted(p.name for p in folder.iterdir()) == ["other-tool"]
    nothing = shim_command("--uninstall", str(folder))
    assert nothing.returncode == 0 and "nothing to remove" in nothing.stdout


@pytest.mark.parametrize(("args", "message"), [
    ([], "one of the arguments --install --uninstall is required"),
    (["--install", "a", "--uninstall", "b"], "not allowed with argument"),
    (["--uninstall", "b", "--force"], "--force goes with --install"),
])
def test_installer_bad_input_is_one_line_and_exit_2(args, message):
    result = shim_command(*args)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_the_installer_says_what_ct_record_would_run(tmp_path):
    folder = tmp_path / "bin"
    first = run_timelapse(["codetracer-shim", "--install", str(folder)], env=path_env(folder))
    assert f"{folder} comes first on PATH" in first.stdout
    real_folder = tmp_path / "venv" / "bin"
    write(real_folder, RECORDER_NAME, FOREIGN_RECORDER).chmod(0o755)
    shadowed = run_timelapse(["codetracer-shim", "--install", str(folder)],
                             env=path_env(real_folder, PATH=os.pathsep.join([str(real_folder), str(folder)])))
    assert f"ct record would run {real_folder / RECORDER_NAME}" in shadowed.stdout
    assert f"export PATH={folder}:" in shadowed.stdout


def test_a_shim_for_an_interpreter_whose_path_has_a_space_runs(tmp_path):
    # No shebang line can name it: /bin/sh starts it instead.
    # The environment that has timelapse, seen through a folder whose name has a space.
    (tmp_path / "my env").symlink_to(sys.prefix)
    spaced = tmp_path / "my env" / os.path.relpath(sys.executable, sys.prefix)
    assert shim_text(str(spaced)).startswith("#!/bin/sh\n")
    folder = tmp_path / "bin"
    install_shim(folder, python=str(spaced))
    app = write(tmp_path, "app.py", APP)
    result = ct_record(folder, "--out-dir", str(tmp_path / "trace"), str(app), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "doubled 42 []\n"), result.stderr
    checked_trace(tmp_path / "trace")

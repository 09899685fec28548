"""Child processes (timelapse.children, docs/children.md): with ``--children`` (and by default under
TIMELAPSE_RECORD) every Python child records itself into DIR/children/<pid>-<n>/, a complete trace
naming its parent, listed in its parent's metadata with its command line and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FORMATS, PROGRAMS, checked_trace, run_timelapse

from timelapse import children


def _record(tmp_path: Path, program: str, *args: str, options: tuple[str, ...] = ("--children",),
            trace_format: str = "json") -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "trace"
    done = run_timelapse(["record", "--format", trace_format, *options, "-o", str(out),
                          str(PROGRAMS / program), *args], cwd=tmp_path)
    return done, out


def _record_text(tmp_path: Path, text: str) -> Path:
    """Record the program ``text`` with --children; its trace folder."""
    script = tmp_path / "program.py"
    script.write_text(text)
    out = tmp_path / "trace"
    done = run_timelapse(["record", "--children", "-o", str(out), str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return out


def _metadata(folder: Path) -> dict:
    return json.loads((folder / "trace_metadata.json").read_text(encoding="utf-8"))


def _functions(folder: Path) -> set[str]:
    return {call.function for call in checked_trace(folder).calls()}


def _no_leftovers(tmp_path: Path) -> None:
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not hidden, hidden  # no staging folder, no hidden recording folder


@pytest.mark.parametrize("trace_format", FORMATS)
def test_every_kind_of_child_records_a_trace_of_its_own(tmp_path, trace_format):
    done, out = _record(tmp_path, "children_every_kind.py", trace_format=trace_format)
    plain = subprocess.run([sys.executable, str(PROGRAMS / "children_every_kind.py")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout     # the program's output is its own, children's included
    assert "6 child processes" in done.stderr
    parent = _metadata(out)
    listing = parent["children"]
    assert [(c["start"], c["exit_status"], c["state"]) for c in listing] == [
        ("exec", 0, "saved"),    # python -c
        ("exec", 3, "saved"),    # children_leaf.py 7
        ("fork", 0, "saved"),    # multiprocessing fork
        ("exec", 0, "saved"),    # multiprocessing spawn
        ("fork", 0, "saved"),    # multiprocessing forkserver: forked by the (unrecorded) fork server
        ("fork", 5, "saved"),    # os.fork, os._exit(5)
    ]
    assert listing[0]["command"][1:] == ["-c", "print('dash c', sum(range(5)))"]
    assert listing[1]["command"][1:] == [str(PROGRAMS / "children_leaf.py"), "7"]
    assert "--multiprocessing-fork" in listing[3]["command"]
    assert sorted(p.name for p in (out / "children").iterdir()) == sorted(
        os.path.basename(c["trace"]) for c in listing)
    parents = set()
    for entry in listing:
        folder = out / entry["trace"]
        child = _metadata(folder)
        assert child["parent"]["trace"] == "../.."
        parents.add(child["parent"]["pid"])
        assert child["parent"]["pid"] != entry["pid"]
        assert child["process_exit_status"] == entry["exit_status"]
        assert child["children"] == []
        assert (folder / ("trace.bin" if trace_format == "bin" else "trace.json")).exists()
    assert len(parents) == 1       # the recorded program's process, even for the fork server's
    assert "double" in _functions(out / listing[1]["trace"])
    for worker in (2, 3, 4, 5):   # every multiprocessing child and the os.fork child ran child_main
        assert {"child_main", "square"} <= _functions(out / listing[worker]["trace"]), worker
    assert "child_main" not in _functions(out)     # the parent's trace holds the parent's work
    _no_leftovers(tmp_path)


def test_without_the_option_children_are_not_recorded(tmp_path):
    done, out = _record(tmp_path, "children_every_kind.py", options=())
    assert done.returncode == 0, done.stderr
    assert not (out / "children").exists()
    assert "children" not in _metadata(out)
    assert "child process" not in done.stderr
    checked_trace(out)
    _no_leftovers(tmp_path)


def test_pool_workers_are_children(tmp_path):
    done, out = _record(tmp_path, "children_pool.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0, 1, 8, 27, 64, 125]\n"
    listing = _metadata(out)["children"]
    assert len(listing) == 2 and all(c["start"] == "fork" and c["state"] == "saved" for c in listing)
    worked = [c for c in listing if "cube" in _functions(out / c["trace"])]
    assert worked, listing


def test_grandchildren_and_exec(tmp_path):
    done, out = _record(tmp_path, "children_nested.py")
    assert done.returncode == 0, done.stderr
    root = _metadata(out)["children"]
    # os.execv: the new image is the same pid's next trace; its parent is the process's parent.
    assert [c["command"][2:] for c in root] == [["child"], ["exec"], ["grandchild"]]
    pid = root[1]["pid"]
    assert root[2]["pid"] == pid
    assert [os.path.basename(c["trace"]) for c in root[1:]] == [f"{pid}-1", f"{pid}-2"]
    assert root[1]["exit_status"] is None and root[2]["exit_status"] == 0   # exec: no exit status
    child = _metadata(out / root[0]["trace"])
    assert [c["command"][2:] for c in child["children"]] == [["grandchild"]]
    grandchild = child["children"][0]
    assert grandchild["trace"].startswith("../")       # flat: beside its parent's folder
    assert _metadata(out / "children" / os.path.basename(grandchild["trace"]))["parent"]["trace"] == (
        "../" + os.path.basename(root[0]["trace"]))
    for folder in (out / "children").iterdir():
        checked_trace(folder)
    assert len(list((out / "children").iterdir())) == 4
    _no_leftovers(tmp_path)


def test_a_child_that_outlives_its_parent_still_lands_in_the_folder(tmp_path):
    go = tmp_path / "go"
    done, out = _record(tmp_path, "children_outlive.py", str(go))
    assert done.returncode == 0, done.stderr
    late_pid, killed_pid = (int(word) for word in done.stdout.split()[2::3])
    listing = {c["pid"]: c for c in _metadata(out)["children"]}
    assert listing[late_pid]["state"] == "running" and listing[late_pid]["exit_status"] is None
    assert listing[killed_pid]["state"] == "lost" and listing[killed_pid]["exit_status"] is None
    go.touch()
    late = out / "children" / f"{late_pid}-1"
    deadline = time.monotonic() + 60
    while not (late.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())):
        assert time.monotonic() < deadline, "the late child never published its trace"
        time.sleep(0.05)
    checked_trace(late)
    assert _metadata(late)["process_exit_status"] == 4
    # The late child wrote its ending into its parent's listing.
    listing = {c["pid"]: c for c in _metadata(out)["children"]}
    assert listing[late_pid]["state"] == "saved" and listing[late_pid]["exit_status"] == 4
    assert not (out / "children" / f"{killed_pid}-1").exists()
    checked_trace(out)


def test_a_new_recording_replaces_the_old_children(tmp_path):
    done, out = _record(tmp_path, "children_nested.py")
    assert done.returncode == 0, done.stderr
    done, out = _record(tmp_path, "children_pool.py")
    assert done.returncode == 0, done.stderr
    assert len(list((out / "children").iterdir())) == 2 == len(_metadata(out)["children"])


def test_timelapse_record_variable_records_children_by_default(tmp_path):
    env = dict(os.environ, TIMELAPSE_RECORD=str(tmp_path / "env-trace"))
    env.pop("TIMELAPSE_CHILDREN", None)
    program = PROGRAMS / "children_nested.py"
    done = subprocess.run([sys.executable, str(program)], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "env-trace"
    assert len(_metadata(out)["children"]) == 3
    assert len(list((out / "children").iterdir())) == 4
    env["TIMELAPSE_CHILDREN"] = "0"
    done = subprocess.run([sys.executable, str(program)], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (out / "children").exists() and "children" not in _metadata(out)


def test_the_variable_is_gone_once_the_recording_ends(tmp_path):
    script = tmp_path / "api.py"
    script.write_text(
        "import os, subprocess, sys, timelapse\n"
        f"with timelapse.record({str(tmp_path / 'api-trace')!r}, children=True):\n"
        "    print('inside', 'TIMELAPSE_PARENT' in os.environ)\n"
        "    subprocess.run([sys.executable, '-c', 'pass'])\n"
        "print('after', 'TIMELAPSE_PARENT' in os.environ)\n"
        "subprocess.run([sys.executable, '-c', 'pass'])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "inside True\nafter False\n"
    out = tmp_path / "api-trace"
    assert len(_metadata(out)["children"]) == 1
    assert len(list((out / "children").iterdir())) == 1


def test_multiprocessing_helpers_are_recognised():
    assert children.helper([sys.executable, "-c", "from multiprocessing.resource_tracker import main;main(5)"]) == "resource tracker"
    assert children.helper([sys.executable, "-B", "-c", "from multiprocessing.forkserver import main; main(1)"]) == "fork server"
    assert children.helper([sys.executable, "-c", "print(1)"]) is None
    assert children.helper([sys.executable, "app.py"]) is None


def test_a_child_that_starts_after_its_parent_ended_still_lands_in_the_folder(tmp_path):
    # The shell is no Python process: the Python it becomes a moment later joins a family whose
    # last member has left (the staging folder removed), and publishes into the root's folder.
    out = _record_text(tmp_path, (
        "import subprocess, sys\n"
        "subprocess.Popen(['sh', '-c', 'sleep 0.5; exec \"$0\" -c \"print(42)\"', sys.executable],\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"))
    assert _metadata(out)["children"] == []
    _wait_until_settled(tmp_path, out, 1)
    [late] = (out / "children").iterdir()
    checked_trace(late)
    [entry] = _metadata(out)["children"]
    assert entry["state"] == "saved" and entry["exit_status"] == 0 and entry["command"][-1] == "print(42)"


def test_a_terminated_child_is_saved_and_a_module_child_recorded(tmp_path):
    done, out = _record(tmp_path, "children_signals.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "terminated -15\nleaf 4\nmodule exit 3\n"
    terminated, module = _metadata(out)["children"]
    assert (terminated["state"], terminated["exit_signal"], terminated["exit_status"]) == ("saved", 15, 143)
    assert (module["state"], module["exit_status"]) == ("saved", 3)
    assert _metadata(out / module["trace"])["program"] == str(PROGRAMS / "children_leaf.py")
    assert "double" in _functions(out / module["trace"])
    checked_trace(out / terminated["trace"])


def _wait_until_settled(tmp_path: Path, out: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(list((out / "children").glob("*"))) < count or any(
            p.name.startswith(".") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline, "the late children never published their traces"
        time.sleep(0.05)


def test_late_children_add_to_the_list_and_never_replace_it(tmp_path):
    out = _record_text(tmp_path, (
        "import subprocess, sys\n"
        "for _ in range(2):\n"
        "    subprocess.run([sys.executable, '-c', 'pass'])\n"
        "for _ in range(3):\n"
        "    subprocess.Popen(['sh', '-c', 'sleep 0.3; exec \"$0\" -c pass', sys.executable])\n"))
    _wait_until_settled(tmp_path, out, 5)
    listing = _metadata(out)["children"]
    assert len(listing) == 5 and all(c["state"] == "saved" for c in listing), listing
    assert sorted(os.path.basename(c["trace"]) for c in listing) == sorted(
        p.name for p in (out / "children").iterdir())


def test_a_late_child_of_an_old_run_does_not_land_in_a_new_one(tmp_path):
    old = tmp_path / "old.py"
    old.write_text("import subprocess, sys\n"
                   "subprocess.Popen(['sh', '-c', 'sleep 1.5; exec \"$0\" -c pass', sys.executable])\n")
    new = tmp_path / "new.py"
    new.write_text("import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'])\n")
    out = tmp_path / "trace"
    assert run_timelapse(["record", "--children", "-o", str(out), str(old)], cwd=tmp_path).returncode == 0
    assert run_timelapse(["record", "--children", "-o", str(out), str(new)], cwd=tmp_path).returncode == 0
    time.sleep(3)   # the old run's late child has started and ended by now
    [only] = _metadata(out)["children"]
    assert only["command"][-1] == "pass" and only["start"] == "exec"
    assert [p.name for p in (out / "children").iterdir()] == [os.path.basename(only["trace"])]


def test_preexec_fn_children_are_recorded_once_as_the_parents(tmp_path):
    script = tmp_path / "preexec.py"
    script.write_text(
        "import os, subprocess, sys\n"
        "subprocess.run(['/bin/true'], preexec_fn=lambda: None)\n"
        "subprocess.run([sys.executable, '-c', 'pass'], preexec_fn=os.setpgrp)\n")
    done, out = _record(tmp_path, str(script))
    assert done.returncode == 0, done.stderr
    [child] = _metadata(out)["children"]
    assert child["start"] == "exec" and child["state"] == "saved"
    assert os.path.basename(child["trace"]).endswith("-1")


def test_command_lines_are_redacted(tmp_path):
    script = tmp_path / "secret.py"
    script.write_text("import subprocess, sys\n"
                      "subprocess.run([sys.executable, '-c', 'pass', '--token=SECRET123abc'])\n")
    out = tmp_path / "trace"
    done = run_timelapse(["record", "--children", "-o", str(out), str(script), "--api-key=ROOTSECRET9"],
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [child] = _metadata(out)["children"]
    assert "SECRET123abc" not in json.dumps(child)
    assert "ROOTSECRET9" not in (out / child["trace"] / "trace_metadata.json").read_text()


def test_a_fork_child_under_the_variable_that_returns_exits_0(tmp_path):
    script = tmp_path / "forkfall.py"
    script.write_text("import os\npid = os.fork()\nif pid:\n    os.waitpid(pid, 0)\n")
    env = dict(os.environ, TIMELAPSE_RECORD=str(tmp_path / "trace"))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [child] = _metadata(tmp_path / "trace")["children"]
    assert (child["start"], child["state"], child["exit_status"]) == ("fork", "saved", 0)


def test_relative_activation_path_works_in_a_child_elsewhere(tmp_path):
    script = tmp_path / "act.py"
    script.write_text("import subprocess, sys\n"
                      "def work():\n    return 1\n"
                      "work()\n"
                      "subprocess.run([sys.executable, '-c', 'pass'], cwd='/')\n")
    out = tmp_path / "trace"
    done = run_timelapse(["record", "--children", "--activation-path", "act.py", "-o", str(out), "act.py"],
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [child] = _metadata(out)["children"]
    assert child["state"] == "saved", child


def test_pool_terminate_kills_forked_workers_at_once(tmp_path):
    script = tmp_path / "term.py"
    script.write_text(
        "import multiprocessing, time\n"
        "def spin(_):\n    sum(range(10**10))\n"
        "if __name__ == '__main__':\n"
        "    pool = multiprocessing.get_context('fork').Pool(2)\n"
        "    pool.map_async(spin, range(2))\n"
        "    time.sleep(1)\n"
        "    start = time.monotonic()\n"
        "    pool.terminate()\n"
        "    print(round(time.monotonic() - start))\n")
    done, out = _record(tmp_path, str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"       # as without recording: not after the workers' long C call
    assert {c["state"] for c in _metadata(out)["children"]} == {"lost"}

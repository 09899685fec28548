"""Both trace formats record the same events: every deterministic program under tests/programs (and
the data-heavy benchmark programs) recorded as trace.json and as trace.bin decodes to equal events.

The rest of the end-to-end suite runs once per format (the ``record`` fixture is parametrized); this
file holds the two formats against each other. Programs left out differ from run to run whatever the
format (thread idents and interleavings, timing, pids): each is named with its reason.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CONSOLE_SCRIPT, PROGRAMS, checked_trace
from timelapse.jsonbytes import to_json
from timelapse.reader import iter_events

BENCHMARKS = Path(__file__).parent.parent / "benchmarks" / "programs"

SAME_EVERY_RUN = [
    "api_usage", "args_kinds", "argv_echo", "async_prog", "callbacks", "chk_definitions",
    "deep_recursion", "exceptions", "exit_with", "fault_injection", "fd_cases", "fd_flood",
    "fd_output_place", "generators", "io_big", "io_binary", "io_encoding", "io_ends", "io_fd",
    "io_input", "io_proxy_visible", "io_redirect", "io_streams", "process_ends", "recursion",
    "reload_prog", "sec_empty", "sec_gen_close", "sec_gen_locals", "sec_locals_exec",
    "sec_namespace", "sec_recursion_caught", "shapes", "sv_busy", "sv_chdir", "sv_counts", "sv_exec",
    "sv_stack", "values_big", "values_tricky", "secrets_app", "locals_odd",
]
#: Not compared, and why (each differs between two runs in one format too).
DIFFER_EVERY_RUN = {
    "fd_capture_driver": "output of a child process, interleaved by timing",
    "fd_lock_timeout": "a lock timeout",
    "io_threads": "thread interleaving",
    "sec_alarm": "a timer signal lands on whichever line runs",
    "sec_lifetimes": "thread idents",
    "sv_fork": "pids",
    "threads": "thread interleaving",
    "threads_repr": "thread idents",
    "view_demo": "thread interleaving (the viewer's demo has a worker thread)",
}
#: Programs that need arguments, run too long for this comparison, or drive other programs.
NOT_RUN_ALONE = {
    "fd_capture_driver", "pkg", "subdir", "sv_stackpkg", "scope_app",
}


def _record(program: Path, fmt: str, out: Path, tmp_path: Path) -> list:
    env = dict(os.environ, PYTHONHASHSEED="0")   # the same str hashes in both runs
    # Bytes, not text: some programs write bytes that are not UTF-8.
    subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "--format", fmt, "-o", str(out), str(program)],
                   cwd=tmp_path, input=b"", env=env, timeout=120, capture_output=True)
    checked_trace(out)
    return list(iter_events(out))


@pytest.mark.parametrize("program", [PROGRAMS / f"{name}.py" for name in SAME_EVERY_RUN]
                         + [BENCHMARKS / "bank.py", BENCHMARKS / "records.py"],
                         ids=lambda p: p.stem)
def test_the_two_formats_record_the_same_events(program, tmp_path):
    json_events = _record(program, "json", tmp_path / "json", tmp_path)
    bin_events = _record(program, "bin", tmp_path / "bin", tmp_path)
    assert (tmp_path / "json" / "trace.json").exists() and not (tmp_path / "json" / "trace.bin").exists()
    assert (tmp_path / "bin" / "trace.bin").exists() and not (tmp_path / "bin" / "trace.json").exists()
    # Compared as JSON bytes: == alone holds True equal to 1 and 1.0, and ignores key order.
    first = next((i for i, (a, b) in enumerate(itertools.zip_longest(json_events, bin_events))
                  if to_json(a) != to_json(b)), None)
    assert first is None, (f"event {first} differs: {json_events[first:first + 1]} in trace.json, "
                           f"{bin_events[first:first + 1]} in trace.bin")


def test_every_program_is_compared_or_named_with_its_reason():
    programs = {p.stem for p in PROGRAMS.iterdir() if p.suffix == ".py" or p.is_dir()}
    programs.discard("__pycache__")
    named = set(SAME_EVERY_RUN) | set(DIFFER_EVERY_RUN) | NOT_RUN_ALONE
    busy = {name for name in programs - named if name.startswith(("sec_", "fd_", "children_"))}
    # Programs driven by their own tests (signals, races, memory, busy loops; child processes, in
    # test_children.py in both formats): named by prefix here.
    assert programs - named - busy == set(), "a new program: compare it here or say why not"

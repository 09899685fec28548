"""Shared helpers: record a program through the real CLI and read the trace back, checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from timelapse.checker import check_folder
from timelapse.reader import Trace

PROGRAMS = Path(__file__).parent / "programs"
#: The installed console script: what users run. End-to-end tests go through it (a few tests in
#: test_cli.py go through ``python -m timelapse`` as well): the two differ in ``sys.path[0]``.
CONSOLE_SCRIPT = Path(sys.executable).parent / "timelapse"


@dataclass
class Recorded:
    returncode: int
    stdout: str
    stderr: str
    out: Path
    trace: Trace | None


def run_python(args: list[str], *, cwd: Path | None = None, input: str | None = None,
               env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a subprocess (text mode)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, input=input, capture_output=True, text=True,
        timeout=timeout, env=env if env is not None else os.environ.copy(),
    )


def run_timelapse(args: list[str], *, cwd: Path | None = None, input: str | None = None,
                  timeout: float = 120, **popen: object) -> subprocess.CompletedProcess:
    """Run the installed ``timelapse ARGS`` console script in a subprocess (text mode)."""
    assert CONSOLE_SCRIPT.exists(), f"the console script is not installed: {CONSOLE_SCRIPT}"
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], cwd=cwd, input=input, capture_output=True, text=True,
        timeout=timeout, **popen,
    )


#: Paths of the hand-made traces (they never exist: the checker and reader must not need them).
HAND_MADE_PROG = "/nonexistent/prog/main.py"
HAND_MADE_LIB = "/nonexistent/prog/lib.py"


def opening_events(program: str = HAND_MADE_PROG) -> list[dict]:
    """The first events of a hand-made trace: the program's Path, the <toplevel> Function and its
    Call, then the None Type (TypeId 0, as the format requires) and the int Type (TypeId 1)."""
    return [
        {"Path": program},
        {"Function": {"path_id": 0, "line": 1, "name": "<toplevel>"}},
        {"Call": {"function_id": 0, "args": []}},
        {"Type": {"kind": 30, "lang_type": "None", "specific_info": {"kind": "None"}}},
        {"Type": {"kind": 7, "lang_type": "int", "specific_info": {"kind": "None"}}},
    ]


def write_trace_folder(folder: Path, events: list, *, metadata: dict, paths: list | None = None,
                       stream: bool = True) -> Path:
    """Write a trace folder by hand; ``trace_paths.json`` defaults to the Path events."""
    folder.mkdir(parents=True, exist_ok=True)
    if paths is None:
        paths = [e["Path"] for e in events if isinstance(e, dict) and "Path" in e]
    if stream:
        (folder / "trace.json").write_text(json.dumps(events), encoding="utf-8")
    (folder / "trace_paths.json").write_text(json.dumps(paths), encoding="utf-8")
    (folder / "trace_metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return folder


def checked_trace(out: Path) -> Trace:
    """Load a trace folder, failing the test if the checker finds any violation."""
    violations = check_folder(out)
    assert not violations, "\n".join(str(v) for v in violations[:20])
    return Trace.load(out)


#: The trace formats every end-to-end test records in (the ``record`` fixture is parametrized).
FORMATS = ("json", "bin")


@pytest.fixture(params=FORMATS)
def trace_format(request) -> str:
    """The format the ``record`` fixture records in: each end-to-end test runs once per format."""
    return request.param


@pytest.fixture
def record(tmp_path, trace_format):
    """record(program, *args, options=[...]) -> Recorded, run through the ``timelapse`` console
    script, in the test's ``trace_format`` (unless the options name a format themselves)."""

    def _record(program: str | Path, *args: str, options: tuple[str, ...] = (), cwd: Path | None = None,
                input: str | None = None, out: Path | None = None, expect_trace: bool = True) -> Recorded:
        out = out or tmp_path / "trace"
        target = program if isinstance(program, str) and program.startswith("-m") else str(program)
        if "--format" not in options:
            options = ("--format", trace_format, *options)
        command = ["record", "-o", str(out), *options]
        command += target.split(" ", 1) if target.startswith("-m") else [target]
        result = run_timelapse([*command, *args], cwd=cwd, input=input)
        trace = checked_trace(out) if expect_trace else None
        return Recorded(result.returncode, result.stdout, result.stderr, out, trace)

    return _record


def same_as_python(record, program, *args, **kwargs):
    """Record ``program`` and check it behaved exactly as under plain python; return the result."""
    expected = run_python([str(PROGRAMS / program), *args])
    result = record(PROGRAMS / program, *args, options=("-q",), **kwargs)
    assert (result.returncode, result.stdout, result.stderr) == (
        expected.returncode, expected.stdout, expected.stderr)
    return result

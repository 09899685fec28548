"""Reading the IO Events of a recorded trace back (tests/test_iocapture.py, tests/test_fdcapture.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import checked_trace


def io_events(trace) -> list[tuple[int, int, dict, str]]:
    """(index in the stream, kind, metadata, content) of every IO Event."""
    found = []
    for index, event in enumerate(trace.events):
        if isinstance(event, dict) and "Event" in event and event["Event"]["kind"] in (0, 2, 3):
            payload = event["Event"]
            found.append((index, payload["kind"], json.loads(payload["metadata"]), payload["content"]))
    return found


def step_before(trace, index: int) -> tuple[int, int]:
    """(path_id, line) of the last Step before stream position ``index``."""
    for event in reversed(trace.events[:index]):
        if isinstance(event, dict) and "Step" in event:
            return event["Step"]["path_id"], event["Step"]["line"]
    raise AssertionError("no step before the event")


def content_of(trace, kind: int) -> str:
    return "".join(content for _i, k, _m, content in io_events(trace) if k == kind)


def line_of(program: Path, text: str) -> int:
    for number, line in enumerate(program.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {program}")


def assert_on_their_steps(trace) -> None:
    """Every IO event sits right after a Step of the line its metadata names."""
    for index, _kind, metadata, _content in io_events(trace):
        if "line" in metadata:
            assert step_before(trace, index) == (metadata["path_id"], metadata["line"]), metadata


def record_bytes(tmp_path, program: Path, *options: str) -> tuple[subprocess.CompletedProcess, object]:
    """Like the ``record`` fixture, but the output is kept as bytes (it need not be UTF-8)."""
    out = tmp_path / "trace"
    result = subprocess.run(
        [sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out), *options, str(program)],
        capture_output=True, timeout=120,
    )
    return result, checked_trace(out)

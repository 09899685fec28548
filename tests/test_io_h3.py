"""IO capture: the fd lock's timeout path, invisible proxies, bounded fd reads (issue 9, items 13, 18, 21)."""

from __future__ import annotations

import os

import pytest
from conftest import PROGRAMS, run_python

from timelapse.reader import decode_value


def test_uninstall_that_times_out_on_the_fd_lock_still_finishes_and_flushes():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout keeps a buffer
    result = run_python([str(PROGRAMS / "io_h3_lock_timeout.py")], env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["after uninstall", "buffered python output", "from fd"]


# -- item 18: the proxies look like the streams they stand for ------------------------------------


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_the_program_sees_its_streams_as_without_recording(record, options):
    program = PROGRAMS / "io_h3_proxy_visible.py"
    expected = run_python([str(program)])
    result = record(program, options=("-q", *options))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.stdout
    assert result.stdout.startswith("TextIOWrapper TextIOWrapper _io\n")


@pytest.mark.parametrize("options", [(), ("--capture-fd",)], ids=["proxies", "capture-fd"])
def test_objects_holding_the_streams_record_the_streams(record, options):
    result = record(PROGRAMS / "io_h3_proxy_visible.py", options=("-q", *options))
    trace = result.trace
    steps = [s for s in trace.steps() if s.call.function == "<__main__>"]
    values = steps[-1].values
    assert values["out"]["r"] == "<file '<stdout>' mode='w'>"
    assert trace.types[values["out"]["type_id"]]["lang_type"] == "_io.TextIOWrapper"
    assert decode_value(values["holder"], trace) == {
        "out": "<file '<stdout>' mode='w'>",
        "err": "<file '<stderr>' mode='w'>",
        "buf": "<file '<stdout>' mode='wb'>",
    }

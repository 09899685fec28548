"""IO capture: the fd lock's timeout path, invisible proxies, bounded fd reads (issue 9, items 13, 18, 21)."""

from __future__ import annotations

import os

from conftest import PROGRAMS, run_python


def test_uninstall_that_times_out_on_the_fd_lock_still_finishes_and_flushes():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout keeps a buffer
    result = run_python([str(PROGRAMS / "io_h3_lock_timeout.py")], env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["after uninstall", "buffered python output", "from fd"]

"""Tests for timelapse.interrupts: a handler that waited for a section runs when the section ends,
also when the section ends through one of its helpers (a failing callback)."""

from __future__ import annotations

import textwrap

from conftest import run_python

FAILING_CALLBACK_WITH_A_SIGNAL = textwrap.dedent("""
    import os, signal, sys
    import timelapse
    from timelapse.session import Session

    ran = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: ran.append(signum))

    def fault(code, line):
        if code.co_name == "work" and not ran and not fault.done:
            fault.done = True
            os.kill(os.getpid(), signal.SIGUSR1)   # lands inside the callback: it waits
            raise RuntimeError("injected")          # and the callback fails
    fault.done = False

    def work():
        total = 0
        for i in range(3):
            total += i
        return total

    session = Session(sys.argv[1], on_error="continue", _fault=fault)
    session.start()
    work()
    after_failure = list(ran)
    session.stop()
    print("handler ran:", after_failure, ran)
""")


def test_a_signal_that_lands_in_a_failing_callback_runs_its_handler_when_it_ends(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING_CALLBACK_WITH_A_SIGNAL)
    done = run_python([str(script), str(tmp_path / "trace")])
    assert done.returncode == 0, done.stderr
    assert "recorder error" in done.stderr and "injected" in done.stderr
    # The handler ran as the failing callback ended, before work() went on: not lost, not late.
    assert "handler ran: [10] [10]" in done.stdout, done.stdout + done.stderr

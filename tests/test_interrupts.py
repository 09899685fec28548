"""Tests for timelapse.interrupts: a handler that waited for a section runs when the section ends,
also when the section ends through one of its helpers (a failing callback)."""

from __future__ import annotations

import textwrap

from conftest import checked_trace, run_python

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


# A Ctrl-C that waited for a section (here: put in the queue by hand, as a Ctrl-C burst leaves it)
# when the process reaches the atexit handler that saves the trace: the monitoring callback at that
# handler's very start must not run it there, which ended the handler before it saved anything.
PENDING_AT_EXIT = textwrap.dedent("""
    import sys
    from timelapse.interrupts import deferral
    from timelapse.process import ProgramEnd
    from timelapse.session import Session

    session = Session(sys.argv[1])
    session.start()
    ProgramEnd(session, quiet=True).install()

    def ctrl_c():
        raise KeyboardInterrupt

    def work():
        return sum(range(3))

    work()
    deferral.pending.append(ctrl_c)
""")


def test_a_signal_waiting_at_exit_does_not_stop_the_trace_being_saved(tmp_path):
    script = tmp_path / "pending.py"
    script.write_text(PENDING_AT_EXIT)
    out = tmp_path / "trace"
    done = run_python([str(script), str(out)])
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr, done.stderr   # dropped: the process ends anyway
    checked_trace(out)


def test_a_callback_in_a_sections_own_frame_leaves_what_waits_to_the_section():
    """The rule behind it: a callback that fires in a section's own frame (its PY_START) leaves
    what waits for that section; the section runs it as its last act."""
    from timelapse.interrupts import SignalDeferral

    deferral = SignalDeferral()
    ran: list[str] = []

    def callback() -> None:
        deferral.run_pending()

    def section() -> None:
        deferral.pending.append(lambda: ran.append("handler"))
        callback()                      # as a PY_START callback would, in the section's frame
        ran.append("after the callback")
        deferral.run_pending()          # the section's last act

    deferral.add_section(section, holds_lock=False)
    deferral.add_section(callback, callback=True)
    section()
    assert ran == ["after the callback", "handler"]

"""threads.Threads: the one-stream switch protocol keeps the stream balanced, never pairs one thread's
Return with another thread's Call, and a switch that fails takes itself back (threads.py invariants)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import HAND_MADE_PROG
from hypothesis import given, settings
from hypothesis import strategies as st

from timelapse.checker import check_folder
from timelapse.threads import Threads
from timelapse.writer import TraceWriter

METADATA = {"workdir": "/", "program": HAND_MADE_PROG, "args": []}


def make(folder):
    writer = TraceWriter(folder, HAND_MADE_PROG)
    spelling = writer.format.events
    functions = []
    for line in (3, 7, 11):
        function_id = writer.function_id(0, line, f"f{line}")
        functions.append(SimpleNamespace(function_id=function_id, def_step=spelling.step(0, line)))
    return writer, Threads(writer), functions


def call(writer, threads, ident, info):
    """What the callbacks do for a Call (monitor.emit_call), without the values."""
    state = threads.by_ident.get(ident) or threads.new_state(ident)
    if state is not threads.current:
        threads.switch_to(state)
    writer.events.append(info.def_step)
    writer.events.append(writer.format.events.call(info.function_id, ()))
    state.stack.append(info)
    threads.calls += 1


def return_(writer, threads, ident):
    """What the callbacks do for a Return of the thread's innermost call."""
    state = threads.by_ident.get(ident)
    if state is None or not state.stack:
        return
    if state is not threads.current:
        threads.switch_to(state)
    writer.events.append(writer.format.events.return_event(writer.format.values.none(0)))
    state.stack.pop()


def events_so_far(writer):
    return [json.loads(e) for e in writer.events]


def check_one_stack(events):
    """Replay the stream as CodeTracer does (one call stack): every Return closes a Call of the thread
    that is current at the Return. Returns the depth above <toplevel>."""
    thread, stack = None, []
    for event in events:
        if not isinstance(event, dict):
            continue
        ((variant, payload),) = event.items()
        if variant in ("ThreadStart", "ThreadSwitch"):
            thread = payload
        elif variant == "Call":
            stack.append(thread)
        elif variant == "Return":
            assert stack, "a Return with no open call"
            assert stack.pop() == thread, "a Return paired with another thread's Call"
    return len(stack) - 1


operations = st.lists(st.tuples(st.sampled_from(["call", "return", "exit"]), st.integers(1, 3),
                                st.integers(0, 2)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_any_interleaving_keeps_the_stream_balanced_and_paired(tmp_path_factory, ops):
    folder = tmp_path_factory.mktemp("threads")
    writer, threads, functions = make(folder)
    threads.begin(1, 0)
    calls_written = 1   # <toplevel>
    for op, ident, which in ops:
        before = threads.calls
        if op == "call":
            call(writer, threads, ident, functions[which])
        elif op == "return":
            return_(writer, threads, ident)
        elif ident in threads.by_ident:
            threads.exit(threads.by_ident[ident])
        calls_written += threads.calls - before
        events = events_so_far(writer)
        # Invariant 1: open_calls is what the stream has open, and only the current thread's.
        assert check_one_stack(events) + 1 == threads.open_calls
        current = threads.current
        assert threads.open_calls == 1 + (len(current.stack) if current else 0)
        assert sum(1 for e in events if "Call" in e) == calls_written
    # The stream ends as Recorder.end_stream ends it: every open call closed, then <toplevel>.
    for _ in range(threads.open_calls):
        writer.events.append(writer.format.events.return_event(writer.format.values.none(0)))
    writer.close(METADATA)
    violations = check_folder(folder)
    assert not violations, [str(v) for v in violations]
    numbers = [e["ThreadStart"] for e in json.loads((folder / "trace.json").read_text()) if "ThreadStart" in e]
    assert numbers == sorted(numbers) == list(range(1, len(numbers) + 1))   # invariant 4


def test_a_switch_closes_the_previous_calls_and_reopens_the_next_ones(tmp_path):
    writer, threads, (f, g, h) = make(tmp_path)
    threads.begin(1, 0)
    call(writer, threads, 1, f)
    call(writer, threads, 1, g)
    call(writer, threads, 2, h)          # thread 2's first event: ThreadStart
    mark = len(writer.events)
    call(writer, threads, 1, h)          # back to thread 1: its two calls are re-opened
    spelled = events_so_far(writer)[mark:]
    variants = [next(iter(e)) if isinstance(e, dict) else e for e in spelled]
    assert variants == ["Return", "ThreadSwitch", "Step", "Call", "Step", "Call", "Step", "Call"]
    assert spelled[0]["Return"]["return_value"]["kind"] == "Raw"
    assert spelled[0]["Return"]["return_value"]["r"] == "<thread switch>"
    assert spelled[1] == {"ThreadSwitch": 1}
    assert [e["Call"]["function_id"] for e in spelled if "Call" in e] == [f.function_id, g.function_id, h.function_id]
    assert threads.switches == 2 and threads.open_calls == 4


def test_a_failing_switch_takes_itself_back(tmp_path, monkeypatch):
    writer, threads, (f, _g, _h) = make(tmp_path)
    threads.begin(1, 0)
    call(writer, threads, 1, f)
    before = list(writer.events)
    other = threads.new_state(2)

    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr(writer, "type_id", no_memory)   # the <thread switch> type cannot be made
    with pytest.raises(MemoryError):
        threads.switch_to(other)
    assert writer.events == before
    assert threads.current is threads.by_ident[1] and not other.started and threads.switches == 0


def test_the_exit_of_the_current_thread_closes_its_calls_and_leaves_no_current(tmp_path):
    writer, threads, (f, g, _h) = make(tmp_path)
    threads.begin(1, 0)
    call(writer, threads, 2, f)
    call(writer, threads, 2, g)
    mark = len(writer.events)
    threads.exit(threads.by_ident[2])
    assert events_so_far(writer)[mark:] == [{"Return": {"return_value": {"kind": "None", "type_id": 0}}}] * 2 + [
        {"ThreadExit": 2}]
    assert threads.current is None and threads.open_calls == 1 and 2 not in threads.by_ident
    call(writer, threads, 1, f)   # the next event re-opens its thread: a ThreadSwitch, nothing to close
    assert events_so_far(writer)[mark + 3] == {"ThreadSwitch": 1}


CONTENDED_CALLS = '''
import threading

def f(i):
    return i + 1

def work():
    for i in range(20000):
        f(i)

threads = [threading.Thread(target=work) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
'''


def test_no_call_is_lost_when_threads_contend_for_the_lock(record, tmp_path):
    # A callback that found the lock busy once mistook its own frames for a section holding it and
    # dropped its event: a few Calls (and their Returns) of 60,000 went missing.
    program = tmp_path / "contended.py"
    program.write_text(CONTENDED_CALLS)
    result = record(program)
    assert result.returncode == 0, result.stderr
    returns = [r for r in result.trace.events_of("Return") if r["return_value"]["kind"] == "Int"]
    assert len(returns) == 60000 + 1    # f's, and the top level's (the exit status)

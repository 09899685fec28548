"""codeinfo: facts of a code object are worked out once per process (no ``dis`` for a second
recording), ids are per trace, and the process cache keeps no code object alive."""

from __future__ import annotations

import dis
import gc
import json
import weakref
from pathlib import Path

from conftest import PROGRAMS, checked_trace

import timelapse
from timelapse import codeinfo
from timelapse.codeinfo import FUNCTION, CodeTable, cached_facts, facts_of
from timelapse.scope import Scope
from timelapse.writer import TraceWriter

SOURCE = '''\
LIMIT = 10

def work(a, *rest, key=None, **options):
    total = a
    for x in rest:
        total += x * LIMIT
    return total
'''


def compiled(tmp_path, name="mod.py"):
    path = tmp_path / name
    path.write_text(SOURCE)
    namespace: dict = {}
    exec(compile(SOURCE, str(path), "exec"), namespace)
    return namespace["work"], namespace


def count_dis(monkeypatch):
    calls = []
    real = dis.get_instructions

    def counting(code, *args, **kwargs):
        calls.append(code)
        return real(code, *args, **kwargs)

    monkeypatch.setattr(codeinfo.dis, "get_instructions", counting)
    return calls


def table(folder, program, watched):
    writer = TraceWriter(folder, program)
    return writer, CodeTable(writer, Scope(()), lambda code, kind: watched.append((code, kind)))


def test_a_second_recording_reuses_the_facts_and_has_its_own_ids(tmp_path, monkeypatch):
    work, namespace = compiled(tmp_path)
    dis_calls = count_dis(monkeypatch)
    watched: list = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_writer, first = table(tmp_path / "a", str(tmp_path / "prog.py"), watched)
    info = first.learn(work.__code__, None)
    assert dis_calls == [work.__code__]
    assert info.kind == FUNCTION and [name for name, _, _ in info.arg_vars] == ["a", "key", "rest", "options"]

    second_writer, second = table(tmp_path / "b", str(tmp_path / "prog.py"), watched)
    second_writer.variable_id("defined first")   # so this trace's variable ids differ from the first's
    second_writer.path_id("/elsewhere.py")       # and its path ids
    again = second.learn(work.__code__, None)
    assert dis_calls == [work.__code__]           # no dis for the second recording
    assert again is not info and again.quiet_lines is info.quiet_lines   # the facts are shared
    assert watched == [(work.__code__, FUNCTION)] * 2

    for writer, learned in ((first_writer, info), (second_writer, again)):
        spelling = writer.format.events
        path_id = writer.path_id(str(tmp_path / "mod.py"))
        assert learned.path_id == path_id
        assert learned.def_step == spelling.step(path_id, work.__code__.co_firstlineno)
        assert learned.var_ids["total"] == spelling.value_head(writer.variable_id("total"))
        assert learned.arg_vars[0] == ("a", spelling.arg_head(writer.variable_id("a")), False)
    assert info.path_id != again.path_id and info.var_ids["total"] != again.var_ids["total"]
    # Globals shown at a step: data it reads (LIMIT), not names it calls or its locals.
    assert [name for name, _, _ in again.global_vars] == ["LIMIT"]


def test_recording_twice_in_one_process_gives_the_same_trace_without_dis(tmp_path, monkeypatch):
    work, _ = compiled(tmp_path)

    def record_once(out):
        with timelapse.record(out, program=str(tmp_path / "mod.py"), args=[]):  # no local to show
            work(1, 2, 3)

    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "first")
    record_once(Path("trace"))      # the same argument both times: the same values in both traces
    dis_calls = count_dis(monkeypatch)
    monkeypatch.chdir(tmp_path / "second")
    record_once(Path("trace"))
    assert work.__code__ not in dis_calls and record_once.__code__ not in dis_calls
    first, second = checked_trace(tmp_path / "first" / "trace"), checked_trace(tmp_path / "second" / "trace")
    assert first.events == second.events      # the same ids: each trace defines its own from 0


def test_the_process_cache_keeps_no_code_alive(tmp_path):
    code = compile(SOURCE, str(tmp_path / "gone.py"), "exec")
    twin = compile(SOURCE, str(tmp_path / "gone.py"), "exec")
    assert code == twin and code is not twin
    before = cached_facts()
    facts = facts_of(code)
    assert facts_of(code) is facts and facts_of(twin) is not facts   # by identity, not equality
    assert cached_facts() == before + 2
    keys, alive = {id(code), id(twin)}, [weakref.ref(code), weakref.ref(twin)]
    del code, twin
    gc.collect()
    assert [ref() for ref in alive] == [None, None]     # the cache did not keep them
    assert keys.isdisjoint(codeinfo._facts)             # and their entries went with them


def test_place_of_says_where_a_step_is(tmp_path):
    work, _ = compiled(tmp_path)
    _writer, codes = table(tmp_path, str(tmp_path / "prog.py"), [])
    info = codes.learn(work.__code__, None)
    step = codes.new_step(info, 6)
    assert info.steps[6] is step
    assert codes.place_of(step) == (info.path_id, 6)
    assert codes.place_of(info.def_step) == (info.path_id, work.__code__.co_firstlineno)
    assert codes.place_of(None) is None


def test_fd_output_carries_the_place_of_the_last_step(record):
    """Output captured at the fd level is put on the step the stream is at (``place_of``)."""
    result = record(PROGRAMS / "fd_output_place.py", options=("--capture-fd",))
    trace = result.trace
    (event,) = [e for e in trace.events_of("Event") if "from fd" in e["content"]]
    metadata = json.loads(event["metadata"])
    assert metadata["source"] == "fd"
    assert trace.paths[metadata["path_id"]] == str(PROGRAMS / "fd_output_place.py")
    assert metadata["line"] in (3, 4)   # the os.write line, or the sleep right after it

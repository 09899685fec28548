"""What the viewer's page asks the server, answered from a ``TraceIndex`` (docs/view.md, "The HTTP
interface"). Each function takes the index and the request's arguments and returns a JSON-shaped dict;
bad arguments raise ``BadRequest``, things that do not exist ``NotFound``, steps not read yet
``NotReady``. No HTTP here (server.py), no reading of the stream (index.py).

Navigation follows one thread: "over" and "out" look for the next (or previous) step of the current
step's thread at a depth no deeper (over) or shallower (out) than the current one, skipping a callee of
that thread as a whole (its span holds no step of its caller's thread at the caller's depth).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from timelapse.summary import duration_of
from timelapse.viewer.index import TraceIndex, value_node

__all__ = ["BadRequest", "NotFound", "NotReady", "trace_info", "source", "step", "go", "calls",
           "call", "output", "history", "MOVES"]

#: The moves of ``go``.
MOVES = ("over", "back_over", "out", "back_out", "next_call", "prev_call")
#: The most items one request returns (calls, output items, history changes).
MAX_LIMIT = 1000
#: The most steps of a frame one history request looks at: a variable that seldom changes in a
#: frame of millions of steps would otherwise hold the server for seconds (the answer says ``cut``).
HISTORY_STEPS = 50_000


class BadRequest(Exception):
    status = 400


class NotFound(Exception):
    status = 404


class NotReady(Exception):
    """The step asked for is not read yet (the index is still being built): ask again."""

    status = 503


def trace_info(index: TraceIndex) -> dict[str, Any]:
    meta = index.metadata
    return {
        "folder": str(index.folder),
        "program": meta.get("program"),
        "args": meta.get("args", []),
        "exit_status": meta.get("process_exit_status"),
        "duration_s": duration_of(meta),
        "format": index.stream.name,
        "steps": index.steps_ready(),
        "calls": index.calls_ready(),
        "complete": index.complete,
        "failure": index.failure,
        "threads": list(index.threads) or [1],
        "paths": list(index.paths),
        "functions": [{"name": f.get("name"), "path_id": f.get("path_id"), "line": f.get("line")}
                      for f in list(index.functions)],
    }


def source(index: TraceIndex, path_id: int) -> dict[str, Any]:
    if not 0 <= path_id < len(index.paths):
        raise NotFound(f"no path {path_id}")
    copy = index.source_copy(path_id)
    text = copy.read_bytes().decode("utf-8", errors="replace") if copy is not None else None
    return {"path_id": path_id, "path": index.paths[path_id], "text": text,
            "lines_run": sorted(index.lines_run.get(path_id, ()))}


def _check_step(index: TraceIndex, i: int) -> None:
    if i < 0:
        raise NotFound(f"no step {i}")
    if i >= index.steps_ready():
        if index.complete:
            raise NotFound(f"no step {i}: the trace has {index.steps_ready()}")
        raise NotReady(f"step {i} is not read yet ({index.steps_ready()} are)")


def _check_call(index: TraceIndex, c: int) -> None:
    if not 0 <= c < index.calls_ready():
        raise NotFound(f"no call {c}")


def step(index: TraceIndex, i: int) -> dict[str, Any]:
    _check_step(index, i)
    call = index.step_call[i]
    stack = []
    frame_step, frame = i, call
    while frame >= 0:
        if frame_step >= 0:
            path_id, line = index.step_path[frame_step], index.step_line[frame_step]
        else:   # a call with no step of its own before its callee's (e.g. <toplevel> of a trace cut short)
            function = index.functions[index.call_function[frame]]
            path_id, line = function.get("path_id"), function.get("line")
        stack.append({"call": frame, "function": index.function_name(frame), "path_id": path_id,
                      "line": line, "step": frame_step})
        frame_step, frame = index.call_site[frame], index.call_parent[frame]
    stack.reverse()
    previous: dict[str, Any] = {}
    before = index.step_prev[i]
    if before >= 0:
        previous = dict(index.locals_at(before))
    local_values = [{"name": name, "value": value_node(record, index),
                     "changed": before < 0 or name not in previous or previous[name] != record}
                    for name, record in index.locals_at(i)]
    return {
        "index": i,
        "path_id": index.step_path[i],
        "line": index.step_line[i],
        "thread": index.thread_at(i),
        "call": call,
        "depth": index.call_depth[call] if call >= 0 else 0,
        "stack": stack,
        "locals": local_values,
        "output_count": bisect_right(index.output_step, i),
    }


def go(index: TraceIndex, i: int, how: str) -> dict[str, Any]:
    if how not in MOVES:
        raise BadRequest(f"how must be one of {', '.join(MOVES)}, not {how!r}")
    _check_step(index, i)
    call = index.step_call[i]
    if call < 0:
        return {"step": None}
    thread = index.step_thread[i]
    if how == "over":
        found = _forward(index, i + 1, thread, index.call_depth[call])
    elif how == "back_over":
        found = _backward(index, i - 1, thread, index.call_depth[call])
    elif how == "out":
        end = index.call_end[call]
        depth = index.call_depth[call] - 1
        if end < 0 and depth >= 0:
            _not_read_yet(index, "the end of this call")
            found = None    # it never returned
        else:
            found = _forward(index, end + 1, thread, depth) if depth >= 0 else None
    elif how == "back_out":
        site = index.call_site[call]
        found = site if site >= 0 else None
    elif how == "next_call":
        found = _next_entry(index, i, call)
    else:
        found = _previous_entry(index, i, call)
    return {"step": found}


def _not_read_yet(index: TraceIndex, what: str) -> None:
    """While the trace is being read, "nowhere to go" may only be "not read yet": say so (503)."""
    if not index.complete:
        raise NotReady(f"{what} is not read yet ({index.steps_ready()} steps are)")


def _next_entry(index: TraceIndex, i: int, call: int) -> int | None:
    """The first step of the next call of this call's function on its thread, after step i."""
    function, thread = index.call_function[call], index.call_thread[call]
    ready = index.steps_ready()
    for c in range(call + 1, index.calls_ready()):
        first = index.call_first[c]
        if index.call_function[c] == function and index.call_thread[c] == thread and i < first:
            if first < ready:
                return first
            break
    _not_read_yet(index, "the next call")
    return None


def _previous_entry(index: TraceIndex, i: int, call: int) -> int | None:
    """The latest entry of this function on this thread before step i: this call's own if i is
    past it, or a recursive call's that began (and maybe ended) since. Calls are numbered in the
    order they begin, so their first steps only grow: the search starts at the last call begun
    before i."""
    function, thread = index.call_function[call], index.call_thread[call]
    c = bisect_left(index.call_first, i, 0, index.calls_ready()) - 1
    while c >= 0:
        if index.call_function[c] == function and index.call_thread[c] == thread and index.call_first[c] < i:
            return index.call_first[c]
        c -= 1
    return None


def _forward(index: TraceIndex, j: int, thread: int, depth: int) -> int | None:
    """The first step from j on of ``thread`` at most ``depth`` deep (NotReady where the answer
    may lie in what is not read yet)."""
    step_call, step_thread, call_depth, call_end = index.step_call, index.step_thread, index.call_depth, index.call_end
    end = index.steps_ready()
    while j < end:
        c = step_call[j]
        if step_thread[j] == thread and c >= 0:
            if call_depth[c] <= depth:
                return j
            if call_end[c] < 0:     # a callee that has not returned (yet, or ever)
                _not_read_yet(index, "the end of the call it is in")
                return None         # it never returned: its caller never goes on
            j = max(j, call_end[c]) + 1     # the callee's whole span: no step of ours is in it
        else:
            j += 1
    _not_read_yet(index, "the next step")
    return None


def _backward(index: TraceIndex, j: int, thread: int, depth: int) -> int | None:
    """The last step up to j of ``thread`` at most ``depth`` deep."""
    step_call, step_thread, call_depth, call_first = index.step_call, index.step_thread, index.call_depth, index.call_first
    while j >= 0:
        c = step_call[j]
        if step_thread[j] == thread and c >= 0:
            if call_depth[c] <= depth:
                return j
            j = min(j, call_first[c]) - 1
        else:
            j -= 1
    return None


def _call_entry(index: TraceIndex, c: int) -> dict[str, Any]:
    texts = index.texts
    returned = index.return_value(c) if index.call_returned[c] >= 0 else None
    return {
        "call": c,
        "function": index.function_name(c),
        "args": ", ".join(f"{index.name(variable)}={texts.text(record)}"
                          for variable, record in index.call_values(c)),
        "return": texts.text(returned) if index.call_returned[c] >= 0 else None,
        "first_step": index.call_first[c],
        "last_step": index.last_step_of(c),
        "children": index.call_children[c],
        "thread": index.thread_of(c),
    }


def call(index: TraceIndex, c: int) -> dict[str, Any]:
    _check_call(index, c)
    entry = _call_entry(index, c)
    entry["parent"] = index.call_parent[c]
    return entry


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def calls(index: TraceIndex, parent: int, offset: int, limit: int) -> dict[str, Any]:
    _check_call(index, parent)
    limit = _limit(limit)
    if offset < 0:
        raise BadRequest(f"offset must not be negative, not {offset}")
    child = index.call_first_child[parent]
    for _ in range(offset):
        if child < 0:
            break
        child = index.call_next_sibling[child]
    entries = []
    while child >= 0 and len(entries) < limit:
        entries.append(_call_entry(index, child))
        child = index.call_next_sibling[child]
    return {"total": index.call_children[parent], "calls": entries}


def output(index: TraceIndex, offset: int, limit: int) -> dict[str, Any]:
    limit = _limit(limit)
    if offset < 0:
        raise BadRequest(f"offset must not be negative, not {offset}")
    total = len(index.output_step)
    items = []
    for k in range(offset, min(total, offset + limit)):
        stream, text = index.output.get(k)
        items.append({"index": k, "step": index.output_step[k], "stream": stream, "text": text})
    return {"total": total, "items": items}


def history(index: TraceIndex, i: int, name: str, limit: int, before: int | None = None) -> dict[str, Any]:
    """The steps of step i's frame where ``name`` took a new value, in order: the first ``limit`` of
    them, or with ``before``, the last ``limit`` at or before step ``before`` (where the value in
    force at a step came from). ``cut``: more changes were left out (later ones, or with ``before``,
    earlier ones; or the search stopped after ``HISTORY_STEPS`` steps of the frame). A step where
    the variable is not shown changes nothing."""
    _check_step(index, i)
    limit = _limit(limit)
    call = index.step_call[i]
    missing = object()

    def value(step: int) -> Any:
        return dict(index.locals_at(step)).get(name, missing)

    changes: list[int] = []
    cut = False
    looked = 0      # steps looked at, up to HISTORY_STEPS
    if before is None:
        own = []    # the frame's own steps, latest first (each knows the one before it)
        j = index.call_last_own[call] if call >= 0 else -1
        ready = index.steps_ready()
        while j >= 0:
            if j < ready:
                own.append(j)
            j = index.step_prev[j]
        last: Any = missing
        for j in reversed(own):
            looked += 1
            if looked > HISTORY_STEPS:
                cut = True
                break
            record = value(j)
            if record is missing or record == last:
                continue
            if len(changes) == limit:
                cut = True
                break
            last = record
            changes.append(j)
    else:
        # Backwards from the frame's latest step at or before ``before``, each step's value compared
        # with the one shown at the frame's step before it: only as far back as ``limit`` changes.
        j = min(i, before) if before >= 0 else -1
        while j >= 0 and index.step_call[j] != call:
            j -= 1
        record = value(j) if j >= 0 else missing
        while j >= 0:
            earlier = index.step_prev[j]
            shown = value(earlier) if earlier >= 0 else missing
            looked += 1
            while shown is missing and earlier >= 0:
                earlier = index.step_prev[earlier]
                shown = value(earlier) if earlier >= 0 else missing
                looked += 1
            if looked > HISTORY_STEPS:
                cut = True
                break
            if record is not missing and (shown is missing or shown != record):
                if len(changes) == limit:
                    cut = True
                    break
                changes.append(j)
            j, record = earlier, shown
        changes.reverse()
    return {"name": name, "call": call, "cut": cut,
            "changes": [{"step": j, "line": index.step_line[j], "text": index.node_texts.text(value(j))}
                        for j in changes]}

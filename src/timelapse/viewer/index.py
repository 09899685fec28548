"""The viewer's index of a trace: one streaming pass, then any step, call or output item on demand.

``TraceIndex.build`` reads ``reader.iter_events`` once (either format; the server runs it in a
background thread, so the page opens before the whole trace is read) and keeps:

- in memory, a few machine integers per step (path, line, call, the previous step of the same call)
  and per call (function, parent, thread, depth, first and last step, the step of the caller it was
  called from, its children as a linked list), the lines that ran, and each output item's step;
- in a ``PageStore`` (compressed pages in an anonymous temporary file), what is big: each step's
  Values, each call's arguments, the return values, the output texts.

So memory grows by ~50 bytes a step and a call, not by the size of the values, and reading a step
back costs one page read (``PAGE_ITEMS`` items) at most, usually none (a small cache of pages).

Thread switches (docs/threads.md) are undone as the stream is read: a call cut by switches to other
threads stays one call (its stretches' ``<thread switch>`` Returns are not returns), and the Step and
Call that re-open a thread's frames after a switch are neither steps nor calls. Each thread has its own
stack; ``<toplevel>`` (call 0) is at the bottom of all of them.

Invariants, relied on by the server (written by the one builder thread, read by the server's
threads; each is a single append or item store, atomic under the GIL):

- ``ready_steps`` steps are complete (their Values all read): every array of steps has at least that
  many items, and ``step_values(i)`` for ``i < ready_steps`` never changes again (but after a
  ``DropLastStep``, which timelapse never writes: the step it leaves last gets the Values after it);
- a call is counted (``calls_ready``) and an output item (``len(output_step)``) only once all its
  parts are stored;
- a call's ``end_step`` is -1 until its (real) Return is read;
- ``complete`` is set last, after every array has its final length.
"""

from __future__ import annotations

import marshal
import os
import tempfile
import threading
import zlib
from array import array
from collections import OrderedDict
from pathlib import Path
from typing import Any


from timelapse.format import EventKind
from timelapse.reader import (RawValue, TraceUnreadable, decode_raw_value, iter_events, read_side_files,
                              split_event, stream_path)
from timelapse.summary import ValueTexts

__all__ = ["TraceIndex", "PageStore", "value_node"]

#: Items per page of a PageStore: a step's Values, a call's arguments, a return value, an output text.
PAGE_ITEMS = 256
#: Pages of each store kept decoded in memory.
CACHED_PAGES = 32
#: Characters of a value node's one-line text, and of a call's arguments and return value.
NODE_TEXT = 200
CALL_TEXT = 120

_OUTPUT_STREAMS = {EventKind.WRITE: "stdout", EventKind.WRITE_OTHER: "stderr", EventKind.READ: "stdin"}
_THREAD_SWITCH = "<thread switch>"
_DEFINITIONS = frozenset(("Path", "Function", "Type", "VariableName", "Variable"))


class PageStore:
    """A list of items (JSON-shaped, and the bytes or text of undecoded Values), appended by one
    thread and read by any: full pages marshalled and compressed in an anonymous temporary file
    (deleted when closed, or when the process ends however it ends; only this process reads it back,
    so marshal's speed is safe to have), the page being filled in memory."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="timelapse-view-")
        self._fd = self._file.fileno()
        self._end = 0                               # bytes written
        self._pages: list[tuple[int, int]] = []     # (offset, length) of each full page
        self._filling: list[Any] = []
        self._count = 0
        self._lock = threading.Lock()               # between a flush and a read of the filling page
        self._cache: OrderedDict[int, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return self._count

    def append(self, item: Any) -> int:
        """Add an item (it may still change until the next append: a step's Values come after it).
        Returns its index."""
        if len(self._filling) == PAGE_ITEMS:
            self._flush()
        self._filling.append(item)
        self._count += 1
        return self._count - 1

    def pop(self) -> None:
        """Take back the last item (``DropLastStep``, which timelapse never writes). If that leaves
        the filling page empty, the page before it is read back to be the filling one again: the
        item now last may still change (its step gets the Values that follow)."""
        if not self._count:
            return
        self._filling.pop()
        self._count -= 1
        if not self._filling and self._pages:
            with self._lock:
                offset, length = self._pages[-1]
                self._filling = marshal.loads(zlib.decompress(os.pread(self._fd, length, offset)))
                self._pages.pop()
                self._cache.pop(len(self._pages), None)
            # (Its bytes stay in the file, unused: a DropLastStep costs a page at most.)

    def last(self) -> Any:
        return self._filling[-1]

    def _flush(self) -> None:
        data = zlib.compress(marshal.dumps(self._filling), 1)
        os.pwrite(self._fd, data, self._end)    # pwrite/pread: no shared file position to race on
        with self._lock:
            self._pages.append((self._end, len(data)))
            self._filling = []
        self._end += len(data)

    def get(self, index: int) -> Any:
        page, at = divmod(index, PAGE_ITEMS)
        with self._lock:
            if page >= len(self._pages):
                return self._filling[at]
            cached = self._cache.get(page)
            if cached is not None:
                self._cache.move_to_end(page)
                return cached[at]
            offset, length = self._pages[page]
            if self._fd < 0:
                raise ValueError("the viewer is closing")   # never read a closed (reused) descriptor
            data = os.pread(self._fd, length, offset)
        items = marshal.loads(zlib.decompress(data))
        with self._lock:
            self._cache[page] = items
            if len(self._cache) > CACHED_PAGES:
                self._cache.popitem(last=False)
        return items[at]

    def close(self) -> None:
        with self._lock:
            self._fd = -1
            self._file.close()


class TraceIndex:
    """Steps, calls and output of one trace folder, read once (``build``), then asked for by index."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.stream = stream_path(self.folder)          # TraceUnreadable if there is none
        self.metadata, self.side_paths = read_side_files(self.folder)
        self.texts = ValueTexts(CALL_TEXT)              # its types and names are the trace's tables
        self.types = self.texts.types
        self.names = self.texts.names
        self.node_texts = ValueTexts(NODE_TEXT)         # the same tables, a longer text
        self.node_texts.types, self.node_texts.names = self.types, self.names
        self.paths: list[str] = []
        self.functions: list[dict[str, Any]] = []
        # Per step.
        self.step_path = array("i")
        self.step_line = array("i")
        self.step_call = array("i")
        self.step_prev = array("i")        # the previous step of the same call, -1 for its first
        self.step_thread = array("i")      # the thread it ran on: 1 + its place in threads (0: none yet)
        self.values = PageStore()          # per step: [[variable_id, record], ...]
        # Per call.
        self.call_function = array("i")
        self.call_parent = array("i")
        self.call_thread = array("i")      # as step_thread
        self.call_depth = array("i")
        self.call_first = array("i")       # its first step (the def-line Step the Call follows)
        self.call_bound = array("b")       # 1: call_first is that def-line Step (it holds the args)
        self.call_values_at = array("i")   # that step's Values before the Call (the args go after them)
        self.call_end = array("i")         # the last step before its Return; -1 while open
        self.call_last_own = array("i")    # its own latest step (not its callees'), -1 if none
        self.call_site = array("i")        # the caller's step it was called from, -1 if none
        self.call_returned = array("i")    # index into returns, -1 until it returns
        self.call_children = array("i")
        self.call_first_child = array("i")
        self.call_last_child = array("i")
        self.call_next_sibling = array("i")
        self.args = PageStore()            # per call: [[variable_id, record], ...]
        self.returns = PageStore()         # records, in the order the calls returned
        # Output.
        self.output_step = array("i")
        self.output = PageStore()          # per item: [stream, text]
        self.lines_run: dict[int, set[int]] = {}
        self.threads: list[int] = []
        self.ready_steps = 0
        self.events = 0
        self.complete = False
        self.failure: str | None = None    # why reading stopped early (a damaged trace)
        self.done = threading.Event()
        self._stopping = False
        self.thread_last_step: dict[int, int] = {}     # thread ordinal -> its last step (once read)

    # -- reading the stream (the builder thread) --------------------------------------------------

    def build(self) -> None:
        """Read the whole stream; on a damaged trace, keep what was read and set ``failure``."""
        try:
            self._read()
        except Exception as exc:    # a damaged trace (a record of another shape, an id out of range,
            # a number too big for the index's arrays), a full disk under the pages: what was read stays
            self.failure = str(exc) if isinstance(exc, TraceUnreadable) else f"{type(exc).__name__}: {exc}"
        finally:
            # A failure in the middle of a step's appends leaves some arrays one longer: cut them to
            # the steps whole in all of them (the Values are appended last).
            whole = len(self.values)
            for numbers in (self.step_path, self.step_line, self.step_call, self.step_thread, self.step_prev):
                del numbers[whole:]
            self.ready_steps = whole
            self._last_steps_of_threads()
            self.complete = True
            self.done.set()

    def _read(self) -> None:
        # The hot loop: every event of the trace passes here once. Arrays and methods bound locally.
        step_path, step_line, step_call, step_prev = self.step_path, self.step_line, self.step_call, self.step_prev
        step_thread = self.step_thread
        call_last_own = self.call_last_own
        values, lines_run = self.values, self.lines_run
        stack: list[int] = []                   # the current thread's open calls, call 0 at the bottom
        suspended: dict[int, list[int]] = {}    # thread -> its open calls above call 0, outermost first
        suspending: list[int] = []              # closed by <thread switch> Returns, innermost first
        reopen: list[int] = []                  # calls the Calls after a switch re-open, outermost first
        thread = 0                              # the thread's ordinal (1 + its place in self.threads);
        #                                         0 until the first thread event numbers the first one
        step_before_call = -1                   # the latest Step, while no other event but Values followed it
        current_values: list[Any] = []
        for event in iter_events(self.folder, raw_values=True):
            self.events += 1
            if not self.events & 0xFFF and self._stopping:
                self.failure = "stopped"
                break
            if type(event) is RawValue:     # most events: kept as read, decoded when looked at
                if not reopen and step_path:
                    current_values.append(event.data)
                continue
            if type(event) is dict and len(event) == 1:
                [(variant, payload)] = event.items()
            else:
                variant, payload = split_event(event)
            if variant == "Step":
                if reopen:
                    continue    # the def-line Step of a call re-opened after a thread switch
                index = len(step_path)
                path, line = payload["path_id"], payload["line"]
                call = stack[-1] if stack else -1
                step_path.append(path)
                step_line.append(line)
                step_call.append(call)
                step_thread.append(thread)
                if call >= 0:
                    step_prev.append(call_last_own[call])
                    call_last_own[call] = index
                else:
                    step_prev.append(-1)
                current_values = []
                values.append(current_values)
                self.ready_steps = index    # the step before it has all its Values
                lines = lines_run.get(path)
                if lines is None:
                    lines = lines_run[path] = set()
                lines.add(line)
                step_before_call = index
                continue
            if variant == "Call":
                if reopen:
                    stack.append(reopen.pop(0))
                else:
                    self._on_call(payload, stack, thread, step_before_call, len(current_values))
            elif variant == "Return":
                if stack:
                    record = payload.get("return_value") if isinstance(payload, dict) else None
                    if (isinstance(record, dict) and record.get("kind") == "Raw"
                            and record.get("r") == _THREAD_SWITCH):
                        suspending.append(stack.pop())
                    else:
                        call = stack.pop()
                        self.call_end[call] = len(step_path) - 1
                        self.call_returned[call] = self.returns.append(record)
            elif variant == "Event":
                stream = _OUTPUT_STREAMS.get(payload.get("kind"))
                if stream is not None and step_path:
                    self.output.append([stream, str(payload.get("content", ""))])
                    self.output_step.append(len(step_path) - 1)     # counted last: see _on_call
            elif variant in ("ThreadStart", "ThreadSwitch"):
                if payload not in self.threads:
                    self.threads.append(payload)
                number = self.threads.index(payload) + 1
                if thread == 0:     # the calls open so far are the first thread's: they stay open
                    self._number_first_thread(number)
                else:
                    suspended[thread] = suspending[::-1]
                suspending = []
                thread = number
                reopen = suspended.pop(thread, [])
            elif variant == "ThreadExit":
                if payload in self.threads:
                    suspended.pop(self.threads.index(payload) + 1, None)
            elif variant == "DropLastStep":
                self._drop_last_step()
                current_values = values.last() if len(values) else []   # the Values that follow are its
            elif variant == "Path":
                self.paths.append(payload)
            elif variant == "Function":
                self.functions.append(payload)
            elif variant == "Type":
                self.types.append(payload)
            elif variant in ("VariableName", "Variable"):
                self.names.append(payload)
            if variant not in _DEFINITIONS:     # definitions may come between a Step and its Call
                step_before_call = -1

    def _on_call(self, payload: dict[str, Any], stack: list[int], thread: int, step_before_call: int,
                 values_before: int) -> None:
        call = len(self.call_function)
        parent = stack[-1] if stack else -1
        first = step_before_call if step_before_call >= 0 else len(self.step_path)
        site = -1
        if step_before_call >= 0 and parent >= 0 and self.step_call[first] == parent:
            # The def-line Step right before a Call is the new call's first step (as the db-backend
            # binds it): take it back from the caller.
            self.step_call[first] = call
            site = self.call_last_own[parent] = self.step_prev[first]
            self.step_prev[first] = -1
            own = first
        else:
            site = self.call_last_own[parent] if parent >= 0 else -1
            own = -1
        # The arguments first and call_function last: calls_ready() is len(call_function), and a
        # server thread may ask for the newest call as soon as it is counted.
        self.args.append([[arg["variable_id"], arg["value"]] for arg in payload.get("args", ())])
        self.call_parent.append(parent)
        self.call_thread.append(thread)
        self.call_depth.append(len(stack))
        self.call_first.append(first)
        self.call_bound.append(own >= 0)
        self.call_values_at.append(values_before if own >= 0 else 0)
        self.call_end.append(-1)
        self.call_last_own.append(own)
        self.call_site.append(site)
        self.call_returned.append(-1)
        self.call_children.append(0)
        self.call_first_child.append(-1)
        self.call_last_child.append(-1)
        self.call_next_sibling.append(-1)
        self.call_function.append(payload["function_id"])
        if parent >= 0:
            self.call_children[parent] += 1
            if self.call_last_child[parent] < 0:
                self.call_first_child[parent] = call
            else:
                self.call_next_sibling[self.call_last_child[parent]] = call
            self.call_last_child[parent] = call
        stack.append(call)

    def _number_first_thread(self, number: int) -> None:
        # Calls and steps read before the first thread event (call 0, at least) are the first thread's.
        for numbers in (self.call_thread, self.step_thread):
            for at in range(len(numbers)):
                if numbers[at] == 0:
                    numbers[at] = number

    def _drop_last_step(self) -> None:
        if len(self.step_path) < 1:
            return
        call, prev = self.step_call.pop(), self.step_prev.pop()
        self.step_thread.pop()
        self.step_path.pop()
        self.step_line.pop()
        if call >= 0:
            self.call_last_own[call] = prev
        self.values.pop()
        self.ready_steps = max(0, len(self.step_path) - 1)

    # -- what the server asks (any thread) ---------------------------------------------------------

    def steps_ready(self) -> int:
        return len(self.step_path) if self.complete else self.ready_steps

    def calls_ready(self) -> int:
        return len(self.call_function)

    def thread_at(self, step: int) -> int:
        """The thread a step ran on, as the trace numbers it (1 for a trace with no thread events)."""
        return self._thread_id(self.step_thread[step])

    def thread_of(self, call: int) -> int:
        return self._thread_id(self.call_thread[call])

    def _thread_id(self, ordinal: int) -> int:
        if ordinal:
            return self.threads[ordinal - 1]
        return self.threads[0] if self.threads else 1

    def step_values(self, step: int) -> list[list[Any]]:
        """[[variable_id, record], ...]: the Values after a step, decoded now (they are kept as read)."""
        pairs = []
        for data in self.values.get(step):
            payload = decode_raw_value(data)["Value"]
            pairs.append([payload["variable_id"], payload["value"]])
        return pairs

    def call_values(self, call: int) -> list[list[Any]]:
        return self.args.get(call)

    def return_value(self, call: int) -> Any:
        returned = self.call_returned[call]
        return self.returns.get(returned) if returned >= 0 else None

    def name(self, variable_id: Any) -> str:
        if type(variable_id) is int and 0 <= variable_id < len(self.names):
            return self.names[variable_id]
        return f"<variable {variable_id}>"

    def function_name(self, call: int) -> str:
        function = self.call_function[call]
        if 0 <= function < len(self.functions):
            return str(self.functions[function].get("name", "?"))
        return f"<function {function}>"

    def _last_steps_of_threads(self) -> None:
        # A call that never returned holds every later step of its thread: its last one is its end.
        last: dict[int, int] = {}
        threads = len(self.threads) or 1
        for step in range(len(self.step_thread) - 1, -1, -1):
            last.setdefault(self.step_thread[step], step)
            if len(last) == threads:
                break
        self.thread_last_step = last

    def last_step_of(self, call: int) -> int:
        """The last step of a call, its callees' included: for a call still open, the last one read
        so far, and once all is read, for one that never returned, its thread's last step."""
        end = self.call_end[call]
        if end >= 0:
            return end
        if self.complete:
            return self.thread_last_step.get(self.call_thread[call], self.steps_ready() - 1)
        return self.steps_ready() - 1

    def locals_at(self, step: int) -> list[tuple[str, Any]]:
        """(name, record) of the variables at a step: the Values after it, and for the def-line Step
        a Call follows, that Call's arguments too, in event order (the db-backend adds them to that
        step's variables when it reads the Call; timelapse writes no Values there)."""
        pairs = self.step_values(step)
        call = self.step_call[step]
        if call >= 0 and self.call_first[call] == step and self.call_bound[call]:
            before = self.call_values_at[call]
            pairs = pairs[:before] + self.call_values(call) + pairs[before:]
        shown: dict[str, Any] = {}
        for variable, record in pairs:      # a name twice (after a DropLastStep): the last one counts
            shown[self.name(variable)] = record
        return list(shown.items())

    def source_copy(self, path_id: int) -> Path | None:
        """The trace's own copy of a recorded file (``files/<absolute path>``), if it has one; never
        a path outside the folder's ``files/``."""
        if not 0 <= path_id < len(self.paths):
            return None
        path = self.paths[path_id]
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
            return None
        files = (self.folder / "files").resolve()
        copy = (files / path.lstrip("/\\")).resolve()
        if not copy.is_relative_to(files) or not copy.is_file():
            return None
        return copy

    def stop(self) -> None:
        """Ask ``build`` to stop soon (it returns within a few thousand events)."""
        self._stopping = True

    def close(self) -> None:
        """Delete the temporary pages. Only once ``build`` has returned (or never ran)."""
        for store in (self.values, self.args, self.returns, self.output):
            store.close()


def value_node(record: Any, index: TraceIndex, depth: int = 0) -> dict[str, Any]:
    """A ValueRecord as the page shows it (docs/view.md, "value node")."""
    texts = index.node_texts
    text = texts.text(record)
    if not isinstance(record, dict):
        return {"type": "?", "kind": "?", "text": text, "children": None, "length": None}
    kind = record.get("kind")
    type_info = _type(record, index)
    lang = str(type_info.get("lang_type", kind or "?"))
    node: dict[str, Any] = {"type": lang, "kind": kind, "text": text, "children": None, "length": None}
    if depth > 64:      # the recorder's own limits keep values far shallower; this is for a damaged trace
        return node
    if kind == "Reference":
        return value_node(record.get("dereferenced"), index, depth)
    if kind in ("Sequence", "Tuple"):
        elements = record.get("elements") or []
        # A mapping is a Sequence of (key, value) Tuples (encoder.py); its type's name says so.
        named_like_mapping = kind == "Sequence" and any(word in lang.lower() for word in ("dict", "map", "counter"))
        is_mapping = named_like_mapping and all(
            _is_more(element) or (isinstance(element, dict) and element.get("kind") == "Tuple"
                                  and len(element.get("elements") or []) == 2)
            for element in elements)
        children = []
        more = 0
        for element in elements:
            if _is_more(element):
                more = _count(str(element["r"]))
                children.append(["…", value_node(element, index, depth + 1)])
                continue
            if is_mapping:
                key, value = element["elements"]
                children.append([texts.text(key), value_node(value, index, depth + 1)])
            else:
                children.append([str(len(children)), value_node(element, index, depth + 1)])
        node["children"] = children
        node["length"] = len(children) - (1 if more else 0) + more
    elif kind == "Struct":
        fields = (type_info.get("specific_info") or {}).get("fields") or []
        children = []
        for position, value in enumerate(record.get("field_values") or []):
            name = fields[position].get("name") if position < len(fields) else f"#{position}"
            children.append([str(name), value_node(value, index, depth + 1)])
        node["children"] = children
    elif kind == "Variant" and record.get("contents") is not None:
        node["children"] = [["value", value_node(record.get("contents"), index, depth + 1)]]
    return node


def _type(record: dict[str, Any], index: TraceIndex) -> dict[str, Any]:
    type_id = record.get("type_id")
    if type(type_id) is int and 0 <= type_id < len(index.types):
        info = index.types[type_id]
        if isinstance(info, dict):
            return info
    return {}


def _is_more(record: Any) -> bool:
    """The encoder's ``… N more`` marker, after the items shown of a cut container."""
    if not isinstance(record, dict) or record.get("kind") != "Raw":
        return False
    text = record.get("r")
    return isinstance(text, str) and text.startswith("… ") and text.endswith(" more")


def _count(marker: str) -> int:
    """N of a ``… N more`` marker (the encoder's, with thousands separators)."""
    try:
        return int(marker[2:-5].replace(",", ""))
    except ValueError:
        return 0

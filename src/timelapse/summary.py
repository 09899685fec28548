"""``timelapse summary DIR``: what a trace says, in the terminal, without CodeTracer (docs/summary.md).

One streaming pass over ``reader.iter_events`` (``trace.json`` or ``trace.bin``): memory is bounded by
the number of distinct functions and lines, the calls kept for the tree (``TREE_NODES``), the
exceptions kept (``EXCEPTIONS``) and the output kept (``OUTPUT_CHARS``), never by the length of the
recording. What it gathers:

- the run: program, arguments, exit status, duration (the metadata);
- counts: steps, calls, distinct functions, exceptions raised, bytes written and read;
- functions by calls and by steps (a step counts for the innermost open call of its thread), the
  deepest recursion (the most frames of one function open at once on one thread);
- the call tree's beginning, to ``TREE_DEPTH`` levels, runs of calls of one function under one
  parent folded into one line (``square(x=0) → 0 … ×30``), with the first call's arguments and
  return value;
- the hottest lines;
- every exception raised (up to ``EXCEPTIONS``), where, and where it was handled (the next ``handled``
  event of the same type on the same thread), or that it ended the program;
- the program's output (stdout, stderr and what it read, in order), up to ``OUTPUT_CHARS``.

``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from timelapse.format import EventKind
from timelapse.reader import LeftOut, TraceUnreadable, iter_events, read_side_files, split_event

__all__ = ["Summary", "ValueTexts", "duration_of", "summarize", "run_summary"]

#: Calls kept for the tree (the tree shows the beginning of the run, folded).
TREE_NODES = 400
#: Levels of the tree shown below ``<toplevel>``.
TREE_DEPTH = 4
#: Exceptions kept.
EXCEPTIONS = 50
#: Characters of the program's output kept.
OUTPUT_CHARS = 20_000
#: Rows in each "top" table.
TOP = 10
#: Characters of one value's text.
VALUE_CHARS = 60

_OUTPUT_KINDS = {EventKind.WRITE: "stdout", EventKind.WRITE_OTHER: "stderr", EventKind.READ: "stdin"}


@dataclass
class _Node:
    """A call kept for the tree."""

    function: int
    args: str
    depth: int
    result: str | None = None
    children: list[_Node] = field(default_factory=list)
    #: Calls of the tree left out below this one (the node budget was spent).
    more: int = 0


@dataclass
class Summary:
    """Everything ``timelapse summary`` prints (``as_dict`` for ``--json``)."""

    folder: str
    metadata: dict[str, Any]
    paths: list[str]
    functions: list[tuple[int, int, str]]     # (path_id, line, name)
    steps: int = 0
    calls: int = 0
    calls_by_function: Counter[int] = field(default_factory=Counter)
    steps_by_function: Counter[int] = field(default_factory=Counter)
    steps_by_line: Counter[tuple[int, int]] = field(default_factory=Counter)
    deepest: tuple[int, int] = (0, -1)         # (frames, function id)
    tree: _Node | None = None
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    exceptions_raised: int = 0
    io_bytes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0, "stdin": 0})
    output: list[tuple[str, str]] = field(default_factory=list)
    output_cut: bool = False
    threads: int = 1
    events: int = 0

    # -- what is shown ---------------------------------------------------------------------------

    def function_name(self, function_id: int) -> str:
        if 0 <= function_id < len(self.functions):
            return self.functions[function_id][2]
        return f"<function {function_id}>"

    def place(self, path_id: int, line: int) -> str:
        path = self.paths[path_id] if 0 <= path_id < len(self.paths) else f"<path {path_id}>"
        return f"{_short_path(path)}:{line}"

    def as_dict(self) -> dict[str, Any]:
        meta = self.metadata
        frames, deepest = self.deepest
        return {
            "trace": self.folder,
            "program": meta.get("program"), "args": meta.get("args", []),
            "exit_status": meta.get("process_exit_status"),
            "duration_s": duration_of(meta),
            "counts": {"events": self.events, "steps": self.steps, "calls": self.calls,
                       "functions": len(self.calls_by_function), "threads": self.threads,
                       "exceptions": self.exceptions_raised, "io_bytes": dict(self.io_bytes)},
            "functions_by_calls": [{"function": self.function_name(f), "calls": n}
                                   for f, n in self.calls_by_function.most_common(TOP)],
            "functions_by_steps": [{"function": self.function_name(f), "steps": n}
                                   for f, n in self.steps_by_function.most_common(TOP)],
            "deepest_recursion": None if deepest < 0 else {"function": self.function_name(deepest),
                                                            "frames": frames},
            "hottest_lines": [{"line": self.place(p, l), "steps": n}
                              for (p, l), n in self.steps_by_line.most_common(TOP)],
            "call_tree": self._tree_dict(self.tree) if self.tree is not None else None,
            "exceptions": self.exceptions,
            "output": [{"stream": s, "text": t} for s, t in self.output],
            "output_cut": self.output_cut,
        }

    def _tree_dict(self, node: _Node) -> dict[str, Any]:
        folded = []
        for run in _runs(node.children):
            first = run[0]
            entry = self._tree_dict(first)
            entry["times"] = len(run)
            folded.append(entry)
        return {"function": self.function_name(node.function), "args": node.args,
                "return": node.result, "calls": folded, "more_calls": node.more}

    def render(self, out: TextIO) -> None:
        data = self.as_dict()
        write = out.write
        status = data["exit_status"]
        duration = data["duration_s"]
        write(f"{self.folder}: {data['program']} {' '.join(map(str, data['args']))}".rstrip() + "\n")
        write(f"  exit status {status if status is not None else 'unknown'}"
              + (f", {duration:.3f} s" if duration is not None else "") + "\n")
        counts = data["counts"]
        io_bytes = counts["io_bytes"]
        write(f"  {counts['steps']:,} steps, {counts['calls']:,} calls of {counts['functions']:,} "
              f"function{'s' * (counts['functions'] != 1)}, {counts['threads']} "
              f"thread{'s' * (counts['threads'] != 1)}, "
              f"{counts['exceptions']:,} exception{'s' * (counts['exceptions'] != 1)} raised; "
              f"output {io_bytes['stdout']:,} B stdout, {io_bytes['stderr']:,} B stderr, "
              f"input {io_bytes['stdin']:,} B\n")
        _table(write, "Functions by calls", [(r["function"], f"{r['calls']:,}") for r in data["functions_by_calls"]])
        _table(write, "Functions by steps", [(r["function"], f"{r['steps']:,}") for r in data["functions_by_steps"]])
        if data["deepest_recursion"] is not None:
            deepest = data["deepest_recursion"]
            write(f"\nDeepest recursion: {deepest['function']}, {deepest['frames']} frames at once\n")
        _table(write, "Hottest lines", [(r["line"], f"{r['steps']:,}") for r in data["hottest_lines"]])
        if data["call_tree"] is not None and data["call_tree"]["calls"]:
            write("\nCall tree (the beginning; runs of one function folded)\n")
            for entry in data["call_tree"]["calls"]:
                _write_tree(write, entry, 1)
            if data["call_tree"]["more_calls"]:
                write(f"  … {data['call_tree']['more_calls']:,} more calls\n")
        if self.exceptions_raised:
            write("\nExceptions\n")
            for exc in self.exceptions:
                if exc["handled_at"] is not None:
                    fate = f"handled at {exc['handled_at']}"
                else:
                    fate = "ended the program" if exc["ended_the_program"] else "not handled in recorded code"
                write(f"  {exc['text']}  raised at {exc['raised_at']}; {fate}\n")
            if self.exceptions_raised > len(self.exceptions):
                write(f"  … {self.exceptions_raised - len(self.exceptions):,} more\n")
        if self.output:
            write("\nOutput\n")
            for stream, text in self.output:
                prefix = {"stdout": "  ", "stderr": "! ", "stdin": "> "}[stream]
                for line in text.splitlines():
                    write(f"{prefix}{line}\n")
            if self.output_cut:
                write("  … (more output: see the trace)\n")


def _write_tree(write: Any, entry: dict[str, Any], level: int) -> None:
    times = f"  ×{entry['times']:,}" if entry["times"] > 1 else ""
    result = f" → {entry['return']}" if entry["return"] is not None else ""
    write(f"{'  ' * level}{entry['function']}({entry['args']}){result}{times}\n")
    for child in entry["calls"]:
        _write_tree(write, child, level + 1)
    if entry["more_calls"]:
        write(f"{'  ' * (level + 1)}… {entry['more_calls']:,} more calls\n")


def _table(write: Any, title: str, rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    write(f"\n{title}\n")
    width = max(len(count) for _, count in rows)
    for name, count in rows:
        write(f"  {count:>{width}}  {name}\n")


def _runs(nodes: list[_Node]) -> list[list[_Node]]:
    """Consecutive calls of the same function: one run each."""
    runs: list[list[_Node]] = []
    for node in nodes:
        if runs and runs[-1][0].function == node.function:
            runs[-1].append(node)
        else:
            runs.append([node])
    return runs


def _short_path(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else path


def duration_of(metadata: dict[str, Any]) -> float | None:
    """Seconds from the metadata's ``start_time`` to its ``end_time``; None if either is missing."""
    import datetime

    try:
        start = datetime.datetime.fromisoformat(metadata["start_time"])
        end = datetime.datetime.fromisoformat(metadata["end_time"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


# -- values as short text ---------------------------------------------------------------------------

class ValueTexts:
    """ValueRecords as short text (``limit`` characters), with the trace's types and variable names
    (the lists are filled by the reader of the stream as its Type and VariableName events come)."""

    def __init__(self, limit: int = VALUE_CHARS) -> None:
        self.types: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.limit = limit

    def text(self, record: Any) -> str:
        parts: list[str] = []
        self._spell(record, parts, 0)
        text = "".join(parts)
        return text if len(text) <= self.limit else text[: self.limit - 1] + "…"

    def _type(self, record: dict[str, Any]) -> dict[str, Any]:
        type_id = record.get("type_id")
        if isinstance(type_id, int) and 0 <= type_id < len(self.types):
            return self.types[type_id]
        return {}

    def _spell(self, record: Any, out: list[str], depth: int) -> None:
        # (Stops early: a value's text is cut at the limit, however big the record.)
        if sum(map(len, out)) > self.limit:
            return
        if not isinstance(record, dict):
            out.append("?")
            return
        kind = record.get("kind")
        if kind == "Int":
            out.append(str(record.get("i")))
        elif kind == "Float":
            out.append(str(record.get("f")))
        elif kind == "Bool":
            out.append("True" if record.get("b") else "False")
        elif kind == "String":
            out.append(repr(record.get("text", "")))
        elif kind == "None":
            out.append("None")
        elif kind in ("Raw", "Error"):
            out.append(str(record.get("r", record.get("msg", ""))))
        elif kind == "BigInt":
            out.append("<big int>")
        elif kind in ("Sequence", "Tuple"):
            lang = self._type(record).get("lang_type", "")
            elements = record.get("elements", [])
            if depth > 2:
                out.append("…")
                return
            is_dict = lang == "dict" or lang.endswith("Dict")
            opening, closing = ("{", "}") if is_dict or lang in ("set", "frozenset") else (
                ("(", ")") if kind == "Tuple" else ("[", "]"))
            out.append(opening)
            for index, element in enumerate(elements):
                if index:
                    out.append(", ")
                if is_dict and isinstance(element, dict) and element.get("kind") == "Tuple" \
                        and len(element.get("elements", [])) == 2:
                    key, value = element["elements"]
                    self._spell(key, out, depth + 1)
                    out.append(": ")
                    self._spell(value, out, depth + 1)
                else:
                    self._spell(element, out, depth + 1)
                if sum(map(len, out)) > self.limit:
                    break
            out.append(closing)
        elif kind == "Struct":
            info = self._type(record)
            fields = (info.get("specific_info") or {}).get("fields", [])
            out.append(f"{info.get('lang_type', 'object')}(")
            for index, value in enumerate(record.get("field_values", [])):
                if index:
                    out.append(", ")
                name = fields[index]["name"] if index < len(fields) else f"#{index}"
                out.append(f"{name}=")
                self._spell(value, out, depth + 1)
                if sum(map(len, out)) > self.limit:
                    break
            out.append(")")
        elif kind == "Reference":
            self._spell(record.get("dereferenced"), out, depth)
        elif kind == "Variant":
            out.append(str(record.get("discriminator")))
        else:
            out.append(f"<{kind}>")

    def args(self, args: Any) -> str:
        texts = []
        for arg in args if isinstance(args, list) else []:
            variable = arg.get("variable_id") if isinstance(arg, dict) else None
            name = self.names[variable] if isinstance(variable, int) and 0 <= variable < len(self.names) else "?"
            texts.append(f"{name}={self.text(arg.get('value'))}")
        return ", ".join(texts)


# -- the pass -------------------------------------------------------------------------------------------

def summarize(folder: str) -> Summary:
    """Read ``folder``'s trace once, streaming. Raises ``TraceUnreadable`` (one line) if it cannot."""
    metadata, _ = read_side_files(folder)
    summary = Summary(folder=str(folder), metadata=metadata, paths=[], functions=[])
    values = ValueTexts()
    # The stream follows one thread at a time (threads.py): its open calls are <toplevel> and the
    # current thread's. A switch closes them with "<thread switch>" Returns and re-opens the next
    # thread's (a Step at the def line, then a Call, outermost first): those are not new calls, and
    # their steps are not the program's. Per thread: its suspended calls, and how many frames of
    # each function it has open (for the deepest recursion).
    stack: list[tuple[int, _Node | None]] = []
    suspended: dict[int | None, list[tuple[int, _Node | None]]] = {}
    suspending: list[tuple[int, _Node | None]] = []
    reopen: list[tuple[int, _Node | None]] = []
    open_counts: dict[int | None, Counter[int]] = {None: Counter()}
    thread: int | None = None     # until the first ThreadStart numbers the first thread
    threads: set[int] = set()
    budget = TREE_NODES
    pending: dict[tuple[int, str], list[dict[str, Any]]] = {}   # (thread, type) -> raised, unhandled
    output_chars = 0
    last_step: tuple[int, int] | None = None
    # The hot loop (every event of the trace): the commonest variants first, counters bound locally.
    steps_by_line, steps_by_function = summary.steps_by_line, summary.steps_by_function
    toplevel = -1   # the function id of <toplevel>: its steps are not a function's
    events = 0
    values_left_out = LeftOut()
    for event in iter_events(folder, values=False, left_out=values_left_out):   # no Value shown: none decoded
        events += 1
        if type(event) is dict and len(event) == 1:
            [(variant, payload)] = event.items()
        else:
            variant, payload = split_event(event)
        if variant == "Value":
            continue
        if variant == "Step":
            if reopen:
                continue  # the def-line Step of a call re-opened after a thread switch
            summary.steps += 1
            last_step = (payload["path_id"], payload["line"])
            steps_by_line[last_step] += 1
            if stack and stack[-1][0] != toplevel:
                steps_by_function[stack[-1][0]] += 1
        elif variant == "Call":
            if reopen:
                stack.append(reopen.pop(0))
                continue
            function = payload["function_id"]
            node = None
            if not stack:  # <toplevel>
                if summary.tree is None:
                    node = summary.tree = _Node(function, "", 0)
            else:
                parent = stack[-1][1]
                if parent is not None:
                    if budget > 0 and parent.depth < TREE_DEPTH:
                        node = _Node(function, values.args(payload.get("args")), parent.depth + 1)
                        parent.children.append(node)
                        budget -= 1
                    else:
                        parent.more += 1
            summary.calls += 1
            if summary.calls == 1 and summary.function_name(function) == "<toplevel>":
                toplevel = function
            if function != toplevel:
                summary.calls_by_function[function] += 1
                counts = open_counts[thread]
                counts[function] += 1
                if counts[function] > summary.deepest[0]:
                    summary.deepest = (counts[function], function)
            stack.append((function, node))
        elif variant == "Return":
            if not stack:
                continue
            value = payload.get("return_value") if isinstance(payload, dict) else None
            if isinstance(value, dict) and value.get("kind") == "Raw" and value.get("r") == "<thread switch>":
                suspending.append(stack.pop())
                continue
            function, node = stack.pop()
            open_counts[thread][function] -= 1
            if node is not None and node.depth > 0:
                node.result = values.text(value)
        elif variant == "Event":
            output_chars = _on_event(summary, payload, thread, pending, output_chars, last_step)
        elif variant in ("ThreadStart", "ThreadSwitch"):
            if thread is None:   # the first thread gets its number
                open_counts[payload] = open_counts.pop(None)
            else:
                suspended[thread] = suspending[::-1]  # outermost first
            suspending = []
            thread = payload
            threads.add(thread)
            open_counts.setdefault(thread, Counter())
            reopen = suspended.pop(thread, [])
        elif variant == "ThreadExit":
            suspended.pop(payload, None)
        elif variant == "Path":
            summary.paths.append(payload)
        elif variant == "Function":
            summary.functions.append((payload["path_id"], payload["line"], payload["name"]))
        elif variant == "Type":
            values.types.append(payload)
        elif variant == "VariableName":
            values.names.append(payload)
        elif variant == "DropLastStep":
            summary.steps -= 1
            if last_step is not None:
                steps_by_line[last_step] -= 1
    summary.events = events + values_left_out.values
    summary.threads = max(len(threads), 1)
    if summary.deepest[0] <= 1:
        summary.deepest = (0, -1)   # no function was ever open twice at once: no recursion
    return summary


def _on_event(summary: Summary, payload: dict[str, Any], thread: int,
              pending: dict[tuple[int, str], list[dict[str, Any]]], output_chars: int,
              last_step: tuple[int, int] | None) -> int:
    kind, content = payload.get("kind"), payload.get("content", "")
    stream = _OUTPUT_KINDS.get(kind)
    if stream is not None:
        summary.io_bytes[stream] += len(content.encode("utf-8", "surrogatepass"))
        if output_chars < OUTPUT_CHARS:
            kept = content[: OUTPUT_CHARS - output_chars]
            if summary.output and summary.output[-1][0] == stream:
                summary.output[-1] = (stream, summary.output[-1][1] + kept)
            else:
                summary.output.append((stream, kept))
            output_chars += len(kept)
            summary.output_cut = len(kept) < len(content)
        else:
            summary.output_cut = True
        return output_chars
    try:
        metadata = json.loads(payload.get("metadata") or "{}")
    except ValueError:
        metadata = {}
    what = metadata.get("stream") if isinstance(metadata, dict) else None
    if what in ("raise", "handled") and "path_id" in metadata:
        where = summary.place(metadata["path_id"], metadata.get("line", 0))
        key = (metadata.get("thread", thread), metadata.get("exception", ""))
        if what == "raise":
            summary.exceptions_raised += 1
            if len(summary.exceptions) < EXCEPTIONS:
                record = {"text": content, "raised_at": where, "handled_at": None, "ended_the_program": False}
                summary.exceptions.append(record)
                pending.setdefault(key, []).append(record)
        elif pending.get(key):
            pending[key].pop()["handled_at"] = where
    elif kind == EventKind.ERROR and what is None:
        # The last Event: the program ended in error (its traceback); the latest unhandled
        # exception of that type is the one.
        last_line = content.rstrip().rsplit("\n", 1)[-1]
        for record in reversed(summary.exceptions):
            name = record["text"].split(":", 1)[0].rsplit(".", 1)[-1]
            if record["handled_at"] is None and last_line.split(":", 1)[0].endswith(name):
                record["ended_the_program"] = True
                break
    return output_chars


def run_summary(folder: str, *, as_json: bool = False, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """``timelapse summary``: 0, or 2 with one line if the trace cannot be read."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        summary = summarize(folder)
    except TraceUnreadable as exc:
        print(f"timelapse: error: {exc}", file=err)
        return 2
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        print(f"timelapse: error: {folder}: not a trace timelapse can summarize ({type(exc).__name__}: "
              f"{exc}); run 'timelapse check {folder}'", file=err)
        return 2
    if as_json:
        json.dump(summary.as_dict(), out, indent=1, ensure_ascii=False)
        out.write("\n")
    else:
        summary.render(out)
    return 0

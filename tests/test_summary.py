"""``timelapse summary`` (timelapse.summary): what a trace holds, from one streaming pass."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import PROGRAMS, run_timelapse

from timelapse import summary as summary_module


def _summary(tmp_path, program, trace_format, *args):
    out = tmp_path / "trace"
    done = run_timelapse(["record", "-q", "--format", trace_format, "-o", str(out), str(program), *args],
                         cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    text = run_timelapse(["summary", str(out)])
    data = run_timelapse(["summary", str(out), "--json"])
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    return text.stdout, json.loads(data.stdout)


@pytest.mark.parametrize("trace_format", ["json", "bin"])
def test_recursion_counts_tree_and_lines(tmp_path, trace_format):
    text, data = _summary(tmp_path, PROGRAMS / "recursion.py", trace_format)
    assert data["program"] == str(PROGRAMS / "recursion.py") and data["exit_status"] == 0
    calls = {row["function"]: row["calls"] for row in data["functions_by_calls"]}
    assert calls["fib"] == 1973                       # fib(15): 2 * fib(16) - 1 calls
    assert data["counts"]["calls"] == 1975            # and <toplevel>, <__main__>
    assert data["deepest_recursion"] == {"function": "fib", "frames": 15}
    tree = data["call_tree"]
    assert tree["function"] == "<toplevel>"
    [module] = tree["calls"]
    [first] = module["calls"]
    assert (first["function"], first["args"], first["return"]) == ("fib", "n=15", "610")
    assert data["hottest_lines"][0]["steps"] >= data["hottest_lines"][-1]["steps"]
    assert data["output"] == [{"stream": "stdout", "text": "610\n"}]
    assert "Deepest recursion: fib, 15 frames at once" in text
    assert "fib(n=15) → 610" in text


def test_exceptions_where_raised_and_where_handled(tmp_path):
    _, data = _summary(tmp_path, PROGRAMS / "exceptions.py", "bin")
    assert data["counts"]["exceptions"] == len(data["exceptions"]) == 3
    first = data["exceptions"][0]
    assert first["text"] == "__main__.InsufficientFunds: 50, 'too much'"
    assert first["raised_at"].endswith("exceptions.py:11")
    assert first["handled_at"].endswith("exceptions.py:21")


def test_an_uncaught_exception_ends_the_program(tmp_path):
    program = tmp_path / "boom.py"
    program.write_text(textwrap.dedent("""\
        def deep(n):
            if n == 0:
                raise KeyError("missing")
            return deep(n - 1)

        print("before")
        deep(3)
    """))
    text, data = _summary(tmp_path, program, "json")
    assert data["exit_status"] == 1
    [boom] = data["exceptions"]
    assert boom["text"] == "KeyError: missing" and boom["handled_at"] is None and boom["ended_the_program"]
    assert "ended the program" in text
    assert data["output"][0] == {"stream": "stdout", "text": "before\n"}
    assert any(part["stream"] == "stderr" and "KeyError" in part["text"] for part in data["output"])


def test_threads_and_values(tmp_path):
    program = tmp_path / "workers.py"
    program.write_text(textwrap.dedent("""\
        import threading

        def work(items, scale):
            return {k: v * scale for k, v in items.items()}

        results = []
        threads = [threading.Thread(target=lambda: results.append(work({"a": 1, "b": 2}, 3)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    """))
    text, data = _summary(tmp_path, program, "bin")
    assert data["counts"]["threads"] == 3
    calls = {row["function"]: row["calls"] for row in data["functions_by_calls"]}
    assert calls["work"] == 2
    shown = json.dumps(data["call_tree"], ensure_ascii=False)
    assert shown.count("<thread switch>") == 0    # a call cut by switches is one call
    assert "work(items={'a': 1, 'b': 2}, scale=3) → {'a': 3, 'b': 6}" in text


def test_the_tree_is_bounded_and_runs_are_folded(tmp_path):
    program = tmp_path / "many.py"
    program.write_text("def f(i):\n    return i\n\nfor i in range(3000):\n    f(i)\n")
    _, data = _summary(tmp_path, program, "json")
    [module] = data["call_tree"]["calls"]
    [run] = module["calls"]     # 3000 calls of f in a row: one line
    assert run["function"] == "f" and run["args"] == "i=0" and run["return"] == "0"
    kept = summary_module.TREE_NODES
    assert run["times"] == kept - 1 and module["more_calls"] == 3000 - (kept - 1)


def test_output_is_cut_at_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(summary_module, "OUTPUT_CHARS", 10)
    out = tmp_path / "trace"
    program = tmp_path / "talk.py"
    program.write_text("for i in range(100):\n    print('line', i)\n")
    run_timelapse(["record", "-q", "-o", str(out), str(program)])
    result = summary_module.summarize(str(out))
    assert "".join(text for _, text in result.output) == "line 0\nlin" and result.output_cut
    assert result.io_bytes["stdout"] == sum(len(f"line {i}\n") for i in range(100))


def test_not_a_trace_is_one_line(tmp_path):
    done = run_timelapse(["summary", str(tmp_path / "missing")])
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("timelapse: error:")
    done = run_timelapse(["summary"])
    assert done.returncode == 2 and done.stderr.startswith("timelapse: error:")

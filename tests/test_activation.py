"""Activation (docs/activation.md): ``record_only`` records only inside the chosen functions, from each
entry to its return, each entry one call under ``<toplevel>``; ``activation_path`` from the first start
of a file's code to that call's end, once. Nothing outside is recorded, threads are active one by one,
the program behaves as under python, and the trace is valid in both formats."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest
from conftest import checked_trace, run_python, run_timelapse

import timelapse
from timelapse import config
from timelapse.activation import Activation, ActivationError, check_function_pattern
from timelapse.config import OptionError, Options, load
from timelapse.reader import decode_value, iter_events
from timelapse.scope import Scope

SHOP = '''\
import sys


def helper(x):
    y = x * 2
    return y + 1


def checkout(n):
    total = 0
    for i in range(n):
        total += helper(i)
    print("checkout", total)
    return total


def other():
    s = 0
    for i in range(5):
        s += helper(i)
    print("other", s)
    return s


def main():
    for k in range(3):
        other()
        checkout(k + 1)
    print("done", file=sys.stderr)


main()
sys.exit(3)
'''


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def record_gated(tmp_path: Path, trace_format: str, program: Path, *options: str, cwd: Path | None = None,
                 env: dict | None = None, ordered: bool = True):
    """Record ``program`` with ``options``, check it ran as under python (its lines in any order if
    not ``ordered``: threads); (result, trace, metadata)."""
    out = tmp_path / "trace"
    expected = run_python([str(program)], cwd=cwd or program.parent, env=env)
    result = run_timelapse(["record", "-q", "--no-config", "--format", trace_format, "-o", str(out),
                            *options, str(program)], cwd=cwd or program.parent,
                           env=env if env is not None else os.environ.copy())
    if ordered:
        assert (result.returncode, result.stdout, result.stderr) == (
            expected.returncode, expected.stdout, expected.stderr)
    else:
        assert (result.returncode, sorted(result.stdout.splitlines()), result.stderr) == (
            expected.returncode, sorted(expected.stdout.splitlines()), expected.stderr)
    assert (out / f"trace.{trace_format}").is_file()
    trace = checked_trace(out)
    metadata = json.loads((out / "trace_metadata.json").read_text())
    return result, trace, metadata


def top_calls(trace):
    """The calls right under <toplevel>: (function, thread)."""
    return [(c.function, c.thread) for c in trace.calls() if c.depth == 1]


def functions_called(trace) -> set[str]:
    return {c.function for c in trace.calls() if c.depth >= 1}


def io_contents(trace) -> list[str]:
    return [e["content"] for e in trace.events_of("Event") if e["kind"] in (0, 2)]


# -- record_only, end to end ---------------------------------------------------------------------------

def test_each_entry_is_an_activation_under_toplevel_and_nothing_else_is_recorded(tmp_path, trace_format):
    program = write(tmp_path, "shop.py", SHOP)
    result, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "checkout")
    assert result.returncode == 3  # the program's own exit status
    checkouts = [c for c in trace.calls() if c.depth == 1]
    assert [c.function for c in checkouts] == ["checkout"] * 3
    assert [decode_value(c.args["n"]) for c in checkouts] == [1, 2, 3]
    assert [decode_value(c.return_value) for c in checkouts] == [1, 4, 9]
    # The calls made inside an activation are recorded, nested; other() and main() never.
    assert [len(c.children) for c in checkouts] == [1, 2, 3]
    assert functions_called(trace) == {"checkout", "helper"}
    # No step outside checkout and helper: no module-level step, no step of other() or main().
    lines = {s.line for s in trace.steps()}
    assert lines <= set(range(4, 15)), sorted(lines)
    assert all(s.call is not None and s.call.function in ("checkout", "helper") for s in trace.steps())
    # IO while inactive is not recorded ("other ..." and "done"); inside, it is.
    assert io_contents(trace) == ["checkout 1\n", "checkout 4\n", "checkout 9\n"]
    assert metadata["activations"] == 3
    assert metadata["options"]["values"]["record_only"] == ["checkout"]
    assert metadata["options"]["sources"]["record_only"] == "command line"
    assert metadata["process_exit_status"] == 3


def test_the_summary_line_counts_the_activations(tmp_path):
    program = write(tmp_path, "shop.py", SHOP)
    result = run_timelapse(["record", "--no-config", "-o", str(tmp_path / "t"), "--record-only", "checkout",
                            str(program)], cwd=tmp_path)
    assert result.stderr.splitlines()[-1].startswith("timelapse: ")
    assert ", 3 activations → " in result.stderr.splitlines()[-1]


def test_a_function_never_called_records_an_empty_toplevel(tmp_path, trace_format):
    program = write(tmp_path, "shop.py", SHOP)
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "nothing_here")
    assert top_calls(trace) == [] and trace.steps() == [] and io_contents(trace) == []
    assert metadata["activations"] == 0


def test_recursion_inside_an_activation_is_nested_calls(tmp_path, trace_format):
    program = write(tmp_path, "rec.py", '''\
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)


        def twice():
            return fact(3) + fact(2)


        print(twice())
        ''')
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "fact")
    tops = [c for c in trace.calls() if c.depth == 1]
    assert [(c.function, decode_value(c.args["n"])) for c in tops] == [("fact", 3), ("fact", 2)]
    depths = [c.depth for c in trace.calls() if c.function == "fact"]
    assert depths == [1, 2, 3, 1, 2]     # the recursive calls are ordinary nested calls
    assert [decode_value(c.return_value) for c in tops] == [6, 2]
    assert metadata["activations"] == 2


def test_an_exception_escaping_the_function_ends_its_activation(tmp_path, trace_format):
    program = write(tmp_path, "boom.py", '''\
        def boom(x):
            if x > 1:
                raise ValueError(x)
            return x


        def caller():
            for v in (1, 2, 3):
                try:
                    boom(v)
                except ValueError as e:
                    print("caught", e)


        caller()
        boom(5)
        ''')
    result, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "boom")
    assert result.returncode == 1 and "ValueError: 5" in result.stderr
    assert top_calls(trace) == [("boom", 1)] * 4
    assert metadata["activations"] == 4
    # Raised inside an activation: an event; handled outside (caller): none, nor its print.
    kinds = [(json.loads(e["metadata"])["stream"]) for e in trace.events_of("Event") if e["kind"] == 11
             and e["metadata"]]
    assert kinds == ["raise"] * 3
    assert io_contents(trace) == []
    # The uncaught one is the trace's last event (an Error), as without activation.
    last = trace.events[-2]
    assert "Event" in last and last["Event"]["kind"] == 11 and "ValueError: 5" in last["Event"]["content"]


def test_each_resume_of_a_generator_or_coroutine_is_an_activation(tmp_path, trace_format):
    program = write(tmp_path, "gen.py", '''\
        import asyncio


        def numbers(n):
            for i in range(n):
                yield i * 10


        async def handler(x):
            await asyncio.sleep(0)
            y = x + 1
            await asyncio.sleep(0)
            return y


        def consume():
            return sum(numbers(3))


        print(consume())
        print(asyncio.run(handler(1)))
        ''')
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "numbers",
                                      "--record-only", "handler")
    tops = [c for c in trace.calls() if c.depth == 1]
    assert [c.function for c in tops] == ["numbers"] * 4 + ["handler"] * 3
    assert [decode_value(c.return_value) for c in tops] == [0, 10, 20, None, None, None, 2]
    # The code driving them (consume, the event loop) is not recorded.
    assert functions_called(trace) == {"numbers", "handler"}
    assert metadata["activations"] == 7


THREADS = '''\
import sys
import threading
import time


def checkout(name):
    total = 0
    for i in range(3):
        total += i
        time.sleep(0.001)
    sys.stdout.write(f"checkout {name}\\n")
    return total


def browse(name):
    for i in range(3):
        time.sleep(0.001)
    sys.stdout.write(f"browse {name}\\n")


threads = [threading.Thread(target=checkout, args=("a",)), threading.Thread(target=browse, args=("b",)),
           threading.Thread(target=checkout, args=("c",))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("main done")
'''


def test_threads_are_recorded_only_while_inside_an_activation(tmp_path, trace_format):
    program = write(tmp_path, "threads_app.py", THREADS)
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "checkout",
                                      ordered=False)
    assert functions_called(trace) == {"checkout"}
    # Two threads active (maybe at once, switching), one never: it has no thread number at all.
    starts = [e["ThreadStart"] for e in trace.events if isinstance(e, dict) and "ThreadStart" in e]
    assert starts == [1, 2, 3]
    assert {c.thread for c in trace.calls() if c.depth == 1} == {2, 3}
    assert sorted(io_contents(trace)) == ["checkout a\n", "checkout c\n"]
    assert metadata["activations"] == 2
    returned = [decode_value(c.return_value) for c in trace.calls() if c.depth == 1
                and c.return_value is not None and c.return_value.get("kind") == "Int"]
    assert returned == [3, 3]


def test_an_activation_path_records_from_the_files_first_code_to_its_end_once(tmp_path, trace_format):
    write(tmp_path, "lib.py", '''\
        def double(x):
            return x * 2


        SETUP = double(21)


        def later(x):
            return x + 1
        ''')
    program = write(tmp_path, "main.py", '''\
        def before():
            return 1


        before()
        import lib
        print(lib.SETUP, lib.later(1), lib.double(1))
        ''')
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--activation-path", "lib.py")
    assert [c.function for c in trace.calls() if c.depth >= 1] == ["<lib>", "double"]
    assert all(s.path == str(tmp_path / "lib.py") for s in trace.steps())
    assert metadata["activations"] == 1  # later calls into lib are not recorded: once per recording
    assert metadata["options"]["values"]["activation_path"] == "lib.py"


def test_the_activation_path_can_be_the_program_itself(tmp_path, trace_format):
    program = write(tmp_path, "shop.py", SHOP)
    _, gated, metadata = record_gated(tmp_path, trace_format, program, "--activation-path", str(program))
    assert top_calls(gated) == [("<__main__>", 1)]
    assert functions_called(gated) == {"<__main__>", "main", "other", "checkout", "helper"}
    assert metadata["activations"] == 1


FEED = '''\
def items():
    yield 1
    yield 2


def after():
    return 3
'''


def test_an_activation_path_generator_is_recorded_at_each_resume_until_it_finishes(tmp_path, trace_format):
    write(tmp_path, "feed.py", FEED)
    # Imported before recording starts: the first code of feed.py to run is then the generator.
    program = write(tmp_path, "main.py", f'''\
        import feed
        import timelapse

        with timelapse.record({str(tmp_path / "trace")!r}, activation_path="feed.py",
                              format={trace_format!r}, config=False):
            print(list(feed.items()), feed.after(), list(feed.items()))
        ''')
    result = run_python([str(program)], cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "[1, 2] 3 [1, 2]\n"), result.stderr
    trace = checked_trace(tmp_path / "trace")
    # Its start and each resume until it returns; then the option is spent: after() and the second
    # generator are not recorded.
    tops = [c for c in trace.calls() if c.depth == 1]
    assert [c.function for c in tops] == ["items"] * 3
    assert [decode_value(c.return_value) for c in tops] == [1, 2, None]
    metadata = json.loads((tmp_path / "trace" / "trace_metadata.json").read_text())
    assert metadata["activations"] == 3


def test_an_activation_path_module_body_is_one_activation(tmp_path, trace_format):
    write(tmp_path, "feed.py", FEED)
    program = write(tmp_path, "main.py", '''\
        import feed

        print(list(feed.items()))
        ''')
    # The first code of feed.py to run is its module body: it finishes, the option is spent.
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--activation-path", "feed.py")
    assert top_calls(trace) == [("<feed>", 1)] and metadata["activations"] == 1


def test_both_options_together(tmp_path, trace_format):
    program = write(tmp_path, "shop.py", SHOP)
    write(tmp_path, "nothing.py", "")
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "other",
                                      "--activation-path", "nothing.py")
    assert top_calls(trace) == [("other", 1)] * 3
    assert metadata["activations"] == 3


def test_pure_python_makes_no_difference(tmp_path):
    program = write(tmp_path, "shop.py", SHOP)
    streams = []
    for pure in ("0", "1"):
        env = dict(os.environ, TIMELAPSE_PURE=pure, PYTHONHASHSEED="0")
        out = tmp_path / f"t{pure}"
        run_timelapse(["record", "-q", "--no-config", "--format", "json", "-o", str(out), "--record-only",
                       "checkout", str(program)], cwd=tmp_path, env=env)
        checked_trace(out)
        streams.append(list(iter_events(out)))
    assert streams[0] == streams[1]


def test_the_api_takes_the_options_and_records_only_activations(tmp_path, trace_format):
    program = write(tmp_path, "api.py", f'''\
        import timelapse


        def chosen(x):
            return x + 1


        def skipped(x):
            return x - 1


        with timelapse.record({str(tmp_path / "trace")!r}, record_only=["__main__:chosen"],
                              format={trace_format!r}, config=False):
            skipped(1)
            chosen(1)
            skipped(2)
            chosen(2)
        ''')
    result = run_python([str(program)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trace = checked_trace(tmp_path / "trace")
    assert top_calls(trace) == [("chosen", 1)] * 2
    assert functions_called(trace) == {"chosen"}


# -- the mechanism: events while inactive ----------------------------------------------------------------

def test_outside_an_activation_only_the_starting_events_are_on(tmp_path):
    import timelapse.monitor as monitor

    seen = {}

    def chosen():
        recorder = timelapse.session._active.recorder
        seen["inside"] = sys.monitoring.get_events(recorder.tool_id)
        seen["local"] = sys.monitoring.get_local_events(recorder.tool_id, chosen.__code__)

    def look():
        recorder = timelapse.session._active.recorder
        return (sys.monitoring.get_events(recorder.tool_id),
                sys.monitoring.get_local_events(recorder.tool_id, chosen.__code__))

    with timelapse.record(tmp_path / "t", record_only=["*:*chosen"], config=False, capture_io=False):
        before = look()
        chosen()
        after = look()
    assert before == (monitor._INACTIVE_EVENTS, 0)
    assert seen == {"inside": monitor._GLOBAL_EVENTS, "local": monitor._LOCAL_EVENTS}
    assert after == (monitor._INACTIVE_EVENTS, 0)   # off again: the activation's code included
    trace = checked_trace(tmp_path / "t")
    assert top_calls(trace) == [("test_outside_an_activation_only_the_starting_events_are_on.<locals>.chosen", 1)]


# -- patterns --------------------------------------------------------------------------------------------

def code_in(tmp_path: Path, relative: str, source: str, qualname: str) -> types.CodeType:
    """The code object named ``qualname`` of ``source``, compiled as the file ``relative``."""
    path = write(tmp_path, relative, source)
    module = compile(path.read_text(), str(path), "exec")
    pending = [module]
    while pending:
        code = pending.pop()
        if code.co_qualname == qualname:
            return code
        pending.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    raise LookupError(qualname)


SHOP_MODULE = '''\
class Cart:
    def add(self):
        pass

    def checkout(self):
        pass


def checkout():
    def inner():
        pass
    return inner
'''


@pytest.mark.parametrize("pattern, qualname, expected", [
    ("myapp.handlers:checkout", "checkout", True),
    ("myapp.handlers:checkout", "Cart.checkout", False),
    ("myapp.*:Cart.*", "Cart.add", True),
    ("myapp.*:Cart.*", "checkout", False),
    ("*:checkout", "checkout", True),
    ("myapp.handlers:*checkout", "Cart.checkout", True),
    ("checkout", "checkout", True),                       # no ':': a qualname in any module
    ("checkout", "Cart.checkout", False),
    ("*.checkout", "Cart.checkout", True),
    ("myapp.handlers.checkout", "checkout", True),        # or the whole dotted name
    ("myapp.handlers.Cart.add", "Cart.add", True),
    ("myapp.handler?:checkout", "checkout", True),
    ("myapp.[hx]andlers:checkout", "checkout", True),
    ("myapp:checkout", "checkout", False),                # the module part is the whole module name
    ("myapp.handlers:checkout.<locals>.*", "checkout.<locals>.inner", True),
    ("Myapp.handlers:checkout", "checkout", False),       # case-sensitive
])
def test_function_patterns(tmp_path, pattern, qualname, expected, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    code = code_in(tmp_path, "myapp/handlers.py", SHOP_MODULE, qualname)
    write(tmp_path, "myapp/__init__.py", "")
    activation = Activation(Scope(cwd=str(tmp_path)), [pattern])
    assert activation.starts(code) is expected


def test_the_program_is_main_and_keeps_its_import_name(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    code = code_in(tmp_path, "app.py", SHOP_MODULE, "checkout")
    main = str(tmp_path / "app.py")
    for pattern, expected in [("__main__:checkout", True), ("app:checkout", True), ("other:checkout", False)]:
        assert Activation(Scope(main=main), [pattern]).starts(code) is expected


def test_code_out_of_scope_never_activates(tmp_path):
    code = json.dumps.__code__
    assert not Activation(Scope(), ["json:dumps", "dumps", "*"]).starts(code)
    assert Activation(Scope(include=["json"]), ["json:dumps"]).starts(code)


@pytest.mark.parametrize("pattern, reason", [
    ("", "has '', not a pattern (a non-empty string without spaces around it)"),
    (" checkout", "has ' checkout', not a pattern (a non-empty string without spaces around it)"),
    ("a:b:c", "has 'a:b:c': one ':' at most (module:qualname)"),
    (":checkout", "has ':checkout': an empty module or qualname around ':' (use * for any: "
                  "'*:checkout', 'myapp:*')"),
    ("myapp:", "has 'myapp:': an empty module or qualname around ':' (use * for any: "
               "'*:checkout', 'myapp:*')"),
    ("my-app:x", "has 'my-app:x': 'my-app' is not a module name pattern (letters, digits, _, dots, "
                 "* ? [...])"),
    ("a:b c", "has 'a:b c': 'b c' is not a qualified name pattern (letters, digits, _, dots, <>, "
              "* ? [...])"),
    ("a:[bc", "has 'a:[bc', whose [ is never closed by a ]"),
])
def test_bad_patterns_are_refused_by_the_option_check(pattern, reason):
    with pytest.raises(OptionError) as caught:
        check_function_pattern("record_only", pattern)
    assert str(caught.value) == f"record_only {reason}"
    with pytest.raises(OptionError) as made:
        Options(record_only=[pattern])
    # An empty string is refused first as for every list option; the rest with the same reason.
    assert str(made.value) == (f"record_only {reason}" if pattern else
                               "record_only must be a list of non-empty strings, not ['']")


def test_bad_values_are_one_line_and_exit_2(tmp_path):
    program = write(tmp_path, "shop.py", SHOP)
    cases = [
        (["--record-only", "a:b:c"], {},
         "timelapse: error: argument --record-only: has 'a:b:c': one ':' at most (module:qualname)\n"),
        ([], {"TIMELAPSE_RECORD_ONLY": "checkout,:x"},
         "timelapse: error: environment TIMELAPSE_RECORD_ONLY has ':x': an empty module or qualname "
         "around ':' (use * for any: '*:checkout', 'myapp:*')\n"),
        (["--activation-path", "nope.py"], {}, "timelapse: error: activation_path names no file: 'nope.py'\n"),
        # On the command line an empty path is a mistake (the environment's "" is none).
        (["--activation-path", ""], {},
         "timelapse: error: argument --activation-path: an empty path: name a file (or leave the option "
         "out)\n"),
        # A file that would never activate: out of scope, or not Python source.
        (["--activation-path", json.__file__], {},
         f"timelapse: error: activation_path names a file that is not recorded: {json.__file__!r} (out of "
         f"scope: see include, docs/scope.md)\n"),
        (["--activation-path", "data.txt"], {},
         "timelapse: error: activation_path names a file that is not Python source: 'data.txt' (a .py "
         "file, or the program itself)\n"),
    ]
    write(tmp_path, "data.txt", "hello\n")
    for flags, environ, message in cases:
        result = run_timelapse(["record", "--no-config", *flags, str(program)], cwd=tmp_path,
                               env=dict(os.environ, **environ))
        assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    write(tmp_path, "pyproject.toml", '[tool.timelapse]\nrecord_only = "checkout"\n')
    result = run_timelapse(["record", str(program)], cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, f"timelapse: error: pyproject.toml ({tmp_path / 'pyproject.toml'}): record_only must be a list "
           f"of strings, not 'checkout'\n")
    assert not (tmp_path / "trace-out").exists()
    with pytest.raises(ActivationError, match="activation_path names no file: 'nope.py'"):
        timelapse.Session(tmp_path / "t", activation_path="nope.py", config=False).start()
    assert not timelapse.is_recording()


# -- the options in every layer ------------------------------------------------------------------------

def test_the_options_in_every_layer(tmp_path):
    folder = tmp_path / "project"
    path = write(folder, "pyproject.toml", '[tool.timelapse]\nrecord-only = ["app:checkout", "*:Cart.*"]\n'
                                           'activation_path = "src/app.py"\n')
    loaded = load(cwd=str(folder / "sub"), environ={}, config=str(path))
    assert loaded.options.record_only == ("app:checkout", "*:Cart.*")
    # Relative to the configuration file's folder, as out is.
    assert loaded.options.activation_path == str(folder / "src" / "app.py")
    assert loaded.sources["activation_path"] == f"pyproject.toml ({path})"
    environ = {"TIMELAPSE_RECORD_ONLY": "a:b, c", "TIMELAPSE_ACTIVATION_PATH": "x.py"}
    loaded = load(cwd=str(tmp_path), environ=environ, config=False)
    assert (loaded.options.record_only, loaded.options.activation_path) == (("a:b", "c"), "x.py")
    assert loaded.sources["record_only"] == "environment (TIMELAPSE_RECORD_ONLY)"
    cleared = load({"activation_path": ""}, cwd=str(tmp_path), environ=environ, config=False)
    assert cleared.options.activation_path is None and cleared.sources["activation_path"] == "API"
    assert load(cwd=str(tmp_path), environ={"TIMELAPSE_ACTIVATION_PATH": ""}, config=False
                ).options.activation_path is None
    assert Options(activation_path=Path("a.py")).activation_path == "a.py"
    with pytest.raises(OptionError, match=r"^activation_path must be a file path \(or empty for none\), not 3$"):
        Options(activation_path=3)  # type: ignore[arg-type]
    assert "record_only" in config.LAYERED and "activation_path" in config.LAYERED


def test_timelapse_config_prints_them_and_reads_them_back(tmp_path):
    import tomllib

    result = run_timelapse(["config", "--no-config", "--record-only", "app:checkout", "--record-only", "x"],
                           cwd=tmp_path, env=dict(os.environ, TIMELAPSE_ACTIVATION_PATH="lib.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'record_only = ["app:checkout", "x"]  # command line' in lines
    assert 'activation_path = "lib.py"  # environment (TIMELAPSE_ACTIVATION_PATH)' in lines
    table = tomllib.loads("\n".join(lines))["tool"]["timelapse"]
    assert Options.from_mapping(table).record_only == ("app:checkout", "x")
    plain = run_timelapse(["config", "--no-config"], cwd=tmp_path)
    assert 'activation_path = ""  # default' in plain.stdout.splitlines()
    assert Options.from_mapping(tomllib.loads(plain.stdout)["tool"]["timelapse"]).activation_path is None


def test_a_config_file_and_the_environment_drive_a_recording(tmp_path, trace_format):
    program = write(tmp_path, "shop.py", SHOP)
    write(tmp_path, "pyproject.toml", '[tool.timelapse]\nrecord_only = ["shop:other"]\n')
    out = tmp_path / "t"
    result = run_timelapse(["record", "-q", "--format", trace_format, "-o", str(out), str(program)],
                           cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert top_calls(checked_trace(out)) == [("other", 1)] * 3
    env = dict(os.environ, TIMELAPSE_RECORD_ONLY="checkout")   # over the file
    result = run_timelapse(["record", "-q", "--format", trace_format, "-o", str(out), str(program)],
                           cwd=tmp_path, env=env)
    assert top_calls(checked_trace(out)) == [("checkout", 1)] * 3
    metadata = json.loads((out / "trace_metadata.json").read_text())
    assert metadata["options"]["sources"]["record_only"] == "environment (TIMELAPSE_RECORD_ONLY)"


# -- review fixes: other tools, 3.12's locals dicts, activation_path's window --------------------------

def test_another_tools_disabled_events_stay_disabled(tmp_path, trace_format):
    # The program is a sys.monitoring tool of its own: what it DISABLEd stays so, activations or not
    # (restart_events() would undo every tool's DISABLEs: timelapse calls it only when it DISABLEd
    # something itself, and DISABLEs nothing while another tool is there).
    program = write(tmp_path, "tool.py", '''\
        import sys

        mon = sys.monitoring
        TOOL = 5 if mon.get_tool(5) is None else 1
        mon.use_tool_id(TOOL, "mytool")
        seen = []


        def on_start(code, offset):
            seen.append(code.co_name)
            return mon.DISABLE


        mon.register_callback(TOOL, mon.events.PY_START, on_start)
        mon.set_events(TOOL, mon.events.PY_START)


        def a():
            return 1


        def b():
            return a() + 1


        for i in range(5):
            a()
            b()
        mon.set_events(TOOL, 0)
        print("PY_START seen:", seen)
        ''')
    result, trace, metadata = record_gated(tmp_path, trace_format, program, "--record-only", "b")
    assert result.stdout == "PY_START seen: ['a', 'b']\n"
    assert top_calls(trace) == [("b", 1)] * 5 and metadata["activations"] == 5
    assert [len(c.children) for c in trace.calls() if c.depth == 1] == [1] * 5  # a() inside, each time


def test_a_generator_started_in_an_activation_and_finished_outside_lets_its_locals_go(tmp_path, trace_format):
    # Python 3.12: the frame's locals dict, read in the activation, is not kept once it is over.
    program = write(tmp_path, "life.py", '''\
        import gc


        class Noisy:
            def __del__(self):
                print("Noisy died")


        def gen():
            obj = Noisy()
            yield 1
            d = locals()
            yield 2


        def start_it(g):
            return next(g)


        g = gen()
        start_it(g)
        print(next(g))
        next(g, None)
        del g
        gc.collect()
        print("after gc")
        ''')
    result, trace, _ = record_gated(tmp_path, trace_format, program, "--record-only", "start_it")
    assert result.stdout == "2\nNoisy died\nafter gc\n"
    assert functions_called(trace) == {"start_it", "gen"}


def test_a_generator_resumed_in_an_activation_keeps_the_locals_dict_the_program_holds(tmp_path, trace_format):
    # Python 3.12: the dict locals() gave the program before the frame was first recorded (at a resume)
    # is not emptied.
    program = write(tmp_path, "life2.py", '''\
        def gen():
            a = 1
            d = locals()
            yield 1
            b = 2
            yield 2
            print("the program's dict has a:", d.get("a"))


        def step(g):
            return next(g)


        g = gen()
        next(g)
        step(g)
        next(g, None)
        ''')
    result, trace, _ = record_gated(tmp_path, trace_format, program, "--record-only", "step")
    assert result.stdout == "the program's dict has a: 1\n"
    gen_call = [c for c in trace.calls() if c.function == "gen"]
    assert len(gen_call) == 1 and decode_value(gen_call[0].return_value) == 2


def test_the_activation_path_window_records_every_thread(tmp_path, trace_format):
    # As the reference recorder: while the window is open, all threads are recorded.
    program = write(tmp_path, "apth.py", '''\
        import threading


        def work(n):
            s = 0
            for i in range(n):
                s += i
            return s


        t = threading.Thread(target=work, args=(4,))
        t.start()
        t.join()
        print(work(3))
        ''')
    _, trace, metadata = record_gated(tmp_path, trace_format, program, "--activation-path", "apth.py")
    assert ("work", 2) in top_calls(trace)
    assert [(c.function, c.thread, decode_value(c.return_value)) for c in trace.calls() if c.function == "work"] == [
        ("work", 2, 6), ("work", 1, 3)]
    assert metadata["activations"] == 2


def test_the_activation_path_window_closes_when_its_own_frame_finishes(tmp_path, trace_format):
    # Two threads in the file's code at once: the second is inside the window, and its finishing
    # first does not close it; the window's own frame (the first) does.
    write(tmp_path, "lib.py", '''\
        def work(entered, release):
            if entered is not None:
                entered.set()
            if release is not None:
                release.wait()
            return 1


        def other():
            return 2
        ''')
    program = write(tmp_path, "main.py", f'''\
        import threading

        import lib
        import timelapse

        entered, release = threading.Event(), threading.Event()
        with timelapse.record({str(tmp_path / "trace")!r}, activation_path="lib.py",
                              format={trace_format!r}, config=False):
            first = threading.Thread(target=lib.work, args=(entered, release))
            first.start()
            entered.wait()
            second = threading.Thread(target=lib.work, args=(None, None))
            second.start()
            second.join()
            lib.other()       # the window is still open: recorded
            release.set()
            first.join()
            lib.other()       # closed: not recorded
        ''')
    result = run_python([str(program)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trace = checked_trace(tmp_path / "trace")
    # (a call cut by a thread switch is re-opened: each appears once or more)
    assert set(top_calls(trace)) == {("other", 1), ("work", 2), ("work", 3)}
    assert [c.function for c in trace.calls() if c.thread == 1] == ["other"]
    metadata = json.loads((tmp_path / "trace" / "trace_metadata.json").read_text())
    assert metadata["activations"] == 3

"""``timelapse view``'s server side (timelapse.viewer): the index, the JSON routes, what it refuses.

The page itself is tested in a real browser by test_view_browser.py; here every route is asked over
real HTTP, on traces recorded from real programs in both formats, and checked against
``reader.Trace`` where the two must agree.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from conftest import CONSOLE_SCRIPT, opening_events, write_trace_folder

from timelapse.reader import Trace
from timelapse.viewer import ViewServer, api, index as index_module
from timelapse.viewer.index import TraceIndex, value_node

BANK = textwrap.dedent("""\
    class Account:
        def __init__(self, owner, balance):
            self.owner = owner
            self.balance = balance
            self.history = []

        def deposit(self, amount):
            self.balance += amount
            self.history.append(("deposit", amount))
            return self.balance


    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)


    account = Account("ann", 10)
    for x in range(3):
        account.deposit(x)
        print("balance", account.balance)
    print(fib(4))
    book = {"a": 1, "b": [1, 2, 3]}
    print("done")
""")


def _record(tmp_path: Path, source: str, trace_format: str, name: str = "prog.py") -> Path:
    program = tmp_path / name
    program.write_text(source)
    out = tmp_path / f"trace-{trace_format}"
    done = subprocess.run([str(CONSOLE_SCRIPT), "record", "-q", "--format", trace_format, "-o", str(out),
                           str(program)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def _get(server: ViewServer, route: str, *, host: str | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Host": host} if host is not None else {}
        connection.request("GET", route, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.getheader("Content-Type") == "application/json":
            return response.status, json.loads(body)
        return response.status, {"bytes": body, "type": response.getheader("Content-Type")}
    finally:
        connection.close()


def _ok(server: ViewServer, route: str) -> dict:
    status, body = _get(server, route)
    assert status == 200, (route, status, body)
    return body


@pytest.fixture(params=["json", "bin"])
def bank(request, tmp_path):
    out = _record(tmp_path, BANK, request.param)
    with ViewServer(out) as server:
        assert server.wait_indexed(30)
        yield server


def _steps_at(server: ViewServer, line: int) -> list[int]:
    index = server.index
    return [i for i in range(index.steps_ready()) if index.step_line[i] == line]


def test_trace_info_and_source(bank):
    info = _ok(bank, "/api/trace")
    assert info["complete"] is True and info["failure"] is None
    assert info["program"].endswith("prog.py") and info["exit_status"] == 0
    assert info["format"] in ("trace.json", "trace.bin")
    trace = Trace.load(bank.index.folder)
    assert info["steps"] == len(trace.steps()) and info["calls"] == len(trace.calls())
    names = {f["name"] for f in info["functions"]}
    assert {"<toplevel>", "Account.deposit", "fib"} <= names
    source = _ok(bank, "/api/source?path=0")
    assert source["text"] == BANK and source["path"] == info["program"]
    assert {2, 18, 23} <= set(source["lines_run"]) and 6 not in source["lines_run"]   # 6 is blank


def test_steps_agree_with_the_reader(bank):
    """Every step's place and variables, read back from the index's pages (a def-line step's are
    its Call's arguments), are the reader's."""
    trace = Trace.load(bank.index.folder)
    steps = trace.steps()
    for i, expected in enumerate(steps):
        assert (bank.index.step_path[i], bank.index.step_line[i]) == (trace.path_names.index(expected.path),
                                                                        expected.line)
        assert dict(bank.index.locals_at(i)) == expected.values
        assert bank.index.function_name(bank.index.step_call[i]) == expected.call.function


def test_step_stack_locals_and_changes(bank):
    # Inside the second deposit: `self.history.append(...)` (line 9).
    first, second, third = _steps_at(bank, 9)
    step = _ok(bank, f"/api/step?i={second}")
    assert [frame["function"] for frame in step["stack"]] == ["<toplevel>", "<__main__>", "Account.deposit"]
    caller = step["stack"][1]
    assert caller["line"] == 19 and bank.index.step_line[caller["step"]] == 19
    assert step["stack"][-1]["step"] == second
    locals_ = {entry["name"]: entry for entry in step["locals"]}
    assert locals_["amount"]["value"]["text"] == "1"
    account = locals_["self"]["value"]
    assert account["kind"] == "Struct"
    fields = dict(account["children"])
    assert fields["balance"]["text"] == "11" and fields["owner"]["text"] == "'ann'"
    assert fields["history"]["length"] == 1
    # Line 8 (`self.balance += amount`) changed self; nothing changed amount.
    assert locals_["self"]["changed"] is True and locals_["amount"]["changed"] is False
    assert step["output_count"] == 1    # "balance 10" so far
    dictionary = _ok(bank, f"/api/step?i={_steps_at(bank, 23)[0]}")
    book = {e["name"]: e for e in dictionary["locals"]}["book"]["value"]
    assert [label for label, _ in book["children"]] == ["'a'", "'b'"] and book["length"] == 2
    assert dict(book["children"])["'b'"]["length"] == 3


def test_moves(bank):
    calls_line = _steps_at(bank, 19)                        # `account.deposit(x)`, three times
    over = _ok(bank, f"/api/go?i={calls_line[0]}&how=over")["step"]
    assert bank.index.step_line[over] == 20                 # the print after it: the call stepped over
    back = _ok(bank, f"/api/go?i={over}&how=back_over")["step"]
    assert back == calls_line[0]
    inside = _steps_at(bank, 9)[0]
    out = _ok(bank, f"/api/go?i={inside}&how=out")["step"]
    assert bank.index.step_line[out] == 20 and out > inside
    assert _ok(bank, f"/api/go?i={inside}&how=back_out")["step"] == calls_line[0]
    entries = [bank.index.call_first[c] for c in range(bank.index.calls_ready())
               if bank.index.function_name(c) == "Account.deposit"]
    assert _ok(bank, f"/api/go?i={inside}&how=next_call")["step"] == entries[1]
    assert _ok(bank, f"/api/go?i={inside}&how=prev_call")["step"] == entries[0]
    assert _ok(bank, f"/api/go?i={entries[0]}&how=prev_call")["step"] is None
    last = bank.index.steps_ready() - 1
    assert _ok(bank, f"/api/go?i={last}&how=over")["step"] is None
    # fib recursion: over from fib(4)'s line skips the whole recursion below it.
    index = bank.index
    fib_top = next(c for c in range(index.calls_ready()) if index.function_name(c) == "fib")
    line_of_fib = index.call_first[fib_top] + 1
    over = _ok(bank, f"/api/go?i={line_of_fib}&how=over")["step"]
    assert index.step_call[over] == fib_top
    between = range(line_of_fib + 1, over)
    assert len(between) > 10 and all(index.call_depth[index.step_call[j]] > index.call_depth[fib_top]
                                     for j in between)
    status, body = _get(bank, f"/api/go?i={inside}&how=sideways")
    assert status == 400 and "how must be one of" in body["error"]


def test_call_tree_and_paging(bank):
    root = _ok(bank, "/api/call?c=0")
    assert root["function"] == "<toplevel>" and root["parent"] == -1
    [module] = _ok(bank, "/api/calls?parent=0")["calls"]
    listing = _ok(bank, f"/api/calls?parent={module['call']}")
    names = [entry["function"] for entry in listing["calls"]]
    # The class body runs as a call of its own (named for the class), then __init__.
    assert names == ["Account", "Account.__init__", "Account.deposit", "Account.deposit", "Account.deposit",
                     "fib"]
    deposit = listing["calls"][3]
    assert (deposit["args"].endswith("amount=1"), deposit["return"]) == (True, "11")
    assert deposit["first_step"] <= deposit["last_step"]
    page = _ok(bank, f"/api/calls?parent={module['call']}&offset=4&limit=1")
    assert page["total"] == 6 and [e["call"] for e in page["calls"]] == [listing["calls"][4]["call"]]
    fib_call = listing["calls"][5]
    assert fib_call["children"] == 2 and fib_call["return"] == "3"


def test_output_items_know_their_steps(bank):
    items = _ok(bank, "/api/output?offset=0&limit=10")
    assert items["total"] == 5
    assert [item["text"] for item in items["items"]] == ["balance 10\n", "balance 11\n", "balance 13\n",
                                                          "3\n", "done\n"]
    for item in items["items"]:
        assert item["stream"] == "stdout"
        assert bank.index.step_line[item["step"]] in (20, 21, 23)
        assert _ok(bank, f"/api/step?i={item['step']}")["output_count"] == item["index"] + 1
    assert _ok(bank, "/api/output?offset=4&limit=10")["items"][0]["text"] == "done\n"


def test_variable_history(bank):
    module_step = _steps_at(bank, 23)[0]
    history = _ok(bank, f"/api/history?i={module_step}&name=x")
    assert [change["text"] for change in history["changes"]] == ["0", "1", "2"]
    assert all(bank.index.step_line[c["step"]] == 19 for c in history["changes"])
    inside = _steps_at(bank, 10)[1]     # `return self.balance`, second deposit
    balance = _ok(bank, f"/api/history?i={inside}&name=self")
    assert len(balance["changes"]) == 3 and not balance["cut"]   # shown at entry, after +=, after append
    short = _ok(bank, f"/api/history?i={module_step}&name=x&limit=2")
    assert short["cut"] is True and len(short["changes"]) == 2
    assert _ok(bank, f"/api/history?i={module_step}&name=nothing")["changes"] == []


def test_history_before_a_step_is_the_tail_of_the_whole_history(tmp_path):
    """``before=M``: the last changes at or before M, found backwards, equal the forward walk's tail,
    gaps (a step where the variable is not shown) included."""
    source = textwrap.dedent("""\
        def work():
            for i in range(30):
                x = i // 3
                if i % 7 == 0:
                    del x
                    y = i
        work()
    """)
    out = _record(tmp_path, source, "bin")
    with ViewServer(out) as server:
        assert server.wait_indexed(30)
        index = server.index
        work = next(c for c in range(index.calls_ready()) if index.function_name(c) == "work")
        own = [j for j in range(index.steps_ready()) if index.step_call[j] == work]
        whole = _ok(server, f"/api/history?i={own[-1]}&name=x&limit=1000")
        assert not whole["cut"] and len(whole["changes"]) == 10   # x = 0 … 9, unchanged across a del
        for at in own[::5]:
            expected = [c for c in whole["changes"] if c["step"] <= at]
            for limit in (1, 3, 1000):
                got = _ok(server, f"/api/history?i={own[-1]}&name=x&limit={limit}&before={at}")
                assert got["changes"] == expected[-limit:], (at, limit)
                assert got["cut"] == (len(expected) > limit)


THREADS = textwrap.dedent("""\
    import threading

    def player(mine, theirs, points):
        score = 0
        for _ in range(3):
            mine.wait()
            mine.clear()
            score += points
            theirs.set()
        return score

    ping_turn, pong_turn = threading.Event(), threading.Event()
    a = threading.Thread(target=player, args=(ping_turn, pong_turn, 1))
    b = threading.Thread(target=player, args=(pong_turn, ping_turn, 2))
    a.start(); b.start()
    ping_turn.set()
    a.join(); b.join()
""")


@pytest.mark.parametrize("trace_format", ["json", "bin"])
def test_a_call_cut_by_thread_switches_is_one_call(tmp_path, trace_format):
    out = _record(tmp_path, THREADS, trace_format)
    with ViewServer(out) as server:
        assert server.wait_indexed(30)
        index = server.index
        players = [c for c in range(index.calls_ready()) if index.function_name(c) == "player"]
        assert len(players) == 2, "one call per thread, however many times it was switched away"
        entries = [_ok(server, f"/api/call?c={c}") for c in players]
        assert sorted(entry["return"] for entry in entries) == ["3", "6"]
        assert len({entry["thread"] for entry in entries} | {_ok(server, "/api/call?c=0")["thread"]}) == 3
        assert len(_ok(server, "/api/trace")["threads"]) == 3
        lines = THREADS.splitlines()
        score_line, def_line = lines.index("        score += points") + 1, lines.index("def player(mine, theirs, points):") + 1
        for player in players:
            # The stream switched threads inside the call: the other thread's steps lie inside its span.
            own = [i for i in range(index.steps_ready()) if index.step_call[i] == player]
            assert any(index.step_thread[i] != index.step_thread[own[0]] for i in range(own[0], own[-1] + 1))
            # Stepping over stays in the call's thread and call.
            at = next(i for i in own if index.step_line[i] == score_line)
            over = _ok(server, f"/api/go?i={at}&how=over")["step"]
            assert index.step_call[over] == player and index.step_line[over] == score_line + 1
            history = _ok(server, f"/api/history?i={own[-1]}&name=score")
            assert len(history["changes"]) == 4 and history["changes"][0]["text"] == "0"
            # No step of the re-opening protocol (a def-line Step after a switch) is a step of the call.
            assert [i for i in own if index.step_line[i] == def_line] == [own[0]]


def test_pages_are_read_back_lazily(tmp_path, monkeypatch):
    """More steps than the pages kept in memory: every step read back equals the reader's."""
    monkeypatch.setattr(index_module, "PAGE_ITEMS", 16)
    monkeypatch.setattr(index_module, "CACHED_PAGES", 2)
    out = _record(tmp_path, "total = 0\nfor i in range(400):\n    total += i\n    items = [i, total]\n",
                  "bin")
    index = TraceIndex(out)
    try:
        index.build()
        trace_steps = Trace.load(out).steps()
        assert index.steps_ready() == len(trace_steps) > 16 * 2 * 10
        for i in list(range(0, len(trace_steps), 7)) + list(range(len(trace_steps) - 1, 0, -13)):
            assert {index.name(v): r for v, r in index.step_values(i)} == trace_steps[i].values
        assert len(index.values._pages) > 2 * 10 and len(index.values._cache) <= 2
    finally:
        index.close()


def test_steps_not_read_yet_are_503_with_retry(tmp_path):
    out = _record(tmp_path, "x = 1\n", "json")
    server = ViewServer(out)    # bound, not started: nothing read yet
    try:
        with pytest.raises(api.NotReady):
            api.step(server.index, 0)
        server.index.build()
        assert api.step(server.index, 0)["line"] == 1
        with pytest.raises(api.NotFound):
            api.step(server.index, 5)
    finally:
        server.close()


def test_a_damaged_trace_shows_what_was_read(tmp_path):
    out = _record(tmp_path, BANK, "json")
    stream = out / "trace.json"
    data = stream.read_bytes()
    stream.write_bytes(data[: len(data) // 2])
    with ViewServer(out) as server:
        assert server.wait_indexed(30)
        info = _ok(server, "/api/trace")
        assert info["complete"] and info["failure"] and info["steps"] > 0
        assert _ok(server, f"/api/step?i={info['steps'] - 1}")["index"] == info["steps"] - 1


# -- what it refuses ---------------------------------------------------------------------------------

def test_only_the_page_and_the_routes_are_served(tmp_path):
    out = _record(tmp_path, BANK, "json")
    (out / "files" / "secret.txt").write_text("not to be served")
    with ViewServer(out) as server:
        page = _get(server, "/")
        assert page[0] == 200 and page[1]["type"].startswith("text/html")
        for route in ["/static/../../setup.py", "/static/..%2f..%2fsetup.py", "/static/%2e%2e/index.py",
                      "/static//etc/passwd", "/static/", "/etc/passwd", "//etc/passwd", "/files/secret.txt",
                      "/trace_metadata.json", "/static/index.py", "/api/../static/index.html", "/api/nothing"]:
            status, body = _get(server, route)
            assert status == 404, (route, status)
            assert b"not to be served" not in json.dumps(body).encode()
        for route in ["/api/source?path=-1", "/api/source?path=99", "/api/step?i=-1", "/api/call?c=999"]:
            assert _get(server, route)[0] == 404, route
        for route in ["/api/source?path=../../etc/passwd", "/api/source?path=/etc/passwd", "/api/step",
                      "/api/step?i=one", "/api/output?limit=0", "/api/output?offset=-3",
                      "/api/calls?parent=0&limit=100000"]:
            assert _get(server, route)[0] == 400, route


def test_other_hosts_are_refused(tmp_path):
    out = _record(tmp_path, "x = 1\n", "json")
    with ViewServer(out) as server:
        assert _get(server, "/api/trace", host=f"localhost:{server.port}")[0] == 200
        for host in ["evil.example", f"evil.example:{server.port}", "127.0.0.1:1", ""]:
            status, body = _get(server, "/api/trace", host=host)
            assert status == 403 and "answers only" in body["error"], host


def test_a_source_copy_never_leaves_files(tmp_path):
    """Paths that would resolve outside files/ (relative ones, a symlink out) are not read."""
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    events = opening_events("/nonexistent/prog/main.py") + [
        {"Path": "../../outside.py"},
        {"Path": "/nonexistent/prog/link.py"},
        {"Step": {"path_id": 0, "line": 1}},
        {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
    ]
    folder = write_trace_folder(tmp_path / "trace", events, metadata={"program": "/nonexistent/prog/main.py"})
    copies = folder / "files" / "nonexistent" / "prog"
    copies.mkdir(parents=True)
    (copies / "main.py").write_text("print('main')\n")
    os.symlink(outside, copies / "link.py")
    (folder / "outside.py").write_text("SECRET = 2\n")
    with ViewServer(folder) as server:
        assert server.wait_indexed(30)
        assert _ok(server, "/api/source?path=0")["text"] == "print('main')\n"
        assert _ok(server, "/api/source?path=1")["text"] is None
        assert _ok(server, "/api/source?path=2")["text"] is None


def test_it_listens_on_loopback_only(tmp_path):
    out = _record(tmp_path, "x = 1\n", "json")
    with ViewServer(out) as server:
        assert server._httpd.server_address[0] == "127.0.0.1"
        addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for address in addresses - {"127.0.0.1", "127.0.1.1"}:
            with pytest.raises(OSError):
                socket.create_connection((address, server.port), timeout=2).close()


# -- the command -------------------------------------------------------------------------------------

def test_the_command_serves_until_ctrl_c(tmp_path):
    out = _record(tmp_path, BANK, "bin")
    # SIGINT as an interactive shell delivers it (a background test runner may have it ignored).
    starter = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
               "from timelapse.cli import main; sys.exit(main())")
    process = subprocess.Popen([sys.executable, "-c", starter, "view", str(out), "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"timelapse: viewing {out} at http://127.0.0.1:") and "Ctrl-C" in line
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/trace", timeout=30) as response:
            assert json.load(response)["program"].endswith("prog.py")
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"<html" in response.read().lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/trace"], "no such folder"),
    (["."], "has no trace.json or trace.bin"),
    (["--port", "70000", "."], "--port must be from 0 to 65535"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    done = subprocess.run([str(CONSOLE_SCRIPT), "view", *args, "--no-browser"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr and done.stderr.startswith("timelapse: error:")


def test_a_taken_port_is_one_line(tmp_path):
    out = _record(tmp_path, "x = 1\n", "json")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(CONSOLE_SCRIPT), "view", str(out), "--port", str(port), "--no-browser"],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


# -- value nodes and the stream's rarer events, on hand-made traces -------------------------------------

def _hand_made(tmp_path: Path, events: list) -> TraceIndex:
    folder = write_trace_folder(tmp_path / "trace", opening_events() + events,
                                metadata={"program": "/nonexistent/prog/main.py"})
    index = TraceIndex(folder)
    index.build()
    assert index.failure is None, index.failure
    return index


INT = 1     # opening_events: TypeId 0 None, 1 int


def _int(i: int) -> dict:
    return {"kind": "Int", "type_id": INT, "i": i}


def test_value_nodes(tmp_path):
    types = [{"Type": {"kind": 0, "lang_type": "dict", "specific_info": {"kind": "None"}}},       # 2
             {"Type": {"kind": 27, "lang_type": "tuple", "specific_info": {"kind": "None"}}},     # 3
             {"Type": {"kind": 16, "lang_type": "<truncated>", "specific_info": {"kind": "None"}}},  # 4
             {"Type": {"kind": 6, "lang_type": "Point", "specific_info": {"kind": "Struct", "fields": [
                 {"name": "x", "type_id": INT}, {"name": "y", "type_id": INT}]}}},                 # 5
             {"Type": {"kind": 0, "lang_type": "list", "specific_info": {"kind": "None"}}}]       # 6
    pair = lambda k, v: {"kind": "Tuple", "type_id": 3, "elements": [k, v]}  # noqa: E731
    more = {"kind": "Raw", "type_id": 4, "r": "… 1,234 more"}
    mapping = {"kind": "Sequence", "type_id": 2, "is_slice": False,
               "elements": [pair({"kind": "String", "type_id": INT, "text": "k"}, _int(1)), more]}
    pairs_list = {"kind": "Sequence", "type_id": 6, "is_slice": False, "elements": [pair(_int(1), _int(2))]}
    point = {"kind": "Struct", "type_id": 5, "field_values": [_int(3), _int(4)]}
    index = _hand_made(tmp_path, types)
    try:
        node = value_node(mapping, index)
        assert node["type"] == "dict" and node["length"] == 1 + 1234
        assert [label for label, _ in node["children"]] == ["'k'", "…"]
        assert node["children"][0][1]["text"] == "1"
        listed = value_node(pairs_list, index)        # a list of pairs is not a mapping
        assert [label for label, _ in listed["children"]] == ["0"] and listed["children"][0][1]["kind"] == "Tuple"
        shown = value_node(point, index)
        assert shown["type"] == "Point" and dict(shown["children"])["y"]["text"] == "4"
        assert "x=3" in shown["text"]
        assert value_node({"kind": "Reference", "type_id": INT, "dereferenced": _int(7)}, index)["text"] == "7"
        assert value_node("not a record", index)["kind"] == "?"
    finally:
        index.close()


def test_a_drop_at_a_page_boundary_reopens_the_page(tmp_path, monkeypatch):
    """The dropped step was the first of a page: the step before it (written out) takes the Values
    that follow again; nothing is lost, reading goes on."""
    monkeypatch.setattr(index_module, "PAGE_ITEMS", 4)
    events = [{"VariableName": "x"}]
    for line in range(1, 6):
        events += [{"Step": {"path_id": 0, "line": line}}, {"Value": {"variable_id": 0, "value": _int(line)}}]
    events += ["DropLastStep", {"Value": {"variable_id": 0, "value": _int(99)}},
               {"Step": {"path_id": 0, "line": 7}}, {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        assert list(index.step_line) == [1, 2, 3, 4, 7]
        assert index.locals_at(3) == [("x", _int(99))]     # the reader's rule: the last Value counts
        assert [index.locals_at(i) for i in (0, 4)] == [[("x", _int(1))], []]
    finally:
        index.close()


def test_thread_zero_and_a_late_first_thread_start(tmp_path):
    """Another recorder's numbering: threads 0 and 1, and calls open before the first ThreadStart."""
    switch = {"Return": {"return_value": {"kind": "Raw", "type_id": 2, "r": "<thread switch>"}}}
    events = [{"Type": {"kind": 16, "lang_type": "<thread switch>", "specific_info": {"kind": "None"}}},
              {"Function": {"path_id": 0, "line": 3, "name": "main"}},
              {"Step": {"path_id": 0, "line": 3}}, {"Call": {"function_id": 1, "args": []}},
              {"ThreadStart": 0},                                       # late: main is open
              {"Step": {"path_id": 0, "line": 4}}, switch,
              {"ThreadStart": 1}, {"Step": {"path_id": 0, "line": 9}},
              {"ThreadSwitch": 0}, {"Step": {"path_id": 0, "line": 3}}, {"Call": {"function_id": 1, "args": []}},
              {"Step": {"path_id": 0, "line": 5}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        assert list(index.step_line) == [3, 4, 9, 5]            # the re-opening Step is no step
        mains = [c for c in range(index.calls_ready()) if index.function_name(c) == "main"]
        assert len(mains) == 1 and [index.step_call[i] for i in (0, 1, 3)] == mains * 3
        assert index.call_returned[mains[0]] >= 0 and index.call_end[0] == 3
        assert [index.thread_at(i) for i in range(4)] == [0, 0, 1, 0]
    finally:
        index.close()


def test_definitions_between_the_def_line_step_and_its_call(tmp_path):
    events = [{"Function": {"path_id": 0, "line": 1, "name": "f"}},
              {"Step": {"path_id": 0, "line": 1}}, {"VariableName": "a"}, {"Path": "/nonexistent/prog/b.py"},
              {"Call": {"function_id": 1, "args": []}}, {"Step": {"path_id": 0, "line": 2}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        assert [index.function_name(index.step_call[i]) for i in range(2)] == ["f", "f"]
    finally:
        index.close()


@pytest.mark.parametrize("after", [[], [{"Value": {"variable_id": 0, "value": _int(7)}}]])
def test_a_def_line_steps_variables_are_its_calls_args_in_event_order(tmp_path, after):
    """As the reader (and the db-backend) list them: Values before the Call, its args, the Values
    after it; a name given twice shows the later one."""
    events = [{"Function": {"path_id": 0, "line": 1, "name": "f"}}, {"VariableName": "a"}, {"VariableName": "b"},
              {"Step": {"path_id": 0, "line": 1}}, {"Value": {"variable_id": 0, "value": _int(1)}},
              {"Call": {"function_id": 1, "args": [{"variable_id": 0, "value": _int(5)},
                                                   {"variable_id": 1, "value": _int(6)}]}},
              *after, {"Step": {"path_id": 0, "line": 2}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        expected = {"a": _int(7 if after else 5), "b": _int(6)}
        assert dict(index.locals_at(0)) == expected == Trace.load(index.folder).steps()[0].values
        assert index.locals_at(1) == []     # the body's step: its own Values only
    finally:
        index.close()


def test_a_number_too_big_for_the_index_is_a_failure_not_a_traceback(tmp_path, capfd):
    events = opening_events() + [{"Step": {"path_id": 0, "line": 1}}, {"Step": {"path_id": 0, "line": 2**31}}]
    folder = write_trace_folder(tmp_path / "trace", events, metadata={"program": "/nonexistent/prog/main.py"})
    with ViewServer(folder) as server:
        assert server.wait_indexed(30)
        info = _ok(server, "/api/trace")
        assert info["failure"].startswith("OverflowError") and info["steps"] == 1
    assert "Traceback" not in capfd.readouterr().err


def test_drop_last_step_takes_back_the_step_and_its_values(tmp_path):
    events = [{"VariableName": "x"},
              {"Step": {"path_id": 0, "line": 1}}, {"Value": {"variable_id": 0, "value": _int(1)}},
              {"Step": {"path_id": 0, "line": 2}}, {"Value": {"variable_id": 0, "value": _int(2)}},
              "DropLastStep",
              {"Step": {"path_id": 0, "line": 3}}, {"Value": {"variable_id": 0, "value": _int(3)}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        assert index.steps_ready() == 2 and list(index.step_line) == [1, 3]
        assert [index.locals_at(i) for i in range(2)] == [[("x", _int(1))], [("x", _int(3))]]
        assert index.step_prev[1] == 0 and api.history(index, 1, "x", 10)["changes"][1]["step"] == 1
    finally:
        index.close()


def test_a_lone_surrogate_in_a_trace_json_string_is_served(tmp_path, monkeypatch):
    """orjson refuses lone surrogates (a trace.json may spell one): pages and answers still work."""
    monkeypatch.setattr(index_module, "PAGE_ITEMS", 2)    # the output's pages get written
    text_type = {"Type": {"kind": 9, "lang_type": "str", "specific_info": {"kind": "None"}}}   # TypeId 2
    events = [text_type, {"VariableName": "s"}]
    for line in range(1, 6):
        events += [{"Step": {"path_id": 0, "line": line}},
                   {"Value": {"variable_id": 0, "value": {"kind": "String", "type_id": 2, "text": "a\ud800"}}},
                   {"Event": {"kind": 0, "metadata": "", "content": f"out\udc80 {line}"}}]
    events.append({"Return": {"return_value": {"kind": "None", "type_id": 0}}})
    folder = write_trace_folder(tmp_path / "trace", opening_events() + events,
                                metadata={"program": "/nonexistent/prog/main.py"})
    with ViewServer(folder) as server:
        assert server.wait_indexed(30) and server.index.failure is None
        [entry] = _ok(server, "/api/step?i=0")["locals"]
        assert entry["value"]["text"] == repr("a\ud800")
        items = _ok(server, "/api/output?offset=0&limit=10")["items"]
        assert [item["text"] for item in items] == [f"out\udc80 {line}" for line in range(1, 6)]


# -- moves, checked against a brute-force search ------------------------------------------------------

RECURSIVE = textwrap.dedent("""\
    import threading

    def fact(n):
        if n <= 1:
            return 1
        r = n * fact(n - 1)
        return r

    def twice():
        return fact(3) + fact(2)

    worker = threading.Thread(target=twice)
    worker.start()
    twice()
    worker.join()
""")


def test_next_and_previous_call_are_the_nearest_entries_on_the_thread(tmp_path):
    out = _record(tmp_path, RECURSIVE, "bin")
    with ViewServer(out) as server:
        assert server.wait_indexed(30)
        index = server.index
        calls = range(index.calls_ready())
        for i in range(index.steps_ready()):
            call = index.step_call[i]
            same = [index.call_first[c] for c in calls if index.call_function[c] == index.call_function[call]
                    and index.call_thread[c] == index.call_thread[call]]
            later = [first for first in same if first > i]
            earlier = [first for first in same if first < i]
            assert api.go(index, i, "next_call")["step"] == (min(later) if later else None), i
            assert api.go(index, i, "prev_call")["step"] == (max(earlier) if earlier else None), i


def test_moves_while_the_trace_is_read_say_not_ready(tmp_path, monkeypatch):
    """Reading stopped halfway (as while the builder still reads): "nowhere to go" would be wrong."""
    source = "def work():\n    t = 0\n    for i in range(300):\n        t += i\n    return t\n\nr = work()\nprint(r)\n"
    out = _record(tmp_path, source, "bin")
    events = list(__import__("timelapse.reader", fromlist=["iter_events"]).iter_events(out, raw_values=True))
    monkeypatch.setattr(index_module, "iter_events", lambda folder, raw_values: iter(events[: len(events) // 2]))
    index = TraceIndex(out)
    try:
        index.build()
        index.complete = False          # as if the rest were still to come
        index.ready_steps -= 1
        r_line = next(i for i in range(index.steps_ready()) if index.step_line[i] == 7)
        inside = next(i for i in range(index.steps_ready()) if index.step_line[i] == 4)
        for i, how in [(r_line, "over"), (inside, "out"), (inside, "next_call"), (index.steps_ready() - 1, "over")]:
            with pytest.raises(api.NotReady):
                api.go(index, i, how)
        assert api.go(index, inside, "back_out")["step"] is not None
    finally:
        index.close()


def test_a_history_search_has_a_budget(bank, monkeypatch):
    monkeypatch.setattr(api, "HISTORY_STEPS", 3)
    module_step = _steps_at(bank, 23)[0]
    for before in ("", f"&before={module_step}"):
        history = _ok(bank, f"/api/history?i={module_step}&name=nothing{before}")
        assert history["cut"] is True and history["changes"] == []


def test_a_call_that_never_returns_ends_at_its_threads_last_step(tmp_path):
    switch = {"Return": {"return_value": {"kind": "Raw", "type_id": 2, "r": "<thread switch>"}}}
    events = [{"Type": {"kind": 16, "lang_type": "<thread switch>", "specific_info": {"kind": "None"}}},
              {"Function": {"path_id": 0, "line": 3, "name": "spin"}}, {"ThreadStart": 1},
              {"Step": {"path_id": 0, "line": 1}},
              {"ThreadStart": 2}, {"Step": {"path_id": 0, "line": 3}}, {"Call": {"function_id": 1, "args": []}},
              {"Step": {"path_id": 0, "line": 4}}, switch,
              {"ThreadSwitch": 1}, {"Step": {"path_id": 0, "line": 2}}, {"Step": {"path_id": 0, "line": 5}},
              {"Return": {"return_value": {"kind": "None", "type_id": 0}}}]
    index = _hand_made(tmp_path, events)
    try:
        [spin] = [c for c in range(index.calls_ready()) if index.function_name(c) == "spin"]
        assert index.call_end[spin] == -1 and list(index.step_line) == [1, 3, 4, 2, 5]
        assert api.call(index, spin)["last_step"] == 2     # its thread's last step, not the trace's
        assert api.call(index, 0)["last_step"] == 4
    finally:
        index.close()


def test_without_no_browser_the_page_is_opened_in_the_browser(tmp_path):
    """webbrowser honours $BROWSER: a stand-in browser writes down the address it was given."""
    out = _record(tmp_path, "x = 1\n", "json")
    opened = tmp_path / "opened"
    browser = f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"
    starter = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
               "from timelapse.cli import main; sys.exit(main())")
    process = subprocess.Popen([sys.executable, "-c", starter, "view", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "BROWSER": browser})
    try:
        url = process.stdout.readline().split(" at ", 1)[1].split()[0]
        for _ in range(300):
            if opened.exists() and opened.read_text():
                break
            __import__("time").sleep(0.1)
        assert opened.read_text() == url
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

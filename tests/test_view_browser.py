"""The viewer's page (src/timelapse/viewer/static/) in a real browser: Debian's headless Chromium,
driven by Playwright, against the real server (``ViewServer``) on a recorded program.

What is checked is what a person sees: the step number, the highlighted source line (compared with
the program's own text), the stack, the locals, the output, the call tree and a variable's history,
after buttons, keys, the slider and clicks. The steps to start from are picked from the server's
answers (``/api/step``); where the page lands is checked against the source and the locals.

One browser and one server per module (recording and launching cost more than the tests); each test
gets a fresh page. ``UPDATE_VIEW_SCREENSHOTS=1`` makes ``test_screenshots`` write the README's pictures
into docs/ as well (it always writes them under the test's tmp_path and checks them); the name has no
``TIMELAPSE_`` prefix, which would make it one of the recorder's options.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import struct
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import CONSOLE_SCRIPT, PROGRAMS, run_timelapse

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed (pip install playwright; it is in the test extra)",
                allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium; .ci/run does)", allow_module_level=True)

from timelapse.viewer.server import ViewServer  # noqa: E402 (after the skips: the page needs both)

#: No sandbox: the tests run as root, where Chromium refuses its sandbox. The rest keeps a headless
#: browser from reaching for the network (there is none) or doing work nobody looks at.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 860}
DEMO = PROGRAMS / "view_demo.py"
DEMO_LINES = DEMO.read_text(encoding="utf-8").splitlines()
DOCS = Path(__file__).resolve().parent.parent / "docs"

# The machine is shared and small: give the page time, but never sleep.
expect.set_options(timeout=15_000)


def line_of(snippet: str, *, after: str | None = None) -> int:
    """The number of the first line of view_demo.py holding ``snippet`` (after the line holding
    ``after``, if given)."""
    start = line_of(after) if after else 0
    for number, text in enumerate(DEMO_LINES[start:], start + 1):
        if snippet in text:
            return number
    raise AssertionError(f"{snippet!r} is not in {DEMO}")


def record(folder: Path, program: Path, input: str = "", trace_format: str | None = None) -> Path:
    options = ["--format", trace_format] if trace_format else []
    result = run_timelapse(["record", "-q", *options, "-o", str(folder), str(program)], input=input)
    assert result.returncode == 0, result.stderr
    return folder


class Viewer:
    """A running server and what it says about each step (fetched over HTTP, once, when asked)."""

    def __init__(self, server: ViewServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.url = server.url
        self.trace = self.get("/api/trace")
        assert self.trace["complete"], self.trace

    @functools.cached_property
    def steps(self) -> list[dict]:
        return [self.get(f"/api/step?i={i}") for i in range(self.trace["steps"])]

    def get(self, route: str) -> dict:
        with urllib.request.urlopen(self.url.rstrip("/") + route, timeout=30) as answer:
            return json.load(answer)

    def step_at(self, function: str, snippet: str, nth: int = 0, *, after: str | None = None) -> dict:
        """The ``nth`` step (0: the first) in ``function`` at the line holding ``snippet``."""
        line = line_of(snippet, after=after)
        found = [s for s in self.steps if s["stack"][-1]["function"] == function and s["line"] == line]
        assert len(found) > nth, f"no step {nth} of {function} at line {line}"
        return found[nth]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def serve(folder: Path):
    with ViewServer(folder, port=0) as server:
        assert server.wait_indexed(timeout=60)
        yield Viewer(server, folder)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    yield from serve(record(tmp_path_factory.mktemp("view") / "trace", DEMO))


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory):
    """The demo recorded as trace.json (the other tests read the default, trace.bin)."""
    yield from serve(record(tmp_path_factory.mktemp("view-json") / "trace", DEMO, trace_format="json"))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A program of 250 calls that print one line each: more than a page of the call tree's
    children (100) and of the output pane (200); then a variable that changes 1100 times, more than
    a history holds (1000)."""
    folder = tmp_path_factory.mktemp("view-many")
    program = folder / "many.py"
    program.write_text("def show(i):\n    print('line', i)\n\n\nfor i in range(250):\n    show(i)\n"
                       "for j in range(1100):\n    pass\n", encoding="utf-8")
    yield from serve(record(folder / "trace", program))


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """A program calling into two modules of its own: one whose copy stays in the trace's files/,
    one whose copy is removed from it; and reading a line from stdin."""
    folder = tmp_path_factory.mktemp("view-files")
    (folder / "helper.py").write_text("def twice(n):\n    doubled = n * 2\n    return doubled\n", encoding="utf-8")
    (folder / "gone.py").write_text("def thrice(n):\n    tripled = n * 3\n    return tripled\n", encoding="utf-8")
    program = folder / "main.py"
    program.write_text("import gone\nimport helper\n\nx = helper.twice(3)\ny = gone.thrice(x)\n"
                       "who = input('who? ')\nprint('hi', who)\n", encoding="utf-8")
    trace = record(folder / "trace", program, input="ada\n")
    copies = list((trace / "files").rglob("gone.py"))
    assert len(copies) == 1, copies
    copies[0].unlink()
    yield from serve(trace)


@pytest.fixture
def page(browser):
    """A fresh page; a JavaScript error in it fails the test."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def open_at(page: Page, viewer: Viewer, step: int | None = None) -> None:
    """Open the page (at ``#step=N`` if given) and wait until it shows that step."""
    page.goto(viewer.url + (f"#step={step}" if step is not None else ""))
    expect(page.locator("#step-number")).to_have_text(str(step or 0))


def expect_at(page: Page, step: dict) -> None:
    """The page shows ``step``: its number, its line highlighted (with the program's text), its
    function innermost in the stack, and the URL's hash."""
    expect(page.locator("#step-number")).to_have_text(str(step["index"]))
    current = page.locator("#source .line.current")
    expect(current).to_have_count(1)
    expect(current).to_have_attribute("data-line", str(step["line"]))
    expect(current.locator(".code")).to_have_text(DEMO_LINES[step["line"] - 1])
    expect(page.locator("#stack .frame.current .function")).to_have_text(step["stack"][-1]["function"])
    expect(page).to_have_url(re.compile(rf"#step={step['index']}$"))


def local(page: Page, name: str):
    return page.locator(f'#locals > li[data-name="{name}"]')


# -- opening -----------------------------------------------------------------------------------------


def test_the_page_opens_at_the_first_step_with_the_run_in_its_header(page, demo):
    open_at(page, demo)
    expect_at(page, demo.steps[0])
    expect(page.locator("#program")).to_have_text(str(DEMO))
    expect(page.locator("#exit-status")).to_have_text("0")
    expect(page.locator("#steps-count")).to_have_text(str(demo.trace["steps"]))
    expect(page.locator("#reading")).to_be_hidden()
    expect(page.locator("#slider")).to_have_attribute("max", str(demo.trace["steps"] - 1))
    # The lines that ran are marked, and only those: the docstring never runs.
    ran = page.locator("#source .line.ran")
    expect(page.locator(f'#source .line[data-line="{line_of("def price_of")}"]')).to_have_class(re.compile(r"\bran\b"))
    expect(page.locator('#source .line[data-line="2"]')).not_to_have_class(re.compile(r"\bran\b"))
    assert ran.count() == len(demo.get("/api/source?path=0")["lines_run"])


def test_a_step_in_the_hash_is_where_the_page_opens_and_a_new_hash_moves_it(page, demo):
    step = demo.step_at("fill", "total = total + price", 1)
    open_at(page, demo, step["index"])
    expect_at(page, step)
    other = demo.step_at("price_of", "prices = {")
    page.evaluate(f"location.hash = '#step={other['index']}'")
    expect_at(page, demo.steps[other["index"]])


def test_the_view_command_serves_the_page_from_the_installed_package(page, demo):
    """What a user runs: ``timelapse view DIR --no-browser`` prints the address, and the page there
    works (its static files are found where the package put them)."""
    command = [str(CONSOLE_SCRIPT), "view", str(demo.folder), "--no-browser"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as viewer:
        try:
            line = viewer.stdout.readline()  # at its end: a line, or "" if the command failed
            address = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C to stop\)$", line.strip())
            assert address, (line, viewer.stderr.read() if viewer.poll() is not None else "")
            page.goto(address.group(1) + "#step=3")
            expect(page.locator("#step-number")).to_have_text("3")
            expect(page.locator("#source .line.current")).to_have_attribute("data-line", str(demo.steps[3]["line"]))
        finally:
            viewer.terminate()
            viewer.wait(timeout=30)


# -- moving ------------------------------------------------------------------------------------------


def test_step_forward_and_back_with_the_buttons(page, demo):
    open_at(page, demo)
    for _ in range(3):
        page.click("#btn-next")
    expect_at(page, demo.steps[3])
    page.click("#btn-prev")
    expect_at(page, demo.steps[2])
    page.click("#btn-last")
    expect_at(page, demo.steps[-1])
    page.click("#btn-first")
    expect_at(page, demo.steps[0])
    page.click("#btn-prev")  # nowhere before the first step: it stays, and says so
    expect(page.locator("#notice")).to_contain_text("first step")
    expect_at(page, demo.steps[0])


def test_a_trace_json_is_shown_the_same(page, demo, demo_json):
    assert demo_json.trace["format"] == "trace.json" and demo.trace["format"] == "trace.bin"
    assert demo_json.trace["steps"] == demo.trace["steps"]
    inside = demo_json.step_at("fill", "total = total + price")
    open_at(page, demo_json, inside["index"])
    expect_at(page, inside)
    expect(page.locator("#locals")).to_contain_text("basket")
    page.click("#btn-over")
    expect_at(page, demo_json.steps[_ok_step(demo_json, inside["index"], "over")])


def _ok_step(viewer: Viewer, i: int, how: str) -> int:
    return viewer.get(f"/api/go?i={i}&how={how}")["step"]


def test_over_skips_a_call_and_out_leaves_it_both_ways(page, demo):
    calling = demo.step_at("fill", "price = price_of(name)")
    after_call = demo.step_at("fill", "total = total + price")
    open_at(page, demo, calling["index"])
    page.click("#btn-next")  # into the callee
    expect(page.locator("#stack .frame.current .function")).to_have_text("price_of")
    page.click("#btn-back-over")  # back over: to the caller's line (this frame has no earlier step)
    expect_at(page, calling)
    page.click("#btn-over")  # over: the call's steps skipped
    expect_at(page, after_call)
    page.click("#btn-back-over")
    expect_at(page, calling)

    inside = demo.step_at("price_of", "prices = {")
    open_at(page, demo, inside["index"])
    page.click("#btn-out")
    expect_at(page, after_call)
    open_at(page, demo, inside["index"])
    page.click("#btn-back-out")
    expect_at(page, calling)


def test_next_and_previous_call_of_this_function(page, demo):
    first = demo.step_at("price_of", "prices = {", 0)
    second_call_start = demo.step_at("price_of", "def price_of", 1)
    first_call_start = demo.step_at("price_of", "def price_of", 0)
    open_at(page, demo, first["index"])
    page.click("#btn-next-call")
    expect_at(page, second_call_start)
    expect(local(page, "name").locator(".text")).to_have_text("'pear'")
    page.click("#btn-prev-call")
    expect_at(page, first_call_start)
    expect(local(page, "name").locator(".text")).to_have_text("'apple'")


def test_keyboard_shortcuts(page, demo):
    calling = demo.step_at("fill", "price = price_of(name)")
    after_call = demo.step_at("fill", "total = total + price")
    inside = demo.step_at("price_of", "prices = {")
    open_at(page, demo, calling["index"])
    page.keyboard.press("ArrowRight")
    expect_at(page, demo.steps[calling["index"] + 1])
    page.keyboard.press("ArrowLeft")
    expect_at(page, calling)
    page.keyboard.press("ArrowDown")
    expect_at(page, after_call)
    page.keyboard.press("ArrowUp")
    expect_at(page, calling)
    page.evaluate(f"location.hash = '#step={inside['index']}'")
    expect_at(page, inside)
    page.keyboard.press("Shift+ArrowDown")
    expect_at(page, after_call)
    page.evaluate(f"location.hash = '#step={inside['index']}'")
    expect_at(page, inside)
    page.keyboard.press("Shift+ArrowUp")
    expect_at(page, calling)
    page.evaluate(f"location.hash = '#step={inside['index']}'")
    expect_at(page, inside)
    page.keyboard.press("n")
    expect_at(page, demo.step_at("price_of", "def price_of", 1))
    page.keyboard.press("p")
    expect_at(page, demo.step_at("price_of", "def price_of", 0))
    page.keyboard.press("End")
    expect_at(page, demo.steps[-1])
    page.keyboard.press("ArrowDown")  # nowhere to go: it stays, and says so
    expect(page.locator("#notice")).to_contain_text("no later step")
    expect_at(page, demo.steps[-1])
    page.keyboard.press("Home")
    expect_at(page, demo.steps[0])


def test_keys_pressed_quickly_move_one_step_each(page, demo):
    open_at(page, demo)
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect_at(page, demo.steps[10])


def test_the_slider_moves_over_the_whole_recording(page, demo):
    open_at(page, demo)
    target = demo.step_at("main", "counts = {")
    page.locator("#slider").fill(str(target["index"]))
    expect_at(page, target)
    page.keyboard.press("ArrowRight")  # the slider has the focus: the keys still step
    expect_at(page, demo.steps[target["index"] + 1])


# -- panes -------------------------------------------------------------------------------------------


def test_a_stack_frame_goes_to_where_that_frame_is(page, demo):
    inside = demo.step_at("Basket.add", "self.items.append")
    open_at(page, demo, inside["index"])
    frames = page.locator("#stack .frame .function")
    expect(frames).to_have_text(["Basket.add", "fill", "main", "<__main__>", "<toplevel>"])
    page.locator("#stack .frame", has_text="fill").click()
    caller = demo.steps[inside["stack"][-2]["step"]]
    expect_at(page, caller)
    expect(page.locator("#source .line.current .code")).to_contain_text("basket.add(name, price)")


def test_the_call_tree_opens_lazily_and_jumps_to_a_call(page, demo):
    open_at(page, demo)
    tree = page.locator("#tree")
    module = tree.locator('li.call[data-function="<__main__>"]')
    expect(module).to_have_count(1)  # the root is open: its children are listed
    expect(tree.locator('li.call[data-function="fill"]')).to_have_count(0)  # deeper: not yet
    module.locator(":scope > .row .toggle").click()
    main = module.locator('li.call[data-function="main"]')
    main.locator(":scope > .row .toggle").click()
    fill = main.locator('li.call[data-function="fill"]')
    expect(fill.locator(":scope > .row .args")).to_have_text("(basket=__main__.Basket(owner='ada', items=[]), "
                                                              "names=['apple', 'pear', 'plum'])")
    expect(fill.locator(":scope > .row .return")).to_have_text(" → 10")
    fill.locator(":scope > .row .label").click()
    expect(page.locator("#stack .frame.current .function")).to_have_text("fill")
    expect(page.locator("#source .line.current")).to_have_attribute("data-line", str(line_of("def fill")))
    expect(fill).to_have_class(re.compile(r"\bcurrent\b"))
    expect(main).to_have_class(re.compile(r"\bon-stack\b"))


def test_show_current_call_opens_the_tree_down_to_it(page, demo):
    inside = demo.step_at("price_of", "prices = {", 2)
    open_at(page, demo, inside["index"])
    page.click("#tree-reveal")
    current = page.locator("#tree li.call.current")
    expect(current).to_have_attribute("data-function", "price_of")
    expect(current.locator(":scope > .row .args")).to_have_text("(name='plum')")


def test_the_call_tree_pages_a_call_with_many_children(page, many):
    open_at(page, many)
    module = page.locator('#tree li.call[data-function="<__main__>"]')
    module.locator(":scope > .row .toggle").click()
    shows = module.locator('li.call[data-function="show"]')
    expect(shows).to_have_count(100)
    more = module.locator("li.more")
    expect(more).to_have_text("more… (150 more calls)")
    more.click()
    expect(shows).to_have_count(200)
    module.locator("li.more").click()
    expect(shows).to_have_count(250)
    expect(module.locator("li.more")).to_have_count(0)
    expect(shows.last.locator(".args")).to_have_text("(i=249)")


def test_expanding_a_value_in_the_locals(page, demo):
    step = demo.step_at("fill", "print(f\"added", 1)  # two items in the basket
    open_at(page, demo, step["index"])
    basket = local(page, "basket")
    expect(basket.locator(":scope > .row .text")).to_contain_text("__main__.Basket(owner='ada'")
    expect(basket.locator("li.value")).to_have_count(0)
    basket.locator(":scope > .row .toggle").click()
    items = basket.locator(':scope > ul > li[data-name="items"]')
    expect(basket.locator(':scope > ul > li[data-name="owner"] .text')).to_have_text("'ada'")
    expect(items.locator(":scope > .row .type")).to_have_text("list · 2")
    items.locator(":scope > .row .toggle").click()
    expect(items.locator(":scope > ul > li > .row .text")).to_have_text(["('apple', 3)", "('pear', 5)"])
    # Stepping keeps what was opened open.
    page.click("#btn-next")
    expect(page.locator("#step-number")).to_have_text(str(step["index"] + 1))
    expect(local(page, "basket").locator(':scope > ul > li[data-name="items"] > ul > li')).to_have_count(2)
    # A dict's entries are its children, labelled by key.
    counts = demo.step_at("main", "print(\"total:\"")
    open_at(page, demo, counts["index"])
    local(page, "counts").locator(":scope > .row .toggle").click()
    expect(local(page, "counts").locator(":scope > ul > li > .row .name")).to_have_text(["'items'", "'total'"])


def test_a_local_that_just_changed_is_highlighted(page, demo):
    # total = total + price ran: at the next line, total changed and price did not.
    step = demo.step_at("fill", "basket.add(name, price)", 1)
    open_at(page, demo, step["index"])
    expect(local(page, "total")).to_have_class(re.compile(r"\bchanged\b"))
    expect(local(page, "total").locator(".text")).to_have_text("8")
    expect(local(page, "price")).not_to_have_class(re.compile(r"\bchanged\b"))
    page.click("#btn-back-over")
    expect(local(page, "price")).to_have_class(re.compile(r"\bchanged\b"))
    expect(local(page, "total")).not_to_have_class(re.compile(r"\bchanged\b"))


def test_the_output_pane_holds_what_was_printed_so_far_and_jumps_to_its_step(page, demo):
    open_at(page, demo)
    expect(page.locator("#output .empty")).to_have_text("no output yet")
    step = demo.step_at("fill", "return total")
    open_at(page, demo, step["index"])
    expect(page.locator("#output pre")).to_have_text("added apple for 3\nadded pear for 5\nadded plum for 2\n")
    page.keyboard.press("End")
    items = page.locator("#output .output-item")
    expect(items).to_have_count(7)
    stderr = page.locator("#output .output-item.stderr")
    expect(stderr).to_have_text("warning: prices are made up\n")
    expect(page.locator("#output .output-item.stdout")).to_have_count(6)
    page.locator("#output .output-item", has_text="total: 10").click()
    expect(page.locator("#source .line.current .code")).to_have_text(DEMO_LINES[line_of('print("total:"') - 1])
    expect(items).to_have_count(4)  # what comes later is not shown
    expect(items.last).to_have_class(re.compile(r"\bat-step\b"))


def test_the_output_pane_shows_the_last_items_and_loads_earlier_ones(page, many):
    open_at(page, many)
    page.keyboard.press("End")
    items = page.locator("#output .output-item")
    expect(items).to_have_count(200)
    expect(items.first).to_have_text("line 50\n")
    expect(items.last).to_have_text("line 249\n")
    page.click("#output-earlier")
    expect(items).to_have_count(250)
    expect(items.first).to_have_text("line 0\n")
    expect(page.locator("#output-earlier")).to_have_count(0)


def test_a_variables_history_lists_its_changes_and_jumps_to_one(page, demo):
    step = demo.step_at("fill", "return total")
    open_at(page, demo, step["index"])
    local(page, "total").locator(".history-button").click()
    changes = page.locator("#history li.change")
    expect(changes.locator(".text")).to_have_text(["0 (first)", "3", "8", "10"])
    expect(page.locator("#history-name")).to_have_text("total")
    expect(changes.nth(3)).to_have_class(re.compile(r"\bcurrent\b"))  # the value in force here
    changes.nth(2).click()
    target = int(changes.nth(2).get_attribute("data-step"))
    expect(page.locator("#step-number")).to_have_text(str(target))
    expect(local(page, "total").locator(".text")).to_have_text("8")
    expect(local(page, "total")).to_have_class(re.compile(r"\bchanged\b"))
    # It changed at the line after `total = total + price`.
    expect(page.locator("#source .line.current")).to_have_attribute(
        "data-line", str(line_of("basket.add(name, price)", after="total = total + price")))
    expect(changes.nth(2)).to_have_class(re.compile(r"\bcurrent\b"))


def test_a_long_history_shows_where_the_value_in_force_came_from(page, many):
    # (many.steps would be thousands of requests: the steps are found from the last one.)
    late = many.get(f"/api/step?i={many.trace['steps'] - 1}")
    assert [v["value"]["text"] for v in late["locals"] if v["name"] == "j"] == ["1099"]
    open_at(page, many, late["index"])
    local(page, "j").locator(".history-button").click()
    changes = page.locator("#history li.change")
    expect(changes).to_have_count(1000)
    expect(page.locator("#history .history-title")).to_have_text(
        f"j in call {late['call']}: the last 1000 changes up to step {late['index']}")
    expect(changes.first.locator(".text")).to_have_text("100")  # not "(first)": earlier ones are cut
    expect(changes.last.locator(".text")).to_have_text("1099")
    expect(changes.last).to_have_class(re.compile(r"\bcurrent\b"))
    expect(changes.last).to_be_in_viewport()

    first_changes = many.get(f"/api/history?i={late['index']}&name=j&limit=10")["changes"]
    early = next(change["step"] for change in first_changes if change["text"] == "5")
    open_at(page, many, early)
    local(page, "j").locator(".history-button").click()
    expect(page.locator("#history .history-title")).to_have_text(f"j in call {late['call']}: the first 1000 changes")
    expect(changes.first.locator(".text")).to_have_text("0 (first)")
    expect(changes.last.locator(".text")).to_have_text("999")
    expect(page.locator("#history")).to_contain_text("later changes are not shown")
    expect(page.locator("#history li.change.current .text")).to_have_text("5")


def test_the_thread_of_the_step_is_shown_and_stands_out_when_there_are_several(page, demo):
    assert len(demo.trace["threads"]) == 2
    worker = demo.step_at("worker", "results.append")
    main = demo.steps[0]
    open_at(page, demo)
    badge = page.locator("#thread")
    expect(badge).to_have_class(re.compile(r"\bseveral\b"))
    expect(badge).to_contain_text(f"thread {main['thread']}")
    open_at(page, demo, worker["index"])
    expect(badge).to_contain_text(f"thread {worker['thread']}")
    assert worker["thread"] != main["thread"]
    expect(page.locator('#tree li.call[data-function="worker"] .thread-tag')).to_have_text(f"thread {worker['thread']}")


def test_text_from_the_trace_is_shown_as_text_never_as_html(page, demo):
    open_at(page, demo, demo.step_at("main", "return counts")["index"])
    note = local(page, "note")
    expect(note.locator(".text")).to_have_text("'<b>not bold</b><img src=x onerror=alert(1)>'")
    expect(page.locator("#output .output-item").last).to_have_text("<b>not bold</b><img src=x onerror=alert(1)>\n")
    assert page.locator("#locals b, #locals img, #output b, #output img").count() == 0


def test_a_step_in_another_file_shows_that_file_and_a_missing_copy_says_so(page, two_files):
    def step_in(function: str) -> dict:
        return next(s for s in two_files.steps if s["stack"][-1]["function"] == function and s["locals"])

    twice, thrice = step_in("twice"), step_in("thrice")
    open_at(page, two_files, twice["index"])
    expect(page.locator("#source-where")).to_have_text(f"twice · helper.py:{twice['line']}")
    expect(page.locator("#source .line.current .code")).to_have_text(
        ["def twice(n):", "    doubled = n * 2", "    return doubled"][twice["line"] - 1])
    page.click("#btn-back-out")
    expect(page.locator("#source-where")).to_contain_text("main.py:")
    expect(page.locator("#source .line.current .code")).to_have_text("x = helper.twice(3)")
    page.evaluate(f"location.hash = '#step={thrice['index']}'")
    expect(page.locator("#step-number")).to_have_text(str(thrice["index"]))
    expect(page.locator("#source .empty")).to_contain_text("The trace holds no copy of")
    expect(page.locator("#source .empty")).to_contain_text("gone.py")
    expect(local(page, "n").locator(".text")).to_have_text("6")  # the rest of the page is there
    page.keyboard.press("Shift+ArrowUp")
    expect(page.locator("#source .line.current .code")).to_have_text("y = gone.thrice(x)")


def test_what_the_program_read_from_stdin_is_in_the_output_styled_apart(page, two_files):
    open_at(page, two_files)
    page.keyboard.press("End")
    expect(page.locator("#output pre")).to_have_text("who? ada\nhi ada\n")
    expect(page.locator("#output .output-item.stdin")).to_have_text("ada\n")
    color = "getComputedStyle(document.querySelector('#output .output-item.%s')).color"
    assert page.evaluate(color % "stdin") != page.evaluate(color % "stdout")


# -- the server's refusals -----------------------------------------------------------------------------


def test_a_step_not_read_yet_is_asked_again_with_a_notice(page, demo):
    ready = False

    def not_yet(route):
        if ready:
            route.continue_()
        else:
            route.fulfill(status=503, content_type="application/json",
                          body=json.dumps({"error": "step 5 is not read yet", "retry": True}))

    page.route(re.compile(r"/api/step\?i=5$"), not_yet)
    open_at(page, demo)
    page.click("#btn-last")  # moves queue behind the waiting one, which gives up for them
    expect_at(page, demo.steps[-1])
    page.evaluate("location.hash = '#step=5'")
    expect(page.locator("#notice")).to_contain_text("step 5 is not read yet")
    expect(page.locator("#step-number")).to_have_text(str(demo.trace["steps"] - 1))
    ready = True
    expect_at(page, demo.steps[5])
    expect(page.locator("#notice")).to_be_hidden()


def test_while_the_trace_is_read_the_page_says_so_and_the_slider_grows(page, demo):
    complete = False

    def partial(route):
        if complete:
            route.continue_()
        else:
            answer = dict(demo.trace, steps=10, complete=False)
            route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.route(re.compile(r"/api/trace$"), partial)
    open_at(page, demo)
    expect(page.locator("#reading")).to_have_text("reading… 10 steps")
    expect(page.locator("#slider")).to_have_attribute("max", "9")
    complete = True
    expect(page.locator("#reading")).to_be_hidden()
    expect(page.locator("#slider")).to_have_attribute("max", str(demo.trace["steps"] - 1))
    expect(page.locator("#steps-count")).to_have_text(str(demo.trace["steps"]))


def test_a_failing_route_is_an_error_line_and_the_other_panes_still_show(page, demo):
    page.route(re.compile(r"/api/source\?"), lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "the disk is on fire"})))
    step = demo.step_at("fill", "return total")
    open_at(page, demo, step["index"])
    expect(page.locator("#error")).to_contain_text("the disk is on fire")
    expect(page.locator("#source .error-line")).to_contain_text("the disk is on fire")
    expect(page.locator("#source .line")).to_have_count(0)
    expect(local(page, "total").locator(".text")).to_have_text("10")
    expect(page.locator("#stack .frame.current .function")).to_have_text("fill")


# -- screenshots -------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def take_screenshots(page: Page, viewer: Viewer, folder: Path) -> list[Path]:
    """The README's pictures: the page inside a function, with a value opened, some output and a
    variable's history (view-main.png), and the locals and history panes alone (view-history.png)."""
    step = viewer.step_at("fill", "print(f\"added", 1)
    open_at(page, viewer, step["index"])
    basket = local(page, "basket")
    basket.locator(":scope > .row .toggle").click()
    basket.locator(':scope > ul > li[data-name="items"] > .row .toggle').click()
    local(page, "total").locator(".history-button").click()
    expect(page.locator("#history li.change")).to_have_count(4)
    page.click("#tree-reveal")
    expect(page.locator("#tree li.call.current")).to_have_attribute("data-function", "fill")
    page.mouse.move(0, VIEWPORT["height"] - 1)  # no hover highlight in the picture
    main = folder / "view-main.png"
    history = folder / "view-history.png"
    page.screenshot(path=str(main))
    locals_box = page.locator("#locals-pane").bounding_box()
    history_box = page.locator("#history-pane").bounding_box()
    page.screenshot(path=str(history), clip={
        "x": locals_box["x"], "y": locals_box["y"], "width": locals_box["width"],
        "height": history_box["y"] + history_box["height"] - locals_box["y"]})
    return [main, history]


def test_screenshots(page, demo, tmp_path):
    shots = take_screenshots(page, demo, tmp_path)
    assert png_size(shots[0]) == (VIEWPORT["width"], VIEWPORT["height"])
    for shot in shots:
        assert 10_000 < shot.stat().st_size < 400_000, shot
    if os.environ.get("UPDATE_VIEW_SCREENSHOTS") == "1":
        for shot in shots:
            shutil.copyfile(shot, DOCS / shot.name)

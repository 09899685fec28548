"""``pytest --timelapse``: one timelapse trace per test (docs/pytest.md).

Installed as the ``pytest11`` entry point ``timelapse``, so pytest loads this module in every run of
an environment where timelapse is installed. Inactive unless asked: without ``--timelapse`` it adds
its two options and keeps pytest out of trace folders' ``files/`` (``pytest_ignore_collect``), and
it imports nothing of the recorder (``import timelapse`` is lazy, ``timelapse/__init__.py``); the
recorder is imported in ``pytest_configure`` once ``--timelapse`` is given. ``-p no:timelapse`` disables it altogether.

With ``--timelapse`` a ``TestRecorder`` is registered, and for each test:

- **start** in a ``pytest_runtest_protocol`` wrapper, before the setup phase: a ``Session`` into
  ``DIR/<trace_folder_name(nodeid)>``, started with no caller frame, so nothing that is already
  running (pytest's own frames) is part of the trace. Each phase's entry into the project's code (a
  fixture, the test function, a ``unittest`` ``setUp``, a fixture's teardown after its ``yield``)
  is then a call under ``<toplevel>``. pytest's internals are out of the recording's scope: they are
  installed packages (and if pytest is not installed as one, ``_pytest``, ``pytest`` and ``pluggy``
  are excluded by name).
- **stop** in the ``pytest_runtest_makereport`` wrapper of the teardown phase: the last of the
  test's code has run, and the outcome is known (from the three reports, stashed on the item). The
  metadata's ``"test"`` key names the test, its outcome and its duration; the trace is saved (or,
  with ``--timelapse=failed`` and a test that neither failed nor errored, thrown away, and a trace
  left at that place by an earlier run removed). The teardown report then carries where the trace
  is (``timelapse_trace``), so the process that prints the summary counts the traces of xdist's
  workers as well as its own: reports are sent from a worker to the controller with their
  attributes.
- if the protocol ends without a teardown report (an interruption), the wrapper saves what was
  recorded, outcome ``"interrupted"``, in both modes.

Invariants: at most one recording at a time (timelapse records one session per process); a
session is always finished (saved or discarded) before the next test starts; a folder is only ever
replaced or removed if it holds a timelapse trace (``session.is_trace_folder``); the recorder never
makes pytest fail: a recording that cannot start or be saved, or a recorder failure (``on_error``
is ``continue`` unless the configuration sets it), is a ``PytestWarning`` for that test and a count
in the summary line, and the test runs and is reported as it would be unrecorded.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from timelapse.session import Session

__all__ = ["MODES", "DEFAULT_DIR", "TestRecorder", "trace_folder_name"]

#: ``--timelapse`` (``all``: every test) and ``--timelapse=failed`` (only failed or errored tests).
MODES = ("all", "failed")
#: Where the traces go, relative to pytest's rootdir (the folder node ids are relative to).
DEFAULT_DIR = ".timelapse"
#: The outcomes whose traces ``--timelapse=failed`` keeps (and an interrupted test, always).
KEPT_WHEN_FAILED = frozenset({"failed", "error", "interrupted"})
#: The readable part of a folder name is at most this long (the whole name: this + 11).
_READABLE_MAX = 100
#: The digest of the node id that makes folder names unique: 10 hex digits (40 bits; two of 10,000
#: tests share one with a chance of 1 in 20,000).
_DIGEST_CHARS = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
#: Why the item's recording could not start (said again on its teardown report, to be counted).
_not_started_key = pytest.StashKey[str]()


def trace_folder_name(nodeid: str) -> str:
    """The folder of a test's trace, from its node id: safe, readable, unique, bounded.

    Each run of characters other than ASCII letters, digits, ``_``, ``.`` and ``-`` becomes one
    ``_`` (``/``, ``::``, ``[``, spaces, non-ASCII), and ``.``, ``_``, ``-`` are stripped from both
    ends (never hidden, never ``.`` or ``..``); past 100 characters the middle is cut out (``~``),
    keeping the file's start and the test's name. Then ``-`` and the first 10 hex digits of the
    node id's SHA-1: two node ids that read the same after this (``t[a b]``, ``t[a_b]``), or differ
    only in case, still get two folders. The same node id gives the same name in every run and in
    every xdist worker: a new run replaces the old trace of the same test.

    ``tests/test_x.py::TestA::test_b[param-1]`` -> ``tests_test_x.py_TestA_test_b_param-1-<digest>``.
    """
    import hashlib  # here: not at pytest's startup

    readable = _UNSAFE.sub("_", nodeid).strip("._-")
    if len(readable) > _READABLE_MAX:
        readable = readable[:55] + "~" + readable[-(_READABLE_MAX - 56):]
    digest = hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{readable}-{digest}" if readable else digest


# -- options ---------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("timelapse", "recording tests with timelapse (docs/pytest.md)")
    group.addoption(
        "--timelapse", dest="timelapse", nargs="?", const="all", default=None, metavar="failed",
        help="record one timelapse trace per test (setup, call and teardown) into "
             f"{DEFAULT_DIR}/<test>/; --timelapse=failed keeps only the traces of tests that "
             "failed or errored. The word after a bare --timelapse is never taken as its value.")
    group.addoption(
        "--timelapse-dir", dest="timelapse_dir", default=None, metavar="DIR",
        help=f"the folder of the traces (default: {DEFAULT_DIR} in the rootdir)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """A bare ``--timelapse`` takes no value: ``pytest --timelapse tests/`` records the tests in
    ``tests/``. argparse would take the next word as the option's value (an optional value), so
    the word is written ``--timelapse=all`` here, before pytest parses the command line for good:
    ``args`` (addopts and ``PYTEST_ADDOPTS`` included) is parsed after this hook. The early parse
    that chose the initial conftests has taken the word already: it is given back to it."""
    end = args.index("--") if "--" in args else len(args)
    if "--timelapse" not in args[:end]:
        return
    args[:end] = ["--timelapse=all" if arg == "--timelapse" else arg for arg in args[:end]]
    known = early_config.known_args_namespace
    taken = getattr(known, "timelapse", None)
    if taken is not None and taken not in MODES:
        known.timelapse = "all"
        known.file_or_dir = [taken, *getattr(known, "file_or_dir", [])]


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getoption("timelapse", None)
    if mode is None:
        return
    if mode not in MODES:
        raise pytest.UsageError(f"--timelapse={mode}: the value must be one of {', '.join(MODES)}")
    given = config.getoption("timelapse_dir", None)
    if given is not None:
        folder = Path(config.invocation_params.dir, given)
    else:
        folder = config.rootpath / DEFAULT_DIR
    try:
        recorder = TestRecorder(config, mode, Path(os.path.abspath(folder)))
    except ValueError as exc:  # a bad [tool.timelapse] or TIMELAPSE_* value (OptionError)
        raise pytest.UsageError(f"timelapse: {exc}") from None
    config.pluginmanager.register(recorder, "timelapse-recorder")


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Never collect the copies of the sources in a trace folder (``files/``): a trace of a test is
    kept with a copy of its test file, and pytest run over a ``--timelapse-dir`` inside the project
    would collect it again (and fail, "import file mismatch"), with or without ``--timelapse``. One
    name comparison per path; a ``stat`` only for a folder named ``files``."""
    if collection_path.name == "files" and (collection_path.parent / "trace_metadata.json").is_file():
        return True
    return None


# -- the recorder ----------------------------------------------------------------------------------

class TestRecorder:
    """Records each test of this process into its own trace folder (registered with
    ``--timelapse``), and counts the traces of every process for the summary line."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, config: pytest.Config, mode: str, folder: Path) -> None:
        from timelapse.config import Loaded, load  # the recorder's modules: only when asked

        self.config = config
        self.mode = mode
        self.folder = folder
        # The options are read once ([tool.timelapse] of the nearest pyproject.toml, TIMELAPSE_*),
        # as for any recording, and each test's Loaded is these with its own ``out``.
        loaded = load()
        sources = dict(loaded.sources)
        plugin = "pytest plugin"
        options = loaded.options
        if sources["on_error"] == "default":
            # A recorder failure must not fail the user's test: it is a warning (see the module
            # docstring). Set on_error to "raise" to have it fail the test instead.
            options = options.replace(on_error="continue")
            sources["on_error"] = plugin
        internals = _pytest_internals_in_scope(options)
        if internals:
            options = options.replace(exclude=(*options.exclude, *internals))
            sources["exclude"] = plugin
        sources["out"] = plugin
        self._loaded = Loaded(options, sources, loaded.config_file)
        #: The session of the test running now (this process), or None.
        self._session: Session | None = None
        self._started = 0.0
        #: Traces saved, and tests not fully recorded, as the teardown reports say (this process's
        #: tests, or under xdist every worker's).
        self.traces = 0
        self.failures = 0
        # This run's own xdist worker id (workerinput is set on a worker's config only): not
        # PYTEST_XDIST_WORKER, which a pytest run inside a worker's test (pytester) inherits.
        workerinput = getattr(config, "workerinput", None)
        self._worker = workerinput.get("workerid") if isinstance(workerinput, dict) else None
        self._make_folder()

    def _make_folder(self) -> None:
        """The traces' folder, with a ``.gitignore`` when we make it (as pytest's cache has)."""
        if self.folder.exists():
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / ".gitignore").write_text("# Made by timelapse's pytest plugin.\n*\n",
                                                    encoding="utf-8")
        except OSError:
            pass  # each test's session says why it cannot write there

    # -- per test: start, stash the reports, stop --

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None
                                ) -> Generator[None, object, object]:
        item.stash[_reports_key] = {}
        self._start(item)
        try:
            return (yield)
        finally:
            if self._session is not None:  # no teardown report: interrupted (Ctrl-C, ...)
                trace, problem = self._finish(item, "interrupted")
                # No report carries these: counted here (in an xdist worker, not in the summary).
                self.traces += trace is not None
                self.failures += problem is not None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        reports = item.stash.get(_reports_key, None)
        if reports is None:
            return report  # not inside our protocol (another plugin's own call)
        reports[report.when] = report
        if report.when != "teardown":
            return report
        if self._session is not None:
            # All of the test's code has run: save the trace now, so that the report (the last
            # one of the test, sent to xdist's controller) can say where it is.
            trace, problem = self._finish(item, _outcome(reports))
        else:
            trace, problem = None, item.stash.get(_not_started_key, None)
        report.timelapse_trace = trace  # type: ignore[attr-defined]
        report.timelapse_error = problem  # type: ignore[attr-defined]
        return report

    def _start(self, item: pytest.Item) -> None:
        from timelapse.config import Loaded
        from timelapse.errors import RecorderError
        from timelapse.session import Session

        out = self.folder / trace_folder_name(item.nodeid)
        loaded = Loaded(self._loaded.options.replace(out=str(out)), self._loaded.sources,
                        self._loaded.config_file)
        try:
            session = Session(program=str(item.path), args=[item.nodeid], _loaded=loaded)
            # No caller: pytest's frames below are not the test's. Their depth is, for the
            # recursion limit (timelapse.recursion).
            session.start(None, base_depth=_depth(sys._getframe(1)))
        except (RecorderError, OSError) as exc:
            # Already recording (the test, or a plugin, records itself), or the folder cannot be
            # written or holds something that is not a trace: this test runs unrecorded.
            item.stash[_not_started_key] = message = f"not recorded: {exc}"
            self._warn(item, message)
            return
        self._session = session
        self._started = time.perf_counter()

    def _finish(self, item: pytest.Item, outcome: str) -> tuple[str | None, str | None]:
        """Save (or throw away) the running test's trace; (its folder or None, what went wrong)."""
        from timelapse.errors import RecorderError
        from timelapse.session import is_trace_folder

        session, self._session = self._session, None
        assert session is not None
        reports = item.stash.get(_reports_key, {})
        session.extra_metadata["test"] = {
            "nodeid": item.nodeid,
            "outcome": outcome,
            # The phases' own durations, as pytest reports them (--durations); "recorded" is the
            # wall time from the start of the recording to here, the recorder's cost included.
            "duration": round(sum(r.duration for r in reports.values()), 6),
            "recorded": round(time.perf_counter() - self._started, 6),
            "phases": {when: {"outcome": r.outcome, "duration": round(r.duration, 6)}
                       for when, r in reports.items()},
            "location": list(item.location),
            "xdist_worker": self._worker,
        }
        keep = self.mode == "all" or outcome in KEPT_WHEN_FAILED
        problem = None
        try:
            if keep:
                saved = session.stop()
            else:
                session.discard()
                _remove_trace(session.out_dir, is_trace_folder)
                saved = None
        except (RecorderError, OSError) as exc:
            saved, problem = None, f"the trace could not be saved: {exc}"
        if problem is None and session.failure is not None:
            problem = f"the recorder failed, the trace ends there: {session.error_text}"
        if problem is not None:
            self._warn(item, problem)
        return (str(saved) if saved is not None else None), problem

    @staticmethod
    def _warn(item: pytest.Item, message: str) -> None:
        item.warn(pytest.PytestWarning(f"timelapse: {item.nodeid}: {message}"))

    # -- counting and the summary (in the process that reports: the only one, or xdist's controller) --

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        if getattr(report, "timelapse_trace", None):
            self.traces += 1
        if getattr(report, "timelapse_error", None):
            self.failures += 1

    def pytest_report_header(self, config: pytest.Config) -> str:
        what = "every test" if self.mode == "all" else "the tests that fail or error"
        return f"timelapse: recording {what} into {self._shown_folder()}{os.sep}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        count = self.traces
        line = f"timelapse: {count} trace{'' if count == 1 else 's'} in {self._shown_folder()}{os.sep}"
        if self.failures:
            line += (f" ({self.failures} test{'' if self.failures == 1 else 's'} not fully recorded: "
                     f"see the warnings)")
        terminalreporter.write_line(line)

    def _shown_folder(self) -> str:
        relative = os.path.relpath(self.folder, self.config.invocation_params.dir)
        return str(self.folder) if relative.startswith("..") else relative


def _outcome(reports: dict[str, pytest.TestReport]) -> str:
    """The test's outcome as pytest's summary names it: passed, failed, error, skipped, xfailed,
    xpassed (a test that fails and then errors in teardown is failed; one that passes, error)."""
    setup, call, teardown = (reports.get(when) for when in ("setup", "call", "teardown"))
    if setup is not None and setup.failed:
        return "error"
    if setup is not None and setup.skipped:
        return "xfailed" if hasattr(setup, "wasxfail") else "skipped"
    if call is None:
        return "interrupted"
    if hasattr(call, "wasxfail"):
        outcome = "xfailed" if call.skipped else "xpassed" if call.passed else "failed"
    else:
        outcome = call.outcome
    if teardown is not None and teardown.failed and outcome != "failed":
        return "error"
    return outcome


def _depth(frame: Any) -> int:
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def _remove_trace(folder: Path, is_trace_folder: Any) -> None:
    """Remove ``folder`` if it is a timelapse trace (a trace an earlier run left for a test that
    now passes): only a real folder, never a symlink's target or a mount point, never anything
    that is not a trace."""
    if folder.is_symlink() or not folder.is_dir() or os.path.ismount(folder):
        return
    if is_trace_folder(folder):
        shutil.rmtree(folder, ignore_errors=True)


def _pytest_internals_in_scope(options: Any) -> tuple[str, ...]:
    """The module patterns of pytest's own packages that the recording's scope would record (they
    are not installed packages: a checkout of pytest); usually none."""
    import _pytest
    import pluggy

    from timelapse.scope import Scope

    scope = Scope(include=options.include, exclude=options.exclude)
    found = []
    for name, module in (("_pytest", _pytest), ("pytest", pytest), ("pluggy", pluggy)):
        if module.__file__ and scope.source_path(module.__file__) is not None:
            found.append(name)
    return tuple(found)

#!/usr/bin/env python3
"""What recording a test suite costs with ``pytest --timelapse`` (issue 14, point 1): 500 small tests
recorded in one pytest run, one trace each, against the same 500 tests each recorded by a
``timelapse record`` process of its own.

    python benchmarks/pytest_cost.py [--tests N] [--repeat N] [--json FILE]

The suite (written into a temporary folder): ``tests/test_small_K.py``, 10 tests a file, each
test a few lines calling a helper with a short loop (about 40 recorded steps a test), and a
``conftest.py`` fixture used by half of them (a setup and a teardown call).

Rows, the repeats interleaved (row after row, N rounds), every run a subprocess:

- ``pytest``: ``python -m pytest -q`` over the suite, unrecorded;
- ``pytest --timelapse``: the same run, N traces written into ``.timelapse/`` (checked: N folders);
- ``N x timelapse record``: ``timelapse record -o DIR run_one.py FILE TEST`` once per test, each in a
  new process: the one script imports the test's module and calls the test function (with the
  fixture's value when it has one): the same recorded code, without pytest.

Reported per row: median wall time, min-max spread; and the cost of recording per test: for the
plugin (its median less the unrecorded run's, over N), for the processes (their median over N).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFTEST = '''\
import pytest


@pytest.fixture
def numbers():
    values = list(range(8))
    yield values
    values.clear()
'''

TEST_FILE_HEAD = '''\
def helper(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
'''

TEST_WITH_FIXTURE = '''

def test_{k}_{j}(numbers):
    result = helper(len(numbers) + {j})
    assert result >= 0
'''

TEST_PLAIN = '''

def test_{k}_{j}():
    result = helper(8 + {j})
    assert result >= 0
'''

RUN_ONE = '''\
"""Run one test of the suite as a plain program: argv[1] = its file, argv[2] = its name."""
import importlib.util
import sys

path, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(name.split("_")[1], path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
test = getattr(module, name)
if test.__code__.co_argcount:
    test(list(range(8)))
else:
    test()
'''


def write_suite(root: Path, tests: int) -> list[tuple[Path, str]]:
    """The suite in ``root``; the (file, test name) of each test."""
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    (root / "run_one.py").write_text(RUN_ONE)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\ntestpaths = ['tests']\n")
    found = []
    files = (tests + 9) // 10
    for k in range(files):
        path = root / "tests" / f"test_small_{k}.py"
        body = TEST_FILE_HEAD
        for j in range(min(10, tests - 10 * k)):
            body += (TEST_WITH_FIXTURE if j % 2 else TEST_PLAIN).format(k=k, j=j)
            found.append((path, f"test_{k}_{j}"))
        path.write_text(body)
    return found


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-3000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the measurements to this file")
    args = parser.parse_args()
    timelapse = str(Path(sys.executable).parent / "timelapse")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    rows: dict[str, list[float]] = {"pytest": [], "pytest --timelapse": [],
                                    f"{args.tests} x timelapse record": []}
    with tempfile.TemporaryDirectory(prefix="pytest-cost-") as tmp:
        root = Path(tmp)
        suite = write_suite(root, args.tests)
        for round_ in range(args.repeat):
            rows["pytest"].append(timed(pytest, root))
            rows["pytest --timelapse"].append(timed([*pytest, "--timelapse"], root))
            made = [p for p in (root / ".timelapse").iterdir() if p.is_dir()]
            assert len(made) == args.tests, f"{len(made)} traces, not {args.tests}"
            start = time.perf_counter()
            for i, (path, name) in enumerate(suite):
                timed([timelapse, "record", "-q", "-o", str(root / "each" / str(i)),
                       str(root / "run_one.py"), str(path), name], root)
            rows[f"{args.tests} x timelapse record"].append(time.perf_counter() - start)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in rows.items()),
                  file=sys.stderr)
    medians = {name: statistics.median(times) for name, times in rows.items()}
    print(f"{args.tests} tests, {args.repeat} rounds, Python {sys.version.split()[0]}")
    print(f"{'':32} {'median':>9} {'min-max':>17}")
    for name, times in rows.items():
        print(f"{name:32} {medians[name]:8.2f}s {min(times):7.2f}-{max(times):.2f} s")
    names = list(rows)
    plugin = (medians[names[1]] - medians[names[0]]) / args.tests
    separate = medians[names[2]] / args.tests
    print(f"recording cost per test: pytest --timelapse {plugin * 1000:.1f} ms, "
          f"a timelapse record process {separate * 1000:.0f} ms ({separate / plugin:.0f}x); "
          f"the whole recorded run: {medians[names[2]] / medians[names[1]]:.1f}x faster in one pytest run")
    if args.json:
        Path(args.json).write_text(json.dumps({"tests": args.tests, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What recording child processes costs (issue 14, point 3): a program that starts K small Python
children one after the other (``subprocess.run``) and forks K more (``os.fork`` + work), run

- ``untraced``: ``python main.py``;
- ``recorded``: ``timelapse record main.py`` (the children run unrecorded);
- ``--children``: ``timelapse record --children main.py`` (each child records a trace of its own).

    python benchmarks/children_cost.py [--repeat N] [--children K] [--json FILE]

Every run is a subprocess, the rows interleaved round after round so that they compare like with
like on a noisy machine. Reported per row: median wall time, min-max spread, the ratio to the
untraced median; and what one child costs: (``--children`` - ``recorded``) / (2 K), per child, in
milliseconds. Exit status 0, or 2 if a run failed or a child's trace is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAIN = '''\
import os, subprocess, sys

def child_work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

K = int(sys.argv[1])
for _ in range(K):
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")], check=True)
for _ in range(K):
    pid = os.fork()
    if pid == 0:
        child_work(200)
        os._exit(0)
    os.waitpid(pid, 0)
'''

CHILD = '''\
def work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

print(work(200))
'''


def _time(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--children", type=int, default=10, help="K: children of each kind")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    timelapse = str(Path(sys.executable).parent / "timelapse")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "main.py").write_text(MAIN)
        (work / "child.py").write_text(CHILD)
        k = str(args.children)
        rows = {
            "untraced": [sys.executable, "main.py", k],
            "recorded": [timelapse, "record", "-q", "-o", "plain", "main.py", k],
            "--children": [timelapse, "record", "-q", "--children", "-o", "family", "main.py", k],
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, command in rows.items():
                times[name].append(_time(command, work))
        recorded = sorted((work / "family" / "children").iterdir())
        if len(recorded) != 2 * args.children:
            print(f"expected {2 * args.children} child traces, found {len(recorded)}", file=sys.stderr)
            return 2
    base = statistics.median(times["untraced"])
    print(f"{'row':<12} {'median':>9} {'spread':>17} {'ratio':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:8.3f}s {min(values):7.3f}-{max(values):.3f}s {median / base:6.2f}")
    per_child = [(c - r) / (2 * args.children) * 1000 for c, r in zip(times["--children"], times["recorded"])]
    print(f"one child recorded: {statistics.median(per_child):.1f} ms (median of rounds, "
          f"{min(per_child):.1f}-{max(per_child):.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "per_child_ms": per_child}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

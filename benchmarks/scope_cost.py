#!/usr/bin/env python3
"""What an excluded module costs: a program spending ~90% of its time in a module the user excludes
(``timelapse record --exclude heavy``) should run within 1.5x untraced (issue 13, point 6); and what
activation costs outside the chosen function: the same program recorded with ``--record-only tally``,
a small function of its own called once a round, should too.

    python benchmarks/scope_cost.py [--repeat N] [--work N] [--contrast] [--json FILE]

The program (written into a temporary folder): ``main.py``, the program's own code, recorded: a few
lines that call into ``heavy`` and do ~10% of the work themselves in C (sorting, summing: few events);
``heavy.py``, the program's own code too (recorded by default), pure Python: function calls, loops, a
generator, caught exceptions, ~90% of the time. Each run prints the share of its time spent in
``heavy`` (measured inside the program), so the 90% is checked, not assumed.

Rows, every run a subprocess, the repeats interleaved (row after row, N rounds), in the same run so
the ratios compare like with like:

- ``untraced``: ``python main.py``;
- ``--exclude heavy``: excluded by module name;
- ``--exclude */heavy.py``: excluded by file path;
- ``--record-only tally``: only inside ``main.tally`` (ten activations, a few lines each): everything
  else, ``heavy`` included (in scope: recorded by default), runs outside an activation;
- ``empty program``, untraced and recorded: the fixed cost of starting timelapse and saving a trace
  (a time, not a ratio); the excluded rows are also shown without it (their time less this cost, over
  the untraced time): what the excluded module itself costs while the program runs;
- with ``--contrast``, ``recorded (no exclude)``: the same program with ``heavy`` recorded, at 1/50 of
  the work (the ratio, not the time, is what compares).

Reported per row: median wall time, min-max spread, and the ratio of its median to the untraced median.
Exit status 0 when the excluded and activation rows are within the target, 1 otherwise (2: a run
failed).
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

TARGET = 1.5  # excluded module: time / untraced time, at most

HEAVY = '''\
"""Pure-Python work: what the user excludes."""


def mix(a, b):
    return (a * 31 + b) % 1000003


def numbers(n):
    for i in range(n):
        yield i * 7 % 1009


def lookup(table, key):
    try:
        return table[key]
    except KeyError:
        return 0


def work(n):
    table = {i: i * i for i in range(0, 1009, 3)}
    acc = 0
    for value in numbers(n):
        acc = mix(acc, value)
        if value % 16 == 0:
            acc += lookup(table, value)  # a KeyError two times in three
        elif acc % 5 == 0:
            acc -= 1
    return acc
'''

MAIN = '''\
"""The program's own code: recorded. It does ~10% of the work, in a few lines (C does it)."""

import sys
import time

import heavy


def own(data):
    ordered = sorted(data)
    return sum(ordered) + max(ordered)


def tally(checksum, round_number):
    """A few lines once a round: the function recorded by --record-only."""
    folded = checksum & 0xFFFF
    return folded ^ round_number


def main(work, rounds):
    data = list(range(work // 12, 0, -1))
    in_heavy = in_own = 0.0
    checksum = 0
    for round_number in range(rounds):
        start = time.perf_counter()
        checksum ^= heavy.work(work // rounds)
        middle = time.perf_counter()
        checksum ^= own(data)
        end = time.perf_counter()
        in_heavy += middle - start
        in_own += end - middle
        tally(checksum, round_number)
    print(f"{checksum} {in_heavy / (in_heavy + in_own):.3f}")


main(int(sys.argv[1]), 10)
'''


def run(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"scope_cost: {' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return elapsed, result.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of every row (default 5)")
    parser.add_argument("--work", type=int, default=3_000_000,
                        help="iterations of heavy's loop (default 3000000, ~1 s untraced)")
    parser.add_argument("--contrast", action="store_true",
                        help="also record heavy (at 1/50 of the work) to show what excluding saves")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    options = parser.parse_args()

    python = sys.executable
    timelapse = str(Path(python).parent / "timelapse")
    if not os.path.exists(timelapse):
        sys.exit(f"scope_cost: no timelapse console script next to {python}")
    with tempfile.TemporaryDirectory(prefix="scope-cost-") as folder:
        work = Path(folder)
        (work / "heavy.py").write_text(HEAVY)
        (work / "main.py").write_text(MAIN)
        (work / "empty.py").write_text("")
        out = str(work / "trace")
        record = [timelapse, "record", "-q", "--no-config", "-o", out]
        n = str(options.work)
        rows: dict[str, list[str]] = {
            "untraced": [python, "main.py", n],
            "--exclude heavy": [*record, "--exclude", "heavy", "main.py", n],
            "--exclude */heavy.py": [*record, "--exclude", "*/heavy.py", "main.py", n],
            "--record-only tally": [*record, "--record-only", "tally", "main.py", n],
            "empty program, untraced": [python, "empty.py"],
            "empty program, recorded": [*record, "empty.py"],
        }
        if options.contrast:
            rows["recorded (no exclude), 1/50 work"] = [*record, "main.py", str(options.work // 50)]
            rows["untraced, 1/50 work"] = [python, "main.py", str(options.work // 50)]
        times: dict[str, list[float]] = {name: [] for name in rows}
        shares: dict[str, list[float]] = {name: [] for name in rows}
        checksums: dict[str, set[str]] = {}
        for _ in range(options.repeat):
            for name, command in rows.items():
                elapsed, output = run(command, work)
                times[name].append(elapsed)
                if output:
                    checksum, share = output.split()
                    shares[name].append(float(share))
                    checksums.setdefault(command[-1], set()).add(checksum)
        if any(len(c) > 1 for c in checksums.values()):
            sys.exit(f"scope_cost: the runs disagree on the checksum: {checksums}")

    base = statistics.median(times["untraced"])
    small_base = statistics.median(times["untraced, 1/50 work"]) if options.contrast else None
    print(f"scope_cost: {options.repeat} rounds, work {options.work}, Python "
          f"{sys.version.split()[0]}; median, min-max, ratio to untraced (same run)")
    figures = {}
    failed = False
    for name, values in times.items():
        median = statistics.median(values)
        reference = small_base if "1/50" in name else base
        ratio = median / reference if not name.startswith("empty") else None
        share = f"  heavy's share {statistics.median(shares[name]):.0%}" if shares[name] else ""
        verdict = ""
        if name.startswith(("--exclude", "--record-only")):
            ok = ratio is not None and ratio <= TARGET
            failed |= not ok
            verdict = f"  {'OK' if ok else 'OVER'} (target <= {TARGET}x)"
        shown_ratio = f"{ratio:6.2f}x" if ratio is not None else "   -   "
        print(f"  {name:34} {median:7.3f} s  ({min(values):.3f}-{max(values):.3f})  "
              f"{shown_ratio}{share}{verdict}")
        figures[name] = {"median_s": median, "min_s": min(values), "max_s": max(values),
                         "ratio": ratio, "times_s": values}
    fixed = (statistics.median(times["empty program, recorded"])
             - statistics.median(times["empty program, untraced"]))
    print(f"  fixed cost of recording (start, save): {fixed:.3f} s; without it:")
    for name in ("--exclude heavy", "--exclude */heavy.py", "--record-only tally"):
        ratio = (statistics.median(times[name]) - fixed) / base
        print(f"  {name:34} {ratio:6.2f}x")
        figures[name]["ratio_without_fixed_cost"] = ratio
    figures["fixed_cost_s"] = fixed
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

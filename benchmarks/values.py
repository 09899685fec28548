#!/usr/bin/env python3
"""The value walk alone: how long ``ValueEncoder.encode_json`` takes per value, for typical values.

    python benchmarks/values.py                       # this checkout: µs per value, values/s
    python benchmarks/values.py --against OTHER/src   # and the ratio to another checkout's walk

With ``--against``, both walks are imported into one process (each with its own copy of the
``timelapse`` package) and timed in alternation, 200 calls at a time, in CPU time of this thread:
on a shared, noisy machine the ratio of neighbouring measurements is steadier than either time.
Each case reports the median time of each and the median ratio (with its quartiles). The step memo
is on and cleared before every call, as the recorder does.

The programs of ``benchmarks/run.py`` measure the whole recorder; this one says which values the walk
is fast or slow on.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


@dataclasses.dataclass
class Particle:
    x: float
    y: float
    vx: float
    vy: float
    name: str


class Node:
    def __init__(self, value: int, next_node: Node | None) -> None:
        self.value = value
        self.next_node = next_node


def cases() -> list[tuple[str, object]]:
    particles = [Particle(i * 1.5, i * 2.5, 0.1, 0.2, f"p{i}") for i in range(40)]
    chain = None
    for i in range(30):
        chain = Node(i, chain)
    return [
        ("a mix of locals", [0, 1, 17, 123456, -5, "i", "name", "a short sentence", 2.5, None, True,
                             [1, 2, 3], ["a", "b"], {"x": 1, "y": 2}, (1, "a"), particles[3]]),
        ("40 dataclasses", particles),
        ("dict of 40 dataclasses", {p.name: p for p in particles}),
        ("50 nested lists", [[i, [i, (i, "x")]] for i in range(50)]),
        ("100 ints", list(range(100))),
        ("dict of 50 str: int", {str(i): i for i in range(50)}),
        ("a chain of 30 objects", chain),
        ("set of 50 ints", set(range(50))),
        ("[1, 2, 3]", [1, 2, 3]),
        ("{'a': 1, 'b': 'x'}", {"a": 1, "b": "x"}),
        ("one dataclass", particles[0]),
        ("(1, 'a')", (1, "a")),
        ("3 lists of 2", [[1, 2], [3, 4], [5, 6]]),
        ("10 dataclasses", particles[:10]),
    ]


def load_encoder(src: Path):
    """``timelapse.encoder`` of the checkout whose ``src`` folder is ``src`` (a fresh import)."""
    for name in [m for m in sys.modules if m == "timelapse" or m.startswith("timelapse.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("timelapse.encoder")
    finally:
        sys.path.remove(str(src))


def timer_for(module, value: object):
    encoder = module.ValueEncoder(lambda kind, lang, fields=None: 0)
    memo = encoder.step_memo()
    encode = encoder.encode_json

    def run(n: int) -> float:
        start = time.thread_time()
        for _ in range(n):
            memo.clear()
            encode(value)
        return (time.thread_time() - start) / n

    run(2)  # classes classified, caches warm
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout's src folder, to compare with")
    parser.add_argument("--rounds", type=int, default=40, help="alternations per case (default 40)")
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement (default 200)")
    args = parser.parse_args(argv)
    other = load_encoder(args.against) if args.against else None
    ours = load_encoder(SRC)
    for name, value in cases():
        mine = timer_for(ours, value)
        theirs = timer_for(other, value) if other else None
        times, their_times, ratios = [], [], []
        for round_ in range(args.rounds):
            if theirs is not None and round_ % 2:
                their_times.append(theirs(args.calls))
            times.append(mine(args.calls))
            if theirs is not None and not round_ % 2:
                their_times.append(theirs(args.calls))
            if theirs is not None:
                ratios.append(times[-1] / their_times[-1])
        line = f"{name:24} {statistics.median(times) * 1e6:9.2f} µs"
        if theirs is not None:
            low, _, high = statistics.quantiles(ratios, n=4)
            line += (f"   other {statistics.median(their_times) * 1e6:9.2f} µs"
                     f"   this/other {statistics.median(ratios):5.2f} ({low:.2f}-{high:.2f})")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

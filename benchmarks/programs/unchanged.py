"""The `unchanged` pair: a 50k-iteration loop whose frame holds a value the loop never touches.

argv[1]: "big" (a ~1,000-node structure) or "int" (an int); argv[2]: iterations (default 50000).
Recorded, the two should cost about the same per step: an unchanged value need not be walked again.
"""
import sys


def build():
    # 1,000 nodes: 50 dicts of 9 entries and 50 lists of 9 ints, plus the outer list.
    return [
        {"id": i, "name": f"n{i}", "values": [i * k for k in range(9)], "a": 1, "b": 2.5,
         "c": None, "d": True, "e": "x", "f": -i}
        for i in range(50)
    ]


def loop(held, iterations):
    total = 0
    for i in range(iterations):
        total = (total + i * 3) % 1000003
    return total


def main(kind, iterations):
    held = build() if kind == "big" else 12345
    print("checksum", loop(held, iterations))


main(sys.argv[1] if len(sys.argv) > 1 else "big", int(sys.argv[2]) if len(sys.argv) > 2 else 50000)

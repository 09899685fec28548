"""A records program: a list of 200 dicts, each with nested dicts and lists, updated in place in a
loop (the data most scripts hold: parsed JSON, rows, configuration).

argv[1]: scale factor (default 1).
"""
import sys


def make_records(count):
    return [
        {
            "id": i,
            "name": f"item-{i}",
            "tags": ["new", "red" if i % 2 else "blue"],
            "stock": {"warehouse": i % 7, "shop": i % 3},
            "prices": [1.5 * i, 2.0 * i],
        }
        for i in range(count)
    ]


def update(records, round_):
    changed = 0
    for record in records:
        stock = record["stock"]
        if (record["id"] + round_) % 5 == 0:
            stock["shop"] += 1
            stock["warehouse"] -= 1
            changed += 1
        if round_ % 4 == 0:
            record["prices"][0] += 0.5
    return changed


def main(scale):
    records = make_records(200)
    changed = 0
    for round_ in range(12 * scale):
        changed += update(records, round_)
    total = sum(r["stock"]["shop"] + r["stock"]["warehouse"] for r in records)
    print("checksum", changed, total, records[-1]["prices"][0])


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

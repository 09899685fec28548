"""A hot loop with several locals of different types (ints, float, str, tuple).

argv[1]: scale factor (default 1).
"""
import sys


def crunch(iterations):
    acc = 0
    fl = 0.5
    a, b = 1, 1
    label = "x"
    pair = (0, 0)
    for i in range(iterations):
        a, b = b, (a + b) % 1000003
        acc = (acc * 31 + a ^ i) & 0xFFFFFFFF
        fl = fl * 0.999 + (i % 7) * 0.01
        if i % 100 == 0:
            label = "step-%d" % (i // 100)
            pair = (i, acc % 97)
    return acc, round(fl, 6), label, pair


def main(scale):
    print("checksum", crunch(120000 * scale))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

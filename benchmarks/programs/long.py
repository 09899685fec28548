"""A long-running loop, parameterised by argv[1] (iterations), for the peak-memory check."""
import sys


def work(i, state):
    key = i % 8
    state[key] = (state.get(key, 0) + i * 7) % 10007
    return state[key]


def main(iterations):
    state = {}
    total = 0
    for i in range(iterations):
        total = (total + work(i, state)) % 1000000007
    print("checksum", total, len(state))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 50000)

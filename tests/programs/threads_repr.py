"""4 threads whose locals hold objects with a Python-level __repr__ that must never be called."""
import threading

lock = threading.Lock()
repr_calls = []


class Sneaky:
    def __init__(self, n):
        self.n = n

    def __repr__(self):
        repr_calls.append(self.n)
        with lock:  # would deadlock a recorder that calls repr while holding its own lock
            return f"Sneaky({self.n})"

    __str__ = __repr__


def churn(k):
    items = [Sneaky(k * 100 + i) for i in range(3)]
    total = 0
    for item in items:
        with lock:
            total += item.n
    return total


def run(k, out):
    out[k] = churn(k)


out = {}
threads = [threading.Thread(target=run, args=(k, out)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(out.items()), "repr calls:", len(repr_calls))

"""A thread adds globals while the module body runs (issue 9, item 12)."""
import threading

stop = False


def add_globals():
    i = 0
    while not stop:
        globals()[f"g{i}"] = i      # the module's namespace changes size all the time
        globals().pop(f"g{i - 20}", None)
        i += 1


t = threading.Thread(target=add_globals)
t.start()
n = 0
for _ in range(3000):
    n += 1
stop = True
t.join()
print("done", n)

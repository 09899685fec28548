"""Four threads of pure computation: they switch as often as the GIL makes them (issue 9, item 14)."""
import threading


def work(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total


threads = [threading.Thread(target=work, args=(20000,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")

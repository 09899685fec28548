import threading


def work(k):
    total = 0
    for i in range(200):
        total += i * k
    return total


results = {}


def worker(k):
    results[k] = work(k)


threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(results.items()))

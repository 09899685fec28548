"""Several threads print; each line must be captured whole, on its own thread's step."""
import threading

all_started = threading.Barrier(4)


def worker(k):
    all_started.wait()  # four threads alive at once: four thread ids
    for i in range(20):
        print(f"worker {k} line {i}")


threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("all done")

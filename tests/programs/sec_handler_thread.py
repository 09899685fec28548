"""Handlers run in the main thread only, recorded or not (review of issue 9's sections)."""
import signal
import threading

where = []
signal.signal(signal.SIGALRM, lambda s, f: where.append(threading.current_thread() is threading.main_thread()))
stop = False


def worker():
    n = 0
    while not stop:
        n += 1


t = threading.Thread(target=worker)
t.start()
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
total = 0
for i in range(30000):
    total += i
signal.setitimer(signal.ITIMER_REAL, 0)
stop = True
t.join()
print("all in the main thread:", all(where), bool(where))

"""End the process the way argv[1] says: atexit-error, os-exit, thread."""
import atexit
import os
import sys
import threading


def broken_handler():
    raise RuntimeError("atexit handler failed")


main_done = threading.Event()


def late_worker():
    main_done.wait()
    value = 0
    for i in range(50):
        value += i
    print("worker", value)


how = sys.argv[1]
if how == "atexit-error":
    atexit.register(broken_handler)
    print("registered")
elif how == "os-exit":
    print("exiting hard", flush=True)
    os._exit(7)
elif how == "thread":
    threading.Thread(target=late_worker).start()
    print("main done", flush=True)
    main_done.set()

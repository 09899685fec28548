"""Issue 14.3: one child of every kind — subprocess (a script, -c), multiprocessing (fork, spawn,
forkserver), os.fork — each doing a little work of its own."""
import multiprocessing
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def square(x):
    y = x * x
    return y


def child_main(n):
    total = 0
    for i in range(n):
        total += square(i)
    print("child total", total, flush=True)


if __name__ == "__main__":
    done = subprocess.run([sys.executable, "-c", "print('dash c', sum(range(5)))"],
                          capture_output=True, text=True)
    print(done.stdout.strip())
    done = subprocess.run([sys.executable, os.path.join(HERE, "children_leaf.py"), "7"])
    print("leaf exit", done.returncode)
    for method in ("fork", "spawn", "forkserver"):
        process = multiprocessing.get_context(method).Process(target=child_main, args=(3,))
        process.start()
        process.join()
        print(method, "exit", process.exitcode, flush=True)
    pid = os.fork()
    if pid == 0:
        child_main(2)
        os._exit(5)
    _, status = os.waitpid(pid, 0)
    print("os.fork exit", os.waitstatus_to_exitcode(status))

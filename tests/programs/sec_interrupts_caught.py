"""A program that catches the BaseExceptions its handlers raise, and goes on (issue 9, item 3)."""
import os
import signal


class Stop(BaseException):
    pass


def on_usr1(signum, frame):
    raise Stop()


def grow(values):
    values.append(len(values))
    return values


def spin(values):
    while True:
        values = grow(values)
        if len(values) > 50:
            values.clear()


signal.signal(signal.SIGUSR1, on_usr1)
got = {"Stop": 0, "KeyboardInterrupt": 0}
which = [signal.SIGINT]
signal.signal(signal.SIGALRM, lambda s, f: os.kill(os.getpid(), which[0]))
for round_ in range(200):
    which[0] = signal.SIGUSR1 if round_ % 2 else signal.SIGINT
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0005)
        spin([])
    except Stop:
        got["Stop"] += 1
    except KeyboardInterrupt:
        got["KeyboardInterrupt"] += 1
print(got)

"""The usual timeout pattern: a SIGALRM handler raises, the program catches it (issue 9, item 2)."""
import signal


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def spin():
    n = 0
    while True:
        n += 1


signal.signal(signal.SIGALRM, on_alarm)
caught = 0
for attempt in range(20):
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.003)
        spin()
    except Timeout:
        caught += 1
print("timeouts caught:", caught)
print("handler shown:", signal.getsignal(signal.SIGALRM) is on_alarm)

"""Unflushed output, then the process ends the way argv[1] says."""
import os
import signal
import sys
import time


def finish(how):
    if how == "exit":
        sys.exit(3)
    if how == "exception":
        raise ValueError("boom")
    if how == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # still working when the signal ends it


how = sys.argv[1]
sys.stdout.write("unflushed output for " + how)
sys.stderr.write("stderr for " + how + "\n")
finish(how)

"""Programs that swap the streams themselves: what they capture is not output."""
import contextlib
import io
import logging
import sys

buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    print("captured by the program")
print("captured text was:", repr(buffer.getvalue()))

saved = sys.stdout
sys.stdout = io.StringIO()
print("also invisible")
sys.stdout = saved
print("back on stdout")

handler = logging.StreamHandler()  # holds sys.stderr as it is now
logging.basicConfig(handlers=[handler], level=logging.INFO, format="log: %(message)s")
logging.info("a log line")
print("done")

"""Leave the working directory: argv[1] 'deleted' (a TemporaryDirectory, gone at the end) or 'moved'."""
import os
import sys
import tempfile

if sys.argv[1] == "deleted":
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
    # The working directory no longer exists.
else:
    os.chdir(tempfile.gettempdir())
print("done")

"""``python -m timelapse`` is the ``timelapse`` command."""

import sys

from timelapse.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""The exceptions timelapse raises."""


class RecorderError(RuntimeError):
    """Recording could not start, or the recorder itself failed while recording."""


class UsageError(Exception):
    """Bad input on the command line: reported as one line, exit status 2."""

"""The one exception type for expected failures (bad input, missing data, bad checksum, ...).

The CLI prints its message as a single line and exits non-zero without a traceback; anything
else that escapes is a bug and keeps its traceback.
"""


class TinyconvError(Exception):
    """An expected failure whose message names the problem and the file it concerns."""

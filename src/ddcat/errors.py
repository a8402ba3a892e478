"""User-facing errors.

Anything a user can cause (a missing file, a bad config value, a checkpoint of the wrong
architecture) raises :class:`DdcatError` with a one-line message naming the file, key or value.
The command line turns it into ``ddcat: error: <message>`` and exit code 2, without a traceback.
"""


class DdcatError(Exception):
    """A mistake in the user's input: reported in one line, exit code 2."""

"""User-facing errors, and how values are shown in their messages.

Anything a user can cause (a missing file, a bad config value, a checkpoint of the wrong
architecture) raises :class:`DdcatError` with a one-line message naming the file, key or value.
The command line turns it into ``ddcat: error: <message>`` and exit code 2, without a traceback.
A value from a file is shown through :func:`show`, which is bounded: a crafted file cannot make a
message long or slow to build.
"""

from __future__ import annotations

import reprlib


class DdcatError(Exception):
    """A mistake in the user's input: reported in one line, exit code 2."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) during a command: exit code 130 with a hint of how to continue."""

    def __init__(self, hint: str = "") -> None:
        super().__init__(hint)
        self.hint = hint


_SHOW = reprlib.Repr()
_SHOW.maxlevel = 3
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxset = _SHOW.maxdict = 6
_SHOW.maxstring = 80
_SHOW.maxother = 80
_SHOW.maxlong = 40
MAX_SHOWN = 160


def show(value: object) -> str:
    """``repr(value)`` bounded in depth, items and length (at most :data:`MAX_SHOWN` characters)."""
    text = _SHOW.repr(value).replace("\n", "\\n")
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."

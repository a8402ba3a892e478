"""Every ``ddcat ...`` command shown in README.md and docs/*.md parses with the real command line.

Fenced ``bash`` blocks are read; ``\\`` continuations are joined; a line that starts with ``ddcat``
(or runs ``torchrun ... -m ddcat``, or ``python -m ddcat``) is split at ``&&`` / ``;`` / ``|``, its
trailing ``# comment`` dropped, ``[--flag]`` (optional, as the docs write it) unbracketed, and then
parsed with :func:`ddcat.cli.build_parser`: the subcommand must exist, every flag must be known,
every required argument given. ``...`` stands for a value the reader supplies. A command that needs
data or weights the reader must download is marked ``# needs data`` in the docs; it is checked here
the same way (its flags must exist), it is only not run by the docs' quick check.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from ddcat.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
LAUNCH = re.compile(r"\s*(\$ |do )?(ddcat\s|torchrun\s|srun\s|\S*python3?\s+-m\s+ddcat\s)")


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced block marked ``bash`` (or ``sh``, or unmarked)."""
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if m and current is None:
            current, start, lang = [], number + 1, m.group(1)
        elif line.strip() == "```" and current is not None:
            if lang in ("bash", "sh", "shell", ""):
                blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def ddcat_commands(path: Path) -> list[tuple[str, str]]:
    """(where, command) of every ddcat command in the file's bash blocks."""
    found = []
    for start, lines in bash_blocks(path.read_text()):
        joined, first = "", None
        for offset, line in enumerate(lines):
            if first is None:
                first = start + offset
            stripped = line.rstrip()
            if stripped.endswith("\\"):
                joined += stripped[:-1] + " "
                continue
            joined += stripped
            for part in re.split(r"&&|;|\|(?!\|)", joined.split(" #")[0] if not joined.lstrip().startswith("#") else ""):
                if not LAUNCH.match(part):
                    continue
                tokens = shlex.split(part, comments=True)
                if "&" in tokens:  # a background job: the command ends there
                    tokens = tokens[:tokens.index("&")]
                if "ddcat" in tokens and (tokens[0] == "ddcat" or tokens[tokens.index("ddcat") - 1] == "-m"):
                    found.append((f"{path.relative_to(ROOT)}:{first}", " ".join(shlex.quote(t) for t in tokens[tokens.index("ddcat"):])))
            joined, first = "", None
    return found


COMMANDS = [pytest.param(cmd, id=where) for path in DOCS for where, cmd in ddcat_commands(path)]
INLINE = re.compile(r"`(ddcat [a-z-]+ [^`]*)`")


def inline_commands(path: Path) -> list[tuple[str, str]]:
    """(where, command) of the inline ``ddcat SUB --flag ...`` spans of prose (a fragment: flags only)."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        found += [(f"{path.relative_to(ROOT)}:{number}", m.group(1)) for m in INLINE.finditer(line) if " -" in m.group(1)]
    return found


INLINE_COMMANDS = [pytest.param(cmd, id=where) for path in DOCS for where, cmd in inline_commands(path)]


@pytest.mark.parametrize("command", INLINE_COMMANDS)
def test_inline_command_fragments_name_real_flags(command):
    """Prose quotes fragments (``ddcat eval --checkpoint``): the subcommand and each flag must exist."""
    tokens = shlex.split(command.replace("...", ""))
    subparsers = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert tokens[1] in subparsers.choices, f"`{command}`: no subcommand {tokens[1]!r}"
    known = subparsers.choices[tokens[1]]._option_string_actions
    bad = [t.split("=")[0] for t in tokens[2:] if t.startswith("-") and t.split("=")[0].strip("[]") not in known]
    assert not bad, f"`{command}`: unknown flag(s) {bad}"


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20  # the parser above finds them


@pytest.mark.parametrize("command", COMMANDS)
def test_docs_command_parses(command):
    tokens = [t[1:-1] if t.startswith("[") and t.endswith("]") else t for t in shlex.split(command)[1:]]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _, unknown = build_parser().parse_known_args(tokens)
    except SystemExit:
        pytest.fail(f"`{command}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    assert not unknown, f"`{command}`: unknown argument(s) {unknown}"

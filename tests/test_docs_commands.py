"""Every command shown in README.md and docs/*.md parses with the real command line.

Fenced ``bash`` / ``sh`` / ``shell`` / ``console`` blocks and unmarked ones are read; ``\\``
continuations are joined; a ``# comment`` is dropped; each line is split into simple commands at
``&&``, ``||``, ``;``, ``|`` and ``&``. A simple command is found behind any launcher prefix:
environment assignments (``PYTHONPATH=src``), shell words (``do``, ``then``, ``time``, ``nohup``,
``$``), ``srun`` / ``sbatch`` / ``mpirun`` / ``torchrun`` (with their options), ``python -m ddcat``,
and a quoted command passed to ``sbatch --wrap "..."`` or ``bash -c "..."``. Two kinds are checked:

* ``ddcat SUB ...``: parsed with :func:`ddcat.cli.build_parser` (the subcommand must exist, every
  flag must be known, every required argument given);
* ``python benchmarks/X.py ...``: parsed with that script's ``build_parser()`` (fenced blocks and
  inline spans of prose alike: the docs show both as commands to run).

``[--flag]`` (optional, as the docs write it) is unbracketed and ``...`` stands for a value the reader
supplies. A line of a block that names ``ddcat SUB`` (a real subcommand) or ``benchmarks/X.py`` after
its comment is removed but yields no command is a failure: a launcher form this test does not know
must be taught to it, not skipped silently. A command shown commented out (``#   srun torchrun -m
ddcat train ...`` in an sbatch script) is checked too. A command that needs data or weights the reader must
download is marked ``# needs data`` in the docs; it is checked here the same way (its flags must
exist), it is only not run by the docs' quick check.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
from pathlib import Path

import pytest

from ddcat.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_LANGS = ("bash", "sh", "shell", "console", "")
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_WORDS = {"$", "do", "then", "else", "time", "nohup", "exec", "env", "!", "{", "("}
LAUNCHERS = {"srun", "sbatch", "mpirun", "mpiexec", "torchrun", "xargs"}
PYTHONS = {"python", "python3"}
BENCH = re.compile(r"^(?:\./)?benchmarks/[\w.-]+\.py$")
SUBCOMMANDS = tuple(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)
MENTION = re.compile(r"(?<![\w/.-])ddcat\s+(?:" + "|".join(map(re.escape, SUBCOMMANDS)) + r")(?![\w-])|(?<![\w/])benchmarks/[\w.-]+\.py")


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced shell block (marked bash, sh, shell, console, or unmarked)."""
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if m and current is None:
            current, start, lang = [], number + 1, m.group(1)
        elif line.strip() == "```" and current is not None:
            if lang in SHELL_LANGS:
                blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def drop_comment(line: str) -> str:
    """``line`` without its shell comment (a ``#`` at the start of a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def find_command(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``("ddcat", argv)`` or ``("benchmarks/X.py", argv)`` of one simple command behind its launchers."""
    i = 0
    while i < len(tokens) and (ASSIGN.match(tokens[i]) or tokens[i] in SHELL_WORDS):
        i += 1
    if i == len(tokens):
        return None
    head, rest = tokens[i], tokens[i + 1:]
    if head == "ddcat":
        return "ddcat", rest
    if os.path.basename(head) in PYTHONS:
        if rest[:2] == ["-m", "ddcat"]:
            return "ddcat", rest[2:]
        if rest and BENCH.match(rest[0]):
            return rest[0].removeprefix("./"), rest[1:]
        return None
    if head in ("bash", "sh") and len(rest) >= 2 and rest[0] == "-c":
        return first_command(rest[1])
    if head in LAUNCHERS:
        for j, t in enumerate(rest):
            if t == "-m" and rest[j + 1:j + 2] == ["ddcat"]:  # torchrun ... -m ddcat
                return "ddcat", rest[j + 2:]
            if t == "ddcat" or os.path.basename(t) in PYTHONS | LAUNCHERS or BENCH.match(t):
                return find_command(rest[j:])
            if " " in t.strip():  # sbatch --wrap "ddcat report ..."
                found = first_command(t)
                if found:
                    return found
    return None


def simple_commands(line: str) -> list[list[str]]:
    """The tokens of each simple command of a shell line (comment dropped; split at the control
    operators ``&&`` ``||`` ``;`` ``|`` ``&`` outside quotes). A line shlex cannot read (an open
    quote) has none."""
    lexer = shlex.shlex(drop_comment(line), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, ""
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    out, current = [], []
    for token in tokens:
        if token and set(token) <= set(";&|"):
            out, current = out + [current] if current else out, []
        else:
            current.append(token)
    return out + [current] if current else out


def first_command(line: str) -> tuple[str, list[str]] | None:
    for tokens in simple_commands(line):
        found = find_command(tokens)
        if found:
            return found
    return None


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of a block's lines with ``\\`` continuations joined."""
    out, joined, first = [], "", None
    for offset, line in enumerate(lines):
        first = start + offset if first is None else first
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            joined += stripped[:-1] + " "
            continue
        out.append((first, joined + stripped))
        joined, first = "", None
    return out


def doc_commands(path: Path) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """(where, program, argv) of every command of the file's shell blocks, and the ``where`` of each
    line that names a ddcat subcommand or a benchmark but yields no command (the silent skips)."""
    found, missed = [], []
    for start, lines in bash_blocks(path.read_text()):
        for number, line in logical_lines(start, lines):
            where = f"{path.relative_to(ROOT)}:{number}"
            commands = [c for c in map(find_command, simple_commands(line)) if c]
            if line.lstrip().startswith("#"):  # a command shown commented out (e.g. the srun line of an sbatch script)
                commands = [(prog, argv) for prog, argv in (c for c in map(find_command, simple_commands(line.lstrip().lstrip("#"))) if c)
                            if prog != "ddcat" or (argv and argv[0] in SUBCOMMANDS)]
            found += [(where, prog, argv) for prog, argv in commands]
            if not commands and MENTION.search(drop_comment(line)):
                missed.append(f"{where}: {line.strip()}")
    return found, missed


INLINE_SPAN = re.compile(r"`([^`]+)`")


def prose(text: str) -> str:
    """``text`` with its fenced blocks blanked (line numbers kept)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()) or (inside and line.strip() == "```"):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def inline_benchmark_commands(path: Path) -> list[tuple[str, str, list[str]]]:
    """(where, script, argv) of the inline ``python benchmarks/X.py ...`` spans of prose (a span may wrap)."""
    text = prose(path.read_text())
    found = []
    for m in INLINE_SPAN.finditer(text):
        span = " ".join(m.group(1).split())
        command = find_command(shlex.split(span)) if re.search(r"python3?\s+(\./)?benchmarks/", span) else None
        if command:
            found.append((f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}", *command))
    return found


BLOCK_COMMANDS = [(where, prog, argv) for path in DOCS for where, prog, argv in doc_commands(path)[0]]
MISSED = [miss for path in DOCS for miss in doc_commands(path)[1]]
COMMANDS = [pytest.param(argv, id=where) for where, prog, argv in BLOCK_COMMANDS if prog == "ddcat"]
BENCH_COMMANDS = [
    pytest.param(prog, argv, id=where)
    for where, prog, argv in [*(c for c in BLOCK_COMMANDS if c[1] != "ddcat"), *(c for p in DOCS for c in inline_benchmark_commands(p))]
]


@functools.lru_cache(maxsize=None)
def benchmark_parser(script: str) -> argparse.ArgumentParser:
    """``build_parser()`` of ``benchmarks/X.py`` (imported by path; the scripts run nothing on import)."""
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    spec = importlib.util.spec_from_file_location(f"_docs_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "build_parser"), f"{script} has no build_parser()"
    return module.build_parser()


def unbracket(argv: list[str]) -> list[str]:
    return [t[1:-1] if t.startswith("[") and t.endswith("]") else t for t in argv]


def parse(parser: argparse.ArgumentParser, argv: list[str], shown: str) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            _, unknown = parser.parse_known_args(unbracket(argv))
    except SystemExit:
        pytest.fail(f"`{shown}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    assert not unknown, f"`{shown}`: unknown argument(s) {unknown}"


# ------------------------------------------------------------------ the extraction itself, by hand


@pytest.mark.parametrize("line, expected", [
    ("ddcat eval --checkpoint a.pt --out e  # comment ddcat train", [("ddcat", ["eval", "--checkpoint", "a.pt", "--out", "e"])]),
    ("for i in 0 1; do ddcat experiment f.yaml --out g --shard $i/2 & done; wait", [("ddcat", ["experiment", "f.yaml", "--out", "g", "--shard", "$i/2"])]),
    ("srun torchrun --nproc_per_node=4 -m ddcat train --out r", [("ddcat", ["train", "--out", "r"])]),
    ("srun -n 4 ddcat eval --out e", [("ddcat", ["eval", "--out", "e"])]),
    ("OMP_NUM_THREADS=1 DDCAT_THREADS=2 ddcat demo --out d", [("ddcat", ["demo", "--out", "d"])]),
    ("$ python -m ddcat report r --out o", [("ddcat", ["report", "r", "--out", "o"])]),
    ('sbatch --dependency=afterok:$x --wrap "ddcat report r --out o"', [("ddcat", ["report", "r", "--out", "o"])]),
    ("bash -c 'ddcat plot-train r'", [("ddcat", ["plot-train", "r"])]),
    ("PYTHONPATH=src python benchmarks/run.py --quick && ddcat demo --out d", [("benchmarks/run.py", ["--quick"]), ("ddcat", ["demo", "--out", "d"])]),
    ("make demo   # installs ddcat train deps", []),
    ("for m in clean sat ddcat ddcat-m; do", []),
])
def test_commands_are_found_behind_any_launcher(line, expected):
    assert [c for c in map(find_command, simple_commands(line)) if c] == expected


def test_a_line_naming_ddcat_that_yields_no_command_is_reported(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\nfoo ddcat train --out x\nddcat eval --out y \\\n    --attack bim\n# ddcat train: a comment\n"
                   "#   srun torchrun -m ddcat report r --out o\n```\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found, missed = doc_commands(doc)
    assert found == [("doc.md:3", "ddcat", ["eval", "--out", "y", "--attack", "bim"]), ("doc.md:6", "ddcat", ["report", "r", "--out", "o"])]
    assert missed == ["doc.md:2: foo ddcat train --out x"]


def test_inline_benchmark_spans_are_found_across_a_line_break(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("Run `python benchmarks/run.py\n--quick` or `make bench`.\n```bash\n`python benchmarks/x.py`\n```\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert inline_benchmark_commands(doc) == [("doc.md:1", "benchmarks/run.py", ["--quick"])]


# ------------------------------------------------------------------ the docs


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20 and len(BENCH_COMMANDS) > 5  # the extraction above finds them


def test_no_docs_line_naming_a_command_is_skipped_silently():
    assert not MISSED, "lines that name a ddcat subcommand or a benchmark but yield no command:\n" + "\n".join(MISSED)


@pytest.mark.parametrize("argv", COMMANDS)
def test_docs_command_parses(argv):
    parse(build_parser(), argv, "ddcat " + " ".join(argv))


@pytest.mark.parametrize("script, argv", BENCH_COMMANDS)
def test_docs_benchmark_command_parses(script, argv):
    parse(benchmark_parser(script), argv, f"python {script} " + " ".join(argv))


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

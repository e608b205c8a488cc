"""The documentation stays true: every `bench` command it shows parses, every relative link resolves.

Commands are taken from fenced code blocks (lines starting with ``bench``, ``torchrun ... -m vssbench``
or ``python -m vssbench``, after any ``VAR=value`` prefixes, with ``\\`` continuations joined) and from
inline code spans starting with ``bench``. A synopsis is read with every optional part included:
``[--json]`` becomes ``--json``, ``METHOD[:PRESET]`` becomes ``METHOD:PRESET``, and ``a|b`` takes
``a``. The CLI's own parser then has to accept it: an unknown option, a missing value or an invalid
choice fails the test, naming the file and line.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from vssbench.cli import build_parser

ROOT = Path(__file__).parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.md"),
                    ROOT / "reports" / "synthetic" / "findings.md", ROOT / "reports" / "fidelity.md"])
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_SPAN = re.compile(r"`(bench\s[^`]+)`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _synopsis_to_arguments(command: str) -> list[str]:
    command = re.sub(r"\[([^\[\]]*)\]", r"\1", command)  # optional parts included
    command = command.replace("..", "")
    tokens = shlex.split(command, comments=True)
    return [token.split("|")[0] if "|" in token else token for token in tokens]


def commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number, command as written, its arguments after ``bench``) of every documented command."""
    found = []
    for fence in _FENCE.finditer(text):
        if fence.group(1) not in ("bash", "sh", "shell", "console"):
            continue
        first_line = text[:fence.start(2)].count("\n") + 1
        lines = fence.group(2).splitlines()
        index = 0
        while index < len(lines):
            number, line = first_line + index, lines[index]
            while line.rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
                line = line.rstrip()[:-1] + " " + lines[index].strip()
            index += 1
            tokens = shlex.split(line, comments=True)
            while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
                tokens = tokens[1:]
            if not tokens:
                continue
            if tokens[0] == "bench":
                found.append((number, line.strip(), tokens[1:]))
            elif "-m" in tokens and tokens[tokens.index("-m") + 1:tokens.index("-m") + 2] == ["vssbench"]:
                found.append((number, line.strip(), tokens[tokens.index("-m") + 2:]))
    for span in _SPAN.finditer(text):
        number = text[:span.start()].count("\n") + 1
        found.append((number, span.group(1), _synopsis_to_arguments(span.group(1))[1:]))
    return found


_PLACEHOLDER = re.compile(r"argument (\S+): invalid (?:int|float) value: '([A-Z][A-Z_]*)'"
                          r"|argument (\S+): invalid choice: '([A-Z][A-Z_]*)' \(choose from '([^']+)'")


def parse_error(arguments: list[str]) -> str | None:
    """None when ``bench ARGUMENTS`` parses; else argparse's message. A bare ``bench SUBCOMMAND``
    names the subcommand and only has to exist; global options without a subcommand (``bench
    --plugin MODULE``) are parsed in front of ``list``. A placeholder in capitals where the option wants a
    number or a choice (``--num-classes N``, ``--dataset D``) stands for a valid value: it is
    replaced by one and the command parsed again."""
    subcommands = next(action.choices for action in build_parser()._actions if action.dest == "command")
    if not set(arguments) & set(subcommands):
        arguments = [*arguments, "list"]
    elif len(arguments) == 1:
        arguments = [*arguments, "--help"]
    for _ in range(len(arguments) + 1):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(arguments)
            return None
        except SystemExit as exit_:
            if exit_.code in (0, None):
                return None
        message = stderr.getvalue().strip().splitlines()[-1]
        placeholder = _PLACEHOLDER.search(message)
        if placeholder is None:
            return message
        value = placeholder.group(2) or placeholder.group(4)
        arguments = [(placeholder.group(5) or "1") if token == value else token for token in arguments]
    return message


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses(document):
    text = document.read_text()
    failures = [f"{document.relative_to(ROOT)}:{number}: {written}\n    {error}"
                for number, written, arguments in commands(text) if (error := parse_error(arguments))]
    assert not failures, "documented commands the CLI rejects:\n" + "\n".join(failures)


def test_the_documents_show_commands():
    shown = {document.name: len(commands(document.read_text())) for document in DOCUMENTS}
    assert shown["README.md"] >= 15 and shown["weights.md"] >= 10 and shown["training.md"] >= 5


def test_a_command_with_an_option_the_cli_lacks_fails():
    text = "```bash\nbench run --methods perframe \\\n    --no-such-option 3\n```\nand `bench recipes [--jsn]`\n"
    errors = [parse_error(arguments) for _, _, arguments in commands(text)]
    assert len(errors) == 2
    assert "unrecognized arguments: --no-such-option 3" in errors[0]
    assert "unrecognized arguments: --jsn" in errors[1]
    assert parse_error(["train", "--method"]) == "bench train: error: argument --method: expected one argument"
    assert parse_error(["convert", "SRC", "--method", "SPEC", "--num-classes", "N", "--out", "F"]) is None
    assert "invalid int value: 'n'" in parse_error(["convert", "S", "--method", "M", "--num-classes", "n", "--out", "F"])


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    broken = []
    for link in _LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        if not target.exists():
            broken.append(f"{link} (no {target.relative_to(ROOT) if ROOT in target.parents else target})")
        elif anchor and target.suffix == ".md":
            headings = [_slug(line.lstrip("#")) for line in target.read_text().splitlines() if line.startswith("#")]
            if anchor not in headings:
                broken.append(f"{link} (no heading #{anchor} in {target.relative_to(ROOT)})")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: " + ", ".join(broken)

"""Every engine and load-generator command the deployment and operations guides show
is one the command line accepts: parsed by the real argument parsers (a renamed flag or
subcommand fails here, not in an operator's hands).  The commands that start servers
run elsewhere in the suite and in CI (docs/TESTING.md); this checks the rest of each
line's spelling."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from engine.cli.main import build_parser as engine_parser
from loadgen.cli import build_parser as loadgen_parser

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PREFIXES = {
    "python -m engine": engine_parser,
    "essc-engine": engine_parser,
    "python -m loadgen": loadgen_parser,
    "essc-loadgen": loadgen_parser,
}


def _commands(path: pathlib.Path) -> list[str]:
    """Indented (code block) lines starting with an engine or loadgen command, with
    their backslash continuations joined and trailing comments dropped."""
    lines = path.read_text().splitlines()
    out, k = [], 0
    while k < len(lines):
        line = lines[k].strip()
        k += 1
        if not lines[k - 1].startswith(("    ", "\t")) or not line.startswith(tuple(PREFIXES)):
            continue
        while line.endswith("\\") and k < len(lines):
            line = line[:-1] + " " + lines[k].strip()
            k += 1
        out.append(re.sub(r"\s+#.*$", "", line))
    return out


COMMANDS = [
    (doc.name, cmd)
    for doc in (DOCS / "DEPLOYMENT.md", DOCS / "OPERATIONS.md")
    for cmd in _commands(doc)
]


def test_the_guides_show_commands():
    assert len([c for d, c in COMMANDS if d == "DEPLOYMENT.md"]) >= 5


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_a_documented_command_parses(doc, command):
    for part in command.split(" | "):  # a pipeline: each of its engine commands
        part = part.strip()
        prefix = next((p for p in PREFIXES if part.startswith(p)), None)
        if prefix is None:
            continue
        words = shlex.split(part[len(prefix) :])
        parser = PREFIXES[prefix]()
        if "..." in words:  # an elided tail: what comes before it must parse
            _, unknown = parser.parse_known_args(words[: words.index("...")])
            assert unknown == [], f"{part}: not options of this command: {unknown}"
            continue
        try:
            parser.parse_args(words)
        except SystemExit as e:  # --help and --version exit 0; an error exits 2
            assert e.code == 0, f"{doc}: {part}"

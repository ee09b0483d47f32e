"""Write docs/cli.md, the command-line reference, from the commands' own ``--help``.

Each command runs with ``--help`` in a subprocess (this Python, ``COLUMNS=100`` so that
argparse wraps the same way everywhere, the repository root as working directory), and its
help text goes into docs/cli.md under a heading of its own.

    python scripts/cli_reference.py           # write docs/cli.md
    python scripts/cli_reference.py --check   # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "cli.md"

#: The commands documented, as arguments of ``python -m``, in the order they appear.
COMMANDS: list[list[str]] = [
    ["extract"],
    ["classify"],
    ["classify", "compare"],
    ["classify", "report"],
    ["classify", "predict"],
    ["classify", "export"],
]

TITLE = "# Command-line reference"
INTRO = (
    "The `--help` text of every featurebank command, generated from the argument parsers by "
    "`python scripts/cli_reference.py`; do not edit it by hand."
)
OUT_OF_DATE = "docs/cli.md is out of date; run python scripts/cli_reference.py"


def help_text(command: list[str]) -> str:
    """The ``--help`` output of ``python -m <command>``, run from the repository root."""
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.rstrip() + "\n"


def keyword_tables() -> dict[tuple[str, ...], tuple[str, str]]:
    """The table of settings declared once per stage, by the command they follow: a heading
    and the Markdown table."""
    from classify.settings import option_table as classify_table
    from extract.settings import option_table as extract_table

    return {
        ("extract",): ("The same settings as keywords of `extract.extract_features`", extract_table()),
        ("classify",): ("The same settings as keywords of `classify.train_and_evaluate`", classify_table()),
    }


def render() -> str:
    """The whole text of docs/cli.md."""
    parts = [TITLE, "", INTRO, ""]
    tables = keyword_tables()
    for command in COMMANDS:
        parts += [f"## `python -m {' '.join(command)}`", "", "```", help_text(command).rstrip(), "```", ""]
        if tuple(command) in tables:
            heading, table = tables[tuple(command)]
            parts += [f"### {heading}", "", table, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md, or with ``--check`` only compare it with what would be written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md differs; write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            print(OUT_OF_DATE, file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

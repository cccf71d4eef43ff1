"""Every subcommand's --help has a description, every option's help with its default, and an
example that names the command and whose options the parser accepts."""

import argparse
import shlex
from pathlib import Path

import pytest

from metabgm.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_has_description_defaults_and_an_example(name: str, capsys) -> None:
    parser = subcommands()[name]
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert len(parser.description or "") > 40, "no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{'/'.join(action.option_strings) or action.dest} has no help"
        default = action.default
        if action.option_strings and default not in (None, False, "", []):
            assert f"default: {default}" in " ".join(text.split()) or "default" in action.help, action.dest
    example = text.split("example:\n", 1)[1].strip().splitlines()
    for line in example:
        words = [w for w in shlex.split(line) if "=" not in w or w.startswith("-")]
        assert words[:2] == ["metabgm", name], line
        parser.parse_args(words[2:])  # the example parses: its options exist, required ones are given


def doc_commands() -> list[tuple[str, str]]:
    root = Path(__file__).resolve().parents[2]
    out = []
    for doc in ("docs/quickstart.md", "docs/operations.md"):
        for line in (root / doc).read_text().splitlines():
            line = line.strip().split("  #")[0]
            for prefix in (".venv/bin/metabgm ", "metabgm "):
                if line.startswith(prefix):
                    out.append((doc, line.removeprefix(prefix)))
    return out


@pytest.mark.parametrize(("doc", "line"), doc_commands())
def test_every_command_the_docs_give_parses(doc: str, line: str) -> None:
    """What a new user copies from the quickstart and the operations guide is a valid command."""
    args = build_parser().parse_args(shlex.split(line))
    assert args.fn.__name__.startswith("cmd_")

"""Every help text of the CLI survives Typer's Rich markup: a bracketed phrase such as
"[default: all cores]" or "[ray]" is read as a markup tag and silently dropped unless escaped (\\[)."""
from __future__ import annotations

import click
import typer.main
from rich.text import Text

from pipeline.cli import app


def _help_texts(command: click.Command, path: str = "foldwise"):
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.opts[0] if param.opts else param.name}", getattr(param, "help", None) or ""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _help_texts(sub, f"{path} {name}")


def test_no_help_text_loses_words_to_rich_markup() -> None:
    texts = list(_help_texts(typer.main.get_command(app)))
    assert len(texts) > 100                                     # the whole tree was walked
    lost = [(where, text) for where, text in texts
            if Text.from_markup(text).plain != text.replace("\\[", "[")]
    assert not lost, lost


def test_the_serve_placement_defaults_are_shown() -> None:
    serve = typer.main.get_command(app).commands["serve"]
    shown = {p.opts[0]: Text.from_markup(p.help).plain for p in serve.params if p.help}
    assert "[default: 2 on a CPU of 2 or more cores" in shown["--workers"]
    assert "[default: all cores" in shown["--threads"]

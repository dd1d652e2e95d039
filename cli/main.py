"""The ``sop-engine`` command: the one place that composes the engine's parts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from notifications.catalogue import template_names
from sop_engine.errors import DefinitionError, NotFound
from sop_engine.language.compiler import SopLibrary, compile_paths
from sop_engine.language.diagram import mermaid
from sop_engine.settings import get_settings

__all__ = ["cli", "main"]


def _paths(paths: tuple[Path, ...]) -> list[Path]:
    """The paths given, or the SOP library, shown relative to here when it is below here."""
    if paths:
        return list(paths)
    library = get_settings().sop_dir
    try:
        return [library.resolve().relative_to(Path.cwd())]
    except ValueError:
        return [library]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Inter-agency SOPs for cross-border GBV referrals: validate, inspect and run them."""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check SOP files (default: the SOP library); print every problem as file:line: message."""
    compiled, problems = compile_paths(_paths(paths), template_names())
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s); {len(compiled)} SOP(s) valid.", err=True)
        sys.exit(1)
    if not compiled:
        click.echo("no SOP files found (SOP files end in .sop.yaml)", err=True)
        sys.exit(1)
    click.echo(f"{len(compiled)} SOP(s) valid.", err=True)


@cli.command("list")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def list_sops(paths: tuple[Path, ...]) -> None:
    """One line per SOP: KEY VERSION TITLE."""
    compiled, problems = compile_paths(_paths(paths), template_names())
    for sop in sorted(compiled, key=lambda s: (s.key, s.version)):
        click.echo(f"{sop.key} {sop.version} {sop.spec.title}")
    if problems:
        click.echo(
            f"{len(problems)} problem(s) left some SOPs out; run 'sop-engine validate'", err=True
        )
        sys.exit(1)


@cli.command()
@click.argument("ref", metavar="KEY[@VERSION]")
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Where to find SOPs (default: the SOP library).",
)
def diagram(ref: str, paths: tuple[Path, ...]) -> None:
    """The SOP as a Mermaid stateDiagram-v2, with deadlines and escalations."""
    try:
        library = SopLibrary.load(_paths(paths), template_names())
        sop = library.get_ref(ref)
    except DefinitionError as exc:
        click.echo(exc.report(), err=True)
        sys.exit(1)
    except NotFound as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(mermaid(sop.spec), nl=False)


def main() -> None:
    cli(prog_name="sop-engine")

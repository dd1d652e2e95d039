"""The ``sop-engine`` command: the one place that composes the engine's parts.

Each command imports what it uses when it runs, never at the top of this module: the
command line starts in a tenth of a second, and ``sop-engine validate`` does not pay for
SQLAlchemy, nor ``users add`` for the SOP compiler, nor any of them for Prefect or uvicorn.
A test keeps it so (``tests/test_cli.py``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.database import database, settings_engine
from cli.keys import keys
from cli.users import users
from sop_engine.directory.vocabulary import CORRIDOR_ROLES, SERVICES

if TYPE_CHECKING:
    from sop_engine.language.compiler import SopLibrary

__all__ = ["cli", "main"]


def _paths(paths: tuple[Path, ...]) -> list[Path]:
    """The paths given, or the SOP library, shown relative to here when it is below here."""
    if paths:
        return list(paths)
    from sop_engine.settings import get_settings

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
    """Check SOP files (default: the SOP library); print every problem as file:line: message.

    Files named on the command line may extend SOPs of the library: those are read as
    parents, and only the named files' SOPs and problems are reported.
    """
    from notifications.catalogue import template_names
    from sop_engine.language.compiler import compile_paths, compile_with_library

    if paths:
        compiled, problems = compile_with_library(list(paths), _paths(()), template_names())
    else:
        compiled, problems = compile_paths(_paths(()), template_names())
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
    from notifications.catalogue import template_names
    from sop_engine.language.compiler import compile_paths

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
    from notifications.catalogue import template_names
    from sop_engine.errors import DefinitionError, NotFound
    from sop_engine.language.compiler import SopLibrary
    from sop_engine.language.diagram import mermaid

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


@cli.group()
def db() -> None:
    """The database (SOP_ENGINE_DATABASE_URL, by default SQLite in SOP_ENGINE_DATA_DIR)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database's schema to this version's head; print the revision reached."""
    from sop_engine.persistence.migrate import current_revision, upgrade

    engine = settings_engine()
    with database(engine):
        upgrade(engine)
        revision = current_revision(engine)
    click.echo(revision)
    click.echo(f"{engine.url.render_as_string(hide_password=True)} is up to date.", err=True)


@db.command("current")
def db_current() -> None:
    """Print the database's schema revision ("none" before the first upgrade)."""
    from sop_engine.persistence.migrate import current_revision, head_revision

    engine = settings_engine()
    with database(engine):
        revision = current_revision(engine)
    click.echo(revision or "none")
    head = head_revision()
    if revision != head:
        click.echo(f"this version's schema is {head}; run 'sop-engine db upgrade'", err=True)


DOCS_DIR = Path("docs") / "sops"


def sop_documents(library: SopLibrary) -> dict[str, str]:
    """File name -> content of every generated page of ``docs/sops/``."""
    from sop_engine.language.diagram import mermaid
    from sop_engine.language.summary import summary

    pages: dict[str, str] = {}
    rows = [
        "# The SOP library",
        "",
        "Generated by `sop-engine docs`; do not edit by hand.",
        "",
        "| SOP | version | title | diagram |",
        "|---|---|---|---|",
    ]
    for sop in library:
        pages[f"{sop.key}.md"] = summary(sop.spec)
        pages[f"{sop.key}.mmd"] = mermaid(sop.spec)
        rows.append(
            f"| [{sop.key}]({sop.key}.md) | {sop.version} | {sop.spec.title} "
            f"| [{sop.key}.mmd]({sop.key}.mmd) |"
        )
    pages["README.md"] = "\n".join(rows) + "\n"
    return pages


@cli.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=DOCS_DIR,
    show_default=True,
    help="Where to write the pages.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a page is stale.")
def docs(output: Path, check: bool) -> None:
    """Write each SOP's summary and Mermaid diagram into docs/sops/ (or check them)."""
    from notifications.catalogue import template_names
    from sop_engine.errors import DefinitionError
    from sop_engine.language.compiler import SopLibrary
    from sop_engine.settings import get_settings

    try:
        library = SopLibrary.load([get_settings().sop_dir], template_names())
    except DefinitionError as exc:
        click.echo(exc.report(), err=True)
        sys.exit(1)
    pages = sop_documents(library)
    stale = sorted(
        name
        for name, text in pages.items()
        if not (output / name).is_file() or (output / name).read_text("utf-8") != text
    )
    extra = (
        sorted(p.name for p in output.glob("*") if p.is_file() and p.name not in pages)
        if output.is_dir()
        else []
    )
    if check:
        for name in [*stale, *extra]:
            click.echo(f"{output / name}: stale; run 'sop-engine docs'")
        sys.exit(1 if stale or extra else 0)
    output.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (output / name).write_text(pages[name], encoding="utf-8")
    for name in extra:
        (output / name).unlink()
    click.echo(f"{len(pages)} page(s) in {output}; {len(stale)} written, {len(extra)} removed.")


@cli.command()
def demo() -> None:
    """A complete synthetic cross-border referral on a temporary database, intake to closure,
    with a missed deadline and its escalation; prints the timeline and verifies its chain."""
    from cli.demo import run_demo
    from notifications.catalogue import template_names
    from sop_engine.settings import get_settings

    ok = run_demo(get_settings().sop_dir, template_names(), click.echo)
    sys.exit(0 if ok else 1)


@cli.group()
def timeline() -> None:
    """Referral timelines: hash-chained, so that a rewritten history shows."""


@timeline.command("verify")
@click.option("--referral", "case_code", metavar="CODE", help="Only this referral's timeline.")
def timeline_verify(case_code: str | None) -> None:
    """Recompute every timeline's hash chain in full; name the first entry that does not
    match. Each result is kept as the referral's last full verification, which audit pages
    of long timelines report."""
    from sop_engine.clock import SystemClock
    from sop_engine.persistence.db import read_transaction
    from sop_engine.timeline.verifications import record_verifications
    from sop_engine.timeline.verify import verify_timelines

    engine = settings_engine()
    with database(engine):
        with read_transaction(engine) as conn:
            checks = verify_timelines(conn, case_code)
        record_verifications(engine, checks, SystemClock().now())
    if case_code is not None and not checks:
        click.echo(f"no referral {case_code}", err=True)
        sys.exit(1)
    broken = [c for c in checks if not c.ok]
    for c in checks:
        if c.broken is None:
            click.echo(f"{c.case_code}: ok ({c.entries} entries)")
        else:
            click.echo(
                f"{c.case_code}: BROKEN at entry {c.broken.entry_id} "
                f"(position {c.broken.index + 1} of {c.entries}): {c.broken.reason}"
            )
    click.echo(f"{len(checks)} timeline(s) checked, {len(broken)} broken.", err=True)
    sys.exit(1 if broken else 0)


@cli.group()
def directory() -> None:
    """The service directory: agencies, hotlines and border points per country and corridor."""


def _directory_path(path: Path | None) -> Path:
    """The folder given, or the shipped directory, shown relative to here when below here."""
    if path is not None:
        return path
    from sop_engine.settings import get_settings

    folder = get_settings().sop_dir / "directory"
    try:
        return folder.resolve().relative_to(Path.cwd())
    except ValueError:
        return folder


_FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


@directory.command("validate")
@click.argument("path", required=False, type=_FOLDER)
def directory_validate(path: Path | None) -> None:
    """Check a directory folder (default: the shipped one); print every problem as
    file:line: message."""
    from sop_engine.directory import load_directory
    from sop_engine.errors import DefinitionError

    try:
        found = load_directory(_directory_path(path))
    except DefinitionError as exc:
        click.echo(exc.report())
        click.echo(f"{len(exc.problems)} problem(s) in the directory.", err=True)
        sys.exit(1)
    synthetic = sum(a.synthetic for a in found.agencies)
    click.echo(
        f"directory valid: {len(found.agencies)} agencies ({synthetic} synthetic), "
        f"{len(found.all_hotlines)} hotlines, {len(found.all_border_points)} border points, "
        f"{len(found.corridors)} corridors.",
        err=True,
    )


@directory.command("list")
@click.option("--country", metavar="XX", help="Only agencies in this country (ISO code).")
@click.option("--service", metavar="S", help=f"Only agencies offering it: {', '.join(SERVICES)}.")
@click.option("--corridor", metavar="XX-YY", help="Only agencies serving it, e.g. TH-LA.")
@click.option("--accepting", is_flag=True, help="Only agencies taking new cases.")
@click.option("--path", type=_FOLDER, help="The directory folder (default: the shipped one).")
def directory_list(
    country: str | None,
    service: str | None,
    corridor: str | None,
    accepting: bool,
    path: Path | None,
) -> None:
    """One line per agency: ID, COUNTRY, PROVINCE, NAME, then its services and marks."""
    from sop_engine.directory import load_directory
    from sop_engine.errors import DefinitionError, InvalidInput

    try:
        found = load_directory(_directory_path(path))
        agencies = found.find(
            country=country.upper() if country else None,
            service=service,
            corridor=corridor.upper() if corridor else None,
            accepting_only=accepting,
        )
    except DefinitionError as exc:
        click.echo(exc.report(), err=True)
        sys.exit(1)
    except InvalidInput as exc:
        click.echo(f"--{exc.field}: {exc}", err=True)
        sys.exit(2)
    for a in agencies:
        marks = [
            *(r for r in CORRIDOR_ROLES if r in a.corridor_roles),
            *(["synthetic"] if a.synthetic else []),
            *(["verify"] if a.verify else []),
            *([] if a.accepts_new_cases else ["not accepting"]),
        ]
        shown = f" [{', '.join(marks)}]" if marks else ""
        click.echo(f"{a.id}\t{a.country}\t{a.province}\t{a.name}\t{','.join(a.services)}{shown}")
    click.echo(f"{len(agencies)} agencies.", err=True)


@cli.command()
@click.option(
    "--prefect-port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="SOP_ENGINE_PREFECT_PORT",
    show_default=True,
    help="Port of the local Prefect server (0: a free one). Unused with PREFECT_API_URL.",
)
@click.option(
    "--startup-timeout",
    type=click.FloatRange(1),
    default=60.0,
    envvar="SOP_ENGINE_PREFECT_STARTUP_TIMEOUT",
    show_default=True,
    help="Seconds to wait for the Prefect server to answer.",
)
def worker(prefect_port: int, startup_timeout: float) -> None:
    """Serve the escalation sweep and the outbox dispatch on their intervals, with the Prefect
    server at PREFECT_API_URL or, without it, a local one in SOP_ENGINE_DATA_DIR/prefect.
    Stops on SIGTERM or Ctrl-C."""
    from cli.worker import run_worker

    sys.exit(run_worker(prefect_port=prefect_port, startup_timeout=startup_timeout))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the API listens.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Its port."
)
@click.option(
    "--no-worker", "no_worker", is_flag=True, help="Only the API (workers run elsewhere)."
)
def serve(host: str, port: int, no_worker: bool) -> None:
    """Run the engine in one command: migrate the database, load the SOP library, start the
    worker ('sop-engine worker') and serve the API. Stops both on SIGTERM or Ctrl-C."""
    from cli.serve import run_serve

    sys.exit(run_serve(host=host, port=port, worker=not no_worker))


cli.add_command(keys)
cli.add_command(users)


def main() -> None:
    cli(prog_name="sop-engine")

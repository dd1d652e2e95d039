"""``sop-engine keys``: generate a master key, rotate the stored case keys onto the current
one, and say which keys still wrap case keys. The work is :mod:`sop_engine.key_rotation`'s
and :mod:`sop_engine.master_keys`'s; this module parses and prints, never key material: only
key ids and counts."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from cli.database import database, settings_engine

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sop_engine.crypto import MasterKeyring
    from sop_engine.key_rotation import Rotation

__all__ = ["keys"]

PROGRESS_EVERY_SECONDS = 1.0
"""At most one progress line a second on stderr, and one at the end."""


@click.group()
def keys() -> None:
    """Master keys (SOP_ENGINE_MASTER_KEY), which wrap every referral's case key."""


@keys.command("generate")
@click.option(
    "--id",
    "key_id",
    default="k1",
    show_default=True,
    help="The new key's id (letters, digits, '.', '_', '-'); a rotation's new key needs a new id.",
)
def keys_generate(key_id: str) -> None:
    """Print a new random master key as SOP_ENGINE_MASTER_KEY reads it (KEYID:BASE64URL).

    Keep it in a secret store, never in the database's backups; lose it and every referral
    is unreadable.
    """
    from sop_engine.crypto import MasterKey
    from sop_engine.errors import ConfigurationError

    try:
        key = MasterKey.generate(key_id)
    except ConfigurationError as exc:
        click.echo(f"--id: {exc}", err=True)
        sys.exit(2)
    click.echo(key.to_setting())
    click.echo(
        "a new master key: put it in SOP_ENGINE_MASTER_KEY (from a secret store), and keep a "
        "copy apart from the database's backups",
        err=True,
    )


@keys.command("rotate")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Case keys re-wrapped per transaction.",
)
def keys_rotate(batch_size: int) -> None:
    """Re-wrap every case key onto the current master key (the first of
    SOP_ENGINE_MASTER_KEY), while the API and the workers run; stopped at any point, run it
    again. Exit 0 once no case key is left under another key; then 'keys status' says which
    keys can be removed."""
    from sop_engine.clock import SystemClock
    from sop_engine.errors import ConfigurationError
    from sop_engine.key_rotation import rotate_case_keys

    engine = settings_engine()
    keyring = _keyring()
    shown = _Progress()
    with database(engine):
        _check_schema(engine)
        try:
            rotation = rotate_case_keys(
                engine, keyring, SystemClock().now(), batch_size=batch_size, on_batch=shown
            )
        except ConfigurationError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
    shown(rotation, last=True)
    for key_id, count in (rotation.left or {}).items():
        unreadable = rotation.tally.unreadable[key_id]
        why = (
            f"{unreadable} failed to unwrap (tampered, or wrapped under another key with that id); "
            if unreadable
            else ""
        )
        click.echo(
            f"{_case_keys(count)} still under key {key_id!r}: {why}run 'sop-engine keys status'",
            err=True,
        )
    if not rotation.done:
        sys.exit(1)
    click.echo(
        f"every case key is wrapped under {rotation.current!r}; 'sop-engine keys status' "
        "says which keys can be removed",
        err=True,
    )


@keys.command("status")
def keys_status() -> None:
    """One line per master key id: ID, CASE_KEYS (how many it wraps), RING (current,
    previous, or missing from SOP_ENGINE_MASTER_KEY), FINGERPRINT (ok, differs from the one
    the database recorded, unrecorded). Exit 1 when a key is missing or differs."""
    from sop_engine.master_keys import key_status

    engine = settings_engine()
    keyring = _keyring()
    with database(engine):
        _check_schema(engine)
        found = key_status(engine, keyring)
    for status in found:
        click.echo(f"{status.key_id}\t{status.case_keys}\t{status.ring}\t{status.fingerprint}")
    for status in found:
        if status.retirable:
            click.echo(
                f"{status.key_id!r} wraps no case key: it can be removed from "
                "SOP_ENGINE_MASTER_KEY, on every process",
                err=True,
            )
        elif status.ring == "previous":
            click.echo(
                f"{status.key_id!r} still wraps {_case_keys(status.case_keys, verb=False)}: "
                "run 'sop-engine keys rotate' before removing it",
                err=True,
            )
        elif status.ring == "missing":
            click.echo(
                f"{status.key_id!r} wraps {_case_keys(status.case_keys, verb=False)} but "
                "SOP_ENGINE_MASTER_KEY lacks it: put it back as a previous key and run "
                "'sop-engine keys rotate'",
                err=True,
            )
        if status.fingerprint == "differs":
            click.echo(
                f"{status.key_id!r} is not the key this database was used with under that id",
                err=True,
            )
    if any(s.ring == "missing" or s.fingerprint == "differs" for s in found):
        sys.exit(1)


class _Progress:
    """Prints the rotation's counts by key id, at most once a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, rotation: Rotation, *, last: bool = False) -> None:
        now = time.monotonic()
        if not last and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        tally = rotation.tally
        ids = sorted({*rotation.at_start, *tally.rewrapped, *tally.skipped, *tally.unreadable})
        if not ids:
            click.echo(f"no case key to re-wrap: all are under {rotation.current!r}", err=True)
            return
        for key_id in ids:
            click.echo(
                f"{key_id} -> {rotation.current}: {tally.rewrapped[key_id]} of "
                f"{rotation.at_start.get(key_id, 0)} re-wrapped, {tally.skipped[key_id]} "
                f"skipped (erased or changed meanwhile), {tally.unreadable[key_id]} unreadable",
                err=True,
            )


def _keyring() -> MasterKeyring:
    """The settings' master keys; an unusable setting ends the command with a line."""
    from sop_engine.errors import ConfigurationError
    from sop_engine.settings import get_settings

    try:
        return get_settings().keyring()
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _check_schema(engine: Engine) -> None:
    """End the command with a line unless the database is at this version's migrations.
    Read in a read transaction: on SQLite, a rotation waits for the write lock only when it
    writes a batch."""
    from sop_engine.persistence.db import read_transaction
    from sop_engine.persistence.migrate import current_revision, head_revision

    with read_transaction(engine) as conn:
        found = current_revision(conn)
    head = head_revision()
    if found != head:
        click.echo(
            f"the database is at migration {found or '(none)'}, this version needs {head}: "
            "run 'sop-engine db upgrade' first",
            err=True,
        )
        sys.exit(1)


def _case_keys(count: int, *, verb: bool = True) -> str:
    noun = "1 case key" if count == 1 else f"{count} case keys"
    if not verb:
        return noun
    return f"{noun} is" if count == 1 else f"{noun} are"

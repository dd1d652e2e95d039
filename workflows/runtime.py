"""What the flows run with: the runtime, and the parts that deliver messages, built from the
settings once per process.

A served flow run is a process of its own (Prefect's runner starts one per run), so "once per
process" means once per run there; a test or an embedding program that calls the flows'
bodies many times pays for it once. The sweep needs only the runtime; the directory and the
channels are built on the dispatch's first use, so that a broken directory stops the
dispatch and never the escalations.

The runtime's library holds the SOP files and the versions published through the API, and
finds a version published later on first use; the directory holds its files with the
entries coordinators keep through the API over them, as they were when the run started.

>>> with use_runtime(runtime):                       # doctest: +SKIP
...     escalation_sweep.fn(batch_size=10)           # runs on ``runtime``, not the settings'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import Engine

from notifications.catalogue import template_names
from notifications.channels import Channel
from notifications.dispatch import build_channels
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.directory.managed import load_managed_directory
from sop_engine.language.published import load_library
from sop_engine.master_keys import check_keyring
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import prepare
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings

__all__ = ["Delivery", "flow_delivery", "flow_runtime", "use_runtime"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where messages go (the service directory) and how (the channels)."""

    directory: ServiceDirectory
    channels: Sequence[Channel]


_runtime: ContextVar[Runtime | None] = ContextVar("workflows_runtime", default=None)
_delivery: ContextVar[Delivery | None] = ContextVar("workflows_delivery", default=None)


def flow_runtime() -> Runtime:
    """The runtime in use: the one given to :func:`use_runtime`, else the settings' one."""
    return _runtime.get() or _runtime_from_settings()


def flow_delivery() -> Delivery:
    """The delivery parts in use: those given to :func:`use_runtime`, else the settings'
    directory and channels, on the database of the runtime in use."""
    return _delivery.get() or _delivery_from_settings(flow_runtime().db)


@contextmanager
def use_runtime(runtime: Runtime, delivery: Delivery | None = None) -> Iterator[None]:
    """Run the flows' bodies on ``runtime`` (and ``delivery``) inside the block."""
    runtime_token = _runtime.set(runtime)
    delivery_token = _delivery.set(delivery)
    try:
        yield
    finally:
        _delivery.reset(delivery_token)
        _runtime.reset(runtime_token)


@cache
def _runtime_from_settings() -> Runtime:
    settings = get_settings()
    keyring = settings.keyring()  # a missing key is found before seconds of migrating and compiling
    engine = make_engine(settings.resolved_database_url())
    prepare(engine, migrate=settings.environment != "production")
    check_keyring(engine, keyring, datetime.now(UTC))
    library = load_library(engine, [settings.sop_dir], template_names())
    directory = load_directory(settings.resolved_directory_dir())
    lease = timedelta(seconds=settings.timer_lease_seconds)
    return Runtime(engine, library, keyring, directory=directory, timer_lease=lease)


@cache
def _delivery_from_settings(db: Engine) -> Delivery:
    settings = get_settings()
    directory = load_managed_directory(db, settings.resolved_directory_dir())
    return Delivery(directory, build_channels(settings, db))

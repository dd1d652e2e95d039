"""Serving deployments: register them with the Prefect server in use, then poll it for their
scheduled runs and start each run in a process of its own, until SIGTERM or SIGINT.

This is Prefect's :class:`~prefect.runner.Runner` (what ``prefect.serve`` runs), with three
choices of ours. Schedules are not paused on shutdown: other workers may serve the same
deployments, and pausing would stop them too (a run left late meanwhile finds its work done
by a later one and ends, see :mod:`workflows.flows`). At most :data:`PROCESS_LIMIT` runs at
once per worker: late runs found after an outage wait their turn as scheduled runs instead
of starting a process each at once (each ends within seconds). And both signals stop it
the same way, however early they come: the runner stops polling, cancels the runs in flight
(every step they take is idempotent, and their claims come back when the leases run out)
and :func:`serve` returns.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import timedelta
from typing import Any

from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from workflows.health import Watch

__all__ = ["PROCESS_LIMIT", "STOP_SIGNALS", "runner_name", "serve"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

PROCESS_LIMIT = 4
"""Flow runs a worker runs at once: one of each flow, and one more ending at once."""

CANCEL_POLL_SECONDS = 0.25
"""While the runner stops: how often runs that began starting after the stop are cancelled."""

_Handler = Callable[[int, Any], Any] | int | None


def runner_name() -> str:
    """``sop-engine-<host>``: which machine serves, as the Prefect UI shows it."""
    host = socket.gethostname().replace("/", "-").replace("%", "-")
    return f"sop-engine-{host}"


def serve(
    deployments: Sequence[RunnerDeployment],
    *,
    name: str | None = None,
    watch: Watch | None = None,
    on_stop: Callable[[], object] | None = None,
) -> None:
    """Serve ``deployments`` until SIGTERM or SIGINT, then return once the runner stopped.

    The signal handlers in place before are back when it returns. Must be called from the
    main thread, outside an event loop.

    ``watch`` (:mod:`workflows.health`) learns when the runner serves and stops, and sees its
    polls. ``on_stop`` is called, in the main thread, when the first stop signal arrives
    (the worker bounds its stop from then on).

    :raises Exception: whatever stops the runner otherwise (the Prefect API gone for good).
    """
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    asyncio.run(
        _serve(list(deployments), name or runner_name(), previous, watch or Watch(), on_stop)
    )


async def _serve(
    deployments: list[RunnerDeployment],
    name: str,
    previous: dict[signal.Signals, _Handler],
    watch: Watch,
    on_stop: Callable[[], object] | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def stop_requested() -> None:
        if not stop.is_set() and on_stop is not None:
            on_stop()
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop_requested)
    try:
        runner = _Runner(stop_requested, name=name, pause_on_shutdown=False, limit=PROCESS_LIMIT)
        for deployment in deployments:
            if stop.is_set():
                return
            await runner.aadd_deployment(deployment)
        if stop.is_set():
            return
        serving = asyncio.create_task(runner.start())
        watch.serving(lambda: runner.last_polled, timedelta(seconds=runner.query_seconds))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        watch.stopping()
        stopping.cancel()
        if not serving.done():
            while not runner.started and not serving.done():  # a signal during start-up
                await asyncio.sleep(0.05)
            if runner.started:
                await runner.astop()
                await _cancel_late_starters(runner, serving)
        await serving
    finally:
        watch.stopping()
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:
                signal.signal(sig, handler)


async def _cancel_late_starters(runner: Runner, serving: asyncio.Task[None]) -> None:
    """Cancel, until the runner has stopped, the runs whose process was starting when it was
    told to stop: :meth:`Runner.astop` cancels only the runs it knows to be in flight at
    that moment, and one submitted a moment before would run to its end (seconds, far more
    on a busy machine) and hold the worker's stop up past its grace."""
    while not serving.done():
        await asyncio.wait({serving}, timeout=CANCEL_POLL_SECONDS)
        if serving.done():
            return
        # Once the last run ends the runner closes its client: a cancellation still under
        # way then (reporting the run's state) is given up, the runner has reported it.
        cancelling = asyncio.create_task(runner.cancel_all())
        await asyncio.wait({serving, cancelling}, return_when=asyncio.FIRST_COMPLETED)
        if not cancelling.done():
            cancelling.cancel()
            with suppress(asyncio.CancelledError):
                await cancelling


class _Runner(Runner):
    """The runner, stopped through ``stop_requested`` only: :meth:`Runner.start` installs a SIGTERM
    handler of its own, which would stop it a second time."""

    def __init__(self, stop_requested: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stop_requested = stop_requested

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._stop_requested)

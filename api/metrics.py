"""``GET /metrics``: what operators alert on, in Prometheus' text format (``prometheus-client``).

Two kinds of figures:

- read from the database at each scrape (:mod:`sop_engine.runtime.gauges`): overdue timers
  and the age of the oldest, escalations so far, the outbox by status and the age of its
  oldest pending message, and per periodic flow its last success, whether a run holds its
  lease and that run's counts. They are the same from every API process: the work happens in
  flow runs on the workers, which only the database has seen;
- measured in this process: the latency of every request by method, route template (never
  the path, which holds case codes) and status class, ``sop_engine_http_request_duration_seconds``.

Nothing in either names a referral, a user or an address. In production a scrape needs
``Authorization: Bearer <SOP_ENGINE_METRICS_TOKEN>``; without that setting the metrics are
refused there (403), and open in development unless it is set.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import get_args

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.gauges import read_gauges
from sop_engine.runtime.sop_dates import DateStatus, date_status

__all__ = ["MetricsAccess", "RequestMetrics", "database_collector", "new_registry"]

UNMATCHED = "(unmatched)"
"""The route label of a request that matched no route (a 404 or 405 at the router)."""


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    """Who may scrape: anyone when ``token`` is None and ``open_without_token``; else only a
    request carrying ``token`` as its bearer token."""

    token: str | None
    open_without_token: bool

    @property
    def locked(self) -> bool:
        """No one may scrape: production without a scrape token."""
        return self.token is None and not self.open_without_token

    def allows(self, authorization: str | None) -> bool:
        if self.token is None:
            return self.open_without_token
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


def new_registry() -> tuple[CollectorRegistry, Histogram]:
    """A registry of this app's own (tests build many apps in one process) and its request
    latency histogram."""
    registry = CollectorRegistry()
    latency = Histogram(
        "sop_engine_http_request_duration_seconds",
        "Time to answer an API request, by method, route template and status class.",
        ("method", "route", "status"),
        registry=registry,
    )
    return registry, latency


class _DatabaseCollector(Collector):
    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime()
        g = read_gauges(runtime.db, runtime.clock.now())
        yield _gauge(
            "sop_engine_timers_overdue",
            "Deadline timers due and not yet escalated.",
            g.overdue_timers,
        )
        yield _gauge(
            "sop_engine_timers_oldest_overdue_seconds",
            "How long the longest-waiting overdue timer has been due (0 when none).",
            g.oldest_overdue_seconds(),
        )
        escalations = CounterMetricFamily(
            "sop_engine_escalations", "Escalations fired (timeline entries)."
        )
        escalations.add_metric([], g.escalations)
        yield escalations
        outbox = GaugeMetricFamily(
            "sop_engine_outbox_messages", "Outbox messages by status.", labels=("status",)
        )
        for status, count in g.outbox.items():
            outbox.add_metric([status], count)
        yield outbox
        yield _gauge(
            "sop_engine_outbox_oldest_pending_seconds",
            "How long the longest-waiting pending message has waited (0 when none).",
            g.oldest_pending_seconds(),
        )
        succeeded = GaugeMetricFamily(
            "sop_engine_periodic_last_success_timestamp_seconds",
            "When a run of the flow last finished its work (Unix time).",
            labels=("flow",),
        )
        held = GaugeMetricFamily(
            "sop_engine_periodic_lease_held",
            "1 while a run of the flow holds its lease.",
            labels=("flow",),
        )
        items = GaugeMetricFamily(
            "sop_engine_periodic_last_run_items",
            "What the flow's last successful run did, by outcome.",
            labels=("flow", "outcome"),
        )
        for flow, figures in sorted(g.periodic.items()):
            if figures.succeeded_at is not None:
                succeeded.add_metric([flow], figures.succeeded_at.timestamp())
            held.add_metric([flow], 1 if figures.lease_held else 0)
            for outcome, count in sorted(figures.counts.items()):
                items.add_metric([flow, outcome], count)
        yield succeeded
        yield held
        yield items
        versions = GaugeMetricFamily(
            "sop_engine_sop_versions",
            "SOP versions loaded, by their dates today (not_in_effect, in_effect, review_due).",
            labels=("date_status",),
        )
        now = runtime.clock.now()
        counted: Counter[str] = Counter(date_status(sop.spec, now) for sop in runtime.library)
        for status in get_args(DateStatus):
            versions.add_metric([status], counted[status])
        yield versions


def database_collector(runtime: Callable[[], Runtime]) -> Collector:
    """The collector of the database's figures, read at each scrape from the database of
    ``runtime()`` (asked then, so that building the app reads no runtime)."""
    return _DatabaseCollector(runtime)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class RequestMetrics:
    """ASGI middleware timing every HTTP request into ``latency``, labelled by the route
    template the router matched (``/referrals/{case_code}``), never by the path."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.latency.labels(scope["method"], template, f"{status // 100}xx").observe(
                time.perf_counter() - began
            )

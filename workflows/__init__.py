"""Prefect flows and their serving: the escalation sweep, the outbox dispatch and the
timeline verification.

- :mod:`workflows.flows`: the three flows, thin loops over :mod:`sop_engine` and
  :mod:`notifications` that return counts by outcome;
- :mod:`workflows.runtime`: the runtime and delivery parts they run with, built from the
  settings once per process (:func:`use_runtime` gives them others);
- :mod:`workflows.deployments`: their deployments, on the settings' intervals, one run at a
  time;
- :mod:`workflows.serving`: serving the deployments until SIGTERM or SIGINT;
- :mod:`workflows.server`: a local ``prefect server start`` for when no server is given.

``sop-engine worker`` (:mod:`cli.worker`) puts them together; see ``docs/workflows.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sop_engine.lazy import lazy_exports

if TYPE_CHECKING:
    from workflows.deployments import deployments
    from workflows.flows import escalation_sweep, outbox_dispatch, timeline_verification
    from workflows.runtime import Delivery, flow_delivery, flow_runtime, use_runtime
    from workflows.server import LocalPrefectServer, PrefectServerError, wait_until_healthy
    from workflows.serving import serve

__getattr__ = lazy_exports(
    globals(),
    {
        "deployments": "workflows.deployments",
        "escalation_sweep": "workflows.flows",
        "outbox_dispatch": "workflows.flows",
        "timeline_verification": "workflows.flows",
        "Delivery": "workflows.runtime",
        "flow_delivery": "workflows.runtime",
        "flow_runtime": "workflows.runtime",
        "use_runtime": "workflows.runtime",
        "LocalPrefectServer": "workflows.server",
        "PrefectServerError": "workflows.server",
        "wait_until_healthy": "workflows.server",
        "serve": "workflows.serving",
    },
)
"""Each name is imported from its module (and Prefect with it) only when it is used, so that
``sop-engine worker`` can check its settings, database and SOP library before paying for
Prefect's import."""


__all__ = [
    "Delivery",
    "LocalPrefectServer",
    "PrefectServerError",
    "deployments",
    "escalation_sweep",
    "flow_delivery",
    "flow_runtime",
    "outbox_dispatch",
    "serve",
    "timeline_verification",
    "use_runtime",
    "wait_until_healthy",
]

"""Prefect flows and their serving: the escalation sweep and the outbox dispatch.

- :mod:`workflows.flows`: the two flows, thin loops over :mod:`sop_engine` and
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

from workflows.deployments import deployments
from workflows.flows import escalation_sweep, outbox_dispatch
from workflows.runtime import Delivery, flow_delivery, flow_runtime, use_runtime
from workflows.server import LocalPrefectServer, PrefectServerError, wait_until_healthy
from workflows.serving import serve

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
    "use_runtime",
    "wait_until_healthy",
]

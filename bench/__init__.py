"""Benchmarks of the referral runtime: ``python -m bench [--quick] [--json OUT]``.

Nine figures, each against a baseline measured in the same run, and two for information:

- ``fire_sqlite`` and ``fire_postgres``: events per second through ``Runtime.fire`` against a
  bare SQLAlchemy Core transaction doing the same writes on the same tables and engine
  (:mod:`bench.throughput`);
- ``api_fire_sqlite`` and ``api_fire_postgres``: events per second through the API's fire
  route, served by uvicorn on loopback to several concurrent clients, against a bare FastAPI
  endpoint calling ``Runtime.fire`` on the same database with the same server settings and
  clients (:mod:`bench.api_fire`);
- ``memory_open_referrals``: peak memory allocated while firing events on randomly chosen
  referrals among a few thousand open ones and among ten times as many
  (:mod:`bench.memory`);
- ``sweep_sqlite`` and ``sweep_postgres``: due timers per second claimed by
  ``Runtime.claim_due_timers`` among a million timer rows, against the bare claim query
  (select the due ids, lease them) on the same rows (:mod:`bench.sweep`);
- ``escalate_sqlite`` and ``escalate_postgres`` (no baseline): escalations per second through
  ``Runtime.sweep`` on the same database;
- ``reads_sqlite`` and ``reads_postgres``: the slowest read route's 99th-percentile latency
  through the API with 100,000 referrals while 8 clients fire events, against the same
  reads with nobody firing; the goal is 1 s with no error (:mod:`bench.reads`).

The SOP fired is the synthetic ``bench.pingpong`` (``bench/bench.sop.yaml``). Speed targets
live here and in the README, never in unit tests.
"""

"""Benchmarks of the referral runtime: ``python -m bench [--quick] [--json OUT]``.

Three figures, each against a baseline measured in the same run:

- ``fire_sqlite`` and ``fire_postgres``: events per second through ``Runtime.fire`` against a
  bare SQLAlchemy Core transaction doing the same writes on the same tables and engine
  (:mod:`bench.throughput`);
- ``memory_open_referrals``: peak memory allocated while firing events on randomly chosen
  referrals among a few thousand open ones and among ten times as many
  (:mod:`bench.memory`).

The SOP fired is the synthetic ``bench.pingpong`` (``bench/bench.sop.yaml``). Speed targets
live here and in the README, never in unit tests.
"""

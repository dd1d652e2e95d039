"""``python -m bench --quick`` runs and writes well-formed figures.

Only that: no timing or memory assertion here. Speed targets are checked by reading the
benchmark's output (README, "Performance"), never by unit tests, whose machines vary.
The read figures (``reads_*``) must also have met no error: a read or a write answered with
anything but 200 is a bug, however fast. The ``*_postgres`` figures may be skipped when the
PostgreSQL server cannot be reached; they are then written with null figures and a
``skipped`` reason. The informational
``escalate_*`` figures have a value but no baseline or ratio.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = [
    "fire_sqlite",
    "fire_postgres",
    "api_fire_sqlite",
    "api_fire_postgres",
    "memory_open_referrals",
    "sweep_sqlite",
    "escalate_sqlite",
    "sweep_postgres",
    "escalate_postgres",
    "sop_check_worst",
    "reads_sqlite",
    "reads_postgres",
]
MAY_BE_SKIPPED = {
    "fire_postgres",
    "api_fire_postgres",
    "sweep_postgres",
    "escalate_postgres",
    "reads_postgres",
}
INFORMATIONAL = {"escalate_sqlite", "escalate_postgres"}
"""Measured without a baseline: ``baseline`` and ``ratio`` are null."""


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    figures = json.loads(out.read_text())
    assert isinstance(figures, list)
    assert [f["name"] for f in figures] == NAMES
    printed = done.stdout.splitlines()
    for figure in figures:
        name = figure["name"]
        assert {"name", "value", "unit", "baseline", "ratio"} <= set(figure), name
        assert isinstance(figure["unit"], str)
        assert figure["unit"]
        assert any(line.startswith(name) for line in printed), name
        if figure.get("skipped"):
            assert name in MAY_BE_SKIPPED
            assert figure["value"] is None
            assert figure["baseline"] is None
            assert figure["ratio"] is None
            assert any(line.startswith(name) and "skipped: " in line for line in printed)
            continue
        if name in INFORMATIONAL:
            assert figure["baseline"] is None, name
            assert figure["ratio"] is None, name
        for key in ("value",) if name in INFORMATIONAL else ("value", "baseline", "ratio"):
            value = figure[key]
            assert isinstance(value, int | float), (name, key)
            assert math.isfinite(value), (name, key)
            assert value > 0, (name, key)
        if name.startswith("reads_"):  # not a timing: every read answered 200, every write too
            details = figure["details"]
            assert details["errors"] == 0, details["error_samples"]
            assert len(details["loaded"]) == len(details["baseline"]) == details["read_calls"]
            assert details["events_fired_while_reading"] > 0

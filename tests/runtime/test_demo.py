"""The demo is the newcomer's first look: it must run, end to end, every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_intake_to_closure_with_an_escalation_and_a_verified_chain() -> None:
    script = Path(sys.executable).parent / "sop-engine"
    result = subprocess.run(
        [str(script), "demo"], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "refer_for_return -> return_referral.sent" in out
    assert "escalation: timer" in out
    assert "escalated" in out
    assert "close -> closed" in out
    assert "entries, chain intact" in out
    assert "Synthetic Survivor" not in out  # the demo's own name never appears on screen

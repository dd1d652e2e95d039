"""Without the PostgreSQL driver, a PostgreSQL URL stops every command with one line saying
what to install, never a traceback. (The documented install brings psycopg: it is a
dependency, not an extra.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sop_engine.errors import ConfigurationError
from sop_engine.persistence.db import make_engine

SOP_ENGINE = Path(sys.executable).parent / "sop-engine"
URL = "postgresql://synthetic@127.0.0.1:5432/test"


def test_the_driver_is_a_dependency_of_the_documented_install() -> None:
    from importlib.metadata import requires

    assert any(
        r.startswith("psycopg[binary]") and "extra" not in r for r in requires("sop-engine") or []
    )


def test_make_engine_names_the_missing_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    with pytest.raises(ConfigurationError) as refused:
        make_engine(URL)
    assert str(refused.value).startswith(
        "the PostgreSQL driver for 'postgresql+psycopg' is not installed (psycopg cannot be "
        "imported)"
    )
    assert "synthetic" not in str(refused.value)  # nothing of the URL but its scheme


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--no-worker"], ["worker"]])
def test_every_command_says_it_in_one_line(tmp_path: Path, command: list[str]) -> None:
    hidden = tmp_path / "no-psycopg"
    (hidden / "psycopg").mkdir(parents=True)
    (hidden / "psycopg" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOP_ENGINE_", "PREFECT_"))}
    env |= {
        "PYTHONPATH": str(hidden),
        "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
        "SOP_ENGINE_DATABASE_URL": URL,
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    done = subprocess.run(
        [str(SOP_ENGINE), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "the PostgreSQL driver for 'postgresql+psycopg' is not installed" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr

"""Master key rotation (:mod:`sop_engine.key_rotation`, ``sop-engine keys rotate`` and ``keys
status``) on SQLite and PostgreSQL, as an operator runs it: while referrals are created,
erased and fired, killed half-way and run again, twice at once; and the refusal to start of a
process whose ring lacks a key that stored case keys still use.

Every referral is synthetic; its one identifying fact is a made-up name."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select, update

from cli.main import cli
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring, wrap_case_key
from sop_engine.errors import ConfigurationError
from sop_engine.key_rotation import (
    Rotation,
    pending_case_keys,
    rewrap_batch,
    rotate_case_keys,
)
from sop_engine.language.compiler import SopLibrary
from sop_engine.master_keys import KeyStatus, case_key_usage, check_keyring, key_status
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres, make_engine
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.runtime.conftest import START

ROOT = Path(__file__).resolve().parents[1]
SOP_ENGINE = Path(sys.executable).parent / "sop-engine"
CASEWORKER = Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",))
_K = tables.case_keys

K1 = MasterKey.generate("k1")
K2 = MasterKey.generate("k2")
OLD = MasterKeyring(K1)
ROTATING = MasterKeyring(K2, (K1,))
NEW_ONLY = MasterKeyring(K2)


def _runtime(engine: Engine, library: SopLibrary, ring: MasterKeyring) -> Runtime:
    return Runtime(engine, library, ring, ManualClock(START), directory=agency_directory())


def _create(runtime: Runtime, number: int) -> str:
    """A corridor referral whose sealed name says which it is; its case code."""
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=1,
        actor=CASEWORKER,
        origin_country="TH",
        destination_country="LA",
        incident_at=None,
        facts={"survivor_age": 24, "survivor_name": f"Synthetic Survivor {number:04d}"},
    )
    return view.case_code


def _referrals(engine: Engine, library: SopLibrary, count: int) -> dict[str, str]:
    """``count`` referrals made by processes running with the old ring only:
    case code -> the name sealed in it."""
    check_keyring(engine, OLD, START)
    runtime = _runtime(engine, library, OLD)
    return {_create(runtime, n): f"Synthetic Survivor {n:04d}" for n in range(count)}


def _names(
    engine: Engine, library: SopLibrary, ring: MasterKeyring, codes: list[str] | None = None
) -> dict[str, str]:
    """The sealed name of each referral of ``codes`` (default: every unerased one), read
    with ``ring``."""
    runtime = _runtime(engine, library, ring)
    if codes is None:
        with engine.connect() as conn:
            codes = list(
                conn.exec_driver_sql(
                    "SELECT case_code FROM referrals WHERE erased_at IS NULL"
                ).scalars()
            )
    names: dict[str, str] = {}
    for code in codes:
        identifying = runtime.read_referral(code, reveal_identifying=True).identifying
        assert identifying is not None
        names[code] = identifying["survivor_name"]
    return names


def _usage(engine: Engine) -> dict[str, int]:
    return case_key_usage(engine)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _env(engine: Engine, ring: MasterKeyring, tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "SOP_ENGINE_DATABASE_URL": _url(engine),
        "SOP_ENGINE_MASTER_KEY": ring.to_setting(),
        "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("SOP_ENGINE_ENVIRONMENT", None)
    return env


def _rotate_process(
    engine: Engine, ring: MasterKeyring, tmp_path: Path, batch_size: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SOP_ENGINE), "keys", "rotate", "--batch-size", str(batch_size)],
        env=_env(engine, ring, tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_PROGRESS = re.compile(
    r"(?P<id>\S+) -> \S+: (?P<rewrapped>\d+) of \d+ re-wrapped, (?P<skipped>\d+) skipped "
    r"\(erased or changed meanwhile\), (?P<unreadable>\d+) unreadable"
)


def _final_counts(stderr: str, key_id: str) -> tuple[int, int, int]:
    """(re-wrapped, skipped, unreadable) of ``key_id`` from a run's last progress line."""
    found = [m for m in map(_PROGRESS.fullmatch, stderr.splitlines()) if m and m["id"] == key_id]
    last = found[-1]
    return int(last["rewrapped"]), int(last["skipped"]), int(last["unreadable"])


@pytest.fixture
def cli_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from sop_engine.settings import get_settings

    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SOP_ENGINE_ENVIRONMENT", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _keys(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, ring: MasterKeyring, *args: str
) -> tuple[int, str, str]:
    from sop_engine.settings import get_settings

    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", _url(engine))
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", ring.to_setting())
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["keys", *args])
    return result.exit_code, result.stdout, result.stderr


def _no_key_material(*texts: str) -> None:
    for key in (K1, K2):
        secret = key.to_setting().split(":")[1]
        assert not any(secret in text for text in texts)


# --- rotating ---------------------------------------------------------------------------------


def test_rotation_moves_every_case_key_and_the_new_key_alone_then_reads_them(
    engine: Engine, library: SopLibrary
) -> None:
    names = _referrals(engine, library, 23)
    seen: list[int] = []
    rotation = rotate_case_keys(
        engine,
        ROTATING,
        START,
        batch_size=5,
        on_batch=lambda r: seen.append(r.tally.rewrapped["k1"]),
    )
    assert rotation.done
    assert rotation.at_start == {"k1": 23}
    assert rotation.tally.rewrapped == {"k1": 23}
    assert not rotation.tally.skipped
    assert not rotation.tally.unreadable
    assert seen == [5, 10, 15, 20, 23]  # bounded batches, each committed on its own
    assert _usage(engine) == {"k2": 23}
    check_keyring(engine, NEW_ONLY, START)  # k1 can go: nothing refuses a ring without it
    assert _names(engine, library, NEW_ONLY) == names
    again = rotate_case_keys(engine, ROTATING, START)
    assert again.done
    assert not again.tally.rewrapped
    assert again.at_start == {}


def test_a_case_key_erased_or_changed_between_read_and_write_is_skipped_not_written_back(
    engine: Engine, library: SopLibrary
) -> None:
    names = _referrals(engine, library, 4)
    erased, changed, *others = sorted(names)
    runtime = _runtime(engine, library, ROTATING)
    batch = pending_case_keys(engine, ROTATING, limit=10)
    assert len(batch) == 4
    runtime.erase(erased, CASEWORKER)
    replaced_id, replaced = wrap_case_key(OLD, b"\x07" * 32)  # changed, still under k1
    changed_id = runtime.read_referral(changed).id
    with engine.begin() as conn:
        conn.execute(update(_K).where(_K.c.referral_id == changed_id).values(wrapped_key=replaced))
    tally = rewrap_batch(engine, ROTATING, batch)
    assert tally.rewrapped == {"k1": 2}
    assert tally.skipped == {"k1": 2}
    with engine.connect() as conn:
        rows = dict(conn.execute(select(_K.c.referral_id, _K.c.wrapped_key)).all())
    assert len(rows) == 3  # the erased referral's key was not brought back
    assert rows[changed_id] == replaced  # nor the changed one overwritten with its old self
    assert replaced_id == "k1"
    assert _names(engine, library, ROTATING, others) == {code: names[code] for code in others}


def test_a_tampered_case_key_is_counted_and_left_and_the_others_move(
    engine: Engine, library: SopLibrary
) -> None:
    names = _referrals(engine, library, 6)
    with engine.begin() as conn:
        victim, wrapped = conn.execute(
            select(_K.c.referral_id, _K.c.wrapped_key).order_by(_K.c.referral_id).limit(1)
        ).one()
        flipped = bytes([wrapped[0] ^ 1]) + bytes(wrapped[1:])
        conn.execute(update(_K).where(_K.c.referral_id == victim).values(wrapped_key=flipped))
    rotation = rotate_case_keys(engine, ROTATING, START, batch_size=4)
    assert not rotation.done
    assert rotation.tally.rewrapped == {"k1": 5}
    assert rotation.tally.unreadable == {"k1": 1}  # once, though two passes met it
    assert rotation.left == {"k1": 1}
    assert _usage(engine) == {"k1": 1, "k2": 5}
    with engine.connect() as conn:
        assert conn.scalar(select(_K.c.wrapped_key).where(_K.c.referral_id == victim)) == flipped
    assert len(names) == 6


def test_rotation_while_referrals_are_created_fired_and_erased_loses_no_key(
    engine: Engine, library: SopLibrary
) -> None:
    names = _referrals(engine, library, 30)
    check_keyring(engine, ROTATING, START)
    other_engine = make_engine(_url(engine))  # the API's process: its own pool
    try:
        api = _runtime(other_engine, library, ROTATING)
        to_erase = sorted(names)[::3]
        to_fire = sorted(names)[1::3]
        made: dict[str, str] = {}
        errors: list[BaseException] = []
        started = threading.Event()

        def traffic() -> None:
            try:
                started.wait(10)
                for n, code in enumerate(to_erase):
                    api.erase(code, CASEWORKER)
                    new = 1000 + n
                    made[_create(api, new)] = f"Synthetic Survivor {new:04d}"
                for code in to_fire:
                    api.grant_consent(
                        code, scope="case_management", actor=CASEWORKER, given_by="survivor"
                    )
                    api.fire(
                        code,
                        "record_consent",
                        CASEWORKER,
                        {"facts": {"safe_contact_method": "text_message"}},
                    )
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=traffic)
        worker.start()
        rotation = rotate_case_keys(
            engine, ROTATING, START, batch_size=2, on_batch=lambda _: started.set()
        )
        worker.join()
    finally:
        other_engine.dispose()
    assert errors == []
    assert rotation.done
    assert sum(rotation.tally.rewrapped.values()) + sum(rotation.tally.skipped.values()) >= 20
    assert _usage(engine) == {"k2": 30}
    expected = {c: n for c, n in names.items() if c not in to_erase} | made
    assert _names(engine, library, NEW_ONLY) == expected


def test_a_case_key_written_with_the_old_ring_behind_the_pass_is_found_by_the_next(
    engine: Engine, library: SopLibrary
) -> None:
    """A process not yet restarted with the new ring keeps wrapping under k1; a key it writes
    behind where the pass has got to is not left behind."""
    names = _referrals(engine, library, 8)
    laggard = _runtime(engine, library, OLD)
    behind: list[str] = []

    def write_behind(rotation: Rotation) -> None:
        if behind:
            return
        with engine.connect() as conn:  # the pass has got at least this far
            reached = conn.scalar(
                select(func.max(_K.c.referral_id)).where(_K.c.master_key_id == "k2")
            )
        for n in range(200):
            code = _create(laggard, 2000 + n)
            names[code] = f"Synthetic Survivor {2000 + n:04d}"
            if laggard.read_referral(code).id < reached:
                behind.append(code)
                return

    rotation = rotate_case_keys(engine, ROTATING, START, batch_size=3, on_batch=write_behind)
    assert behind
    assert rotation.done
    assert _names(engine, library, NEW_ONLY) == names


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="batch size must be at least 1, not 0"):
        rotate_case_keys(make_engine("sqlite://"), ROTATING, START, batch_size=0)


# --- the refusal of a ring without a key still in use ------------------------------------------


def test_a_ring_lacking_a_key_still_in_use_is_refused_naming_the_id_and_the_count(
    engine: Engine, library: SopLibrary
) -> None:
    _referrals(engine, library, 3)
    with pytest.raises(ConfigurationError) as refused:
        check_keyring(engine, NEW_ONLY, START)
    assert str(refused.value) == (
        "3 case keys are still wrapped under key 'k1', which SOP_ENGINE_MASTER_KEY no longer "
        "lists: put it back as a previous key and run `sop-engine keys rotate`"
    )
    with pytest.raises(ConfigurationError, match="under key 'k1'"):
        rotate_case_keys(engine, NEW_ONLY, START)
    assert _usage(engine) == {"k1": 3}  # nothing was written
    with engine.begin() as conn:
        first = conn.scalar(select(func.min(_K.c.referral_id)))
        conn.execute(update(_K).where(_K.c.referral_id == first).values(master_key_id="k0"))
    with pytest.raises(ConfigurationError) as both:
        check_keyring(engine, MasterKeyring(K2), START)
    assert str(both.value) == (
        "3 case keys are still wrapped under keys that SOP_ENGINE_MASTER_KEY no longer lists "
        "(1 under 'k0', 2 under 'k1'): put them back as previous keys and run "
        "`sop-engine keys rotate`"
    )


def test_serve_and_the_worker_refuse_a_ring_lacking_a_key_still_in_use(
    monkeypatch: pytest.MonkeyPatch, sqlite_engine: Engine, library: SopLibrary, tmp_path: Path
) -> None:
    from cli.serve import ServeError, build_app
    from sop_engine.settings import get_settings
    from workflows import runtime as flow_parts

    _referrals(sqlite_engine, library, 1)
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", _url(sqlite_engine))
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", NEW_ONLY.to_setting())
    monkeypatch.delenv("SOP_ENGINE_ENVIRONMENT", raising=False)
    get_settings.cache_clear()
    flow_parts._runtime_from_settings.cache_clear()
    expected = "1 case key is still wrapped under key 'k1', which SOP_ENGINE_MASTER_KEY no"
    try:
        with pytest.raises(ServeError) as serve_refused:
            build_app()
        assert str(serve_refused.value).startswith(expected)
        with pytest.raises(ConfigurationError) as worker_refused:
            flow_parts.flow_runtime()
        assert str(worker_refused.value).startswith(expected)
    finally:
        flow_parts._runtime_from_settings.cache_clear()
        get_settings.cache_clear()


# --- the commands -------------------------------------------------------------------------------


def test_keys_status_says_which_key_can_be_removed(
    engine: Engine, library: SopLibrary, monkeypatch: pytest.MonkeyPatch, cli_settings: None
) -> None:
    _referrals(engine, library, 3)
    assert key_status(engine, ROTATING) == [
        KeyStatus("k2", 0, "current", "unrecorded"),
        KeyStatus("k1", 3, "previous", "ok"),
    ]
    code, out, err = _keys(monkeypatch, engine, ROTATING, "status")
    assert code == 0
    assert out.splitlines() == ["k2\t0\tcurrent\tunrecorded", "k1\t3\tprevious\tok"]
    assert "'k1' still wraps 3 case keys: run 'sop-engine keys rotate'" in err

    code, out, err = _keys(monkeypatch, engine, ROTATING, "rotate", "--batch-size", "2")
    assert code == 0, err
    assert "k1 -> k2: 3 of 3 re-wrapped, 0 skipped (erased or changed meanwhile), 0 unreadable" in (
        err
    )
    assert "every case key is wrapped under 'k2'" in err
    _no_key_material(out, err)

    code, out, err = _keys(monkeypatch, engine, ROTATING, "status")
    assert code == 0
    assert out.splitlines() == ["k2\t3\tcurrent\tok", "k1\t0\tprevious\tok"]
    assert "'k1' wraps no case key: it can be removed from SOP_ENGINE_MASTER_KEY" in err

    code, out, err = _keys(monkeypatch, engine, MasterKeyring(K1), "status")
    assert code == 1
    assert out.splitlines() == ["k1\t0\tcurrent\tok", "k2\t3\tmissing\t-"]
    assert "'k2' wraps 3 case keys but SOP_ENGINE_MASTER_KEY lacks it" in err

    wrong = MasterKeyring(K2, (MasterKey.generate("k1"),))
    code, out, err = _keys(monkeypatch, engine, wrong, "status")
    assert code == 1
    assert out.splitlines()[1] == "k1\t0\tprevious\tdiffers"
    _no_key_material(out, err)


def test_keys_rotate_refuses_a_ring_lacking_a_key_in_use_and_reports_tampered_keys(
    engine: Engine, library: SopLibrary, monkeypatch: pytest.MonkeyPatch, cli_settings: None
) -> None:
    _referrals(engine, library, 3)
    code, out, err = _keys(monkeypatch, engine, NEW_ONLY, "rotate")
    assert code == 1
    assert err.splitlines() == [
        "3 case keys are still wrapped under key 'k1', which SOP_ENGINE_MASTER_KEY no longer "
        "lists: put it back as a previous key and run `sop-engine keys rotate`"
    ]
    with engine.begin() as conn:
        conn.execute(update(_K).values(wrapped_key=b"\x00" * 40))
    code, out, err = _keys(monkeypatch, engine, ROTATING, "rotate")
    assert code == 1
    assert "k1 -> k2: 0 of 3 re-wrapped, 0 skipped (erased or changed meanwhile), 3 unreadable" in (
        err
    )
    assert "3 case keys are still under key 'k1': 3 failed to unwrap (tampered" in err
    assert "Traceback" not in err
    _no_key_material(out, err)


def test_keys_rotate_on_an_unmigrated_database_says_so_in_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli_settings: None
) -> None:
    engine = make_engine(sqlite_url)
    try:
        code, _, err = _keys(monkeypatch, engine, ROTATING, "rotate")
    finally:
        engine.dispose()
    assert code == 1
    assert err.startswith("the database is at migration (none), this version needs ")
    assert len(err.splitlines()) == 1


# --- real processes -----------------------------------------------------------------------------


@contextmanager
def _writes_held(engine: Engine) -> Iterator[None]:
    """Hold the database's writes (SQLite) or the first pending case key's row (PostgreSQL)
    until the block ends."""
    with engine.connect() as conn:
        if is_postgres(engine):
            conn.execute(
                select(_K.c.referral_id).order_by(_K.c.referral_id).limit(1).with_for_update()
            )
        else:
            conn.execute(select(_K.c.referral_id).limit(1))  # a writer: BEGIN IMMEDIATE
        yield
        conn.rollback()


def _waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).scalar_one()
        )


def _in_busy_wait(pid: int) -> bool:
    """Whether the process sleeps in nanosleep: SQLite's busy handler, waiting for the write
    lock, is the only sleep of a rotation's process."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def _until(
    condition: Callable[[], bool], what: str, *, pause: float = 0.02, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)


@pytest.mark.slow
def test_a_rotation_killed_half_way_finishes_when_run_again(
    engine: Engine, library: SopLibrary, tmp_path: Path
) -> None:
    names = _referrals(engine, library, 120)
    check_keyring(engine, ROTATING, START)  # no write of its own at the child's start
    if is_postgres(engine):
        # The child blocks inside a batch's transaction, its first rows updated but not
        # committed, on the row the test holds: the kill lands mid-transaction.
        with engine.begin() as conn:
            held = conn.execute(
                select(_K.c.referral_id).order_by(_K.c.referral_id).offset(63).limit(1)
            ).scalar_one()
        with engine.connect() as conn:
            conn.execute(select(_K.c.referral_id).where(_K.c.referral_id == held).with_for_update())
            child = _rotate_process(engine, ROTATING, tmp_path, batch_size=5)
            _until(lambda: _waiting_on_locks(engine) == 1, "the child to block on the held row")
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            conn.rollback()
        assert _usage(engine) == {"k1": 60, "k2": 60}  # batches 1-12 whole, batch 13 not at all
    else:
        # Frozen (SIGSTOP) the moment its first batch shows, then killed wherever it was.
        child = _rotate_process(engine, ROTATING, tmp_path, batch_size=5)
        _until(lambda: _usage(engine).get("k2", 0) > 0, "a first batch", pause=0)
        child.send_signal(signal.SIGSTOP)
        usage = _usage(engine)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert _usage(engine) == usage
        assert 0 < usage.get("k2", 0) < 120, "the kill must land half-way"
        assert usage["k2"] % 5 == 0  # whole batches only
        assert sum(usage.values()) == 120
    assert child.returncode == -signal.SIGKILL
    again = _rotate_process(engine, ROTATING, tmp_path, batch_size=5)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert _usage(engine) == {"k2": 120}
    assert _names(engine, library, NEW_ONLY) == names
    _no_key_material(out, err)


@pytest.mark.slow
def test_two_rotations_at_once_rewrap_each_case_key_once(
    engine: Engine, library: SopLibrary, tmp_path: Path
) -> None:
    names = _referrals(engine, library, 60)
    check_keyring(engine, ROTATING, START)
    with _writes_held(engine):
        first = _rotate_process(engine, ROTATING, tmp_path, batch_size=4)
        second = _rotate_process(engine, ROTATING, tmp_path, batch_size=4)
        if is_postgres(engine):
            _until(lambda: _waiting_on_locks(engine) == 2, "both to block on the held row")
        else:
            asleep: set[int] = set()

            def both_wait() -> bool:
                asleep.update(p.pid for p in (first, second) if _in_busy_wait(p.pid))
                return len(asleep) == 2

            _until(both_wait, "both to wait for the write lock", pause=0.005)
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], results
    counts = [_final_counts(err, "k1") for _, err in results]
    assert sum(c[0] for c in counts) == 60  # each re-wrapped once, by one of them
    assert sum(c[1] for c in counts) >= 1  # they met: the loser's guarded update skipped
    assert all(c[2] == 0 for c in counts)
    assert _usage(engine) == {"k2": 60}
    assert _names(engine, library, NEW_ONLY) == names


def test_keys_rotate_does_not_import_the_sop_compiler_or_the_web(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['keys', 'rotate'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=_env(sqlite_engine, ROTATING, tmp_path),
    )
    loaded = set(result.stdout.split())
    assert "sqlalchemy" in loaded  # it ran
    assert not loaded & {"cel", "transitions", "yaml", "prefect", "fastapi", "uvicorn", "jinja2"}

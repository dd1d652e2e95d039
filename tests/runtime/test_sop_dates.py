"""SOP dates: no referral starts on a version not yet in effect, and one due for review is
warned (or refused, by a setting). The days are the SOP's own (example.corridor: Asia/Bangkok,
UTC+07:00), moved by the injected clock. A second version of the example corridor, in effect
from 2026-06-01, is written for the test beside the shipped library."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from api.users import create_user
from notifications.catalogue import template_names
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKeyring
from sop_engine.errors import InvalidInput
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.sop_dates import date_status
from tests.agencies import agency_directory
from tests.shipped import ROOT

T = tables.timeline_entries
CASEWORKER = Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",))

SECOND = """\
key: example.corridor
version: 2
extends: example.corridor@1
title: Thailand to Lao PDR return corridor (example), second version
effective: 2026-06-01
review: 2028-06-01
"""

LATER = """\
key: example.later
version: 1
extends: example.corridor@1
title: A corridor that takes effect next year
effective: 2028-03-01
review: 2029-03-01
"""


@pytest.fixture(scope="module")
def dated_library(tmp_path_factory: pytest.TempPathFactory) -> SopLibrary:
    folder = tmp_path_factory.mktemp("dated")
    (folder / "example.corridor-2.sop.yaml").write_text(SECOND, encoding="utf-8")
    (folder / "example.later.sop.yaml").write_text(LATER, encoding="utf-8")
    return SopLibrary.load([ROOT / "sop_definitions", folder], template_names())


def _runtime(
    engine: Engine, library: SopLibrary, keyring: MasterKeyring, at: datetime, **options: Any
) -> Runtime:
    clock = ManualClock(at)
    return Runtime(engine, library, keyring, clock, directory=agency_directory(), **options)


def _create(runtime: Runtime, key: str = "example.corridor", version: int | None = None) -> Any:
    return runtime.create_referral(
        sop_key=key,
        sop_version=version,
        actor=CASEWORKER,
        origin_country="TH",
        destination_country="LA",
        facts={"survivor_age": 30, "survivor_name": "Synthetic Survivor 0700"},
    )


def _created_entry(runtime: Runtime, referral_id: str) -> Any:
    with runtime.db.connect() as conn:
        return conn.execute(
            select(T).where(T.c.referral_id == referral_id, T.c.kind == "created")
        ).one()


def test_a_new_referral_starts_on_the_latest_version_in_effect_by_the_sops_own_day(
    engine: Engine, dated_library: SopLibrary, keyring: MasterKeyring
) -> None:
    # 2026-05-31 23:59 in Bangkok: version 2 is not in effect yet; a minute later it is.
    before = _runtime(engine, dated_library, keyring, datetime(2026, 5, 31, 16, 59, tzinfo=UTC))
    assert _create(before).sop_version == 1
    with pytest.raises(InvalidInput, match="takes effect on 2026-06-01") as refused:
        _create(before, version=2)
    assert refused.value.field == "sop_version"
    after = _runtime(engine, dated_library, keyring, datetime(2026, 5, 31, 17, 0, tzinfo=UTC))
    assert _create(after).sop_version == 2
    assert _create(after, version=1).sop_version == 1  # asked for, and still in effect


def test_an_sop_with_no_version_in_effect_starts_nothing(
    engine: Engine, dated_library: SopLibrary, keyring: MasterKeyring
) -> None:
    runtime = _runtime(engine, dated_library, keyring, datetime(2026, 12, 3, 5, 0, tzinfo=UTC))
    with pytest.raises(InvalidInput) as refused:
        _create(runtime, "example.later")
    assert str(refused.value) == (
        "no version of example.later is in effect yet: example.later@1 takes effect on 2028-03-01"
    )


def test_a_version_due_for_review_warns_each_new_referral_and_the_timeline_says_so(
    engine: Engine, dated_library: SopLibrary, keyring: MasterKeyring
) -> None:
    on_time = _runtime(engine, dated_library, keyring, datetime(2027, 12, 31, 16, 0, tzinfo=UTC))
    fresh = _create(on_time, version=1)  # 2027-12-31 23:00 in Bangkok: review is tomorrow
    assert fresh.warnings == ()
    assert "review_due" not in _created_entry(on_time, fresh.id).details
    due = _runtime(engine, dated_library, keyring, datetime(2027, 12, 31, 17, 0, tzinfo=UTC))
    view = _create(due, version=1)
    assert view.warnings == (
        "example.corridor@1 was due for review on 2028-01-01: its coordinators should review "
        "it and publish a new version",
    )
    assert _created_entry(due, view.id).details["review_due"] == "2028-01-01"
    assert due.read_referral(view.case_code).warnings == ()  # told on creation only


def test_a_deployment_may_refuse_versions_due_for_review(
    engine: Engine, dated_library: SopLibrary, keyring: MasterKeyring
) -> None:
    at = datetime(2028, 1, 2, tzinfo=UTC)
    strict = _runtime(engine, dated_library, keyring, at, refuse_past_review=True)
    with pytest.raises(InvalidInput, match="was due for review on 2028-01-01") as refused:
        _create(strict, version=1)
    assert refused.value.field == "sop_version"
    assert _create(strict).sop_version == 2  # version 2 is in effect and not due


def test_coordinators_and_operators_see_each_versions_dates(
    engine: Engine, dated_library: SopLibrary, keyring: MasterKeyring
) -> None:
    runtime = _runtime(engine, dated_library, keyring, datetime(2028, 1, 2, tzinfo=UTC))
    now = runtime.clock.now()
    token = create_user(engine, "coord", "coordinator", now=now).token
    cw = create_user(engine, "cw", "caseworker", "TH-NGO-1", now=now).token
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        listed = client.get("/sops", headers={"Authorization": f"Bearer {token}"}).json()
        created = client.post(
            "/referrals",
            json={
                "sop_key": "example.corridor",
                "sop_version": 1,
                "origin_country": "TH",
                "destination_country": "LA",
                "facts": {"survivor_age": 30},
            },
            headers={"Authorization": f"Bearer {cw}"},
        )
        metrics = client.get("/metrics").text
    by_ref = {(s["key"], s["version"]): s for s in listed}
    assert by_ref["example.corridor", 1]["date_status"] == "review_due"
    assert by_ref["example.corridor", 2]["date_status"] == "in_effect"
    assert by_ref["example.later", 1]["date_status"] == "not_in_effect"
    assert by_ref["example.corridor", 2]["effective"] == "2026-06-01"
    assert created.status_code == 201, created.text
    assert created.json()["warnings"][0].startswith("example.corridor@1 was due for review")
    counts = {
        s: date_status(sop.spec, runtime.clock.now()) for s, sop in enumerate(runtime.library)
    }
    due = sum(1 for status in counts.values() if status == "review_due")
    assert f'sop_engine_sop_versions{{date_status="review_due"}} {float(due)}' in metrics

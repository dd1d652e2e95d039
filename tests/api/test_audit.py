"""The auditors' routes: referrals without facts, verified timelines, the access log and
deadline compliance; read-only, for auditors (and compliance for coordinators too).

Every test here runs on SQLite and on PostgreSQL, with a clock that moves only when told.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.chain import HASH_MISMATCH, PREV_HASH_MISMATCH
from sop_engine.timeline.verify import HEAD_MISMATCH
from tests.agencies import agency_directory

from .conftest import SURVIVOR, Users, referral_body

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

ROUTES = [
    "/audit/referrals",
    "/audit/referrals/{code}/timeline",
    "/audit/access-log",
    "/audit/compliance",
]
OTHERS = ["coordinator", "caseworker", "supervisor", "other_caseworker", "focal_point"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary, clock: ManualClock) -> Runtime:
    """Replaces the package's runtime: on each database, with a manual clock."""
    return Runtime(
        engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        clock,
        directory=agency_directory(),
    )


def create(client: TestClient, users: Users, **overrides: object) -> str:
    r = client.post("/referrals", json=referral_body(**overrides), headers=users.auth("caseworker"))
    assert r.status_code == 201, r.text
    code: str = r.json()["case_code"]
    return code


def record_consent(client: TestClient, users: Users, runtime: Runtime, code: str) -> None:
    """Consent for case management (recorded through the engine), then ``record_consent``
    through the API: two more timeline entries, and the intake task done."""
    caseworker = Actor("synthetic-cw", "caseworker", "TH-NGO-A")
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    r = client.post(f"/referrals/{code}/events/record_consent", headers=users.auth("caseworker"))
    assert r.status_code == 200, r.text


def walk(client: TestClient, users: Users, url: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every page of a list route, following ``next_cursor`` to the end."""
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, params=query, headers=users.auth("auditor"))
        assert r.status_code == 200, r.text
        yield r.json()
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return
    raise AssertionError("the pages never end")


# -- who may read -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ROUTES)
def test_auditors_read_every_audit_route_and_nobody_else_but_coordinators_compliance(
    client: TestClient, users: Users, case_code: str, path: str
) -> None:
    url = path.format(code=case_code)
    assert client.get(url, headers=users.auth("auditor")).status_code == 200
    for who in OTHERS:
        expected = 200 if (who, path) == ("coordinator", "/audit/compliance") else 403
        r = client.get(url, headers=users.auth(who))
        assert r.status_code == expected, (who, r.text)
    r = client.get(url)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ROUTES)
def test_audit_routes_are_read_only(
    client: TestClient, users: Users, case_code: str, path: str
) -> None:
    url = path.format(code=case_code)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, url, headers=users.auth("auditor")).status_code == 405


# -- referrals --------------------------------------------------------------------------------


def test_referrals_are_listed_without_facts(
    client: TestClient, users: Users, case_code: str
) -> None:
    r = client.get("/audit/referrals", headers=users.auth("auditor"))
    assert r.status_code == 200
    assert r.json() == {
        "items": [
            {
                "case_code": case_code,
                "sop_key": "example.corridor",
                "sop_version": 1,
                "state": "intake",
                "origin_country": "TH",
                "destination_country": "LA",
                "owner_agency_id": "TH-NGO-A",
                "agencies": {"case_agency": "TH-NGO-A"},
                "created_at": "2026-03-02T01:30:00Z",
                "closed_at": None,
                "timeline_length": 1,
                "erased": False,
            }
        ],
        "next_cursor": None,
    }
    assert SURVIVOR not in r.text
    assert "survivor_name" not in r.text  # not even the sealed facts' names


def test_referrals_are_filtered_by_sop_country_state_and_status(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    intake = create(client, users)
    assessed = create(client, users)
    record_consent(client, users, runtime, assessed)

    def codes(**params: object) -> list[str]:
        r = client.get("/audit/referrals", params=params, headers=users.auth("auditor"))
        assert r.status_code == 200, r.text
        return sorted(item["case_code"] for item in r.json()["items"])

    both = sorted([intake, assessed])
    assert codes() == both
    assert codes(sop="example.corridor", sop_version=1) == both
    assert codes(sop="example.baseline") == []
    assert codes(country="LA") == both  # the destination
    assert codes(country="TH") == both  # the origin
    assert codes(country="KH") == []
    assert codes(state="assessment") == [assessed]
    assert codes(status="open") == both
    assert codes(status="closed") == []
    r = client.get("/audit/referrals?status=shut", headers=users.auth("auditor"))
    assert r.status_code == 422
    assert r.json()["field"] == "status"


def test_referral_pages_walk_every_referral_once(client: TestClient, users: Users) -> None:
    """All are created at the same instant (the clock stands still): the case code breaks the
    tie, and a page boundary inside the tie neither repeats nor skips one."""
    made = {create(client, users) for _ in range(5)}
    pages = list(walk(client, users, "/audit/referrals", limit=2))
    seen = [item["case_code"] for page in pages for item in page["items"]]
    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == made


BAD_CURSORS = [
    "!!!",
    "eyJ4IjoxfQ",  # {"x":1}
    "WyJub3QgYSBkYXRlIiwiQSJd",  # ["not a date","A"]
    "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzAxOjAwIiwiQSJd",  # year 1 at +01:00: before UTC can count
    "MTg0NDY3NDQwNzM3MDk1NTE2MTY",  # 2**64
    "LTE",  # -1
]


def test_a_cursor_this_api_did_not_give_is_422(client: TestClient, users: Users) -> None:
    for url in ("/audit/referrals", "/audit/access-log"):
        for cursor in BAD_CURSORS:
            r = client.get(url, params={"cursor": cursor}, headers=users.auth("auditor"))
            assert r.status_code == 422, (url, cursor)
            assert r.json()["field"] == "cursor"


# -- timelines --------------------------------------------------------------------------------


def test_a_timeline_shows_every_entry_and_an_intact_chain(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    record_consent(client, users, runtime, case_code)
    r = client.get(f"/audit/referrals/{case_code}/timeline", headers=users.auth("auditor"))
    assert r.status_code == 200
    body = r.json()
    assert body["case_code"] == case_code
    assert body["verification"] == {
        "ok": True,
        "entries": 3,
        "scope": "full",  # a short timeline is recomputed whole on every page
        "checked_from_seq": 1,
        "checked_to_seq": 3,
        "broken_seq": None,
        "reason": None,
        "last_full_verification": None,
    }
    assert [e["seq"] for e in body["items"]] == [1, 2, 3]
    assert [e["kind"] for e in body["items"]] == ["created", "consent_granted", "transition"]
    created, granted, moved = body["items"]
    assert created["prev_hash"] == "0" * 64
    assert granted["prev_hash"] == created["hash"]
    assert moved["prev_hash"] == granted["hash"]
    assert created["actor_role"] == "caseworker"
    assert created["actor_agency_id"] == "TH-NGO-A"
    assert created["to_state"] == "intake"
    assert granted["consent_grant_id"] is not None
    assert granted["details"]["scope"] == "case_management"
    assert (moved["event"], moved["from_state"], moved["to_state"]) == (
        "record_consent",
        "intake",
        "assessment",
    )
    assert set(moved) >= {"disclosed_to", "disclosed_fields", "override", "at"}
    assert SURVIVOR not in r.text


def test_a_row_changed_in_the_database_breaks_the_chain_at_that_entry(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    record_consent(client, users, runtime, case_code)
    url = f"/audit/referrals/{case_code}/timeline"
    entries = tables.timeline_entries
    referral_id = runtime.read_referral(case_code).id
    with runtime.db.begin() as conn:
        conn.execute(
            update(entries)
            .where(entries.c.referral_id == referral_id, entries.c.seq == 2)
            .values(actor_id="someone-else")
        )
    body = client.get(url, headers=users.auth("auditor")).json()
    assert body["verification"] == {
        "ok": False,
        "entries": 3,
        "scope": "full",
        "checked_from_seq": 1,
        "checked_to_seq": 3,
        "broken_seq": 2,
        "reason": HASH_MISMATCH,
        "last_full_verification": None,
    }
    assert [e["seq"] for e in body["items"]] == [1, 2, 3]  # the broken entry is still shown
    with runtime.db.begin() as conn:
        conn.execute(
            update(entries)
            .where(entries.c.referral_id == referral_id, entries.c.seq == 3)
            .values(prev_hash="f" * 64)
        )
    # A short timeline is verified whole: the verdict is its first break, whatever the page.
    page = client.get(url, params={"limit": 1}, headers=users.auth("auditor")).json()
    assert page["verification"]["broken_seq"] == 2
    with runtime.db.begin() as conn:
        conn.execute(
            entries.delete().where(entries.c.referral_id == referral_id, entries.c.seq >= 2)
        )
    body = client.get(url, headers=users.auth("auditor")).json()
    assert body["verification"] == {  # cut off: the referral's head still names entry 3
        "ok": False,
        "entries": 3,
        "scope": "full",
        "checked_from_seq": 1,
        "checked_to_seq": 1,
        "broken_seq": 1,
        "reason": HEAD_MISMATCH,
        "last_full_verification": None,
    }


def test_a_moved_link_is_named(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    record_consent(client, users, runtime, case_code)
    entries = tables.timeline_entries
    referral_id = runtime.read_referral(case_code).id
    with runtime.db.begin() as conn:
        conn.execute(
            update(entries)
            .where(entries.c.referral_id == referral_id, entries.c.seq == 3)
            .values(prev_hash="0" * 64)
        )
    body = client.get(
        f"/audit/referrals/{case_code}/timeline", headers=users.auth("auditor")
    ).json()
    assert body["verification"]["broken_seq"] == 3
    assert body["verification"]["reason"] == PREV_HASH_MISMATCH


def test_a_full_verification_is_asked_for_recorded_and_reported_on_later_pages(
    client: TestClient, users: Users, runtime: Runtime, case_code: str, clock: ManualClock
) -> None:
    record_consent(client, users, runtime, case_code)
    url = f"/audit/referrals/{case_code}/timeline"
    asked = client.get(url, params={"verify": "full", "limit": 1}, headers=users.auth("auditor"))
    assert asked.status_code == 200
    recorded = {
        "verified_at": "2026-03-02T01:30:00Z",
        "entries": 3,
        "ok": True,
        "broken_seq": None,
        "reason": None,
    }
    assert asked.json()["verification"]["last_full_verification"] == recorded
    assert asked.json()["verification"]["scope"] == "full"
    clock.advance(timedelta(minutes=5))
    later = client.get(url, headers=users.auth("auditor")).json()["verification"]
    assert later["last_full_verification"] == recorded  # when it ran, not now
    bad = client.get(url, params={"verify": "everything"}, headers=users.auth("auditor"))
    assert bad.status_code == 422
    assert bad.json()["field"] == "verify"


def test_timeline_pages_walk_every_entry_once_by_seq(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    record_consent(client, users, runtime, case_code)
    pages = list(walk(client, users, f"/audit/referrals/{case_code}/timeline", limit=1))
    assert [[e["seq"] for e in page["items"]] for page in pages] == [[1], [2], [3]]
    assert all(page["verification"]["ok"] for page in pages)


def test_an_unknown_case_code_is_404_and_logged_as_refused(
    client: TestClient, users: Users
) -> None:
    r = client.get("/audit/referrals/AAAA-BBBB-CCCC/timeline", headers=users.auth("auditor"))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    log = client.get(
        "/audit/access-log", params={"outcome": "refused"}, headers=users.auth("auditor")
    ).json()["items"]
    assert [(e["action"], e["case_code"], e["actor_role"]) for e in log] == [
        ("audit.timeline.read", None, "auditor")
    ]


# -- the access log ---------------------------------------------------------------------------


def test_auditors_reads_are_in_the_access_log(
    client: TestClient, users: Users, case_code: str, clock: ManualClock
) -> None:
    other = create(client, users)
    clock.advance(timedelta(minutes=5))
    for code in (case_code, other, case_code):
        r = client.get(f"/audit/referrals/{code}/timeline", headers=users.auth("auditor"))
        assert r.status_code == 200
    client.get("/audit/referrals", headers=users.auth("auditor"))
    r = client.get("/audit/access-log", headers=users.auth("auditor"))
    audit = [e for e in r.json()["items"] if e["action"].startswith("audit.")]
    rows = [(e["action"], e["case_code"], e["actor_role"], e["outcome"]) for e in audit]
    assert rows == [
        ("audit.timeline.read", case_code, "auditor", "granted"),
        ("audit.timeline.read", other, "auditor", "granted"),
        ("audit.timeline.read", case_code, "auditor", "granted"),
        ("audit.referrals.list", None, "auditor", "granted"),
    ]
    entry = audit[-1]
    assert entry["at"] == "2026-03-02T01:35:00Z"
    assert entry["actor_agency_id"] is None
    assert SURVIVOR not in r.text

    by_case = client.get(
        "/audit/access-log", params={"case_code": case_code}, headers=users.auth("auditor")
    ).json()["items"]
    assert {e["case_code"] for e in by_case} == {case_code}
    assert len([e for e in by_case if e["action"] == "audit.timeline.read"]) == 2
    auditor_id = entry["actor_id"]
    mine = client.get(
        "/audit/access-log", params={"actor_id": auditor_id}, headers=users.auth("auditor")
    ).json()["items"]
    assert len([e for e in mine if e["action"].startswith("audit.")]) == 4
    later = client.get(
        "/audit/access-log",
        params={"since": "2026-03-02T01:35:00Z", "until": "2026-03-02T01:36:00Z"},
        headers=users.auth("auditor"),
    ).json()["items"]
    assert len(later) >= 4
    assert all(e["at"] == "2026-03-02T01:35:00Z" for e in later)


def test_access_log_pages_walk_every_row_once(
    client: TestClient, users: Users, case_code: str
) -> None:
    for _ in range(5):
        client.get(f"/audit/referrals/{case_code}/timeline", headers=users.auth("auditor"))
    pages = list(walk(client, users, "/audit/access-log", limit=2, case_code=case_code))
    ids = [e["id"] for page in pages for e in page["items"]]
    assert len(ids) == len(set(ids)) >= 5
    assert ids == sorted(ids)
    assert all(len(page["items"]) == 2 for page in pages[:-1])


def test_a_naive_time_or_one_utc_cannot_hold_is_refused(client: TestClient, users: Users) -> None:
    for url in ("/audit/access-log", "/audit/compliance"):
        for field, value in (
            ("since", "2026-03-02T01:35:00"),
            ("since", "0001-01-01T00:00:00+01:00"),
            ("until", "9999-12-31T23:00:00-05:00"),
        ):
            r = client.get(url, params={field: value}, headers=users.auth("auditor"))
            assert r.status_code == 422, (url, value)
            assert r.json()["field"] == field


# -- compliance -------------------------------------------------------------------------------


def test_compliance_counts_tasks_as_of_the_clock(
    client: TestClient, users: Users, runtime: Runtime, clock: ManualClock
) -> None:
    """Two referrals: one's consent is recorded in time, and its assessment is due 72 hours
    after the incident; the other's first task, due in one hour (the corridor's ``assign``
    deadline), is left open: pending, then overdue."""
    done = create(client, users)
    waiting = create(client, users)
    record_consent(client, users, runtime, done)

    def report(who: str = "auditor", **params: object) -> dict[str, Any]:
        r = client.get("/audit/compliance", params=params, headers=users.auth(who))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    body = report(group_by="agency")
    assert body["group_by"] == "agency"
    assert body["as_of"] == "2026-03-02T01:30:00Z"
    (row,) = body["rows"]
    assert row == {
        "group": "TH-NGO-A",
        "met": 1,
        "missed": 0,
        "overdue": 0,
        "pending": 2,
        "cancelled": 0,
        "untimed": 0,
        "escalations": 0,
        "rate": 1.0,
    }
    clock.advance(timedelta(hours=1, seconds=1))
    row = report("coordinator", group_by="agency")["rows"][0]
    assert (row["met"], row["missed"], row["overdue"], row["pending"]) == (1, 1, 1, 1)
    assert row["rate"] == 0.5
    assert waiting not in str(report())

    assert [r["group"] for r in report()["rows"]] == ["example.corridor@1"]
    assert [r["group"] for r in report(group_by="origin_country")["rows"]] == ["TH"]
    assert [r["group"] for r in report(group_by="destination_country")["rows"]] == ["LA"]
    assert [r["group"] for r in report(group_by="country")["rows"]] == ["TH"]
    assert report(sop="example.baseline")["rows"] == []
    assert report(until="2026-03-02T01:00:00Z")["rows"] == []


def test_compliance_refuses_an_unknown_grouping(client: TestClient, users: Users) -> None:
    r = client.get("/audit/compliance?group_by=survivor", headers=users.auth("auditor"))
    assert r.status_code == 422
    assert r.json()["field"] == "group_by"
    assert "survivor" not in r.json()["message"]

"""Every GET route reads in read-only transactions: on SQLite, every statement a GET runs is
traced, and the only transactions that take the write lock (``BEGIN IMMEDIATE``) are the
short ones appending the access-log row (and, for ``?verify=full``, recording the full
verification). A GET route this test does not know fails it, so that a new one is checked
too (``api/permissions.py`` lists every route; its own test checks that). All data
synthetic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.permissions import PERMISSIONS, PUBLIC
from sop_engine.runtime.engine import Runtime

from .conftest import Users
from .journey import RECEIVER, send_for_return

WRITES_OF_A_READ = (
    "INSERT INTO access_log ",
    "INSERT INTO timeline_verifications ",
)
"""What a GET may write, each in a write transaction of its own."""
LOOKUPS_OF_A_LOG = ("SELECT referrals.id \nFROM referrals \nWHERE referrals.case_code = ",)
"""What such a transaction may read: the referral a logged case code names."""


@dataclass
class Trace:
    """Statements per SQLite connection, as SQLite ran them."""

    statements: list[tuple[int, str]] = field(default_factory=list)

    def transactions(self) -> list[tuple[str, list[str]]]:
        """(``BEGIN`` or ``BEGIN IMMEDIATE``, the statements inside) per transaction."""
        open_: dict[int, tuple[str, list[str]]] = {}
        done: list[tuple[str, list[str]]] = []
        for connection, sql in self.statements:
            if sql in ("BEGIN", "BEGIN IMMEDIATE"):
                assert connection not in open_, "a transaction began inside another"
                open_[connection] = (sql, [])
            elif sql in ("COMMIT", "ROLLBACK"):
                done.append(open_.pop(connection))
            elif connection in open_:
                open_[connection][1].append(sql)
        assert not open_, "a transaction was left open"
        return done


@pytest.fixture
def trace(runtime: Runtime) -> Iterator[Trace]:
    traced = Trace()

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        key = id(dbapi_connection)
        dbapi_connection.set_trace_callback(lambda sql: traced.statements.append((key, sql)))

    event.listen(runtime.db, "connect", on_connect)
    runtime.db.pool.dispose()  # every connection from now on is traced
    yield traced
    event.remove(runtime.db, "connect", on_connect)


def _calls(client: TestClient, users: Users) -> dict[str, list[tuple[str | None, str]]]:
    """Route path -> (who, URL) calls, on a referral sent to LA-SW-B (a task, a disclosure)."""
    r = client.post(
        "/referrals",
        json={
            "sop_key": "example.corridor",
            "origin_country": "TH",
            "destination_country": "LA",
            "facts": {"survivor_age": 24},
        },
        headers=users.auth("caseworker"),
    )
    code = r.json()["case_code"]
    send_for_return(client, users, code)
    task = client.get("/tasks", headers=users.auth("focal_point")).json()["items"][0]["id"]
    audit = f"/audit/referrals/{code}/timeline"
    groupings = ("sop", "agency", "country", "origin_country", "destination_country")
    return {
        "/health": [(None, "/health")],
        "/ready": [(None, "/ready")],
        "/metrics": [(None, "/metrics")],
        "/sops": [("coordinator", "/sops")],
        "/sops/pending": [("coordinator", "/sops/pending")],
        "/sops/{key}/{version}": [("coordinator", "/sops/example.corridor/1")],
        "/sops/{key}/{version}/diagram": [("coordinator", "/sops/example.corridor/1/diagram")],
        "/sops/{key}/{version}/source": [("coordinator", "/sops/example.corridor/1/source")],
        "/directory/agencies": [("caseworker", "/directory/agencies")],
        "/directory/agencies/{agency_id}": [("caseworker", f"/directory/agencies/{RECEIVER}")],
        "/referrals/{case_code}": [("caseworker", f"/referrals/{code}")],
        "/referrals/{case_code}/events": [("caseworker", f"/referrals/{code}/events")],
        "/referrals/{case_code}/consents": [("caseworker", f"/referrals/{code}/consents")],
        "/referrals/{case_code}/transfers": [("caseworker", f"/referrals/{code}/transfers")],
        "/referrals/{case_code}/disclosed": [("focal_point", f"/referrals/{code}/disclosed")],
        "/notices": [("focal_point", "/notices")],
        "/tasks": [("focal_point", "/tasks")],
        "/tasks/{task_id}": [("focal_point", f"/tasks/{task}")],
        "/audit/referrals": [("auditor", "/audit/referrals")],
        "/audit/referrals/{case_code}/timeline": [
            ("auditor", audit),
            ("auditor", f"{audit}?verify=full"),
            ("auditor", "/audit/referrals/NONE-SUCH-CODE/timeline"),
        ],
        "/audit/access-log": [("auditor", "/audit/access-log")],
        "/audit/compliance": [("auditor", f"/audit/compliance?group_by={g}") for g in groupings],
    }


def test_every_get_route_reads_without_the_write_lock(
    client: TestClient, users: Users, trace: Trace
) -> None:
    calls = _calls(client, users)
    routes = {path for method, path in {*PERMISSIONS, *PUBLIC} if method == "GET"}
    assert routes == set(calls), "a GET route without a call here: add one"
    for path, made in calls.items():
        for who, url in made:
            trace.statements.clear()
            headers = users.auth(who) if who else {}
            r = client.get(url, headers=headers)
            assert r.status_code < 500, (url, r.text)
            transactions = trace.transactions()
            assert transactions, url
            assert any(kind == "BEGIN" for kind, _ in transactions), url
            for kind, statements in transactions:
                if kind == "BEGIN":
                    continue
                writes = [s for s in statements if not s.startswith(LOOKUPS_OF_A_LOG)]
                assert writes, (url, statements)
                assert all(s.startswith(WRITES_OF_A_READ) for s in writes), (url, path, writes)

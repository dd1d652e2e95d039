"""The caller's in-app notices: only her role's at her agency (SOP-wide ones for roles of no
agency), paged without repeats, marked read once. Every value is synthetic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from notifications.channels import InboxChannel, OutgoingMessage
from sop_engine.runtime.engine import Runtime

from .conftest import Users

AT = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def deliver(runtime: Runtime, code: str, role: str, agency: str | None, n: int) -> list[str]:
    referral_id = runtime.read_referral(code).id
    ids = []
    for i in range(n):
        message_id = str(uuid.uuid4())
        InboxChannel(runtime.db).send(
            OutgoingMessage(
                message_id=message_id,
                referral_id=referral_id,
                case_code=code,
                template="task_assigned",
                recipient_role=role,
                recipient_agency_id=agency,
                address=None,
                language="en",
                subject=f"Synthetic subject {i}",
                body="A task is waiting for you.",
                created_at=AT + timedelta(minutes=i % 2),  # ties on time: ordered by id
            )
        )
        ids.append(message_id)
    return ids


def walk(client: TestClient, users: Users, who: str, **params: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/notices", params=query, headers=users.auth(who)).json()
        seen += [n["id"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_each_user_sees_her_own_notices_paged_without_repeats(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    mine = deliver(runtime, case_code, "agency_focal_point", "LA-SW-B", 5)
    deliver(runtime, case_code, "agency_focal_point", "TH-NGO-A", 2)  # another agency's
    deliver(runtime, case_code, "caseworker", "LA-SW-B", 2)  # another role's
    coordinators = deliver(runtime, case_code, "coordinator", None, 3)  # SOP-wide
    seen = walk(client, users, "focal_point")
    assert sorted(seen) == sorted(mine)
    assert len(seen) == len(set(seen))
    assert sorted(walk(client, users, "coordinator")) == sorted(coordinators)
    assert walk(client, users, "auditor") == []
    assert [e.action for e in runtime.access_log(outcome="granted")].count("notices.list") >= 3


def test_a_notice_is_marked_read_once_and_only_by_its_addressee(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    (notice,) = deliver(runtime, case_code, "agency_focal_point", "LA-SW-B", 1)
    assert (
        client.post(f"/notices/{notice}/read", headers=users.auth("caseworker")).status_code == 404
    )
    first = client.post(f"/notices/{notice}/read", headers=users.auth("focal_point")).json()
    again = client.post(f"/notices/{notice}/read", headers=users.auth("focal_point")).json()
    assert first["read_at"] == again["read_at"]
    assert walk(client, users, "focal_point", unread=True) == []
    assert walk(client, users, "focal_point") == [notice]


def test_a_cursor_not_given_out_is_422(client: TestClient, users: Users) -> None:
    for cursor in ("not-a-cursor", "WyJ4IiwieSJd", "WzEsMl0"):
        r = client.get("/notices", params={"cursor": cursor}, headers=users.auth("focal_point"))
        assert r.status_code == 422, cursor
        assert r.json()["field"] == "cursor"

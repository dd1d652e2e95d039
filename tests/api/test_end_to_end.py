"""One referral through the HTTP API from intake to closure, with a missed deadline and its
escalation, on SQLite and on PostgreSQL.

The caseworker of TH-NGO-A (Thailand) records consent, the assessment and a return referral
to LA-SW-B (Lao PDR). LA-SW-B does not acknowledge within the day: the escalation sweep (the
function the worker's Prefect flow runs) reminds both agencies, and the outbox dispatch puts
the reminders in their in-app notices. The focal point then acknowledges, accepts, reads the
data disclosed to it, and reports delivery; the caseworker sends feedback and closes the
case. The auditor finds the whole story on a verified timeline, the reads in the access log
and the missed deadline in the compliance report. Every value is synthetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from notifications.channels import InboxChannel
from notifications.dispatch import dispatch_pending
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory.loader import load_directory
from sop_engine.language.compiler import SopLibrary
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import DELIVERED

from .conftest import SOPS, SURVIVOR, Users

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
RECEIVER = "LA-SW-B"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary, clock: ManualClock) -> Runtime:
    """Overrides the package's SQLite runtime: this module runs on both databases."""
    return Runtime(
        engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        clock,
        directory=agency_directory(),
    )


class Caller:
    """Requests as one user, failing the test on any answer but the expected one."""

    def __init__(self, client: TestClient, users: Users, who: str) -> None:
        self.client, self.headers = client, users.auth(who)

    def get(self, url: str, **params: Any) -> Any:
        r = self.client.get(url, params=params, headers=self.headers)
        assert r.status_code == 200, f"GET {url}: {r.text}"
        return r.json()

    def post(self, url: str, body: Any = None, expect: int = 200) -> Any:
        r = self.client.post(url, json=body, headers=self.headers)
        assert r.status_code == expect, f"POST {url}: {r.text}"
        return r.json()


def deliver_notices(runtime: Runtime) -> None:
    """One run of the outbox dispatch, to the in-app inbox only."""
    directory = load_directory(SOPS / "directory")
    dispatch_pending(runtime, directory, [InboxChannel(runtime.db)], worker="test")


def test_a_referral_from_intake_to_closure_with_an_escalation(
    client: TestClient, users: Users, runtime: Runtime, clock: ManualClock
) -> None:
    cw = Caller(client, users, "caseworker")
    fp = Caller(client, users, "focal_point")
    auditor = Caller(client, users, "auditor")

    # Intake: the referral, consent for case management, the assessment.
    body = {
        "sop_key": "example.corridor",
        "origin_country": "TH",
        "destination_country": "LA",
        "incident_at": (START - timedelta(days=3)).isoformat(),
        "facts": {"survivor_name": SURVIVOR, "survivor_age": 24},
    }
    code = cw.post("/referrals", body, expect=201)["case_code"]
    consent = {"scope": "case_management", "given_by": "survivor"}
    cw.post(f"/referrals/{code}/consents", consent, expect=201)
    events = f"/referrals/{code}/events"
    cw.post(f"{events}/record_consent", {"facts": {"safe_contact_method": "text_message"}})
    assessment = {"risk_level": "medium", "service_needed": "safety_and_shelter"}
    cw.post(f"{events}/complete_assessment", {"facts": {**assessment, "safety_plan_agreed": True}})
    offered = [e["event"] for e in cw.get(events)["events"]]
    assert "refer_for_return" in offered

    # The return referral, under its own consent.
    return_consent = {"scope": "cross_border_return", "given_by": "survivor"}
    grant_id = cw.post(f"/referrals/{code}/consents", return_consent, expect=201)["id"]
    sent = cw.post(f"{events}/refer_for_return", {"recipient_agency_id": RECEIVER})
    assert (sent["state"], sent["disclosed_to"]) == ("return_referral.sent", RECEIVER)

    # A day and an hour without acknowledgement: the sweep escalates, notices go out.
    clock.advance(timedelta(days=1, hours=1))
    outcomes = runtime.sweep()
    assert [o.outcome for o in outcomes if o.outcome != "skipped"], outcomes
    deliver_notices(runtime)
    fp_notices = fp.get("/notices", unread=True)["items"]
    assert {n["template"] for n in fp_notices} >= {"referral_received", "deadline_reminder"}
    assert all(n["case_code"] == code for n in fp_notices)
    assert "deadline_reminder" in {n["template"] for n in cw.get("/notices")["items"]}
    read = fp.post(f"/notices/{fp_notices[0]['id']}/read")
    assert read["read_at"] is not None
    assert len(fp.get("/notices", unread=True)["items"]) == len(fp_notices) - 1

    # The receiving agency answers through its task, and reads what was disclosed to it.
    tasks = fp.get("/tasks")["items"]
    assert [t["case_code"] for t in tasks] == [code]
    task = tasks[0]["id"]
    assert fp.post(f"/tasks/{task}/acknowledge")["state"] == "return_referral.acknowledged"
    task = fp.get("/tasks")["items"][0]["id"]
    assert fp.post(f"/tasks/{task}/accept")["state"] == "return_referral.accepted"
    disclosed = fp.get(f"/referrals/{code}/disclosed")
    shown = disclosed["fields"]
    assert shown["service_needed"] == "safety_and_shelter"
    assert shown["safe_contact_method"] == "text_message"
    assert "survivor_name" not in shown
    assert shown["consent_reference"] == grant_id
    task = fp.get("/tasks")["items"][0]["id"]
    assert fp.post(f"/tasks/{task}/deliver", DELIVERED)["state"] == "follow_up"

    # Follow-up, feedback to the receiving agency, closure.
    cw.post(f"{events}/send_feedback")
    closed = cw.post(f"{events}/close")
    assert closed["state"] == "closed"
    assert closed["available_events"] == []
    final = cw.get(f"/referrals/{code}")
    assert final["state"] == "closed"
    assert final["closed_at"] is not None
    assert SURVIVOR not in str(final)

    # The auditor: a verified timeline with the escalation, the reads, the missed deadline.
    timeline = auditor.get(f"/audit/referrals/{code}/timeline", limit=200)
    assert timeline["verification"]["ok"] is True
    kinds = [e["kind"] for e in timeline["items"]]
    assert "escalation" in kinds
    assert kinds[0] == "created"
    assert timeline["items"][-1]["to_state"] == "closed"
    assert SURVIVOR not in str(timeline)
    log = auditor.get("/audit/access-log", case_code=code, limit=200)["items"]
    assert {"disclosed.read", "referral.read"} <= {e["action"] for e in log}
    assert all(e["outcome"] == "granted" for e in log)
    report = auditor.get("/audit/compliance", group_by="agency")
    receiver = next(g for g in report["rows"] if g["group"] == RECEIVER)
    assert receiver["missed"] >= 1
    assert receiver["escalations"] >= 1

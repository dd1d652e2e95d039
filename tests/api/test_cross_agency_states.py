"""Three agencies, each acting on the others' referrals, in every state, with every role.

TH-NGO-A and TH-NGO-Z each manage a referral on the teaching corridor (example.corridor,
Thailand to Lao PDR); both are sent to LA-SW-B. The two referrals are moved along side by
side, intake to closure. In every state, every user of the two agencies that do not manage a
referral (caseworker, supervisor and focal point of each, and the SOP-wide coordinator and
auditor) fires every event of the SOP on it, with a body that would pass every other check
(facts the event may set, their own agency as the recipient, a decline reason), and calls
every route of the permission table with its ids. Whatever the SOP does not give the
caller's agency slot in that state must be refused, and must change nothing: not the state,
not the version, not the agencies the referral is sent to. The receiving agency reads only
what was disclosed to it; the other Thai agency, nothing at all.

Regression: a receiving agency could revoke the sender's handoff, overwrite its facts,
close its case and send it on to a third agency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.permissions import PERMISSIONS
from api.users import create_user
from sop_engine.language.spec import SopSpec, TransitionSpec
from sop_engine.runtime.access import may_fire
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body
from .journey import ASSESSMENT

MANAGERS = ("TH-NGO-A", "TH-NGO-Z")
RECEIVER = "LA-SW-B"
TYPES = {"TH-NGO-A": ("ngo",), "TH-NGO-Z": ("ngo",), RECEIVER: ("government_social_welfare",)}
AGENCY_ROLES = ("caseworker", "supervisor", "agency_focal_point")
PATH = (
    ("record_consent", {"facts": {"safe_contact_method": "text_message"}}),
    ("complete_assessment", {"facts": ASSESSMENT}),
    ("refer_for_return", {"recipient_agency_id": RECEIVER}),
    ("return_referral.acknowledge", None),
    ("return_referral.accept", None),
    ("return_referral.deliver", {"outcome": "successful"}),
    ("close", None),
)
"""The main path; the receiver's answers are fired by the receiver, the rest by the manager."""

RECEIVER_MAY = {
    "return_referral.sent": {"return_referral.acknowledge", "return_referral.decline"},
    "return_referral.acknowledged": {"return_referral.accept", "return_referral.decline"},
    "return_referral.accepted": {"return_referral.deliver"},
    "follow_up": {"report_reintegration"},
}
"""What the SOP gives the receiving agency's focal point, by state, written out by hand (the
oracle: not asked of the code under test). No one else but the managing agency may fire
anything."""


@dataclass(frozen=True)
class Person:
    who: str
    role: str
    agency: str | None

    def actor(self) -> Actor:
        return Actor(self.who, self.role, self.agency, TYPES.get(self.agency or "", ()))


@pytest.fixture
def people(runtime: Runtime) -> dict[str, Person]:
    found = {}
    for agency in (*MANAGERS, RECEIVER):
        for role in AGENCY_ROLES:
            found[f"{role}@{agency}"] = Person(f"{role}@{agency}", role, agency)
    found["coordinator"] = Person("coordinator", "coordinator", None)
    found["auditor"] = Person("auditor", "auditor", None)
    return found


@pytest.fixture
def tokens(runtime: Runtime, people: dict[str, Person]) -> Users:
    return Users(
        {
            p.who: create_user(runtime.db, p.who.replace("@", "-"), p.role, p.agency).token
            for p in people.values()
        }
    )


def _value(spec: SopSpec, name: str) -> Any:
    fact = spec.facts[name]
    return {
        "enum": fact.values[0] if fact.values else "x",
        "integer": int(fact.min or 1),
        "number": float(fact.min or 1),
        "boolean": True,
        "date": date(2026, 3, 9).isoformat(),
        "datetime": datetime(2026, 3, 9, 1, 0).isoformat() + "Z",
        "list": ["x"],
    }.get(fact.type, "synthetic value")


def _attack(spec: SopSpec, ts: tuple[TransitionSpec, ...], agency: str | None) -> dict[str, Any]:
    """A body that would pass every check but who may fire: facts it may set, the caller's
    own agency as the recipient, a reason for a decline."""
    sets = {f for t in ts for f in t.sets}
    body: dict[str, Any] = {"facts": {f: _value(spec, f) for f in sorted(sets)}}
    if any(t.discloses is not None for t in ts) and agency is not None:
        body["recipient_agency_id"] = agency
    if any(t.action == "decline" for t in ts):
        body["reason"] = "no_capacity"
    return body


def _ids(client: TestClient, tokens: Users, manager: str, code: str) -> dict[str, str]:
    """The ids hanging on a referral, as its managing caseworker sees them."""
    auth = tokens.auth(f"caseworker@{manager}")
    grants = client.get(f"/referrals/{code}/consents", headers=auth).json()["items"]
    tasks = client.get("/tasks", params={"status": "any"}, headers=auth).json()["items"]
    mine = [t["id"] for t in tasks if t["case_code"] == code]
    return {
        "case_code": code,
        "grant_id": grants[0]["id"] if grants else "no-grant",
        "task_id": mine[0] if mine else "no-task",
        "notice_id": "1",
        "event": "close",
        "key": "example.corridor",
        "version": "1",
        "agency_id": RECEIVER,
        "clock": "medical_follow_up",
    }


def _replay_routes(
    client: TestClient, tokens: Users, person: Person, ids: dict[str, str], manager: str
) -> None:
    """Every route with the referral's ids: writes on it refused; reads show the caller no
    more than its agency may see."""
    for (method, template), _roles in sorted(PERMISSIONS.items()):
        names = re.findall(r"\{(\w+)\}", template)
        if not {"case_code", "grant_id", "task_id"} & set(names) or "event" in names:
            continue  # not about a referral; or every event, fired above
        path = template.format(**{n: ids[n] for n in names})
        body = {"reason": "no_capacity"} if path.endswith("/decline") else {}
        if template.endswith("/consents") and method == "POST":
            body = {"scope": "cross_border_return", "given_by": "survivor"}
        if template.endswith("/reopen"):
            body = {"reason": "survivor_returned"}
        if template.endswith("/transfer"):
            body = {"to_agency_id": person.agency or RECEIVER}
        elif template.endswith("/waive"):
            body = {"reason": "survivor_declined"}
        if template.endswith("/incident-time"):
            body = {"incident_at": "2026-03-01T01:00:00Z", "reason": "data_entry_error"}
        r = client.request(method, path, json=body or None, headers=tokens.auth(person.who))
        where = f"{method} {path} as {person.who} on {manager}'s referral"
        assert r.status_code < 500, f"{where}: {r.status_code} {r.text}"
        assert SURVIVOR not in r.text, f"{where} leaked the survivor's name"
        if method != "GET" or person.agency in MANAGERS:
            assert r.status_code in (403, 404), f"{where}: {r.status_code} {r.text}"


def _check_receivers_view(
    client: TestClient, runtime: Runtime, tokens: Users, code: str, who: str
) -> None:
    r = client.get(f"/referrals/{code}", headers=tokens.auth(who))
    if r.status_code == 404:
        return  # not sent yet: the receiver takes no part
    assert r.status_code == 200, r.text
    held = runtime.disclosed_fields(code, RECEIVER)
    assert set(r.json()["facts"]) <= set(held.readable), r.text
    assert set(r.json()["agencies"].values()) <= {RECEIVER, r.json()["owner_agency_id"]}


def test_no_agency_acts_beyond_its_slot_in_any_state(
    client: TestClient, runtime: Runtime, people: dict[str, Person], tokens: Users
) -> None:
    spec = runtime.library.get("example.corridor", 1).spec
    codes = {}
    for manager in MANAGERS:
        r = client.post("/referrals", json=referral_body(),
                        headers=tokens.auth(f"caseworker@{manager}"))  # fmt: skip
        assert r.status_code == 201, r.text
        codes[manager] = r.json()["case_code"]
        for scope in ("case_management", "cross_border_return", "feedback_to_case_agency"):
            body = {"scope": scope, "given_by": "survivor"}
            if scope == "cross_border_return":
                body["recipient_agency_id"] = RECEIVER
            url = f"/referrals/{codes[manager]}/consents"
            g = client.post(url, json=body, headers=tokens.auth(f"caseworker@{manager}"))
            assert g.status_code == 201, g.text
    refused = 0
    for step, (event, payload) in enumerate((*PATH, (None, None))):
        for manager, code in codes.items():
            before = runtime.read_referral(code)
            ids = _ids(client, tokens, manager, code)
            for person in people.values():
                if person.agency == manager:
                    continue
                actor = person.actor()
                for name in spec.events:
                    ts = spec.transitions_for(before.state, name)
                    if not ts:
                        continue  # the state machine refuses it to everyone (409)
                    given = person.who == f"agency_focal_point@{RECEIVER}" and name in (
                        RECEIVER_MAY.get(before.state, set())
                    )
                    if given:
                        assert any(may_fire(spec, t, actor, before.owner_agency_id,
                                            before.agencies) for t in ts)  # fmt: skip
                        continue  # the SOP gives it to this agency here: not an attack
                    r = client.post(
                        f"/referrals/{code}/events/{name}",
                        json=_attack(spec, ts, person.agency),
                        headers=tokens.auth(person.who),
                    )
                    where = f"{name} in {before.state} by {person.who} on {manager}'s referral"
                    assert r.status_code in (403, 404), f"{where}: {r.status_code} {r.text}"
                    refused += 1
                _replay_routes(client, tokens, person, ids, manager)
            after = runtime.read_referral(code)
            assert (after.state, after.version, after.agencies, after.facts) == (
                before.state,
                before.version,
                before.agencies,
                before.facts,
            ), f"someone changed {manager}'s referral in {before.state}"
            _check_receivers_view(client, runtime, tokens, code, f"agency_focal_point@{RECEIVER}")
            if event is None:
                continue
            fired_by = (
                f"agency_focal_point@{RECEIVER}"
                if event.startswith("return_referral.")
                else f"caseworker@{manager}"
            )
            r = client.post(
                f"/referrals/{code}/events/{event}", json=payload, headers=tokens.auth(fired_by)
            )
            assert r.status_code == 200, f"step {step} {event}: {r.text}"
    assert refused > 300
    for code in codes.values():
        assert runtime.read_referral(code).state == "closed"

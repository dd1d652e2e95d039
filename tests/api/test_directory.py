"""The service directory through the API: everyone reads it, coordinators add agencies and
replace entries, checked by the directory's own rules; managed entries outlive a restart and
reach the worker's dispatch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.app import create_app
from api.permissions import PERMISSIONS
from api.users import create_user
from notifications.dispatch import find_recipient
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.directory.managed import load_managed_directory
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime

from .conftest import SOPS, Users, referral_body
from .journey import grant, to_action_plan

DIRECTORY = SOPS / "directory"

NEW_ID = "TH-SYN-HELPDESK-NAN"
LAO_ID = "LA-SYN-HELPDESK-NAN"


def new_agency(**changes: Any) -> dict[str, Any]:
    """A synthetic agency the shipped directory does not list."""
    entry: dict[str, Any] = {
        "name": "Synthetic Help Desk N (Nan)",
        "country": "TH",
        "province": "Nan",
        "agency_types": ["ngo"],
        "services": ["psychosocial_support", "case_management"],
        "languages": ["th", "lo"],
        "corridors": ["TH-LA"],
        "contact_channel": "email",
        "contact_address": "intake@helpdesk-n.th-syn.example",
        "accepts_new_cases": True,
        "source": "synthetic",
        "last_verified": "2026-01-15",
        "synthetic": True,
    }
    entry.update(changes)
    return entry


@pytest.fixture(scope="module")
def shipped() -> ServiceDirectory:
    return load_directory(DIRECTORY)


@pytest.fixture
def client(runtime: Runtime, shipped: ServiceDirectory) -> Iterator[TestClient]:
    app = create_app(runtime, sop_paths=[SOPS], directory=shipped)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def put(
    client: TestClient, users: Users, agency_id: str, entry: dict[str, Any], **headers: str
) -> Any:
    return client.put(
        f"/directory/agencies/{agency_id}",
        json=entry,
        headers={**headers, **users.auth("coordinator")},
    )


def ids(page: dict[str, Any]) -> list[str]:
    return [item["agency"]["id"] for item in page["items"]]


def managed_rows(db: Engine) -> int:
    with db.connect() as conn:
        count: int = conn.execute(
            select(func.count()).select_from(tables.managed_agencies)
        ).scalar_one()
        return count


def test_the_list_filters_like_the_directory_and_pages_by_id(
    client: TestClient, users: Users, shipped: ServiceDirectory
) -> None:
    reader = users.auth("focal_point")
    r = client.get("/directory/agencies?country=LA&service=repatriation", headers=reader)
    assert r.status_code == 200
    assert ids(r.json()) == ["LA-MLSW", "LA-SYN-TRANSIT-VIENTIANE"]
    assert all(item["managed"] is False for item in r.json()["items"])

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"country": "TH", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/directory/agencies", params=params, headers=reader).json()
        assert len(page["items"]) <= 3
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = sorted(a.id for a in shipped.find(country="TH", accepting_only=False))
    assert seen == expected
    assert len(expected) > 3


def test_accepting_leaves_out_agencies_taking_no_new_cases(
    client: TestClient, users: Users
) -> None:
    reader = users.auth("caseworker")
    everyone = ids(client.get("/directory/agencies?corridor=TH-MM", headers=reader).json())
    accepting = ids(
        client.get("/directory/agencies?corridor=TH-MM&accepting=true", headers=reader).json()
    )
    assert "TH-SYN-SHELTER-RANONG" in everyone
    assert "TH-SYN-SHELTER-RANONG" not in accepting
    assert set(accepting) < set(everyone)


def test_an_unknown_filter_word_is_refused_with_a_did_you_mean(
    client: TestClient, users: Users
) -> None:
    r = client.get("/directory/agencies?service=repatriaton", headers=users.auth("auditor"))
    assert r.status_code == 422
    assert r.json()["field"] == "service"
    assert "did you mean 'repatriation'" in r.json()["message"]
    r = client.get("/directory/agencies?cursor=%%%", headers=users.auth("auditor"))
    assert r.status_code == 422


def test_an_agency_of_the_files_reads_as_not_managed(client: TestClient, users: Users) -> None:
    r = client.get("/directory/agencies/TH-MSDHS", headers=users.auth("supervisor"))
    assert r.status_code == 200
    assert r.headers["ETag"] == '"0"'
    record = r.json()
    assert record["managed"] is False
    assert record["revision"] == 0
    assert record["agency"]["contact_channel"] == "phone"
    assert record["agency"]["contact_address"] is None
    missing = client.get("/directory/agencies/TH-MSDH", headers=users.auth("supervisor"))
    assert missing.status_code == 404
    assert "did you mean 'TH-MSDHS'" in missing.json()["message"]


def test_put_adds_an_agency_that_reads_back_as_written(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    r = put(client, users, NEW_ID, new_agency())
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/directory/agencies/{NEW_ID}"
    assert r.headers["ETag"] == '"1"'

    record = client.get(f"/directory/agencies/{NEW_ID}", headers=users.auth("caseworker")).json()
    assert record["managed"] is True
    assert record["revision"] == 1
    assert record["updated_at"] is not None
    written = {k: v for k, v in record["agency"].items() if v not in (None, [], "", False)}
    assert written == {**new_agency(), "id": NEW_ID, "accepts_new_cases": True, "synthetic": True}
    listed = client.get(
        "/directory/agencies?country=TH&corridor=TH-LA", headers=users.auth("auditor")
    )
    assert NEW_ID in ids(listed.json())

    # What GET answers is what PUT takes back.
    again = put(client, users, NEW_ID, {**record["agency"], "note": "Checked again."})
    assert again.status_code == 200, again.text
    assert again.json()["revision"] == 2
    assert again.json()["agency"]["note"] == "Checked again."
    assert managed_rows(runtime.db) == 1


def test_accepts_new_cases_false_stops_new_referrals_to_a_files_agency(
    client: TestClient, users: Users
) -> None:
    tak = client.get("/directory/agencies/TH-SYN-SHELTER-TAK", headers=users.auth("coordinator"))
    entry = {**tak.json()["agency"], "accepts_new_cases": False}
    r = put(client, users, "TH-SYN-SHELTER-TAK", entry)
    assert r.status_code == 200, r.text  # the id was known: replaced, not created
    assert r.json()["managed"] is True
    accepting = client.get(
        "/directory/agencies?corridor=TH-MM&accepting=true", headers=users.auth("caseworker")
    )
    assert "TH-SYN-SHELTER-TAK" not in ids(accepting.json())
    every = client.get("/directory/agencies?corridor=TH-MM", headers=users.auth("caseworker"))
    assert "TH-SYN-SHELTER-TAK" in ids(every.json())


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        (new_agency(colour="red"), "colour", "Extra inputs"),
        (new_agency(services=["clinical_care", "shelterz"]), "services.1", "unknown service"),
        (new_agency(accepts_new_cases="yes"), "accepts_new_cases", "boolean"),
        (new_agency(corridors=["VN-KH"]), "corridors", "not through TH"),
        (new_agency(corridors=["TH-XX"]), "corridors", "unknown corridor 'TH-XX'"),
        (new_agency(corridors=["thla"]), "corridors.0", "corridor code"),
        (new_agency(last_verified="2999-01-01"), "last_verified", "in the future"),
        (new_agency(last_verified="2026-02-30"), "last_verified", "not a calendar date"),
        (new_agency(contact_address="intake@gmail.com"), "contact_address", "reserved domain"),
        (new_agency(contact_channel="phone"), "contact_address", "takes no address"),
        (new_agency(country="LA"), "id", "must start with the entry's country"),
        (new_agency(country="XX"), "country", "unknown country"),
        (new_agency(id="TH-SYN-OTHER"), "id", "differs"),
        (new_agency(synthetic=False, source="A public source"), "synthetic", "says synthetic"),
        ({k: v for k, v in new_agency().items() if k != "name"}, "name", "Field required"),
    ],
)
def test_an_entry_breaking_the_directorys_rules_is_refused_naming_its_field(
    client: TestClient,
    users: Users,
    runtime: Runtime,
    entry: dict[str, Any],
    field: str,
    words: str,
) -> None:
    r = put(client, users, NEW_ID, entry)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert field in fields, body
    assert words in fields[field]
    assert managed_rows(runtime.db) == 0
    assert (
        client.get(f"/directory/agencies/{NEW_ID}", headers=users.auth("auditor")).status_code
        == 404
    )


def test_a_real_body_carries_no_contact_address(client: TestClient, users: Users) -> None:
    real = {
        **client.get("/directory/agencies/LA-MLSW", headers=users.auth("coordinator")).json()[
            "agency"
        ],
        "contact_channel": "email",
        "contact_address": "focal@mlsw.example",
    }
    r = put(client, users, "LA-MLSW", real)
    assert r.status_code == 422
    assert r.json()["field"] == "contact_address"
    assert "real body carries only its contact_channel" in r.json()["message"]


def test_an_id_of_a_hotline_or_border_point_is_taken(client: TestClient, users: Users) -> None:
    r = put(client, users, "TH-HOTLINE-1300", new_agency(name="Synthetic Hotline Desk"))
    assert r.status_code == 422
    assert any("id of a hotline" in e["message"] for e in r.json()["errors"])


def test_if_match_refuses_a_change_made_on_a_stale_read(client: TestClient, users: Users) -> None:
    assert put(client, users, NEW_ID, new_agency(), **{"If-Match": '"0"'}).status_code == 201
    assert put(client, users, NEW_ID, new_agency(), **{"If-Match": '"1"'}).status_code == 200
    stale = put(client, users, NEW_ID, new_agency(note="late"), **{"If-Match": '"1"'})
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    assert put(client, users, NEW_ID, new_agency(), **{"If-Match": "two"}).status_code == 422


def test_managed_entries_outlive_a_restart_and_reach_the_workers_dispatch(
    client: TestClient, users: Users, runtime: Runtime, shipped: ServiceDirectory
) -> None:
    assert put(client, users, NEW_ID, new_agency()).status_code == 201
    tak = client.get("/directory/agencies/TH-SYN-SHELTER-TAK", headers=users.auth("coordinator"))
    changed = {**tak.json()["agency"], "contact_address": "moved@shelter-a.th-syn.example"}
    assert put(client, users, "TH-SYN-SHELTER-TAK", changed).status_code == 200

    restarted = create_app(runtime, sop_paths=[SOPS], directory=load_directory(DIRECTORY))
    with TestClient(restarted) as again:
        r = again.get(f"/directory/agencies/{NEW_ID}", headers=users.auth("caseworker"))
        assert r.status_code == 200
        assert r.json()["managed"] is True

    # The worker's dispatch reads addresses from the same overlay.
    directory = load_managed_directory(runtime.db, DIRECTORY)
    recipient = find_recipient(directory, NEW_ID, "referral_received")
    assert (recipient.channel, recipient.address) == ("email", "intake@helpdesk-n.th-syn.example")
    moved = find_recipient(directory, "TH-SYN-SHELTER-TAK", "referral_received")
    assert moved.address == "moved@shelter-a.th-syn.example"
    assert shipped.agency("TH-SYN-SHELTER-TAK").contact_address != moved.address


def test_the_workers_delivery_from_the_settings_holds_managed_entries(
    client: TestClient,
    users: Users,
    runtime: Runtime,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sop_engine.settings import get_settings
    from workflows import runtime as flow_parts

    assert put(client, users, NEW_ID, new_agency()).status_code == 201
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SOP_ENGINE_DIRECTORY_DIR", raising=False)
    monkeypatch.delenv("SOP_ENGINE_SOP_DIR", raising=False)
    get_settings.cache_clear()
    flow_parts._delivery_from_settings.cache_clear()
    try:
        delivery = flow_parts._delivery_from_settings(runtime.db)
        assert delivery.directory.agency(NEW_ID).contact_address == (
            "intake@helpdesk-n.th-syn.example"
        )
    finally:
        flow_parts._delivery_from_settings.cache_clear()
        get_settings.cache_clear()


ROUTES = [
    ("GET", "/directory/agencies", "/directory/agencies"),
    ("GET", f"/directory/agencies/{NEW_ID}", "/directory/agencies/{agency_id}"),
    ("PUT", f"/directory/agencies/{NEW_ID}", "/directory/agencies/{agency_id}"),
]
ROLES = {
    "coordinator": "coordinator",
    "auditor": "auditor",
    "caseworker": "caseworker",
    "supervisor": "supervisor",
    "focal_point": "agency_focal_point",
}


@pytest.mark.parametrize(("method", "path", "template"), ROUTES)
@pytest.mark.parametrize("who", sorted(ROLES))
def test_each_directory_route_admits_exactly_the_roles_of_the_table(
    client: TestClient, users: Users, method: str, path: str, template: str, who: str
) -> None:
    assert put(client, users, NEW_ID, new_agency()).status_code == 201
    body = new_agency(note="changed") if method == "PUT" else None
    r = client.request(method, path, json=body, headers=users.auth(who))
    if ROLES[who] in PERMISSIONS[(method, template)]:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403, r.text
    assert client.request(method, path, json=body).status_code == 401


def test_everyone_reads_the_directory_and_only_coordinators_change_it() -> None:
    readers = PERMISSIONS[("GET", "/directory/agencies")]
    assert readers == set(ROLES.values())
    assert PERMISSIONS[("GET", "/directory/agencies/{agency_id}")] == readers
    assert PERMISSIONS[("PUT", "/directory/agencies/{agency_id}")] == {"coordinator"}


def test_sop_engine_serve_refuses_a_managed_entry_that_does_not_fit(
    runtime: Runtime,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row the API would have refused (written by hand, or valid under older files) stops
    the start with the report, as a broken directory file does."""
    from datetime import UTC, datetime

    from cli.serve import ServeError, build_app
    from sop_engine.settings import get_settings

    now = datetime(2026, 1, 20, tzinfo=UTC)
    with runtime.db.begin() as conn:
        conn.execute(
            tables.managed_agencies.insert().values(
                id=NEW_ID,
                entry={**new_agency(corridors=["TH-QQ"]), "id": NEW_ID},
                revision=1,
                created_by="u-1",
                created_at=now,
                updated_by="u-1",
                updated_at=now,
            )
        )
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", sqlite_url)
    for name in ("SOP_ENGINE_SOP_DIR", "SOP_ENGINE_DIRECTORY_DIR", "SOP_ENGINE_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ServeError) as caught:
            build_app()
    finally:
        get_settings.cache_clear()
    message = str(caught.value)
    assert "service directory" in message
    assert f"managed agency {NEW_ID}" in message
    assert "unknown corridor 'TH-QQ'" in message


@pytest.mark.parametrize(("types", "allowed"), [(["health"], False), (["ngo"], True)])
def test_the_directory_gives_api_users_their_agencys_types(
    client: TestClient, users: Users, runtime: Runtime, types: list[str], allowed: bool
) -> None:
    """example.baseline's caseworker belongs at an NGO or a social welfare office: a
    caseworker whose agency the directory lists as a health agency may not act as one."""
    assert put(client, users, NEW_ID, new_agency(agency_types=types)).status_code == 201
    token = create_user(runtime.db, "cw-nan", "caseworker", NEW_ID).token
    auth = {"Authorization": f"Bearer {token}"}
    body = {"sop_key": "example.corridor", "origin_country": "TH", "destination_country": "LA",
            "facts": {"survivor_age": 30}}  # fmt: skip
    code = client.post("/referrals", json=body, headers=auth).json()["case_code"]
    grant: dict[str, str] = {"scope": "case_management", "given_by": "survivor"}
    r = client.post(f"/referrals/{code}/consents", json=grant, headers=auth)
    if not allowed:  # consent to the managing agency names it: it cannot be the case agency
        assert r.status_code == 422, r.text
        assert "cannot be 'case_agency'" in r.json()["message"]
        grant["recipient_agency_type"] = "ngo"
        r = client.post(f"/referrals/{code}/consents", json=grant, headers=auth)
    assert r.status_code == 201, r.text
    fire = {"facts": {"safe_contact_method": "text_message"}}
    r = client.post(f"/referrals/{code}/events/record_consent", json=fire, headers=auth)
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403
        assert r.json()["error"] == "role_not_allowed"
        assert "type health" in r.json()["message"]


@pytest.mark.parametrize("accepting", [False, True])
def test_a_referral_is_not_sent_to_an_agency_that_takes_no_new_cases(
    client: TestClient, users: Users, runtime: Runtime, accepting: bool
) -> None:
    entry = new_agency(
        agency_types=["government_social_welfare"],
        accepts_new_cases=accepting,
        country="LA",
        province="Vientiane Capital",
        contact_address="intake@helpdesk-n.la-syn.example",
    )
    assert put(client, users, LAO_ID, entry).status_code == 201, entry
    code = client.post("/referrals", json=referral_body(), headers=users.auth("caseworker")).json()[
        "case_code"
    ]
    to_action_plan(client, users, code)
    grant(client, users, code, "cross_border_return")
    r = client.post(
        f"/referrals/{code}/events/refer_for_return",
        json={"recipient_agency_id": LAO_ID},
        headers=users.auth("caseworker"),
    )
    if accepting:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "recipient_agency_id"
        assert runtime.read_referral(code).state == "action_plan"

"""Coordinators upload SOPs as drafts, replace them, publish them; published versions are live
at once, never change, and are there again after a restart, for the API and the worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.app import create_app
from api.permissions import PERMISSIONS
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.language.published import PublishedLibrary, PublishedSources, load_library
from sop_engine.persistence.models import SopSource
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

from .conftest import SOPS, Users, referral_body
from .journey import ASSESSMENT, grant

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

VERSION_2 = """\
key: example.corridor
version: 2
extends: example.corridor@1
title: Example return corridor, version 2 (uploaded)
"""
"""A new version of a file's SOP, built on the file's version 1."""

CHILD = """\
key: example.corridor-child
version: 1
extends: example.corridor@2
title: Example corridor built on a published upload
"""
"""An SOP that extends a version only the database holds."""

YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(sqlite_engine: Engine, library: SopLibrary, clock: ManualClock) -> Runtime:
    """A runtime of its own library (a copy of the shipped one): publishing adds to it, and
    the session's library must stay as shipped for the other tests."""
    keyring = MasterKeyring(MasterKey.generate("test"))
    return Runtime(
        sqlite_engine, SopLibrary(list(library)), keyring, clock, directory=agency_directory()
    )


def upload(
    client: TestClient, users: Users, text: str | bytes, **headers: str
) -> dict[str, object]:
    r = client.post("/sops", content=text, headers={**YAML, **headers, **users.auth("coordinator")})
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


def publish(client: TestClient, users: Users, ref: str, **headers: str) -> dict[str, object]:
    key, _, version = ref.partition("@")
    r = client.post(
        f"/sops/{key}/{version}/publish", headers={**headers, **users.auth("coordinator")}
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def stored_rows(db: Engine) -> int:
    with db.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(SopSource)).scalar_one()
        return count


def test_a_valid_upload_is_a_draft_that_is_listed_but_not_live(
    client: TestClient, users: Users
) -> None:
    report = upload(client, users, VERSION_2)
    assert report["valid"] is True
    assert report["sop"] == "example.corridor@2"
    assert report["problems"] == []
    assert report["replayed"] is False
    draft = report["draft"]
    assert isinstance(draft, dict)
    assert draft["status"] == "draft"
    assert draft["title"] == "Example return corridor, version 2 (uploaded)"
    assert draft["published_at"] is None

    listed = client.get("/sops/drafts", headers=users.auth("auditor")).json()
    assert [(d["key"], d["version"]) for d in listed["items"]] == [("example.corridor", 2)]
    source = client.get("/sops/example.corridor/2/source", headers=users.auth("auditor"))
    assert source.json()["source"] == VERSION_2
    assert source.json()["status"] == "draft"

    live = client.get("/sops", headers=users.auth("coordinator")).json()
    assert ("example.corridor", 2) not in {(s["key"], s["version"]) for s in live}
    assert (
        client.get("/sops/example.corridor/2", headers=users.auth("coordinator")).status_code == 404
    )
    r = client.post(
        "/referrals", json=referral_body(sop_version=2), headers=users.auth("caseworker")
    )
    assert r.status_code == 404


def test_an_invalid_upload_gets_every_problem_with_its_line_and_is_stored_nowhere(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    broken = VERSION_2 + "states:\n  intake:\n    deadlines:\n      assign: {aftr: 2h}\n"
    r = client.post("/sops", content=broken, headers={**YAML, **users.auth("coordinator")})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "definition_error"
    assert {(p["file"], p["line"]) for p in body["problems"]} == {("upload.sop.yaml", 8)}
    assert "aftr" in body["problems"][0]["message"]
    # The same report as /sops/validate gives.
    report = client.post(
        "/sops/validate", content=broken, headers={**YAML, **users.auth("coordinator")}
    ).json()
    assert report["valid"] is False
    assert report["problems"] == body["problems"]

    for text in (b"key: [unclosed\n", b"", b"\xff\xfe\x00garbage", b"key: x\nkey: y\n"):
        r = client.post("/sops", content=text, headers={**YAML, **users.auth("coordinator")})
        assert r.status_code == 422, text
        assert r.json()["problems"], text
    assert stored_rows(runtime.db) == 0
    assert client.get("/sops/drafts", headers=users.auth("coordinator")).json()["items"] == []


def test_a_draft_is_replaced_by_a_new_upload_of_its_version(
    client: TestClient, users: Users
) -> None:
    first = upload(client, users, VERSION_2)
    second = upload(client, users, VERSION_2.replace("(uploaded)", "(uploaded again)"))
    assert first["draft"] != second["draft"]
    drafts = client.get("/sops/drafts", headers=users.auth("coordinator")).json()["items"]
    assert len(drafts) == 1
    assert drafts[0]["title"] == "Example return corridor, version 2 (uploaded again)"


def test_publishing_makes_the_version_live_for_new_referrals_and_older_ones_keep_working(
    client: TestClient, users: Users, case_code: str, clock: ManualClock
) -> None:
    upload(client, users, VERSION_2)
    clock.advance(timedelta(minutes=5))
    answer = publish(client, users, "example.corridor@2")
    assert answer["sop"] == "example.corridor@2"
    published = answer["published"]
    assert isinstance(published, dict)
    assert published["status"] == "published"
    assert published["published_at"] == "2026-03-02T01:35:00Z"

    coordinator = users.auth("coordinator")
    assert client.get("/sops/example.corridor/2", headers=coordinator).status_code == 200
    assert (
        "stateDiagram-v2"
        in client.get("/sops/example.corridor/2/diagram", headers=coordinator).text
    )
    assert client.get("/sops/drafts", headers=coordinator).json()["items"] == []

    r = client.post(
        "/referrals", json=referral_body(sop_version=2), headers=users.auth("caseworker")
    )
    assert r.status_code == 201, r.text
    assert r.json()["sop_version"] == 2
    # Without a version, a new referral takes the latest: the published one.
    body = referral_body()
    del body["sop_version"]
    r = client.post("/referrals", json=body, headers=users.auth("caseworker"))
    assert r.json()["sop_version"] == 2
    # A referral pinned to version 1 still moves, as version 1 says: consent, then
    # intake to assessment to action_plan, and it stays on version 1.
    caseworker = users.auth("caseworker")
    events = f"/referrals/{case_code}/events"
    grant(client, users, case_code, "case_management")
    r = client.post(
        f"{events}/record_consent",
        json={"facts": {"safe_contact_method": "text_message"}},
        headers=caseworker,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["from_state"], r.json()["state"]) == ("intake", "assessment")
    r = client.post(f"{events}/complete_assessment", json={"facts": ASSESSMENT}, headers=caseworker)
    assert r.status_code == 200, r.text
    assert (r.json()["from_state"], r.json()["state"]) == ("assessment", "action_plan")
    referral = client.get(f"/referrals/{case_code}", headers=caseworker).json()
    assert referral["state"] == "action_plan"
    assert referral["sop_version"] == 1
    assert referral["facts"]["risk_level"] == ASSESSMENT["risk_level"]
    assert referral["facts"]["service_needed"] == ASSESSMENT["service_needed"]


def test_a_published_version_never_changes(client: TestClient, users: Users) -> None:
    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    coordinator = {**YAML, **users.auth("coordinator")}

    again = client.post("/sops/example.corridor/2/publish", headers=coordinator)
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert "new version" in again.json()["message"]
    changed = VERSION_2.replace("(uploaded)", "(changed)")
    assert client.post("/sops", content=changed, headers=coordinator).status_code == 409
    # A version written in the files is published too.
    file_text = (SOPS / "examples" / "example.corridor.sop.yaml").read_text()
    assert client.post("/sops", content=file_text, headers=coordinator).status_code == 409
    assert client.post("/sops/example.corridor/1/publish", headers=coordinator).status_code == 409


def test_publishing_without_a_draft_is_404(client: TestClient, users: Users) -> None:
    r = client.post("/sops/example.corridor/7/publish", headers=users.auth("coordinator"))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_an_upload_may_extend_a_published_version(client: TestClient, users: Users) -> None:
    coordinator = {**YAML, **users.auth("coordinator")}
    early = client.post("/sops", content=CHILD, headers=coordinator)
    assert early.status_code == 422  # its parent is not published yet
    assert "example.corridor@2" in early.text

    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    report = client.post("/sops/validate", content=CHILD, headers=coordinator).json()
    assert report == {"valid": True, "sop": "example.corridor-child@1", "problems": []}
    upload(client, users, CHILD)
    publish(client, users, "example.corridor-child@1")
    r = client.post(
        "/referrals",
        json=referral_body(sop_key="example.corridor-child", sop_version=1),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 201, r.text


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(
    client: TestClient, users: Users, clock: ManualClock
) -> None:
    first = upload(client, users, VERSION_2, **{"Idempotency-Key": "up-1"})
    clock.advance(timedelta(minutes=1))
    retry = upload(client, users, VERSION_2, **{"Idempotency-Key": "up-1"})
    assert retry["replayed"] is True
    assert retry["draft"] == first["draft"]

    other = client.post(
        "/sops",
        content=VERSION_2.replace("(uploaded)", "(other)"),
        headers={**YAML, "Idempotency-Key": "up-1", **users.auth("coordinator")},
    )
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"

    published = publish(client, users, "example.corridor@2", **{"Idempotency-Key": "pub-1"})
    again = publish(client, users, "example.corridor@2", **{"Idempotency-Key": "pub-1"})
    assert again["replayed"] is True
    assert again["published"] == published["published"]
    without_key = client.post("/sops/example.corridor/2/publish", headers=users.auth("coordinator"))
    assert without_key.status_code == 409


def new_app(db: Engine, library: SopLibrary, clock: ManualClock) -> TestClient:
    runtime = Runtime(
        db, library, MasterKeyring(MasterKey.generate("test")), clock, directory=agency_directory()
    )
    return TestClient(create_app(runtime, sop_paths=[SOPS]), raise_server_exceptions=False)


def test_a_restart_loads_the_published_versions_and_not_the_drafts(
    client: TestClient, users: Users, runtime: Runtime, clock: ManualClock
) -> None:
    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    upload(client, users, CHILD)

    restarted = load_library(runtime.db, [SOPS])
    assert isinstance(restarted, PublishedLibrary)
    assert restarted.get("example.corridor", 2).spec.title.endswith("(uploaded)")
    with new_app(runtime.db, restarted, clock) as again:
        assert (
            again.get("/sops/example.corridor/2", headers=users.auth("auditor")).status_code == 200
        )
        refs = {
            (s["key"], s["version"])
            for s in again.get("/sops", headers=users.auth("auditor")).json()
        }
        assert ("example.corridor", 2) in refs
        assert ("example.corridor-child", 1) not in refs
        r = again.post(
            "/referrals", json=referral_body(sop_version=2), headers=users.auth("caseworker")
        )
        assert r.status_code == 201, r.text


def test_another_process_finds_a_version_published_after_it_started(
    client: TestClient, users: Users, runtime: Runtime, library: SopLibrary, clock: ManualClock
) -> None:
    """Several API processes share one database: the one asked for a version another one
    published looks in the database instead of answering 404."""
    sources = PublishedSources(runtime.db, [SOPS])
    other = PublishedLibrary(list(library), sources=sources)
    with new_app(runtime.db, other, clock) as elsewhere:
        upload(client, users, VERSION_2)
        publish(client, users, "example.corridor@2")
        r = elsewhere.post(
            "/referrals", json=referral_body(sop_version=2), headers=users.auth("caseworker")
        )
        assert r.status_code == 201, r.text
        assert ("example.corridor", 2) in {
            (s["key"], s["version"])
            for s in elsewhere.get("/sops", headers=users.auth("auditor")).json()
        }


def test_referrals_on_a_published_version_escalate_in_a_worker_started_afterwards(
    client: TestClient, users: Users, runtime: Runtime, clock: ManualClock
) -> None:
    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    r = client.post(
        "/referrals", json=referral_body(sop_version=2), headers=users.auth("caseworker")
    )
    assert r.status_code == 201, r.text

    worker = Runtime(
        runtime.db,
        load_library(runtime.db, [SOPS]),
        runtime.services.keyring,
        clock,
        directory=agency_directory(),
    )
    clock.advance(timedelta(days=3))
    outcomes = worker.sweep()
    assert outcomes
    assert {o.outcome for o in outcomes} == {"escalated"}
    assert {o.case_code for o in outcomes} == {r.json()["case_code"]}


def test_the_workers_runtime_from_the_settings_holds_the_published_versions(
    client: TestClient,
    users: Users,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sop_engine.settings import get_settings
    from workflows import runtime as flow_parts

    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("SOP_ENGINE_SOP_DIR", raising=False)
    monkeypatch.delenv("SOP_ENGINE_MASTER_KEY", raising=False)
    get_settings.cache_clear()
    flow_parts._runtime_from_settings.cache_clear()
    try:
        built = flow_parts.flow_runtime()
        assert built.library.get("example.corridor", 2).spec.title.endswith("(uploaded)")
    finally:
        flow_parts.flow_runtime().db.dispose()
        flow_parts._runtime_from_settings.cache_clear()
        get_settings.cache_clear()


ROUTES = [
    ("POST", "/sops", VERSION_2),
    ("GET", "/sops/drafts", None),
    ("GET", "/sops/example.corridor/2/source", None),
    ("POST", "/sops/example.corridor/2/publish", None),
]
TEMPLATES = {
    "/sops": "/sops",
    "/sops/drafts": "/sops/drafts",
    "/sops/example.corridor/2/source": "/sops/{key}/{version}/source",
    "/sops/example.corridor/2/publish": "/sops/{key}/{version}/publish",
}
ROLES = {
    "coordinator": "coordinator",
    "auditor": "auditor",
    "caseworker": "caseworker",
    "supervisor": "supervisor",
    "focal_point": "agency_focal_point",
}


@pytest.mark.parametrize(("method", "path", "text"), ROUTES)
@pytest.mark.parametrize("who", sorted(ROLES))
def test_each_publishing_route_admits_exactly_the_roles_of_the_table(
    client: TestClient, users: Users, method: str, path: str, text: str | None, who: str
) -> None:
    upload(client, users, VERSION_2)
    headers = {**YAML, **users.auth(who)}
    r = client.request(method, path, content=text, headers=headers)
    if ROLES[who] in PERMISSIONS[(method, TEMPLATES[path])]:
        assert r.status_code in (200, 201), r.text
    else:
        assert r.status_code == 403, r.text
    assert client.request(method, path, content=text, headers=YAML).status_code == 401


@pytest.fixture
def _no_leak(library: SopLibrary) -> Iterator[None]:
    before = {s.ref for s in library}
    yield
    assert {s.ref for s in library} == before


@pytest.mark.usefixtures("_no_leak")
def test_publishing_leaves_the_shared_library_as_shipped(client: TestClient, users: Users) -> None:
    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")


def test_sop_engine_serve_builds_its_app_with_the_published_versions(
    client: TestClient,
    users: Users,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cli.serve import build_app
    from sop_engine.settings import get_settings

    upload(client, users, VERSION_2)
    publish(client, users, "example.corridor@2")
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", sqlite_url)
    for name in ("SOP_ENGINE_SOP_DIR", "SOP_ENGINE_DIRECTORY_DIR", "SOP_ENGINE_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        app = build_app()
        runtime: Runtime = app.state.runtime
        assert runtime.library.get("example.corridor", 2).spec.title.endswith("(uploaded)")
        runtime.db.dispose()
    finally:
        get_settings.cache_clear()


def test_drafts_are_listed_by_key_and_version_a_page_at_a_time(
    client: TestClient, users: Users
) -> None:
    for version in (4, 2, 3):
        upload(client, users, VERSION_2.replace("version: 2", f"version: {version}"))
    auditor = users.auth("auditor")
    first = client.get("/sops/drafts?limit=2", headers=auditor).json()
    assert [d["version"] for d in first["items"]] == [2, 3]
    rest = client.get(f"/sops/drafts?limit=2&cursor={first['next_cursor']}", headers=auditor)
    assert [d["version"] for d in rest.json()["items"]] == [4]
    assert rest.json()["next_cursor"] is None
    forged = "WyJhIiwxMTgwNTkxNjIwNzE3NDExMzAzNDI0XQ"  # ["a", 2**70]
    r = client.get(f"/sops/drafts?cursor={forged}", headers=auditor)
    assert r.status_code == 422
    assert r.json()["field"] == "cursor"

"""Coordinators upload SOPs pending review, replace them, and a second coordinator approves
(publishes) or refuses them; published versions are live at once, never change, and are
there again after a restart, for the API and the worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.app import create_app
from api.permissions import PERMISSIONS
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.language.published import PublishedLibrary, PublishedSources, load_library
from sop_engine.persistence import tables
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


def source(client: TestClient, users: Users, ref: str) -> dict[str, object]:
    key, _, version = ref.partition("@")
    r = client.get(f"/sops/{key}/{version}/source", headers=users.auth("auditor"))
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def review(
    client: TestClient,
    users: Users,
    ref: str,
    decision: str = "approve",
    *,
    who: str = "coordinator_2",
    sha256: str | None = None,
    comment: str | None = None,
    **headers: str,
) -> httpx.Response:
    """``POST /sops/{key}/{version}/{decision}`` as ``who``, on the text the reviewer read
    (the current one unless ``sha256`` says)."""
    key, _, version = ref.partition("@")
    if sha256 is None:
        read = client.get(f"/sops/{key}/{version}/source", headers=users.auth(who))
        sha256 = read.json()["sha256"] if read.status_code == 200 else "0" * 64
    body: dict[str, object] = {"sha256": sha256}
    if comment is not None:
        body["comment"] = comment
    answer: httpx.Response = client.post(
        f"/sops/{key}/{version}/{decision}", json=body, headers={**headers, **users.auth(who)}
    )
    return answer


def publish(client: TestClient, users: Users, ref: str, **headers: str) -> dict[str, object]:
    """Approve ``ref`` as the second coordinator (the first one uploads)."""
    r = review(client, users, ref, **headers)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def stored_rows(db: Engine) -> int:
    with db.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(tables.sop_sources)).scalar_one()
        return count


def test_a_valid_upload_is_pending_listed_but_not_live(client: TestClient, users: Users) -> None:
    report = upload(client, users, VERSION_2)
    assert report["valid"] is True
    assert report["sop"] == "example.corridor@2"
    assert report["problems"] == []
    assert report["replayed"] is False
    pending = report["upload"]
    assert isinstance(pending, dict)
    assert pending["status"] == "pending"
    assert pending["title"] == "Example return corridor, version 2 (uploaded)"
    assert pending["published_at"] is None

    listed = client.get("/sops/pending", headers=users.auth("auditor")).json()
    assert [(d["key"], d["version"]) for d in listed["items"]] == [("example.corridor", 2)]
    source = client.get("/sops/example.corridor/2/source", headers=users.auth("auditor"))
    assert source.json()["source"] == VERSION_2
    assert source.json()["status"] == "pending"
    assert source.json()["reviews"] == []

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
    assert client.get("/sops/pending", headers=users.auth("coordinator")).json()["items"] == []


def test_a_pending_upload_is_replaced_by_a_new_upload_of_its_version(
    client: TestClient, users: Users
) -> None:
    first = upload(client, users, VERSION_2)
    second = upload(client, users, VERSION_2.replace("(uploaded)", "(uploaded again)"))
    assert first["upload"] != second["upload"]
    pending = client.get("/sops/pending", headers=users.auth("coordinator")).json()["items"]
    assert len(pending) == 1
    assert pending[0]["title"] == "Example return corridor, version 2 (uploaded again)"


def test_approval_makes_the_version_live_for_new_referrals_and_older_ones_keep_working(
    client: TestClient, users: Users, case_code: str, clock: ManualClock
) -> None:
    upload(client, users, VERSION_2)
    clock.advance(timedelta(minutes=5))
    answer = publish(client, users, "example.corridor@2")
    assert answer["sop"] == "example.corridor@2"
    published = answer["upload"]
    assert isinstance(published, dict)
    assert published["status"] == "published"
    assert published["published_at"] == "2026-03-02T01:35:00Z"
    assert published["published_by"] != published["uploaded_by"]

    coordinator = users.auth("coordinator")
    assert client.get("/sops/example.corridor/2", headers=coordinator).status_code == 200
    assert (
        "stateDiagram-v2"
        in client.get("/sops/example.corridor/2/diagram", headers=coordinator).text
    )
    assert client.get("/sops/pending", headers=coordinator).json()["items"] == []

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

    again = review(client, users, "example.corridor@2")
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert "new version" in again.json()["message"]
    changed = VERSION_2.replace("(uploaded)", "(changed)")
    assert client.post("/sops", content=changed, headers=coordinator).status_code == 409
    # A version written in the files is published too.
    file_text = (SOPS / "examples" / "example.corridor.sop.yaml").read_text()
    assert client.post("/sops", content=file_text, headers=coordinator).status_code == 409
    assert review(client, users, "example.corridor@1", sha256="0" * 64).status_code == 409


def test_reviewing_what_was_never_uploaded_is_404(client: TestClient, users: Users) -> None:
    for decision in ("approve", "refuse"):
        r = review(client, users, "example.corridor@7", decision, comment="no")
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
    assert retry["upload"] == first["upload"]

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
    assert again["upload"] == published["upload"]
    without_key = review(client, users, "example.corridor@2")
    assert without_key.status_code == 409


def new_app(db: Engine, library: SopLibrary, clock: ManualClock) -> TestClient:
    runtime = Runtime(
        db, library, MasterKeyring(MasterKey.generate("test")), clock, directory=agency_directory()
    )
    return TestClient(create_app(runtime, sop_paths=[SOPS]), raise_server_exceptions=False)


def test_a_restart_loads_the_published_versions_and_not_the_pending_ones(
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
    ("POST", "/sops"),
    ("GET", "/sops/pending"),
    ("GET", "/sops/example.corridor/2/source"),
    ("POST", "/sops/example.corridor/2/approve"),
    ("POST", "/sops/example.corridor/2/refuse"),
]
TEMPLATES = {
    "/sops": "/sops",
    "/sops/pending": "/sops/pending",
    "/sops/example.corridor/2/source": "/sops/{key}/{version}/source",
    "/sops/example.corridor/2/approve": "/sops/{key}/{version}/approve",
    "/sops/example.corridor/2/refuse": "/sops/{key}/{version}/refuse",
}
ROLES = {
    "coordinator": "coordinator",
    "auditor": "auditor",
    "caseworker": "caseworker",
    "supervisor": "supervisor",
    "focal_point": "agency_focal_point",
}


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("who", sorted(ROLES))
def test_each_publishing_route_admits_exactly_the_roles_of_the_table(
    client: TestClient, users: Users, method: str, path: str, who: str
) -> None:
    # Uploaded by the second coordinator, so that the first one may approve it.
    r = client.post("/sops", content=VERSION_2, headers={**YAML, **users.auth("coordinator_2")})
    assert r.status_code == 201, r.text
    sha = r.json()["upload"]["sha256"]
    if path == "/sops":
        text = VERSION_2
    elif method == "POST":
        text = json.dumps({"sha256": sha, "comment": "the escalation goes to nobody"})
    else:
        text = None
    content_type = {"Content-Type": "application/json" if path != "/sops" else "application/yaml"}
    headers = {**content_type, **users.auth(who)}
    r = client.request(method, path, content=text, headers=headers)
    if ROLES[who] in PERMISSIONS[(method, TEMPLATES[path])]:
        assert r.status_code in (200, 201), r.text
    else:
        assert r.status_code == 403, r.text
    assert client.request(method, path, content=text, headers=content_type).status_code == 401


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


def test_pending_uploads_are_listed_by_key_and_version_a_page_at_a_time(
    client: TestClient, users: Users
) -> None:
    for version in (4, 2, 3):
        upload(client, users, VERSION_2.replace("version: 2", f"version: {version}"))
    auditor = users.auth("auditor")
    first = client.get("/sops/pending?limit=2", headers=auditor).json()
    assert [d["version"] for d in first["items"]] == [2, 3]
    rest = client.get(f"/sops/pending?limit=2&cursor={first['next_cursor']}", headers=auditor)
    assert [d["version"] for d in rest.json()["items"]] == [4]
    assert rest.json()["next_cursor"] is None
    forged = "WyJhIiwxMTgwNTkxNjIwNzE3NDExMzAzNDI0XQ"  # ["a", 2**70]
    r = client.get(f"/sops/pending?cursor={forged}", headers=auditor)
    assert r.status_code == 422
    assert r.json()["field"] == "cursor"


def test_the_uploader_is_refused_as_approver_with_its_own_error(
    client: TestClient, users: Users
) -> None:
    upload(client, users, VERSION_2)
    r = review(client, users, "example.corridor@2", who="coordinator")
    assert r.status_code == 403
    assert r.json()["error"] == "approval_by_requester"
    assert "another coordinator" in r.json()["message"]
    assert client.get("/sops/example.corridor/2", headers=users.auth("auditor")).status_code == 404
    assert source(client, users, "example.corridor@2")["reviews"] == []

    publish(client, users, "example.corridor@2")
    approvals = source(client, users, "example.corridor@2")["reviews"]
    assert isinstance(approvals, list)
    (approval,) = approvals
    assert approval["decision"] == "approved"
    assert approval["reviewer_id"] != approval["uploaded_by"]


def test_a_text_uploaded_again_after_it_was_read_is_not_approved(
    client: TestClient, users: Users
) -> None:
    read = upload(client, users, VERSION_2)["upload"]["sha256"]  # type: ignore[index]
    upload(client, users, VERSION_2.replace("(uploaded)", "(changed after review)"))
    r = review(client, users, "example.corridor@2", sha256=read)
    assert r.status_code == 409
    assert r.json()["error"] == "concurrent_change"
    assert client.get("/sops/example.corridor/2", headers=users.auth("auditor")).status_code == 404


def test_a_refused_upload_says_why_and_is_reviewed_again_once_uploaded_again(
    client: TestClient, users: Users
) -> None:
    upload(client, users, VERSION_2)
    r = review(client, users, "example.corridor@2", "refuse")
    assert r.status_code == 422
    assert r.json()["field"] == "comment"
    r = review(client, users, "example.corridor@2", "refuse", comment="   ")
    assert (r.status_code, r.json()["field"]) == (422, "comment")
    r = review(client, users, "example.corridor@2", "refuse", comment="PEP deadline is 72h")
    assert r.status_code == 200, r.text
    assert r.json()["upload"]["status"] == "refused"
    assert client.get("/sops/pending", headers=users.auth("auditor")).json()["items"] == []
    assert review(client, users, "example.corridor@2").status_code == 409

    upload(client, users, VERSION_2.replace("(uploaded)", "(as asked)"))
    publish(client, users, "example.corridor@2")
    decisions = source(client, users, "example.corridor@2")["reviews"]
    assert [(d["decision"], d["comment"]) for d in decisions] == [  # type: ignore[attr-defined]
        ("refused", "PEP deadline is 72h"),
        ("approved", None),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sha256": "not-a-hash"},
        {"sha256": "A" * 64},
        {"sha256": "0" * 64, "comment": "x" * 2001},
        {"sha256": "0" * 64, "extra": 1},
    ],
)
def test_a_malformed_review_is_422_naming_the_field(
    client: TestClient, users: Users, body: dict[str, object]
) -> None:
    upload(client, users, VERSION_2)
    r = client.post(
        "/sops/example.corridor/2/approve", json=body, headers=users.auth("coordinator_2")
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"
    assert source(client, users, "example.corridor@2")["status"] == "pending"


def test_a_service_allowed_a_single_coordinator_lets_the_uploader_approve(
    runtime: Runtime, users: Users
) -> None:
    with TestClient(create_app(runtime, sop_paths=[SOPS], single_coordinator=True)) as alone:
        upload(alone, users, VERSION_2)
        r = review(alone, users, "example.corridor@2", who="coordinator")
        assert r.status_code == 200, r.text
        assert r.json()["upload"]["published_by"] == r.json()["upload"]["uploaded_by"]


def test_production_refuses_a_single_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from cli.serve import ServeError, build_app
    from sop_engine.errors import ConfigurationError
    from sop_engine.settings import Settings, get_settings

    assert Settings(single_coordinator=True).resolved_single_coordinator() is True
    assert Settings().resolved_single_coordinator() is False
    with pytest.raises(ConfigurationError, match="refused in production"):
        Settings(environment="production", single_coordinator=True).resolved_single_coordinator()

    monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", "production")
    monkeypatch.setenv("SOP_ENGINE_SINGLE_COORDINATOR", "true")
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        with pytest.raises(ServeError, match="SOP_ENGINE_SINGLE_COORDINATOR is refused"):
            build_app()
    finally:
        get_settings.cache_clear()


def test_production_serve_refuses_the_implicit_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.serve import ServeError, build_app
    from sop_engine.settings import get_settings

    monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", "production")
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SOP_ENGINE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ServeError, match="SOP_ENGINE_DATABASE_URL must be set in production"):
            build_app()
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "data").exists()


def test_production_serve_refuses_a_database_not_upgraded_and_does_not_migrate_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine, inspect

    from cli.serve import ServeError, build_app
    from sop_engine.crypto import MasterKey
    from sop_engine.settings import get_settings

    url = f"sqlite:///{tmp_path}/sop_engine.sqlite3"
    monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", "production")
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", url)
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
    get_settings.cache_clear()
    try:
        with pytest.raises(ServeError, match="run sop-engine db upgrade first"):
            build_app()
    finally:
        get_settings.cache_clear()
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()

"""The SOP routes: list, read, diagram, validate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import SOPS, Users


def test_the_list_names_every_sop_of_the_library(client: TestClient, users: Users) -> None:
    r = client.get("/sops", headers=users.auth("auditor"))
    assert r.status_code == 200
    listed = {(s["key"], s["version"]) for s in r.json()}
    assert ("example.corridor", 1) in listed
    assert all(s["title"] for s in r.json())


def test_an_sop_reads_as_states_events_and_handoffs(client: TestClient, users: Users) -> None:
    r = client.get("/sops/example.corridor/1", headers=users.auth("coordinator"))
    assert r.status_code == 200
    sop = r.json()
    assert sop["initial_state"] == "intake"
    assert "record_consent" in sop["events"]
    assert {h["name"] for h in sop["handoffs"]} >= {"return_referral"}
    assert any(s["deadlines"] for s in sop["states"])


def test_an_unknown_sop_is_404(client: TestClient, users: Users) -> None:
    r = client.get("/sops/example.nowhere/1", headers=users.auth("coordinator"))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    r = client.get("/sops/example.corridor/x", headers=users.auth("coordinator"))
    assert r.status_code == 422
    assert r.json()["field"] == "version"


def test_the_diagram_is_mermaid_text(client: TestClient, users: Users) -> None:
    r = client.get("/sops/example.corridor/1/diagram", headers=users.auth("coordinator"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "\nstateDiagram-v2\n" in r.text


def validate(
    client: TestClient, users: Users, text: str | bytes, **headers: str
) -> dict[str, object]:
    r = client.post(
        "/sops/validate",
        content=text,
        headers={"Content-Type": "application/yaml", **headers, **users.auth("coordinator")},
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_a_valid_sop_extending_the_library_validates(client: TestClient, users: Users) -> None:
    text = (SOPS / "examples" / "example.corridor.sop.yaml").read_text()
    report = validate(client, users, text)
    assert report == {"valid": True, "sop": "example.corridor@1", "problems": []}


def test_a_broken_sop_gets_problems_with_lines(client: TestClient, users: Users) -> None:
    text = (SOPS / "examples" / "example.corridor.sop.yaml").read_text()
    broken = text.replace("initial: true", "initial: maybe", 1)
    if broken == text:
        broken = text.replace("title:", "titel:", 1)
    report = validate(client, users, broken)
    assert report["valid"] is False
    problems = report["problems"]
    assert isinstance(problems, list)
    assert problems
    first = problems[0]
    assert set(first) == {"file", "line", "message", "sop", "state", "hint"}
    assert first["file"] == "upload.sop.yaml"
    assert first["line"] > 1


@pytest.mark.parametrize(
    "text",
    [
        b"key: [unclosed\n",
        b"- a list\n- not a mapping\n",
        b"",
        b"\xff\xfe\x00garbage",
        b"key: x\nkey: y\n",
        b"a: &a [*a]\n",
        b"extends: example.baseline@1\n",
    ],
)
def test_bad_yaml_is_a_report_never_a_500(client: TestClient, users: Users, text: bytes) -> None:
    report = validate(client, users, text)
    assert report["valid"] is False
    assert report["problems"]


def test_text_plain_and_no_content_type_are_taken_too(client: TestClient, users: Users) -> None:
    assert validate(client, users, b"key: [x\n", **{"Content-Type": "text/plain"})["valid"] is False
    r = client.post("/sops/validate", content=b"key: [x\n", headers=users.auth("coordinator"))
    assert r.status_code in (200, 422)
    assert r.status_code != 500

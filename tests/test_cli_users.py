"""``sop-engine users``: add (an agency of the directory only), list (never a token), disable,
enable and rotate-token, as an operator runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from api.users import hash_token
from cli.main import cli
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory import load_directory
from sop_engine.directory.managed import ManagedDirectory
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
DIRECTORY = ROOT / "sop_definitions" / "directory"
_U = tables.users


@pytest.fixture
def env(engine: Engine, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """The command's environment: the test's database (SQLite, then PostgreSQL)."""
    get_settings.cache_clear()
    yield {
        "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
        "SOP_ENGINE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SOP_ENGINE_ENVIRONMENT": None,
        "SOP_ENGINE_TOKEN_LIFETIME_DAYS": None,
    }
    get_settings.cache_clear()


def run(env: dict[str, str | None], *args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, ["users", *args], env=env)


def add(env: dict[str, str | None], name: str, role: str, agency: str | None = None) -> str:
    result = run(env, "add", name, "--role", role, *(["--agency", agency] if agency else []))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_add_refuses_an_agency_the_directory_does_not_list_with_a_near_id(
    env: dict[str, str | None], engine: Engine
) -> None:
    result = run(env, "add", "cw", "--role", "caseworker", "--agency", "TH-SYN-SHELTR-TAK")
    assert result.exit_code == 1
    assert "--agency: no agency 'TH-SYN-SHELTR-TAK' in the directory" in result.stderr
    assert "did you mean 'TH-SYN-SHELTER-TAK'?" in result.stderr
    for made_up in ("TH-NGO-A", "th-syn-shelter-tak", "TH-SYN-SHELTER-TAK "):
        assert run(env, "add", "cw", "--role", "caseworker", "--agency", made_up).exit_code == 1
    with engine.connect() as conn:
        assert conn.execute(select(_U)).all() == []
    assert add(env, "cw", "caseworker", "TH-SYN-SHELTER-TAK")


def test_add_takes_an_agency_kept_through_the_api(
    env: dict[str, str | None], engine: Engine
) -> None:
    entry = {
        "name": "Synthetic Help Desk N (Nan)",
        "country": "TH",
        "province": "Nan",
        "agency_types": ["ngo"],
        "services": ["case_management"],
        "languages": ["th"],
        "corridors": [],
        "contact_channel": "in_app",
        "accepts_new_cases": True,
        "source": "synthetic",
        "last_verified": "2026-01-15",
        "synthetic": True,
    }
    today = datetime.now(UTC)
    ManagedDirectory(engine, load_directory(DIRECTORY)).put(
        "TH-SYN-HELPDESK-NAN", entry, actor_id="u-coord", now=today
    )
    assert add(env, "fp-nan", "agency_focal_point", "TH-SYN-HELPDESK-NAN")


def test_the_readmes_walkthrough_agencies_are_in_the_directory() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    named = set(re.findall(r"\b[A-Z]{2}-SYN-[A-Z-]+[A-Z]\b", readme))
    assert {"TH-SYN-SHELTER-TAK", "LA-SYN-TRANSIT-VIENTIANE"} <= named
    directory = load_directory(DIRECTORY)
    for agency in named:
        directory.agency(agency)


def test_list_shows_every_user_and_no_token(env: dict[str, str | None], engine: Engine) -> None:
    tokens = [add(env, "cw-th-01", "caseworker", "TH-SYN-SHELTER-TAK"), add(env, "aud", "auditor")]
    assert run(env, "disable", "aud").exit_code == 0
    result = run(env, "list")
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        ids = dict(conn.execute(select(_U.c.username, _U.c.id)).all())
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[:4] for line in lines] == [
        ["aud", "auditor", "-", "disabled"],
        ["cw-th-01", "caseworker", "TH-SYN-SHELTER-TAK", "active"],
    ]
    assert [line[5] for line in lines] == [ids["aud"], ids["cw-th-01"]]
    for token in tokens:
        assert token not in result.output
        assert hash_token(token) not in result.output
    assert "2 users." in result.stderr


def test_disable_enable_and_rotate_token_through_a_running_api(
    env: dict[str, str | None], engine: Engine, library: SopLibrary
) -> None:
    old = add(env, "aud", "auditor")
    runtime = Runtime(engine, library, MasterKeyring(MasterKey.generate("t")))
    with TestClient(create_app(runtime)) as client:

        def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            code: int = client.get("/audit/referrals", headers=headers).status_code
            return code

        assert status(old) == 200
        assert run(env, "disable", "aud").exit_code == 0
        assert status(old) == 401
        rotated = run(env, "rotate-token", "aud")
        assert rotated.exit_code == 0, rotated.output
        new = rotated.stdout.strip()
        assert "is disabled" in rotated.stderr
        assert status(new) == 401
        assert run(env, "enable", "aud").exit_code == 0
        assert status(new) == 200
        assert status(old) == 401  # rotation ended the old token for good
        assert "the old one no longer works" in rotated.stderr


def test_an_unknown_username_is_an_error_with_a_near_name(env: dict[str, str | None]) -> None:
    add(env, "cw-th-01", "caseworker", "TH-SYN-SHELTER-TAK")
    for command in ("disable", "enable", "rotate-token"):
        result = run(env, command, "cw-th-1")
        assert result.exit_code == 1
        assert "no user 'cw-th-1' (did you mean 'cw-th-01'?)" in result.stderr
        assert result.stdout == ""


def test_the_lifetime_setting_sets_new_tokens_expiry(
    env: dict[str, str | None], engine: Engine
) -> None:
    env["SOP_ENGINE_TOKEN_LIFETIME_DAYS"] = "7"
    before = datetime.now(UTC)
    add(env, "aud", "auditor")
    with engine.connect() as conn:
        expires = conn.execute(select(_U.c.token_expires_at)).scalar_one()
    assert before + timedelta(days=7) <= expires <= datetime.now(UTC) + timedelta(days=7)
    run(env, "disable", "aud")
    env["SOP_ENGINE_TOKEN_LIFETIME_DAYS"] = "30"
    assert run(env, "rotate-token", "aud").exit_code == 0
    with engine.connect() as conn:
        renewed = conn.execute(select(_U.c.token_expires_at)).scalar_one()
    assert renewed >= before + timedelta(days=30)
    env["SOP_ENGINE_TOKEN_LIFETIME_DAYS"] = "0"
    refused = run(env, "rotate-token", "aud")
    assert refused.exit_code == 2
    assert "SOP_ENGINE_TOKEN_LIFETIME_DAYS: Input should be greater than or equal to 1" in (
        refused.stderr
    )


# -- contact for notifications -----------------------------------------------------------------


def test_add_stores_a_contact_and_list_shows_it(env: dict[str, str | None], engine: Engine) -> None:
    result = run(
        env,
        "add",
        "coord-th",
        "--role",
        "coordinator",
        "--email",
        "Coord.TH@Lead.TH-SYN.example",
        "--language",
        "TH",
        "--timezone",
        "Asia/Bangkok",
    )
    assert result.exit_code == 0, result.output
    assert add(env, "aud", "auditor")
    with engine.connect() as conn:
        stored = conn.execute(
            select(_U.c.email, _U.c.language, _U.c.timezone).where(_U.c.username == "coord-th")
        ).one()
    assert tuple(stored) == ("Coord.TH@lead.th-syn.example", "th", "Asia/Bangkok")
    lines = [line.split("\t") for line in run(env, "list").stdout.splitlines()]
    assert [line[6:] for line in lines] == [
        ["-", "-", "-"],
        ["Coord.TH@lead.th-syn.example", "th", "Asia/Bangkok"],
    ]


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("--email", "coord th@lead.th-syn.example", "--email: not an e-mail address: give one"),
        ("--email", "coord@lead", "--email: not an e-mail address"),
        ("--email", "a@b.example\r\nBcc: x@y.example", "--email: not an e-mail address"),
        ("--email", "Coord <coord@lead.th-syn.example>", "--email: not an e-mail address"),
        ("--email", "ผู้ประสาน@lead.th-syn.example", "--email: not an e-mail address"),
        ("--email", "a@" + "b" * 250 + ".example", "--email: not an e-mail address"),
        ("--language", "hmn", "--language: unknown language 'hmn' (languages: en, th, km, lo"),
        ("--language", "th-TH", "--language: unknown language 'th-TH'"),
        ("--timezone", "Asia/Bangkoc", "--timezone: unknown time zone 'Asia/Bangkoc' (an IANA"),
        ("--timezone", "Asia", "--timezone: unknown time zone 'Asia'"),
        ("--timezone", "../../etc/passwd", "--timezone: unknown time zone"),
        ("--timezone", "UTC+7", "--timezone: unknown time zone 'UTC+7'"),
    ],
)
def test_add_refuses_a_bad_contact_in_one_line_naming_the_option(
    env: dict[str, str | None], engine: Engine, option: str, value: str, error: str
) -> None:
    result = run(env, "add", "coord-x", "--role", "coordinator", option, value)
    assert result.exit_code == 1
    assert result.stderr.startswith(error), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    if option == "--email":
        assert "lead" not in result.stderr  # the address is not repeated
    with engine.connect() as conn:
        assert conn.execute(select(_U)).all() == []


def test_set_contact_changes_what_it_is_given_and_clears_what_is_empty(
    env: dict[str, str | None], engine: Engine
) -> None:
    add(env, "coord-la", "coordinator")

    def contact() -> tuple[str | None, ...]:
        with engine.connect() as conn:
            row = conn.execute(
                select(_U.c.email, _U.c.language, _U.c.timezone).where(_U.c.username == "coord-la")
            ).one()
        return tuple(row)

    result = run(env, "set-contact", "coord-la", "--email", "c@lead.la-syn.example")
    assert result.exit_code == 0, result.output
    assert "email set, language none (English)" in result.stderr
    assert "c@lead" not in result.output
    assert contact() == ("c@lead.la-syn.example", None, None)
    ok = run(env, "set-contact", "coord-la", "--language", "lo", "--timezone", "Asia/Vientiane")
    assert ok.exit_code == 0
    assert contact() == ("c@lead.la-syn.example", "lo", "Asia/Vientiane")

    refused = run(env, "set-contact", "coord-la", "--language", "lo", "--timezone", "Mars/Base")
    assert (refused.exit_code, refused.stderr.splitlines()[0]) == (
        1,
        "--timezone: unknown time zone 'Mars/Base' (an IANA name such as Asia/Bangkok)",
    )
    assert contact() == ("c@lead.la-syn.example", "lo", "Asia/Vientiane")  # nothing changed

    assert run(env, "set-contact", "coord-la", "--email", "").exit_code == 0
    assert contact() == (None, "lo", "Asia/Vientiane")

    nothing = run(env, "set-contact", "coord-la")
    assert nothing.exit_code == 1
    assert "nothing to change" in nothing.stderr
    unknown = run(env, "set-contact", "coord-lo", "--language", "lo")
    assert (unknown.exit_code, unknown.stderr.strip()) == (
        1,
        "no user 'coord-lo' (did you mean 'coord-la'?)",
    )

"""The timeline is hash-chained: an auditor can prove nobody rewrote a referral's history."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Row, select

from cli.main import cli
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.chain import HASH_MISMATCH, PREV_HASH_MISMATCH
from sop_engine.timeline.verify import HEAD_MISMATCH

T = tables.timeline_entries


def _entries(runtime: Runtime, code: str) -> list[Row[Any]]:
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        return list(conn.execute(select(T).where(T.c.referral_id == view.id).order_by(T.c.seq)))


def test_each_entry_records_who_did_what_and_chains_to_the_one_before(
    runtime: Runtime, referral_in_action_plan: str
) -> None:
    entries = _entries(runtime, referral_in_action_plan)
    assert [e.kind for e in entries] == ["created", "consent_granted", "transition", "transition"]
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == "0" * 64
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    assert (entries[3].event, entries[3].from_state, entries[3].to_state) == (
        "complete_assessment",
        "assessment",
        "action_plan",
    )
    assert entries[3].actor_role == "caseworker"
    assert runtime.verify_timeline(referral_in_action_plan)[0].ok


def test_disclosure_entries_name_fields_and_grant_never_values(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = runtime.grant_consent(
        code, scope="cross_border_return", actor=caseworker, given_by="survivor"
    )
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    sent = _entries(runtime, code)[-1]
    assert sent.disclosed_to == "LA-SW-1"
    assert sent.consent_grant_id == grant.id
    assert sent.disclosed_fields == [
        "case_code",
        "service_needed",
        "risk_level",
        "safe_contact_method",
        "consent_reference",
    ]
    assert "text_message" not in str(sent._mapping)


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"),
    [
        ("content", 3, HASH_MISMATCH),
        ("hash", 2, HASH_MISMATCH),
        ("delete", 3, PREV_HASH_MISMATCH),
        ("truncate", 4, HEAD_MISMATCH),
    ],
)
def test_tampering_is_found_at_the_right_entry(
    runtime: Runtime, referral_in_action_plan: str, tamper: str, seq: int, reason: str
) -> None:
    code = referral_in_action_plan
    view = runtime.read_referral(code)
    with runtime.db.begin() as conn:
        where = (T.c.referral_id == view.id) & (T.c.seq == (seq - 1 if tamper == "delete" else seq))
        if tamper == "content":
            conn.execute(T.update().where(where).values(actor_id="someone-else"))
        elif tamper == "hash":
            conn.execute(T.update().where(where).values(hash="f" * 64))
        elif tamper == "delete":
            conn.execute(T.delete().where(where))
        else:
            conn.execute(T.delete().where(T.c.referral_id == view.id, T.c.seq == 4))
    (check,) = runtime.verify_timeline(code)
    assert not check.ok
    assert check.broken is not None
    expected_entry = 3 if tamper == "truncate" else seq
    assert check.broken.entry_id == expected_entry
    assert check.broken.reason == reason


def test_verify_command_names_the_broken_entry(
    runtime: Runtime, referral_in_action_plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sop_engine.settings import get_settings

    monkeypatch.setenv(
        "SOP_ENGINE_DATABASE_URL", runtime.db.url.render_as_string(hide_password=False)
    )
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(cli, ["timeline", "verify", "--referral", referral_in_action_plan])
        assert ok.exit_code == 0, ok.output
        assert f"{referral_in_action_plan}: ok (4 entries)" in ok.stdout
        view = runtime.read_referral(referral_in_action_plan)
        with runtime.db.begin() as conn:
            conn.execute(
                T.update()
                .where(T.c.referral_id == view.id, T.c.seq == 2)
                .values(details={"scope": "something_else"})
            )
        broken = CliRunner().invoke(cli, ["timeline", "verify"])
        assert broken.exit_code == 1
        assert (
            f"{referral_in_action_plan}: BROKEN at entry 2 (position 2 of 4): {HASH_MISMATCH}"
            in (broken.stdout)
        )
        missing = CliRunner().invoke(cli, ["timeline", "verify", "--referral", "NONE-SUCH-CODE"])
        assert missing.exit_code == 1
    finally:
        get_settings.cache_clear()


def test_the_referral_row_keeps_the_chains_head(
    runtime: Runtime, referral_in_action_plan: str
) -> None:
    r = tables.referrals
    with runtime.db.connect() as conn:
        head = conn.execute(
            select(r.c.timeline_seq, r.c.head_hash).where(r.c.case_code == referral_in_action_plan)
        ).one()
    last = _entries(runtime, referral_in_action_plan)[-1]
    assert (head.timeline_seq, head.head_hash) == (last.seq, last.hash)

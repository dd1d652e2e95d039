"""The timeline's hash chain: canonical JSON, entry hashes, and finding the first break."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from sop_engine.timeline.chain import (
    GENESIS,
    HASH_MISMATCH,
    PREV_HASH_MISMATCH,
    ChainBreak,
    canonical_json,
    entry_hash,
    verify_chain,
)

Row = tuple[Any, Mapping[str, Any], str, str]


def timeline(*contents: Mapping[str, Any]) -> list[Row]:
    """Rows as the database would hold them: ``(id, content, prev_hash, hash)``."""
    rows: list[Row] = []
    prev = GENESIS
    for number, content in enumerate(contents, start=1):
        digest = entry_hash(prev, content)
        rows.append((number, content, prev, digest))
        prev = digest
    return rows


FIVE_EVENTS = timeline(
    {"event": "referral_received", "at": "2024-03-01T08:00:00+07:00", "by": "ngo-poipet"},
    {"event": "consent_recorded", "at": "2024-03-01T08:20:00+07:00", "scope": ["health"]},
    {"event": "handoff", "at": "2024-03-01T09:00:00+07:00", "to": "hospital-bb"},
    {"event": "accepted", "at": "2024-03-01T11:30:00+07:00", "by": "hospital-bb"},
    {"event": "closed", "at": "2024-03-09T17:00:00+07:00", "outcome": "services_delivered"},
)


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": [True, None, 1.5], "ក": "ខ"}) == (
        '{"a":[true,null,1.5],"b":1,"ក":"ខ"}'.encode()
    )


def test_canonical_json_is_the_same_for_tuples_and_read_only_mappings() -> None:
    assert canonical_json(MappingProxyType({"scope": ("health", "legal")})) == canonical_json(
        {"scope": ["health", "legal"]}
    )


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC)},
        {"blob": b"bytes"},
        {"scope": {"health"}},
        {1: "integer key"},
    ],
)
def test_canonical_json_refuses_what_json_cannot_carry(value: Any) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        canonical_json({"score": float("nan")})


def test_a_datetime_is_refused_with_a_hint_to_give_iso_strings() -> None:
    with pytest.raises(TypeError, match=r"\$\.at: datetime .* ISO strings"):
        canonical_json({"at": datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC)})


def test_an_entry_hash_is_sha256_of_the_previous_hash_a_newline_and_the_content() -> None:
    content = {"event": "handoff"}
    expected = hashlib.sha256(GENESIS.encode() + b"\n" + b'{"event":"handoff"}').hexdigest()
    assert entry_hash(GENESIS, content) == expected


def test_an_entry_hash_does_not_depend_on_key_order() -> None:
    assert entry_hash(GENESIS, {"a": 1, "b": 2}) == entry_hash(GENESIS, {"b": 2, "a": 1})


@pytest.mark.parametrize("prev", ["", "0" * 63, "A" * 64, "g" * 64])
def test_an_entry_hash_needs_a_well_formed_previous_hash(prev: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        entry_hash(prev, {"event": "handoff"})


def test_an_untouched_timeline_verifies() -> None:
    assert verify_chain(FIVE_EVENTS) is None


def test_an_empty_timeline_verifies() -> None:
    assert verify_chain([]) is None


def test_a_timeline_missing_its_first_entry_breaks_at_index_0() -> None:
    assert verify_chain(FIVE_EVENTS[1:]) == ChainBreak(0, 2, PREV_HASH_MISMATCH)


def test_changed_content_in_the_middle_breaks_at_that_entry() -> None:
    rows = list(FIVE_EVENTS)
    entry_id, content, prev, digest = rows[2]
    rows[2] = (entry_id, {**content, "to": "another-agency"}, prev, digest)
    assert verify_chain(rows) == ChainBreak(2, 3, HASH_MISMATCH)


def test_a_deleted_middle_entry_breaks_at_the_entry_after_the_gap() -> None:
    rows = FIVE_EVENTS[:2] + FIVE_EVENTS[3:]
    assert verify_chain(rows) == ChainBreak(2, 4, PREV_HASH_MISMATCH)


def test_swapped_entries_break_at_the_first_of_them() -> None:
    rows = list(FIVE_EVENTS)
    rows[1], rows[2] = rows[2], rows[1]
    assert verify_chain(rows) == ChainBreak(1, 3, PREV_HASH_MISMATCH)


def test_a_changed_stored_hash_breaks_at_that_entry() -> None:
    rows = list(FIVE_EVENTS)
    entry_id, content, prev, _ = rows[2]
    rows[2] = (entry_id, content, prev, "f" * 64)
    assert verify_chain(rows) == ChainBreak(2, 3, HASH_MISMATCH)


def test_rewriting_an_entry_and_its_hash_breaks_the_next_link() -> None:
    rows = list(FIVE_EVENTS)
    entry_id, content, prev, _ = rows[2]
    forged = {**content, "to": "another-agency"}
    rows[2] = (entry_id, forged, prev, entry_hash(prev, forged))
    assert verify_chain(rows) == ChainBreak(3, 4, PREV_HASH_MISMATCH)


def test_only_the_first_break_is_reported() -> None:
    rows = list(FIVE_EVENTS)
    for index in (1, 3):
        entry_id, content, prev, digest = rows[index]
        rows[index] = (entry_id, {**content, "edited": True}, prev, digest)
    assert verify_chain(rows) == ChainBreak(1, 2, HASH_MISMATCH)


def test_a_cut_off_tail_still_verifies_so_the_head_must_be_anchored_elsewhere() -> None:
    truncated = FIVE_EVENTS[:3]
    anchored_head = FIVE_EVENTS[-1][3]
    assert verify_chain(truncated) is None
    assert truncated[-1][3] != anchored_head


def test_a_timeline_read_lazily_from_a_generator_verifies() -> None:
    assert verify_chain(row for row in FIVE_EVENTS) is None

"""Per-case encryption: sealing, key wrapping, rotation, and refusing anything tampered."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sop_engine.crypto import (
    MasterKey,
    MasterKeyring,
    derive_key,
    new_case_key,
    open_sealed,
    rewrap_case_key,
    seal,
    unwrap_case_key,
    wrap_case_key,
)
from sop_engine.errors import ConfigurationError, SopEngineError, TamperedData

REFERRAL = b"ref-2024-000123"
SURVIVOR = {
    "name": "Synthetic Survivor K-01",
    "village": "Synthetic Village 3",
    "age": 17,
    "note": "ឈ្មោះ",
}


def test_a_sealed_dict_opens_to_the_same_dict() -> None:
    case_key = new_case_key()
    blob = seal(case_key, SURVIVOR, associated_data=REFERRAL)
    assert open_sealed(case_key, blob, associated_data=REFERRAL) == SURVIVOR


def test_the_blob_shows_no_plaintext_and_differs_each_time() -> None:
    case_key = new_case_key()
    first = seal(case_key, SURVIVOR, associated_data=REFERRAL)
    second = seal(case_key, SURVIVOR, associated_data=REFERRAL)
    assert b"Synthetic Survivor K-01" not in first
    assert first != second
    assert first[0] == 1


def test_a_blob_copied_to_another_referral_does_not_open() -> None:
    case_key = new_case_key()
    blob = seal(case_key, SURVIVOR, associated_data=REFERRAL)
    with pytest.raises(TamperedData, match="failed authentication") as caught:
        open_sealed(case_key, blob, associated_data=b"ref-2024-000124")
    assert "Synthetic Survivor K-01" not in str(caught.value)


@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_a_flipped_bit_anywhere_in_the_blob_is_refused(position: int) -> None:
    case_key = new_case_key()
    blob = bytearray(seal(case_key, SURVIVOR, associated_data=REFERRAL))
    blob[position] ^= 0x01
    with pytest.raises(TamperedData) as caught:
        open_sealed(case_key, bytes(blob), associated_data=REFERRAL)
    assert "Synthetic Survivor K-01" not in str(caught.value)


def test_another_case_key_does_not_open_the_blob() -> None:
    blob = seal(new_case_key(), SURVIVOR, associated_data=REFERRAL)
    with pytest.raises(TamperedData):
        open_sealed(new_case_key(), blob, associated_data=REFERRAL)


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01" + bytes(27)])
def test_a_truncated_blob_is_refused(blob: bytes) -> None:
    with pytest.raises(TamperedData, match="too short"):
        open_sealed(new_case_key(), blob, associated_data=REFERRAL)


def test_tampered_data_is_still_a_value_error() -> None:
    assert issubclass(TamperedData, SopEngineError)
    assert issubclass(TamperedData, ValueError)


def test_only_json_dicts_can_be_sealed() -> None:
    case_key = new_case_key()
    with pytest.raises(TypeError, match=r"\$\.when: date is not"):
        seal(case_key, {"when": datetime.date(2024, 1, 1)}, associated_data=REFERRAL)
    with pytest.raises(TypeError, match="keys must be strings"):
        seal(case_key, {"ages": {1: "a"}}, associated_data=REFERRAL)
    with pytest.raises(ValueError, match="NaN"):
        seal(case_key, {"score": float("nan")}, associated_data=REFERRAL)


def test_sealing_without_associated_data_is_refused() -> None:
    with pytest.raises(ValueError, match="associated_data"):
        seal(new_case_key(), SURVIVOR, associated_data=b"")


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.text(max_size=50), st.integers()),
        max_size=10,
    )
)
def test_any_dict_of_strings_and_integers_round_trips(facts: dict[str, str | int]) -> None:
    case_key = new_case_key()
    blob = seal(case_key, dict(facts), associated_data=REFERRAL)
    assert open_sealed(case_key, blob, associated_data=REFERRAL) == facts


def test_a_case_key_unwraps_to_itself() -> None:
    ring = MasterKeyring(MasterKey.generate("k1"))
    case_key = new_case_key()
    key_id, wrapped = wrap_case_key(ring, case_key)
    assert key_id == "k1"
    assert case_key not in wrapped
    assert unwrap_case_key(ring, key_id, wrapped) == case_key


def test_unwrapping_with_the_wrong_master_key_is_refused() -> None:
    _, wrapped = wrap_case_key(MasterKeyring(MasterKey.generate("k1")), new_case_key())
    impostor = MasterKeyring(MasterKey.generate("k1"))
    with pytest.raises(TamperedData, match="integrity check"):
        unwrap_case_key(impostor, "k1", wrapped)


def test_a_changed_wrapped_key_is_refused() -> None:
    ring = MasterKeyring(MasterKey.generate("k1"))
    _, wrapped = wrap_case_key(ring, new_case_key())
    changed = bytes([wrapped[0] ^ 0x80]) + wrapped[1:]
    for bad in (changed, wrapped[:-8], wrapped[:7], b""):
        with pytest.raises(TamperedData):
            unwrap_case_key(ring, "k1", bad)


def test_an_unknown_master_key_id_is_a_configuration_error() -> None:
    ring = MasterKeyring(MasterKey.generate("k2"))
    with pytest.raises(ConfigurationError, match="'k1'"):
        unwrap_case_key(ring, "k1", bytes(40))


def test_after_rotation_old_case_keys_still_unwrap_and_new_ones_use_the_new_key() -> None:
    old = MasterKey.generate("k1")
    case_key = new_case_key()
    key_id, wrapped = wrap_case_key(MasterKeyring(old), case_key)

    rotated = MasterKeyring(MasterKey.generate("k2"), previous=(old,))
    assert unwrap_case_key(rotated, key_id, wrapped) == case_key
    assert wrap_case_key(rotated, new_case_key())[0] == "k2"

    new_id, rewrapped = rewrap_case_key(rotated, key_id, wrapped)
    retired = MasterKeyring(rotated.current)
    assert new_id == "k2"
    assert unwrap_case_key(retired, new_id, rewrapped) == case_key


def test_a_master_key_setting_round_trips() -> None:
    key = MasterKey.generate("prod-2024")
    assert MasterKey.from_setting(key.to_setting()) == key
    assert MasterKey.from_setting(f"  {key.to_setting()}=  ") == key


def test_a_keyring_setting_puts_the_first_key_current() -> None:
    k1, k2, k3 = (MasterKey.generate(name) for name in ("k1", "k2", "k3"))
    text = f"{k3.to_setting()}, {k2.to_setting()},{k1.to_setting()}"
    ring = MasterKeyring.from_setting(text)
    assert ring.current == k3
    assert ring.previous == (k2, k1)
    assert ring.find("k1") == k1
    assert ring.find("k0") is None
    assert MasterKeyring.from_setting(ring.to_setting()) == ring


def test_a_master_key_never_shows_its_bytes_in_repr() -> None:
    key = MasterKey.generate("k1")
    secret = key.to_setting().split(":")[1]
    assert secret not in repr(key)
    assert repr(key.material) not in repr(MasterKeyring(key))


SECRET = MasterKey.generate("k1").to_setting().split(":")[1]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        (SECRET, "no key id"),
        (f":{SECRET}", "key id"),
        (f"k 1:{SECRET}", "key id"),
        (f"k1:{SECRET[:-1]}+", "not base64url"),
        (f"k1:{SECRET[:-2]}", "43 base64url characters"),
        (f"k1:{SECRET}AAAA", "43 base64url characters"),
        (f"k1:{SECRET[:-1]}B", "not canonical"),
    ],
    ids=["no-id", "empty-id", "space-in-id", "not-base64url", "short", "long", "not-canonical"],
)
def test_a_bad_master_key_setting_is_explained_without_echoing_the_key(
    setting: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        MasterKey.from_setting(setting)
    assert SECRET[:-2] not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("", "is empty"),
        (f"k1:{SECRET},", "entry 2 .* is empty"),
        (f"k1:{SECRET},k2:{SECRET[:-3]}", "entry 2 .* 43 base64url"),
        (f"k1:{SECRET},k1:{MasterKey.generate().to_setting()[3:]}", "share a key id"),
    ],
    ids=["empty", "empty-entry", "short-entry", "same-id"],  # the keys are random
)
def test_a_bad_keyring_setting_names_the_entry_without_echoing_keys(
    setting: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        MasterKeyring.from_setting(setting)
    assert SECRET[:-3] not in str(caught.value)


def test_case_keys_must_be_32_bytes() -> None:
    ring = MasterKeyring(MasterKey.generate())
    assert len(new_case_key()) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        wrap_case_key(ring, bytes(16))
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bytes(16), SURVIVOR, associated_data=REFERRAL)


def test_a_derived_key_is_stable_per_master_key_and_purpose_and_reveals_neither() -> None:
    master = MasterKey.generate("k1")
    again = MasterKey.from_setting(master.to_setting())
    key = derive_key(master, "idempotency-request-mac/v1")
    assert len(key) == 32
    assert derive_key(again, "idempotency-request-mac/v1") == key  # after a restart
    assert derive_key(master, "another-purpose/v1") != key
    assert derive_key(MasterKey.generate("k1"), "idempotency-request-mac/v1") != key
    assert key != master.material
    with pytest.raises(ValueError, match="purpose"):
        derive_key(master, "")

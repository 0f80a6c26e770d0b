"""Any account code is safe as a table key: the key always leads back to the account's
partition, the partition of its measurements, Stripe events and bills."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.partitioning import partition_for
from streams.tables import account_key, account_of, split_key, table_key
from streams.usage.store import parse_record_key, record_key

ODD_CODES = ["cus3|eu", "a|b|c", ".", "..", "%7C", "100%", "züri-ünïcødé-😀", "x" * 200, "|", "%"]
codes = st.text(min_size=1, max_size=200)


def test_odd_account_codes_round_trip_through_every_kind_of_key() -> None:
    for code in ODD_CODES:
        assert account_of(account_key(code)) == code
        assert account_of(table_key(code, "bill-1").encode()) == code
        assert split_key(table_key(code, "plan|with|bars")) == (code, "plan|with|bars")
        assert parse_record_key(record_key(code, 493_000)) == (code, 493_000)


def test_plain_codes_keep_their_readable_keys() -> None:
    assert account_key("cus_123") == b"cus_123"
    assert record_key("acme-eu", 7) == "acme-eu|7"


@given(codes, st.integers(min_value=0, max_value=10**7))
def test_the_partition_of_a_key_is_the_partition_of_its_account(code: str, slot: int) -> None:
    for key in (account_key(code), record_key(code, slot).encode()):
        assert partition_for(account_of(key), 6) == partition_for(code, 6)


@given(codes, codes)
def test_keys_of_different_accounts_never_collide(first: str, second: str) -> None:
    if first != second:
        assert account_key(first) != account_key(second)
        assert record_key(first, 1) != record_key(second, 1)

"""The usage engine's wire formats: deterministic bytes, today's documents, exact numbers."""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.usage.engine import wire
from streams.usage.engine.state import Cell, cell_state, copy_cell, merge_cells
from streams.usage.state import canonical, from_document, merge, to_document
from streams.usage.store import uid_key

SPECIAL = [
    Decimal("0"),
    Decimal("-0"),
    Decimal("0E-7"),
    Decimal("1.000"),
    Decimal("1E+2"),
    Decimal("1E-20"),
    Decimal("-1E-20"),
    Decimal("100"),
    Decimal(10**28),
    Decimal(10**28 - 1),
    Decimal(10**29 + 7),
    Decimal("99999999999999999999999999999.99999999999999999999"),
    Decimal("0.000001"),
    Decimal("0.0000001"),
    Decimal("12.50"),
]
numbers = st.one_of(
    st.sampled_from(SPECIAL),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**30), max_value=10**30),
    st.integers(-(10**29), 10**29).map(Decimal),
)


@st.composite
def cells(draw: st.DrawFn) -> Cell:
    count = draw(st.integers(1, 10**6))
    sum_, min_, max_ = (draw(st.none() | numbers) for _ in range(3))
    latest = draw(st.none() | st.tuples(st.integers(0, 2**53), numbers))
    unique = draw(st.none() | st.sets(st.text(max_size=70), min_size=1, max_size=5))
    return count, sum_, min_, max_, latest, None if unique is None else dict.fromkeys(unique)


@given(st.text(min_size=1), st.text(min_size=1))
def test_uid_hash_is_the_64_bits_that_uid_key_remembers(meter: str, uid: str) -> None:
    decoded = int.from_bytes(base64.b64decode(uid_key(meter, uid) + "="), "big")
    assert wire.uid_hash(meter, uid) == decoded


@given(numbers)
def test_number_text_is_the_canonical_text_of_any_exact_number(number: Decimal) -> None:
    assert wire.number_text(number) == str(canonical(number))


@given(cells())
def test_a_cell_document_is_todays_state_document_and_reads_back(cell: Cell) -> None:
    document = wire.cell_document(cell)
    assert document == to_document(cell_state(cell))
    assert cell_state(wire.cell_from_document(document, "cell")) == cell_state(cell)
    assert from_document(document) == cell_state(cell)


@given(cells(), cells())
def test_merging_cells_agrees_with_todays_merge(a: Cell, b: Cell) -> None:
    expected = merge(cell_state(a), cell_state(b))
    assert cell_state(merge_cells(copy_cell(a), copy_cell(b))) == expected


entries = st.lists(
    st.tuples(
        st.sampled_from(["acme", "a|b", "é€😀", '"quoted"\\', "x" * 200, "z"]),
        st.integers(0, 10**7),
        st.binary(min_size=0, max_size=300).map(lambda b: orjson.dumps({"u": b.hex()})),
    ),
    max_size=30,
    unique_by=lambda entry: (entry[0], entry[1]),
).map(lambda items: [wire.Entry(*item) for item in sorted(items)])


@settings(max_examples=200)
@given(entries, st.integers(1200, 4000))
def test_delta_messages_stay_under_the_budget_and_keep_an_account_whole_when_it_fits(
    items: list[wire.Entry], budget: int
) -> None:
    chunks = wire.pack(items, budget)
    assert [entry for chunk in chunks for entry in chunk] == items
    for number, chunk in enumerate(chunks):
        value = wire.delta_value(2, 7, number, len(chunks), 123, chunk)
        assert len(value) <= budget
        document = orjson.loads(value)
        assert value == orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        assert {(a, int(s)) for a, slots in document["accounts"].items() for s in slots} == {
            (entry.account, entry.slot) for entry in chunk
        }
    for account in {entry.account for entry in items}:
        size = sum(
            wire.entry_bytes(wire.json_key(account), e.slot, e.piece)
            for e in items
            if e.account == account
        )
        holders = [chunk for chunk in chunks if any(e.account == account for e in chunk)]
        if size + wire.ENVELOPE_BYTES <= budget:
            assert len(holders) == 1


@given(
    st.dictionaries(
        st.integers(0, 2**40),
        st.dictionaries(st.text(max_size=5), cells(), min_size=1, max_size=3),
        max_size=3,
    ),
    st.sets(st.integers(0, 2**64 - 1), max_size=5),
)
def test_a_piece_and_a_segment_are_sorted_json_and_read_back(
    raw: dict[int, dict[str, Cell]], hashes: set[int]
) -> None:
    windows = {
        start: {(code, ""): cell for code, cell in cells_.items()} for start, cells_ in raw.items()
    }
    piece = wire.encode_piece(windows, hashes)
    assert piece == orjson.dumps(orjson.loads(piece), option=orjson.OPT_SORT_KEYS)
    decoded, uids = wire.decode_piece(orjson.loads(piece), "piece")
    assert sorted(uids) == sorted(hashes)
    assert {s: {k: cell_state(c) for k, c in w.items()} for s, w in decoded.items()} == {
        s: {k: cell_state(c) for k, c in w.items()} for s, w in windows.items()
    }
    if not windows and not hashes:
        return
    value = wire.segment_value(1, "a|b", 42, 9, windows, hashes)
    assert value == orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS)
    segment = wire.decode_snapshot(wire.segment_key("a|b", 42), value)
    assert isinstance(segment, wire.Segment)
    assert (segment.account, segment.slot, segment.seq, sorted(segment.uids)) == (
        "a|b",
        42,
        9,
        sorted(hashes),
    )


def test_a_segment_is_keyed_like_todays_usage_record() -> None:
    assert wire.segment_key("a|b%", 7) == b"a%7Cb%25|7"
    assert wire.marker_key(3) == b"|partition|3"


def test_a_snapshot_record_whose_content_is_not_its_key_is_refused() -> None:
    value = wire.segment_value(0, "acme", 5, 1, {}, [1])
    with pytest.raises(wire.WireError, match="do not match its key"):
        wire.decode_snapshot(wire.segment_key("globex", 5), value)
    with pytest.raises(wire.WireError, match="segment key"):
        wire.decode_snapshot(b"no-slot", value)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"n": 0}, "cell.n"),
        ({"n": 1, "s": 1.5}, "cell.s"),
        ({"n": 1, "s": "NaN"}, "cell.s"),
        ({"n": 1, "l": "1"}, "cell.lt"),
        ({"n": 1, "u": []}, "cell.u"),
    ],
)
def test_a_cell_that_is_not_exact_is_refused_naming_where(document: object, where: str) -> None:
    with pytest.raises(wire.WireError) as error:
        wire.cell_from_document(document, "cell")
    assert error.value.where == where


def test_packed_uids_must_be_whole_hashes() -> None:
    with pytest.raises(wire.WireError, match="8-byte"):
        wire.unpack_uids(base64.b64encode(b"1234567").decode(), "u")
    with pytest.raises(wire.WireError, match="not base64"):
        wire.unpack_uids("***", "u")

"""The HTTP edge's read model of `bills` stays bounded: old bills leave it, and each bill
keeps only its last version summaries (`connectors.bill_view`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from connectors.bill_view import BillView

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def snapshot(bill_id: str, version: int, ends: datetime) -> bytes:
    return orjson.dumps(
        {
            "id": bill_id,
            "version": version,
            "accountCode": "acme",
            "status": "PENDING",
            "total": "1.00",
            "startDate": (ends - timedelta(days=30)).isoformat(),
            "endDate": ends.isoformat(),
        }
    )


def view(now: list[datetime], **bounds: int) -> BillView:
    return BillView("127.0.0.1:1", "bills", clock=lambda: now[0].timestamp(), **bounds)


def test_a_bill_whose_period_ended_before_the_retention_is_not_kept() -> None:
    bills = view([NOW], retention_days=30)
    bills.apply(snapshot("old", 1, NOW - timedelta(days=31)))
    bills.apply(snapshot("recent", 1, NOW - timedelta(days=29)))
    assert bills.bill("old") is None and bills.bill("recent") is not None
    assert bills.size()["bills"] == 1


def test_bills_that_age_past_the_retention_are_swept_out() -> None:
    now = [NOW]
    bills = view(now, retention_days=30)
    for n in range(100):
        bills.apply(snapshot(f"bill-{n}", 1, NOW))
    now[0] = NOW + timedelta(days=31)
    bills.apply(snapshot("new", 1, now[0]))  # the next bill read sweeps
    assert bills.size()["bills"] == 1 and bills.bill("bill-0") is None
    assert [orjson.loads(raw)["id"] for raw in bills.bills()] == ["new"]


def test_a_bill_keeps_its_latest_version_and_only_its_last_version_summaries() -> None:
    bills = view([NOW], max_versions=5)
    for version in range(1, 21):
        bills.apply(snapshot("busy", version, NOW))
    assert [v["version"] for v in bills.versions("busy")] == ["16", "17", "18", "19", "20"]
    assert orjson.loads(bills.bill("busy") or b"{}")["version"] == 20
    assert bills.size()["versions"] == 5

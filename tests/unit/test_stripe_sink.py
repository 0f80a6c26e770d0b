"""The Stripe sink's pure parts: the bill diff, idempotency keys, retry verdicts and
backoff, the rate limiter, mode and trigger resolution, the ledger's merge rules."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe

from connectors.stripe_sink.diff import BillRejected, Desired, desired_items, diff
from connectors.stripe_sink.failures import Backoff, failure_from, retry_after, should_retry
from connectors.stripe_sink.keys import Operation, idempotency_key
from connectors.stripe_sink.ledger import Ledger, LedgerEntry, LedgerItem
from connectors.stripe_sink.limiter import TokenBucket, limiter_for
from connectors.stripe_sink.policy import Mode, SyncPolicy, Trigger
from streams.partitioning import partition_for
from streams.schemas.bill import Bill, BillStatus
from streams.settings import load_settings

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)


# Factories (shared with the sink's other tests) ------------------------------------------


def make_bill(
    lines: Sequence[tuple[str, str]] = (("STANDING_CHARGE", "10.00"), ("USAGE:calls", "2.50")),
    *,
    version: int = 1,
    status: str = "PENDING",
    bill_id: str = "bill_1",
    account: str = "acme",
    plan: str = "pro",
    currency: str = "USD",
    customer: str | None = "cus_1",
    subscription: str | None = None,
) -> Bill:
    """A bill with one line per (line id, subtotal)."""
    return Bill.model_validate(
        {
            "id": bill_id,
            "version": version,
            "accountCode": account,
            "accountPlanId": f"ap_{account}",
            "planCode": plan,
            "currency": currency,
            "status": status,
            "startDate": START,
            "endDate": END,
            "lines": [
                {
                    "id": line_id,
                    "lineItemType": "USAGE" if line_id.startswith("USAGE") else "STANDING_CHARGE",
                    "description": f"{line_id} charge",
                    "subtotal": subtotal,
                    "servicePeriodStartDate": START,
                    "servicePeriodEndDate": END,
                }
                for line_id, subtotal in lines
            ],
            "total": sum((Decimal(s) for _, s in lines), Decimal(0)),
            "generatedAt": START,
            "statusChangedAt": START,
            "reason": "CREATED" if version == 1 else "RECALCULATED",
            "stripeCustomerId": customer,
            "stripeSubscriptionId": subscription,
        }
    )


def held(desired: Desired, item_id: str = "ii_1", **changes: Any) -> LedgerItem:
    """The ledger's record of an item that matches `desired` (unless changed)."""
    fields: dict[str, Any] = {
        "itemId": item_id,
        "amount": desired.amount,
        "currency": desired.currency,
        "description": desired.description,
        "periodStart": desired.period_start,
        "periodEnd": desired.period_end,
    }
    return LedgerItem(**(fields | changes))


def entry(version: int, **fields: Any) -> LedgerEntry:
    base: dict[str, Any] = {
        "billId": "bill_1",
        "accountCode": "acme",
        "version": version,
        "status": "PENDING",
        "mode": "invoice",
    }
    return LedgerEntry(**(base | fields))


# What Stripe should hold --------------------------------------------------------------


def test_each_line_becomes_an_item_in_stripe_minor_units_and_lowercase_currency() -> None:
    wanted = desired_items(make_bill((("A", "10.00"), ("B", "0.07"))))
    assert {line: d.amount for line, d in wanted.items()} == {"A": 1000, "B": 7}
    assert {d.currency for d in wanted.values()} == {"usd"}
    assert wanted["A"].description == "A charge"
    assert (wanted["A"].period_start, wanted["A"].period_end) == (
        int(START.timestamp()),
        int(END.timestamp()),
    )


def test_zero_decimal_and_isk_amounts_follow_stripes_convention() -> None:
    assert desired_items(make_bill((("A", "500"),), currency="JPY"))["A"].amount == 500
    assert desired_items(make_bill((("A", "5"),), currency="ISK"))["A"].amount == 500


def test_a_three_decimal_amount_stripe_cannot_take_is_rejected_naming_the_line() -> None:
    assert desired_items(make_bill((("A", "1.230"),), currency="KWD"))["A"].amount == 1230
    with pytest.raises(BillRejected) as caught:
        desired_items(make_bill((("A", "1.000"), ("B", "1.235")), currency="KWD"))
    assert caught.value.field == "lines[1].subtotal"
    assert "steps of 10 minor units" in caught.value.rule


# The diff -----------------------------------------------------------------------------


def test_first_version_creates_one_item_per_line() -> None:
    changes = diff(desired_items(make_bill((("A", "1"), ("B", "2"), ("C", "3")))), {})
    assert [c.desired.line_id for c in changes.creates] == ["A", "B", "C"]
    assert (changes.updates, changes.deletes, changes.blocked) == ([], [], [])


def test_unchanged_lines_are_kept_without_any_write() -> None:
    wanted = desired_items(make_bill((("A", "1"), ("B", "2"))))
    current = {line: held(d, f"ii_{line}") for line, d in wanted.items()}
    changes = diff(wanted, current)
    assert changes.writes == 0
    assert changes.kept == current


def test_a_changed_line_is_updated_in_place_on_its_item() -> None:
    before = desired_items(make_bill((("A", "1"), ("B", "2"))))
    current = {line: held(d, f"ii_{line}") for line, d in before.items()}
    changes = diff(desired_items(make_bill((("A", "1.50"), ("B", "2")))), current)
    assert [(u.item.itemId, u.desired.amount) for u in changes.updates] == [("ii_A", 150)]
    assert changes.creates == [] and changes.deletes == []


def test_a_removed_line_deletes_its_item_and_a_new_line_creates_one() -> None:
    before = desired_items(make_bill((("A", "1"), ("B", "2"))))
    current = {line: held(d, f"ii_{line}") for line, d in before.items()}
    changes = diff(desired_items(make_bill((("A", "1"), ("C", "3")))), current)
    assert [(d.line_id, d.item.itemId) for d in changes.deletes] == [("B", "ii_B")]
    assert [c.desired.line_id for c in changes.creates] == ["C"]


def test_an_item_stripe_no_longer_lets_us_change_is_blocked_never_replaced() -> None:
    before = desired_items(make_bill((("A", "1"), ("B", "2"))))
    current = {
        "A": held(before["A"], "ii_A", editable=False),
        "B": held(before["B"], "ii_B", editable=False),
    }
    changes = diff(desired_items(make_bill((("A", "9"),))), current)
    assert changes.writes == 0
    assert [(b.line_id, b.item.itemId if b.item else None) for b in changes.blocked] == [
        ("A", "ii_A"),
        ("B", "ii_B"),
    ]
    assert "can no longer be changed" in changes.blocked[0].reason
    assert "can no longer be deleted" in changes.blocked[1].reason


def test_a_finalized_invoice_blocks_every_change_including_new_lines() -> None:
    before = desired_items(make_bill((("A", "1"),)))
    changes = diff(
        desired_items(make_bill((("A", "2"), ("B", "1")))),
        {"A": held(before["A"], "ii_A")},
        final=True,
    )
    assert changes.writes == 0
    assert {b.line_id for b in changes.blocked} == {"A", "B"}
    assert "not added" in next(b.reason for b in changes.blocked if b.line_id == "B")


def test_a_line_whose_currency_changed_is_blocked_because_stripe_cannot_change_it() -> None:
    before = desired_items(make_bill((("A", "1"),), currency="EUR"))
    changes = diff(desired_items(make_bill((("A", "1"),))), {"A": held(before["A"])})
    assert changes.writes == 0
    assert "currency changed from eur to usd" in changes.blocked[0].reason


# Idempotency keys ---------------------------------------------------------------------


def test_idempotency_keys_are_deterministic_and_differ_per_version_line_and_operation() -> None:
    key = idempotency_key("bill_1", 2, "A", Operation.CREATE_ITEM)
    assert key == idempotency_key("bill_1", 2, "A", Operation.CREATE_ITEM)
    assert key.startswith("meterline-") and len(key) <= 255
    others = {
        idempotency_key("bill_2", 2, "A", Operation.CREATE_ITEM),
        idempotency_key("bill_1", 3, "A", Operation.CREATE_ITEM),
        idempotency_key("bill_1", 2, "B", Operation.CREATE_ITEM),
        idempotency_key("bill_1", 2, "A", Operation.UPDATE_ITEM),
    }
    assert key not in others and len(others) == 4


def test_idempotency_key_fields_cannot_run_into_each_other() -> None:
    assert idempotency_key("bill_1", 12, "A", Operation.CREATE_ITEM) != idempotency_key(
        "bill_11", 2, "A", Operation.CREATE_ITEM
    )


# Retry verdicts and backoff -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (409, {}, True),
        (None, {}, True),  # network error or timeout: no answer at all
        (400, {}, False),
        (402, {}, False),
        (404, {}, False),
        (500, {"Stripe-Should-Retry": "false"}, False),
        (400, {"stripe-should-retry": "true"}, True),
    ],
)
def test_retry_verdict_follows_status_and_stripe_should_retry(
    status: int | None, headers: dict[str, str], retry: bool
) -> None:
    assert should_retry(status, headers) is retry


def test_retry_after_is_read_in_seconds_and_nonsense_is_ignored() -> None:
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after({}) is None


def test_a_stripe_rate_limit_error_becomes_a_retryable_failure_with_its_retry_after() -> None:
    error = stripe.RateLimitError(
        "Too many requests",
        http_status=429,
        json_body={"error": {"type": "invalid_request_error", "code": "rate_limit"}},
        headers={"Retry-After": "1", "Request-Id": "req_1"},
        code="rate_limit",
    )
    failure = failure_from("item.create", error)
    assert failure.retryable and failure.retry_after == 1.0
    assert failure.info.status == 429 and failure.code == "rate_limit"
    assert "item.create: HTTP 429 rate_limit" in str(failure)


def test_a_refusal_keeps_stripes_code_message_and_param() -> None:
    error = stripe.InvalidRequestError(
        "No such customer: 'cus_x'",
        "customer",
        code="resource_missing",
        http_status=404,
        headers={"request-id": "req_2"},
    )
    failure = failure_from("invoice.create", error)
    assert not failure.retryable
    assert failure.info.as_json() == {
        "status": 404,
        "code": "resource_missing",
        "message": "No such customer: 'cus_x'",
        "param": "customer",
        "requestId": "req_2",
    }


def test_a_network_error_is_retryable_and_has_no_status() -> None:
    failure = failure_from("item.update", stripe.APIConnectionError("read timed out"))
    assert failure.retryable and failure.status is None
    assert "no response" in str(failure)


def test_backoff_doubles_within_jitter_bounds_up_to_its_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=4.0, max_attempts=5)
    low = [backoff.delay(n, draw=lambda: 0.0) for n in range(1, 7)]
    high = [backoff.delay(n, draw=lambda: 1.0) for n in range(1, 7)]
    assert low == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(10_000, draw=lambda: 1.0) == 4.0


def test_backoff_waits_at_least_retry_after_but_never_past_its_cap() -> None:
    backoff = Backoff(base_s=0.1, max_s=3.0)
    assert backoff.delay(1, retry_after=1.0, draw=lambda: 0.0) == 1.0
    assert backoff.delay(1, retry_after=30.0, draw=lambda: 0.0) == 3.0


def test_backoff_is_exhausted_after_max_attempts() -> None:
    backoff = Backoff(max_attempts=3)
    assert [backoff.exhausted(n) for n in (1, 2, 3)] == [False, False, True]


# The rate limiter ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sent: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_token_bucket_spaces_calls_so_no_second_holds_more_than_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(35):
        bucket.acquire()
        clock.sent.append(clock.now)
    for first in clock.sent:
        assert sum(1 for t in clock.sent if first <= t < first + 1.0) <= 10
    assert clock.sent[-1] - clock.sent[0] == pytest.approx(3.4)


def test_a_late_wake_up_pushes_the_next_call_back_instead_of_bunching_them() -> None:
    clock = FakeClock()
    oversleep = [0.3]  # the first wait wakes 300 ms late (a busy interpreter)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds + (oversleep.pop() if oversleep else 0.0))

    bucket = TokenBucket(4, clock=lambda: clock.now, sleep=sleep)
    for _ in range(4):
        bucket.acquire()
        clock.sent.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(clock.sent)]
    assert gaps == pytest.approx([0.55, 0.25, 0.25])


def test_an_idle_bucket_refills_only_up_to_its_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, capacity=2, clock=lambda: clock.now, sleep=clock.sleep)
    clock.now += 60
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.25]


def test_rate_setting_defaults_to_20_for_test_keys_and_the_simulator_and_80_live() -> None:
    assert load_settings(stripe_api_key="sk_test_1").stripe_requests_per_second == 20
    assert load_settings(stripe_api_key="sk_live_1").stripe_requests_per_second == 80
    simulated = load_settings(stripe_api_key="sk_live_1", stripe_api_base="http://127.0.0.1:1")
    assert simulated.stripe_requests_per_second == 20
    assert load_settings(stripe_rate_limit=0).stripe_requests_per_second is None
    assert load_settings(stripe_rate_limit=5).stripe_requests_per_second == 5
    assert limiter_for(None).acquire() == 0.0


# Mode and trigger ---------------------------------------------------------------------


def test_an_account_override_wins_over_a_plan_override_over_the_default() -> None:
    policy = SyncPolicy(
        mode=Mode.INVOICE,
        overrides={"plan:pro": Mode.SUBSCRIPTION, "account:vip": Mode.INVOICE},
    )
    assert policy.mode_for(make_bill(plan="pro")) is Mode.SUBSCRIPTION
    assert policy.mode_for(make_bill(plan="pro", account="vip")) is Mode.INVOICE
    assert policy.mode_for(make_bill(plan="basic")) is Mode.INVOICE


def test_approved_only_skips_pending_versions_and_syncs_approved_and_locked() -> None:
    policy = SyncPolicy(trigger=Trigger.APPROVED_ONLY)
    assert [policy.wants(make_bill(status=s)) for s in ("PENDING", "APPROVED", "LOCKED")] == [
        False,
        True,
        True,
    ]
    assert SyncPolicy().wants(make_bill(status="PENDING"))


def test_only_invoice_mode_finalizes_and_only_settled_bills_when_set() -> None:
    policy = SyncPolicy(finalize_on_approval=True)
    assert policy.finalizes(make_bill(status="APPROVED"), Mode.INVOICE)
    assert not policy.finalizes(make_bill(status="PENDING"), Mode.INVOICE)
    assert not policy.finalizes(make_bill(status="LOCKED"), Mode.SUBSCRIPTION)
    assert not SyncPolicy().finalizes(make_bill(status="LOCKED"), Mode.INVOICE)


def test_policy_is_read_from_settings_including_the_overrides_mapping() -> None:
    settings = load_settings(
        stripe_mode="subscription",
        stripe_mode_overrides="plan:pro=invoice, account:cus_1=subscription",
        stripe_trigger="approved",
        stripe_finalize_on_approval=True,
        stripe_collection_method="send_invoice",
        stripe_days_until_due=14,
    )
    policy = SyncPolicy.from_settings(settings)
    assert policy.mode is Mode.SUBSCRIPTION
    assert policy.overrides == {"plan:pro": Mode.INVOICE, "account:cus_1": Mode.SUBSCRIPTION}
    assert policy.trigger is Trigger.APPROVED_ONLY and policy.finalize_on_approval
    assert (policy.collection_method, policy.days_until_due) == ("send_invoice", 14)


# The ledger ---------------------------------------------------------------------------


def test_the_ledger_keeps_the_latest_version_of_each_bill() -> None:
    ledger = Ledger()
    ledger.apply(entry(2, invoiceId="in_2"))
    ledger.apply(entry(1, invoiceId="in_1"))  # an older record read after a newer one
    found = ledger.get("bill_1")
    assert found is not None and found.version == 2 and found.invoiceId == "in_2"


def test_ledger_records_round_trip_and_a_tombstone_forgets_the_bill() -> None:
    wanted = desired_items(make_bill())
    record = entry(
        3,
        status=BillStatus.APPROVED,
        items={line: held(d, f"ii_{line}") for line, d in wanted.items()},
        finalized=True,
        conflicts={"A": "refused"},
    )
    ledger = Ledger()
    ledger.apply_record(b"bill_1", record.model_dump_json().encode(), "stripe.sync[0]@0")
    assert ledger.get("bill_1") == record
    assert record.total() == 1250
    ledger.apply_record(b"bill_1", None, "stripe.sync[0]@1")
    assert ledger.get("bill_1") is None


def test_an_unreadable_ledger_record_is_skipped_not_fatal() -> None:
    ledger = Ledger()
    ledger.apply_record(b"bill_1", b'{"billId": 1}', "stripe.sync[0]@0")
    assert ledger.entries == {}


def account_on(partition: int, partitions: int = 4) -> str:
    return next(
        f"cus_{n}" for n in range(1000) if partition_for(f"cus_{n}", partitions) == partition
    )


def test_the_ledger_keeps_only_the_bills_of_the_partitions_the_sink_owns() -> None:
    ledger = Ledger(partitions=4)
    for n in range(40):
        ledger.apply(entry(1, billId=f"bill_{n}", accountCode=account_on(n % 4)))
    assert ledger.own({0, 1}) == set()  # it held every bill until now
    assert len(ledger.entries) == 20
    assert {partition_for(e.accountCode, 4) for e in ledger.entries.values()} == {0, 1}
    ledger.apply(entry(1, billId="bill_x", accountCode=account_on(3)))  # not its partition
    assert ledger.get("bill_x") is None and len(ledger.entries) == 20
    assert ledger.own({1, 2}) == {2}  # partition 2's entries must be read again
    assert {partition_for(e.accountCode, 4) for e in ledger.entries.values()} == {1}

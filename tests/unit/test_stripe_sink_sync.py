"""Syncing bill versions into the Stripe simulator (no broker): invoices and items,
updates in place, crash recovery by adoption, conflicts instead of duplicates, the
failures that are retried and the ones that are not."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe

from connectors.stripe_sink.failures import StripeFailure
from connectors.stripe_sink.ledger import LedgerEntry
from connectors.stripe_sink.limiter import Unlimited
from connectors.stripe_sink.policy import Mode, SyncPolicy
from connectors.stripe_sink.stripe_api import StripeGateway
from connectors.stripe_sink.sync import Syncer, SyncRefused, SyncResult
from streams.schemas.bill import Bill
from tests.unit.test_stripe_sink import make_bill


@pytest.fixture
def client(url: str) -> Iterator[stripe.StripeClient]:
    http = stripe.HTTPXClient(timeout=0.5, allow_sync_methods=True)
    yield stripe.StripeClient(
        "sk_test_sync", base_addresses={"api": url}, max_network_retries=0, http_client=http
    )
    http.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def syncer(client: stripe.StripeClient, pool: ThreadPoolExecutor, **policy: Any) -> Syncer:
    return Syncer(StripeGateway(client, Unlimited()), SyncPolicy(**policy), pool)


def customer(client: stripe.StripeClient) -> str:
    return str(client.v1.customers.create(params={"email": "ada@example.com"}).id)


def subscription(client: stripe.StripeClient, customer_id: str) -> str:
    product = client.v1.products.create(params={"name": "Pro"})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )
    created = client.v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"price": price.id}]}
    )
    return str(created.id)


def state(url: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{url}/_sim/state").json()
    return found


def items_of(url: str, bill: Bill) -> dict[str, dict[str, Any]]:
    """The simulator's items of `bill` by line id; fails on a second item for a line."""
    by_line: dict[str, dict[str, Any]] = {}
    for item in state(url)["invoiceitems"]:
        if item["metadata"].get("bill_id") == bill.id:
            line = item["metadata"]["line_id"]
            assert line not in by_line, f"two items for line {line}"
            by_line[line] = item
    return by_line


def set_faults(url: str, **faults: Any) -> None:
    httpx.post(f"{url}/_sim/faults", json=faults).raise_for_status()


def v(version: int, lines: tuple[tuple[str, str], ...], cus: str, **fields: Any) -> Bill:
    return make_bill(lines, version=version, customer=cus, **fields)


# Invoice mode --------------------------------------------------------------------------


def test_first_version_creates_a_draft_invoice_with_one_item_per_line(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    bill = v(1, (("A", "10.00"), ("B", "2.50")), cus)
    result = syncer(client, pool).sync(bill, None, Mode.INVOICE)

    (invoice,) = state(url)["invoices"]
    assert invoice["status"] == "draft" and invoice["auto_advance"] is False
    assert invoice["metadata"] == {"bill_id": bill.id, "account": "acme", "plan": "pro"}
    items = items_of(url, bill)
    assert {line: i["amount"] for line, i in items.items()} == {"A": 1000, "B": 250}
    assert {i["invoice"] for i in items.values()} == {invoice["id"]}
    assert invoice["total"] == 1250
    assert result.entry.invoiceId == invoice["id"] and result.entry.total() == 1250
    assert result.conflicts == [] and result.writes == 3


def test_later_versions_update_items_in_place_delete_removed_lines_and_add_new_ones(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    first = sync.sync(v(1, (("A", "10.00"), ("B", "2.50")), cus), None, Mode.INVOICE)
    second = v(2, (("A", "12.00"), ("C", "1.00")), cus)
    result = sync.sync(second, first.entry, Mode.INVOICE)

    items = items_of(url, second)
    assert set(items) == {"A", "C"}
    assert items["A"]["id"] == first.entry.items["A"].itemId and items["A"]["amount"] == 1200
    assert result.entry.total() == 1300 and result.conflicts == []
    assert len(state(url)["invoices"]) == 1


def test_an_approved_bill_finalizes_its_invoice_when_set(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool, finalize_on_approval=True)
    first = sync.sync(v(1, (("A", "10.00"),), cus), None, Mode.INVOICE)
    assert not first.entry.finalized
    approved = sync.sync(v(2, (("A", "10.00"),), cus, status="APPROVED"), first.entry, Mode.INVOICE)

    (invoice,) = state(url)["invoices"]
    assert invoice["status"] == "open" and approved.entry.finalized


def test_finalizing_again_after_a_crash_finds_the_invoice_final_and_moves_on(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool, finalize_on_approval=True)
    bill = v(1, (("A", "10.00"),), cus, status="APPROVED")
    first = sync.sync(bill, None, Mode.INVOICE)
    unrecorded = first.entry.model_copy(update={"finalized": False, "version": 0})
    again = sync.sync(bill.model_copy(update={"version": 2}), unrecorded, Mode.INVOICE)
    assert again.entry.finalized and again.conflicts == []


def test_a_change_to_a_finalized_invoice_is_a_conflict_and_no_new_item_is_created(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    first = sync.sync(v(1, (("A", "10.00"),), cus), None, Mode.INVOICE)
    client.v1.invoices.finalize_invoice(str(first.entry.invoiceId))  # by hand, in Stripe
    changed = v(2, (("A", "11.00"), ("B", "1.00")), cus)
    result = sync.sync(changed, first.entry, Mode.INVOICE)

    assert set(items_of(url, changed)) == {"A"}
    assert items_of(url, changed)["A"]["amount"] == 1000
    reasons = {c.line_id: c for c in result.conflicts}
    assert reasons["A"].item_id == first.entry.items["A"].itemId
    assert reasons["A"].stripe_error is not None
    assert reasons["A"].stripe_error.code == "invoice_not_editable"
    assert "can no longer take items" in reasons["B"].reason
    assert reasons["*total"].kind == "drift"
    assert result.entry.items["A"].editable is False

    # The next version does not even ask Stripe: the item is known to be final.
    requests_before = httpx.get(f"{url}/_sim/stats").json()["total"]
    again = sync.sync(v(3, (("A", "12.00"),), cus), result.entry, Mode.INVOICE)
    assert httpx.get(f"{url}/_sim/stats").json()["total"] == requests_before
    # Only what changed is reported again: A's new amount; the drift (1000 held, 1200
    # billed) is the one already reported.
    assert {c.line_id for c in again.conflicts} == {"A"}
    assert set(again.entry.conflicts) == {"A", "*total"}


def test_a_crash_before_the_ledger_record_adopts_the_invoice_and_items_already_in_stripe(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    bill = v(1, (("A", "10.00"), ("B", "2.50")), cus)
    lost = sync.sync(bill, None, Mode.INVOICE)  # its ledger record never made it
    # Replayed later with other parameters (a new version): keys differ, adoption holds.
    replay = v(2, (("A", "10.00"), ("B", "3.00")), cus)
    result = sync.sync(replay, None, Mode.INVOICE)

    assert len(state(url)["invoices"]) == 1
    items = items_of(url, replay)
    assert {line: i["id"] for line, i in items.items()} == {
        line: item.itemId for line, item in lost.entry.items.items()
    }
    assert items["B"]["amount"] == 300 and result.entry.total() == 1300


# Subscription mode ---------------------------------------------------------------------


def test_subscription_mode_keeps_pending_items_on_the_customers_subscription(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sub = subscription(client, cus)
    sync = syncer(client, pool)
    invoices_before = len(state(url)["invoices"])
    first = sync.sync(
        v(1, (("A", "10.00"), ("B", "2.50")), cus, subscription=sub), None, Mode.SUBSCRIPTION
    )
    second = v(2, (("A", "11.00"),), cus, subscription=sub)
    result = sync.sync(second, first.entry, Mode.SUBSCRIPTION)

    items = items_of(url, second)
    assert set(items) == {"A"} and items["A"]["id"] == first.entry.items["A"].itemId
    assert items["A"]["invoice"] is None and items["A"]["amount"] == 1100
    assert items["A"]["parent"]["subscription_details"]["subscription"] == sub
    assert len(state(url)["invoices"]) == invoices_before  # no invoice of our own
    assert result.entry.invoiceId is None and result.entry.mode is Mode.SUBSCRIPTION


def test_subscription_mode_adopts_pending_items_left_by_a_crash(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    bill = v(1, (("A", "10.00"), ("B", "2.50")), cus)
    sync.sync(bill, None, Mode.SUBSCRIPTION)
    result = sync.sync(bill, None, Mode.SUBSCRIPTION)
    assert len(items_of(url, bill)) == 2
    assert result.writes == 0


def test_a_counter_credit_is_a_negative_item_updated_in_place_and_the_invoice_keeps_the_total(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool, finalize_on_approval=True)
    seats = "COUNTER_ADJUSTMENT:seats:2024-04-16T00:00:00+00:00"
    first = sync.sync(v(1, (("A", "40.00"), (seats, "5.00")), cus), None, Mode.INVOICE)
    second = v(2, (("A", "40.00"), (seats, "-4.00")), cus, status="APPROVED")
    result = sync.sync(second, first.entry, Mode.INVOICE)

    items = items_of(url, second)
    assert items[seats]["id"] == first.entry.items[seats].itemId
    assert items[seats]["amount"] == -400
    (invoice,) = state(url)["invoices"]
    assert (invoice["status"], invoice["total"], invoice["amount_due"]) == ("open", 3600, 3600)
    assert result.entry.total() == 3600 and result.conflicts == []


# Failures ------------------------------------------------------------------------------


def test_a_missing_customer_is_refused_naming_the_account(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    with pytest.raises(SyncRefused) as caught:
        syncer(client, pool).sync(v(1, (("A", "1"),), "cus_gone"), None, Mode.INVOICE)
    assert "account acme: Stripe has no customer cus_gone" in caught.value.reason
    assert caught.value.failure is not None
    assert caught.value.failure.code == "resource_missing"


def test_a_bill_without_a_stripe_customer_is_refused(
    client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    with pytest.raises(SyncRefused, match="stripeCustomerId: missing; account acme"):
        syncer(client, pool).sync(make_bill(customer=None), None, Mode.INVOICE)


def test_a_rate_limited_write_raises_a_retryable_failure_and_the_retry_completes_once(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    bill = v(1, (("A", "10.00"), ("B", "2.50"), ("C", "1.00")), cus)
    set_faults(url, rate_429=1.0, paths=["/v1/invoiceitems"])
    with pytest.raises(StripeFailure) as caught:
        sync.sync(bill, None, Mode.INVOICE)
    assert caught.value.retryable and caught.value.retry_after == 1.0
    set_faults(url, rate_429=0.0)
    result = sync.sync(bill, None, Mode.INVOICE)
    assert len(items_of(url, bill)) == 3 and len(state(url)["invoices"]) == 1
    assert result.entry.total() == 1350


def test_a_timeout_after_stripe_applied_the_write_is_retried_into_the_same_item(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    bill = v(1, (("A", "10.00"),), cus)
    first = sync.sync(bill, None, Mode.SUBSCRIPTION)
    changed = v(2, (("A", "20.00"),), cus)
    set_faults(url, rate_timeout_after_apply=1.0, timeout_mode="drop")
    with pytest.raises(StripeFailure) as caught:
        sync.sync(changed, first.entry, Mode.SUBSCRIPTION)
    assert caught.value.retryable and caught.value.status is None
    set_faults(url, rate_timeout_after_apply=0.0)
    result: SyncResult = sync.sync(changed, first.entry, Mode.SUBSCRIPTION)
    (item,) = items_of(url, changed).values()
    assert item["amount"] == 2000 and result.entry.items["A"].itemId == item["id"]


def test_an_item_deleted_by_hand_is_a_conflict_and_is_not_recreated(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    first = sync.sync(v(1, (("A", "10.00"),), cus), None, Mode.SUBSCRIPTION)
    client.v1.invoice_items.delete(first.entry.items["A"].itemId)
    result = sync.sync(v(2, (("A", "11.00"),), cus), first.entry, Mode.SUBSCRIPTION)
    assert items_of(url, make_bill()) == {}
    (conflict, drift) = sorted(result.conflicts, key=lambda c: c.kind)
    assert "no longer exists in Stripe; not recreated" in conflict.reason
    assert drift.kind == "drift"
    entry: LedgerEntry = result.entry
    assert entry.items["A"].editable is False


def test_each_segment_line_is_its_own_item_updated_in_place_with_its_segment(
    url: str, client: stripe.StripeClient, pool: ThreadPoolExecutor
) -> None:
    cus = customer(client)
    sync = syncer(client, pool)
    eu, us = 'USAGE:calls:{"region":"eu"}', 'USAGE:calls:{"region":"us"}'

    def segmented(version: int, amounts: dict[str, str]) -> Bill:
        bill = v(version, tuple(amounts.items()), cus)
        lines = [
            line.model_copy(update={"segment": {"region": line.id.split('"')[3]}})
            for line in bill.lines
        ]
        return bill.model_copy(update={"lines": tuple(lines)})

    first = sync.sync(segmented(1, {eu: "6.00", us: "1.00"}), None, Mode.INVOICE)
    second = segmented(2, {eu: "8.00", us: "1.00"})
    result = sync.sync(second, first.entry, Mode.INVOICE)

    items = items_of(url, second)
    assert {line: item["amount"] for line, item in items.items()} == {eu: 800, us: 100}
    assert items[eu]["id"] == first.entry.items[eu].itemId
    assert items[eu]["metadata"]["segment"] == '{"region":"eu"}'
    assert items[us]["metadata"]["segment"] == '{"region":"us"}'
    assert result.entry.total() == 900 and result.conflicts == []

"""The Stripe sink on a real broker and the Stripe simulator: bill versions on `bills`
become Stripe invoice items, in both modes and with both triggers; the ledger carries a
restarted sink on; bad input is dead-lettered with its reason."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import stripe
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka.broker import free_port
from connectors.kafka.producer import new_producer
from connectors.stripe_sink.sink import StripeSink
from streams.money import to_stripe_amount
from streams.schemas.bill import Bill
from streams.settings import Settings, load_settings
from streams.topics import Topics
from tests.support import eventually
from tests.unit.test_stripe_sink import make_bill

pytestmark = pytest.mark.integration

PARTITIONS = 3
SUBSCRIPTION_PLAN = "metered"  # the plan the tests switch to subscription mode


# Fixtures and helpers (shared with test_stripe_sink_faults) ----------------------------


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_tests", base_addresses={"api": url})


@dataclass(frozen=True)
class Account:
    code: str
    plan: str
    customer: str
    subscription: str | None

    def bill(self, version: int, lines: Sequence[tuple[str, str]], status: str = "PENDING") -> Bill:
        return make_bill(
            lines,
            version=version,
            status=status,
            bill_id=f"bill_{self.code}",
            account=self.code,
            plan=self.plan,
            customer=self.customer,
            subscription=self.subscription,
        )


def new_account(url: str, plan: str = "standard") -> Account:
    """A Stripe customer (and, for the subscription-mode plan, a subscription)."""
    client = sdk(url)
    customer = client.v1.customers.create(params={"email": "ops@example.com"}).id
    subscription = None
    if plan == SUBSCRIPTION_PLAN:
        product = client.v1.products.create(params={"name": "Metered"})
        price = client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 0,
                "recurring": {"interval": "month"},
            }
        )
        params: Any = {"customer": customer, "items": [{"price": price.id}]}
        subscription = client.v1.subscriptions.create(params=params).id
    return Account(f"acct_{uuid.uuid4().hex[:8]}", plan, customer, subscription)


def sink_settings(bootstrap: str, topics: Topics, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": topics.prefix,
        "partitions": topics.partitions,
        "app_id": topics.prefix.rstrip("."),
        "sink_port": free_port(),
        "stripe_api_base": url,
        "stripe_api_key": "sk_test_tests",
        "stripe_mode_overrides": f"plan:{SUBSCRIPTION_PLAN}=subscription",
        "stripe_rate_limit": 0,
        "stripe_retry_base_s": 0.05,
        "stripe_retry_max_s": 1.0,
    }
    return load_settings(**(values | overrides))


@contextmanager
def running(settings: Settings, group_id: str | None = None) -> Iterator[StripeSink]:
    """A sink on a thread of this process, consuming all partitions."""
    sink = StripeSink(settings, group_id=group_id)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as error:
            failures.append(error)
            raise

    thread = threading.Thread(target=run, name="stripe-sink", daemon=True)
    thread.start()
    try:
        eventually(lambda: len(sink.assigned) == PARTITIONS or failures, timeout=60)
        assert not failures, failures
        yield sink
    finally:
        sink.stopping.set()
        thread.join(30)
    assert not failures, failures


def produce(bootstrap: str, topics: Topics, values: Sequence[Bill | bytes]) -> None:
    producer = new_producer(bootstrap)
    for value in values:
        if isinstance(value, Bill):
            producer.produce(topics.bills, key=value.accountCode, value=value.model_dump_json())
        else:
            producer.produce(topics.bills, key=b"garbage", value=value)
    assert producer.flush(30) == 0


def handled(sink: StripeSink) -> int:
    """Bill messages whose offsets the sink stored (retries not counted)."""
    return sum(n for label, n in sink.outcomes.items() if label != "retry")


def wait_handled(sink: StripeSink, count: int) -> None:
    eventually(lambda: handled(sink) >= count, timeout=60)


def stripe_state(url: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{url}/_sim/state", timeout=30).json()
    return found


def items_by_bill(url: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in stripe_state(url)["invoiceitems"]:
        found[item["metadata"].get("bill_id", "")].append(item)
    return found


def our_invoices(url: str) -> list[dict[str, Any]]:
    """Invoices the sink created (the subscriptions' own invoices carry no bill id)."""
    return [i for i in stripe_state(url)["invoices"] if i["metadata"].get("bill_id")]


def mismatches(url: str, bills: Sequence[Bill]) -> list[str]:
    """What Stripe gets wrong about these bills: a line without exactly one item, an item
    without a line, items not adding up to the bill total, more than one invoice."""
    held = items_by_bill(url)
    invoices: dict[str, int] = defaultdict(int)
    for invoice in stripe_state(url)["invoices"]:
        invoices[invoice["metadata"].get("bill_id", "")] += 1
    problems = []
    for bill in bills:
        lines = sorted(i["metadata"]["line_id"] for i in held[bill.id])
        if lines != sorted(line.id for line in bill.lines):
            problems.append(f"{bill.id}: items for lines {lines}")
        total = sum(i["amount"] for i in held[bill.id])
        if total != to_stripe_amount(bill.total, bill.currency):
            problems.append(f"{bill.id}: items add up to {total}, bill total {bill.total}")
        if invoices[bill.id] > 1:
            problems.append(f"{bill.id}: {invoices[bill.id]} invoices")
    return problems


def read_all(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    """At least `expected` records of `topic` (all partitions), polled with a deadline."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    records: list[dict[str, Any]] = []

    def more() -> bool:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            records.append(orjson.loads(message.value() or b"null"))
        return len(records) >= expected

    try:
        eventually(more, timeout=30, interval=0)
    finally:
        consumer.close()
    return records


# Both modes, both triggers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "finalize"),
    [("every-version", True), ("approved-only", True), ("every-version", False)],
)
def test_bill_versions_become_invoice_items_in_both_modes(
    kafka_bootstrap: str, topics: Topics, url: str, trigger: str, finalize: bool
) -> None:
    by_invoice = new_account(url)
    by_subscription = new_account(url, SUBSCRIPTION_PLAN)
    accounts = (by_invoice, by_subscription)
    settings = sink_settings(
        kafka_bootstrap,
        topics,
        url,
        stripe_trigger=trigger,
        stripe_finalize_on_approval=finalize,
    )
    every = trigger == "every-version"
    v1 = (("STANDING_CHARGE", "10.00"), ("USAGE:calls", "2.50"), ("USAGE:storage", "1.25"))
    v2 = (("STANDING_CHARGE", "10.00"), ("USAGE:calls", "4.75"))  # calls changed, storage gone
    with running(settings) as sink:
        produce(kafka_bootstrap, topics, [a.bill(1, v1) for a in accounts])
        wait_handled(sink, 2)
        first = items_by_bill(url)
        if every:
            assert mismatches(url, [a.bill(1, v1) for a in accounts]) == []
        else:
            assert first == {} and our_invoices(url) == []

        produce(kafka_bootstrap, topics, [a.bill(2, v2) for a in accounts])
        wait_handled(sink, 4)
        if every:
            assert mismatches(url, [a.bill(2, v2) for a in accounts]) == []
            for account in accounts:
                before = {i["metadata"]["line_id"]: i["id"] for i in first[f"bill_{account.code}"]}
                after = {
                    i["metadata"]["line_id"]: i["id"]
                    for i in items_by_bill(url)[f"bill_{account.code}"]
                }
                assert after == {line: before[line] for line in after}  # updated in place
                assert "USAGE:storage" not in after  # deleted
        else:
            assert items_by_bill(url) == {}

        produce(kafka_bootstrap, topics, [a.bill(3, v2, "APPROVED") for a in accounts])
        wait_handled(sink, 6)
        assert mismatches(url, [a.bill(3, v2, "APPROVED") for a in accounts]) == []

    held = items_by_bill(url)
    (invoice,) = our_invoices(url)  # only the invoice-mode bill has one
    assert invoice["metadata"]["bill_id"] == f"bill_{by_invoice.code}"
    assert invoice["status"] == ("open" if finalize else "draft")
    assert {i["invoice"] for i in held[f"bill_{by_invoice.code}"]} == {invoice["id"]}
    pending = held[f"bill_{by_subscription.code}"]
    assert {i["invoice"] for i in pending} == {None}
    assert {i["parent"]["subscription_details"]["subscription"] for i in pending} == {
        by_subscription.subscription
    }


# Restarts ------------------------------------------------------------------------------


def test_a_restarted_sink_loads_the_ledger_and_writes_nothing_twice(
    kafka_bootstrap: str, topics: Topics, url: str
) -> None:
    accounts = [new_account(url), new_account(url, SUBSCRIPTION_PLAN)]
    lines = (("STANDING_CHARGE", "10.00"), ("USAGE:calls", "2.50"))
    settings = sink_settings(kafka_bootstrap, topics, url)
    produce(kafka_bootstrap, topics, [a.bill(1, lines) for a in accounts])
    with running(settings, group_id=f"{topics.prefix}first") as sink:
        wait_handled(sink, 2)
    synced = stripe_state(url)["invoiceitems"]

    # A new consumer group starts again from the first offset: only the ledger stands
    # between it and a second set of items.
    httpx.delete(f"{url}/_sim/stats").raise_for_status()
    changed = (("STANDING_CHARGE", "10.00"), ("USAGE:calls", "3.00"))
    produce(kafka_bootstrap, topics, [a.bill(2, changed) for a in accounts])
    with running(settings, group_id=f"{topics.prefix}second") as sink:
        wait_handled(sink, 4)
        assert sink.outcomes == {"skipped_synced": 2, "synced": 2}
    stats = httpx.get(f"{url}/_sim/stats").json()
    assert stats["by_endpoint"] == {"POST /v1/invoiceitems/{id}": 2}  # two updates, no more
    assert {i["id"] for i in stripe_state(url)["invoiceitems"]} == {i["id"] for i in synced}
    assert mismatches(url, [a.bill(2, changed) for a in accounts]) == []


# Bad input -----------------------------------------------------------------------------


def test_bad_bills_are_dead_lettered_with_their_reason_and_the_next_bill_is_synced(
    kafka_bootstrap: str, topics: Topics, url: str
) -> None:
    good = new_account(url)
    lost = Account("acct_lost", "standard", "cus_doesnotexist", None)
    kwd = Account("acct_kwd", "standard", good.customer, None)
    settings = sink_settings(kafka_bootstrap, topics, url)
    lines = (("STANDING_CHARGE", "10.00"),)
    produce(
        kafka_bootstrap,
        topics,
        [
            b'{"id": "bill_x", "version": 0}',
            lost.bill(1, lines),
            kwd.bill(1, (("USAGE:calls", "1.005"),)).model_copy(update={"currency": "KWD"}),
            good.bill(1, lines),
        ],
    )
    with running(settings) as sink:
        wait_handled(sink, 4)
        assert sink.outcomes == {"dead_letter": 3, "synced": 1}
    assert mismatches(url, [good.bill(1, lines)]) == []

    problems = read_all(kafka_bootstrap, topics.stripe_conflicts, 3)
    by_account = {p.get("accountCode"): p for p in problems}
    assert {p["kind"] for p in problems} == {"dead_letter"}
    unreadable = by_account["garbage"]
    assert unreadable["reason"].startswith("not a Bill: version: Input should be greater")
    assert unreadable["payload"] == '{"id": "bill_x", "version": 0}'
    assert unreadable["source"].startswith(f"{topics.bills}[")
    missing = by_account["acct_lost"]
    assert "account acct_lost: Stripe has no customer cus_doesnotexist" in missing["reason"]
    assert missing["stripeError"]["code"] == "resource_missing"
    assert by_account["acct_kwd"]["reason"].startswith("lines[0].subtotal: 1.005 KWD")

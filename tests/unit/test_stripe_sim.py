"""The Stripe simulator, driven through the official stripe SDK and its admin endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stripe

from connectors.stripe_sim import ACACIA, BASIL
from connectors.stripe_sim.forms import Params, parse_form
from tests.support import eventually

SECRET = "whsec_test_simulator"


# Fixtures and factories ------------------------------------------------------------------


def sdk(url: str, version: str = BASIL, **options: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_sim",
        base_addresses={"api": url},
        stripe_version=version,
        max_network_retries=options.pop("retries", 0),
        **options,
    )


@pytest.fixture
def client(url: str) -> stripe.StripeClient:
    return sdk(url)


def set_faults(url: str, **faults: Any) -> None:
    httpx.post(f"{url}/_sim/faults", json=faults).raise_for_status()


def new_customer(client: stripe.StripeClient, **fields: Any) -> stripe.Customer:
    params: Any = {"email": "ada@example.com", **fields}
    return client.v1.customers.create(params=params)


def new_price(client: stripe.StripeClient, amount: int = 1000, **fields: Any) -> stripe.Price:
    product = client.v1.products.create(params={"name": "Pro"})
    params: Any = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": amount,
        "recurring": {"interval": "month"},
        **fields,
    }
    return client.v1.prices.create(params=params)


def new_subscription(client: stripe.StripeClient, customer: str, price: str) -> stripe.Subscription:
    return client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": price}], "metadata": {"plan": "pro"}}
    )


def draft_invoice(client: stripe.StripeClient, customer: str, **fields: Any) -> stripe.Invoice:
    params: Any = {
        "customer": customer,
        "auto_advance": False,
        "pending_invoice_items_behavior": "exclude",
        **fields,
    }
    return client.v1.invoices.create(params=params)


def add_item(
    client: stripe.StripeClient, customer: str, amount: int, **fields: Any
) -> stripe.InvoiceItem:
    params: Any = {"customer": customer, "amount": amount, "currency": "usd", **fields}
    return client.v1.invoice_items.create(params=params)


# Form encoding -------------------------------------------------------------------------


def test_bracket_notation_decodes_into_nested_lists_and_dicts() -> None:
    body = (
        "expand[]=customer&expand[]=latest_invoice&items[1][price]=p2&items[0][price]=p1"
        "&items[0][metadata][7]=seven&period[start]=1&lookup_keys[0]=pro"
    )
    assert parse_form(body) == {
        "expand": ["customer", "latest_invoice"],
        "items": [{"price": "p1", "metadata": {"7": "seven"}}, {"price": "p2"}],
        "period": {"start": "1"},
        "lookup_keys": ["pro"],
    }


def test_metadata_updates_merge_and_an_empty_value_unsets_a_key() -> None:
    params = Params(parse_form("metadata[keep]=1&metadata[drop]="))
    assert params.metadata({"drop": "x", "old": "y"}) == {"old": "y", "keep": "1"}
    assert Params(parse_form("metadata=")).metadata({"old": "y"}) == {}


# Customers, catalog, subscriptions -------------------------------------------------------


def test_customers_are_created_updated_listed_and_deleted(client: stripe.StripeClient) -> None:
    customer = new_customer(client, name="Ada", metadata={"account": "acme"})
    updated = client.v1.customers.update(
        customer.id, params={"name": "Ada L.", "metadata": {"tier": "gold"}}
    )
    assert customer.id.startswith("cus_") and customer.livemode is False
    assert updated.name == "Ada L."
    assert updated["metadata"].to_dict() == {"account": "acme", "tier": "gold"}
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]
    assert client.v1.customers.delete(customer.id).deleted is True
    assert client.v1.customers.list().data == []


def test_an_unknown_object_is_a_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.retrieve("cus_missing")
    assert refused.value.http_status == 404
    assert refused.value.code == "resource_missing"


def test_requests_without_a_test_secret_key_are_401(url: str) -> None:
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("pk_live_nope", base_addresses={"api": url}).v1.customers.list()
    assert httpx.get(f"{url}/v1/customers").status_code == 401


def test_an_unknown_parameter_is_rejected_with_its_name(client: stripe.StripeClient) -> None:
    typo: Any = {"emial": "typo@example.com"}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.customers.create(params=typo)
    assert refused.value.code == "parameter_unknown"
    assert refused.value.param == "emial"


def test_prices_are_found_by_lookup_key(client: stripe.StripeClient) -> None:
    pro = new_price(client, lookup_key="pro_monthly")
    new_price(client, lookup_key="basic_monthly")
    found = client.v1.prices.list(params={"lookup_keys": ["pro_monthly"]})
    assert [price.id for price in found.data] == [pro.id]
    assert pro.unit_amount == 1000 and pro.recurring is not None


def test_the_global_api_base_configuration_works_too(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe, "api_key", "sk_test_global")
    monkeypatch.setattr(stripe, "api_base", url)
    customer = stripe.Customer.create(email="global@example.com")
    assert stripe.Customer.retrieve(customer.id).email == "global@example.com"


def test_basil_subscriptions_carry_periods_on_their_items(client: stripe.StripeClient) -> None:
    customer, price = new_customer(client), new_price(client)
    subscription = new_subscription(client, customer.id, price.id)
    item = subscription["items"].data[0]
    assert subscription.status == "active" and subscription.metadata["plan"] == "pro"
    assert item.id.startswith("si_") and item.price.id == price.id
    assert item.current_period_end > item.current_period_start
    assert "current_period_end" not in subscription


def test_acacia_subscriptions_carry_periods_and_plan_on_the_subscription(url: str) -> None:
    client = sdk(url, ACACIA)
    customer, price = new_customer(client), new_price(client)
    subscription = new_subscription(client, customer.id, price.id)
    assert subscription["current_period_end"] > subscription["current_period_start"]
    assert subscription["items"].data[0].plan.id == price.id
    assert "current_period_end" not in subscription["items"].data[0]


def test_changing_an_items_price_keeps_the_item(client: stripe.StripeClient) -> None:
    customer, pro, team = new_customer(client), new_price(client), new_price(client, 5000)
    subscription = new_subscription(client, customer.id, pro.id)
    item_id = subscription["items"].data[0].id
    updated = client.v1.subscriptions.update(
        subscription.id,
        params={"items": [{"id": item_id, "price": team.id}], "proration_behavior": "none"},
    )
    assert [(i.id, i.price.id) for i in updated["items"].data] == [(item_id, team.id)]


def test_subscriptions_are_listed_by_customer_and_canceled(client: stripe.StripeClient) -> None:
    ada, bob, price = new_customer(client), new_customer(client), new_price(client)
    subscription = new_subscription(client, ada.id, price.id)
    new_subscription(client, bob.id, price.id)
    listed = client.v1.subscriptions.list(params={"customer": ada.id})
    assert [s.id for s in listed.data] == [subscription.id]
    canceled = client.v1.subscriptions.cancel(subscription.id)
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    assert client.v1.subscriptions.list(params={"customer": ada.id}).data == []
    everything = client.v1.subscriptions.list(params={"customer": ada.id, "status": "all"})
    assert [s.id for s in everything.data] == [subscription.id]


def test_expand_replaces_an_id_by_its_object(client: stripe.StripeClient) -> None:
    customer, price = new_customer(client), new_price(client)
    subscription = new_subscription(client, customer.id, price.id)
    expanded: Any = client.v1.subscriptions.retrieve(
        subscription.id, params={"expand": ["customer", "latest_invoice"]}
    )
    assert expanded.customer.email == "ada@example.com"
    assert expanded.latest_invoice.billing_reason == "subscription_create"


# Invoices and invoice items --------------------------------------------------------------


def test_draft_invoice_totals_are_the_sum_of_its_items(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    invoice = draft_invoice(client, customer.id, metadata={"bill_id": "b1"}, description="May")
    add_item(client, customer.id, 1500, invoice=invoice.id, description="API calls")
    client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": invoice.id,
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.125"),
            "quantity": 1003,
            "period": {"start": 1_700_000_000, "end": 1_702_592_000},
        }
    )
    draft = client.v1.invoices.retrieve(invoice.id)
    assert draft.status == "draft" and draft["metadata"]["bill_id"] == "b1"
    assert [line.amount for line in draft.lines.data] == [1500, 125]  # 125.375 rounds half-up
    assert (draft.subtotal, draft.total, draft.amount_due) == (1625, 1625, 1625)


def test_items_of_a_draft_invoice_can_be_updated_and_deleted(
    client: stripe.StripeClient,
) -> None:
    customer = new_customer(client)
    invoice = draft_invoice(client, customer.id)
    kept = add_item(client, customer.id, 100, invoice=invoice.id)
    dropped = add_item(client, customer.id, 200, invoice=invoice.id)
    updated = client.v1.invoice_items.update(
        kept.id, params={"amount": 150, "metadata": {"line": "usage"}}
    )
    client.v1.invoice_items.delete(dropped.id)
    draft = client.v1.invoices.retrieve(invoice.id)
    assert updated.amount == 150 and updated["metadata"]["line"] == "usage"
    assert [line.amount for line in draft.lines.data] == [150] and draft.total == 150


def test_items_of_a_finalized_invoice_cannot_be_changed(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    invoice = draft_invoice(
        client, customer.id, collection_method="send_invoice", days_until_due=30
    )
    item = add_item(client, customer.id, 700, invoice=invoice.id)
    finalized = client.v1.invoices.finalize_invoice(invoice.id)
    attempts: list[Callable[[], object]] = [
        lambda: client.v1.invoice_items.update(item.id, params={"amount": 1}),
        lambda: client.v1.invoice_items.delete(item.id),
        lambda: add_item(client, customer.id, 5, invoice=invoice.id),
    ]
    for attempt in attempts:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            attempt()
        assert refused.value.http_status == 400
        assert refused.value.code == "invoice_not_editable"
    assert finalized.status == "open" and finalized.total == 700
    assert finalized.number is not None and finalized.due_date is not None
    assert client.v1.invoice_items.retrieve(item.id).amount == 700


def test_pending_items_are_pulled_in_only_with_include(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    pending = add_item(client, customer.id, 400)
    excluded = draft_invoice(client, customer.id)
    still_pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    included = draft_invoice(client, customer.id, pending_invoice_items_behavior="include")
    assert excluded.lines.data == [] and excluded.total == 0
    assert [item.id for item in still_pending.data] == [pending.id]
    assert included.total == 400
    assert client.v1.invoice_items.retrieve(pending.id).invoice == included.id
    assert client.v1.invoice_items.list(params={"pending": True}).data == []


def test_pending_items_can_be_updated_and_deleted(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    item = add_item(client, customer.id, 400)
    assert client.v1.invoice_items.update(item.id, params={"amount": 450}).amount == 450
    assert client.v1.invoice_items.delete(item.id).deleted is True


def test_invoice_items_link_their_subscription_per_api_version(url: str) -> None:
    basil, acacia = sdk(url, BASIL), sdk(url, ACACIA)
    customer, price = new_customer(basil), new_price(basil)
    subscription = new_subscription(basil, customer.id, price.id)
    item = add_item(basil, customer.id, 900, subscription=subscription.id)
    assert item["parent"]["subscription_details"]["subscription"] == subscription.id
    assert acacia.v1.invoice_items.retrieve(item.id)["subscription"] == subscription.id


def test_paid_voided_and_deleted_invoices(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    to_pay, to_void, to_delete = (draft_invoice(client, customer.id) for _ in range(3))
    for invoice in (to_pay, to_void):
        add_item(client, customer.id, 300, invoice=invoice.id)
        client.v1.invoices.finalize_invoice(invoice.id)
    item = add_item(client, customer.id, 300, invoice=to_delete.id)
    paid = client.v1.invoices.pay(to_pay.id, params={"paid_out_of_band": True})
    voided = client.v1.invoices.void_invoice(to_void.id)
    assert client.v1.invoices.delete(to_delete.id).deleted is True
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 300, 0)
    assert voided.status == "void"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.retrieve(item.id)
    listed = client.v1.invoices.list(params={"customer": customer.id, "status": "paid"})
    assert [invoice.id for invoice in listed.data] == [paid.id]


def test_finalizing_a_zero_total_invoice_marks_it_paid(client: stripe.StripeClient) -> None:
    invoice = draft_invoice(client, new_customer(client).id)
    assert client.v1.invoices.finalize_invoice(invoice.id).status == "paid"


def test_lists_page_with_limit_and_starting_after(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    created = [add_item(client, customer.id, amount).id for amount in range(1, 6)]
    first = client.v1.invoice_items.list(params={"customer": customer.id, "limit": 2})
    second = client.v1.invoice_items.list(
        params={"customer": customer.id, "limit": 3, "starting_after": first.data[-1].id}
    )
    everything = client.v1.invoice_items.list(params={"customer": customer.id}).auto_paging_iter()
    assert first.has_more is True and second.has_more is False
    assert [i.id for i in first.data + second.data] == created[::-1]
    assert [i.id for i in everything] == created[::-1]


# Renewal (test clock) --------------------------------------------------------------------


def test_renewal_bills_pending_items_in_a_draft_that_finalizes_an_hour_later(
    url: str, client: stripe.StripeClient
) -> None:
    customer, price = new_customer(client), new_price(client, 2000)
    subscription = new_subscription(client, customer.id, price.id)
    usage = add_item(client, customer.id, 345, subscription=subscription.id)
    period_end = subscription["items"].data[0].current_period_end
    advanced = httpx.post(f"{url}/_sim/advance", json={"to": period_end}).json()
    renewal = client.v1.invoices.retrieve(advanced["invoices_created"][0])
    renewed = client.v1.subscriptions.retrieve(subscription.id)
    assert advanced["renewed"] == [subscription.id]
    assert renewal.billing_reason == "subscription_cycle" and renewal.status == "draft"
    assert renewal.total == 2000 + 345 and renewal.period_end == period_end
    assert renewed["items"].data[0].current_period_start == period_end
    assert client.v1.invoice_items.update(usage.id, params={"amount": 400}).amount == 400
    httpx.post(f"{url}/_sim/advance", json={"seconds": 3600}).raise_for_status()
    assert client.v1.invoices.retrieve(renewal.id).status == "paid"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.update(usage.id, params={"amount": 500})


# Idempotency -----------------------------------------------------------------------------


def test_a_repeated_idempotency_key_replays_the_stored_response(
    url: str, client: stripe.StripeClient
) -> None:
    options: Any = {"idempotency_key": "bill-1-line-1"}
    created = client.v1.customers.create(params={"name": "Ada"}, options=options)
    replayed = client.v1.customers.create(params={"name": "Ada"}, options=options)
    raw = httpx.post(
        f"{url}/v1/customers",
        data={"name": "Ada"},
        headers={"Authorization": "Bearer sk_test_sim", "Idempotency-Key": "bill-1-line-1"},
    )
    assert replayed.id == created.id == raw.json()["id"]
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert len(client.v1.customers.list().data) == 1


def test_reusing_an_idempotency_key_with_other_parameters_is_refused(
    client: stripe.StripeClient,
) -> None:
    options: Any = {"idempotency_key": "bill-1-line-2"}
    client.v1.customers.create(params={"name": "Ada"}, options=options)
    with pytest.raises(stripe.IdempotencyError) as refused:
        client.v1.customers.create(params={"name": "Bob"}, options=options)
    assert refused.value.http_status == 400


def test_idempotency_keys_expire_after_24_hours(url: str, client: stripe.StripeClient) -> None:
    options: Any = {"idempotency_key": "bill-1-line-3"}
    before = client.v1.customers.create(params={"name": "Ada"}, options=options)
    httpx.post(f"{url}/_sim/advance", json={"seconds": 24 * 3600 + 1}).raise_for_status()
    after = client.v1.customers.create(params={"name": "Ada"}, options=options)
    assert after.id != before.id


# Faults ----------------------------------------------------------------------------------


def test_injected_429_asks_the_client_to_retry_later(url: str) -> None:
    set_faults(url, rate_429=1.0)
    raw = httpx.get(f"{url}/v1/customers", headers={"Authorization": "Bearer sk_test_sim"})
    with pytest.raises(stripe.RateLimitError):
        sdk(url).v1.customers.list()
    assert raw.status_code == 429
    assert raw.headers["Stripe-Should-Retry"] == "true" and raw.headers["Retry-After"] == "1"
    assert raw.json()["error"]["code"] == "rate_limit"


def test_injected_500_applies_nothing(url: str, client: stripe.StripeClient) -> None:
    set_faults(url, rate_500=1.0, paths=["/v1/customers"])
    with pytest.raises(stripe.APIError) as failed:
        new_customer(client)
    set_faults(url, rate_500=0.0)
    assert failed.value.http_status == 500
    assert client.v1.customers.list().data == []


def test_fault_rates_are_probabilities_reproducible_by_seed(url: str) -> None:
    def outcomes() -> list[int]:
        set_faults(url, rate_500=0.5, seed=7)
        with httpx.Client(headers={"Authorization": "Bearer sk_test_sim"}) as http:
            return [http.get(f"{url}/v1/customers").status_code for _ in range(40)]

    first, second = outcomes(), outcomes()
    assert first == second and {200, 500} == set(first)


def test_injected_latency_delays_the_answer(url: str, client: stripe.StripeClient) -> None:
    set_faults(url, latency_ms=200)
    started = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - started >= 0.2


def test_timeout_after_apply_keeps_the_write_and_the_sdk_retry_replays_it(url: str) -> None:
    set_faults(url, rate_timeout_after_apply=1.0, timeout_hold_ms=1500)
    impatient = sdk(url, retries=2, http_client=stripe.RequestsClient(timeout=0.3))
    customer = impatient.v1.customers.create(params={"email": "once@example.com"})
    set_faults(url, rate_timeout_after_apply=0.0)
    customers = sdk(url).v1.customers.list().data
    attempts = httpx.get(f"{url}/_sim/stats").json()["by_endpoint"]["POST /v1/customers"]
    assert attempts == 2  # one timed out after applying, the retry got the stored answer
    assert [c.id for c in customers] == [customer.id]


def test_timeout_after_apply_spares_reads(url: str) -> None:
    set_faults(url, rate_timeout_after_apply=1.0, timeout_hold_ms=5000)
    impatient = sdk(url, http_client=stripe.RequestsClient(timeout=1.0))
    assert impatient.v1.customers.list().data == []


def test_a_dropped_connection_after_apply_leaves_the_write_applied(url: str) -> None:
    set_faults(url, rate_timeout_after_apply=1.0, timeout_mode="drop")
    with pytest.raises(stripe.APIConnectionError):
        new_customer(sdk(url))
    set_faults(url, rate_timeout_after_apply=0.0)
    assert len(sdk(url).v1.customers.list().data) == 1


def test_the_stats_count_every_injected_fault_by_kind(url: str) -> None:
    set_faults(url, rate_500=1.0, paths=["/v1/customers"])
    with httpx.Client(headers={"Authorization": "Bearer sk_test_sim"}) as http:
        for _ in range(3):
            http.get(f"{url}/v1/customers")
        set_faults(url, rate_500=0.0, rate_timeout_after_apply=1.0, timeout_mode="drop")
        with pytest.raises(httpx.HTTPError):
            http.post(f"{url}/v1/customers", data={"email": "a@example.com"})
    assert httpx.get(f"{url}/_sim/stats").json()["faults"] == {"500": 3, "timeout_after_apply": 1}
    assert httpx.delete(f"{url}/_sim/stats").json()["faults"] == {}


def test_bad_fault_settings_are_refused_with_the_reason(url: str) -> None:
    answer = httpx.post(f"{url}/_sim/faults", json={"rate_429": 2})
    assert answer.status_code == 400 and "rate_429" in answer.json()["error"]


# Request statistics ----------------------------------------------------------------------


def test_stats_count_requests_per_endpoint_and_the_busiest_second(
    url: str, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    for amount in range(5):
        add_item(client, customer.id, amount)
    time.sleep(1.05)  # a gap: the next requests start a new one-second window
    client.v1.invoice_items.list()
    stats = httpx.get(f"{url}/_sim/stats").json()
    assert stats["total"] == 7
    assert stats["by_endpoint"]["POST /v1/invoiceitems"] == 5
    assert stats["max_per_second"] == 6
    assert httpx.delete(f"{url}/_sim/stats").json()["total"] == 0


# Webhooks --------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on a thread; answers 500 to the first `failures` deliveries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.headers["Stripe-Signature"], body))
                failing = len(receiver.received) <= receiver.failures
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[stripe.Event]:
        return [
            stripe.Webhook.construct_event(body, signature, SECRET)
            for signature, body in self.received
        ]


def subscribe_webhooks(url: str, receiver: Receiver) -> None:
    httpx.post(f"{url}/_sim/webhooks", json={"url": receiver.url, "secret": SECRET})


def test_checkout_sends_signed_events_that_the_sdk_verifies(url: str) -> None:
    client = sdk(url)
    price = new_price(client, lookup_key="pro")
    with Receiver() as receiver:
        subscribe_webhooks(url, receiver)
        session = httpx.post(
            f"{url}/_sim/checkout",
            json={"price": "pro", "email": "new@example.com", "client_reference_id": "acme"},
        ).json()
        eventually(lambda: len(receiver.received) == 3, 5.0, 0.02)
        events = sorted(receiver.events(), key=lambda event: event.type)
    assert [event.type for event in events] == [
        "checkout.session.completed",
        "customer.created",
        "customer.subscription.created",
    ]
    completed, created, subscribed = (event.data.object for event in events)
    assert completed.id == session["id"] and completed.client_reference_id == "acme"
    assert created.email == "new@example.com" and subscribed.customer == created.id
    assert subscribed["items"].data[0].price.id == price.id
    assert all(event.api_version == BASIL and event.id.startswith("evt_") for event in events)


def test_a_tampered_webhook_fails_verification(url: str) -> None:
    with Receiver() as receiver:
        subscribe_webhooks(url, receiver)
        new_customer(sdk(url))
        eventually(lambda: len(receiver.received) == 1, 5.0, 0.02)
    signature, body = receiver.received[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.replace(b"ada", b"eve"), signature, SECRET)


def test_updates_carry_previous_attributes(url: str) -> None:
    client = sdk(url)
    customer = new_customer(client)
    with Receiver() as receiver:
        subscribe_webhooks(url, receiver)
        client.v1.customers.update(customer.id, params={"email": "new@example.com"})
        eventually(lambda: len(receiver.received) == 1, 5.0, 0.02)
        (event,) = receiver.events()
    assert event.type == "customer.updated"
    assert event.data["previous_attributes"].to_dict() == {"email": "ada@example.com"}


def test_failed_webhook_deliveries_are_retried(url: str) -> None:
    with Receiver(failures=2) as receiver:
        subscribe_webhooks(url, receiver)
        new_customer(sdk(url))
        eventually(lambda: len(receiver.received) == 3, 5.0, 0.02)
        deliveries = httpx.get(f"{url}/_sim/webhooks").json()["deliveries"]
    assert len({body for _, body in receiver.received}) == 1  # the same event, re-signed
    assert deliveries[0]["delivered"] is True and deliveries[0]["attempts"] == 3


def test_events_are_also_listed_by_the_api(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    client.v1.customers.delete(customer.id)
    events = client.v1.events.list(params={"type": "customer.deleted"}).data
    assert [event.data.object.id for event in events] == [customer.id]

"""Every request the simulator accepts is also accepted by Stripe's own stripe-mock,
which validates parameters against Stripe's OpenAPI spec; and every object the simulator
returns uses only fields that Stripe's objects have.

stripe-mock is taken from PATH, or built with `go install` (skipped only without Go).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from connectors.stripe_sim import SimConfig, serve_in_thread

MODULE = "github.com/stripe/stripe-mock@latest"
AUTH = {"Authorization": "Bearer sk_test_shapes"}


def _go_bin_dir(go: str) -> Path:
    def env(name: str) -> str:
        return subprocess.run([go, "env", name], capture_output=True, text=True).stdout.strip()

    return Path(env("GOBIN") or Path(env("GOPATH")) / "bin")


def _stripe_mock_binary() -> str:
    found = shutil.which("stripe-mock")
    if found is not None:
        return found
    go = shutil.which("go") or shutil.which("/usr/local/go/bin/go")
    if go is None:
        pytest.skip(
            "Go is not installed, so stripe-mock cannot be built (go install " + MODULE + ")"
        )
    binary = _go_bin_dir(go) / "stripe-mock"
    if not binary.exists():
        subprocess.run([go, "install", MODULE], check=True, timeout=600)
    return str(binary)


@pytest.fixture(scope="module")
def stripe_mock() -> Iterator[str]:
    with subprocess.Popen(
        [_stripe_mock_binary(), "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PORT": ""},
    ) as process:  # closes its output on the way out
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + 30
            for line in process.stdout:
                found = re.search(r"Listening for HTTP at address: (\S+)", line)
                if found:
                    yield f"http://{found.group(1)}"
                    break
                assert time.monotonic() < deadline, "stripe-mock did not start"
            else:
                pytest.fail("stripe-mock exited before listening")
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def journal() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Drives the simulator through every endpoint meterline uses; yields its journal."""
    with serve_in_thread(SimConfig()) as url:
        _scenario(stripe.StripeClient("sk_test_shapes", base_addresses={"api": url}))
        yield url, httpx.get(f"{url}/_sim/requests").json()


def _scenario(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"email": "ada@example.com", "name": "Ada", "metadata": {"account": "acme"}}
    )
    client.v1.customers.update(customer.id, params={"metadata": {"tier": "gold"}})
    client.v1.customers.retrieve(customer.id)
    client.v1.customers.list(params={"email": "ada@example.com", "limit": 5})
    product = client.v1.products.create(params={"name": "Pro"})
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month", "usage_type": "licensed"},
            "lookup_key": "pro",
        }
    )
    other = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": Decimal("2500.5"),
            "recurring": {"interval": "month"},
        }
    )
    client.v1.prices.list(params={"lookup_keys": ["pro"], "expand": ["data.product"]})
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "metadata": {"a": "b"}}
    )
    client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": subscription["items"].data[0].id, "price": other.id}],
            "proration_behavior": "none",
        },
    )
    client.v1.subscriptions.list(params={"customer": customer.id, "status": "all"})
    invoice = client.v1.invoices.create(
        params={
            "customer": customer.id,
            "auto_advance": False,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "pending_invoice_items_behavior": "exclude",
            "metadata": {"bill_id": "b1"},
            "description": "Usage for May",
        }
    )
    item = client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": invoice.id,
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.125"),
            "quantity": 1003,
            "description": "API calls",
            "period": {"start": 1_700_000_000, "end": 1_702_592_000},
            "metadata": {"line": "usage"},
        }
    )
    client.v1.invoice_items.update(item.id, params={"amount": 150, "description": "API"})
    pending = client.v1.invoice_items.create(
        params={"customer": customer.id, "subscription": subscription.id, "amount": 99}
    )
    client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    client.v1.invoice_items.list(params={"invoice": invoice.id, "limit": 100})
    client.v1.invoice_items.retrieve(pending.id)
    client.v1.invoice_items.delete(pending.id)
    client.v1.invoices.retrieve(invoice.id, params={"expand": ["customer"]})
    client.v1.invoices.list(params={"customer": customer.id, "status": "draft"})
    client.v1.invoices.finalize_invoice(invoice.id, params={"auto_advance": False})
    client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    draft = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    client.v1.invoices.delete(draft.id)
    client.v1.subscriptions.cancel(subscription.id)
    client.v1.customers.delete(customer.id)
    client.v1.customers.create(params={"name": "Kept"})


def _replay(mock: str, entry: dict[str, Any]) -> httpx.Response:
    headers = AUTH | {"Content-Type": "application/x-www-form-urlencoded"}
    query = f"?{entry['query']}" if entry["query"] else ""
    return httpx.request(
        entry["method"], f"{mock}{entry['path']}{query}", content=entry["body"], headers=headers
    )


def test_stripe_mock_accepts_every_request_the_simulator_accepted(
    stripe_mock: str, journal: tuple[str, list[dict[str, Any]]]
) -> None:
    _, entries = journal
    accepted = [entry for entry in entries if entry["status"] == 200]
    rejected = {
        f"{entry['method']} {entry['path']} {entry['body'] or entry['query']}": answer.text
        for entry in accepted
        if (answer := _replay(stripe_mock, entry)).status_code != 200
    }
    assert len(accepted) == len(entries) > 25
    assert rejected == {}


def _fields(value: Any) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


def test_simulated_objects_use_only_fields_stripe_objects_have(
    stripe_mock: str, journal: tuple[str, list[dict[str, Any]]]
) -> None:
    url, _ = journal
    state = httpx.get(f"{url}/_sim/state").json()
    retrieve = {
        "customers": "/v1/customers/cus_x",
        "products": "/v1/products/prod_x",
        "prices": "/v1/prices/price_x",
        "subscriptions": "/v1/subscriptions/sub_x",
        "invoices": "/v1/invoices/in_x",
        "invoiceitems": "/v1/invoiceitems/ii_x",
        "events": "/v1/events/evt_x",
    }
    nested = {"subscriptions": "items", "invoices": "lines"}
    extra: dict[str, set[str]] = {}
    for kind, path in retrieve.items():
        reference = httpx.get(f"{stripe_mock}{path}", headers=AUTH).json()
        simulated = next(obj for obj in state[kind] if not obj.get("deleted"))
        unknown = _fields(simulated) - _fields(reference)
        if kind in nested:
            name = nested[kind]
            inner, reference_inner = simulated[name]["data"][0], reference[name]["data"][0]
            unknown |= {f"{name}.{key}" for key in _fields(inner) - _fields(reference_inner)}
        if unknown:
            extra[kind] = unknown
    assert extra == {}

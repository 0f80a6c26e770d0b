"""The Stripe calls the sink makes, through the official SDK, as small typed values.

Every call takes a token from the process-wide limiter first and turns any
`stripe.StripeError` into a `StripeFailure` (see `failures`). The SDK's own retries are
off (`max_network_retries=0`): the sink retries whole bill versions itself, with the
partition paused, so the two never stack up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import stripe

from connectors.metrics import Metrics
from connectors.stripe_sink.failures import failure_from
from connectors.stripe_sink.ledger import LedgerItem
from connectors.stripe_sink.limiter import Limiter
from streams.settings import Settings

PAGE = 100
SIMULATOR_KEY = "sk_test_meterline_simulator"  # the simulator takes any sk_test_ key
SIMULATOR_URL = "http://127.0.0.1:12111"  # `python -m connectors.stripe_sim`'s default
T = TypeVar("T")
log = logging.getLogger(__name__)


@contextmanager
def stripe_client(settings: Settings) -> Iterator[stripe.StripeClient]:
    """A client for real Stripe (STRIPE_API_KEY) or a stand-in (STRIPE_API_BASE); with
    neither set, the local Stripe simulator on its default port. Its connections are
    closed on leaving the block."""
    secret = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    base = settings.stripe_api_base
    if not secret and base is None:  # an empty variable (docker-compose's default) is unset
        base = SIMULATOR_URL
        log.warning("STRIPE_API_KEY and STRIPE_API_BASE unset: using the simulator at %s", base)
    key = secret or SIMULATOR_KEY
    http = stripe.HTTPXClient(timeout=settings.stripe_request_timeout_s, allow_sync_methods=True)
    try:
        yield stripe.StripeClient(
            key,
            base_addresses={"api": base} if base else {},
            max_network_retries=0,  # the sink retries, with the partition paused
            http_client=http,
        )
    finally:
        http.close()


@dataclass(frozen=True)
class Invoice:
    id: str
    status: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def draft(self) -> bool:
        return self.status == "draft"


@dataclass(frozen=True)
class Item:
    id: str
    invoice: str | None
    amount: int
    currency: str
    description: str
    period_start: int
    period_end: int
    subscription: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def ledger_item(self, editable: bool = True) -> LedgerItem:
        return LedgerItem(
            itemId=self.id,
            amount=self.amount,
            currency=self.currency,
            description=self.description,
            periodStart=self.period_start,
            periodEnd=self.period_end,
            editable=editable,
        )


def _invoice(data: Mapping[str, Any]) -> Invoice:
    return Invoice(id=str(data["id"]), status=str(data.get("status")), metadata=_metadata(data))


def _item(data: Mapping[str, Any]) -> Item:
    period = data.get("period") or {}
    invoice = data.get("invoice")
    return Item(
        id=str(data["id"]),
        invoice=_id(invoice),
        amount=int(data["amount"]),
        currency=str(data["currency"]),
        description=str(data.get("description") or ""),
        period_start=int(period.get("start") or 0),
        period_end=int(period.get("end") or 0),
        subscription=_subscription_of(data),
        metadata=_metadata(data),
    )


def _subscription_of(data: Mapping[str, Any]) -> str | None:
    """Up to 2025-02-24.acacia: `subscription`; from basil: `parent.subscription_details`."""
    parent = data.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return _id(details.get("subscription")) or _id(data.get("subscription"))


def _id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return str(value["id"])
    return str(value) if value else None


def _metadata(data: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data.get("metadata") or {}).items()}


def _plain(value: Any) -> dict[str, Any]:
    plain: dict[str, Any] = value.to_dict() if isinstance(value, stripe.StripeObject) else value
    return plain


class StripeGateway:
    def __init__(
        self, client: stripe.StripeClient, limiter: Limiter, metrics: Metrics | None = None
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.metrics = metrics or Metrics()

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        self.limiter.acquire()
        try:
            result = call()
        except stripe.StripeError as error:
            failure = failure_from(operation, error)
            outcome = "retryable" if failure.retryable else (failure.code or "refused")
            self.metrics.stripe_requests.labels(operation, outcome).inc()
            raise failure from error
        self.metrics.stripe_requests.labels(operation, "ok").inc()
        return result

    # Invoices ------------------------------------------------------------------------

    def create_invoice(self, params: dict[str, Any], key: str) -> Invoice:
        invoices = self.client.v1.invoices
        created = self._call(
            "invoice.create",
            lambda: invoices.create(params=params, options={"idempotency_key": key}),  # type: ignore[arg-type]
        )
        return _invoice(_plain(created))

    def finalize_invoice(self, invoice_id: str, key: str) -> Invoice:
        invoices = self.client.v1.invoices
        params: Any = {"auto_advance": True}
        finalized = self._call(
            "invoice.finalize",
            lambda: invoices.finalize_invoice(
                invoice_id, params=params, options={"idempotency_key": key}
            ),
        )
        return _invoice(_plain(finalized))

    def retrieve_invoice(self, invoice_id: str) -> Invoice:
        invoices = self.client.v1.invoices
        return _invoice(
            _plain(self._call("invoice.retrieve", lambda: invoices.retrieve(invoice_id)))
        )

    def invoices_of(self, customer: str) -> Iterator[Invoice]:
        """The customer's invoices, newest first, page by page (each page rate limited)."""
        invoices = self.client.v1.invoices
        for data in self._pages(
            "invoice.list", lambda params: invoices.list(params=params), {"customer": customer}
        ):
            yield _invoice(data)

    # Invoice items -------------------------------------------------------------------

    def create_item(self, params: dict[str, Any], key: str) -> Item:
        items = self.client.v1.invoice_items
        created = self._call(
            "item.create",
            lambda: items.create(params=params, options={"idempotency_key": key}),  # type: ignore[arg-type]
        )
        return _item(_plain(created))

    def update_item(self, item_id: str, params: dict[str, Any], key: str) -> Item:
        items = self.client.v1.invoice_items
        updated = self._call(
            "item.update",
            lambda: items.update(item_id, params=params, options={"idempotency_key": key}),  # type: ignore[arg-type]
        )
        return _item(_plain(updated))

    def delete_item(self, item_id: str) -> None:
        """Deletes are idempotent by nature (Stripe ignores keys on DELETE)."""
        items = self.client.v1.invoice_items
        self._call("item.delete", lambda: items.delete(item_id))

    def items_of(self, *, customer: str | None = None, invoice: str | None = None) -> list[Item]:
        """Every invoice item of a customer or of an invoice."""
        items = self.client.v1.invoice_items
        scope = {"customer": customer} if customer else {"invoice": invoice}
        pages = self._pages("item.list", lambda params: items.list(params=params), scope)
        return [_item(data) for data in pages]

    def _pages(
        self, operation: str, fetch: Callable[[Any], Any], scope: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {**scope, "limit": PAGE}
        while True:
            page = _plain(self._call(operation, lambda p=dict(params): fetch(p)))  # type: ignore[misc]
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

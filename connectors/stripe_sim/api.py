"""The /v1 endpoints: a route table from (method, path template) to handlers.

Handlers are synchronous and run on the server's event loop, so one request's state
change never interleaves with another's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from connectors.stripe_sim import catalog, customers, invoicing, render, subscriptions
from connectors.stripe_sim.errors import StripeError, invalid_param, no_such
from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.render import Json, Shape
from connectors.stripe_sim.store import Record, Store

MAX_LIMIT = 100


@dataclass(frozen=True)
class Call:
    store: Store
    params: Params
    ids: tuple[str, ...]
    shape: Shape

    @property
    def id(self) -> str:
        return self.ids[0]


Handler = Callable[[Call], Json]


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.template}"


ROUTES: list[Route] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    pattern = re.compile("^" + re.sub(r"\{\w+\}", "([^/]+)", template) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, template, pattern, handler))
        return handler

    return register


def match(method: str, path: str) -> tuple[Route, tuple[str, ...]] | None:
    for candidate in ROUTES:
        if candidate.method == method:
            found = candidate.pattern.match(path)
            if found is not None:
                return candidate, found.groups()
    return None


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


def page(call: Call, records: Sequence[T], url: str, draw: Callable[[T], Json]) -> Json:
    """Stripe list pagination over records kept oldest first; lists go newest first."""
    params = call.params
    limit = params.whole("limit", 10) or 0
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid_param("limit", f"limit must be between 1 and {MAX_LIMIT}.")
    ordered = list(reversed(records))
    after, before = params.text("starting_after"), params.text("ending_before")
    if after is not None:
        start = _position(ordered, after, "starting_after") + 1
        chosen, has_more = ordered[start : start + limit], len(ordered) > start + limit
    elif before is not None:
        end = _position(ordered, before, "ending_before")
        chosen, has_more = ordered[max(end - limit, 0) : end], end > limit
    else:
        chosen, has_more = ordered[:limit], len(ordered) > limit
    return render.list_object([draw(record) for record in chosen], url, has_more)


def drawn(call: Call) -> Callable[[Record], Json]:
    return lambda record: render.render(call.store, record, call.shape)


def _position(records: Sequence[HasId], object_id: str, param: str) -> int:
    for index, record in enumerate(records):
        if record.id == object_id:
            return index
    raise invalid_param(param, f"No such object to page from: '{object_id}'")


def expand(store: Store, node: Json, path: list[str], shape: Shape) -> None:
    """Replaces the id at `path` (dot-separated, `data` walks a list) by its object."""
    key, rest = path[0], path[1:]
    if node.get("object") == "list" and key == "data":
        for element in node["data"] if rest else []:
            expand(store, element, rest, shape)
        return
    value = node.get(key)
    if rest and isinstance(value, dict):
        expand(store, value, rest, shape)
    elif not rest and isinstance(value, str):
        record = _lookup(store, value)
        if record is not None:
            node[key] = render.render(store, record, shape)


def _lookup(store: Store, object_id: str) -> Record | None:
    tables: dict[str, Mapping[str, Record]] = {
        "cus": store.customers,
        "prod": store.products,
        "price": store.prices,
        "sub": store.subscriptions,
        "si": store.subscription_items,
        "in": store.invoices,
        "ii": store.invoice_items,
    }
    table = tables.get(object_id.partition("_")[0])
    return None if table is None else table.get(object_id)


def _retrieve_only(call: Call) -> None:
    call.params.only(())


# Customers -------------------------------------------------------------------------------


@route("POST", "/v1/customers")
def _create_customer(call: Call) -> Json:
    return render.customer(customers.create_customer(call.store, call.params))


@route("GET", "/v1/customers")
def _list_customers(call: Call) -> Json:
    return page(
        call, customers.list_customers(call.store, call.params), "/v1/customers", drawn(call)
    )


@route("GET", "/v1/customers/{id}")
def _get_customer(call: Call) -> Json:
    _retrieve_only(call)
    found = call.store.customers.get(call.id)
    if found is None:
        raise no_such("customer", call.id)
    return render.customer(found)


@route("POST", "/v1/customers/{id}")
def _update_customer(call: Call) -> Json:
    return render.customer(customers.update_customer(call.store, call.id, call.params))


@route("DELETE", "/v1/customers/{id}")
def _delete_customer(call: Call) -> Json:
    return render.customer(customers.delete_customer(call.store, call.id))


# Products and prices ---------------------------------------------------------------------


@route("POST", "/v1/products")
def _create_product(call: Call) -> Json:
    return render.product(catalog.create_product(call.store, call.params))


@route("GET", "/v1/products")
def _list_products(call: Call) -> Json:
    return page(call, catalog.list_products(call.store, call.params), "/v1/products", drawn(call))


@route("GET", "/v1/products/{id}")
def _get_product(call: Call) -> Json:
    _retrieve_only(call)
    return render.product(call.store.product(call.id))


@route("POST", "/v1/products/{id}")
def _update_product(call: Call) -> Json:
    return render.product(catalog.update_product(call.store, call.id, call.params))


@route("POST", "/v1/prices")
def _create_price(call: Call) -> Json:
    return render.price(catalog.create_price(call.store, call.params))


@route("GET", "/v1/prices")
def _list_prices(call: Call) -> Json:
    return page(call, catalog.list_prices(call.store, call.params), "/v1/prices", drawn(call))


@route("GET", "/v1/prices/{id}")
def _get_price(call: Call) -> Json:
    _retrieve_only(call)
    return render.price(call.store.price(call.id))


@route("POST", "/v1/prices/{id}")
def _update_price(call: Call) -> Json:
    return render.price(catalog.update_price(call.store, call.id, call.params))


# Subscriptions ---------------------------------------------------------------------------


def _subscription(call: Call, record: Record) -> Json:
    return render.render(call.store, record, call.shape)


@route("POST", "/v1/subscriptions")
def _create_subscription(call: Call) -> Json:
    return _subscription(call, subscriptions.create_subscription(call.store, call.params))


@route("GET", "/v1/subscriptions")
def _list_subscriptions(call: Call) -> Json:
    found = subscriptions.list_subscriptions(call.store, call.params)
    return page(call, found, "/v1/subscriptions", drawn(call))


@route("GET", "/v1/subscriptions/{id}")
def _get_subscription(call: Call) -> Json:
    _retrieve_only(call)
    return _subscription(call, call.store.subscription(call.id))


@route("POST", "/v1/subscriptions/{id}")
def _update_subscription(call: Call) -> Json:
    updated = subscriptions.update_subscription(call.store, call.id, call.params)
    return _subscription(call, updated)


@route("DELETE", "/v1/subscriptions/{id}")
def _cancel_subscription(call: Call) -> Json:
    call.params.only(("invoice_now", "prorate", "cancellation_details"))
    return _subscription(call, subscriptions.cancel_subscription(call.store, call.id))


@route("GET", "/v1/subscription_items")
def _list_subscription_items(call: Call) -> Json:
    call.params.only(("subscription", "limit", "starting_after", "ending_before"))
    owner = call.store.subscription(call.params.need_text("subscription"), "subscription")
    items = [call.store.subscription_items[item_id] for item_id in reversed(owner.items)]
    return page(call, items, f"/v1/subscription_items?subscription={owner.id}", drawn(call))


# Invoices --------------------------------------------------------------------------------


def _invoice(call: Call, record: Record) -> Json:
    return render.render(call.store, record, call.shape)


@route("POST", "/v1/invoices")
def _create_invoice(call: Call) -> Json:
    return _invoice(call, invoicing.create_invoice(call.store, call.params))


@route("GET", "/v1/invoices")
def _list_invoices(call: Call) -> Json:
    return page(call, invoicing.list_invoices(call.store, call.params), "/v1/invoices", drawn(call))


@route("GET", "/v1/invoices/{id}")
def _get_invoice(call: Call) -> Json:
    _retrieve_only(call)
    return _invoice(call, call.store.invoice(call.id))


@route("POST", "/v1/invoices/{id}")
def _update_invoice(call: Call) -> Json:
    return _invoice(call, invoicing.update_invoice(call.store, call.id, call.params))


@route("DELETE", "/v1/invoices/{id}")
def _delete_invoice(call: Call) -> Json:
    return render.deleted(invoicing.delete_invoice(call.store, call.id).id, "invoice")


@route("POST", "/v1/invoices/{id}/finalize")
def _finalize_invoice(call: Call) -> Json:
    return _invoice(call, invoicing.finalize_invoice(call.store, call.id, call.params))


@route("POST", "/v1/invoices/{id}/pay")
def _pay_invoice(call: Call) -> Json:
    return _invoice(call, invoicing.pay_invoice(call.store, call.id, call.params))


@route("POST", "/v1/invoices/{id}/void")
def _void_invoice(call: Call) -> Json:
    _retrieve_only(call)
    return _invoice(call, invoicing.void_invoice(call.store, call.id))


@route("GET", "/v1/invoices/{id}/lines")
def _list_invoice_lines(call: Call) -> Json:
    call.params.only(("limit", "starting_after", "ending_before"))
    owner = call.store.invoice(call.id)
    lines = [call.store.invoice_lines[line_id] for line_id in reversed(owner.lines)]
    return page(call, lines, f"/v1/invoices/{owner.id}/lines", drawn(call))


# Invoice items ---------------------------------------------------------------------------


@route("POST", "/v1/invoiceitems")
def _create_invoice_item(call: Call) -> Json:
    return _invoice(call, invoicing.create_invoice_item(call.store, call.params))


@route("GET", "/v1/invoiceitems")
def _list_invoice_items(call: Call) -> Json:
    found = invoicing.list_invoice_items(call.store, call.params)
    return page(call, found, "/v1/invoiceitems", drawn(call))


@route("GET", "/v1/invoiceitems/{id}")
def _get_invoice_item(call: Call) -> Json:
    _retrieve_only(call)
    return _invoice(call, call.store.invoice_item(call.id))


@route("POST", "/v1/invoiceitems/{id}")
def _update_invoice_item(call: Call) -> Json:
    return _invoice(call, invoicing.update_invoice_item(call.store, call.id, call.params))


@route("DELETE", "/v1/invoiceitems/{id}")
def _delete_invoice_item(call: Call) -> Json:
    return render.deleted(invoicing.delete_invoice_item(call.store, call.id).id, "invoiceitem")


# Events and checkout sessions --------------------------------------------------------------


@route("GET", "/v1/events")
def _list_events(call: Call) -> Json:
    call.params.only(("type", "types", "limit", "starting_after", "ending_before", "created"))
    wanted = set(call.params.strings("types")) | set(filter(None, [call.params.text("type")]))
    events = [event for event in call.store.events.values() if not wanted or event.type in wanted]
    return page(call, events, "/v1/events", lambda event: render.event(event, 0))


@route("GET", "/v1/events/{id}")
def _get_event(call: Call) -> Json:
    _retrieve_only(call)
    return render.event(call.store.event(call.id), 0)


@route("GET", "/v1/checkout/sessions/{id}")
def _get_checkout_session(call: Call) -> Json:
    _retrieve_only(call)
    found = call.store.checkout_sessions.get(call.id)
    if found is None:
        raise no_such("checkout.session", call.id)
    return render.checkout_session(found)


def not_found(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). The Stripe simulator implements only"
        " the endpoints meterline uses.",
        replayable=False,
    )

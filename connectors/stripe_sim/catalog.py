"""Products and prices (recurring or one-time, integer or decimal unit amounts)."""

from __future__ import annotations

from decimal import Decimal

from connectors.stripe_sim.errors import invalid_param, missing_param, refused
from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.records import Price, Product, Recurring
from connectors.stripe_sim.store import Store, new_id

_PRODUCT_FIELDS = ("name", "description", "active", "metadata")
_PRICE_CREATE = (
    "currency",
    "product",
    "product_data",
    "unit_amount",
    "unit_amount_decimal",
    "recurring",
    "lookup_key",
    "transfer_lookup_key",
    "nickname",
    "active",
    "metadata",
    "billing_scheme",
    "tax_behavior",
)
_INTERVALS = ("day", "week", "month", "year")


def create_product(store: Store, params: Params) -> Product:
    params.only((*_PRODUCT_FIELDS, "id", "default_price_data", "tax_code", "unit_label"))
    product_id = params.text("id") or new_id("prod", 14)
    if product_id in store.products:
        raise refused(f"Product already exists: {product_id}", "resource_already_exists", "id")
    product = _new_product(store, product_id, params)
    store.products[product.id] = product
    return product


def update_product(store: Store, product_id: str, params: Params) -> Product:
    params.only(_PRODUCT_FIELDS)
    product = store.product(product_id)
    _apply_product(product, params)
    return product


def list_products(store: Store, params: Params) -> list[Product]:
    params.only(("active", "ids", "limit", "starting_after", "ending_before"))
    active, ids = params.flag("active"), set(params.strings("ids"))
    return [
        product
        for product in store.products.values()
        if (active is None or product.active == active) and (not ids or product.id in ids)
    ]


def create_price(store: Store, params: Params) -> Price:
    params.only(_PRICE_CREATE)
    product_id = _product_of(store, params)
    unit = params.decimal("unit_amount_decimal")
    if unit is None:
        whole = params.whole("unit_amount")
        if whole is None:
            raise missing_param("unit_amount")
        unit = Decimal(whole)
    price = Price(
        id=new_id("price"),
        created=store.now(),
        product=product_id,
        currency=params.need_text("currency").lower(),
        unit_amount_decimal=unit,
        recurring=_recurring(params.sub("recurring")),
        nickname=params.text("nickname"),
        active=bool(params.flag("active", True)),
        metadata=params.metadata() or {},
    )
    _claim_lookup_key(store, price, params)
    store.prices[price.id] = price
    return price


def update_price(store: Store, price_id: str, params: Params) -> Price:
    params.only(("active", "lookup_key", "transfer_lookup_key", "nickname", "metadata"))
    price = store.price(price_id)
    if params.has("active"):
        price.active = bool(params.flag("active"))
    if params.has("nickname"):
        price.nickname = params.text("nickname") or None
    price.metadata = _merged(params, price.metadata)
    _claim_lookup_key(store, price, params)
    return price


def list_prices(store: Store, params: Params) -> list[Price]:
    params.only(("active", "lookup_keys", "product", "type", "currency", "limit", "starting_after"))
    keys, product = set(params.strings("lookup_keys")), params.text("product")
    active, kind = params.flag("active"), params.text("type")
    return [
        price
        for price in store.prices.values()
        if (not keys or price.lookup_key in keys)
        and (product is None or price.product == product)
        and (active is None or price.active == active)
        and (kind is None or (price.recurring is not None) == (kind == "recurring"))
    ]


def _new_product(store: Store, product_id: str, params: Params) -> Product:
    product = Product(id=product_id, created=store.now(), name=params.need_text("name"))
    _apply_product(product, params)
    return product


def _apply_product(product: Product, params: Params) -> None:
    if params.has("name"):
        product.name = params.need_text("name")
    if params.has("description"):
        product.description = params.text("description") or None
    if params.has("active"):
        product.active = bool(params.flag("active"))
    product.metadata = _merged(params, product.metadata)


def _product_of(store: Store, params: Params) -> str:
    data = params.sub("product_data")
    if data is not None:
        product = _new_product(store, new_id("prod", 14), data.only(_PRODUCT_FIELDS))
        store.products[product.id] = product
        return product.id
    return store.product(params.need_text("product"), "product").id


def _recurring(params: Params | None) -> Recurring | None:
    if params is None:
        return None
    params.only(("interval", "interval_count", "usage_type", "aggregate_usage", "meter"))
    interval = params.need_text("interval")
    if interval not in _INTERVALS:
        raise invalid_param("recurring[interval]", f"Invalid interval: {interval}")
    count = params.whole("interval_count", 1) or 1
    usage = params.text("usage_type", "licensed") or "licensed"
    if usage not in ("licensed", "metered"):
        raise invalid_param("recurring[usage_type]", f"Invalid usage_type: {usage}")
    return Recurring(interval, count, usage)


def _claim_lookup_key(store: Store, price: Price, params: Params) -> None:
    key = params.text("lookup_key")
    if key is None:
        return
    holder = next((p for p in store.prices.values() if p.lookup_key == key), None)
    if holder is not None and holder.id != price.id:
        if not params.flag("transfer_lookup_key", False):
            raise refused(
                f"A price (`{holder.id}`) already uses that lookup key.",
                "resource_already_exists",
                "lookup_key",
            )
        holder.lookup_key = None
    price.lookup_key = key or None


def _merged(params: Params, current: dict[str, str]) -> dict[str, str]:
    metadata = params.metadata(current)
    return current if metadata is None else metadata

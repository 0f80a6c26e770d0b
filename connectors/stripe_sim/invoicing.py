"""Invoices and invoice items, with Stripe's rules.

- An invoice item can be changed or deleted only while pending (no invoice) or while its
  invoice is a draft; otherwise `invoice_not_editable`.
- A new invoice pulls the customer's pending items only with
  `pending_invoice_items_behavior=include` (Stripe's default is `exclude`); subscription
  renewals always pull them. An invoice for subscription S takes pending items of S and
  items tied to no subscription; an invoice without a subscription takes the latter only.
- Totals are the sum of the lines' integer amounts; finalizing a zero total marks it paid.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from connectors.stripe_sim.errors import StripeError, invalid_param, missing_param, refused
from connectors.stripe_sim.forms import Params
from connectors.stripe_sim.records import Invoice, InvoiceItem, InvoiceLine, Period
from connectors.stripe_sim.store import Store, new_id

_ITEM_EDITABLE = (
    "amount",
    "unit_amount_decimal",
    "quantity",
    "pricing",
    "price_data",
    "description",
    "period",
    "metadata",
    "discountable",
    "discounts",
    "tax_rates",
    "tax_behavior",
    "tax_code",
)
_ITEM_CREATE = (*_ITEM_EDITABLE, "customer", "invoice", "subscription", "currency")
_INVOICE_EDITABLE = (
    "auto_advance",
    "collection_method",
    "days_until_due",
    "due_date",
    "description",
    "metadata",
    "footer",
    "default_payment_method",
    "automatic_tax",
    "custom_fields",
    "statement_descriptor",
)
_INVOICE_CREATE = (
    *_INVOICE_EDITABLE,
    "customer",
    "subscription",
    "currency",
    "pending_invoice_items_behavior",
)
_COLLECTION_METHODS = ("charge_automatically", "send_invoice")
_DAY = 86_400


# Invoice items ---------------------------------------------------------------------------


def create_invoice_item(store: Store, params: Params) -> InvoiceItem:
    params.only(_ITEM_CREATE)
    invoice = (
        store.invoice(params.need_text("invoice"), "invoice") if params.has("invoice") else None
    )
    customer_id = params.text("customer") or (invoice.customer if invoice else None)
    if customer_id is None:
        raise missing_param("customer")
    customer = store.customer(customer_id, "customer")
    subscription = None
    if params.has("subscription"):
        subscription = store.subscription(params.need_text("subscription"), "subscription")
        if subscription.customer != customer.id:
            raise invalid_param("subscription", "The subscription belongs to another customer.")
    if invoice is not None:
        if invoice.customer != customer.id:
            raise invalid_param("invoice", "The invoice belongs to another customer.")
        _require_draft(invoice)
    default_currency = (
        (invoice.currency if invoice else None)
        or (subscription.currency if subscription else None)
        or customer.currency
        or "usd"
    )
    currency = (params.text("currency") or default_currency).lower()
    if invoice is not None and currency != invoice.currency:
        raise invalid_param("currency", f"The invoice's currency is {invoice.currency}.")
    now = store.now()
    item = InvoiceItem(
        id=new_id("ii"),
        created=now,
        customer=customer.id,
        currency=currency,
        amount=0,
        quantity=1,
        unit_amount_decimal=Decimal(0),
        period=Period(now, now),
        subscription=subscription.id if subscription else None,
    )
    if not _set_amount(store, item, params):
        raise missing_param("amount")
    _set_fields(item, params)
    store.invoice_items[item.id] = item
    if invoice is not None:
        attach_item(store, invoice, item)
    return item


def update_invoice_item(store: Store, item_id: str, params: Params) -> InvoiceItem:
    params.only(_ITEM_EDITABLE)
    item = store.invoice_item(item_id)
    _require_editable(store, item)
    _set_amount(store, item, params)
    _set_fields(item, params)
    return item


def delete_invoice_item(store: Store, item_id: str) -> InvoiceItem:
    item = store.invoice_item(item_id)
    _require_editable(store, item)
    if item.invoice is not None:
        invoice = store.invoice(item.invoice)
        for line_id in list(invoice.lines):
            if store.invoice_lines[line_id].invoice_item == item.id:
                invoice.lines.remove(line_id)
                del store.invoice_lines[line_id]
    del store.invoice_items[item.id]
    return item


def list_invoice_items(store: Store, params: Params) -> list[InvoiceItem]:
    params.only(
        ("customer", "invoice", "pending", "created", "limit", "starting_after", "ending_before")
    )
    customer, invoice = params.text("customer"), params.text("invoice")
    pending = params.flag("pending")
    return [
        item
        for item in store.invoice_items.values()
        if (customer is None or item.customer == customer)
        and (invoice is None or item.invoice == invoice)
        and (pending is None or (item.invoice is None) == pending)
    ]


def attach_item(store: Store, invoice: Invoice, item: InvoiceItem) -> None:
    line = InvoiceLine(id=new_id("il"), invoice=invoice.id, invoice_item=item.id)
    store.invoice_lines[line.id] = line
    invoice.lines.append(line.id)
    item.invoice = invoice.id


def pull_pending_items(store: Store, invoice: Invoice) -> None:
    for item in list(store.invoice_items.values()):
        if (
            item.invoice is None
            and item.customer == invoice.customer
            and item.currency == invoice.currency
            and item.subscription in (None, invoice.subscription)
        ):
            attach_item(store, invoice, item)


def _require_editable(store: Store, item: InvoiceItem) -> None:
    if item.invoice is not None:
        _require_draft(store.invoice(item.invoice))


def _require_draft(invoice: Invoice) -> None:
    if invoice.status != "draft":
        raise refused(
            f"Invoice {invoice.id} is {invoice.status}: its items can be changed only while it"
            " is a draft. Create a new invoice item for the next invoice instead.",
            "invoice_not_editable",
        )


def _set_amount(store: Store, item: InvoiceItem, params: Params) -> bool:
    """Applies amount / unit_amount_decimal / pricing[price] / quantity; False if none."""
    amount, unit = params.whole("amount"), params.decimal("unit_amount_decimal")
    unit = unit if unit is not None else _unit_from_price(store, item, params)
    if amount is not None and unit is not None:
        raise StripeError(
            400,
            "You may only specify one of these parameters: amount, unit_amount_decimal.",
            code="parameters_exclusive",
            param="amount",
            replayable=False,
        )
    quantity = params.whole("quantity")
    if quantity is not None and quantity < 0:
        raise invalid_param("quantity", "Quantity must be non-negative.")
    item.quantity = quantity if quantity is not None else item.quantity
    if amount is not None:
        item.amount = amount
        item.unit_amount_decimal = Decimal(amount) / item.quantity if item.quantity else Decimal(0)
        return True
    if unit is not None or quantity is not None:
        item.unit_amount_decimal = unit if unit is not None else item.unit_amount_decimal
        exact = item.unit_amount_decimal * item.quantity
        item.amount = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return True
    return False


def _unit_from_price(store: Store, item: InvoiceItem, params: Params) -> Decimal | None:
    pricing, data = params.sub("pricing"), params.sub("price_data")
    if pricing is not None:
        price = store.price(pricing.only(("price",)).need_text("price"), "pricing[price]")
        if price.currency != item.currency:
            raise invalid_param("pricing[price]", f"The price's currency is {price.currency}.")
        item.price = price.id
        return price.unit_amount_decimal
    if data is not None:
        data.only(("currency", "product", "unit_amount", "unit_amount_decimal", "tax_behavior"))
        store.product(data.need_text("product"), "price_data[product]")
        whole = data.whole("unit_amount")
        unit = data.decimal("unit_amount_decimal")
        return unit if unit is not None or whole is None else Decimal(whole)
    return None


def _set_fields(item: InvoiceItem, params: Params) -> None:
    if params.has("description"):
        item.description = params.text("description") or None
    if params.has("discountable"):
        item.discountable = bool(params.flag("discountable"))
    period = params.sub("period")
    if period is not None:
        period.only(("start", "end"))
        start, end = period.whole("start"), period.whole("end")
        if start is None or end is None:
            raise missing_param("period[start]" if start is None else "period[end]")
        if end < start:
            raise invalid_param("period[end]", "period[end] must not be before period[start].")
        item.period = Period(start, end)
    metadata = params.metadata(item.metadata)
    if metadata is not None:
        item.metadata = metadata


# Invoices --------------------------------------------------------------------------------


def create_invoice(store: Store, params: Params) -> Invoice:
    params.only(_INVOICE_CREATE)
    customer = store.customer(params.need_text("customer"), "customer")
    subscription = None
    if params.has("subscription"):
        subscription = store.subscription(params.need_text("subscription"), "subscription")
        if subscription.customer != customer.id:
            raise invalid_param("subscription", "The subscription belongs to another customer.")
    behavior = params.text("pending_invoice_items_behavior", "exclude")
    if behavior not in ("include", "exclude"):
        raise invalid_param("pending_invoice_items_behavior", f"Invalid value: {behavior}")
    currency = (
        params.text("currency")
        or (subscription.currency if subscription else None)
        or customer.currency
        or "usd"
    ).lower()
    now = store.now()
    invoice = Invoice(
        id=new_id("in"),
        created=now,
        customer=customer.id,
        currency=currency,
        subscription=subscription.id if subscription else None,
        period=Period(now, now),
        auto_advance=False,
    )
    _set_invoice_fields(invoice, params)
    store.invoices[invoice.id] = invoice
    if behavior == "include":
        pull_pending_items(store, invoice)
    return invoice


def update_invoice(store: Store, invoice_id: str, params: Params) -> Invoice:
    params.only(_INVOICE_EDITABLE)
    invoice = store.invoice(invoice_id)
    monetary = {"collection_method", "days_until_due", "due_date"} & params.tree.keys()
    if monetary:
        _require_draft(invoice)
    _set_invoice_fields(invoice, params)
    return invoice


def finalize_invoice(store: Store, invoice_id: str, params: Params) -> Invoice:
    params.only(("auto_advance",))
    invoice = store.invoice(invoice_id)
    _require_status(invoice, "draft", "finalize")
    if params.has("auto_advance"):
        invoice.auto_advance = bool(params.flag("auto_advance"))
    finalize(store, invoice)
    return invoice


def finalize(store: Store, invoice: Invoice) -> None:
    now = store.now()
    store.invoice_sequence += 1
    invoice.number = f"SIM-{store.invoice_sequence:06d}"
    invoice.status, invoice.finalized_at = "open", now
    invoice.automatically_finalizes_at = None
    if invoice.collection_method == "send_invoice" and invoice.due_date is None:
        invoice.due_date = now + _DAY * (invoice.days_until_due or 30)
    if invoice_total(store, invoice) == 0:
        invoice.status, invoice.paid_at = "paid", now


def pay_invoice(store: Store, invoice_id: str, params: Params) -> Invoice:
    params.only(("paid_out_of_band", "payment_method", "source", "off_session", "forgive"))
    invoice = store.invoice(invoice_id)
    if invoice.status == "draft":
        finalize(store, invoice)
    if invoice.status != "paid":
        _require_status(invoice, "open", "pay")
        invoice.status, invoice.paid_at = "paid", store.now()
    return invoice


def void_invoice(store: Store, invoice_id: str) -> Invoice:
    invoice = store.invoice(invoice_id)
    _require_status(invoice, "open", "void")
    invoice.status, invoice.voided_at = "void", store.now()
    return invoice


def delete_invoice(store: Store, invoice_id: str) -> Invoice:
    """Deletes a draft one-off invoice together with its invoice items."""
    invoice = store.invoice(invoice_id)
    _require_status(invoice, "draft", "delete")
    if invoice.subscription is not None and invoice.billing_reason != "manual":
        raise refused("A subscription's invoice cannot be deleted; void it instead.")
    for line_id in invoice.lines:
        line = store.invoice_lines.pop(line_id)
        if line.invoice_item is not None:
            store.invoice_items.pop(line.invoice_item, None)
    del store.invoices[invoice.id]
    return invoice


def list_invoices(store: Store, params: Params) -> list[Invoice]:
    params.only(
        (
            "customer",
            "subscription",
            "status",
            "collection_method",
            "created",
            "limit",
            "starting_after",
            "ending_before",
        )
    )
    customer, subscription = params.text("customer"), params.text("subscription")
    status, method = params.text("status"), params.text("collection_method")
    return [
        invoice
        for invoice in store.invoices.values()
        if (customer is None or invoice.customer == customer)
        and (subscription is None or invoice.subscription == subscription)
        and (status is None or invoice.status == status)
        and (method is None or invoice.collection_method == method)
    ]


def line_amount(store: Store, line: InvoiceLine) -> int:
    if line.invoice_item is not None:
        return store.invoice_items[line.invoice_item].amount
    return line.amount


def invoice_total(store: Store, invoice: Invoice) -> int:
    return sum(line_amount(store, store.invoice_lines[line_id]) for line_id in invoice.lines)


def _require_status(invoice: Invoice, status: str, action: str) -> None:
    if invoice.status != status:
        raise refused(
            f"You can only {action} an invoice that is {status}; {invoice.id} is {invoice.status}.",
            "invoice_not_editable" if status == "draft" else None,
        )


def _set_invoice_fields(invoice: Invoice, params: Params) -> None:
    if params.has("auto_advance"):
        invoice.auto_advance = bool(params.flag("auto_advance"))
    if params.has("description"):
        invoice.description = params.text("description") or None
    method = params.text("collection_method")
    if method is not None:
        if method not in _COLLECTION_METHODS:
            raise invalid_param("collection_method", f"Invalid collection_method: {method}")
        invoice.collection_method = method
    if params.has("days_until_due"):
        invoice.days_until_due = params.whole("days_until_due")
    if params.has("due_date"):
        invoice.due_date = params.whole("due_date")
    if invoice.collection_method == "send_invoice" and not (
        invoice.days_until_due is not None or invoice.due_date is not None
    ):
        raise invalid_param(
            "days_until_due",
            "Invoices with collection_method=send_invoice need days_until_due or due_date.",
        )
    metadata = params.metadata(invoice.metadata)
    if metadata is not None:
        invoice.metadata = metadata

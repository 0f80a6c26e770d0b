"""Stripe webhook bridge: `POST /webhooks/stripe` → verified event on `stripe.events`.

Order of a request:
  1. refuse when no signing secret is configured (503: nothing could be verified)
  2. read the raw body, at most 512 KiB (413)
  3. verify `Stripe-Signature` with the stripe SDK against every configured secret in
     turn (rotation), with the configured tolerance (400 with the reason); the SDK only
     refuses a timestamp too old, so a timestamp more than the tolerance in the future
     is refused here as well (a signature made with a skewed or stolen clock)
  4. parse the body (400 when it is not a JSON Stripe event)
  5. answer a duplicate delivery of an already published event id without publishing
  6. answer an event type the accounts agent does not read without publishing (counted)
  7. publish the raw body, keyed by the Stripe customer id, and answer 200 only after
     Kafka acknowledged it (503 otherwise, so Stripe retries)
  8. remember the event id (only now: a failed publish must be retried, not skipped)

Errors answer `{"error": <code>, "message": <reason>}` (connectors.http.edge's shape).
Nothing unverified is ever published. An event without a customer (e.g. a payment-mode
checkout) is keyed by its event id instead; the accounts agent ignores or dead-letters
it with a reason.
Duplicates are recognised within one process and the last `DEDUP_CAPACITY` ids; a copy
that arrives while the first is still in flight, or at another replica, is published
again and the accounts agent ignores it (it de-duplicates by event id as well).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import stripe
from fastapi import APIRouter, Request, Response

from connectors.http.edge import (
    ApiError,
    Edge,
    await_acks,
    edge_of,
    json_response,
    not_acknowledged,
    read_body,
)
from connectors.http.openapi import JSON, errors, request_body
from streams.accounts.events import customer_key
from streams.settings import Settings
from streams.sources import source_of

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024
DEDUP_CAPACITY = 100_000
# How long a request waits for Kafka's acknowledgement before answering 503.
ACK_TIMEOUT_S = 10.0
# The events the accounts agent reads; every other type is acknowledged and dropped.
PUBLISHED_TYPES = frozenset(
    {"customer.created", "customer.updated", "customer.deleted", "checkout.session.completed"}
)
PUBLISHED_PREFIXES = ("customer.subscription.",)
UNVERIFIED = "-"  # metrics label of the type of an event we could not trust
SIGNATURE = "Stripe-Signature"
# What the bridge reads of an event; Stripe's own fields beyond these are kept as they are.
STRIPE_EVENT = {
    "type": "object",
    "required": ["id", "type"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "api_version": {"type": ["string", "null"]},
        "data": {"type": "object", "properties": {"object": {"type": "object"}}},
    },
}
OPENAPI = {
    **request_body({JSON: STRIPE_EVENT}, description="A Stripe event, signed by Stripe"),
    "parameters": [
        {
            "name": SIGNATURE,
            "in": "header",
            "required": True,
            "description": "t=<unix seconds>,v1=<HMAC-SHA256 of '<t>.<body>'>",
            "schema": {"type": "string"},
        }
    ],
}


class RecentEventIds:
    """The last `capacity` published event ids (least recently seen evicted first)."""

    def __init__(self, capacity: int = DEDUP_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        if event_id not in self._ids:
            return False
        self._ids.move_to_end(event_id)  # type: ignore[arg-type]
        return True

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


def is_published(event_type: str) -> bool:
    return event_type in PUBLISHED_TYPES or event_type.startswith(PUBLISHED_PREFIXES)


def verify_signature(
    body: bytes, header: str | None, secrets: Sequence[str], tolerance_s: int
) -> None:
    """Raise ApiError(400) unless one of `secrets` signed `body` within the tolerance,
    either way of now."""
    if not header:
        raise invalid_signature("missing Stripe-Signature header")
    try:
        payload = body.decode("utf-8")  # Stripe signs the UTF-8 text of the JSON body
    except UnicodeDecodeError:
        raise invalid_signature("the body is not UTF-8 text") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance_s)
        except stripe.SignatureVerificationError:
            continue
        ahead = signed_at(header) - time.time()
        if ahead > tolerance_s:
            raise invalid_signature(
                f"Stripe-Signature timestamp is {ahead:.0f} s in the future, "
                f"outside the tolerance of {tolerance_s} s"
            )
        return
    raise invalid_signature(_why_unverified(payload, header, secrets, tolerance_s))


def signed_at(header: str) -> int:
    """The `t=` timestamp of a header the stripe SDK verified, read the way the SDK reads
    it (the first `t` item), so the one checked here is the one that was signed."""
    items = (item.split("=", 2) for item in header.split(","))
    return int(next(item[1] for item in items if item[0] == "t"))


def _why_unverified(payload: str, header: str, secrets: Sequence[str], tolerance_s: int) -> str:
    """Tell an expired signature from a wrong one (only on the failure path)."""
    problem = "no signature"
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except stripe.SignatureVerificationError as exc:
            problem = str(exc)
            continue
        return f"Stripe-Signature timestamp is outside the tolerance of {tolerance_s} s"
    return f"Stripe-Signature matches no configured webhook secret ({problem})"


def parse_event(body: bytes) -> dict[str, Any]:
    """The verified body as a Stripe event (an object with a string id and type)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise not_an_event(f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise not_an_event("the body is not a JSON object")
    for field in ("id", "type"):
        if not isinstance(event.get(field), str) or not event[field]:
            raise not_an_event(f"the body has no string {field!r}", field)
    return event


def event_headers(event: dict[str, Any], received_at: datetime) -> list[tuple[str, bytes]]:
    return [
        ("stripe-event-id", event["id"].encode()),
        ("stripe-event-type", event["type"].encode()),
        ("stripe-api-version", str(event.get("api_version") or "").encode()),
        ("received-at", received_at.isoformat(timespec="milliseconds").encode()),
    ]


def invalid_signature(message: str) -> ApiError:
    return ApiError(400, "invalid_signature", message, field=SIGNATURE)


def not_an_event(message: str, field: str = "body") -> ApiError:
    return ApiError(400, "invalid_event", message, field=field)


def webhook_router(
    settings: Settings,
    *,
    dedup_capacity: int = DEDUP_CAPACITY,
    ack_timeout_s: float = ACK_TIMEOUT_S,
) -> APIRouter:
    """The bridge's router; it remembers the event ids it published (one per process)."""
    router = APIRouter(tags=["stripe"])
    secrets = tuple(secret.get_secret_value() for secret in settings.stripe_webhook_secrets)
    tolerance_s = settings.stripe_webhook_tolerance_s
    recent = RecentEventIds(dedup_capacity)

    @router.post(
        "/webhooks/stripe",
        summary="Receive a Stripe webhook",
        responses=errors(400, 413, 503),
        openapi_extra=OPENAPI,
    )
    async def stripe_webhook(request: Request) -> Response:
        """Receive a Stripe webhook (signed by Stripe, no API key); 200 once it is in Kafka."""
        edge = edge_of(request)
        count = edge.metrics.webhooks
        try:
            if not secrets:
                raise ApiError(
                    503,
                    "not_configured",
                    "no Stripe webhook signing secret is configured (STRIPE_WEBHOOK_SECRET)",
                )
            body = await read_body(request, MAX_BODY_BYTES)
            verify_signature(body, request.headers.get("stripe-signature"), secrets, tolerance_s)
            event = parse_event(body)
        except ApiError as error:
            count.labels(outcome="rejected", type=UNVERIFIED).inc()
            log.warning("stripe webhook refused (%d): %s", error.status, error)
            return error.response()

        event_id, event_type = event["id"], event["type"]
        if event_id in recent:
            count.labels(outcome="duplicate", type=event_type).inc()
            return json_response({"received": True, "duplicate": True})
        if not is_published(event_type):
            count.labels(outcome="ignored", type=event_type).inc()
            return json_response({"received": True, "ignored": True})
        try:
            await publish(edge, event, body, ack_timeout_s)
        except ApiError as error:
            count.labels(outcome="unavailable", type=event_type).inc()
            return error.response()
        recent.add(event_id)
        count.labels(outcome="published", type=event_type).inc()
        return json_response({"received": True})

    return router


async def publish(edge: Edge, event: dict[str, Any], body: bytes, ack_timeout_s: float) -> None:
    """Produce the verified body and wait for Kafka's acknowledgement (ApiError 503 if not)."""
    event_id, event_type = event["id"], event["type"]
    customer = customer_key(event)
    if customer is None:
        log.info("stripe event %s (%s) names no customer: keyed by its id", event_id, event_type)
    topic = edge.topics.stripe_events
    delivery = edge.producer.produce(
        topic,
        value=body,
        key=(customer or event_id).encode(),
        headers=event_headers(event, datetime.now(UTC)),
    )
    problem = await await_acks([delivery], ack_timeout_s)
    if problem is not None:
        reason = problem.failures[0] if problem.failures else None
        reason = reason or f"no acknowledgement within {ack_timeout_s} s"
        log.error(
            "stripe event %s (%s) not acknowledged by Kafka: %s", event_id, event_type, reason
        )
        raise not_acknowledged("the event", reason)
    source = source_of(delivery.result())
    log.info("stripe event %s (%s) for %s published to %s", event_id, event_type, customer, source)

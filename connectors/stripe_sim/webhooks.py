"""Signed webhook delivery: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, "t.body")>`.

Each event is delivered on its own task (so, like Stripe, not necessarily in order) and
retried with exponential backoff on a non-2xx answer or a connection error. Every attempt
is signed afresh with its own timestamp; the body stays byte-identical.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import asdict, dataclass

import httpx

log = logging.getLogger(__name__)


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass
class Delivery:
    event_id: str
    type: str
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered: bool = False
    gave_up: bool = False


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str


class WebhookDispatcher:
    """Delivers event payloads to one endpoint; lives on the server's event loop."""

    def __init__(
        self,
        endpoint: Endpoint | None,
        *,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_seconds)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def dispatch(self, event_id: str, event_type: str, payload: bytes) -> None:
        """Schedules delivery; a no-op without an endpoint. Call on the server's loop."""
        if self.endpoint is None or self._client is None:
            return
        delivery = Delivery(event_id, event_type)
        self.deliveries.append(delivery)
        task = asyncio.get_running_loop().create_task(
            self._deliver(self._client, self.endpoint, delivery, payload)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def log(self) -> list[dict[str, object]]:
        return [asdict(delivery) for delivery in self.deliveries]

    async def _deliver(
        self, client: httpx.AsyncClient, endpoint: Endpoint, delivery: Delivery, payload: bytes
    ) -> None:
        for attempt in range(self.max_attempts):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            delivery.attempts += 1
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": signature_header(payload, endpoint.secret, int(time.time())),
            }
            try:
                response = await client.post(endpoint.url, content=payload, headers=headers)
            except httpx.HTTPError as error:
                delivery.last_status, delivery.last_error = None, repr(error)
                continue
            delivery.last_status, delivery.last_error = response.status_code, None
            if response.is_success:
                delivery.delivered = True
                return
        delivery.gave_up = True
        log.warning(
            "webhook %s (%s) not delivered after %d attempts: status %s, error %s",
            delivery.event_id,
            delivery.type,
            delivery.attempts,
            delivery.last_status,
            delivery.last_error,
        )

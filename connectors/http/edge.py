"""What the edge's routers share: the process's `Edge`, the JSON error shape, reading a
size-capped body, and waiting for Kafka's acknowledgement.

Routers import from here and `connectors.http.app` composes them: no router imports
back from the module that composes it.

Every error body is `{"error": <code>, "message": <text>, ...}`. Handlers (and their
dependencies) raise `ApiError`; routers built with `route_class=ApiRoute` turn it into
that response, so no app-wide exception handler is needed. The answers several routes
give are built here: 413 (`too_large`), 503 with Retry-After (`unavailable`,
`not_acknowledged`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from connectors.kafka.producer import AsyncProducer
from connectors.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics

# message.timeout.ms of the edge producer is 30 s: every delivery future resolves by
# then; this is only a safety net on top.
ACK_TIMEOUT_S = 35.0
RETRY_AFTER_S = "1"
# Why a client may send measurements again (the ingest API, uploads).
MEASUREMENTS_RETRY = "retrying is safe, measurements are de-duplicated by uid"


@dataclass
class Edge:
    """What request handlers share; built once per process in the app's lifespan."""

    settings: Settings
    topics: Topics
    metrics: Metrics
    producer: AsyncProducer


def edge_of(request: Request) -> Edge:
    """The process's shared producer, topics and metrics (built in the app's lifespan)."""
    edge: Edge = request.app.state.edge
    return edge


# --- the error shape -------------------------------------------------------------------


def json_response(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class ApiError(Exception):
    """An answer other than success: status, a stable error code, a human message."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "message": message, **extra}
        self.headers = headers

    def response(self) -> Response:
        return json_response(self.body, self.status, self.headers)


class ApiRoute(APIRoute):
    """A route whose `ApiError`s (from the handler or its dependencies) become responses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as error:
                return error.response()

        return handle


def too_large(message: str, **extra: Any) -> ApiError:
    return ApiError(413, "payload_too_large", message, field="body", **extra)


def unavailable(message: str) -> ApiError:
    """503: retry after a second (no worker answered, Kafka did not acknowledge)."""
    return ApiError(503, "unavailable", message, headers={"Retry-After": RETRY_AFTER_S})


def not_acknowledged(what: str, problem: object, retry: str = "retry later") -> ApiError:
    """503 for a write Kafka did not acknowledge: `what`, why (`problem`), and whether
    retrying is safe (`retry`)."""
    return unavailable(f"Kafka did not acknowledge {what} ({problem}); {retry}")


# --- reading the body ------------------------------------------------------------------


def check_content_length(request: Request, limit: int) -> None:
    """413 for a body declared larger than `limit` bytes (before any of it is read); 400
    for a Content-Length that is not a number."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(
            400,
            "bad_request",
            f"Content-Length {declared!r} is not a number",
            field="Content-Length",
        )
    if int(declared) > limit:
        raise too_large(f"a body of {declared} bytes exceeds {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole raw body, refused (413) as soon as it is declared or grows past `limit`."""
    check_content_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- Kafka's acknowledgement -----------------------------------------------------------


@dataclass(frozen=True)
class Unacknowledged:
    """Why Kafka did not acknowledge every write of a request."""

    writes: int
    failures: tuple[str, ...]  # the delivery errors
    pending: int  # writes without an answer within `timeout_s`
    timeout_s: float

    def __str__(self) -> str:
        if self.failures:
            return f"{len(self.failures)} of {self.writes} writes failed: {self.failures[0]}"
        return f"{self.pending} of {self.writes} writes not acknowledged within {self.timeout_s:g}s"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark a late failure as seen; the request already answered 503


async def await_acks(
    futures: Sequence[asyncio.Future[Any]], timeout: float
) -> Unacknowledged | None:
    """None once Kafka acknowledged every write; else why it did not (error or timeout).

    A write still pending at the timeout is left to finish (or fail) on its own.
    """
    if not futures:
        return None
    done, pending = await asyncio.wait(futures, timeout=timeout)
    for future in pending:
        future.add_done_callback(_retrieve)
    failures = tuple(str(f.exception()) for f in done if f.exception() is not None)
    if failures or pending:
        return Unacknowledged(len(futures), failures, len(pending), timeout)
    return None

"""The HTTP edge: Stripe webhooks, ingest API, file upload, bill commands, counter
adjustments, read API, and the web console at `/console` (`connectors.console`).

Stateless: every write goes to Kafka and is answered only after Kafka acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from connectors.bill_view import BillView
from connectors.console.mount import mount_console
from connectors.http.auth import OrgAccess
from connectors.http.balances import balances_router
from connectors.http.bills import bills_router
from connectors.http.counters import counters_router
from connectors.http.edge import ApiError, Edge
from connectors.http.ingest import ingest_router
from connectors.http.previews import previews_router
from connectors.http.reads import reads_router
from connectors.http.uploads import uploads_router
from connectors.http.usage_query import usage_query_router
from connectors.http.webhooks import webhook_router
from connectors.kafka.broker import metadata_ok
from connectors.kafka.producer import AsyncProducer, new_producer
from connectors.metrics import CONTENT_TYPE_LATEST, Metrics
from streams.schemas.errors import dotted, problems
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, worker_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The edge; `worker_transport` replaces the network to the worker (tests)."""
    metrics = Metrics()
    topics = Topics.from_settings(settings)
    bill_view = BillView(settings.kafka, topics.bills)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = AsyncProducer(new_producer(settings.kafka))
        producer.start()
        bill_view.start()
        console_reads.start()
        app.state.edge = Edge(settings, topics, metrics, producer)
        try:
            yield
        finally:
            console_reads.stop()
            bill_view.stop()
            await producer.close()

    app = FastAPI(title="meterline", version="0.1.0", lifespan=lifespan)
    app.state.metrics = metrics

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        reachable = await asyncio.to_thread(metadata_ok, settings.kafka, 2.0)
        metrics.kafka_up.set(1 if reachable else 0)
        body = {
            "status": "ok" if reachable else "degraded",
            "kafka": reachable,
            "billView": bill_view.size(),  # bounded: see connectors.bill_view
        }
        return JSONResponse(body, status_code=200 if reachable else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    access = OrgAccess(settings)  # one set of API keys (and one keys file watch) for all
    app.include_router(webhook_router(settings))
    app.include_router(reads_router(settings, transport=worker_transport, access=access))
    app.include_router(ingest_router(settings, access=access))
    app.include_router(uploads_router(settings, access=access))
    app.include_router(usage_query_router(settings, transport=worker_transport, access=access))
    app.include_router(previews_router(settings, transport=worker_transport, access=access))
    app.include_router(bills_router(settings, bill_view, access=access))
    app.include_router(counters_router(settings, access=access))
    app.include_router(balances_router(settings, transport=worker_transport, access=access))
    console_reads = mount_console(app, settings, bill_view, access)
    declare_our_errors(app)
    return app


def declare_our_errors(app: FastAPI) -> None:
    """Parameters FastAPI refuses are a 400 in our error shape (naming the parameter), not
    FastAPI's 422, and the OpenAPI document says so: routes declare their errors
    (`connectors.http.openapi`), FastAPI's generic 422 is left out."""

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
        found = problems(exc.errors(), whole="request", locate=lambda loc: dotted(loc[-1:]))
        message = "; ".join(map(str, found))
        errors = [problem.as_dict() for problem in found]
        error = ApiError(400, "invalid_request", message, field=found[0].field, errors=errors)
        return error.response()

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, routes=app.routes, tags=app.openapi_tags
            )
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

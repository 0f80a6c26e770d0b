"""The ASGI app: Stripe's /v1 API over the simulator, plus /_sim admin endpoints.

Order of a /v1 request:
  1. count it (stats)  2. authenticate  3. injected latency, 429, 500 (nothing applied)
  4. replay or refuse a reused Idempotency-Key  5. execute  6. store the idempotent result
  7. maybe time out or drop the connection (the write stays applied and stored)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connectors.stripe_sim import api
from connectors.stripe_sim.config import SimConfig
from connectors.stripe_sim.errors import StripeError
from connectors.stripe_sim.forms import Params, parse_form
from connectors.stripe_sim.idempotency import Stored, fingerprint
from connectors.stripe_sim.render import shape_of
from connectors.stripe_sim.sim import Simulator
from connectors.stripe_sim.store import new_id
from connectors.stripe_sim.webhooks import Endpoint

_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z_]+)?$")
_MUTATING = frozenset({"POST", "DELETE"})
_RETRY_LATER = {"Stripe-Should-Retry": "true", "Retry-After": "1"}


def build_app(config: SimConfig) -> Starlette:
    sim = Simulator(config)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sim.webhooks.start()
        try:
            yield
        finally:
            await sim.webhooks.close()

    app = Starlette(routes=_routes(), lifespan=lifespan)
    app.state.sim = sim
    return app


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _sim(request: Request) -> Simulator:
    found: Simulator = request.app.state.sim
    return found


# /v1 -------------------------------------------------------------------------------------


async def _v1(request: Request) -> Response:
    sim = _sim(request)
    method, path = request.method, request.url.path
    matched = api.match(method, path)
    sim.stats.arrived(matched[0].endpoint if matched else f"{method} {path}")
    response = await _serve(sim, request, matched)
    body = await request.body() if method == "POST" else b""
    sim.stats.answered(response.status_code, method, path, request.url.query, body)
    return response


async def _serve(
    sim: Simulator, request: Request, matched: tuple[api.Route, tuple[str, ...]] | None
) -> Response:
    method, path = request.method, request.url.path
    version = request.headers.get("stripe-version") or sim.config.default_api_version
    headers = {"Request-Id": new_id("req", 14), "Stripe-Version": version}
    api_key = _api_key(request)
    refusal = await _refusal(sim, request, api_key, matched is not None, version)
    if refusal is not None:
        status, extra_headers = refusal.status, _RETRY_LATER if refusal.status == 429 else {}
        return _json(refusal.body(), status, headers | extra_headers)
    assert matched is not None and api_key is not None
    faults, targeted = sim.faults, sim.faults.targets(path)
    key = request.headers.get("idempotency-key") if method == "POST" else None
    try:
        raw = await request.body() if method == "POST" else request.url.query.encode()
        params = parse_form(raw)
        print_ = fingerprint(params)
        stored = sim.idempotency.replay(api_key, key, matched[0].endpoint, print_) if key else None
    except (StripeError, UnicodeDecodeError) as error:
        failure = (
            error if isinstance(error, StripeError) else StripeError(400, "Body is not UTF-8.")
        )
        return _error(failure, headers)
    if stored is not None:
        replayed = headers | {"Idempotency-Key": key or "", "Idempotent-Replayed": "true"}
        return Response(stored.body, stored.status, replayed, media_type="application/json")
    status, body, replayable = _execute(sim, matched, params, version, headers["Request-Id"], key)
    if key:
        headers["Idempotency-Key"] = key
        if replayable:
            sim.idempotency.save(
                api_key, key, Stored(matched[0].endpoint, print_, status, body, sim.now())
            )
    response = Response(body, status, headers, media_type="application/json")
    if (
        method in _MUTATING
        and targeted
        and faults.roll(faults.config.rate_timeout_after_apply, "timeout_after_apply")
    ):
        if faults.config.timeout_mode == "drop":
            return _Dropped(body, status, headers, media_type="application/json")
        await asyncio.sleep(faults.config.timeout_hold_ms / 1000)
    return response


async def _refusal(
    sim: Simulator, request: Request, api_key: str | None, routed: bool, version: str
) -> StripeError | None:
    """Why the request is answered before anything is applied, if it is."""
    if api_key is None:
        return _unauthorized()
    faults, path = sim.faults, request.url.path
    if faults.targets(path):
        if faults.config.latency_ms:
            await asyncio.sleep(faults.config.latency_ms / 1000)
        if faults.roll(faults.config.rate_429, "429"):
            return _rate_limited()
        if faults.roll(faults.config.rate_500, "500"):
            return StripeError(
                500, "Injected server error; nothing was applied.", type_="api_error"
            )
    if not routed:
        return api.not_found(request.method, path)
    if not _VERSION.match(version):
        return StripeError(400, f"Invalid Stripe API version: {version}")
    return None


def _execute(
    sim: Simulator,
    matched: tuple[api.Route, tuple[str, ...]],
    params: dict[str, Any],
    version: str,
    request_id: str,
    key: str | None,
) -> tuple[int, bytes, bool]:
    route, ids = matched
    shape = shape_of(version)
    call = api.Call(sim.store, Params(params), ids, shape)
    sim.request_id, sim.idempotency_key = request_id, key
    try:
        result = route.handler(call)
        for path in call.params.strings("expand"):
            api.expand(sim.store, result, path.split("."), shape)
        return 200, orjson.dumps(result), True
    except StripeError as error:
        return error.status, orjson.dumps(error.body()), error.replayable
    finally:
        sim.request_id, sim.idempotency_key = None, None


def _api_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            credential = base64.b64decode(credential).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    return credential if credential.startswith("sk_test_") and len(credential) > 8 else None


def _unauthorized() -> StripeError:
    return StripeError(
        401,
        "Invalid API Key provided: the simulator accepts any key starting with sk_test_.",
        replayable=False,
    )


def _rate_limited() -> StripeError:
    return StripeError(
        429,
        "Request rate limit exceeded (injected by the Stripe simulator).",
        code="rate_limit",
        replayable=False,
    )


def _error(error: StripeError, headers: dict[str, str]) -> Response:
    return _json(error.body(), error.status, headers)


class _Dropped(Response):
    """Announces the full body, sends one byte of it and hangs up: the client sees the
    connection break mid-response and cannot tell whether the write happened."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body[:1], "more_body": True})


# /_sim -----------------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    decoded = orjson.loads(raw) if raw.strip() else {}
    if not isinstance(decoded, dict):
        raise ValueError("expected a JSON object")
    return decoded


async def _faults(request: Request) -> Response:
    sim = _sim(request)
    if request.method == "POST":
        try:
            sim.faults.configure(await _body(request))
        except (ValueError, TypeError) as error:
            return _json({"error": str(error)}, 400)
    return _json(sim.faults.config.as_json())


async def _state(request: Request) -> Response:
    return _json(_sim(request).state())


async def _reset(request: Request) -> Response:
    _sim(request).reset()
    return _json({"reset": True})


async def _advance(request: Request) -> Response:
    """Moves the clock by `seconds` and/or `days`, or to the timestamp `to`."""
    sim = _sim(request)
    try:
        body = await _body(request)
        seconds = int(body.get("seconds", 0)) + 86_400 * int(body.get("days", 0))
        if "to" in body:
            seconds = int(body["to"]) - sim.now()
    except (ValueError, TypeError) as error:
        return _json({"error": f"expected seconds, days or to (integers): {error}"}, 400)
    return _json(sim.advance(seconds))


async def _stats(request: Request) -> Response:
    sim = _sim(request)
    if request.method == "DELETE":
        sim.stats.reset()
        sim.faults.injected.clear()
    return _json(sim.stats.as_json() | {"faults": dict(sim.faults.injected)})


async def _checkout(request: Request) -> Response:
    try:
        return _json(_sim(request).checkout(await _body(request)))
    except StripeError as error:
        return _json(error.body(), error.status)
    except (ValueError, TypeError) as error:
        return _json({"error": str(error)}, 400)


async def _webhooks(request: Request) -> Response:
    webhooks = _sim(request).webhooks
    if request.method == "POST":
        body = await _body(request)
        url, secret = body.get("url"), body.get("secret")
        if url is None:
            webhooks.endpoint = None
        elif not (isinstance(secret, str) and secret.startswith("whsec_")):
            return _json({"error": "a webhook URL needs a secret starting with whsec_"}, 400)
        else:
            webhooks.endpoint = Endpoint(str(url), secret)
    endpoint = webhooks.endpoint
    return _json({"url": endpoint.url if endpoint else None, "deliveries": webhooks.log()})


async def _requests(request: Request) -> Response:
    return _json(list(_sim(request).stats.journal))


async def _health(_: Request) -> Response:
    return _json({"ok": True})


def _routes() -> list[Route]:
    return [
        Route("/v1/{path:path}", _v1, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/faults", _faults, methods=["GET", "POST"]),
        Route("/_sim/state", _state, methods=["GET"]),
        Route("/_sim/reset", _reset, methods=["POST"]),
        Route("/_sim/advance", _advance, methods=["POST"]),
        Route("/_sim/stats", _stats, methods=["GET", "DELETE"]),
        Route("/_sim/checkout", _checkout, methods=["POST"]),
        Route("/_sim/webhooks", _webhooks, methods=["GET", "POST"]),
        Route("/_sim/requests", _requests, methods=["GET"]),
        Route("/_sim/health", _health, methods=["GET"]),
    ]

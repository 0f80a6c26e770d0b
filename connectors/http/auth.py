"""API key authentication of the organization API, and the JSON error shape it answers with.

Every error body is `{"error": <code>, "message": <text>, ...}`. Handlers (and the auth
dependency) raise `ApiError`; routers built with `route_class=ApiRoute` turn it into
that response, so no app-wide exception handler is needed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from streams.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key from METERLINE_API_KEYS")


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


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        message,
        headers={"WWW-Authenticate": "Bearer"},
        field="Authorization",
    )


class KeyRing:
    """The accepted API keys, compared in constant time.

    Keys are compared as SHA-256 digests so every comparison has the same length, and
    the presented key is compared with every key (no early exit revealing which matched).
    """

    def __init__(self, keys: tuple[SecretStr, ...]) -> None:
        self._digests = tuple(_digest(key.get_secret_value()) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str) -> bool:
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def require_org_key(settings: Settings) -> Callable[..., Awaitable[str]]:
    """A dependency for `/organizations/{orgId}/...`: the caller's key, then the org.

    Use it as a parameter default, `org_id: str = Depends(...)`: inside
    `Annotated[...]` a local name does not resolve under `from __future__ import
    annotations`, and FastAPI would silently take `org_id` for a query parameter.

    Auth is checked first so an unauthenticated caller cannot probe org ids: missing or
    wrong key -> 401 (with `WWW-Authenticate: Bearer`), then an `{orgId}` other than
    this deployment's -> 404. Returns the org id.
    """
    keys = KeyRing(settings.api_keys)
    org_id = settings.org_id

    async def authorized_org(
        requested: Annotated[str, Path(alias="orgId", description="The organization id")],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        if not keys:
            raise unauthorized("no API keys are configured: METERLINE_API_KEYS is not set")
        if credentials is None:
            raise unauthorized("missing 'Authorization: Bearer <API key>' header")
        if not keys.accepts(credentials.credentials):
            raise unauthorized("invalid API key")
        if requested != org_id:
            raise ApiError(404, "not_found", f"unknown organization {requested!r}", field="orgId")
        return org_id

    return authorized_org

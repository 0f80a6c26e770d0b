"""API key authentication of the organization API (errors in the edge's shape,
`connectors.http.edge.ApiError`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from connectors.http.edge import ApiError
from streams.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API key from METERLINE_API_KEYS")


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

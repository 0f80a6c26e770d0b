"""API key authentication of the organization API (errors in the edge's shape,
`connectors.http.edge.ApiError`); the keys and their scopes are `connectors.http.keys`.

Every refusal is counted in `/metrics` as `meterline_http_auth_refusals_total{reason,
scope}`: `no_keys`, `missing_key`, `invalid_key` (401), `other_organization`,
`missing_scope` (403), `unknown_organization` (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from connectors.http.edge import ApiError
from connectors.http.keys import ApiKeys, KeyFile, Scope, settings_keys
from connectors.metrics import Metrics
from streams.settings import Settings

_bearer = HTTPBearer(
    auto_error=False, description="An API key of METERLINE_API_KEYS or METERLINE_API_KEYS_FILE"
)


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        message,
        headers={"WWW-Authenticate": "Bearer"},
        field="Authorization",
    )


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message, field="Authorization")


def api_keys(settings: Settings) -> ApiKeys:
    """The keys of `METERLINE_API_KEYS` and of the keys file (KeyFileError if it is bad)."""
    file = KeyFile(settings.api_keys_file) if settings.api_keys_file else None
    return ApiKeys(settings_keys(settings.api_keys), file)


class OrgAccess:
    """Dependencies for `/organizations/{orgId}/...` routes, one per scope they need.

    Use one as a parameter default, `org_id: str = Depends(access.requires(Scope.READ))`:
    inside `Annotated[...]` a local name does not resolve under `from __future__ import
    annotations`, and FastAPI would silently take `org_id` for a query parameter.

    Auth is checked first so an unauthenticated caller cannot probe org ids: missing or
    wrong key -> 401 (with `WWW-Authenticate: Bearer`); a key of another organization, or
    without the route's scope -> 403; then an `{orgId}` other than this deployment's ->
    404. The dependency returns the org id.
    """

    def __init__(self, settings: Settings) -> None:
        self.keys = api_keys(settings)
        self.org_id = settings.org_id

    def requires(self, *scopes: Scope) -> Callable[..., Awaitable[str]]:
        """A dependency admitting a key with any of `scopes`."""
        keys, org_id = self.keys, self.org_id
        needed = " or ".join(scopes)

        async def authorized_org(
            request: Request,
            requested: Annotated[str, Path(alias="orgId", description="The organization id")],
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ) -> str:
            def refuse(reason: str, error: ApiError) -> ApiError:
                metrics: Metrics | None = getattr(request.app.state, "metrics", None)
                if metrics is not None:
                    metrics.auth_refusals.labels(reason, needed).inc()
                return error

            ring = keys.ring()
            if not ring:
                raise refuse(
                    "no_keys",
                    unauthorized(
                        "no API keys are configured: METERLINE_API_KEYS is not set "
                        "(nor any key in METERLINE_API_KEYS_FILE)"
                    ),
                )
            if credentials is None:
                raise refuse(
                    "missing_key",
                    unauthorized("missing 'Authorization: Bearer <API key>' header"),
                )
            key = ring.find(credentials.credentials)
            if key is None:
                raise refuse("invalid_key", unauthorized("invalid API key"))
            if key.org is not None and key.org != requested:
                raise refuse(
                    "other_organization",
                    forbidden(f"API key {key.name!r} is not a key of organization {requested!r}"),
                )
            if not any(key.allows(scope) for scope in scopes):
                path = getattr(request.scope.get("route"), "path", request.url.path)
                route = f"{request.method} {path}"
                raise refuse(
                    "missing_scope",
                    forbidden(
                        f"API key {key.name!r} has the scopes {key.describe_scopes()}; "
                        f"{route} needs {needed}"
                    ),
                )
            if requested != org_id:
                raise refuse(
                    "unknown_organization",
                    ApiError(
                        404, "not_found", f"unknown organization {requested!r}", field="orgId"
                    ),
                )
            return org_id

        return authorized_org

"""What the edge's OpenAPI document declares beyond FastAPI's defaults.

Handlers read their bodies themselves (streamed, size-capped, errors in our shape), so
FastAPI cannot see them: `request_body` declares each one, `errors` the error answers
(every error body is `ErrorBody`; a 4xx names the field, parameter or header at fault).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streams.schemas.measurement import Measurement

JSON = "application/json"

DESCRIPTIONS = {
    400: "Bad input: `field` (or each of `errors`) names what is wrong and why",
    401: "Missing or invalid API key (`field`: Authorization)",
    403: "The API key is of another organization, or lacks the route's scope "
    "(`field`: Authorization)",
    404: "Unknown organization or resource (`field`: the path or query parameter)",
    409: "The bill's lifecycle forbids the change (the reason in `message`)",
    413: "The body is larger than allowed (`field`: body)",
    415: "The Content-Type is not one this route reads (`field`: Content-Type)",
    502: "A worker answered with an error",
    503: "No worker or Kafka answered in time, or the owner is rebalancing; retry (Retry-After)",
}
ORG_ERRORS = (400, 401, 403, 404)


class FieldError(BaseModel):
    field: str = Field(description="The field, parameter or header at fault (dotted path)")
    reason: str
    index: int | None = Field(default=None, description="Position in the request's list")


class ErrorBody(BaseModel):
    """Every error answer of the edge."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable error code, e.g. invalid_query")
    message: str = Field(description="What went wrong, for a human")
    field: str | None = Field(default=None, description="The field, parameter or header at fault")
    errors: list[FieldError] | None = Field(default=None, description="Every problem found")


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering these error statuses."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS[status]}
        for status in sorted(set(statuses))
    }


def request_body(
    content: dict[str, dict[str, Any]], *, required: bool = True, description: str = ""
) -> dict[str, Any]:
    """The `openapi_extra=` declaring a body: media type -> JSON schema."""
    body: dict[str, Any] = {
        "required": required,
        "content": {kind: {"schema": schema} for kind, schema in content.items()},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined (the document has no place for them)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


def measurements_schema(limit: int) -> dict[str, Any]:
    """m3ter's ingest body: `{"measurements": [1 to limit measurements]}`."""
    return {
        "type": "object",
        "required": ["measurements"],
        "additionalProperties": False,
        "properties": {
            "measurements": {
                "type": "array",
                "items": schema_of(Measurement),
                "minItems": 1,
                "maxItems": limit,
            }
        },
    }


def upload_body(media_types: Iterable[str], limit: int) -> dict[str, Any]:
    """A file of measurements as the body, or as the `file` field of a multipart form."""
    content: dict[str, dict[str, Any]] = {}
    for kind in media_types:
        if kind == JSON:
            array = {"type": "array", "items": schema_of(Measurement)}
            content[kind] = {"anyOf": [array, measurements_schema(limit)]}
        else:
            content[kind] = {
                "type": "string",
                "description": "JSON Lines: one measurement per line; CSV: a header row of "
                "field names (uid, meter, account, ts, ets, measure.calls, who.user, ...)",
            }
    content["multipart/form-data"] = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}},
    }
    return request_body(content)

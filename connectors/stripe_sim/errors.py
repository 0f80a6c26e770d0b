"""Stripe's error objects: raised by the simulator's handlers as `StripeError`, rendered
as `{"error": {...}}` the way Stripe answers them."""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    """An error Stripe would answer with; `replayable` says whether idempotency stores it.

    Stripe saves a result only once execution began: parameter validation failures are
    not saved, business-rule refusals (e.g. editing a finalized invoice) are.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        replayable: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.replayable = replayable

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid_param(param: str, message: str, code: str = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=param, replayable=False)


def missing_param(param: str) -> StripeError:
    return invalid_param(param, f"Missing required param: {param}.", "parameter_missing")


def unknown_param(param: str) -> StripeError:
    return invalid_param(param, f"Received unknown parameter: {param}", "parameter_unknown")


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def refused(message: str, code: str | None = None, param: str | None = None) -> StripeError:
    """A business rule refusing the request after it was understood (stored for replay)."""
    return StripeError(400, message, code=code, param=param)

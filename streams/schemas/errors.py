"""pydantic's validation errors as our text: `field: reason`, the field and the rule.

One place turns a `ValidationError` (or FastAPI's `RequestValidationError.errors()`)
into what a user reads:
- `problems`: one `Problem(field, reason)` per error;
- `error_lines`: `"<field>: <reason>"` per error, pydantic's reasons as they are;
- `error_text`: those lines joined by `"; "`.

How the field is spelled: `dotted` (`measure.calls`, the default) or `indexed`
(`lines[0].subtotal`), after `prefix`; `whole` names the value itself when the error has
no location (e.g. "body"). `plain` drops pydantic's "Value error, " and "Assertion failed, "
before a validator's own message; `words` replaces the reason of an error type (e.g.
`{"missing": "is required"}`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import ValidationError

Location = Sequence[int | str]
Errors = ValidationError | Iterable[Mapping[str, Any]]
Locator = Callable[[Location], str]

PREFIXES = ("Value error, ", "Assertion failed, ")


class Problem(NamedTuple):
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def dotted(location: Location) -> str:
    """`measure.calls`, `accountIds.3`."""
    return ".".join(str(part) for part in location)


def indexed(location: Location) -> str:
    """`.plans[0].code` (each part with its separator: the caller's prefix comes first)."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)


def plain_reason(message: str) -> str:
    """A validator's own message, without the prefix pydantic puts before it."""
    for prefix in PREFIXES:
        message = message.removeprefix(prefix)
    return message


def problems(
    errors: Errors,
    prefix: str = "",
    *,
    whole: str = "",
    locate: Locator = dotted,
    plain: bool = False,
    words: Mapping[str, str] | None = None,
) -> list[Problem]:
    """One `Problem` per error: the field `prefix + locate(loc)` (`whole` when that is
    empty), the reason pydantic's message (`plain`: without its prefix; `words`: ours for
    an error type)."""
    found = errors.errors(include_url=False) if isinstance(errors, ValidationError) else errors
    out = []
    for error in found:
        field = prefix + locate(error["loc"]) or whole
        reason = (words or {}).get(error["type"]) or error["msg"]
        out.append(Problem(field, plain_reason(reason) if plain else reason))
    return out


def error_lines(
    errors: Errors, prefix: str = "", *, whole: str = "", locate: Locator = dotted
) -> list[str]:
    """`"<field>: <reason>"` per error (see `problems`)."""
    return [str(problem) for problem in problems(errors, prefix, whole=whole, locate=locate)]


def error_text(
    errors: Errors, prefix: str = "", *, whole: str = "", locate: Locator = dotted
) -> str:
    """Every error as `"<field>: <reason>"`, joined by `"; "` (see `problems`)."""
    return "; ".join(error_lines(errors, prefix, whole=whole, locate=locate))

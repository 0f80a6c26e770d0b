"""Measurement numbers: exact decimals from the JSON text to the fold, never via a float.

A number of a measurement's `measure`, `income` or `cost` map is a JSON number, kept
exactly as sent or refused with a reason; never rounded. Every path that reads or writes
measurement JSON (the ingest API, file uploads, `MeasurementProducer`, the worker) uses
`decode_json` and `encode_json`: integers become `int` (any size), every other number a
`Decimal` made from its text, and both are written back as the same JSON number.
(orjson reads them as floats: 12345678901234567890123 became 1.2345678901234568e22 and
1e-400 became 0.0; msgspec's `float_hook` hands over the text instead.)

The limits, `exact_number` (the one rule every path applies):
- at most 30 digits before the decimal point (|x| < 10**30) and at most 20 after it
  (x is a whole multiple of 10**-20), like SQL's DECIMAL(50, 20). Trailing zeros after
  the point do not count (`1.000` is 1), `1E+2` is 100 and `-0` is 0.
- NaN and infinities are not numbers (JSON has neither; Python's `json` accepts them).

So every accepted number has at most 50 significant digits, sums are exact (the fold adds
in the unbounded context `EXACT`) and a stored state stays small: a number
like 1e-400 or 1e400 would make every sum it enters hundreds of digits long.
"""

from __future__ import annotations

import math
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation
from typing import Any

import msgspec

MAX_INTEGER_DIGITS = 30
MAX_FRACTION_DIGITS = 20
LIMIT = 10**MAX_INTEGER_DIGITS  # exclusive bound of |x|
RULE = (
    f"at most {MAX_INTEGER_DIGITS} digits before the decimal point and {MAX_FRACTION_DIGITS} "
    "after it; numbers are never rounded"
)
TOO_LARGE = f"has more than {MAX_INTEGER_DIGITS} digits before the decimal point ({RULE})"
TOO_PRECISE = f"has more than {MAX_FRACTION_DIGITS} digits after the decimal point ({RULE})"
NOT_FINITE = "NaN and infinities are not numbers"
NOT_A_NUMBER = "expected a number"
ZERO = Decimal(0)
_SMALLEST = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)
# Exact: no operation on measurement numbers in this context can round (it traps if one
# ever did). Normalizing, comparing and adding never need more digits than they are given.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])

# The JSON Schema of a measurement number (the model's `Number`).
JSON_SCHEMA: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": -LIMIT,
    "exclusiveMaximum": LIMIT,
    "description": (
        "An exact decimal, read from its JSON text (never as a float) and never rounded: at "
        f"most {MAX_INTEGER_DIGITS} digits before the decimal point and "
        f"{MAX_FRACTION_DIGITS} after it (trailing zeros after the point do not count). "
        "A number beyond these limits is refused, naming the field; so are NaN and infinities."
    ),
}


class OutOfRange(str):
    """The text of a JSON number whose exponent no Decimal holds, e.g. 1e-99999999999999999999."""

    __slots__ = ()

    def verdict(self) -> Decimal | str:
        mantissa, _, exponent = self.lower().partition("e")
        if not mantissa.strip("+-0."):
            return ZERO
        return TOO_PRECISE if exponent.startswith("-") else TOO_LARGE


def exact_number(value: object) -> Decimal | str:
    """The exact Decimal of a measurement number, or why it is refused (a reason).

    int and Decimal are what `decode_json` gives; a float (from Python callers) counts as
    the shortest decimal that reads back as it, `repr(value)`. bool is not a number.
    """
    if type(value) is int:
        return Decimal(value) if -LIMIT < value < LIMIT else TOO_LARGE
    if type(value) is Decimal:
        number = value
    elif type(value) is float:
        if not math.isfinite(value):
            return NOT_FINITE
        number = Decimal(repr(value))
    elif type(value) is OutOfRange:
        return value.verdict()
    else:
        return NOT_A_NUMBER
    if not number.is_finite():
        return NOT_FINITE
    if not number:
        return ZERO  # 0E-400, -0.0: zero, without an exponent to drag into every sum
    if number.adjusted() >= MAX_INTEGER_DIGITS:
        return TOO_LARGE
    try:  # exact to 20 places? Trailing zeros past them do not count (`1.000…0` is 1).
        EXACT.quantize(number, _SMALLEST)
    except Inexact:
        return TOO_PRECISE
    return number


# --- JSON ------------------------------------------------------------------------------


def json_number(text: str) -> Decimal | OutOfRange:
    """A JSON number that is not an integer, exactly: the Decimal of its text."""
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        return OutOfRange(text)


def json_integer(text: str) -> int | Decimal:
    """A JSON integer exactly: an int, or a Decimal when it is too long to be accepted anyway
    (Python refuses to parse an int of more than 4,300 digits)."""
    return int(text) if len(text) <= MAX_INTEGER_DIGITS + 1 else Decimal(text)


_DECODER = msgspec.json.Decoder(float_hook=json_number)
_ENCODER = msgspec.json.Encoder(decimal_format="number", enc_hook=str)
DecodeError = msgspec.DecodeError
EncodeError = msgspec.EncodeError


def decode_json(data: bytes | str) -> Any:
    """A JSON document with exact numbers: int for integers, Decimal for the rest.

    Raises `DecodeError` (a ValueError) for text that is not JSON, NaN and Infinity included,
    and for a document nested deeper than the decoder's recursion limit.
    """
    try:
        return _DECODER.decode(data)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None


def encode_json(value: Any) -> bytes:
    """JSON with every int and Decimal written as the exact JSON number it is.

    A value JSON cannot hold is written as its `str`: only for documents that quote what
    was refused (dead letters); accepted measurements hold ints and finite Decimals only.
    """
    return _ENCODER.encode(value)

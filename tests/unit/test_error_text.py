"""pydantic's validation errors as our text (`streams.schemas.errors`): every place that
words them gets `field: reason`, the field spelled the way that place always spelled it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from streams.schemas.errors import dotted, error_lines, error_text, indexed, problems


class Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int

    @field_validator("amount")
    @classmethod
    def _positive(cls, amount: int) -> int:
        if amount <= 0:
            raise ValueError("must be positive")
        return amount


class Bill(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    lines: list[Line]


def caught(data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Bill.model_validate(data)
    return info.value


BAD = {"lines": [{"amount": 1}, {"amount": 0, "color": "red"}]}


def test_each_error_is_its_dotted_field_and_pydantics_reason_joined_by_semicolons() -> None:
    assert error_text(caught(BAD)) == (
        "id: Field required; lines.1.amount: Value error, must be positive; "
        "lines.1.color: Extra inputs are not permitted"
    )


def test_a_prefix_comes_before_every_field() -> None:
    assert error_text(caught({"id": "b", "lines": "x"}), "event.data.") == (
        "event.data.lines: Input should be a valid list"
    )


def test_indexed_fields_read_like_paths_into_a_document() -> None:
    assert error_lines(caught(BAD), "catalog", locate=indexed) == [
        "catalog.id: Field required",
        "catalog.lines[1].amount: Value error, must be positive",
        "catalog.lines[1].color: Extra inputs are not permitted",
    ]


def test_an_error_of_the_whole_value_is_named_by_whole() -> None:
    with pytest.raises(ValidationError) as info:
        Bill.model_validate_json(b"[1]")
    assert error_text(info.value, whole="value") == ("value: Input should be an object")
    assert problems(info.value, whole="body")[0].field == "body"


def test_plain_reasons_drop_pydantics_prefix_and_words_replace_reasons_by_type() -> None:
    found = problems(caught(BAD), plain=True, words={"missing": "is required"})
    assert [problem.as_dict() for problem in found] == [
        {"field": "id", "reason": "is required"},
        {"field": "lines.1.amount", "reason": "must be positive"},
        {"field": "lines.1.color", "reason": "Extra inputs are not permitted"},
    ]


def test_plain_error_dicts_are_read_as_well_as_a_validation_error() -> None:
    errors = [{"loc": ("query", "limit"), "msg": "Input should be a valid integer", "type": "x"}]
    found = problems(errors, whole="request", locate=lambda loc: dotted(loc[-1:]))
    assert [str(problem) for problem in found] == ["limit: Input should be a valid integer"]
    assert problems([{"loc": (), "msg": "m", "type": "x"}], whole="request")[0].field == "request"

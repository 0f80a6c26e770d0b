from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from streams.expressions import ExpressionError, compile_expression

FIELDS = ("calls", "bytes", "price", "zero", "data-gb")
VALUES = {
    "calls": Decimal(10),
    "bytes": Decimal(2048),
    "price": Decimal("0.25"),
    "zero": Decimal(0),
    "data-gb": Decimal("1.5"),
}


def evaluate(text: str, values: dict[str, Decimal] | None = None) -> Decimal:
    return compile_expression(text, FIELDS).evaluate(VALUES if values is None else values)


def error_of(text: str, values: dict[str, Decimal] | None = None) -> str:
    with pytest.raises(ExpressionError) as caught:
        evaluate(text, values)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("10 - 4 - 3", "3"),
        ("2 * 3 % 4", "2"),
        ("-2 * 3", "-6"),
        ("- -2", "2"),
        ("+calls", "10"),
        ("1 + 2 > 2", "1"),
        ("1 + (2 > 2)", "1"),
        ("1 < 2 and 3 < 2 or 1", "1"),
        ("1 or 0 and 0", "1"),
        ("not 1 == 2", "1"),
        ("not calls", "0"),
        ("calls / 4 + price", "2.75"),
        ("calls * price - 1", "1.50"),
        ("0.1 + 0.2 == 0.3", "1"),
        ("1e3 + .5", "1000.5"),
    ],
)
def test_operators_follow_the_usual_precedence(text: str, expected: str) -> None:
    assert str(evaluate(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("calls < 10", "0"),
        ("calls <= 10", "1"),
        ("calls > 9.99", "1"),
        ("calls >= 11", "0"),
        ("calls == 10.0", "1"),
        ("calls != 10", "0"),
        ("0 and 1", "0"),
        ("0 or 2", "1"),
        ("-7 % 3", "-1"),
    ],
)
def test_comparisons_and_logic_give_one_or_zero(text: str, expected: str) -> None:
    assert str(evaluate(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min(calls, 3, 7)", "3"),
        ("max(calls, 3, 70)", "70"),
        ("min(price)", "0.25"),
        ("abs(-2.5)", "2.5"),
        ("round(2.5)", "3"),
        ("round(-2.5)", "-3"),
        ("round(1.005, 2)", "1.01"),
        ("round(1234, -2)", "1200"),
        ("round(-1250, -2)", "-1300"),
        ("floor(-1.5)", "-2"),
        ("floor(1.9)", "1"),
        ("ceil(1.2)", "2"),
        ("ceil(-1.2)", "-1"),
        ("if(calls > 5, 1, 2)", "1"),
        ("if(zero, 1, 2)", "2"),
        ("MAX(1, 2)", "2"),
    ],
)
def test_every_function_computes_its_value(text: str, expected: str) -> None:
    assert str(evaluate(text)) == expected


def test_if_evaluates_only_the_branch_it_takes() -> None:
    assert evaluate("if(zero, calls / zero, 0)") == 0
    assert evaluate("zero and calls / zero") == 0
    assert evaluate("1 or calls / zero") == 1


def test_back_quotes_reference_a_code_with_a_hyphen() -> None:
    expression = compile_expression("`data-gb` * 2", FIELDS)
    assert expression.fields == {"data-gb"}
    assert expression.evaluate(VALUES) == Decimal(3)


def test_fields_lists_the_referenced_codes_only() -> None:
    assert compile_expression("calls * price + 1", FIELDS).fields == {"calls", "price"}
    assert compile_expression("2 * 3", FIELDS).fields == frozenset()


def test_division_keeps_28_significant_digits_whatever_the_thread_context() -> None:
    expression = compile_expression("calls / 3", FIELDS)
    with localcontext() as context:
        context.prec = 3
        result = expression.evaluate(VALUES)
    assert result == Decimal("3.333333333333333333333333333")


def test_python_is_never_evaluated() -> None:
    assert error_of('__import__("os")') == "unexpected character '\"' at 12"
    assert error_of("__import__(1)") == "unknown function '__import__' at 1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("calls + x", "unknown field 'x' at 9"),
        ("`nope` + 1", "unknown field 'nope' at 1"),
        ("sqrt(4)", "unknown function 'sqrt' at 1"),
        ("abs(1, 2)", "abs() takes 1 argument(s), got 2 at 1"),
        ("round(1, 2, 3)", "round() takes 1 or 2 argument(s), got 3 at 1"),
        ("if(1, 2)", "if() takes 3 argument(s), got 2 at 1"),
        ("calls = 1", "unexpected character '=' at 7 (did you mean '=='?)"),
        ("calls $ 2", "unexpected character '$' at 7"),
        ("`calls", "unclosed '`' at 1"),
        ("`` + 1", "empty field name at 1"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("(1 + 2", "expected ')', found end of expression at 7"),
        ("1 +", "expected a number, a field or '(', found end of expression at 4"),
        ("1 2", "expected an operator, found '2' at 3"),
        ("min(1,)", "expected a number, a field or '(', found ')' at 7"),
        ("1 < 2 < 3", "comparisons cannot be chained at 7 (use 'and')"),
        ("round(calls, price)", "round() places must be a constant at 14"),
        ("round(calls, 1.5)", "round() places must be a whole number from -28 to 28 at 14"),
        ("1 / 0", "division by zero at 3"),
        ("(" * 70 + "1" + ")" * 70, "expression nests deeper than 64 levels at 65"),
        ("+".join(["1"] * 70), "expression nests deeper than 64 levels at 128"),
    ],
)
def test_a_bad_calculation_fails_to_compile_naming_position_and_problem(
    text: str, message: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, FIELDS)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("calls / zero", "division by zero at 7"),
        ("calls % zero", "remainder of division by zero at 7"),
        ("round(calls * 1e30, 2)", "round() result needs more than 28 digits at 1"),
        ("calls * 1e999990 * 1e999990", "arithmetic error: Overflow"),
    ],
)
def test_evaluation_errors_name_the_problem(text: str, message: str) -> None:
    assert error_of(text) == message


def test_a_missing_value_is_an_error_naming_the_field() -> None:
    assert error_of("calls + bytes", {"calls": Decimal(1)}) == "missing value for field 'bytes'"


def test_nesting_within_the_limit_evaluates() -> None:
    assert evaluate("(" * 60 + "calls" + ")" * 60) == 10
    assert evaluate("-" * 60 + "calls") == 10


@pytest.mark.parametrize("prefix", ["-", "not ", "abs("])
def test_nesting_beyond_the_limit_is_refused_before_python_recursion_fails(prefix: str) -> None:
    with pytest.raises(ExpressionError, match="nests deeper than 64 levels"):
        compile_expression(prefix * 2000 + "1", FIELDS)

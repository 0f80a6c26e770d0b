"""A small, safe expression language for a meter's derived fields (`calculation`).

    expression := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := ("-" | "+") unary | primary
    primary    := number | field | function "(" expression ("," expression)* ")"
                | "(" expression ")"

A field is a bare identifier (`calls`) or, for codes with a hyphen, back-quoted
(`` `data-gb` ``). Comparisons and `and`/`or`/`not` give 1 or 0 (non-zero is true);
`and`, `or` and `if` evaluate lazily. `%` is Decimal's remainder (sign of the
dividend). Functions: min, max, abs, round(x[, places]) half-up, floor, ceil,
if(condition, then, else). Keywords and function names are case-insensitive.

Text is tokenized, parsed by recursive descent into a tree and compiled once into
closures over Decimal arithmetic in one fixed context; user text never reaches
`eval`. Positions in error messages are 1-based columns.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

# Every derived value is computed in this context, whatever the thread's context is.
ARITHMETIC = Context(
    prec=28, rounding=ROUND_HALF_EVEN, traps=[DivisionByZero, InvalidOperation, Overflow]
)
ZERO = Decimal(0)
ONE = Decimal(1)
MAX_DEPTH = 64

Fn = Callable[[Mapping[str, Decimal]], Decimal]


class ExpressionError(ValueError):
    """A calculation that does not compile, or cannot be evaluated for given values."""


# --- tokens ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<quoted>`[^`]*`)
    |(?P<op><=|>=|==|!=|[-+*/%<>(),])
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset({"and", "or", "not"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number | name | field | op | keyword | end
    text: str
    pos: int  # 1-based column


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        match = _TOKEN.match(text, index)
        if match is None:
            if text[index] == "`":
                raise ExpressionError(f"unclosed '`' at {index + 1}")
            hint = " (did you mean '=='?)" if text[index] == "=" else ""
            raise ExpressionError(f"unexpected character {text[index]!r} at {index + 1}{hint}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "quoted":
            if len(value) == 2:
                raise ExpressionError(f"empty field name at {index + 1}")
            tokens.append(Token("field", value[1:-1], index + 1))
        elif kind == "name" and value.lower() in _KEYWORDS:
            tokens.append(Token("keyword", value.lower(), index + 1))
        elif kind != "space":
            tokens.append(Token(kind, value, index + 1))
        index = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# --- tree -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    value: Decimal
    pos: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class FieldRef:
    code: str
    pos: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" | "+" | "not"
    operand: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # arithmetic, comparison, "and", "or"
    left: Node
    right: Node
    pos: int
    depth: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: int
    depth: int


Node = Number | FieldRef | Unary | Binary | Call

_COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})
_ARITY: dict[str, tuple[int, int | None]] = {
    "min": (1, None),
    "max": (1, None),
    "abs": (1, 1),
    "round": (1, 2),
    "floor": (1, 1),
    "ceil": (1, 1),
    "if": (3, 3),
}


class _Parser:
    def __init__(self, text: str, fields: Collection[str]) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.fields = fields
        self.nesting = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, kind: str, *texts: str) -> bool:
        token = self.token
        return token.kind == kind and (not texts or token.text in texts)

    def expect(self, text: str) -> Token:
        if not self.at("op", text):
            raise self.unexpected(f"expected '{text}'")
        return self.advance()

    def unexpected(self, what: str = "unexpected") -> ExpressionError:
        token = self.token
        found = "end of expression" if token.kind == "end" else repr(token.text)
        return ExpressionError(f"{what}, found {found} at {token.pos}")

    def node(self, node: Unary | Binary | Call) -> Node:
        if node.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels at {node.pos}")
        return node

    def parse(self) -> Node:
        if self.at("end"):
            raise ExpressionError("empty expression")
        tree = self.parse_or()
        if not self.at("end"):
            raise self.unexpected("expected an operator")
        return tree

    def parse_or(self) -> Node:
        left = self.parse_and()
        while self.at("keyword", "or"):
            pos = self.advance().pos
            right = self.parse_and()
            left = self.node(Binary("or", left, right, pos, 1 + max(left.depth, right.depth)))
        return left

    def parse_and(self) -> Node:
        left = self.parse_not()
        while self.at("keyword", "and"):
            pos = self.advance().pos
            right = self.parse_not()
            left = self.node(Binary("and", left, right, pos, 1 + max(left.depth, right.depth)))
        return left

    def parse_not(self) -> Node:
        if self.at("keyword", "not"):
            pos = self.advance().pos
            operand = self.nested(self.parse_not, pos)
            return self.node(Unary("not", operand, pos, 1 + operand.depth))
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        left = self.parse_sum()
        if self.at("op", *_COMPARISONS):
            token = self.advance()
            right = self.parse_sum()
            left = self.node(
                Binary(token.text, left, right, token.pos, 1 + max(left.depth, right.depth))
            )
            if self.at("op", *_COMPARISONS):
                raise ExpressionError(
                    f"comparisons cannot be chained at {self.token.pos} (use 'and')"
                )
        return left

    def parse_sum(self) -> Node:
        left = self.parse_product()
        while self.at("op", "+", "-"):
            token = self.advance()
            right = self.parse_product()
            left = self.node(
                Binary(token.text, left, right, token.pos, 1 + max(left.depth, right.depth))
            )
        return left

    def parse_product(self) -> Node:
        left = self.parse_unary()
        while self.at("op", "*", "/", "%"):
            token = self.advance()
            right = self.parse_unary()
            left = self.node(
                Binary(token.text, left, right, token.pos, 1 + max(left.depth, right.depth))
            )
        return left

    def parse_unary(self) -> Node:
        if self.at("op", "-", "+"):
            token = self.advance()
            operand = self.nested(self.parse_unary, token.pos)
            return self.node(Unary(token.text, operand, token.pos, 1 + operand.depth))
        return self.parse_primary()

    def nested(self, parse: Callable[[], Node], pos: int) -> Node:
        # Bounds Python recursion on inputs like "((((...", before the tree exists.
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels at {pos}")
        try:
            return parse()
        finally:
            self.nesting -= 1

    def parse_primary(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            return Number(Decimal(token.text), token.pos)
        if token.kind == "name" and self.tokens[self.index + 1].text == "(":
            return self.parse_call()
        if token.kind in ("name", "field"):
            self.advance()
            if token.text not in self.fields:
                raise ExpressionError(f"unknown field {token.text!r} at {token.pos}")
            return FieldRef(token.text, token.pos)
        if self.at("op", "("):
            self.advance()
            inner = self.nested(self.parse_or, token.pos)
            self.expect(")")
            return inner
        raise self.unexpected("expected a number, a field or '('")

    def parse_call(self) -> Node:
        token = self.advance()
        name = token.text.lower()
        if name not in _ARITY:
            raise ExpressionError(f"unknown function {token.text!r} at {token.pos}")
        self.expect("(")
        args = [self.nested(self.parse_or, token.pos)]
        while self.at("op", ","):
            self.advance()
            args.append(self.nested(self.parse_or, token.pos))
        self.expect(")")
        low, high = _ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            expected = f"{low}" if low == high else f"{low} or {high}" if high else f"{low}+"
            raise ExpressionError(
                f"{name}() takes {expected} argument(s), got {len(args)} at {token.pos}"
            )
        depth = 1 + max(arg.depth for arg in args)
        return self.node(Call(name, tuple(args), token.pos, depth))


# --- compilation ----------------------------------------------------------------------

_ARITHMETIC_OPS: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": ARITHMETIC.add,
    "-": ARITHMETIC.subtract,
    "*": ARITHMETIC.multiply,
}
_COMPARISON_OPS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _referenced(node: Node) -> set[str]:
    if isinstance(node, FieldRef):
        return {node.code}
    if isinstance(node, Number):
        return set()
    if isinstance(node, Unary):
        return _referenced(node.operand)
    if isinstance(node, Binary):
        return _referenced(node.left) | _referenced(node.right)
    return set().union(*(_referenced(arg) for arg in node.args))


def _compile(node: Node) -> Fn:
    fn = _build(node)
    if isinstance(node, Number | FieldRef) or _referenced(node):
        return fn
    try:
        constant = fn({})
    except (ExpressionError, DecimalException):
        return fn  # e.g. the untaken branch of if(0, 1/0, x): fails only if evaluated
    return lambda _values: constant


def _build(node: Node) -> Fn:
    if isinstance(node, Number):
        value = node.value
        return lambda _values: value
    if isinstance(node, FieldRef):
        return operator.itemgetter(node.code)
    if isinstance(node, Unary):
        return _build_unary(node)
    if isinstance(node, Binary):
        return _build_binary(node)
    return _build_call(node)


def _build_unary(node: Unary) -> Fn:
    operand = _compile(node.operand)
    if node.op == "+":
        return operand
    if node.op == "-":
        minus = ARITHMETIC.minus
        return lambda values: minus(operand(values))
    return lambda values: ZERO if operand(values) else ONE


def _build_binary(node: Binary) -> Fn:
    left, right, pos = _compile(node.left), _compile(node.right), node.pos
    if node.op in _ARITHMETIC_OPS:
        arithmetic = _ARITHMETIC_OPS[node.op]
        return lambda values: arithmetic(left(values), right(values))
    if node.op in ("/", "%"):
        divide = ARITHMETIC.divide if node.op == "/" else ARITHMETIC.remainder
        problem = "division by zero" if node.op == "/" else "remainder of division by zero"

        def division(values: Mapping[str, Decimal]) -> Decimal:
            dividend, divisor = left(values), right(values)
            if not divisor:
                raise ExpressionError(f"{problem} at {pos}")
            return divide(dividend, divisor)

        return division
    if node.op == "and":
        return lambda values: ONE if left(values) and right(values) else ZERO
    if node.op == "or":
        return lambda values: ONE if left(values) or right(values) else ZERO
    compare = _COMPARISON_OPS[node.op]
    return lambda values: ONE if compare(left(values), right(values)) else ZERO


def _build_call(node: Call) -> Fn:
    args = [_compile(arg) for arg in node.args]
    name = node.name
    if name in ("min", "max"):
        pick = min if name == "min" else max
        if len(args) == 1:
            return args[0]
        return lambda values: pick([arg(values) for arg in args])
    if name == "abs":
        (x,), absolute = args, ARITHMETIC.abs
        return lambda values: absolute(x(values))
    if name in ("floor", "ceil"):
        (x,) = args
        rounding = ROUND_FLOOR if name == "floor" else ROUND_CEILING
        return lambda values: x(values).to_integral_value(rounding, ARITHMETIC)
    if name == "if":
        condition, then, otherwise = args
        return lambda values: then(values) if condition(values) else otherwise(values)
    return _build_round(node, args)


def _build_round(node: Call, args: list[Fn]) -> Fn:
    x, pos = args[0], node.pos
    places = 0
    if len(args) == 2:
        if _referenced(node.args[1]):
            raise ExpressionError(f"round() places must be a constant at {node.args[1].pos}")
        value = args[1]({})
        if value != value.to_integral_value() or abs(value) > ARITHMETIC.prec:
            raise ExpressionError(
                f"round() places must be a whole number from -{ARITHMETIC.prec} "
                f"to {ARITHMETIC.prec} at {node.args[1].pos}"
            )
        places = int(value)
    exponent = ONE.scaleb(-places)
    plain = ONE if places < 0 else exponent  # round(1234, -2) is 1200, not 1.2E+3

    def rounded(values: Mapping[str, Decimal]) -> Decimal:
        try:
            result = x(values).quantize(exponent, ROUND_HALF_UP, ARITHMETIC)
            return result.quantize(plain, context=ARITHMETIC)
        except InvalidOperation:
            raise ExpressionError(
                f"round() result needs more than {ARITHMETIC.prec} digits at {pos}"
            ) from None

    return rounded


class Expression:
    """A compiled calculation: `fields` it reads, `evaluate(values)` to compute it."""

    __slots__ = ("_fn", "fields", "text")

    def __init__(self, text: str, fields: frozenset[str], fn: Fn) -> None:
        self.text = text
        self.fields = fields
        self._fn = fn

    def evaluate(self, values: Mapping[str, Decimal]) -> Decimal:
        try:
            return self._fn(values)
        except KeyError as exc:
            raise ExpressionError(f"missing value for field {exc.args[0]!r}") from None
        except DecimalException as exc:
            raise ExpressionError(f"arithmetic error: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str, fields: Collection[str]) -> Expression:
    """Parse and compile `text`, allowing references to the codes in `fields`."""
    tree = _Parser(text, fields).parse()
    expression = Expression(text, frozenset(_referenced(tree)), _compile(tree))
    if not expression.fields:
        expression.evaluate({})  # a constant that cannot be computed is an error now
    return expression

"""Compound aggregations at bill time: a calculation over other aggregations' period values.

Pure. The usage view answers the simple aggregations a plan needs (`needed_aggregations`);
`compound_values` computes every compound aggregation a plan prices from them:

- a reference reads the aggregation's raw period value: its own quantityPerUnit and
  rounding are not applied first (m3ter's rule); a referenced compound aggregation gives
  its calculated value, also before its quantityPerUnit and rounding;
- a referenced aggregation without usage (null) makes the compound value null, unless
  `evaluateNullAggregations` is true: then its `defaultValue` is passed in (0 for a null
  compound aggregation);
- a calculation that cannot be computed for the period (a division by zero) gives null,
  like missing usage, and the reason is logged; write `if(b == 0, 0, a / b)` to choose
  another value.

`catalog apply` refuses cycles; a cycle that reaches a worker anyway (an item written to
the topic by hand) raises ValueError with the path, like any other broken reference.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from functools import lru_cache

from streams.expressions import Expression, ExpressionError, compile_expression
from streams.schemas.catalog import Aggregation, Catalog, CompoundAggregation

log = logging.getLogger(__name__)

_ZERO = Decimal(0)


@lru_cache(maxsize=1024)
def _compiled(calculation: str, known: frozenset[str]) -> Expression:
    return compile_expression(calculation, known)


def calculation_of(compound: CompoundAggregation, known: Collection[str]) -> Expression:
    """The compiled calculation; ValueError (naming the compound) if it does not compile."""
    try:
        return _compiled(compound.calculation, frozenset(known))
    except ExpressionError as exc:
        raise ValueError(f"compoundAggregations[{compound.code}].calculation: {exc}") from None


def needed_aggregations(codes: Iterable[str], catalog: Catalog) -> set[str]:
    """The simple aggregations whose period values the priced `codes` need (the priced
    aggregations themselves and everything their compound aggregations reference)."""
    known = {*catalog.aggregations, *catalog.compoundAggregations}
    needed: set[str] = set()
    seen: set[str] = set()
    pending = list(codes)
    while pending:
        code = pending.pop()
        if code in seen:
            continue
        seen.add(code)
        compound = catalog.compoundAggregations.get(code)
        if compound is None:
            if code in catalog.aggregations:
                needed.add(code)
            continue
        pending.extend(calculation_of(compound, known).fields)
    return needed


def compound_values(
    wanted: Iterable[str],
    compounds: Mapping[str, CompoundAggregation],
    aggregations: Mapping[str, Aggregation],
    usage: Mapping[str, Decimal | None],
) -> dict[str, Decimal | None]:
    """The period value of each wanted compound aggregation (None: no value)."""
    evaluation = _Evaluation(compounds, aggregations, usage)
    return {code: evaluation.value_of(code, ()) for code in wanted}


class _Evaluation:
    """The compound values of one account's period, each computed once. A class, not a
    recursive closure: a closure that calls itself is a reference cycle, garbage that only
    the cycle collector frees, and a bill run of thousands of accounts made thousands."""

    def __init__(
        self,
        compounds: Mapping[str, CompoundAggregation],
        aggregations: Mapping[str, Aggregation],
        usage: Mapping[str, Decimal | None],
    ) -> None:
        self.compounds = compounds
        self.aggregations = aggregations
        self.usage = usage
        self.known = frozenset((*aggregations, *compounds))
        self.values: dict[str, Decimal | None] = {}

    def value_of(self, code: str, path: tuple[str, ...]) -> Decimal | None:
        values = self.values
        if code in values:
            return values[code]
        if code in path:
            cycle = " -> ".join((*path[path.index(code) :], code))
            raise ValueError(
                f"compoundAggregations[{code}].calculation: depends on itself ({cycle})"
            )
        compound = self.compounds[code]
        expression = calculation_of(compound, self.known)
        inputs: dict[str, Decimal] = {}
        for field in sorted(expression.fields):
            if field in self.compounds:
                raw = self.value_of(field, (*path, code))
                default = _ZERO
            else:
                raw = self.usage.get(field)
                default = self.aggregations[field].defaultValue
            if raw is None and not compound.evaluateNullAggregations:
                values[code] = None
                return None
            inputs[field] = default if raw is None else raw
        try:
            result: Decimal | None = expression.evaluate(inputs)
        except ExpressionError as exc:
            log.warning("compound aggregation %s has no value for these inputs: %s", code, exc)
            result = None
        values[code] = result
        return result

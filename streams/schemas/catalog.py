"""Catalog models: meters, aggregations, compound aggregations, counters, plans and Stripe
plan mappings (m3ter's names).

Everything here is immutable and validated at the boundary; `Catalog.from_documents`
checks the references between kinds and reports every error with its path at once.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, NamedTuple, Self, TypeVar, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streams.expressions import Expression, ExpressionError, compile_expression
from streams.money import round_money
from streams.schemas.errors import error_lines, indexed

CODE_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,79}$"
Code = Annotated[str, Field(pattern=CODE_PATTERN)]


class Frozen(BaseModel):
    """Base for models whose schema we own: immutable, unknown fields rejected, camelCase."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @classmethod
    def strict(cls, **fields: Any) -> Self:
        """`cls(**fields)` for values this program made itself, in half the time, and
        checked strictly: each must already be of its field's type (a Decimal, not an int
        pydantic would turn into one). pydantic's `__init__` costs as much as the check,
        and a bill run makes a dozen of these per account."""
        return cast(Self, cls.__pydantic_validator__.validate_python(fields, strict=True))


class DataFieldCategory(StrEnum):
    WHO = "WHO"
    WHAT = "WHAT"
    WHERE = "WHERE"
    OTHER = "OTHER"
    METADATA = "METADATA"
    MEASURE = "MEASURE"
    INCOME = "INCOME"
    COST = "COST"

    @property
    def is_numeric(self) -> bool:
        return self in NUMERIC_CATEGORIES

    @property
    def wire_key(self) -> str:
        """The measurement map that carries fields of this category (`measure`, `who`, ...)."""
        return self.value.lower()


NUMERIC_CATEGORIES = frozenset(
    {DataFieldCategory.MEASURE, DataFieldCategory.INCOME, DataFieldCategory.COST}
)


class DataField(Frozen):
    category: DataFieldCategory
    code: Code
    name: str | None = None
    unit: str | None = None
    required: bool = False


class DerivedField(Frozen):
    category: DataFieldCategory
    code: Code
    name: str | None = None
    unit: str | None = None
    calculation: str = Field(min_length=1, max_length=2000)

    @field_validator("category")
    @classmethod
    def _numeric_only(cls, value: DataFieldCategory) -> DataFieldCategory:
        if not value.is_numeric:
            raise ValueError("derived fields must be MEASURE, INCOME or COST")
        return value


class Meter(Frozen):
    code: Code
    name: str | None = None
    dataFields: tuple[DataField, ...] = Field(min_length=1)
    derivedFields: tuple[DerivedField, ...] = ()

    @model_validator(mode="after")
    def _unique_field_codes(self) -> Meter:
        seen: set[str] = set()
        for field in self.all_fields:
            if field.code in seen:
                raise ValueError(f"field code {field.code!r} is defined twice")
            seen.add(field.code)
        return self

    @property
    def all_fields(self) -> tuple[DataField | DerivedField, ...]:
        return (*self.dataFields, *self.derivedFields)

    def field(self, code: str) -> DataField | DerivedField | None:
        for field in self.all_fields:
            if field.code == code:
                return field
        return None


class AggregationFunction(StrEnum):
    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"
    COUNT = "COUNT"
    MEAN = "MEAN"
    LATEST = "LATEST"
    UNIQUE = "UNIQUE"


class Rounding(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    NEAREST = "NEAREST"
    NONE = "NONE"


class FilterOperator(StrEnum):
    EQUALS = "EQUALS"  # the field's value is the one value given
    IN = "IN"  # the field's value is one of the values given
    NOT_IN = "NOT_IN"  # the field has no value, or a value not among those given


class AggregationFilter(Frozen):
    """A condition on a string field of the aggregation's meter: a measurement that does
    not meet every filter of an aggregation is not folded into it (nor refused)."""

    field: Code
    operator: FilterOperator = FilterOperator.EQUALS
    values: tuple[str, ...] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_value_for_equals(self) -> AggregationFilter:
        if self.operator is FilterOperator.EQUALS and len(self.values) != 1:
            raise ValueError("EQUALS takes exactly one value")
        return self

    def passes(self, strings: Mapping[str, str]) -> bool:
        found = strings.get(self.field)
        if self.operator is FilterOperator.NOT_IN:
            return found is None or found not in self.values
        return found is not None and found in self.values


WILDCARD = "*"  # a segment's value that matches any value of its field
DEFAULT_SEGMENT: Mapping[str, str] = {}  # where measurements that match no segment go
Segment = Mapping[str, str]


def segment_id(segment: Segment) -> str:
    """A segment's id in the usage state, bill line ids and Stripe: its compact JSON with
    sorted keys (`{"region":"eu"}`; the default segment is `{}`)."""
    return json.dumps(dict(segment), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Aggregation(Frozen):
    code: Code
    name: str | None = None
    meter: Code
    targetField: Code
    aggregation: AggregationFunction
    quantityPerUnit: Decimal = Field(default=Decimal(1), gt=0)
    rounding: Rounding = Rounding.NONE
    unit: str | None = None
    defaultValue: Decimal = Decimal(0)
    filters: tuple[AggregationFilter, ...] = Field(
        default=(), description="Only measurements that meet every filter are folded"
    )
    segmentedFields: tuple[Code, ...] = Field(
        default=(), max_length=5, description="String fields whose values split the usage"
    )
    segments: tuple[dict[str, str], ...] = Field(
        default=(),
        max_length=200,
        description='Segments as {field: value} maps ("*" matches any value); a measurement '
        "goes to the first it matches, or to the default segment {}",
    )

    @model_validator(mode="after")
    def _segments_name_their_fields(self) -> Aggregation:
        fields = self.segmentedFields
        if len(set(fields)) != len(fields):
            raise ValueError("segmentedFields: a field is named twice")
        if fields and not self.segments:
            raise ValueError("segments: at least one segment is needed with segmentedFields")
        if self.segments and not fields:
            raise ValueError("segments: name the segmentedFields they are made of")
        seen: set[str] = set()
        for index, segment in enumerate(self.segments):
            if set(segment) != set(fields):
                raise ValueError(
                    f"segments[{index}]: must give a value for each of the segmentedFields "
                    f"({', '.join(fields)}) and nothing else"
                )
            if any(not value for value in segment.values()):
                raise ValueError(f"segments[{index}]: a value may not be empty")
            key = segment_id(segment)
            if key in seen:
                raise ValueError(f"segments[{index}]: {key} is listed twice")
            seen.add(key)
        return self

    @property
    def segmented(self) -> bool:
        return bool(self.segmentedFields)

    def segment_ids(self) -> list[str]:
        """Every segment's id, the listed ones in order and then the default one."""
        return [*(segment_id(segment) for segment in self.segments), segment_id(DEFAULT_SEGMENT)]


class CompoundAggregation(Frozen):
    """A value computed per billing period from other aggregations' values (m3ter's
    CompoundAggregation): `calculation` is an expression of the safe expression language
    (`streams.expressions`) over aggregation and compound aggregation codes.

    The referenced values are their raw period values: their own quantityPerUnit and
    rounding are not applied first (m3ter's rule). A referenced aggregation without usage
    makes the whole value null, unless `evaluateNullAggregations` passes its
    `defaultValue` in instead.
    """

    code: Code
    name: str | None = None
    calculation: str = Field(min_length=1, max_length=2000)
    quantityPerUnit: Decimal = Field(default=Decimal(1), gt=0)
    rounding: Rounding = Rounding.NONE
    unit: str | None = None
    evaluateNullAggregations: bool = False


class Counter(Frozen):
    """A counted quantity (seats, licences) set per account by counter adjustments."""

    code: Code
    name: str | None = None
    unit: str | None = None


class BillFrequency(StrEnum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    ANNUALLY = "ANNUALLY"


class PricingBand(Frozen):
    lowerLimit: Decimal = Field(ge=0)
    unitPrice: Decimal = Field(default=Decimal(0), ge=0)
    fixedPrice: Decimal = Field(default=Decimal(0), ge=0)


Bands = tuple[PricingBand, ...]


def _checked_bands(bands: Bands) -> Bands:
    if bands[0].lowerLimit != 0:
        raise ValueError("the first pricing band must have lowerLimit 0")
    for lower, upper in itertools.pairwise(bands):
        if upper.lowerLimit <= lower.lowerLimit:
            raise ValueError("pricing band lowerLimits must be strictly ascending")
    return bands


class Pricing(Frozen):
    """How a plan prices one aggregation or one compound aggregation (exactly one)."""

    aggregation: Code | None = None
    compoundAggregation: Code | None = None
    pricingBands: Bands = Field(min_length=1)
    cumulative: bool = True
    description: str | None = None
    overagePricingBands: Bands | None = Field(
        default=None,
        min_length=1,
        description="Price of the units beyond an account's commitment (OVERAGE_USAGE lines), "
        "from 0 overage units up; null: the normal bands go on pricing them",
    )
    segment: dict[str, str] | None = Field(
        default=None,
        description="The segment of a segmented aggregation this pricing prices ({} the "
        "default segment); without it, every segment no other pricing names",
    )

    _bands = field_validator("pricingBands")(_checked_bands)

    @field_validator("overagePricingBands")
    @classmethod
    def _overage_bands(cls, bands: Bands | None) -> Bands | None:
        return None if bands is None else _checked_bands(bands)

    @model_validator(mode="after")
    def _prices_one_thing(self) -> Pricing:
        if (self.aggregation is None) == (self.compoundAggregation is None):
            raise ValueError("set exactly one of aggregation, compoundAggregation")
        if self.segment is not None and self.aggregation is None:
            raise ValueError("segment: only a pricing of an aggregation has segments")
        return self

    @property
    def priced(self) -> str:
        """The code of the aggregation or compound aggregation priced."""
        return self.aggregation or self.compoundAggregation or ""

    @property
    def segment_key(self) -> str | None:
        """The id of the segment priced, None for every segment no other pricing names."""
        return None if self.segment is None else segment_id(self.segment)


class CounterPricing(Frozen):
    """How a plan prices a counter (m3ter's CounterPricing).

    The running total is the count at the start of the billing period (m3ter's default,
    billed in advance); every adjustment inside the period adds a debit (the price went
    up) or a credit (it went down) for the rest of the period. Each of the three charges
    is prorated by time unless its `proRate…` flag is false.
    """

    counter: Code
    pricingBands: Bands = Field(min_length=1)
    cumulative: bool = True
    description: str | None = None
    proRateRunningTotal: bool = True
    proRateAdjustmentDebit: bool = True
    proRateAdjustmentCredit: bool = True

    _bands = field_validator("pricingBands")(_checked_bands)


CURRENCY_PATTERN = r"^[A-Z]{3}$"
CreditSource = Literal["COMMITMENT", "BALANCE"]


class ChargeType(StrEnum):
    """The bill line types a commitment or a credit grant can pay (`LineItemType`'s charges)."""

    STANDING_CHARGE = "STANDING_CHARGE"
    USAGE = "USAGE"
    MINIMUM_SPEND = "MINIMUM_SPEND"
    COUNTER_RUNNING_TOTAL_CHARGE = "COUNTER_RUNNING_TOTAL_CHARGE"
    COUNTER_ADJUSTMENT_DEBIT = "COUNTER_ADJUSTMENT_DEBIT"
    COMMITMENT_FEE = "COMMITMENT_FEE"
    OVERAGE_USAGE = "OVERAGE_USAGE"


class Plan(Frozen):
    code: Code
    name: str | None = None
    currency: Annotated[str, Field(pattern=CURRENCY_PATTERN)]
    billFrequency: BillFrequency = BillFrequency.MONTHLY
    standingCharge: Decimal = Field(default=Decimal(0), ge=0)
    standingChargeBilledInAdvance: bool = False
    standingChargeDescription: str | None = None
    minimumSpend: Decimal = Field(default=Decimal(0), ge=0)
    minimumSpendDescription: str | None = None
    pricings: tuple[Pricing, ...] = ()
    counterPricings: tuple[CounterPricing, ...] = ()
    stripeQuantityCounter: Code | None = Field(
        default=None,
        description="A counter of this plan set from the Stripe subscription item's quantity",
    )
    creditApplicationOrder: tuple[CreditSource, ...] = Field(
        default=("COMMITMENT", "BALANCE"),
        description="Which pays a bill's charges first: the account's commitment or its "
        "balances (credit grants); both, once each",
    )

    @field_validator("creditApplicationOrder")
    @classmethod
    def _both_once(cls, order: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(order) != ["BALANCE", "COMMITMENT"]:
            raise ValueError("must name COMMITMENT and BALANCE, each once")
        return order

    @field_validator("currency", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_pricing_per_aggregation(self) -> Plan:
        for what, codes in (
            ("aggregation", [_priced_name(pricing) for pricing in self.pricings]),
            ("counter", [pricing.counter for pricing in self.counterPricings]),
        ):
            duplicates = sorted({code for code in codes if codes.count(code) > 1})
            if duplicates:
                raise ValueError(f"{what} priced more than once: {', '.join(duplicates)}")
        return self


def _priced_name(pricing: Pricing) -> str:
    segment = pricing.segment_key
    return pricing.priced if segment is None else f"{pricing.priced} segment {segment}"


class PlanMapping(Frozen):
    """Maps a Stripe price to a meterline plan, by exactly one of its identifiers.

    A price (or its product) whose metadata has `meterline_plan` needs no mapping.
    """

    code: Code
    plan: Code
    stripePriceId: str | None = None
    stripeLookupKey: str | None = None
    stripeProductId: str | None = None

    @model_validator(mode="after")
    def _exactly_one_match(self) -> PlanMapping:
        given = [v for v in (self.stripePriceId, self.stripeLookupKey, self.stripeProductId) if v]
        if len(given) != 1:
            raise ValueError("set exactly one of stripePriceId, stripeLookupKey, stripeProductId")
        return self


class FeeSchedule(StrEnum):
    UP_FRONT = "UP_FRONT"  # the whole amount on the bill of the commitment's start
    INSTALMENTS = "INSTALMENTS"  # `feeDates`: each amount on the bill of its date


class CommitmentFee(Frozen):
    date: AwareDatetime = Field(description="The bill whose period contains it charges it")
    amount: Decimal = Field(gt=0)


class Commitment(Frozen):
    """A prepayment (m3ter's Commitment) of one account on one plan: `amount` paid by the
    fee schedule (COMMITMENT_FEE lines) and drawn down by the charges of `lineItemTypes`
    of the bills whose period starts in [startDate, endDate), in order, until used up
    (`streams.billing.credits`)."""

    code: Code
    account: str = Field(min_length=1, max_length=200, description="Code of the account")
    plan: Code = Field(description="The account's bills on this plan draw it down")
    amount: Decimal = Field(gt=0, description="In the plan's currency, whole minor units")
    startDate: AwareDatetime
    endDate: AwareDatetime
    feeSchedule: FeeSchedule = FeeSchedule.UP_FRONT
    feeDates: tuple[CommitmentFee, ...] = Field(
        default=(), description="INSTALMENTS only: the amounts add up to `amount`"
    )
    lineItemTypes: tuple[ChargeType, ...] = Field(
        default=(ChargeType.USAGE,), min_length=1, description="The charges that draw it down"
    )
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Commitment:
        if self.endDate <= self.startDate:
            raise ValueError("endDate must be after startDate")
        if ChargeType.COMMITMENT_FEE in self.lineItemTypes:
            raise ValueError("lineItemTypes: a commitment's own fee cannot draw it down")
        if self.feeSchedule is FeeSchedule.UP_FRONT and self.feeDates:
            raise ValueError("feeDates: only for feeSchedule INSTALMENTS")
        if self.feeSchedule is FeeSchedule.INSTALMENTS:
            if not self.feeDates:
                raise ValueError("feeDates: required for feeSchedule INSTALMENTS")
            total = sum((fee.amount for fee in self.feeDates), Decimal(0))
            if total != self.amount:
                raise ValueError(f"feeDates: the amounts add up to {total}, not {self.amount}")
        return self

    @property
    def fees(self) -> tuple[CommitmentFee, ...]:
        if self.feeSchedule is FeeSchedule.UP_FRONT:
            return (CommitmentFee(date=self.startDate, amount=self.amount),)
        return self.feeDates


class AlertMeasure(StrEnum):
    AGGREGATION = "AGGREGATION"  # an aggregation's value over the billing period
    BILL_TOTAL = "BILL_TOTAL"  # the total of the period's bill, in the plan's currency
    # percent of the account's commitment consumed up to the period's bill (inclusive)
    COMMITMENT_CONSUMED_PERCENT = "COMMITMENT_CONSUMED_PERCENT"
    # percent of the account's credit grants in the period's currency consumed so far
    BALANCE_CONSUMED_PERCENT = "BALANCE_CONSUMED_PERCENT"


PERCENT_MEASURES = frozenset(
    {AlertMeasure.COMMITMENT_CONSUMED_PERCENT, AlertMeasure.BALANCE_CONSUMED_PERCENT}
)


class AlertRule(Frozen):
    """A usage alert: an `alerts` event once per account plan and billing period, when
    the measured value reaches `threshold` (`streams.alerts`)."""

    code: Code
    name: str | None = None
    measure: AlertMeasure
    aggregation: Code | None = Field(
        default=None,
        validate_default=True,
        description="The aggregation measured (AGGREGATION rules only)",
    )
    threshold: Decimal = Field(
        gt=0,
        description="Fires when the value reaches it: usage, money for BILL_TOTAL, a "
        "percent (at most 100) for the _PERCENT measures",
    )
    plans: tuple[Code, ...] = Field(
        default=(), description="Only accounts on these plans; every plan when empty"
    )

    @field_validator("aggregation")
    @classmethod
    def _aggregation_iff_measured(cls, code: str | None, info: ValidationInfo) -> str | None:
        measure = info.data.get("measure")
        if measure is AlertMeasure.AGGREGATION and code is None:
            raise ValueError("required when measure is AGGREGATION")
        if measure is not AlertMeasure.AGGREGATION and code is not None:
            raise ValueError(f"only for measure AGGREGATION, not {measure}")
        return code

    @model_validator(mode="after")
    def _percent_at_most_100(self) -> AlertRule:
        if self.measure in PERCENT_MEASURES and self.threshold > 100:
            raise ValueError(f"threshold: a percent, at most 100 for {self.measure}")
        return self


Kind = Literal[
    "meter",
    "aggregation",
    "compoundAggregation",
    "counter",
    "plan",
    "planMapping",
    "alertRule",
    "commitment",
]
KIND_MODELS: dict[str, type[Frozen]] = {
    "meter": Meter,
    "aggregation": Aggregation,
    "compoundAggregation": CompoundAggregation,
    "counter": Counter,
    "plan": Plan,
    "planMapping": PlanMapping,
    "alertRule": AlertRule,
    "commitment": Commitment,
}
# The YAML file's top-level sections, in the order they are validated and published.
SECTIONS: dict[str, Kind] = {
    "meters": "meter",
    "aggregations": "aggregation",
    "compoundAggregations": "compoundAggregation",
    "counters": "counter",
    "plans": "plan",
    "planMappings": "planMapping",
    "alertRules": "alertRule",
    "commitments": "commitment",
}
STRING_AGGREGATABLE = frozenset({AggregationFunction.COUNT, AggregationFunction.UNIQUE})
_KEY = re.compile(
    r"^(meter|aggregation|compoundAggregation|counter|plan|planMapping|alertRule|commitment)"
    r":(.+)$"
)


class CatalogError(ValueError):
    """Every problem found in a catalog, each as `path: reason`."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid catalog:\n" + "\n".join(f"  {e}" for e in errors))


def catalog_key(kind: str, code: str) -> str:
    return f"{kind}:{code}"


def parse_catalog_key(key: str) -> tuple[Kind, str]:
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"catalog key {key!r} is not '<kind>:<code>'")
    return match.group(1), match.group(2)  # type: ignore[return-value]


class Catalog(Frozen):
    """A consistent snapshot of everything live in the catalog."""

    meters: Mapping[str, Meter] = Field(default_factory=dict)
    aggregations: Mapping[str, Aggregation] = Field(default_factory=dict)
    compoundAggregations: Mapping[str, CompoundAggregation] = Field(default_factory=dict)
    counters: Mapping[str, Counter] = Field(default_factory=dict)
    plans: Mapping[str, Plan] = Field(default_factory=dict)
    planMappings: Mapping[str, PlanMapping] = Field(default_factory=dict)
    alertRules: Mapping[str, AlertRule] = Field(default_factory=dict)
    commitments: Mapping[str, Commitment] = Field(default_factory=dict)

    @classmethod
    def from_documents(cls, document: Mapping[str, Any]) -> Catalog:
        """Validate a whole catalog document (the YAML file's shape); raise every error."""
        errors: list[str] = []
        if not isinstance(document, Mapping):
            raise CatalogError(["<root>: must be a mapping of sections"])
        for section in document:
            if section not in SECTIONS:
                errors.append(f"{section}: unknown section (expected one of {', '.join(SECTIONS)})")
        parsed: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        for section, kind in SECTIONS.items():
            items = document.get(section) or []
            if not isinstance(items, list):
                errors.append(f"{section}: must be a list")
                continue
            for index, item in enumerate(items):
                try:
                    model = KIND_MODELS[kind].model_validate(item)
                except ValidationError as exc:
                    errors.extend(_format_errors(f"{section}[{index}]", exc))
                    continue
                code = model.code  # type: ignore[attr-defined]
                if code in parsed[section]:
                    errors.append(f"{section}[{index}].code: {code!r} is defined twice")
                parsed[section][code] = model
        catalog = cls(**parsed)
        errors.extend(catalog.reference_errors())
        if errors:
            raise CatalogError(errors)
        return catalog

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> Catalog:
        """Build from (`kind:code`, value) pairs as read from the catalog topic."""
        sections: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        by_kind = {kind: section for section, kind in SECTIONS.items()}
        for key, value in entries:
            kind, code = parse_catalog_key(key)
            sections[by_kind[kind]][code] = KIND_MODELS[kind].model_validate(value)
        return cls(**sections)

    @classmethod
    def from_entries_lenient(
        cls, entries: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> LenientCatalog:
        """Like `from_entries`, but skip (and report) items that do not validate.

        A worker reading the topic keeps going on a bad item someone wrote by hand;
        `meterline catalog apply` never publishes one.
        """
        sections: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        by_kind = {kind: section for section, kind in SECTIONS.items()}
        problems: list[str] = []
        for key, value in entries:
            try:
                kind, code = parse_catalog_key(key)
                sections[by_kind[kind]][code] = KIND_MODELS[kind].model_validate(value)
            except ValidationError as exc:
                problems.extend(_format_errors(key, exc))
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        catalog = cls(**sections)
        return LenientCatalog(catalog, [*problems, *catalog.reference_errors()])

    def entries(self) -> list[tuple[str, Frozen]]:
        """Every item as (`kind:code`, model), in publishing order."""
        out: list[tuple[str, Frozen]] = []
        for section, kind in SECTIONS.items():
            items: Mapping[str, Frozen] = getattr(self, section)
            out.extend((catalog_key(kind, code), item) for code, item in sorted(items.items()))
        return out

    def reference_errors(self) -> list[str]:
        errors: list[str] = []
        for defined in self.meters.values():
            errors.extend(derived_field_errors(defined))
        for code, agg in self.aggregations.items():
            where = f"aggregations[{code}]"
            meter = self.meters.get(agg.meter)
            if meter is None:
                errors.append(f"{where}.meter: unknown meter {agg.meter!r}")
                continue
            target = meter.field(agg.targetField)
            if target is None:
                errors.append(
                    f"{where}.targetField: meter {agg.meter!r} has no field {agg.targetField!r}"
                )
            elif not target.category.is_numeric and agg.aggregation not in STRING_AGGREGATABLE:
                errors.append(
                    f"{where}.aggregation: {agg.aggregation} needs a numeric field, "
                    f"{agg.targetField!r} is {target.category}"
                )
            errors.extend(_string_field_errors(meter, agg, where))
        errors.extend(compound_errors(self))
        for code, plan in self.plans.items():
            errors.extend(self._plan_errors(code, plan))
        for code, mapping in self.planMappings.items():
            if mapping.plan not in self.plans:
                errors.append(f"planMappings[{code}].plan: unknown plan {mapping.plan!r}")
        errors.extend(self._alert_rule_errors())
        errors.extend(self._commitment_errors())
        return errors

    def _commitment_errors(self) -> list[str]:
        errors: list[str] = []
        seen: dict[tuple[str, str], list[Commitment]] = {}
        for code, commitment in sorted(self.commitments.items()):
            where = f"commitments[{code}]"
            plan = self.plans.get(commitment.plan)
            if plan is None:
                errors.append(f"{where}.plan: unknown plan {commitment.plan!r}")
                continue
            amounts = [("amount", commitment.amount)] + [
                (f"feeDates[{i}].amount", fee.amount) for i, fee in enumerate(commitment.feeDates)
            ]
            for name, amount in amounts:
                if round_money(amount, plan.currency) != amount:
                    errors.append(
                        f"{where}.{name}: {amount} is not a whole number of {plan.currency} "
                        "minor units"
                    )
            for other in seen.setdefault((commitment.account, commitment.plan), []):
                if commitment.startDate < other.endDate and other.startDate < commitment.endDate:
                    errors.append(
                        f"{where}.startDate: overlaps commitment {other.code!r} of account "
                        f"{commitment.account!r} on plan {commitment.plan!r}"
                    )
            seen[(commitment.account, commitment.plan)].append(commitment)
        return errors

    def commitment_of(self, account: str, plan: str, at: datetime) -> Commitment | None:
        """The commitment of `account` on `plan` whose dates contain `at`, if any."""
        for commitment in self.commitments.values():
            if (
                commitment.account == account
                and commitment.plan == plan
                and commitment.startDate <= at < commitment.endDate
            ):
                return commitment
        return None

    def _pricing_segment_errors(self, where: str, pricing: Pricing) -> list[str]:
        aggregation = self.aggregations.get(pricing.aggregation or "")
        if aggregation is None or pricing.segment is None:
            return []
        if not aggregation.segmented:
            return [f"{where}.segment: aggregation {aggregation.code!r} has no segmentedFields"]
        if pricing.segment_key not in aggregation.segment_ids():
            return [
                f"{where}.segment: {pricing.segment_key} is not a segment of aggregation "
                f"{aggregation.code!r} (its segments, or {{}} for the default one)"
            ]
        return []

    def _alert_rule_errors(self) -> list[str]:
        errors: list[str] = []
        for code, rule in self.alertRules.items():
            if rule.aggregation is not None and rule.aggregation not in self.aggregations:
                errors.append(
                    f"alertRules[{code}].aggregation: unknown aggregation {rule.aggregation!r}"
                )
            errors.extend(
                f"alertRules[{code}].plans: unknown plan {plan!r}"
                for plan in rule.plans
                if plan not in self.plans
            )
        return errors

    def _plan_errors(self, code: str, plan: Plan) -> list[str]:
        errors: list[str] = []
        for index, pricing in enumerate(plan.pricings):
            if pricing.aggregation is not None and pricing.aggregation not in self.aggregations:
                errors.append(
                    f"plans[{code}].pricings[{index}].aggregation: "
                    f"unknown aggregation {pricing.aggregation!r}"
                )
            errors.extend(self._pricing_segment_errors(f"plans[{code}].pricings[{index}]", pricing))
            compound = pricing.compoundAggregation
            if compound is not None and compound not in self.compoundAggregations:
                errors.append(
                    f"plans[{code}].pricings[{index}].compoundAggregation: "
                    f"unknown compound aggregation {compound!r}"
                )
        for index, counter_pricing in enumerate(plan.counterPricings):
            if counter_pricing.counter not in self.counters:
                errors.append(
                    f"plans[{code}].counterPricings[{index}].counter: "
                    f"unknown counter {counter_pricing.counter!r}"
                )
        quantity = plan.stripeQuantityCounter
        if quantity is not None and quantity not in {p.counter for p in plan.counterPricings}:
            errors.append(
                f"plans[{code}].stripeQuantityCounter: counter {quantity!r} is not priced "
                "by this plan's counterPricings"
            )
        return errors

    def aggregations_of_meter(self, meter: str) -> list[Aggregation]:
        return [agg for agg in self.aggregations.values() if agg.meter == meter]


V = TypeVar("V")


class PerCatalog(Generic[V]):
    """A value derived from the catalog in use, derived again when another catalog takes
    its place (a catalog is immutable; `catalog apply` makes a new one). For what a bill
    run asks once per account and the catalog fixes: a plan's aggregations, commitments
    by account."""

    def __init__(self, derive: Callable[[Catalog], V]) -> None:
        self._derive = derive
        self._from: Catalog | None = None
        self._value: V | None = None

    def __call__(self, catalog: Catalog) -> V:
        if self._from is not catalog or self._value is None:
            self._value = self._derive(catalog)
            self._from = catalog
        return self._value


def _string_field_errors(meter: Meter, aggregation: Aggregation, where: str) -> list[str]:
    """Filters and segmentedFields that name a field the meter lacks or a number field."""
    named = [
        *(
            (f"{where}.filters[{index}].field", condition.field)
            for index, condition in enumerate(aggregation.filters)
        ),
        *(
            (f"{where}.segmentedFields[{index}]", field)
            for index, field in enumerate(aggregation.segmentedFields)
        ),
    ]
    errors: list[str] = []
    for path, code in named:
        field = meter.field(code)
        if field is None:
            errors.append(f"{path}: meter {meter.code!r} has no field {code!r}")
        elif field.category.is_numeric:
            errors.append(f"{path}: {code!r} is {field.category}, a string field is needed")
    return errors


class LenientCatalog(NamedTuple):
    catalog: Catalog
    problems: list[str]


def _format_errors(prefix: str, exc: ValidationError) -> list[str]:
    return error_lines(exc, prefix, locate=indexed)


CompiledDerived = tuple[str, str, Expression]  # code, wire map ("measure"…), expression


def compile_derived(meter: Meter) -> list[CompiledDerived | str]:
    """Each derived field of `meter`, compiled in order (a calculation may use the fields
    before it), or why it does not compile, as `path: reason`."""
    allowed = {field.code for field in meter.dataFields if field.category.is_numeric}
    out: list[CompiledDerived | str] = []
    for index, derived in enumerate(meter.derivedFields):
        try:
            expression = compile_expression(derived.calculation, allowed)
        except ExpressionError as exc:
            out.append(f"meters[{meter.code}].derivedFields[{index}].calculation: {exc}")
        else:
            out.append((derived.code, derived.category.wire_key, expression))
        allowed.add(derived.code)
    return out


def derived_field_errors(meter: Meter) -> list[str]:
    """Every derived field of `meter` whose calculation does not compile, as `path: reason`."""
    return [item for item in compile_derived(meter) if isinstance(item, str)]


def compile_compound(
    compound: CompoundAggregation, known: Collection[str]
) -> Expression | ExpressionError:
    """The compound aggregation's calculation, compiled over the `known` codes, or why not."""
    try:
        return compile_expression(compound.calculation, known)
    except ExpressionError as exc:
        return exc


def compound_errors(catalog: Catalog) -> list[str]:
    """Compound aggregations whose calculation does not compile, names an unknown code,
    shares a code with an aggregation, or depends on itself, as `path: reason`."""
    errors: list[str] = []
    known = {*catalog.aggregations, *catalog.compoundAggregations}
    references: dict[str, list[str]] = {}
    for code, compound in catalog.compoundAggregations.items():
        where = f"compoundAggregations[{code}]"
        if code in catalog.aggregations:
            errors.append(f"{where}.code: {code!r} is already the code of an aggregation")
        compiled = compile_compound(compound, known)
        if isinstance(compiled, ExpressionError):
            reason = str(compiled).replace("unknown field", "unknown aggregation")
            errors.append(f"{where}.calculation: {reason}")
            continue
        references[code] = sorted(compiled.fields & catalog.compoundAggregations.keys())
    errors.extend(
        f"compoundAggregations[{cycle[0]}].calculation: depends on itself ({' -> '.join(cycle)})"
        for cycle in _cycles(references)
    )
    return errors


def _cycles(references: Mapping[str, list[str]]) -> list[list[str]]:
    """The cycles a depth-first walk of the references finds (each node walked once),
    each written from the code it was entered by and back to it."""
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(code: str, path: list[str]) -> None:
        for target in references.get(code, ()):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                walk(target, [*path, target])
        done.add(code)

    for code in sorted(references):
        if code not in done:
            walk(code, [code])
    return cycles

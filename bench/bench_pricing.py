"""Time the pure part of a bill run: `build_bill` for N accounts x 3 aggregations.

    .venv/bin/python bench/bench_pricing.py [--accounts 10000]

Three passes over the same accounts: first bills (no previous), a rerun with unchanged
usage (every bill returns None), a rerun with changed usage (every bill is a version 2);
plus serializing the first bills to JSON, as the agent does before producing them.
Target for the whole bill run of 10,000 accounts: < 10 s.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from streams.billing.bills import build_bill
from streams.billing.periods import billing_period
from streams.schemas.accounts import AccountPlan, AccountPlanStatus
from streams.schemas.bill import Bill
from streams.schemas.catalog import Aggregation, Plan

T = TypeVar("T")
NOW = datetime(2024, 4, 20, tzinfo=UTC)

AGGREGATIONS = {
    a.code: a
    for a in (
        Aggregation.model_validate(
            {"code": "calls", "meter": "api", "targetField": "n", "aggregation": "SUM"}
        ),
        Aggregation.model_validate(
            {"code": "gb", "meter": "storage", "targetField": "bytes", "aggregation": "MAX",
             "quantityPerUnit": 1_000_000_000, "rounding": "UP"}
        ),
        Aggregation.model_validate(
            {"code": "seats", "meter": "users", "targetField": "user", "aggregation": "UNIQUE"}
        ),
    )
}  # fmt: skip
PLAN = Plan.model_validate(
    {
        "code": "pro",
        "currency": "USD",
        "standingCharge": "49.00",
        "minimumSpend": "100.00",
        "pricings": [
            {"aggregation": "calls", "pricingBands": [
                {"lowerLimit": 0, "unitPrice": "0.0010", "fixedPrice": "1"},
                {"lowerLimit": 100000, "unitPrice": "0.0008"},
                {"lowerLimit": 1000000, "unitPrice": "0.0005"},
            ]},
            {"aggregation": "gb", "cumulative": False, "pricingBands": [
                {"lowerLimit": 0, "unitPrice": "0.25"},
                {"lowerLimit": 100, "unitPrice": "0.20", "fixedPrice": "5"},
                {"lowerLimit": 1000, "unitPrice": "0.15", "fixedPrice": "20"},
            ]},
            {"aggregation": "seats", "pricingBands": [{"lowerLimit": 0, "unitPrice": "8.00"}]},
        ],
    }
)  # fmt: skip


def timed(label: str, accounts: int, run: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:7.3f} s  {elapsed / accounts * 1e6:7.1f} us/account")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(42)
    plans = [
        AccountPlan(
            id=f"sub_{i}",
            accountCode=f"cus_{i}",
            planCode="pro",
            status=AccountPlanStatus.ACTIVE,
            startDate=datetime(2024, 1 + i % 3, 1 + i % 28, tzinfo=UTC),
        )
        for i in range(args.accounts)
    ]
    usage = [
        {
            "calls": Decimal(rng.randrange(0, 2_000_000)),
            "gb": Decimal(rng.randrange(0, 2_000_000_000_000)),
            "seats": Decimal(rng.randrange(0, 50)) if i % 3 else None,
        }
        for i in range(args.accounts)
    ]
    periods = [billing_period(p, PLAN, NOW) for p in plans]

    def run(
        previous: list[Bill | None], usage: list[dict[str, Decimal | None]]
    ) -> list[Bill | None]:
        return [
            build_bill(
                account_plan=plans[i], plan=PLAN, aggregations=AGGREGATIONS, usage=usage[i],
                period=periods[i], previous=previous[i], now=NOW,
            )
            for i in range(args.accounts)
        ]  # fmt: skip

    n = args.accounts
    print(f"{n} accounts x {len(AGGREGATIONS)} aggregations")
    first = timed("build_bill, first version", n, lambda: run([None] * n, usage))
    unchanged = timed("build_bill, rerun, usage unchanged (None)", n, lambda: run(first, usage))
    assert all(b is None for b in unchanged)
    more = [{**u, "calls": (u["calls"] or Decimal(0)) + 1} for u in usage]
    changed = timed("build_bill, rerun, usage changed (version 2)", n, lambda: run(first, more))
    assert all(b is not None and b.version == 2 for b in changed)
    timed(
        "Bill.model_dump_json, first versions", n, lambda: [b.model_dump_json() for b in first if b]
    )


if __name__ == "__main__":
    main()

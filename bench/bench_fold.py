"""Cost of the usage hot path per measurement: validate + derived fields + fold.

A synthetic message of 100 measurements (3 accounts, spread over two hours) is
decoded, validated and folded many times, for two meters:

- full: 7 data fields in 5 maps, 2 derived fields, 9 aggregations covering every
  function (SUM, MIN, MAX, COUNT, MEAN, LATEST, UNIQUE) over 6 fields;
- lean: a WHO field and one MEASURE, one SUM aggregation.

Times are CPU time (process_time), best of 5, so other load on the machine counts less.

    .venv/bin/python bench/bench_fold.py [--iterations 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from streams.schemas.catalog import Catalog
from streams.usage.state import fold
from streams.usage.validate import ValidMeasurement, rules_for

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BATCH = 100

FULL = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "WHO", "code": "user", "required": True},
                    {"category": "WHAT", "code": "endpoint"},
                    {"category": "WHERE", "code": "region"},
                    {"category": "MEASURE", "code": "calls", "required": True},
                    {"category": "MEASURE", "code": "bytes"},
                    {"category": "MEASURE", "code": "latency"},
                    {"category": "COST", "code": "cost"},
                ],
                "derivedFields": [
                    {"category": "MEASURE", "code": "gb", "calculation": "bytes / 1073741824"},
                    {
                        "category": "MEASURE",
                        "code": "slow",
                        "calculation": "if(latency > 250, calls, 0)",
                    },
                ],
            }
        ],
        "aggregations": [
            {"code": code, "meter": "api", "targetField": field, "aggregation": function}
            for code, field, function in [
                ("calls_sum", "calls", "SUM"),
                ("calls_count", "calls", "COUNT"),
                ("latency_min", "latency", "MIN"),
                ("latency_max", "latency", "MAX"),
                ("latency_mean", "latency", "MEAN"),
                ("bytes_latest", "bytes", "LATEST"),
                ("users", "user", "UNIQUE"),
                ("gb_sum", "gb", "SUM"),
                ("slow_sum", "slow", "SUM"),
            ]
        ],
    }
)
LEAN = Catalog.from_documents(
    {
        "meters": [
            {
                "code": "api",
                "dataFields": [
                    {"category": "WHO", "code": "user"},
                    {"category": "MEASURE", "code": "calls"},
                ],
            }
        ],
        "aggregations": [
            {"code": "calls", "meter": "api", "targetField": "calls", "aggregation": "SUM"}
        ],
    }
)


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _full_measurement(index: int) -> dict[str, Any]:
    return {
        "who": {"user": f"user-{index % 20}"},
        "what": {"endpoint": "/v1/things"},
        "where": {"region": "eu-west-1"},
        "measure": {"calls": 1 + index % 5, "bytes": 1024 * index, "latency": 12.5 + index},
        "cost": {"cost": 0.0001},
    }


def _lean_measurement(index: int) -> dict[str, Any]:
    return {"who": {"user": f"user-{index % 20}"}, "measure": {"calls": 1 + index % 5}}


def message(fields: Callable[[int], dict[str, Any]], batch: int = BATCH) -> bytes:
    measurements = [
        {
            "uid": f"m-{index}",
            "meter": "api",
            "account": f"cus_{index % 3}",
            "ts": _iso(NOW_MS - 3_600_000 + index * 17_000),
            **fields(index),
        }
        for index in range(batch)
    ]
    return orjson.dumps({"measurements": measurements})


def _timed(body: Callable[[], object], iterations: int) -> float:
    started = time.process_time()
    for _ in range(iterations):
        body()
    return (time.process_time() - started) / iterations


def run(name: str, catalog: Catalog, payload: bytes, iterations: int) -> None:
    raw = orjson.loads(payload)["measurements"]
    results = [rules_for(catalog).validate(item, NOW_MS) for item in raw]
    valid = [item for item in results if isinstance(item, ValidMeasurement)]
    assert len(valid) == BATCH, results

    def decode() -> object:
        return orjson.loads(payload)

    def validate() -> object:
        rules = rules_for(catalog)
        return [rules.validate(item, NOW_MS) for item in raw]

    def fold_only() -> object:
        return fold(catalog, valid)

    def end_to_end() -> object:
        rules = rules_for(catalog)
        good = []
        for item in orjson.loads(payload)["measurements"]:
            result = rules.validate(item, NOW_MS)
            if isinstance(result, ValidMeasurement):
                good.append(result)
        return fold(catalog, good)

    print(f"{name}: {BATCH} measurements per message, {iterations} iterations, best of 5")
    for label, body in [
        ("orjson decode", decode),
        ("validate + derived", validate),
        ("fold", fold_only),
        ("decode + validate + fold", end_to_end),
    ]:
        _timed(body, 50)  # warm up
        seconds = min(_timed(body, iterations) for _ in range(5)) / BATCH
        print(f"  {label:<26} {seconds * 1e6:6.2f} µs/measurement  {1 / seconds:>11,.0f} /s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    iterations = parser.parse_args().iterations
    run("full", FULL, message(_full_measurement), iterations)
    run("lean", LEAN, message(_lean_measurement), iterations)


if __name__ == "__main__":
    main()

from __future__ import annotations

import pytest

from streams.schemas.catalog import Catalog, CatalogError


def test_every_catalog_error_is_reported_with_its_path() -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog.from_documents(
            {
                "meters": [
                    {
                        "code": "api",
                        "dataFields": [{"category": "MEASURE", "code": "calls"}],
                        "derivedFields": [
                            {"category": "MEASURE", "code": "d", "calculation": "calls + nope"}
                        ],
                    }
                ],
                "aggregations": [
                    {"code": "a", "meter": "api", "targetField": "missing", "aggregation": "SUM"},
                    {"code": "b", "meter": "ghost", "targetField": "x", "aggregation": "SUM"},
                ],
                "plans": [
                    {
                        "code": "p",
                        "currency": "USD",
                        "pricings": [{"aggregation": "zzz", "pricingBands": [{"lowerLimit": 0}]}],
                    },
                    {"code": "q", "currency": "dollars"},
                ],
                "planMappings": [{"code": "m", "plan": "nowhere", "stripePriceId": "price_1"}],
                "extras": [],
            }
        )
    errors = "\n".join(caught.value.errors)
    assert "extras: unknown section" in errors
    assert "plans[1].currency" in errors
    assert "aggregations[a].targetField: meter 'api' has no field 'missing'" in errors
    assert "aggregations[b].meter: unknown meter 'ghost'" in errors
    assert "plans[p].pricings[0].aggregation: unknown aggregation 'zzz'" in errors
    assert "planMappings[m].plan: unknown plan 'nowhere'" in errors
    assert "unknown field 'nope'" in errors


def test_string_fields_can_only_be_counted_or_made_unique() -> None:
    meter = {"code": "api", "dataFields": [{"category": "WHO", "code": "user"}]}
    with pytest.raises(CatalogError, match="SUM needs a numeric field"):
        Catalog.from_documents(
            {
                "meters": [meter],
                "aggregations": [
                    {"code": "s", "meter": "api", "targetField": "user", "aggregation": "SUM"}
                ],
            }
        )
    catalog = Catalog.from_documents(
        {
            "meters": [meter],
            "aggregations": [
                {"code": "u", "meter": "api", "targetField": "user", "aggregation": "UNIQUE"}
            ],
        }
    )
    assert list(catalog.aggregations) == ["u"]


def test_pricing_bands_must_start_at_zero_and_ascend() -> None:
    for bands, message in (
        ([{"lowerLimit": 5}], "first pricing band must have lowerLimit 0"),
        ([{"lowerLimit": 0}, {"lowerLimit": 0}], "strictly ascending"),
    ):
        with pytest.raises(CatalogError, match=message):
            Catalog.from_documents(
                {
                    "plans": [
                        {
                            "code": "p",
                            "currency": "USD",
                            "pricings": [{"aggregation": "a", "pricingBands": bands}],
                        }
                    ]
                }
            )


def test_a_bad_item_on_the_topic_is_skipped_not_fatal() -> None:
    lenient = Catalog.from_entries_lenient(
        [
            ("plan:ok", {"code": "ok", "currency": "USD"}),
            ("plan:bad", {"code": "bad", "currency": 42}),
            ("weird-key", {}),
        ]
    )
    assert list(lenient.catalog.plans) == ["ok"]
    assert any(p.startswith("plan:bad") for p in lenient.problems)
    assert any("weird-key" in p for p in lenient.problems)

"""`catalog apply`'s judgement of meter filters, segmented aggregations and segment
pricings: every error with its path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.schemas.catalog import Catalog, CatalogError

METER = {
    "code": "api",
    "dataFields": [
        {"category": "WHAT", "code": "status"},
        {"category": "WHERE", "code": "region"},
        {"category": "MEASURE", "code": "calls"},
    ],
    "derivedFields": [{"category": "MEASURE", "code": "double", "calculation": "calls * 2"}],
}


def aggregation(code: str = "a", **extra: Any) -> dict[str, Any]:
    return {"code": code, "meter": "api", "targetField": "calls", "aggregation": "SUM", **extra}


def errors_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        Catalog.from_documents({"meters": [METER], **document})
    return caught.value.errors


def test_filters_must_name_a_string_field_of_the_meter_and_give_values() -> None:
    found = errors_of(
        {
            "aggregations": [
                aggregation(
                    "a",
                    filters=[
                        {"field": "ghost", "values": ["x"]},
                        {"field": "calls", "operator": "IN", "values": ["1"]},
                        {"field": "double", "operator": "NOT_IN", "values": ["2"]},
                    ],
                ),
                aggregation("b", filters=[{"field": "status", "operator": "IN", "values": []}]),
                aggregation("c", filters=[{"field": "status", "values": ["ok", "fine"]}]),
                aggregation(
                    "d", filters=[{"field": "status", "operator": "LIKE", "values": ["x"]}]
                ),
            ]
        }
    )
    assert "aggregations[a].filters[0].field: meter 'api' has no field 'ghost'" in found
    assert "aggregations[a].filters[1].field: 'calls' is MEASURE, a string field is needed" in found
    assert (
        "aggregations[a].filters[2].field: 'double' is MEASURE, a string field is needed" in found
    )
    joined = "\n".join(found)
    assert "aggregations[1].filters[0].values: " in joined  # empty list
    assert "aggregations[2].filters[0]: " in joined and "EQUALS takes exactly one value" in joined
    assert "aggregations[3].filters[0].operator: " in joined


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        (
            {"segmentedFields": ["region"], "segments": [{"region": "eu"}, {"region": "eu"}]},
            "aggregations[0]",
            'segments[1]: {"region":"eu"} is listed twice',
        ),
        (
            {"segmentedFields": ["region"], "segments": [{"status": "ok"}]},
            "aggregations[0]",
            "segments[0]: must give a value for each of the segmentedFields (region)",
        ),
        ({"segmentedFields": ["region"]}, "aggregations[0]", "segments: at least one segment"),
        ({"segments": [{"region": "eu"}]}, "aggregations[0]", "name the segmentedFields"),
        (
            {"segmentedFields": ["region"], "segments": [{"region": ""}]},
            "aggregations[0]",
            "segments[0]: a value may not be empty",
        ),
        (
            {"segmentedFields": ["calls"], "segments": [{"calls": "1"}]},
            "aggregations[a].segmentedFields[0]",
            "'calls' is MEASURE, a string field is needed",
        ),
        (
            {"segmentedFields": ["nope"], "segments": [{"nope": "1"}]},
            "aggregations[a].segmentedFields[0]",
            "meter 'api' has no field 'nope'",
        ),
    ],
)
def test_segments_are_refused_with_the_path_and_the_rule(
    extra: dict[str, Any], path: str, reason: str
) -> None:
    found = errors_of({"aggregations": [aggregation(**extra)]})
    assert any(error.startswith(f"{path}:") and reason in error for error in found), found


def pricing(aggregation: str, segment: Any = None) -> dict[str, Any]:
    document: dict[str, Any] = {"aggregation": aggregation, "pricingBands": [{"lowerLimit": 0}]}
    if segment is not None:
        document["segment"] = segment
    return document


def test_a_pricing_names_a_segment_of_its_aggregation_once() -> None:
    segmented = aggregation("s", segmentedFields=["region"], segments=[{"region": "eu"}])
    found = errors_of(
        {
            "aggregations": [aggregation("plain"), segmented],
            "plans": [
                {
                    "code": "p",
                    "currency": "USD",
                    "pricings": [
                        pricing("plain", {"region": "eu"}),
                        pricing("s", {"region": "us"}),
                    ],
                },
                {
                    "code": "q",
                    "currency": "USD",
                    "pricings": [pricing("s", {"region": "eu"}), pricing("s", {"region": "eu"})],
                },
            ],
        }
    )
    assert "plans[p].pricings[0].segment: aggregation 'plain' has no segmentedFields" in found
    assert (
        'plans[p].pricings[1].segment: {"region":"us"} is not a segment of aggregation \'s\' '
        "(its segments, or {} for the default one)"
    ) in found
    assert any('aggregation priced more than once: s segment {"region":"eu"}' in e for e in found)


def test_a_segmented_aggregation_may_be_priced_per_segment_default_and_the_rest() -> None:
    catalog = Catalog.from_documents(
        {
            "meters": [METER],
            "aggregations": [
                aggregation("s", segmentedFields=["region"], segments=[{"region": "eu"}]),
            ],
            "plans": [
                {
                    "code": "p",
                    "currency": "USD",
                    "pricings": [pricing("s", {"region": "eu"}), pricing("s", {}), pricing("s")],
                }
            ],
        }
    )
    assert [p.segment for p in catalog.plans["p"].pricings] == [{"region": "eu"}, {}, None]


@pytest.mark.parametrize("section", ["### Meter filters", "### Segmented aggregations"])
def test_the_readme_examples_of_filters_and_segments_are_valid_catalogs(section: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"```yaml\n(.*?)```", readme[readme.index(section) :], re.S)
    assert found is not None
    document = yaml.safe_load(found.group(1))
    strings = [{"category": "WHAT", "code": code} for code in ("status", "tier")]
    strings += [{"category": "WHERE", "code": code} for code in ("region", "provider")]
    meter = {"code": "api", "dataFields": [*strings, {"category": "MEASURE", "code": "calls"}]}
    catalog = Catalog.from_documents({**document, "meters": [meter]})
    assert catalog.aggregations

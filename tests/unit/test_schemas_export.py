from __future__ import annotations

import json

from streams.schemas.export import HERE, render, schemas


def test_exported_json_schemas_match_the_models() -> None:
    for name, schema in schemas().items():
        path = HERE / f"{name}.json"
        assert path.exists(), f"{path.name} is missing: run `meterline schemas`"
        assert path.read_text() == render(schema), f"{path.name} is stale: run `meterline schemas`"


def test_bill_schema_carries_money_as_strings_and_the_lifecycle() -> None:
    bill = json.loads((HERE / "bill.json").read_text())
    assert bill["properties"]["total"]["type"] == "string"
    status = bill["$defs"]["BillStatus"]["enum"]
    assert status == ["PENDING", "APPROVED", "LOCKED"]

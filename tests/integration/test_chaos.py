"""A bounded `meterline chaos` run on a broker of its own: 2 workers, 2 sinks, 2 edges
and the Stripe simulator under steady ingest, while workers, sinks and edges are
SIGKILLed, the broker is SIGKILLed and restarted, and Stripe fails a fifth of its calls.
Afterwards every acknowledged measurement is counted once, every bill is in Stripe once
per line with its total, and every acknowledged webhook is on `stripe.events`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from connectors.chaos import ChaosOptions, run_chaos
from streams.settings import load_settings
from tests.conftest import cache_dir

pytestmark = pytest.mark.integration

BOUNDED = ChaosOptions(
    duration_s=45,
    workers=2,
    sinks=2,
    edges=2,
    accounts=6,
    late_accounts=2,
    rate=100,
    kills=6,
    broker_restarts=1,
    settle_timeout_s=150,
)


def test_a_bounded_chaos_run_loses_nothing_counts_nothing_twice_and_charges_nothing_twice(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_dir=tmp_path, cache_dir=cache_dir())
    report = tmp_path / "report.txt"
    out = io.StringIO()
    code = run_chaos(
        settings,
        ChaosOptions(**{**BOUNDED.__dict__, "report": report}),
        Console(file=out, record=True, width=120),
    )
    document = json.loads(report.with_suffix(".json").read_text())
    figures = document["figures"]
    assert code == 0, "\n".join(document["deficits"] + document["findings"])
    assert document["deficits"] == []
    assert sum(figures["kills"].values()) == BOUNDED.kills
    assert set(figures["kills"]) == {"worker", "stripe-sink", "http"}
    assert figures["broker_restarts"] == 1
    assert figures["stripe_calls"] > 0 and sum(figures["faults"].values()) > 0
    assert figures["measurements_counted"] == figures["measurements_acknowledged"] > 1000
    assert figures["duplicates_sent"] > 0
    assert figures["bills"] >= BOUNDED.accounts and figures["stripe_items"] >= figures["bills"]
    assert figures["webhooks_acknowledged"] >= BOUNDED.accounts + BOUNDED.late_accounts
    assert "no deficit" in report.read_text()

"""faust agents: the wiring of each domain into the worker.

Each module's `register(app, context)` declares its tables and topics, the agent loop
(read, call the domain, write), its timers and its read pages, and sets the view it
offers the other agents on the `WorkerContext`. Order matters only for those views.
"""

from __future__ import annotations

from streams.agents import accounts, alerts, balances, billing, catalog, counters, usage
from streams.context import MeterlineApp, WorkerContext

AGENTS = (catalog, usage, accounts, counters, balances, billing, alerts)


def register_all(app: MeterlineApp, context: WorkerContext) -> None:
    for agent in AGENTS:
        agent.register(app, context)

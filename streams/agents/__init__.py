"""faust agents: thin loops that read a topic, call pure functions, write tables/topics.

Each module exposes `register(app, context)`; `register_all` wires them into one app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import MeterlineApp, WorkerContext

AGENT_MODULES: tuple[str, ...] = ("catalog", "usage", "accounts", "billing")


def register_all(app: MeterlineApp, context: WorkerContext) -> None:
    import importlib

    for name in AGENT_MODULES:
        module = importlib.import_module(f"streams.agents.{name}")
        module.register(app, context)

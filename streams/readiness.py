"""Whether a worker's tables are whole, so that its read pages may answer.

faust serves web requests from the start, while the tables are rebuilt from their
changelogs after every rebalance (a restarted worker took 38 s). A read served from a
half-recovered table is wrong, not just late: 404 for an existing account, a usage total
short of the truth, "unknown aggregation" while the catalog is still empty. So every
read page answers 503 with Retry-After until the worker is ready, and `/healthz` says
which changelog partitions it is still reading.

What faust-streaming 0.15.3 tells us (faust/app/base.py, tables/manager.py, recovery.py):
- `app.rebalancing` is set when the consumer starts a rebalance (partitions revoked) and
  cleared when the new assignment is recovered and the streams resumed
  (`Recovery.on_recovery_completed` → `app.on_rebalance_end`);
- `app.tables.actives_ready` is cleared at the start of a rebalance and set by the same
  completion, once every active changelog partition is read up to the high watermark it
  had when recovery began and applied. The actives are this worker's partitions of every
  account table and every partition of the global catalog table (faust assigns a global
  table's partitions as actives to every worker);
- `app.tables.recovery.in_recovery` and `active_remaining()` say how far recovery is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, TypeVar, cast

import faust
from faust.tables.manager import TableManager
from faust.types import TP
from faust.web import Request, Response, View

RETRY_AFTER_S = 1
Status = Literal["ok", "starting", "rebalancing", "recovering"]
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])


@dataclass(frozen=True, slots=True)
class Behind:
    """A changelog partition still being read: `remaining` records to its high watermark."""

    table: str
    partition: int
    remaining: int


@dataclass(frozen=True, slots=True)
class Readiness:
    status: Status
    recovering: tuple[Behind, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status == "ok"

    @property
    def reason(self) -> str:
        return {
            "ok": "ready",
            "starting": "the worker has not joined its consumer group yet",
            "rebalancing": "the worker is rebalancing",
            "recovering": "the worker is recovering its tables from their changelogs",
        }[self.status]

    def document(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "status": self.status,
            "recovering": [
                {"table": b.table, "partition": b.partition, "remaining": b.remaining}
                for b in self.recovering
            ],
        }


def judge(
    *,
    rebalances: int,
    rebalancing: bool,
    actives_ready: bool,
    in_recovery: bool,
    behind: Iterable[Behind] = (),
) -> Readiness:
    """Ready only when no rebalance is under way and every active partition is recovered."""
    if actives_ready and not rebalancing:
        return Readiness("ok")
    if in_recovery:
        return Readiness("recovering", tuple(sorted(behind, key=lambda b: (b.table, b.partition))))
    return Readiness("rebalancing" if rebalances else "starting")


def readiness(app: faust.App) -> Readiness:
    """The readiness of this worker now (read on the event loop that runs recovery)."""
    tables = app.tables
    recovery = tables.recovery if isinstance(tables, TableManager) else None
    in_recovery = bool(recovery and recovery.in_recovery)
    return judge(
        rebalances=app.rebalancing_count,
        rebalancing=app.rebalancing,
        actives_ready=tables.actives_ready,
        in_recovery=in_recovery,
        behind=_behind(recovery.active_remaining(), recovery.tp_to_table)
        if recovery and in_recovery
        else (),
    )


def _behind(remaining: Mapping[TP, int], tables: Mapping[TP, Any]) -> list[Behind]:
    return [
        Behind(getattr(tables.get(tp), "name", tp.topic), tp.partition, count)
        for tp, count in remaining.items()
        if count > 0
    ]


def not_ready(view: View, state: Readiness) -> Response:
    """503 + Retry-After, with the reason and what is still recovering."""
    return view.json(
        {"error": f"not ready: {state.reason}; retry", **state.document()},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def when_ready(app: faust.App) -> Callable[[Handler], Handler]:
    """Gate a worker read page: 503 + Retry-After until `readiness(app)` is ok.

    Put it above `@app.table_route`: the worker that receives the request checks itself
    before it routes (its routing table is stale while it rebalances), and the owner
    checks itself again when it serves the forwarded request.
    """

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def gated(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            state = readiness(app)
            if not state.ready:
                return not_ready(view, state)
            return await handler(view, request, *args, **kwargs)

        return cast(Handler, gated)

    return decorate

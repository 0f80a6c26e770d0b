"""JSON read routes the console needs beyond the edge's API (same API key check):

    GET /organizations/{orgId}/accounts?search=&limit=      accounts with their plans
    GET /organizations/{orgId}/aggregations                 aggregation codes of the catalog
    GET /organizations/{orgId}/bills/{id}/versions          every version of a bill seen
    GET /organizations/{orgId}/bills/{id}/stripe            the sink's ledger entry, and the
                                                            bill's items as Stripe holds them
    GET /organizations/{orgId}/deadletters?limit=           tails of the dead-letter topics
    GET /organizations/{orgId}/health                       processes, lag, throughput now

Accounts, plans, the catalog and the ledger come from `kafka_reads.TopicMirror` (the
worker's table changelogs, the catalog topic, `stripe.sync`), so the edge stays
stateless towards the worker; dead letters and lag are read when asked.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import orjson
from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, Query, Response

from connectors.bill_view import BillView
from connectors.console.kafka_reads import Record, TopicMirror, group_lag, tail
from connectors.http.auth import OrgAccess
from connectors.http.edge import ApiError, ApiRoute, json_response
from connectors.http.keys import Scope
from connectors.http.openapi import ORG_ERRORS, errors
from connectors.kafka.broker import metadata_ok
from connectors.stripe_sink.sink import sink_group
from connectors.stripe_sink.stripe_api import stripe_client
from streams.schemas.catalog import parse_catalog_key
from streams.settings import Settings
from streams.tables import account_of
from streams.topics import COUNTER_ADJUSTMENTS_REJECTED, Topics

MAX_ACCOUNTS = 100
DEAD_LETTERS_PER_PARTITION = 50
PROCESS_TIMEOUT_S = 2.0


def table_changelog(settings: Settings, table: str) -> str:
    """faust's changelog topic of a worker table (`streams.worker_topics`)."""
    return f"{settings.app_id}-{table}-changelog"


@dataclass(frozen=True)
class Sources:
    """The topics the console reads, for one deployment."""

    accounts: str
    plans: str
    catalog: str
    ledger: str
    dead_letters: tuple[str, ...]
    worker_inputs: tuple[str, ...]
    bills: str
    measurements: str

    @classmethod
    def of(cls, settings: Settings) -> Sources:
        topics = Topics.from_settings(settings)
        return cls(
            accounts=table_changelog(settings, "accounts"),
            plans=table_changelog(settings, "accountplans"),
            catalog=topics.catalog,
            ledger=topics.stripe_sync,
            dead_letters=(
                topics.measurements_rejected,
                topics.stripe_events_rejected,
                topics.bill_commands_rejected,
                topics.name(COUNTER_ADJUSTMENTS_REJECTED),
                topics.stripe_conflicts,
            ),
            worker_inputs=(
                topics.measurements,
                topics.stripe_events,
                topics.bill_commands,
                topics.counter_adjustments,
            ),
            bills=topics.bills,
            measurements=topics.measurements,
        )

    def mirrored(self) -> list[str]:
        return [self.accounts, self.plans, self.catalog, self.ledger]


@dataclass
class Throughput:
    """Messages per second now: the change of summed offsets between two health reads."""

    last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def rate(self, name: str, total: int) -> float | None:
        now = time.monotonic()
        before = self.last.get(name)
        self.last[name] = (now, total)
        if before is None or now <= before[0]:
            return None
        return max(total - before[1], 0) / (now - before[0])


def console_api(
    settings: Settings, mirror: TopicMirror, bills: BillView, access: OrgAccess
) -> APIRouter:
    router = APIRouter(route_class=ApiRoute, tags=["console"])
    authorized_org = access.requires(Scope.READ)
    sources = Sources.of(settings)
    throughput = Throughput()

    @router.get(
        "/organizations/{orgId}/accounts", summary="Search accounts", responses=errors(*ORG_ERRORS)
    )
    async def search_accounts(
        org_id: str = Depends(authorized_org),
        search: Annotated[str, Query(max_length=200)] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_ACCOUNTS)] = MAX_ACCOUNTS,
    ) -> Response:
        """Accounts whose code, name, email or Stripe customer id contains `search`
        (case-insensitive), with their plans; by code."""
        found = matching(accounts(mirror, sources), search)[:limit]
        plans = plans_by_account(mirror, sources)
        data = [{**account, "plans": plans.get(account["code"], [])} for account in found]
        return json_response({"data": data})

    @router.get(
        "/organizations/{orgId}/aggregations",
        summary="Aggregation codes",
        responses=errors(*ORG_ERRORS),
    )
    async def aggregation_codes(org_id: str = Depends(authorized_org)) -> Response:
        """The codes of the catalog's aggregations (what a usage query can ask for)."""
        return json_response({"data": aggregations(mirror, sources)})

    @router.get(
        "/organizations/{orgId}/bills/{bill_id}/versions",
        summary="A bill's versions",
        responses=errors(*ORG_ERRORS),
    )
    async def bill_versions(bill_id: str, org_id: str = Depends(authorized_org)) -> Response:
        """Every version of the bill seen on `bills`, oldest first (status, reason, total)."""
        seen = bills.versions(bill_id)
        if not seen:
            raise ApiError(404, "not_found", f"unknown bill {bill_id!r}", field="bill_id")
        return json_response({"data": seen})

    @router.get(
        "/organizations/{orgId}/bills/{bill_id}/stripe",
        summary="A bill in Stripe",
        responses=errors(*ORG_ERRORS),
    )
    async def bill_in_stripe(bill_id: str, org_id: str = Depends(authorized_org)) -> Response:
        """The Stripe sink's ledger entry of the bill (`sync`: version synced, invoice,
        items, conflicts) and the bill's invoice items as Stripe holds them now."""
        raw = bills.bill(bill_id)
        if raw is None:
            raise ApiError(404, "not_found", f"unknown bill {bill_id!r}", field="bill_id")
        bill = orjson.loads(raw)
        entry = mirror.get(sources.ledger, bill_id.encode())
        customer = bill.get("stripeCustomerId") or bill["accountCode"]
        try:
            items: list[dict[str, Any]] | None = await asyncio.to_thread(
                stripe_items, settings, customer, bill_id
            )
            problem = None
        except Exception as exc:  # Stripe unreachable or refusing: shown, not fatal
            items, problem = None, f"Stripe could not be read: {exc}"
        return json_response(
            {
                "sync": orjson.loads(entry) if entry else None,
                "stripe": {"items": items, "error": problem},
            }
        )

    @router.get(
        "/organizations/{orgId}/deadletters",
        summary="Dead letters",
        responses=errors(*ORG_ERRORS),
    )
    async def dead_letters(
        org_id: str = Depends(authorized_org),
        limit: Annotated[int, Query(ge=1, le=500)] = DEAD_LETTERS_PER_PARTITION,
    ) -> Response:
        """The last `limit` records of each partition of every dead-letter topic: reason,
        the source of the rejected record, where the dead letter sits, the payload
        (`unreadable`: the topics Kafka did not let us read, and why)."""
        tails = await asyncio.gather(
            *(
                asyncio.to_thread(tail, settings.kafka, topic, limit)
                for topic in sources.dead_letters
            ),
            return_exceptions=True,
        )
        unreadable = {
            topic: f"could not be read: {found}"
            for topic, found in zip(sources.dead_letters, tails, strict=True)
            if isinstance(found, KafkaException)
        }
        for found in tails:
            if isinstance(found, BaseException) and not isinstance(found, KafkaException):
                raise found
        data = [dead_letter(r) for records in tails if isinstance(records, list) for r in records]
        data.sort(key=lambda letter: letter["timestamp"], reverse=True)
        topics = list(sources.dead_letters)
        return json_response({"topics": topics, "data": data, "unreadable": unreadable})

    @router.get(
        "/organizations/{orgId}/health",
        summary="Processes, lag, throughput",
        responses=errors(*ORG_ERRORS),
    )
    async def health(org_id: str = Depends(authorized_org)) -> Response:
        """Each process's health, consumer lag per partition, messages per second now
        (`lagError` instead of lag and throughput when Kafka cannot be read)."""
        bootstrap = settings.kafka
        processes = await process_health(settings)
        groups = (
            (settings.app_id, sources.worker_inputs),
            (sink_group(settings), (sources.bills,)),
        )
        try:
            lags = [
                (group, await asyncio.to_thread(group_lag, bootstrap, group, list(topics)))
                for group, topics in groups
            ]
        except KafkaException as exc:
            body = {"processes": processes, "lag": [], "throughput": {}, "lagError": str(exc)}
            return json_response(body)
        lag = [{"group": group, **vars(p), "lag": p.lag} for group, rows in lags for p in rows]
        measured = [p for p in lags[0][1] if p.topic == sources.measurements]
        rates = {
            "measurementsIn": throughput.rate("in", sum(p.end for p in measured)),
            "measurementsProcessed": throughput.rate(
                "processed", sum(p.committed or 0 for p in measured)
            ),
        }
        return json_response({"processes": processes, "lag": lag, "throughput": rates})

    return router


# --- shaping what was read ---------------------------------------------------------------


def accounts(mirror: TopicMirror, sources: Sources) -> list[dict[str, Any]]:
    found = [orjson.loads(value) for _, value in mirror.items(sources.accounts)]
    return sorted(found, key=lambda account: str(account.get("code")))


def matching(found: list[dict[str, Any]], search: str) -> list[dict[str, Any]]:
    wanted = search.strip().casefold()
    fields = ("code", "name", "emailAddress", "stripeCustomerId")
    return [a for a in found if any(wanted in str(a.get(f) or "").casefold() for f in fields)]


def plans_by_account(mirror: TopicMirror, sources: Sources) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for key, value in sorted(mirror.items(sources.plans)):
        out.setdefault(account_of(key), []).append(orjson.loads(value))
    return out


def aggregations(mirror: TopicMirror, sources: Sources) -> list[str]:
    codes = []
    for key, _ in mirror.items(sources.catalog):
        try:
            kind, code = parse_catalog_key(key.decode())
        except ValueError:
            continue
        if kind == "aggregation":
            codes.append(code)
    return sorted(codes)


def stripe_items(settings: Settings, customer: str, bill_id: str) -> list[dict[str, Any]]:
    """The customer's invoice items that belong to the bill (by their metadata)."""
    with stripe_client(settings) as client:
        page = client.v1.invoice_items.list(params={"customer": customer, "limit": 100})
        found = [item.to_dict() for item in page.auto_paging_iter()]
    return [
        {
            "id": item["id"],
            "lineId": (item.get("metadata") or {}).get("line_id"),
            "amount": item["amount"],
            "currency": item["currency"],
            "description": item.get("description"),
            "invoice": item.get("invoice"),
        }
        for item in found
        if (item.get("metadata") or {}).get("bill_id") == bill_id
    ]


PAYLOAD_FIELDS = ("measurement", "command", "event", "adjustment", "payload")


def dead_letter(record: Record) -> dict[str, Any]:
    """A dead letter as the console shows it: reason, the rejected record's source, where
    the dead letter itself sits, and the payload (the rest of the record)."""
    try:
        document = orjson.loads(record.value or b"null")
    except orjson.JSONDecodeError:
        document = (record.value or b"").decode(errors="replace")
    if not isinstance(document, dict):
        document = {"payload": document}
    payload = next((document[f] for f in PAYLOAD_FIELDS if f in document), None)
    if payload is None:
        payload = {k: v for k, v in document.items() if k not in ("reason", "source")}
    return {
        "topic": record.source.topic,
        "at": str(record.source),
        "timestamp": record.timestamp_ms,
        "key": (record.key or b"").decode(errors="replace"),
        "reason": str(document.get("reason") or ""),
        "source": str(document.get("source") or ""),
        "payload": payload,
    }


async def process_health(settings: Settings) -> list[dict[str, Any]]:
    """The edge itself (Kafka reachable), every worker it asks and the Stripe sink (their
    /healthz)."""
    kafka = await asyncio.to_thread(metadata_ok, settings.kafka, 2.0)
    edge = {
        "name": "http edge",
        "url": "(this process)",
        "ok": kafka,
        "status": "ok" if kafka else "Kafka unreachable",
    }
    workers = [url.strip().rstrip("/") for url in settings.worker_base_url.split(",")]
    others = [
        ("worker" if len(workers) == 1 else f"worker {n}", f"{url}/healthz")
        for n, url in enumerate(workers, 1)
    ]
    others.append(("stripe sink", f"http://127.0.0.1:{settings.sink_port}/healthz"))
    async with httpx.AsyncClient(timeout=PROCESS_TIMEOUT_S) as client:
        answers = await asyncio.gather(*(_probe(client, name, url) for name, url in others))
    return [edge, *answers]


async def _probe(client: httpx.AsyncClient, name: str, url: str) -> dict[str, Any]:
    try:
        answer = await client.get(url)
    except httpx.HTTPError as exc:
        return {
            "name": name,
            "url": url,
            "ok": False,
            "status": f"no answer ({type(exc).__name__})",
        }
    try:
        status = str(answer.json().get("status", answer.status_code))
    except ValueError:
        status = str(answer.status_code)
    return {"name": name, "url": url, "ok": answer.status_code == 200, "status": status}

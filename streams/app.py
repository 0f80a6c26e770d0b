"""The faust application: one App per worker process, built from Settings.

Agents live in `streams.agents`; each module exposes `register(app, context)` so the
app is built by a factory (tests build a fresh one) and nothing connects at import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from faust.web import Request, Response, View

from streams.agents import register_all
from streams.commits import FirstDelivered
from streams.compression import use_fast_lz4
from streams.context import MeterlineApp, WorkerContext
from streams.readiness import readiness
from streams.settings import Settings
from streams.tables import MAX_REQUEST_BYTES
from streams.topics import Topics
from streams.watchdog import install_watchdog

FETCH_BYTES_PER_PARTITION = 1024 * 1024  # what a fetch takes of one partition (below)

log = logging.getLogger(__name__)


def broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server}" for server in bootstrap_servers.split(","))


def store_url(settings: Settings) -> str:
    return "rocksdb://" if settings.store == "rocksdb" else "memory://"


def create_app(settings: Settings, *, fast_rebalance: bool = False) -> MeterlineApp:
    """Build the worker app with every agent registered.

    `fast_rebalance` shortens session and rebalance timeouts (tests, the dev stack).
    """
    options: dict[str, Any] = {
        "broker": broker_url(settings.kafka_bootstrap_servers),
        "broker_credentials": settings.kafka.faust_credentials(),
        "store": store_url(settings),
        "datadir": str(settings.data_dir / "worker"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "producer_acks": -1,
        "producer_compression_type": "lz4",
        # A table value may be up to MAX_MESSAGE_BYTES (a busy account-hour of usage).
        "producer_max_request_size": MAX_REQUEST_BYTES,
        # Agents wait for their changelog writes before a batch is acknowledged, and
        # aiokafka keeps one batch in flight per partition: large batches carry a whole
        # agent batch's writes in a few round trips instead of one per 16 kB.
        "producer_max_batch_size": 1024 * 1024,
        # Per partition and fetch: what the consumer buffers. A record batch larger than
        # this (a table value up to MAX_MESSAGE_BYTES) still comes whole (Kafka returns the
        # first batch of a partition whatever its size, KIP-74). 16 MiB per partition held
        # ~470 MiB of fetched measurements in the memory benchmark; Kafka's default is 1 MiB.
        "consumer_max_fetch_size": FETCH_BYTES_PER_PARTITION,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": True,
        "web_host": settings.worker_web_host,
        "web_port": settings.worker_web_port,
        "web_bind": settings.worker_web_host,
        "stream_recovery_delay": 0.0,
        "table_cleanup_interval": 60.0,
        "table_standby_replicas": settings.standby_replicas,
        "broker_commit_every": 10_000,
        "broker_commit_interval": 1.0,
        # An exception inside an agent would ack the event: agents catch per event
        # and dead-letter instead (see streams/agents).
        "stream_ack_exceptions": True,
    }
    if settings.store == "rocksdb":
        options["rocksdb_options"] = {
            "block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024,
            "block_cache_compressed_size": 0,
        }
    if fast_rebalance:
        options.update(
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=20.0,
        )
    use_fast_lz4()  # aiokafka's lz4 level 9 cost the loop ~20 ms a batch (streams.compression)
    context = WorkerContext(settings=settings, topics=Topics.from_settings(settings))
    app = MeterlineApp(settings.app_id, context=context, **options)
    app.sensors.add(FirstDelivered(app))  # where reading started, for `streams.commits`
    _register_health(app)
    register_all(app, context)
    return app


def table_sizes(app: MeterlineApp) -> dict[str, int]:
    """Keys held per table, standby partitions included (what standbys cost in memory);
    only for the memory store (counting a rocksdb table reads all of it)."""
    if app.conf.store.scheme != "memory":
        return {}
    return {table.name: len(table.data) for table in app.tables.values()}


def resident_bytes() -> int | None:
    """The worker process's resident memory (Linux), standby state and the usage
    engine's memory included; None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _register_health(app: MeterlineApp) -> None:
    """`/healthz`: 503 while the worker rebalances or recovers its tables (its read pages
    answer 503 then too) or while an agent or a send is stalled (`streams.watchdog`).
    `/livez` is liveness: 200 while the process serves requests, recovering or not."""
    watchdog = app.watchdog = install_watchdog(app, app.context.settings, app.context.stats)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = sorted(
                f"{tp.topic}[{tp.partition}]" for tp in app.assignor.assigned_actives()
            )
            live = app.context.catalog
            catalog = live.current() if live is not None else None
            state = readiness(app)
            stalls = watchdog.stalls()
            document = state.document()
            if stalls:
                document["status"] = "stalled"
            return self.json(
                {
                    **document,
                    "stalls": [stall.as_dict() for stall in stalls],
                    "assigned": assigned,
                    "catalogItems": len(catalog.entries()) if catalog else 0,
                    "standbys": sorted(
                        f"{tp.topic}[{tp.partition}]" for tp in app.assignor.assigned_standbys()
                    ),
                    "tables": table_sizes(app),
                    "residentBytes": resident_bytes(),
                    "usageEngine": app.context.usage_engine,
                    "stats": dict(app.context.stats),
                },
                status=200 if state.ready and not stalls else 503,
            )

    @app.page("/livez")
    class Live(View):
        async def get(self, request: Request) -> Response:
            return self.json({"live": True})

"""`meterline`: the command line of every process and tool.

Settings are read here, once, and passed inward.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from streams.settings import Settings, SettingsError, load_settings

console = Console(stderr=True)
app = typer.Typer(
    help="meterline: usage-based billing for Stripe, on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="Run a local single-node Apache Kafka broker (KRaft).", no_args_is_help=True
)
topics_app = typer.Typer(help="Create and inspect meterline's topics.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and validate settings.", no_args_is_help=True)
catalog_app = typer.Typer(
    help="Meters, aggregations, compound aggregations, counters, plans, plan mappings: "
    "validate, publish, show.",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc), 2)


def reach_kafka(s: Settings) -> None:
    """Exit naming why when Kafka refuses these credentials or does not answer in time."""
    from connectors.kafka.access import KafkaAccessError, check_access

    try:
        check_access(s.kafka, s.kafka_connect_timeout_s)
    except KafkaAccessError as exc:
        fail(str(exc))


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- config ---------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    kafka: Annotated[
        bool, typer.Option("--kafka", help="Also connect to Kafka with these settings.")
    ] = False,
) -> None:
    """Validate every setting from the environment; report every error at once."""
    from connectors.http.keys import KeyFile, KeyFileError

    s = settings()
    if s.api_keys_file is not None:
        try:
            KeyFile(s.api_keys_file)
        except KeyFileError as exc:
            fail(f"METERLINE_API_KEYS_FILE: {exc}", 2)
    table = Table(title="meterline settings")
    table.add_column("setting")
    table.add_column("value")
    for name, value in s.model_dump().items():
        table.add_row(name, str(value))
    Console().print(table)
    console.print("[green]settings are valid[/]")
    if kafka:
        reach_kafka(s)
        console.print(f"[green]Kafka at {s.kafka.describe()} accepted this client[/]")


# -- kafka ----------------------------------------------------------------------------

PortOption = Annotated[int, typer.Option("--port", help="Broker port on 127.0.0.1.")]


def local_kafka(port: int, s: Settings, data_dir: Path | None = None):  # type: ignore[no-untyped-def]
    from connectors.kafka.broker import LocalKafka

    return LocalKafka(
        port=port,
        data_dir=data_dir or s.data_dir / f"kafka-{port}",
        version=s.kafka_version,
        cache_dir=s.cache_dir,
    )


@kafka_app.command("start")
def kafka_start(
    port: PortOption = 9092,
    data_dir: Annotated[Path | None, typer.Option(help="Broker state directory.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 90.0,
) -> None:
    """Fetch Kafka (first time), format storage, start the broker detached, wait until ready."""
    from connectors.kafka.broker import BrokerError

    s = settings()
    broker = local_kafka(port, s, data_dir)
    cached = broker.jars.cached
    started = time.monotonic()
    try:
        with console.status(
            f"starting Apache Kafka {s.kafka_version}"
            + ("" if cached else " (first run: fetching jars with Maven)")
        ):
            status = broker.start(timeout=timeout)
    except BrokerError as exc:
        fail(str(exc))
    console.print(
        f"[green]Kafka {s.kafka_version} ready[/] at {status.bootstrap} (pid {status.pid}) "
        f"in {time.monotonic() - started:.1f}s ({'warm' if cached else 'cold'} start); "
        f"logs: {broker.log_file}"
    )


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Resolve the broker jars with Maven into the cache (no-op when cached)."""
    from connectors.kafka.broker import BrokerError, KafkaJars

    s = settings()
    jars = KafkaJars(s.kafka_version, s.cache_dir)
    started = time.monotonic()
    try:
        with console.status(f"fetching Apache Kafka {s.kafka_version} with Maven"):
            libs = jars.ensure()
    except BrokerError as exc:
        fail(str(exc))
    console.print(f"Kafka {s.kafka_version} jars in {libs} ({time.monotonic() - started:.1f}s)")


@kafka_app.command("stop")
def kafka_stop(
    port: PortOption = 9092,
    data_dir: Annotated[Path | None, typer.Option(help="Broker state directory.")] = None,
) -> None:
    """Stop the local broker cleanly."""
    broker = local_kafka(port, settings(), data_dir)
    if broker.stop():
        console.print(f"Kafka on port {port} stopped")
    else:
        console.print(f"no Kafka broker running on port {port}")


@kafka_app.command("status")
def kafka_status(
    port: PortOption = 9092,
    data_dir: Annotated[Path | None, typer.Option(help="Broker state directory.")] = None,
) -> None:
    """Show whether the local broker runs and answers; exit 1 when it does not."""
    status = local_kafka(port, settings(), data_dir).status()
    state = "running" if status.running else "stopped"
    console.print(
        f"Kafka {state} (pid {status.pid}) at {status.bootstrap}, "
        f"{'reachable' if status.reachable else 'not reachable'}; data in {status.data_dir}"
    )
    if not status.reachable:
        raise typer.Exit(1)


# -- topics ---------------------------------------------------------------------------


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic meterline needs, the worker's changelogs included (idempotent).

    Waits until every partition has a leader; exits 1 when an existing topic's partition
    count or settings differ from what meterline declares.
    """
    from confluent_kafka import KafkaException

    from connectors.kafka.admin import create_topics
    from connectors.kafka.readiness import TopicsNotReady
    from streams.worker_topics import worker_topics

    s = settings()
    reach_kafka(s)
    try:
        outcomes = create_topics(s.kafka, worker_topics(s), s.replication_factor)
    except TopicsNotReady as exc:
        fail(str(exc))
    except KafkaException as exc:
        fail(f"Kafka at {s.kafka.describe()} did not answer: {exc.args[0]}")
    table = Table(title=f"topics on {s.kafka.describe()}")
    for column in ("topic", "partitions", "outcome"):
        table.add_column(column)
    for outcome in outcomes:
        text = outcome.problem or ("created" if outcome.created else "exists")
        table.add_row(outcome.name, str(outcome.partitions), text)
    Console().print(table)
    if any(o.problem for o in outcomes):
        raise typer.Exit(1)


@topics_app.command("list")
def topics_list() -> None:
    """Print every topic meterline uses, its key, value and cleanup policy."""
    from streams.worker_topics import worker_topics

    s = settings()
    table = Table(title="meterline topics")
    for column in ("topic", "partitions", "key", "value", "cleanup"):
        table.add_column(column)
    for topic in worker_topics(s):
        cleanup = topic.config.get("cleanup.policy", "delete")
        table.add_row(topic.name, str(topic.partitions), topic.spec.key, topic.spec.value, cleanup)
    Console().print(table)


# -- catalog --------------------------------------------------------------------------

EXAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "streams" / "catalog" / "example.yaml"


@catalog_app.command("apply")
def catalog_apply(
    file: Annotated[
        Path, typer.Argument(help="Catalog YAML file (example: streams/catalog/example.yaml).")
    ],
    prune: Annotated[bool, typer.Option(help="Delete live items not in the file.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Validate only; publish nothing.")] = False,
) -> None:
    """Validate FILE whole (every error with its path) and publish it to the catalog topic."""
    from connectors.catalog_io import load_document, merged_catalog, publish, read_live
    from connectors.kafka.readiness import TopicsNotReady
    from streams.schemas.catalog import CatalogError
    from streams.topics import Topics

    s = settings()
    topic = Topics.from_settings(s).catalog
    try:
        document = load_document(file)
        reach_kafka(s)
        live = read_live(s.kafka, topic)
        merged_catalog({} if prune else live, document)
    except CatalogError as exc:
        fail(f"{file} is not valid, nothing was published:\n" + "\n".join(exc.errors))
    except TopicsNotReady as exc:
        fail(f"cannot read the live catalog, nothing was published: {exc}")
    if dry_run:
        console.print(f"[green]{file} is valid[/] (dry run: nothing published)")
        return
    published, deleted = publish(s.kafka, topic, document, prune=prune, live=live)
    console.print(
        f"[green]published {len(published)} catalog items[/] to {topic}"
        + (f", deleted {len(deleted)}: {', '.join(deleted)}" if deleted else "")
    )


@catalog_app.command("show")
def catalog_show(
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML instead of a table.")] = False,
) -> None:
    """Print what is live on the catalog topic."""
    import yaml

    from connectors.catalog_io import read_live
    from connectors.kafka.readiness import TopicsNotReady
    from streams.topics import Topics

    s = settings()
    reach_kafka(s)
    try:
        live = read_live(s.kafka, Topics.from_settings(s).catalog)
    except TopicsNotReady as exc:
        fail(f"cannot read the live catalog: {exc}")
    if as_yaml:
        print(yaml.safe_dump(live, sort_keys=True))
        return
    table = Table(title=f"live catalog ({len(live)} items)")
    for column in ("kind", "code", "summary"):
        table.add_column(column)
    for key in sorted(live):
        kind, _, code = key.partition(":")
        item = live[key]
        summary = ", ".join(
            f"{k}={v}"
            for k, v in item.items()
            if k
            in (
                "meter",
                "targetField",
                "aggregation",
                "calculation",
                "currency",
                "billFrequency",
                "plan",
            )
        )
        table.add_row(kind, code, summary)
    Console().print(table)


@app.command("schemas")
def schemas_export() -> None:
    """Export the JSON Schemas of every published contract to streams/schemas/*.json."""
    from streams.schemas.export import export

    for path in export():
        console.print(f"wrote {path}")


# -- processes ------------------------------------------------------------------------


@app.command()
def worker() -> None:
    """Run the faust worker (accounts, usage and billing agents and their tables)."""
    from confluent_kafka import KafkaException

    from connectors.kafka.readiness import TopicsNotReady
    from connectors.worker import WorkerTopicsError, prepare_topics, run
    from streams.app import create_app

    s = settings()
    setup_logging(s.log_level)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    reach_kafka(s)
    faust_app = create_app(s, fast_rebalance=True)
    try:
        prepare_topics(faust_app, s)
    except (TopicsNotReady, WorkerTopicsError) as exc:
        fail(str(exc))
    except KafkaException as exc:
        fail(f"Kafka at {s.kafka.describe()} did not answer: {exc.args[0]}")
    gc.freeze()  # as for the edge (`http`): full collections walk only what came later
    run(faust_app, s)


@app.command()
def http() -> None:
    """Run the HTTP edge (webhooks, ingest, uploads, bill commands, read API)."""
    import uvicorn

    from connectors.http.app import create_app
    from connectors.http.keys import KeyFileError

    s = settings()
    setup_logging(s.log_level)
    reach_kafka(s)
    try:
        app = create_app(s)
    except KeyFileError as exc:
        fail(f"METERLINE_API_KEYS_FILE: {exc}", 2)
    # What importing and building the edge made lives as long as the process: out of the
    # cycle collector's sight, its full collections no longer walk it (they came about
    # once a second under ingest load and held the event loop for ~100 ms each).
    gc.freeze()
    uvicorn.run(app, host=s.http_host, port=s.http_port, log_level=s.log_level)


@app.command("stripe-sink")
def stripe_sink() -> None:
    """Run the Stripe sink: `bills` → Stripe invoice items."""
    import signal

    from connectors.stripe_sink.sink import StripeSink

    s = settings()
    setup_logging(s.log_level)
    reach_kafka(s)
    sink = StripeSink(s)
    signal.signal(signal.SIGTERM, lambda *_: sink.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: sink.stopping.set())
    sink.run()


@app.command("alert-webhooks")
def alert_webhooks() -> None:
    """Send every alert on `alerts` to METERLINE_ALERT_WEBHOOK_URL, signed, with retries."""
    import signal

    from connectors.alert_webhooks import AlertWebhooks

    s = settings()
    setup_logging(s.log_level)
    try:
        connector = AlertWebhooks(s)
    except ValueError as error:
        fail(str(error))
    signal.signal(signal.SIGTERM, lambda *_: connector.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: connector.stopping.set())
    connector.run()


@app.command("stripe-sim")
def stripe_sim(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 12111,
    webhook_url: Annotated[
        str | None, typer.Option(help="Where signed Stripe events are POSTed.")
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="Signing secret (whsec_...); default STRIPE_WEBHOOK_SECRET.")
    ] = None,
    faults: Annotated[
        str, typer.Option(help='Fault injection, JSON: {"rate_429": 0.2, "rate_500": 0.1}.')
    ] = "{}",
    webhook_max_attempts: Annotated[
        int, typer.Option(help="Deliveries of one event before giving up.", min=1)
    ] = 5,
) -> None:
    """Run the stateful Stripe simulator (what the sink and the demo use without STRIPE_API_KEY)."""
    import json

    from connectors.stripe_sim import FaultConfig, SimConfig, serve

    s = settings()
    secret = webhook_secret or (
        s.stripe_webhook_secrets[0].get_secret_value() if s.stripe_webhook_secrets else None
    )
    try:
        config = SimConfig(
            port=port,
            webhook_url=webhook_url,
            webhook_secret=secret,
            faults=FaultConfig().merged(json.loads(faults)),
            webhook_max_attempts=webhook_max_attempts,
        )
    except ValueError as exc:
        fail(str(exc), 2)
    serve(config)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the local broker.")] = 9092,
) -> None:
    """Start Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), topics and every process.

    Without STRIPE_API_KEY the Stripe simulator runs too, and the sink writes to it.
    Streams their logs with a prefix, reports a process that turns unhealthy (a stalled
    worker) with the reason; Ctrl-C stops all of them.
    """
    from connectors.dev import DevStack
    from connectors.kafka.readiness import TopicsNotReady

    s = settings()
    stack = DevStack(s, console=Console(), broker_port=port)
    try:
        stack.start_kafka(use_existing="kafka_bootstrap_servers" in s.model_fields_set)
        stack.create_topics()
        stack.add_defaults()
        code = stack.run_until_interrupted()
    except TopicsNotReady as exc:
        console.print(f"[red]error:[/] {exc}")
        code = 1
    finally:
        stack.stop()
    raise typer.Exit(code)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the local broker.")] = 9092,
    accounts: Annotated[int, typer.Option(help="Customers who subscribe.", min=1)] = 6,
    measurements: Annotated[
        int, typer.Option(help="Measurements streamed through the ingest API.", min=1000)
    ] = 300_000,
    mode: Annotated[
        str, typer.Option(help="Stripe sink mode: invoice (draft invoices) or subscription.")
    ] = "invoice",
    trigger: Annotated[
        str, typer.Option(help="Send every bill version (every) or only approved bills.")
    ] = "every",
    period_seconds: Annotated[
        int, typer.Option(help="Length of the demo's first billing period.", min=30)
    ] = 90,
    keep: Annotated[
        bool,
        typer.Option(help="Keep the stack up at the end (the console, the APIs); Ctrl-C stops it."),
    ] = False,
) -> None:
    """Run the main job end to end: Stripe checkout → accounts → usage → bills → Stripe.

    Starts a local Kafka, the worker, HTTP edge, Stripe sink and (without STRIPE_API_KEY)
    the Stripe simulator; exits 0 only if usage, bills and Stripe agree. Ends with the
    web console's URL; with --keep the stack stays up until Ctrl-C.
    """
    from connectors.demo import DemoOptions, run_demo

    if mode not in ("invoice", "subscription"):
        fail("--mode must be invoice or subscription", 2)
    if trigger not in ("every", "approved"):
        fail("--trigger must be every or approved", 2)
    options = DemoOptions(
        accounts=accounts,
        measurements=measurements,
        mode=mode,
        trigger=trigger,
        period_seconds=period_seconds,
        broker_port=port,
        keep=keep,
    )
    raise typer.Exit(run_demo(settings(), options))


@app.command()
def chaos(
    duration: Annotated[
        float, typer.Option(help="Seconds of chaos (start-up and checks come on top).", min=10)
    ] = 300.0,
    kills: Annotated[int, typer.Option(help="SIGKILLs of workers, sinks and edges.", min=0)] = 24,
    broker_restarts: Annotated[
        int, typer.Option(help="SIGKILLs and restarts of the broker.", min=0)
    ] = 1,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 3,
    sinks: Annotated[int, typer.Option(help="Stripe sink processes.", min=1)] = 2,
    edges: Annotated[int, typer.Option(help="HTTP edge processes.", min=1)] = 2,
    rate: Annotated[
        float, typer.Option(help="Measurements per second through the edges.", min=1)
    ] = 200.0,
    report: Annotated[Path | None, typer.Option(help="Report file (text; JSON beside it).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 17,
) -> None:
    """Run the whole stack under load while processes are SIGKILLed, the broker restarts
    and the Stripe simulator fails calls; then check nothing was lost, counted twice or
    charged twice. Prints and writes a report; exits 1 on any deficit."""
    from connectors.chaos import ChaosOptions, run_chaos

    options = ChaosOptions(
        duration_s=duration,
        kills=kills,
        broker_restarts=broker_restarts,
        workers=workers,
        sinks=sinks,
        edges=edges,
        rate=rate,
        report=report,
        seed=seed,
    )
    raise typer.Exit(run_chaos(settings(), options))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

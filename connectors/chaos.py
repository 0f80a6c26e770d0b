"""`meterline chaos`: the whole stack under a steady load while its processes are killed,
the broker restarts and Stripe misbehaves; then proof that nothing was lost, nothing was
counted twice and nothing was charged twice.

On a local broker it starts N workers, N Stripe sinks, N HTTP edges and the Stripe
simulator. Customers subscribe through Stripe Checkout (signed webhooks create their
accounts and plans); then, for the run's duration:
- a producer posts measurements through the edges at a steady rate, 5 % of them
  repeating an acknowledged uid; a batch an edge did not acknowledge (killed, broker
  away) is posted again, same uids, until one does — what any at-least-once client does;
- bill runs are asked for every few seconds (and the workers' timers run too);
- more customers subscribe (webhooks arrive while edges die);
- workers, sinks and edges are SIGKILLed one after the other and started again, and the
  broker is SIGKILLed and restarted;
- the simulator answers a share of Stripe calls with 429, 500, or drops the connection
  after applying the write.
At the end (every process up, Stripe still failing calls) it runs bills once more,
waits for the sinks,
and checks: usage query totals = distinct-uid totals of the acknowledged measurements;
each bill's latest version in Stripe with exactly one item per line and equal totals,
synced by the ledger at that version; no Stripe item of an unknown bill or line; every
webhook the edge acknowledged on `stripe.events`. The report (figures and deficits) is
printed and written to a file; the exit code is non-zero on any deficit.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from connectors.catalog_io import publish
from connectors.dev import Child, DevStack
from connectors.environment import setting_variables
from connectors.kafka.broker import LocalKafka, free_port
from connectors.kafka.consumer import read_to_end
from connectors.waiting import eventually
from streams.money import to_stripe_amount
from streams.settings import Settings
from streams.topics import Topics

EXAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "streams" / "catalog" / "example.yaml"
CHAOS_KEY = "chaos-key"
CHAOS_SECRET = "whsec_meterline_chaos"
CHAOS_STRIPE_KEY = "sk_test_meterline_chaos"
PLANS = (("starter_monthly", "usd", 1000), ("pro_monthly", "usd", 4900))
POLL_S = 0.5
StripeItems = dict[str, dict[str, list[dict[str, Any]]]]  # bill id -> line id -> items
UNHEALTHY_RESTART_S = 60.0
COMMIT_WAIT_S = 60.0


@dataclass(frozen=True)
class ChaosOptions:
    duration_s: float = 300.0  # of the chaos itself (start-up and the final checks come on top)
    workers: int = 3
    sinks: int = 2
    edges: int = 2
    accounts: int = 12  # subscribed before the chaos
    late_accounts: int = 4  # subscribed during it
    rate: float = 200.0  # measurements per second through the edges
    batch: int = 40
    duplicate_share: float = 0.05
    kills: int = 24
    broker_restarts: int = 1
    bill_every_s: float = 10.0
    rate_429: float = 0.12
    rate_500: float = 0.08
    rate_timeout_after_apply: float = 0.10  # of mutating calls, after applying them
    settle_timeout_s: float = 180.0
    seed: int = 17
    report: Path | None = None  # default: <data_dir>/chaos/report.txt
    broker_port: int | None = None  # default: a free port


@dataclass
class Figures:
    kills: Counter[str] = field(default_factory=Counter)
    supervisor_restarts: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)  # exited by themselves, restarted
    broker_restarts: int = 0
    ingest_requests: int = 0
    ingest_refusals: Counter[str] = field(default_factory=Counter)  # why a batch went again
    measurements_sent: int = 0  # every measurement posted, repeats and resends included
    duplicates_sent: int = 0
    bill_jobs: int = 0
    bill_job_refusals: int = 0
    subscriptions: int = 0
    stripe_calls: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    webhooks_acknowledged: int = 0
    webhooks_given_up: int = 0
    bills: int = 0
    bill_versions: int = 0
    stripe_items: int = 0
    accounts_counted: int = 0
    measurements_acknowledged: int = 0  # distinct uids
    measurements_counted: int = 0
    acknowledged_not_on_kafka: int | None = None  # looked for when usage differs
    settle_s: float = 0.0

    def fault_share(self) -> float:
        return sum(self.faults.values()) / self.stripe_calls if self.stripe_calls else 0.0


class Ledger:
    """Every measurement an edge acknowledged, by uid: what the usage must add up to."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, tuple[str, int]] = {}  # uid -> (account, calls)
        self.lock = threading.Lock()

    def add(self, batch: list[dict[str, Any]]) -> None:
        with self.lock:
            for m in batch:
                self.acknowledged.setdefault(m["uid"], (m["account"], m["measure"]["calls"]))

    def expected(self) -> dict[str, tuple[Decimal, int]]:
        """Account -> (sum of calls, measurements) of the distinct acknowledged uids."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        with self.lock:
            for account, calls in self.acknowledged.values():
                totals[account][0] += calls
                totals[account][1] += 1
        return {a: (Decimal(calls), n) for a, (calls, n) in totals.items()}


class Chaos:
    def __init__(self, settings: Settings, options: ChaosOptions, console: Console) -> None:
        self.settings = settings
        self.options = options
        self.console = console
        self.rng = random.Random(options.seed)
        self.figures = Figures()
        self.ledger = Ledger()
        self.topics = Topics.from_settings(settings)
        self.stack = DevStack(settings, console=console, quiet=True)
        self.workers: list[Child] = []
        self.sinks: list[Child] = []
        self.edges: list[Child] = []
        self.edge_urls: list[str] = []
        self.sim_url = f"http://127.0.0.1:{free_port()}"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {CHAOS_KEY}"}, timeout=15)
        self.prices: dict[str, str] = {}
        self.customers: list[str] = []
        self.started_ms = int(time.time() * 1000)
        self.stop = threading.Event()
        # Children die with the thread that started them (PR_SET_PDEATHSIG): the killer
        # thread, which restarts them, lives until the stack is stopped.
        self.finished = threading.Event()
        self.killing = threading.Lock()
        self.chaos_started = time.monotonic()
        self.deficits: list[str] = []
        self.findings: list[str] = []  # what went wrong but was not a loss
        self.events: list[str] = []  # what happened, in order, for the report

    # -- the stack --------------------------------------------------------------------

    def start(self) -> None:
        o, stack = self.options, self.stack
        port = o.broker_port or free_port()
        stack.broker = LocalKafka(
            port=port,
            controller_port=free_port(),
            data_dir=self.settings.data_dir / "kafka",
            version=self.settings.kafka_version,
            cache_dir=self.settings.cache_dir,
        )
        with self.console.status("starting Apache Kafka…"):
            stack.broker.start(timeout=120)
        stack.create_topics()
        catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
        publish(stack.kafka(), self.topics.catalog, catalog)
        stack.extra_env |= setting_variables(
            api_keys=CHAOS_KEY,
            stripe_webhook_secrets=CHAOS_SECRET,
            stripe_api_base=self.sim_url,
            stripe_api_key=CHAOS_STRIPE_KEY,
            bill_run_interval_s=max(5.0, o.bill_every_s * 2),
            stripe_retry_max_s=4.0,
            stripe_request_timeout_s=5.0,
        )
        sim_port = self.sim_url.rsplit(":", 1)[1]
        edge_ports = [free_port() for _ in range(o.edges)]
        worker_ports = [free_port() for _ in range(o.workers)]
        webhook = f"http://127.0.0.1:{edge_ports[0]}/webhooks/stripe"
        stack.add(
            "stripe-sim",
            [
                *("stripe-sim", "--port", sim_port, "--webhook-url", webhook),
                *("--webhook-secret", CHAOS_SECRET, "--webhook-max-attempts", "9"),
            ],
            f"{self.sim_url}/_sim/stats",
        )
        for n, web in enumerate(worker_ports, 1):
            env = setting_variables(
                worker_web_port=web, data_dir=self.settings.data_dir / f"worker-{n}"
            )
            url = f"http://127.0.0.1:{web}/healthz"
            self.workers.append(stack.add(f"worker-{n}", ["worker"], url, env))
        for n, http_port in enumerate(edge_ports, 1):
            first = (n - 1) % len(worker_ports)  # each edge asks its own worker first
            order = worker_ports[first:] + worker_ports[:first]
            workers = ",".join(f"http://127.0.0.1:{port}" for port in order)
            env = setting_variables(http_port=http_port, worker_url=workers)
            url = f"http://127.0.0.1:{http_port}"
            self.edges.append(stack.add(f"http-{n}", ["http"], f"{url}/healthz", env))
            self.edge_urls.append(f"{url}/organizations/{self.settings.org_id}")
        for n in range(1, o.sinks + 1):
            sink_port = free_port()
            env = setting_variables(sink_port=sink_port)
            url = f"http://127.0.0.1:{sink_port}/healthz"
            self.sinks.append(stack.add(f"stripe-sink-{n}", ["stripe-sink"], url, env))
        stack.spawn()
        with self.console.status("waiting for every process to be healthy…"):
            stack.wait_healthy(timeout=240)
        self.console.print(stack.status_table())

    def subscribe(self, count: int) -> list[str]:
        """`count` customers through Stripe Checkout; their webhooks create the accounts."""
        if not self.prices:
            for lookup, currency, amount in PLANS:
                product = self.stripe_post("/v1/products", {"name": lookup})
                price = self.stripe_post(
                    "/v1/prices",
                    {
                        "product": product["id"],
                        "currency": currency,
                        "unit_amount": str(amount),
                        "recurring[interval]": "month",
                        "lookup_key": lookup,
                    },
                )
                self.prices[lookup] = price["id"]
        created = []
        for _ in range(count):
            lookup = PLANS[len(self.customers) % len(PLANS)][0]
            n = len(self.customers) + 1
            session = httpx.post(
                f"{self.sim_url}/_sim/checkout",
                json={"price": self.prices[lookup], "email": f"chaos+{n}@example.com"},
                timeout=30,
            ).json()
            self.customers.append(session["customer"])
            created.append(session["customer"])
            self.figures.subscriptions += 1
        return created

    def stripe_post(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """A Stripe API call to the simulator (before any fault is injected)."""
        headers = {"Authorization": f"Bearer {CHAOS_STRIPE_KEY}"}
        answer = httpx.post(f"{self.sim_url}{path}", data=form, headers=headers, timeout=30)
        answer.raise_for_status()
        document: dict[str, Any] = answer.json()
        return document

    def wait_plans(self, customers: list[str], timeout: float) -> None:
        def ready() -> bool:
            return all(self.plan_of(customer) for customer in customers)

        eventually(ready, timeout, POLL_S, "accounts and plans from the webhooks")

    def plan_of(self, customer: str) -> bool:
        for url in self.edge_urls:
            with contextlib.suppress(httpx.HTTPError):
                answer = self.http.get(f"{url}/accountplans", params={"account": customer})
                if answer.status_code == 200:
                    return any(p.get("planCode") for p in answer.json().get("data", []))
        return False

    def start_faults(self) -> None:
        """From now to the end (the final bill run included), Stripe fails calls."""
        o = self.options
        faults = {
            "rate_429": o.rate_429,
            "rate_500": o.rate_500,
            "rate_timeout_after_apply": o.rate_timeout_after_apply,
            "timeout_mode": "drop",
            "seed": o.seed,
        }
        httpx.post(f"{self.sim_url}/_sim/faults", json=faults, timeout=10).raise_for_status()

    # -- the load ---------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any], ok: Callable[[int], bool]) -> str | None:
        """POST to one edge (at random): None if it answered `ok`, else why not. A refusal
        that a retry cannot mend (a 4xx other than 429) is a deficit."""
        edge = self.rng.randrange(len(self.edge_urls))
        try:
            answer = self.http.post(f"{self.edge_urls[edge]}{path}", json=body)
        except httpx.HTTPError as error:
            return type(error).__name__
        if ok(answer.status_code):
            return None
        if answer.status_code in (400, 401, 404, 409, 413):
            self.deficits.append(f"{path} refused: {answer.status_code} {answer.text[:200]}")
        return f"HTTP {answer.status_code}"

    def send_until_acknowledged(self, batch: list[dict[str, Any]]) -> None:
        while True:
            self.figures.ingest_requests += 1
            self.figures.measurements_sent += len(batch)
            problem = self.post("/measurements", {"measurements": batch}, lambda s: s == 200)
            if problem is None:
                self.ledger.add(batch)
                return
            self.figures.ingest_refusals[problem] += 1
            time.sleep(0.2)  # pacing a retry, as a client backs off

    def load(self, accounts: list[str]) -> None:
        """Batches at a steady rate until `stop`; 5 % repeat an acknowledged uid."""
        o = self.options
        interval = o.batch / o.rate
        recent: list[dict[str, Any]] = []
        next_at = time.monotonic()
        while not self.stop.is_set():
            batch = []
            for _ in range(o.batch):
                if recent and self.rng.random() < o.duplicate_share:
                    batch.append(self.rng.choice(recent))
                    self.figures.duplicates_sent += 1
                    continue
                measurement = {
                    "uid": uuid.uuid4().hex,
                    "meter": "api",
                    "account": self.rng.choice(accounts),
                    "ts": datetime.now(UTC).isoformat(),
                    "who": {"user": f"user-{self.rng.randrange(20)}"},
                    "measure": {"calls": self.rng.randrange(1, 100), "bytes": 1000},
                }
                batch.append(measurement)
            self.send_until_acknowledged(batch)
            recent = (recent + batch)[-2000:]
            next_at = max(next_at + interval, time.monotonic() - 1.0)  # no catch-up burst
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def bill_jobs(self) -> None:
        while not self.stop.wait(self.options.bill_every_s):
            if self.post("/billjobs", {}, lambda s: s == 202) is None:
                self.figures.bill_jobs += 1
            else:
                self.figures.bill_job_refusals += 1

    def late_subscriptions(self) -> None:
        o = self.options
        for _ in range(o.late_accounts):
            if self.stop.wait(o.duration_s / (o.late_accounts + 1)):
                return
            self.subscribe(1)

    # -- the faults -------------------------------------------------------------------

    def killer(self) -> None:
        """SIGKILL a worker, sink or edge at regular moments, each started again 0.5 to 3 s
        later (one at a time: the other edge serves meanwhile)."""
        try:
            self.kill_on_schedule()
        finally:
            self.finished.wait()

    def kill_on_schedule(self) -> None:
        o = self.options
        roster = self.workers + self.sinks + self.edges
        begin, end = 0.05 * o.duration_s, 0.85 * o.duration_s
        started = time.monotonic()
        victims: list[Child] = []
        for n in range(o.kills):
            at = begin + (end - begin) * n / max(1, o.kills - 1)
            if self.stop.wait(max(0.0, started + at - time.monotonic())):
                return
            if not victims:
                victims = roster[:]
                self.rng.shuffle(victims)
            victim = victims.pop()
            with self.killing:  # the supervisor does not restart it meanwhile
                self.stack.kill(victim)
                self.figures.kills[victim.name.rsplit("-", 1)[0]] += 1
                self.note(f"SIGKILL {victim.name}")
                time.sleep(self.rng.uniform(0.5, 3.0))  # how long it stays down
                self.stack.start(victim)

    def supervisor(self) -> None:
        """Start again a process that exited by itself (an edge or sink that could not
        reach the restarted broker, say), as a restart policy would; each is a finding."""
        while not self.stop.wait(3.0):
            with self.killing:
                for child in self.stack.children:
                    if child.process is not None and child.process.poll() is not None:
                        code = child.process.returncode
                        self.figures.exits[child.name.rsplit("-", 1)[0]] += 1
                        self.note(f"{child.name} exited by itself ({code}): started again")
                        self.stack.start(child)
        self.finished.wait()  # the children it started die with this thread

    def broker_bounces(self) -> None:
        """SIGKILL the broker and start it again, at evenly spread moments."""
        o = self.options
        started = time.monotonic()
        for n in range(o.broker_restarts):
            at = o.duration_s * (n + 1) / (o.broker_restarts + 1)
            if self.stop.wait(max(0.0, started + at - time.monotonic())):
                return
            self.restart_broker()

    def restart_broker(self) -> None:
        broker = self.stack.broker
        assert broker is not None
        pid = broker.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            eventually(lambda: broker.pid() is None, 30, 0.1, f"broker pid {pid} to die")
        broker.stop()
        self.note("SIGKILL the broker")
        time.sleep(self.rng.uniform(2.0, 5.0))  # how long it stays down
        broker.start(timeout=120)
        self.figures.broker_restarts += 1
        self.note("broker started again")

    def note(self, event: str) -> None:
        at = time.monotonic() - self.chaos_started
        self.events.append(f"{at:6.1f}s {event}")

    # -- the run ----------------------------------------------------------------------

    def run(self) -> None:
        o = self.options
        self.wait_plans(self.subscribe(o.accounts), 120)
        accounts = list(self.customers)
        self.console.print(f"{len(accounts)} customers subscribed; their accounts exist")
        httpx.delete(f"{self.sim_url}/_sim/stats", timeout=10)
        self.start_faults()
        self.chaos_started = time.monotonic()
        threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for name, target in (
                ("load", lambda: self.load(accounts)),
                ("bill-jobs", self.bill_jobs),
                ("late-subscriptions", self.late_subscriptions),
                ("broker-bounces", self.broker_bounces),
                ("supervisor", self.supervisor),
                ("killer", self.killer),
            )
        ]
        for thread in threads:
            thread.start()
        with self.console.status(f"chaos for {o.duration_s:.0f}s…"):
            self.stop.wait(o.duration_s)
            self.stop.set()
            for thread in threads[:-2]:  # the supervisor and killer live on (`finished`)
                thread.join(180)
        self.console.print(f"chaos over: {sum(self.figures.kills.values())} kills")
        self.settle()

    def settle(self) -> None:
        """Every process up (Stripe still failing calls); the workers catch up, bills run
        once more, and the checks pass (or the deadline comes)."""
        started = time.monotonic()
        for child in self.stack.children:
            if child.process is None or child.process.poll() is not None:
                self.stack.start(child)
        deadline = started + self.options.settle_timeout_s
        with self.console.status("waiting for every process, then for the workers…"):
            self.supervise(deadline)
            self.wait_committed(self.topics.measurements, deadline)
            self.final_bill_run(deadline)
            self.wait_committed(self.topics.bill_commands, deadline)
        waiting = self.console.status("waiting until usage, bills and Stripe agree…")
        with waiting, contextlib.suppress(TimeoutError):  # what still differs is reported
            eventually(
                lambda: not self.check(),
                max(1.0, deadline - time.monotonic()),
                2.0,
                "usage, bills and Stripe to agree",
            )
        self.deficits += self.check()
        self.figures.settle_s = time.monotonic() - started
        stats = httpx.get(f"{self.sim_url}/_sim/stats", timeout=10).json()
        self.figures.stripe_calls, self.figures.faults = stats["total"], stats["faults"]

    def supervise(self, deadline: float) -> None:
        """Wait until every process is healthy; one still unhealthy after
        `UNHEALTHY_RESTART_S` is restarted, as a supervisor's liveness probe would (a
        finding of the run: it is counted and reported)."""
        while True:
            try:
                self.stack.wait_healthy(timeout=UNHEALTHY_RESTART_S)
                return
            except RuntimeError as error:
                if time.monotonic() > deadline:
                    raise
                for child in self.stack.children:
                    if not child.healthy:
                        reason = child.problem or str(error)
                        self.figures.supervisor_restarts[child.name] += 1
                        self.findings.append(
                            f"{child.name} not healthy {UNHEALTHY_RESTART_S:.0f} s after the "
                            f"chaos ({reason}): restarted"
                        )
                        self.stack.kill(child)
                        self.stack.start(child)

    def final_bill_run(self, deadline: float) -> None:
        def sent() -> bool:
            return self.post("/billjobs", {}, lambda s: s == 202) is None

        eventually(sent, max(1.0, deadline - time.monotonic()), POLL_S, "the last bill run")

    def wait_committed(self, topic: str, deadline: float) -> None:
        """Until the worker group committed every message of `topic` there is now."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.stack.bootstrap(),
                "group.id": self.settings.app_id,
                "enable.auto.commit": False,
            }
        )
        partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]

        behind: dict[int, tuple[int, int]] = {}  # partition -> (committed, end)

        def caught_up() -> bool:
            try:
                committed = consumer.committed(partitions, timeout=10)
                ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
            except KafkaException:
                return False
            behind.clear()
            for c, end in zip(committed, ends, strict=True):
                if max(c.offset, 0) < end:  # an empty partition has no commit (-1001)
                    behind[c.partition] = (c.offset, end)
            return not behind

        try:
            wait = min(COMMIT_WAIT_S, max(1.0, deadline - time.monotonic()))
            eventually(caught_up, wait, POLL_S, topic)
        except TimeoutError:  # a finding: what they did not commit they process again
            where = ", ".join(f"[{p}] {c} of {e}" for p, (c, e) in sorted(behind.items()))
            self.findings.append(f"the workers did not commit all of {topic}: {where}")
        finally:
            consumer.close()

    # -- the checks -------------------------------------------------------------------

    def check(self) -> list[str]:
        """Every deficit found now (empty: everything agrees)."""
        usage = self.usage_deficits()
        if usage:  # where they went missing: before Kafka (the edge) or after (the worker)
            usage += self.kafka_deficits()
        return usage + self.bill_deficits() + self.webhook_deficits()

    def kafka_deficits(self) -> list[str]:
        """Acknowledged measurements that are not on `measurements` (the edge lost them)."""
        on_kafka: set[str] = set()
        for message in read_to_end(self.stack.bootstrap(), self.topics.measurements, 60):
            document = orjson.loads(message.value() or b"{}")
            batch = document.get("measurements", [document])
            on_kafka.update(str(m.get("uid")) for m in batch if isinstance(m, dict))
        with self.ledger.lock:
            missing = sorted(set(self.ledger.acknowledged) - on_kafka)
        self.figures.acknowledged_not_on_kafka = len(missing)
        if missing:
            return [f"{len(missing)} acknowledged measurements not on Kafka: {missing[:5]}"]
        return ["every acknowledged measurement is on Kafka: the workers did not count some"]

    def usage_deficits(self) -> list[str]:
        expected = self.ledger.expected()
        self.figures.measurements_acknowledged = sum(n for _, n in expected.values())
        answered = self.usage(sorted(expected))
        if answered is None:
            return ["the usage query did not answer 200"]
        self.figures.accounts_counted = len(answered)
        self.figures.measurements_counted = sum(n for _, n in answered.values())
        return [
            f"usage of {account}: acknowledged {expected.get(account)}, "
            f"counted {answered.get(account)}"
            for account in sorted(set(expected) | set(answered))
            if expected.get(account) != answered.get(account)
        ]

    def usage(self, accounts: list[str]) -> dict[str, tuple[Decimal, int]] | None:
        start = datetime.fromtimestamp(self.started_ms / 1000, UTC) - timedelta(hours=2)
        body = {
            "startDate": start.isoformat(),
            "endDate": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
            "accountIds": accounts,
            "aggregations": ["api_calls"],
        }
        for url in self.edge_urls:
            try:
                answer = self.http.post(f"{url}/usage/query", json=body)
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                return {
                    row["accountId"]: (Decimal(row["value"]), int(row["count"]))
                    for row in answer.json()["data"]
                    if row["count"]
                }
        return None

    def bill_deficits(self) -> list[str]:
        bills: dict[str, dict[str, Any]] = {}
        versions = 0
        for message in read_to_end(self.stack.bootstrap(), self.topics.bills):
            bill = orjson.loads(message.value() or b"{}")
            versions += 1
            if bill["id"] not in bills or bills[bill["id"]]["version"] < bill["version"]:
                bills[bill["id"]] = bill
        synced: dict[str, int] = {}
        for message in read_to_end(self.stack.bootstrap(), self.topics.stripe_sync):
            if message.value():
                entry = orjson.loads(message.value() or b"{}")
                synced[entry["billId"]] = max(synced.get(entry["billId"], 0), entry["version"])
        state = httpx.get(f"{self.sim_url}/_sim/state", timeout=30).json()
        items: StripeItems = defaultdict(lambda: defaultdict(list))
        for item in state["invoiceitems"]:
            meta = item.get("metadata") or {}
            if meta.get("bill_id"):
                items[meta["bill_id"]][meta.get("line_id", "")].append(item)
        self.figures.bills, self.figures.bill_versions = len(bills), versions
        self.figures.stripe_items = sum(len(v) for lines in items.values() for v in lines.values())
        return stripe_deficits(bills, synced, items)

    def webhook_deficits(self) -> list[str]:
        deliveries = httpx.get(f"{self.sim_url}/_sim/webhooks", timeout=30).json()["deliveries"]
        acknowledged = {d["event_id"] for d in deliveries if d["delivered"]}
        self.figures.webhooks_acknowledged = len(acknowledged)
        self.figures.webhooks_given_up = sum(1 for d in deliveries if d["gave_up"])
        published = {
            orjson.loads(m.value() or b"{}").get("id")
            for m in read_to_end(self.stack.bootstrap(), self.topics.stripe_events)
        }
        lost = sorted(acknowledged - published)
        return (
            [f"{len(lost)} acknowledged webhooks not on stripe.events: {lost[:5]}"] if lost else []
        )

    # -- the report -------------------------------------------------------------------

    def report(self) -> None:
        f, o = self.figures, self.options
        table = Table(title="meterline chaos: figures")
        table.add_column("what")
        table.add_column("value", justify="right")
        rows = [
            ("chaos duration", f"{o.duration_s:.0f} s"),
            ("processes", f"{o.workers} workers, {o.sinks} sinks, {o.edges} edges, simulator"),
            ("SIGKILLs", f"{sum(f.kills.values())} ({_counts(f.kills)})"),
            ("broker restarts (SIGKILL)", str(f.broker_restarts)),
            ("exits by themselves (restarted)", f"{sum(f.exits.values())} ({_counts(f.exits)})"),
            (
                "restarts of processes unhealthy after the chaos",
                f"{sum(f.supervisor_restarts.values())} ({_counts(f.supervisor_restarts)})",
            ),
            ("Stripe calls", f"{f.stripe_calls:,}"),
            ("faults injected", f"{sum(f.faults.values()):,} ({_counts(f.faults)})"),
            ("fault share of Stripe calls", f"{f.fault_share():.1%}"),
            ("ingest requests", f"{f.ingest_requests:,}"),
            (
                "ingest retries",
                f"{sum(f.ingest_refusals.values()):,} ({_counts(f.ingest_refusals)})",
            ),
            ("measurements posted (repeats, resends)", f"{f.measurements_sent:,}"),
            ("duplicate uids posted", f"{f.duplicates_sent:,}"),
            ("measurements acknowledged (distinct uids)", f"{f.measurements_acknowledged:,}"),
            ("measurements counted (usage query)", f"{f.measurements_counted:,}"),
            (
                "acknowledged, not on Kafka",
                "-" if f.acknowledged_not_on_kafka is None else str(f.acknowledged_not_on_kafka),
            ),
            ("subscriptions (webhooks)", str(f.subscriptions)),
            (
                "webhooks acknowledged / given up",
                f"{f.webhooks_acknowledged} / {f.webhooks_given_up}",
            ),
            ("bill jobs (refused)", f"{f.bill_jobs} ({f.bill_job_refusals})"),
            ("bills / bill versions", f"{f.bills} / {f.bill_versions}"),
            ("Stripe invoice items", str(f.stripe_items)),
            ("settle time", f"{f.settle_s:.0f} s"),
        ]
        for what, value in rows:
            table.add_row(what, value)
        self.console.print(table)
        for finding in self.findings:
            self.console.print(f"[yellow]finding:[/] {finding}")
        if self.deficits:
            self.console.print(f"[red bold]{len(self.deficits)} deficits:[/]")
            for deficit in self.deficits[:50]:
                self.console.print(f"  [red]{deficit}[/]")
        else:
            self.console.print(
                "[green bold]no deficit:[/] every acknowledged measurement counted once, "
                "every bill in Stripe once per line with equal totals, no stray item, "
                "no acknowledged webhook lost"
            )

    def document(self) -> dict[str, Any]:
        f = self.figures
        figures = asdict(f) | {  # asdict would turn a Counter's items into keys
            "kills": dict(f.kills),
            "ingest_refusals": dict(f.ingest_refusals),
            "supervisor_restarts": dict(f.supervisor_restarts),
            "exits": dict(f.exits),
            "fault_share": round(f.fault_share(), 4),
        }
        return {
            "options": {k: str(v) for k, v in asdict(self.options).items()},
            "figures": figures,
            "deficits": self.deficits,
            "findings": self.findings,
            "events": self.events,
        }


def stripe_deficits(
    bills: dict[str, dict[str, Any]], synced: dict[str, int], items: StripeItems
) -> list[str]:
    """What Stripe gets wrong about `bills` (latest version by id): a line without exactly
    one item, an item of a line or bill meterline does not have, a total that differs,
    a bill whose last version the sink's ledger (`synced`: bill id -> version) did not
    record."""
    out = []
    for bill_id, bill in bills.items():
        lines = items.get(bill_id, {})
        version = bill["version"]
        wanted = {line["id"] for line in bill["lines"]}
        for line_id in sorted(wanted):
            found = len(lines.get(line_id, []))
            if found != 1:
                out.append(f"bill {bill_id} v{version} line {line_id}: {found} Stripe items")
        for line_id in sorted(set(lines) - wanted):
            out.append(f"bill {bill_id} v{version}: a Stripe item of no line ({line_id})")
        total = sum(int(item["amount"]) for found in lines.values() for item in found)
        owed = to_stripe_amount(Decimal(bill["total"]), bill["currency"])
        if total != owed:
            out.append(f"bill {bill_id} v{version}: Stripe holds {total}, the bill {owed}")
        if synced.get(bill_id) != version:
            out.append(f"bill {bill_id} v{version}: the ledger synced v{synced.get(bill_id)}")
    for bill_id in sorted(set(items) - set(bills)):
        out.append(f"Stripe holds items of an unknown bill {bill_id}")
    return out


def _counts(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "-"


def fresh_settings(settings: Settings) -> Settings:
    """Every run starts clean: its own data directory, topic prefix and app id."""
    run = uuid.uuid4().hex[:6]
    data_dir = settings.data_dir / "chaos" / run
    update = {
        "data_dir": data_dir,
        "topic_prefix": f"{settings.topic_prefix}chaos-{run}.",
        "app_id": f"{settings.app_id}-chaos-{run}",
    }
    return settings.model_copy(update=update)


def run_chaos(settings: Settings, options: ChaosOptions, console: Console | None = None) -> int:
    """The whole run; 0 when no deficit was found. The report goes to `options.report`
    (text) and beside it as JSON."""
    console = console or Console(record=True, width=120)
    settings = fresh_settings(settings)
    chaos = Chaos(settings, options, console)
    chaos.stack.extra_env |= setting_variables(
        data_dir=settings.data_dir, topic_prefix=settings.topic_prefix, app_id=settings.app_id
    )
    report = options.report or settings.data_dir.parent / "report.txt"
    console.print(f"logs of every process: {chaos.stack.log_dir}/")
    try:
        chaos.start()
        chaos.run()
    except (TimeoutError, RuntimeError, httpx.HTTPError) as error:
        chaos.deficits.append(f"the run failed: {error}")
        for problem in chaos.stack.problems():
            chaos.deficits.append(problem)
    finally:
        chaos.stop.set()
        chaos.stack.stop()
        chaos.finished.set()
        chaos.http.close()
    chaos.report()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(console.export_text(clear=False) if console.record else "")
    report.with_suffix(".json").write_text(json.dumps(chaos.document(), indent=2))
    console.print(f"report: {report} (and {report.with_suffix('.json').name})")
    return 1 if chaos.deficits else 0

"""The main job: the whole product end to end, driven through public interfaces only.

Stripe Checkout (simulator, signed webhooks) → accounts and plans → seats changed
mid-period (counter adjustments API on starter, the Stripe subscription's quantity on
tokyo) → a commitment (catalog) for a pro account and a credit grant (balances API) for a
starter account → usage through the ingest API (duplicates and late measurements
included) → bill runs mid-period (each account's bill preview must equal its bill) and
at period end → approval → the Stripe sink writes invoices. A usage alert rule fires once
per account. It ends with a summary that checks usage, bills (the pro plan's compound
aggregation, the tokyo plan's price per region of successful calls only: a segmented,
filtered aggregation, the seat counters' running totals, debits and credits, the
commitment's fee, consumption and overage, the grant's consumption), alerts and what
Stripe holds agree, and exits 0 only if they do.
"""

from __future__ import annotations

import random
import shutil
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import stripe
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.catalog_io import publish
from connectors.dev import DevStack
from connectors.environment import setting_variables
from connectors.kafka.broker import free_port
from connectors.kafka.consumer import read_to_end
from connectors.waiting import eventually
from streams.clock import epoch_ms
from streams.kafka_access import Kafka
from streams.money import to_stripe_amount
from streams.settings import Settings
from streams.topics import Topics

EXAMPLE_CATALOG = Path(__file__).resolve().parent.parent / "streams" / "catalog" / "example.yaml"
DEMO_KEY = "demo-key"
DEMO_SECRET = "whsec_meterline_demo"
DEMO_STRIPE_KEY = "sk_test_meterline_demo"
PLANS = (
    ("starter_monthly", "usd", 1000),
    ("pro_monthly", "usd", 4900),
    ("tokyo_monthly", "jpy", 1000),
)
REGIONS = ("eu-west", "us-east", "ap-northeast")
SEGMENTED_REGIONS = ("ap-northeast", "eu-west")  # regional_calls' segments in the catalog
STATUSES = ("success",) * 9 + ("error",)
# Crossed by every account's first call: one alert per account and period, never more.
ALERT_RULES = [
    {
        "code": "demo_first_call",
        "measure": "AGGREGATION",
        "aggregation": "api_calls",
        "threshold": 1,
    }
]
POLL_S = 0.25
# Seats at the start of the period, then from a moment inside it. Starter accounts set
# them through the counter adjustments API (one gains seats, one loses some: a credit);
# tokyo maps the Stripe subscription item's quantity (stripeQuantityCounter).
API_SEATS = ((5, 8), (5, 3))
STRIPE_SEATS = (2, 3)
SEATS_CHANGE_AFTER_S = 5  # the change comes this long after the last subscription began
# A pro account prepays this much (a commitment, up front); its usage goes far beyond it.
COMMITMENT = "20.00"
# A starter account is granted this credit through the balances API.
GRANT = "5.00"
GIGABYTE = Decimal(1_000_000_000)


@dataclass(frozen=True)
class DemoOptions:
    accounts: int = 6
    measurements: int = 300_000
    batch: int = 1000
    mode: str = "invoice"
    trigger: str = "every"
    period_seconds: int = 90
    broker_port: int = 9092
    keep: bool = False  # leave the stack running (Ctrl-C stops it) to look around


@dataclass
class Expected:
    """What the demo sent, de-duplicated by uid: the usage meterline must report."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    users: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # (ts ms, calls, bytes) of every counted measurement: what a period's bill must price
    records: dict[str, list[tuple[int, int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    seats: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (start, then)
    # (ts ms, region, calls) of every counted successful call: regional_calls' usage
    successes: dict[str, list[tuple[int, str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    sent: int = 0
    duplicates: int = 0
    late: int = 0

    def count(self, record: dict[str, Any]) -> None:
        account, measure = record["account"], record["measure"]
        self.calls[account] += measure["calls"]
        self.users[account].add(record["who"]["user"])
        ts = epoch_ms(datetime.fromisoformat(record["ts"]))
        self.records[account].append((ts, measure["calls"], measure["bytes"]))
        if record["what"]["status"] == "success":
            region = record["where"]["region"]
            self.successes[account].append((ts, region, measure["calls"]))

    def regional_calls(self, account: str, start: datetime, end: datetime) -> dict[str, int]:
        """The tokyo plan's segmented, filtered aggregation over [start, end): successful
        calls per segment (the listed regions, the default segment {} for the others)."""
        lo, hi = epoch_ms(start), epoch_ms(end)
        by_segment: dict[str, int] = defaultdict(int)
        for ts, region, calls in self.successes[account]:
            if lo <= ts < hi:
                segment = region if region in SEGMENTED_REGIONS else ""
                by_segment[segment] += calls
        return by_segment

    def api_units(self, account: str, start: datetime, end: datetime) -> Decimal:
        """The pro plan's compound aggregation over [start, end): calls / 1000 + GB x 10,
        from the raw sums (data_transfer's own rounding not applied)."""
        lo, hi = epoch_ms(start), epoch_ms(end)
        inside = [(calls, size) for ts, calls, size in self.records[account] if lo <= ts < hi]
        calls = sum(c for c, _ in inside)
        gigabytes = sum((Decimal(b) / GIGABYTE for _, b in inside), Decimal(0))
        return Decimal(calls) / 1000 + gigabytes * 10


class DemoFailure(RuntimeError):
    pass


class Demo:
    def __init__(self, settings: Settings, options: DemoOptions, console: Console) -> None:
        self.settings = settings
        self.options = options
        self.console = console
        self.real_stripe = settings.stripe_api_key is not None
        self.sim_port = free_port()
        self.sim_url = settings.stripe_api_base or f"http://127.0.0.1:{self.sim_port}"
        self.api = f"http://127.0.0.1:{settings.http_port}/organizations/{settings.org_id}"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {DEMO_KEY}"}, timeout=60)
        secret = settings.stripe_api_key
        key = secret.get_secret_value() if secret is not None else DEMO_STRIPE_KEY
        self.stripe = stripe.StripeClient(
            key, base_addresses={"api": self.sim_url} if not self.real_stripe else None
        )
        self.done = threading.Event()  # ends the health watch
        self.accounts: dict[str, str] = {}  # customer id -> plan lookup key
        self.subscriptions: dict[str, str] = {}  # customer id -> Stripe subscription id
        self.subscribed_at = 0.0  # when the last subscription started
        self.expected = Expected()
        self.figures: dict[str, str] = {}
        self.topics = Topics.from_settings(settings)
        self.bootstrap = settings.kafka_bootstrap_servers  # the local broker's, once started
        self.credited: dict[str, str] = {}  # account -> "commitment" or "grant"
        self.kafka: Kafka = settings.kafka  # where the catalog goes, once the stack started

    # -- stack ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = setting_variables(
            api_keys=DEMO_KEY,
            stripe_webhook_secrets=DEMO_SECRET,
            bill_run_interval_s=3600,  # the demo runs bills itself
            stripe_mode=self.options.mode,
            stripe_trigger=self.options.trigger,
            stripe_finalize_on_approval=True,
            # A stalled worker is reported well within the demo's own waits.
            worker_stall_timeout_s=30,
            worker_send_timeout_s=20,
        )
        if not self.real_stripe:
            env |= setting_variables(stripe_api_base=self.sim_url, stripe_api_key=DEMO_STRIPE_KEY)
        return env

    def start(self, stack: DevStack) -> None:
        stack.start_kafka(use_existing="kafka_bootstrap_servers" in self.settings.model_fields_set)
        stack.create_topics()
        topics = Topics.from_settings(self.settings)
        catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text()) | {"alertRules": ALERT_RULES}
        publish(stack.kafka(), topics.catalog, catalog)
        self.kafka = stack.kafka()
        self.bootstrap = stack.bootstrap()
        self.console.print(f"catalog applied from {EXAMPLE_CATALOG.name}, with an alert rule")
        if not self.real_stripe:
            stack.add_stripe_simulator(self.sim_port)
        stack.add_defaults()
        stack.extra_env.update(self.env())
        stack.spawn()
        with self.console.status("waiting for every process to be healthy…"):
            stack.wait_healthy()
        self.console.print(stack.status_table())
        stack.watch_health(self.done)

    # -- 1. checkout ------------------------------------------------------------------

    def subscribe(self) -> None:
        prices = {}
        for lookup, currency, amount in PLANS:
            product = self.stripe.products.create({"name": lookup.replace("_", " ").title()})
            price = self.stripe.prices.create(
                {
                    "product": product.id,
                    "currency": currency,
                    "unit_amount": amount,
                    "recurring": {"interval": "month"},
                    "lookup_key": lookup,
                }
            )
            prices[lookup] = price.id
        anchor = int(time.time()) + self.options.period_seconds
        self.period_end = anchor
        for index in range(self.options.accounts):
            lookup = PLANS[index % len(PLANS)][0]
            session = httpx.post(
                f"{self.sim_url}/_sim/checkout",
                json={
                    "price": prices[lookup],
                    "quantity": STRIPE_SEATS[0] if lookup == "tokyo_monthly" else 1,
                    "email": f"billing+{index}@example.com",
                    "name": f"Customer {index + 1}",
                    "client_reference_id": f"signup-{index + 1}",
                    "billing_cycle_anchor": anchor,
                },
                timeout=30,
            ).json()
            self.accounts[session["customer"]] = lookup
            self.subscriptions[session["customer"]] = session["subscription"]
        self.subscribed_at = time.time()
        self.console.print(
            f"{len(self.accounts)} customers subscribed through Stripe Checkout; "
            f"the current period ends in {self.options.period_seconds}s"
        )

        def plans_ready() -> bool:
            for customer in self.accounts:
                answer = self.http.get(f"{self.api}/accountplans", params={"account": customer})
                if answer.status_code != 200:
                    return False
                plans = answer.json().get("data", [])
                if not any(plan.get("planCode") for plan in plans):
                    return False
            return True

        with self.console.status("waiting for webhooks to create accounts and plans…"):
            eventually(plans_ready, 60, POLL_S, "accounts and account plans from the webhooks")
        self.console.print("[green]every account and account plan exists in meterline[/]")

    # -- 1b. seats --------------------------------------------------------------------

    def plan_start(self, account: str) -> datetime:
        plans = self.http.get(f"{self.api}/accountplans", params={"account": account}).json()
        return min(datetime.fromisoformat(p["startDate"]) for p in plans["data"])

    def adjust_seats(self, account: str, uid: str, at: datetime, seats: int) -> None:
        body = {"uid": uid, "account": account, "counter": "seats", "date": at.isoformat()}
        answer = self.http.post(f"{self.api}/counteradjustments", json={**body, "value": seats})
        if answer.status_code != 200:
            raise DemoFailure(f"counter adjustment refused: {answer.status_code} {answer.text}")

    def change_seats(self) -> None:
        """Seats at the period start, then a change inside the period: starter through
        the counter adjustments API, tokyo through the Stripe subscription's quantity."""
        wait = self.subscribed_at + SEATS_CHANGE_AFTER_S - time.time()
        if wait > 0:  # pacing, so the change lies inside the period, after its start
            time.sleep(wait)
        starters = 0
        for account, lookup in self.accounts.items():
            if lookup == "starter_monthly":
                before, after = API_SEATS[starters % len(API_SEATS)]
                starters += 1
                self.adjust_seats(account, f"{account}-seats-0", self.plan_start(account), before)
                now = datetime.now(UTC)
                self.adjust_seats(account, f"{account}-seats-1", now, after)
            elif lookup == "tokyo_monthly":
                before, after = STRIPE_SEATS
                subscription = self.stripe.subscriptions.retrieve(self.subscriptions[account])
                item = subscription["items"]["data"][0]
                self.stripe.subscriptions.update(
                    subscription.id,
                    {"items": [{"id": item.id, "quantity": after}], "proration_behavior": "none"},
                )
            else:
                continue
            self.expected.seats[account] = (before, after)
        self.console.print(
            "seats changed mid-period: "
            + ", ".join(f"{a} {b}→{c}" for a, (b, c) in self.expected.seats.items())
        )

    # -- 1c. credits ------------------------------------------------------------------

    def add_credits(self) -> None:
        """A commitment for the first pro account (published with the catalog, charged up
        front, drawn down by usage) and a credit grant for the first starter account."""
        pro = next(a for a, lookup in self.accounts.items() if lookup == "pro_monthly")
        starter = next(a for a, lookup in self.accounts.items() if lookup == "starter_monthly")
        start = self.plan_start(pro)
        commitment = {
            "code": f"demo-{pro}",
            "account": pro,
            "plan": "pro",
            "amount": COMMITMENT,
            "startDate": start.isoformat(),
            "endDate": start.replace(year=start.year + 1).isoformat(),
            "description": "Prepaid usage",
        }
        catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
        publish(
            self.kafka,
            self.topics.catalog,
            catalog | {"alertRules": ALERT_RULES, "commitments": [commitment]},
        )
        grant = {
            "uid": f"{starter}-welcome",
            "account": starter,
            "currency": "USD",
            "amount": GRANT,
            "startDate": self.plan_start(starter).isoformat(),
            "reason": "welcome credit",
        }
        for _ in range(2):  # a client's retry: recorded once
            answer = self.http.post(f"{self.api}/balances", json=grant)
            if answer.status_code != 200:
                raise DemoFailure(f"credit grant refused: {answer.status_code} {answer.text}")
        self.credited = {pro: "commitment", starter: "grant"}
        self.console.print(
            f"commitment of {COMMITMENT} USD for {pro} (pro, charged up front); "
            f"credit grant of {GRANT} USD for {starter} (starter)"
        )

    def credits_of(self, account: str, bill: dict[str, Any]) -> tuple[bool, str]:
        """Whether the bill shows the account's commitment or grant as the demo expects:
        usage is far beyond both, so each is used up on the first bill."""
        kind = self.credited.get(account)
        lines = {x["lineItemType"]: x["subtotal"] for x in bill["lines"]}
        if kind == "commitment":
            ok = (
                lines.get("COMMITMENT_FEE") == COMMITMENT
                and lines.get("COMMITMENT_CONSUMED") == f"-{COMMITMENT}"
                and "OVERAGE_USAGE" in lines
            )
            return (
                ok,
                f"fee {lines.get('COMMITMENT_FEE')}, consumed {lines.get('COMMITMENT_CONSUMED')}",
            )
        if kind == "grant":
            answer = self.http.get(f"{self.api}/balances", params={"account": account})
            balances = answer.json()["data"] if answer.status_code == 200 else []
            left = [b["remaining"] for b in balances]
            ok = lines.get("BALANCE_CONSUMED") == f"-{GRANT}" and left == ["0.00"]
            return ok, f"credit {lines.get('BALANCE_CONSUMED')}, left {left}"
        return "BALANCE_CONSUMED" not in lines and "COMMITMENT_FEE" not in lines, "-"

    # -- 2. usage ---------------------------------------------------------------------

    def measurement(self, account: str, ts: datetime, uid: str | None = None) -> dict[str, Any]:
        return {
            "uid": uid or uuid.uuid4().hex,
            "meter": "api",
            "account": account,
            "ts": ts.isoformat(),
            "who": {"user": f"user-{random.randrange(40)}"},
            "what": {"status": random.choice(STATUSES)},
            "where": {"region": random.choice(REGIONS)},
            "measure": {"calls": random.randrange(1, 5), "bytes": random.randrange(1, 2_000_000)},
        }

    def stream_usage(self, count: int, label: str) -> None:
        accounts = list(self.accounts)
        sent_uids: list[tuple[str, dict[str, Any]]] = []
        started = time.monotonic()
        latencies: list[float] = []
        with Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task(label, total=count, rate="")
            done = 0
            while done < count:
                batch = []
                for _ in range(min(self.options.batch, count - done)):
                    roll = random.random()
                    if roll < 0.03 and sent_uids:  # a producer retry: same uid again
                        batch.append(random.choice(sent_uids)[1])
                        self.expected.duplicates += 1
                        continue
                    account = random.choice(accounts)
                    ts = datetime.now(UTC)
                    if roll < 0.08:  # late: happened earlier in the period, arrives now
                        ts = datetime.fromtimestamp(time.time() - random.uniform(5, 20), UTC)
                        self.expected.late += 1
                    record = self.measurement(account, ts)
                    batch.append(record)
                    sent_uids.append((record["uid"], record))
                    self.expected.count(record)
                t0 = time.monotonic()
                answer = self.http.post(
                    f"{self.api}/measurements", content=orjson.dumps({"measurements": batch})
                )
                latencies.append(time.monotonic() - t0)
                if answer.status_code != 200:
                    raise DemoFailure(f"ingest API answered {answer.status_code}: {answer.text}")
                done += len(batch)
                self.expected.sent += len(batch)
                rate = done / max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f}/s")
        elapsed = time.monotonic() - started
        self.figures[f"ingest {label}"] = f"{count / elapsed:,.0f} measurements/s"
        latencies.sort()
        self.figures[f"ingest request p99 ({label})"] = (
            f"{latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms"
        )

    def usage_of(self, account: str) -> dict[str, Decimal]:
        answer = self.http.post(
            f"{self.api}/usage/query",
            json={
                "startDate": datetime.fromtimestamp(time.time() - 86_400, UTC).isoformat(),
                "endDate": datetime.fromtimestamp(time.time() + 86_400, UTC).isoformat(),
                "accountIds": [account],
                "aggregations": ["api_calls", "active_users"],
            },
        )
        if answer.status_code != 200:
            return {}
        return {row["aggregation"]: Decimal(row["value"]) for row in answer.json()["data"]}

    def wait_usage_visible(self) -> None:
        started = time.monotonic()

        def all_counted() -> bool:
            return all(
                self.usage_of(a).get("api_calls") == self.expected.calls[a] for a in self.accounts
            )

        with self.console.status("waiting until every measurement is query-visible…"):
            eventually(all_counted, 120, POLL_S, "usage to match what was sent")
        self.figures["last ack → query-visible"] = f"{(time.monotonic() - started) * 1000:.0f} ms"

    def probe_latency(self, samples: int = 20) -> None:
        """Ingest one measurement and time until the query API shows it."""
        account = next(iter(self.accounts))
        timings = []
        for _ in range(samples):
            record = self.measurement(account, datetime.now(UTC))
            self.expected.count(record)
            target = self.expected.calls[account]
            started = time.monotonic()
            self.http.post(f"{self.api}/measurements", json={"measurements": [record]})
            eventually(
                lambda: self.usage_of(account).get("api_calls", 0) >= target,  # noqa: B023
                10,
                0.01,
                "a probe measurement",
            )
            timings.append(time.monotonic() - started)
        timings.sort()
        self.figures["ingest → query-visible p50"] = f"{timings[len(timings) // 2] * 1000:.0f} ms"
        self.figures["ingest → query-visible p99"] = f"{timings[-1] * 1000:.0f} ms"

    # -- 3. bills ---------------------------------------------------------------------

    def bills(self, account: str | None = None) -> list[dict[str, Any]]:
        params = {"account": account} if account else {}
        answer = self.http.get(f"{self.api}/bills", params=params)
        return list(answer.json()["data"]) if answer.status_code == 200 else []

    def run_bills(self, label: str, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Ask for a bill run of every account; wait until `done(bills)` holds."""
        started = time.monotonic()
        answer = self.http.post(f"{self.api}/billjobs", json={})
        if answer.status_code != 202:
            raise DemoFailure(f"bill job refused: {answer.status_code} {answer.text}")
        with self.console.status(f"bill run ({label})…"):
            eventually(lambda: done(self.bills()), 60, POLL_S, f"bills of the {label} run")
        self.figures[f"bill run ({label})"] = f"{(time.monotonic() - started) * 1000:.0f} ms"

    def previews_agree(self) -> None:
        """Each account's bill preview is its current bill (no usage came since the run)."""
        latest = {b["id"]: b for b in self.bills()}
        timings = []
        for account in self.accounts:
            started = time.monotonic()
            answer = self.http.get(f"{self.api}/bills/preview", params={"account": account})
            timings.append(time.monotonic() - started)
            if answer.status_code != 200:
                raise DemoFailure(f"preview of {account}: {answer.status_code} {answer.text}")
            for preview in answer.json()["data"]:
                bill = latest.get(preview["id"])
                if bill is None or (bill["total"], bill["lines"]) != (
                    preview["total"],
                    preview["lines"],
                ):
                    raise DemoFailure(f"the preview of {account} is not its bill {preview['id']}")
        timings.sort()
        self.figures["bill preview p50"] = f"{timings[len(timings) // 2] * 1000:.0f} ms"
        self.console.print("[green]every account's bill preview is its bill[/]")

    def alerts_once(self) -> bool:
        """Exactly one alert of the demo rule per account (first period)."""
        alerts = [
            orjson.loads(m.value() or b"{}")
            for m in read_to_end(self.bootstrap, self.topics.alerts)
        ]
        per_account = {a: [x for x in alerts if x.get("accountCode") == a] for a in self.accounts}
        self.figures["alerts (one per account expected)"] = str(len(alerts))
        return all(len(found) == 1 for found in per_account.values())

    def every_account(
        self, bills: list[dict[str, Any]], wanted: Callable[[dict[str, Any]], bool]
    ) -> bool:
        """True when every demo account has a bill for which `wanted` holds."""
        return all(
            any(b["accountCode"] == account and wanted(b) for b in bills)
            for account in self.accounts
        )

    def end_period(self) -> None:
        remaining = self.period_end - time.time()
        if remaining > 0:
            with self.console.status(f"waiting {remaining:.0f}s for the billing period to end…"):
                time.sleep(remaining + 1)
        if not self.real_stripe:
            httpx.post(f"{self.sim_url}/_sim/advance", json={"seconds": 0}, timeout=30)

        def renewed() -> bool:
            for customer in self.accounts:
                plans = self.http.get(f"{self.api}/accountplans", params={"account": customer})
                starts = [p.get("currentPeriodStart") for p in plans.json().get("data", [])]
                renewed_at = [datetime.fromisoformat(s).timestamp() for s in starts if s]
                if not any(start >= self.period_end - 1 for start in renewed_at):
                    return False
            return True

        with self.console.status("waiting for the renewal webhooks…"):
            eventually(renewed, 60, POLL_S, "subscription renewals")
        self.console.print("[green]subscriptions renewed; the first period has ended[/]")

    def first_period_bills(self) -> dict[str, dict[str, Any]]:
        out = {}
        for bill in self.bills():
            if datetime.fromisoformat(bill["endDate"]).timestamp() <= self.period_end + 1:
                out[bill["accountCode"]] = bill
        return out

    def approve_and_lock(self, account: str) -> dict[str, Any]:
        bill = self.first_period_bills()[account]
        for path, body in (("status", {"status": "APPROVED"}), ("lock", None)):
            answer = self.http.put(f"{self.api}/bills/{bill['id']}/{path}", json=body)
            if answer.status_code != 200:
                raise DemoFailure(f"{path} of {bill['id']}: {answer.status_code} {answer.text}")
        locked: dict[str, Any] = answer.json()
        self.console.print(f"approved and locked {locked['id']} of {account}")
        return locked

    def check_locked_rejects_late_usage(self, locked: dict[str, Any]) -> None:
        """A late measurement for the locked period changes nothing (it is dead-lettered)."""
        account = locked["accountCode"]
        before = self.usage_of(account).get("api_calls")
        late = self.measurement(account, datetime.fromtimestamp(self.period_end - 10, UTC))
        self.http.post(f"{self.api}/measurements", json={"measurements": [late]})
        time.sleep(2)
        after = self.usage_of(account).get("api_calls")
        verdict = "unchanged" if before == after else "CHANGED"
        self.console.print(
            f"late measurement for the locked period of {account}: usage {verdict} "
            "(rejected to measurements.rejected)"
        )

    # -- 4. Stripe --------------------------------------------------------------------

    def stripe_items(self, bill: dict[str, Any]) -> list[Any]:
        customer = bill.get("stripeCustomerId") or bill["accountCode"]
        listed = self.stripe.invoice_items.list({"customer": customer, "limit": 100})
        return [
            item
            for item in listed.auto_paging_iter()
            if item.to_dict().get("metadata", {}).get("bill_id") == bill["id"]
        ]

    def stripe_agrees(self, bill: dict[str, Any]) -> bool:
        items = self.stripe_items(bill)
        total = sum(item.amount for item in items)
        return len(items) == len(bill["lines"]) and total == to_stripe_amount(
            Decimal(bill["total"]), bill["currency"]
        )

    def synced(self, bill: dict[str, Any]) -> bool:
        """Whether the sink is meant to have written this bill (the trigger setting)."""
        return self.options.trigger == "every" or bill["status"] in ("APPROVED", "LOCKED")

    def account_in_stripe_agrees(self, account: str) -> bool:
        """Every bill the sink should have written is in Stripe line for line, and Stripe
        holds no meterline item of a bill meterline does not have (no double charge)."""
        bills = self.bills(account)
        if not all(self.stripe_agrees(b) for b in bills if self.synced(b)):
            return False
        known = {b["id"] for b in bills if self.synced(b)}
        listed = self.stripe.invoice_items.list({"customer": account, "limit": 100})
        stray = {
            meta.get("bill_id")
            for item in listed.auto_paging_iter()
            if (meta := item.to_dict().get("metadata", {})).get("bill_id")
        } - known
        return not stray

    # -- summary ----------------------------------------------------------------------

    def priced_extras(self, account: str, bill: dict[str, Any]) -> tuple[bool, str]:
        """Whether the bill prices the compound aggregation (pro) or the seat counter
        (starter, tokyo) as the demo expects, and what it shows."""
        if self.accounts[account] == "pro_monthly":
            line = next((x for x in bill["lines"] if x["id"] == "USAGE:api_units"), None)
            if line is None or line["quantity"] is None:
                return False, "no API units"
            service = (
                datetime.fromisoformat(line["servicePeriodStartDate"]),
                datetime.fromisoformat(line["servicePeriodEndDate"]),
            )
            wanted = self.expected.api_units(account, *service)
            value = Decimal(line["quantity"])
            return value == wanted, f"API units {value.normalize():f}: {line['subtotal']}"
        regions_ok, regions = True, ""
        if self.accounts[account] == "tokyo_monthly":
            regions_ok, regions = self.regions_priced(bill)
        seats = self.expected.seats.get(account)
        if seats is None:
            return regions_ok, regions or "-"
        before, after = seats
        lines = [x for x in bill["lines"] if x["lineItemType"].startswith("COUNTER_")]
        change = "DEBIT" if after > before else "CREDIT"
        ok = (
            [x["lineItemType"] for x in lines]
            == ["COUNTER_RUNNING_TOTAL_CHARGE", f"COUNTER_ADJUSTMENT_{change}"]
            and Decimal(lines[0]["quantity"]) == before
            and Decimal(lines[1]["quantity"]) == after - before
        )
        shown = f"seats {before}→{after}: " + " ".join(x["subtotal"] for x in lines)
        return ok and regions_ok, f"{regions} {shown}".strip()

    def regions_priced(self, bill: dict[str, Any]) -> tuple[bool, str]:
        """Whether the tokyo bill has a line per region segment with the successful calls
        the demo sent there (the filtered, segmented regional_calls)."""
        lines = [x for x in bill["lines"] if x.get("segment") is not None]
        if not lines:
            return False, "no region lines"
        service = (
            datetime.fromisoformat(lines[0]["servicePeriodStartDate"]),
            datetime.fromisoformat(lines[0]["servicePeriodEndDate"]),
        )
        wanted = self.expected.regional_calls(bill["accountCode"], *service)
        found = {x["segment"].get("region", ""): Decimal(x["quantity"]) for x in lines}
        ok = set(found) == {*SEGMENTED_REGIONS, ""} and all(
            found[region] == wanted.get(region, 0) for region in found
        )
        shown = " ".join(f"{x['segment'].get('region', 'other')} {x['subtotal']}" for x in lines)
        return ok, f"regions: {shown};"

    def summary(self) -> bool:
        ok = True
        table = Table(title="meterline demo: usage → bills → Stripe")
        columns = (
            "account",
            "plan",
            "calls",
            "users",
            "bill",
            "lines",
            "compound / regions / seats",
            "credits",
            "total",
            "Stripe",
            "agree",
        )
        for column in columns:
            table.add_column(column)
        bills = self.first_period_bills()
        for account, lookup in self.accounts.items():
            usage = self.usage_of(account)
            bill = bills.get(account)
            calls_ok = usage.get("api_calls") == self.expected.calls[account]
            users_ok = usage.get("active_users") == len(self.expected.users[account])
            items = self.stripe_items(bill) if bill else []
            stripe_total = sum(item.amount for item in items)
            extras_ok, extras = self.priced_extras(account, bill) if bill else (False, "-")
            credits_ok, credits = self.credits_of(account, bill) if bill else (False, "-")
            agree = (
                bill is not None
                and calls_ok
                and users_ok
                and extras_ok
                and credits_ok
                and self.account_in_stripe_agrees(account)
            )
            ok &= agree
            table.add_row(
                account,
                lookup,
                f"{usage.get('api_calls')} / {self.expected.calls[account]}",
                f"{usage.get('active_users')} / {len(self.expected.users[account])}",
                f"v{bill['version']} {bill['status']}" if bill else "-",
                str(len(bill["lines"])) if bill else "-",
                extras,
                credits,
                f"{bill['total']} {bill['currency']}" if bill else "-",
                f"{len(items)} items, {stripe_total} minor units",
                "[green]yes[/]" if agree else "[red]NO[/]",
            )
        self.console.print(table)
        figures = Table(title="figures (this run, this machine)")
        figures.add_column("what")
        figures.add_column("value")
        figures.add_row("measurements sent", f"{self.expected.sent:,}")
        figures.add_row("duplicates sent (ignored by uid)", f"{self.expected.duplicates:,}")
        figures.add_row("late measurements", f"{self.expected.late:,}")
        for what, value in self.figures.items():
            figures.add_row(what, value)
        self.console.print(figures)
        return ok


def fresh_settings(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """Every run starts clean: its own broker storage, topic prefix and app id."""
    run = uuid.uuid4().hex[:6]
    data_dir = settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    prefix, app_id = f"{settings.topic_prefix}demo-{run}.", f"{settings.app_id}-demo-{run}"
    update = {"data_dir": data_dir, "topic_prefix": prefix, "app_id": app_id}
    env = setting_variables(data_dir=data_dir, topic_prefix=prefix, app_id=app_id)
    return settings.model_copy(update=update), env


def run_demo(settings: Settings, options: DemoOptions | None = None) -> int:
    options = options or DemoOptions()
    console = Console(width=None if sys.stdout.isatty() else 160)
    settings, env = fresh_settings(settings)
    stack = DevStack(settings, console=console, broker_port=options.broker_port, quiet=True)
    stack.extra_env.update(env)
    console.print(f"logs of every process: {stack.log_dir}/")
    demo = Demo(settings, options, console)
    try:
        demo.start(stack)
        demo.subscribe()
        demo.change_seats()
        demo.add_credits()
        half = options.measurements // 2
        demo.stream_usage(half, "usage, first half")
        demo.wait_usage_visible()
        demo.run_bills("mid-period", lambda bills: demo.every_account(bills, lambda b: True))
        versions = {b["id"]: b["version"] for b in demo.bills()}
        demo.stream_usage(options.measurements - half, "usage, second half")
        demo.probe_latency()
        demo.wait_usage_visible()
        demo.run_bills(
            "mid-period, again",
            lambda bills: demo.every_account(
                bills, lambda b: b["version"] > versions.get(b["id"], 0)
            ),
        )
        demo.previews_agree()
        with console.status("waiting for the usage alerts…"):
            eventually(
                lambda: len(read_to_end(demo.bootstrap, demo.topics.alerts)) >= len(demo.accounts),
                30,
                POLL_S,
                "an alert per account",
            )
        demo.end_period()
        demo.run_bills(
            "period end",
            lambda bills: demo.every_account(
                bills,
                lambda b: datetime.fromisoformat(b["startDate"]).timestamp() >= demo.period_end - 1,
            ),
        )
        locked = demo.approve_and_lock(next(iter(demo.accounts)))
        with console.status("waiting for the Stripe sink…"):
            eventually(
                lambda: all(demo.account_in_stripe_agrees(a) for a in demo.accounts),
                90,
                POLL_S,
                "Stripe to hold every bill line",
            )
        alerts_ok = demo.alerts_once()
        ok = demo.summary() and alerts_ok
        verdict = "[green bold]everything agreed[/]"
        if not ok:
            verdict = "[red bold]usage, bills, alerts and Stripe disagree[/]"
        console.print(verdict)
        demo.check_locked_rejects_late_usage(locked)
        return 0 if ok else 1
    except (DemoFailure, TimeoutError) as exc:
        console.print(f"[red bold]demo failed:[/] {exc}")
        for problem in stack.problems():
            console.print(f"[red]{problem}[/]")
        return 1
    finally:
        demo.done.set()
        if options.keep:
            console.print(console_line(settings), f"(API key: {DEMO_KEY})")
            wait_for_interrupt(console)
        stack.stop()
        if not options.keep:
            console.print(
                "the stack is stopped; `meterline demo --keep` keeps it up to look around in",
                console_line(settings),
            )


def console_line(settings: Settings) -> str:
    return f"the console: http://127.0.0.1:{settings.http_port}/console"


def wait_for_interrupt(console: Console) -> None:
    """Block until Ctrl-C or SIGTERM (`--keep`: the stack stays up until then)."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    console.print("the stack keeps running (--keep); Ctrl-C stops every process")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Usage durability under faults: a full-speed load with the ledger of what must be counted,
the usage the query API answers, and the worker killed at chosen moments.

Used by tests/integration/test_usage_durability.py and, at larger volume, by
bench/bench_durability.py; everything goes through public interfaces (the
`measurements` topic, the worker's /healthz, its consumer group's committed offsets,
the usage query API).

- `FullSpeedLoad`: a thread that produces measurements to `measurements` as fast as the
  producer goes, in bursts the caller asks for: envelopes of 100 (as the ingest API
  writes them) and single-measurement messages (as any producer may); a share of
  measurements repeat an earlier uid (a producer retry), a share of messages are
  delivered twice (an at-least-once producer), and a message Kafka did not acknowledge
  (a broker restart) is produced again until it is. Its `Ledger` knows, from the
  distinct uids, what every aggregation must answer per account.
- `usage(...)`: what the usage query API answers, in the ledger's shape.
- `kill_worker(...)`: SIGKILL the worker at a `Moment`, noting how far behind it was.
"""

from __future__ import annotations

import enum
import random
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from types import TracebackType

from confluent_kafka import KafkaError, Message

from connectors.kafka.measurements import Envelope, PartitionBatcher
from connectors.kafka.producer import new_producer
from streams.partitioning import partition_for
from tests.stack import Positions, Stack
from tests.support import eventually, try_get_json

HOUR_MS = 3_600_000
# Every aggregation function of the example catalog, on the `api` and `storage` meters.
AGGREGATIONS = (
    "api_calls",  # SUM of calls
    "requests_count",  # COUNT
    "data_transfer",  # SUM of a derived field (bytes / 10^9)
    "active_users",  # UNIQUE users
    "avg_compute",  # MEAN of compute_ms
    "peak_storage",  # MAX of gb
    "min_storage",  # MIN of gb
    "latest_storage",  # LATEST gb (by ts)
)
QUERY_ACCOUNTS = 250  # accounts per usage query
MEAN = Context(prec=28, rounding=ROUND_HALF_EVEN)  # MEAN's quotient: 28 significant digits

Usage = dict[tuple[str, str], tuple[Decimal, int]]  # (account, aggregation) → (value, count)


def recent_hours(hours: int) -> int:
    """The start (epoch ms) of a range of `hours` whole hours that ends at this hour's start."""
    now = time.time_ns() // 1_000_000
    return now - now % HOUR_MS - hours * HOUR_MS


@dataclass
class _Account:
    """What an account's distinct measurements add up to."""

    calls: int = 0
    requests: int = 0
    bytes: int = 0
    compute_ms: int = 0
    users: set[str] = field(default_factory=set)
    stored: int = 0
    gb_tenths: list[int] = field(default_factory=list)
    latest: tuple[int, int] = (-1, 0)  # (ts, gb tenths): the greatest ts, then value


class Ledger:
    """Every distinct uid produced, and what the usage query must answer for them."""

    def __init__(self) -> None:
        self.uids: set[str] = set()
        self.accounts: dict[str, _Account] = {}

    def api(self, uid: str, account: str, calls: int, size: int, user: str, ms: int) -> None:
        if not self._new(uid):
            return
        tally = self.accounts.setdefault(account, _Account())
        tally.calls += calls
        tally.requests += 1
        tally.bytes += size
        tally.compute_ms += ms
        tally.users.add(user)

    def storage(self, uid: str, account: str, ts_ms: int, gb_tenths: int) -> None:
        if not self._new(uid):
            return
        tally = self.accounts.setdefault(account, _Account())
        tally.stored += 1
        tally.gb_tenths.append(gb_tenths)
        tally.latest = max(tally.latest, (ts_ms, gb_tenths))

    def _new(self, uid: str) -> bool:
        if uid in self.uids:
            return False
        self.uids.add(uid)
        return True

    def expected(self) -> Usage:
        out: Usage = {}
        for code, a in self.accounts.items():
            if a.requests:
                n = a.requests
                out[(code, "api_calls")] = (Decimal(a.calls), n)
                out[(code, "requests_count")] = (Decimal(n), n)
                out[(code, "data_transfer")] = (Decimal(a.bytes).scaleb(-9), n)
                out[(code, "active_users")] = (Decimal(len(a.users)), n)
                out[(code, "avg_compute")] = (MEAN.divide(Decimal(a.compute_ms), Decimal(n)), n)
            if a.stored:
                n = a.stored
                out[(code, "peak_storage")] = (Decimal(max(a.gb_tenths)).scaleb(-1), n)
                out[(code, "min_storage")] = (Decimal(min(a.gb_tenths)).scaleb(-1), n)
                out[(code, "latest_storage")] = (Decimal(a.latest[1]).scaleb(-1), n)
        return out


def usage(stack: Stack, accounts: list[str], start_ms: int, hours: int) -> Usage | None:
    """What the usage query API answers for `accounts` over the load's hours (None: not 200)."""
    answer = {}
    with stack.client() as client:
        # The edge asks the worker once per account: a few hundred a query answer well
        # within the client's timeout on a busy machine.
        for first in range(0, len(accounts), QUERY_ACCOUNTS):
            response = client.post(
                f"{stack.api}/usage/query",
                json={
                    "startDate": _iso(start_ms - HOUR_MS),
                    "endDate": _iso(start_ms + (hours + 1) * HOUR_MS),
                    "accountIds": accounts[first : first + QUERY_ACCOUNTS],
                    "aggregations": list(AGGREGATIONS),
                },
            )
            if response.status_code != 200:
                return None
            for row in response.json()["data"]:
                if row["count"]:
                    key = (row["accountId"], row["aggregation"])
                    answer[key] = (Decimal(row["value"]), int(row["count"]))
    return answer


def differences(expected: Usage, answered: Usage | None, limit: int = 10) -> str:
    """The first `limit` (account, aggregation) pairs where the answer is not the expected."""
    if answered is None:
        return "the usage query did not answer 200"
    keys = sorted(set(expected) | set(answered))
    wrong = [
        f"{key}: expected {expected.get(key)}, answered {answered.get(key)}"
        for key in keys
        if expected.get(key) != answered.get(key)
    ]
    return f"{len(wrong)} of {len(keys)} differ; " + "; ".join(wrong[:limit])


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


# --- the load ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadShape:
    accounts: tuple[str, ...]
    start_ms: int  # measurements' ts lie in [start_ms, start_ms + hours h)
    hours: int
    single_share: float = 0.05  # measurements sent as single-measurement messages
    duplicate_share: float = 0.05  # measurements that repeat an earlier uid
    redelivery_share: float = 0.01  # messages Kafka gets twice
    storage_share: float = 0.1  # `storage` measurements (the rest: `api`)
    envelope: int = 100


@dataclass
class LoadCounts:
    measurements: int = 0  # generated, repeated uids included
    duplicates: int = 0  # of them repeating an earlier uid
    messages: int = 0  # acknowledged by Kafka, redeliveries included
    acknowledged: int = 0  # measurements in acknowledged messages
    redelivered: int = 0  # messages produced a second time on purpose
    retried: int = 0  # messages produced again after Kafka refused or timed out


class FullSpeedLoad:
    """Produces measurements as fast as the producer goes, on a thread, burst by burst.

    `burst(n)` asks for `n` more measurements and returns at once; `settle()` waits until
    every message asked for so far (redeliveries and retries included) is acknowledged.
    Use as a context manager: the thread stops on exit.
    """

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, shape: LoadShape, seed: int = 1
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.shape = shape
        self.ledger = Ledger()
        self.counts = LoadCounts()
        self._rng = random.Random(seed)
        self._run = f"r{seed}-{time.time_ns() % 10**9}"
        self._producer = new_producer(bootstrap)
        self._batcher = PartitionBatcher(partitions, batch_size=shape.envelope)
        self._recent: list[tuple[str, bytes]] = []  # (account, encoded) for repeated uids
        self._again: list[Envelope] = []  # redeliveries and retries, produced next
        self._lock = threading.Lock()
        self._asked = 0
        self._in_flight = 0
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="full-speed-load", daemon=True)

    def __enter__(self) -> FullSpeedLoad:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        self._producer.flush(5)

    def burst(self, count: int) -> None:
        with self._lock:
            self._asked += count
            self._idle.clear()

    def settle(self, timeout: float = 120.0) -> LoadCounts:
        """Wait until everything asked for is acknowledged by Kafka."""
        if not self._idle.wait(timeout):
            raise TimeoutError(f"the load was not acknowledged within {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self.counts

    # the thread
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    todo = min(self._asked, 2_000)
                    self._asked -= todo
                    last = todo and not self._asked
                for _ in range(todo):
                    self._one()
                if last:  # a burst ends with its partly filled envelopes
                    for envelope in self._batcher.drain():
                        self._produce(envelope)
                again, self._again = self._again, []
                for envelope in again:
                    self._produce(envelope)
                self._producer.poll(0.01 if not todo else 0)
                with self._lock:
                    if not self._asked and not self._in_flight and not self._again:
                        self._idle.set()
        except BaseException as error:  # surfaced by settle()
            self._error = error
            self._idle.set()

    def _one(self) -> None:
        shape, rng = self.shape, self._rng
        self.counts.measurements += 1
        if self._recent and rng.random() < shape.duplicate_share:
            account, encoded = rng.choice(self._recent)
            self.counts.duplicates += 1
        else:
            account, encoded = self._new_measurement()
            if len(self._recent) < 5_000:
                self._recent.append((account, encoded))
            else:
                self._recent[rng.randrange(5_000)] = (account, encoded)
        if rng.random() < shape.single_share:
            partition = partition_for(account, self.partitions)
            self._produce(Envelope(partition, account.encode(), encoded, 1))
            return
        envelope = self._batcher.add(account, encoded)
        if envelope is not None:
            self._produce(envelope)

    def _new_measurement(self) -> tuple[str, bytes]:
        shape, rng = self.shape, self._rng
        number = self.counts.measurements
        uid = f"{self._run}-{number}"
        account = rng.choice(shape.accounts)
        ts_ms = shape.start_ms + rng.randrange(shape.hours * HOUR_MS)
        ts = _iso(ts_ms)
        if rng.random() < shape.storage_share:
            tenths = rng.randint(1, 100_000)
            self.ledger.storage(uid, account, ts_ms, tenths)
            gb = f"{tenths // 10}.{tenths % 10}"
            return account, (
                f'{{"uid":"{uid}","meter":"storage","account":"{account}","ts":"{ts}",'
                f'"what":{{"bucket":"b{number % 3}"}},"measure":{{"gb":{gb}}}}}'
            ).encode()
        calls, size = rng.randint(1, 1000), rng.randint(0, 5 * 10**9)
        user, ms = f"u{rng.randrange(50)}", rng.randint(1, 500)
        self.ledger.api(uid, account, calls, size, user, ms)
        return account, (
            f'{{"uid":"{uid}","meter":"api","account":"{account}","ts":"{ts}",'
            f'"who":{{"user":"{user}"}},"measure":{{"calls":{calls},"bytes":{size}}},'
            f'"cost":{{"compute_ms":{ms}}}}}'
        ).encode()

    def _produce(self, envelope: Envelope) -> None:
        def delivered(error: KafkaError | None, _: Message) -> None:
            with self._lock:
                self._in_flight -= 1
                if error is not None:  # not acknowledged: produced again, as a producer would
                    self.counts.retried += 1
                    self._again.append(envelope)
                    return
                self.counts.messages += 1
                self.counts.acknowledged += envelope.count
                if self._rng.random() < self.shape.redelivery_share:
                    self.counts.redelivered += 1
                    self._again.append(envelope)

        with self._lock:
            self._in_flight += 1
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=envelope.value,
                    key=envelope.key,
                    partition=envelope.partition,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the local queue is full: serve callbacks, then go on
                self._producer.poll(0.05)


# --- killing the worker ----------------------------------------------------------------


class Moment(enum.Enum):
    """When the worker is killed, once it is up (ready)."""

    FIRST_PROGRESS = "as soon as it has processed measurements (far behind)"
    COMMIT_ADVANCE = "right after its group's committed position moved"
    RANDOM = "at a random moment up to 3 s after it is ready"


@dataclass(frozen=True)
class Kill:
    moment: Moment
    start_s: float  # from start to ready (recovery of its state included)
    up_s: float  # from ready to the kill
    lag_messages: int  # end offset - committed offset at the kill, summed over partitions
    end_messages: int
    waited_for_commit: bool = True  # COMMIT_ADVANCE: False if no commit came in time

    def describe(self) -> str:
        return (
            f"{self.moment.name.lower()}: ready in {self.start_s:.1f} s, "
            f"killed {self.up_s:.1f} s later, "
            f"{self.lag_messages:,} of {self.end_messages:,} messages behind"
            + ("" if self.waited_for_commit else " (no commit advance came in time)")
        )


def processed(stack: Stack) -> int:
    """Measurements the running worker has judged since it started (its /healthz stats)."""
    stats = (try_get_json(f"{stack.worker_url}/healthz") or {}).get("stats") or {}
    return sum(
        int(stats.get(name, 0))
        for name in ("measurements_accepted", "measurements_duplicate", "measurements_rejected")
    )


def progressed(stack: Stack, positions: Positions, committed_before: int) -> bool:
    """The running worker judged measurements, or its group committed past `committed_before`."""
    return positions.moved_past(committed_before) or processed(stack) > 0


def kill_worker(
    stack: Stack,
    positions: Positions,
    moment: Moment,
    rng: random.Random,
    commit_timeout: float = 30.0,
) -> Kill:
    """Start the worker, SIGKILL it at `moment`; returns how far behind it was."""
    before = positions.committed()
    started = time.monotonic()
    stack.start_worker()
    ready = time.monotonic()
    waited = True
    if moment is Moment.FIRST_PROGRESS:
        eventually(
            lambda: progressed(stack, positions, before),
            timeout=60,
            interval=0.01,
            what="the worker to make progress",
        )
    elif moment is Moment.COMMIT_ADVANCE:
        try:
            eventually(lambda: positions.moved_past(before), timeout=commit_timeout, interval=0.02)
        except TimeoutError:
            waited = False
    else:
        time.sleep(rng.uniform(0.0, 3.0))  # not a synchronisation: the kill's moment
    end = positions.end()
    lag = end - positions.committed()
    up = time.monotonic() - ready
    stack.worker.stop(signal.SIGKILL)
    return Kill(moment, ready - started, up, lag, end, waited)


def all_accounts(count: int, odd: Iterable[str] = ()) -> tuple[str, ...]:
    return (*(f"acct-{i:04d}" for i in range(count)), *odd)


def wait_recovered(stack: Stack, positions: Positions, timeout: float) -> float:
    """Wait until the worker group committed every message; the seconds it took."""
    started = time.monotonic()
    eventually(positions.caught_up, timeout=timeout, interval=0.25, what="the worker to catch up")
    return time.monotonic() - started


def measurements_counted(answer: Usage) -> int:
    """Measurements the usage answer counts: every `api` one in requests_count, every
    `storage` one in peak_storage."""
    return sum(
        count
        for (_, code), (_, count) in answer.items()
        if code in ("requests_count", "peak_storage")
    )

"""What the end-to-end benchmarks share: a broker, a deployment, its processes, payloads.

Every benchmark drives meterline only through its public interfaces: Kafka topics, the
HTTP APIs and the CLI processes (`python -m connectors.cli worker|http`), each started
with a unique topic prefix and app id so runs never share state.

- `kafka()`: KAFKA_BOOTSTRAP_SERVERS, or a `LocalKafka` on a free port for the run.
- `Deployment`: topics under a fresh prefix, a catalog, the env of its processes,
  Kafka offsets (end offsets, the worker group's committed offsets).
- `Service`: one CLI process (own process group, log file), its CPU time and memory.
- payload helpers: measurements encoded from a byte template (cheap enough to pre-fill
  millions), grouped into partition envelopes with the project's `PartitionBatcher`.
- `Profile`: py-spy on a running worker (pyinstrument around it without py-spy),
  summarised from collapsed stacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import Consumer, TopicPartition

from connectors.catalog_io import publish
from connectors.environment import process_env
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port
from connectors.kafka.measurements import Envelope, PartitionBatcher
from connectors.kafka.producer import new_producer
from connectors.waiting import eventually
from streams.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EXAMPLE_CATALOG = ROOT / "streams" / "catalog" / "example.yaml"
PARTITIONS = 6  # the deployment default (METERLINE_PARTITIONS)
ORG = "bench"
API_KEY = "bench-key"
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# --- processes ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(rest.split()[0])
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }


# --- the broker -----------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int | None  # None: an existing cluster (KAFKA_BOOTSTRAP_SERVERS)


@contextlib.contextmanager
def kafka(bootstrap: str | None = None) -> Iterator[Broker]:
    """The given cluster, KAFKA_BOOTSTRAP_SERVERS, or a local broker for the duration."""
    existing = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield Broker(existing, None)
        return
    cache = Path(os.environ.get("METERLINE_CACHE_DIR", Path.home() / ".cache" / "meterline"))
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        local = LocalKafka(port=free_port(), data_dir=Path(tmp), cache_dir=cache)
        local.start(timeout=120)
        try:
            yield Broker(local.bootstrap, local.pid())
        finally:
            local.stop()


# --- a deployment: topics, catalog, processes -----------------------------------------


def example_catalog() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    return document


def catalog_with_aggregations(codes: set[str]) -> dict[str, Any]:
    """The example catalog with only the aggregations `codes` (and the plans pricing only those)."""
    document = example_catalog()
    document["aggregations"] = [a for a in document["aggregations"] if a["code"] in codes]
    document["plans"] = [
        p
        for p in document["plans"]
        if all(pricing["aggregation"] in codes for pricing in p["pricings"])
    ]
    kept = {p["code"] for p in document["plans"]}
    document["planMappings"] = [m for m in document["planMappings"] if m["plan"] in kept]
    return document


class Deployment:
    """One meterline deployment on the broker: a fresh topic prefix, app id and data dir."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        catalog: dict[str, Any] | None = None,
        partitions: int = PARTITIONS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        token = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.topics = Topics(prefix=f"bench{token}.", partitions=partitions)
        self.app_id = f"bench{token}"
        self.web_port = free_port()
        self.http_port = free_port()
        self.env = process_env(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=self.topics.prefix,
            partitions=partitions,
            app_id=self.app_id,
            worker_web_port=self.web_port,
            http_port=self.http_port,
            api_keys=API_KEY,
            org_id=ORG,
            data_dir=workdir / "data",
            stripe_webhook_secrets="whsec_bench",
        )
        self.env.update(env or {})  # variables a benchmark sets as they are
        # The worker does not create missing parents of its data dir (faust's mkdir).
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        create_topics(bootstrap, self.topics.all())
        publish(bootstrap, self.topics.catalog, catalog or example_catalog())
        self._offsets: Consumer | None = None

    def keep_logs(self, why: str) -> Path:
        """Copy the processes' logs (and the state `record_state` wrote) to
        bench/results/failed/<app id>/ (the work dir is removed with the deployment) and
        return that directory."""
        kept = RESULTS / "failed" / self.app_id
        kept.mkdir(parents=True, exist_ok=True)
        for log_file in (*self.workdir.glob("*.log"), *self.workdir.glob("state.*")):
            shutil.copy(log_file, kept / log_file.name)
        (kept / "why.txt").write_text(why + "\n")
        return kept

    def record_state(self, worker: Service, topics: Iterable[str]) -> None:
        """What a worker that does not get on looks like, while it still runs: its
        /healthz, the group's committed offsets against the end offsets of `topics`, and
        every thread's stack (py-spy dump, when py-spy is there), in state.json and
        state.stacks.txt of the work dir (`keep_logs` keeps them)."""
        state: dict[str, Any] = {"at": datetime.now(UTC).isoformat(), "alive": worker.alive()}
        state["health"] = self.worker_health()
        for topic in topics:
            try:
                state[topic] = {
                    "end": self.end_offsets(topic),
                    "committed": self.committed_offsets(topic),
                }
            except Exception as exc:  # a broker that does not answer is part of the state
                state[topic] = {"error": repr(exc)}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=1, default=str))
        binary = py_spy()
        if binary is not None and worker.alive():
            dump = subprocess.run(
                [binary, "dump", "--pid", str(worker.pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            (self.workdir / "state.stacks.txt").write_text(dump.stdout + dump.stderr)

    # processes
    def worker(self, wrap: list[str] | None = None) -> Service:
        return Service("worker", self.env, self.workdir / "worker.log", wrap)

    def http(self) -> Service:
        return Service("http", self.env, self.workdir / "http.log")

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/organizations/{ORG}"

    def worker_health(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"{self.worker_url}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_worker_ready(self, service: Service, timeout: float = 120) -> dict[str, Any]:
        """The first health answer with the catalog loaded and partitions assigned."""

        def ready() -> dict[str, Any] | None:
            if not service.alive():
                raise RuntimeError(f"the worker exited:\n{service.log_tail()}")
            health = self.worker_health()
            if health and health.get("catalogItems") and health.get("assigned"):
                return health
            return None

        return eventually(ready, timeout, 0.05, "the worker to be ready")

    def wait_http_ready(self, service: Service, timeout: float = 60) -> None:
        def ready() -> bool:
            if not service.alive():
                raise RuntimeError(f"the HTTP edge exited:\n{service.log_tail()}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.http_port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, timeout, 0.1, "the HTTP edge to be ready")

    # offsets
    def _consumer(self) -> Consumer:
        if self._offsets is None:
            # The worker's group id, never subscribed: only reads its committed offsets.
            self._offsets = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.app_id,
                    "enable.auto.commit": False,
                }
            )
        return self._offsets

    def end_offsets(self, topic: str) -> list[int]:
        consumer = self._consumer()
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(self.topics.partitions)
        ]

    def committed_offsets(self, topic: str) -> list[int]:
        partitions = [TopicPartition(topic, p) for p in range(self.topics.partitions)]
        return [max(tp.offset, 0) for tp in self._consumer().committed(partitions, timeout=10)]

    def caught_up(self, topic: str, ends: list[int] | None = None) -> bool:
        """The worker's committed offsets on `topic` reached the end offsets."""
        ends = ends if ends is not None else self.end_offsets(topic)
        return all(c >= e for c, e in zip(self.committed_offsets(topic), ends, strict=True))

    def close(self) -> None:
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None


class Service:
    """A meterline CLI process in its own process group, its output in a log file."""

    def __init__(
        self, command: str, env: dict[str, str], log_path: Path, wrap: list[str] | None = None
    ) -> None:
        self.command = command
        self.wrap = wrap or []  # interpreter arguments before `-m connectors.cli` (profilers)
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, *self.wrap, "-m", "connectors.cli", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- commits under load ------------------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"


class CommitTrail:
    """A consumer group's committed position and the end offset of one topic (summed over
    its partitions), sampled every `interval` s by a thread with the admin client.

    It shows whether commits keep advancing while a worker works through a backlog (a
    frozen commit makes lag monitoring see a dead consumer, and a crash redo all of it):
    `longest_gap_s()` is the longest time, while behind, between two advances of the
    committed position (from `start()`; resolution `interval`).
    """

    def __init__(
        self, bootstrap: str, group: str, topic: str, partitions: int, interval: float = 1.0
    ) -> None:
        from confluent_kafka.admin import AdminClient

        self.group = group
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (s since start, committed, end)
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="commit-trail", daemon=True)
        self._started = 0.0

    def start(self) -> CommitTrail:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, with one last sample (the moment the caller saw the end)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self._take()

    def _take(self) -> None:
        at = time.monotonic()
        with contextlib.suppress(Exception):  # a missed sample shows as a longer step
            committed, end = self.sample()
            self.samples.append((round(at - self._started, 1), committed, end))

    def sample(self) -> tuple[int, int]:
        """(committed, end) now."""
        from confluent_kafka import ConsumerGroupTopicPartitions
        from confluent_kafka.admin._listoffsets import OffsetSpec

        asked = [ConsumerGroupTopicPartitions(self.group, self.partitions)]
        group = self._admin.list_consumer_group_offsets(asked, request_timeout=5)
        committed = group[self.group].result().topic_partitions
        latest = {tp: OffsetSpec.latest() for tp in self.partitions}  # type: ignore[no-untyped-call]
        ends = self._admin.list_offsets(latest, request_timeout=5)
        return (
            sum(max(tp.offset, 0) for tp in committed),
            sum(future.result().offset for future in ends.values()),
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            self._take()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - at)))

    def longest_gap_s(self) -> float | None:
        """Longest time between advances of the committed position while it was behind
        the end offset (None: no samples)."""
        if not self.samples:
            return None
        longest, last_advance, previous = 0.0, 0.0, 0
        for at, committed, end in self.samples:
            if committed > previous:
                longest = max(longest, at - last_advance)
                last_advance, previous = at, committed
            if committed >= end:
                return longest
        return max(longest, self.samples[-1][0] - last_advance)

    def sparkline(self, width: int = 60) -> str:
        """committed / end over time, one character per sample (every n-th when longer)."""
        step = max(1, -(-len(self.samples) // width))
        return "".join(
            SPARKS[min(len(SPARKS) - 1, int(len(SPARKS) * committed / end))] if end else " "
            for _, committed, end in self.samples[::step]
        )

    def table(self, rows: int = 12) -> list[str]:
        """A few samples as lines of `t, committed, end, lag`."""
        step = max(1, -(-len(self.samples) // rows))
        picked = self.samples[::step]
        if self.samples and picked[-1] != self.samples[-1]:
            picked.append(self.samples[-1])
        return [
            f"{at:>6.1f} s  committed {committed:>9,}  end {end:>9,}  lag {end - committed:>9,}"
            for at, committed, end in picked
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "longest_commit_gap_s": self.longest_gap_s(),
            "commit_sparkline": self.sparkline(),
            "commit_table": self.table(),
            "commit_samples": self.samples[:: max(1, len(self.samples) // 120)],
        }


# --- payloads ---------------------------------------------------------------------------


def iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def api_measurement(
    uid: str, account: str, ts: str, user: str, calls: int, size: int, compute_ms: int
) -> bytes:
    """An `api` measurement of the example catalog (SUM, UNIQUE, MEAN, COUNT, derived)."""
    return (
        f'{{"uid":"{uid}","meter":"api","account":"{account}","ts":"{ts}",'
        f'"who":{{"user":"{user}"}},"what":{{"endpoint":"/v1/search"}},'
        f'"where":{{"region":"eu-west-1"}},"measure":{{"calls":{calls},"bytes":{size}}},'
        f'"cost":{{"compute_ms":{compute_ms}}}}}'
    ).encode()


def storage_measurement(uid: str, account: str, ts: str, bucket: str, gb: float) -> bytes:
    """A `storage` measurement of the example catalog (MAX, LATEST, MIN)."""
    return (
        f'{{"uid":"{uid}","meter":"storage","account":"{account}","ts":"{ts}",'
        f'"what":{{"bucket":"{bucket}"}},"measure":{{"gb":{gb}}}}}'
    ).encode()


def envelopes(
    measurements: Iterable[tuple[str, bytes]], partitions: int, batch: int
) -> list[Envelope]:
    """(account, encoded measurement) → envelopes of `batch` per partition, in order."""
    batcher = PartitionBatcher(partitions, batch_size=batch)
    out = []
    for account, encoded in measurements:
        envelope = batcher.add(account, encoded)
        if envelope is not None:
            out.append(envelope)
    out.extend(batcher.drain())
    return out


def produce_envelopes(bootstrap: str, topic: str, items: list[Envelope]) -> float:
    """Produce every envelope to its partition (project producer settings); seconds taken."""
    producer = new_producer(bootstrap)
    failures: list[str] = []

    def delivered(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.perf_counter()
    for item in items:
        while True:
            try:
                producer.produce(
                    topic,
                    value=item.value,
                    key=item.key,
                    partition=item.partition,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if remaining or failures:
        raise RuntimeError(f"{remaining} unacknowledged, {len(failures)} failed: {failures[:1]}")
    return elapsed


def consume_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    timeout: float = 120,
    sizes: list[int] | None = None,
) -> tuple[int, float]:
    """Read a topic from the beginning with `consume(num_messages=10000)`: (messages, s).

    Raw: values are not decoded (their sizes are appended to `sizes` when given). Time
    runs from the first consume call to the last message.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
        total = sum(ends)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        seen = 0
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        while seen < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {seen} of {total} messages of {topic}")
            # consume() returns early only once it has num_messages: never ask for
            # more than are left, or the last call waits out its timeout.
            wanted = min(10_000, total - seen)
            for message in consumer.consume(num_messages=wanted, timeout=1.0):
                if message.error() is None:
                    seen += 1
                    if sizes is not None:
                        sizes.append(len(message.value() or b""))
        return seen, time.perf_counter() - started
    finally:
        consumer.close()


# --- profiles -----------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy's path: PATH, the virtualenv, or PY_SPY."""
    candidates = [
        os.environ.get("PY_SPY"),
        shutil.which("py-spy"),
        str(Path(sys.executable).parent / "py-spy"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Profile:
    """A profile of one worker: py-spy `record` when py-spy is there, else pyinstrument.

    py-spy attaches to the running process (`attach(pid)`, `stop()`); pyinstrument (a dev
    dependency) runs the process itself (`wrap()` prefixes its command; it writes a
    session when the process exits, `finish()` reads it) and so also covers start-up.
    Either way the stacks end up in `path` as collapsed stacks (JSON:
    `{"tool": ..., "collapsed": [lines]}`, covered by bench/results' ignore rule;
    `jq -r '.collapsed[]' <path> | flamegraph.pl` draws them). With `native`, py-spy also
    names the native engine's Rust frames, pausing the process for each sample: a
    profiled run is slower than the others, so its figures are not counted.
    """

    def __init__(self, path: Path, rate: int = 97, native: bool = False) -> None:
        self.path = path
        self.rate = rate
        # Rust frames too; py-spy then pauses the process for each sample (slower)
        self.native = native
        self.binary = py_spy()
        self.tool = "py-spy" if self.binary else "pyinstrument"
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self._raw = Path(tempfile.mkstemp(prefix="bench-profile-")[1])

    def wrap(self) -> list[str]:
        """Interpreter arguments that run the profiled process under pyinstrument."""
        if self.tool != "pyinstrument":
            return []
        return ["-m", "pyinstrument", "-r", "session", "-o", str(self._raw), "-i", "0.005"]

    def attach(self, pid: int) -> None:
        if self.binary is None:
            return
        self.process = subprocess.Popen(
            [self.binary, "record", "--pid", str(pid), "--format", "raw", "--rate",
             str(self.rate), *(["--native"] if self.native else ["--nonblocking"]),
             "--output", str(self._raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop py-spy (it writes its output on SIGINT); nothing for pyinstrument."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.process = None
        if err and not self._raw.stat().st_size:
            self.error = err.decode(errors="replace")[-300:]

    def finish(self) -> None:
        """After the profiled process ended: its stacks into `path`."""
        self.stop()
        try:
            if not self._raw.exists() or not self._raw.stat().st_size:
                self.error = self.error or f"{self.tool} wrote no profile"
                return
            if self.tool == "py-spy":
                lines = self._raw.read_text().splitlines()
            else:
                lines = _collapsed_from_session(self._raw)
            self.path.write_text(json.dumps({"tool": self.tool, "collapsed": lines}))
        finally:
            self._raw.unlink(missing_ok=True)

    def summary(self, top: int = 12, marks: Iterable[str] = ()) -> dict[str, Any]:
        """Self time per function, and inclusive shares of frames whose names contain `marks`."""
        if self.error or not self.path.exists():
            return {"error": self.error or "no profile"}
        lines = json.loads(self.path.read_text())["collapsed"]
        result = summarise_collapsed("\n".join(lines), top, list(marks))
        result["tool"] = self.tool
        return result


def _collapsed_from_session(path: Path) -> list[str]:
    """A pyinstrument session as collapsed stacks (weights in ms of self time)."""
    from pyinstrument.session import Session

    weights: Counter[str] = Counter()

    def walk(frame: Any, stack: list[str]) -> None:
        if frame.identifier.startswith("[self]"):
            weights[";".join(stack)] += round(frame.time * 1000)
            return
        here = [*stack, f"{frame.function} ({frame.file_path_short}:{frame.line_no})"]
        if not frame.children:
            weights[";".join(here)] += round(frame.time * 1000)
        for child in frame.children:
            walk(child, here)

    root = Session.load(str(path)).root_frame()
    if root is not None:
        walk(root, [])
    return [f"{stack} {weight}" for stack, weight in weights.items() if stack and weight]


def summarise_collapsed(text: str, top: int, marks: list[str]) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    # py-spy names methods `Class.method`, pyinstrument `method`: accept both.
    patterns = {mark: {mark, _unqualified(mark)} for mark in marks}
    total = idle = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        leaf = frames[-1]
        if any(word in leaf for word in ("select", "epoll", "poll (", "_run_once (selectors")):
            idle += count
        own[leaf] += count
        for mark, variants in patterns.items():
            if any(variant in frame for frame in frames for variant in variants):
                inclusive[mark] += count
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "idle_share": round(idle / total, 3),
        "self": [(name, round(count / total, 3)) for name, count in own.most_common(top)],
        "inclusive": {mark: round(inclusive[mark] / total, 3) for mark in marks},
    }


def _unqualified(mark: str) -> str:
    name, paren, rest = mark.partition(" (")
    return f"{name.rsplit('.', 1)[-1]}{paren}{rest}" if paren else mark


def _short(frame: str) -> str:
    """`fold (streams/usage/state.py:120)` → `fold (streams/usage/state.py)`; paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"

"""A meterline stack for integration tests: topics, catalog, worker and HTTP edge processes,
all on the session's real Kafka broker with a unique topic prefix and app id."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connectors.catalog_io import publish
from connectors.environment import process_env
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port
from connectors.kafka.producer import new_producer
from streams.settings import load_settings
from streams.topics import Topics
from streams.worker_topics import worker_topics
from tests.conftest import cache_dir
from tests.support import Process, eventually, try_get_json

EXAMPLE_CATALOG = Path(__file__).resolve().parents[1] / "streams" / "catalog" / "example.yaml"
API_KEY = "test-key"
T = TypeVar("T")
COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


class Stack:
    def __init__(
        self, bootstrap: str, tmp: Path, partitions: int = 3, provision: bool = True, **env: str
    ) -> None:
        prefix = f"s{os.urandom(4).hex()}."
        self.bootstrap = bootstrap
        self.topics = Topics(prefix=prefix, partitions=partitions)
        self.web_port = free_port()
        self.http_port = free_port()
        self.env = process_env(
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            partitions=partitions,
            app_id=prefix.rstrip("."),
            worker_web_port=self.web_port,
            http_port=self.http_port,
            api_keys=API_KEY,
            org_id="test-org",
            data_dir=tmp,
            stripe_webhook_secrets="whsec_test",
        )
        self.env.update(env)  # variables a test sets as they are
        self.tmp = tmp
        self.worker = Process(["worker"], self.env, tmp / "worker.log")
        self.http = Process(["http"], self.env, tmp / "http.log")
        if provision:  # what `meterline topics create` and `catalog apply` do
            settings = load_settings(
                kafka_bootstrap_servers=bootstrap,
                topic_prefix=prefix,
                partitions=partitions,
                app_id=self.env["METERLINE_APP_ID"],
                data_dir=tmp,
            )
            create_topics(bootstrap, worker_topics(settings))
            self.publish_catalog()

    def publish_catalog(self) -> None:
        publish(self.bootstrap, self.topics.catalog, yaml.safe_load(EXAMPLE_CATALOG.read_text()))

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run `meterline ARGS` as a user would, with this stack's settings; assert exit 0."""
        done = subprocess.run(
            [sys.executable, "-m", "connectors.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"meterline {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/organizations/test-org"

    def start_worker(self) -> None:
        self.worker.start()
        try:
            eventually(
                lambda: (try_get_json(f"{self.worker_url}/healthz") or {}).get("catalogItems"),
                timeout=90,
            )
        except TimeoutError:
            raise AssertionError(self.worker.log_tail()) from None

    def hook_worker_start(self, source: str) -> None:
        """Run `source` at the start of the worker process (a `sitecustomize` on its
        PYTHONPATH): a test's way to put the worker in a state a real run reaches by luck."""
        hook = self.tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(source)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(hook), *filter(None, [self.env.get("PYTHONPATH")])]
        )

    def start_http(self) -> None:
        self.http.start()
        try:
            eventually(
                lambda: try_get_json(f"http://127.0.0.1:{self.http_port}/healthz"), timeout=60
            )
        except TimeoutError:
            raise AssertionError(self.http.log_tail()) from None

    def stop(self) -> None:
        self.http.stop()
        self.worker.stop()

    def webhook(self, payload: dict[str, Any]) -> httpx.Response:
        """POST a Stripe event to the webhook bridge, signed with the stack's secret."""
        body = orjson.dumps(payload)
        timestamp = int(time.time())
        secret = self.env["STRIPE_WEBHOOK_SECRET"].split(",")[-1]
        digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        headers = {
            "Stripe-Signature": f"t={timestamp},v1={digest.hexdigest()}",
            "Content-Type": "application/json",
        }
        url = f"http://127.0.0.1:{self.http_port}/webhooks/stripe"
        return httpx.post(url, content=body, headers=headers, timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    def produce(self, topic: str, key: str, values: list[bytes]) -> None:
        producer = new_producer(self.bootstrap)
        for value in values:
            producer.produce(topic, key=key.encode(), value=value)
        assert producer.flush(15) == 0

    def wait_for(self, check: Callable[[], T | None], timeout: float = 30.0) -> T:
        return eventually(check, timeout=timeout)


class Positions:
    """The worker group's committed offsets and the end offsets of `measurements`, summed
    over its partitions (a read-only view: it never joins the group)."""

    def __init__(self, stack: Stack) -> None:
        self.topic = stack.topics.measurements
        self.consumer = Consumer(
            {
                "bootstrap.servers": stack.bootstrap,
                "group.id": stack.env["METERLINE_APP_ID"],
                "enable.auto.commit": False,
            }
        )
        partitions = range(stack.topics.partitions)
        self.partitions = [TopicPartition(self.topic, p) for p in partitions]

    def committed(self) -> int:
        offsets = eventually(self._committed, timeout=30, what="the group coordinator to answer")
        return sum(max(tp.offset, 0) for tp in offsets)

    def _committed(self) -> list[TopicPartition] | None:
        try:
            offsets: list[TopicPartition] = self.consumer.committed(self.partitions, timeout=10)
        except KafkaException as error:
            # a coordinator just elected or still loading (a fresh or restarted broker)
            if error.args[0].retriable() or error.args[0].code() in COORDINATOR_MOVING:
                return None
            raise
        return offsets

    def moved_past(self, before: int) -> bool:
        return self.committed() > before

    def end(self) -> int:
        return sum(self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.partitions)

    def caught_up(self) -> bool:
        """Every message on the topic now is committed by the worker group."""
        return self.committed() >= self.end()

    def close(self) -> None:
        self.consumer.close()


def now_s() -> int:
    return int(time.time())


@contextlib.contextmanager
def fresh_broker(data_dir: Path) -> Iterator[LocalKafka]:
    """A broker of its own, just started (its JVM cold, no topic); resumed and stopped after."""
    # Both ports fixed now, so that `broker_down` brings it back where clients look for it.
    kafka = LocalKafka(
        port=free_port(), controller_port=free_port(), data_dir=data_dir, cache_dir=cache_dir()
    )
    kafka.start(timeout=120)
    try:
        yield kafka
    finally:
        pid = kafka.pid()
        if pid is not None:  # a test may have paused it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        kafka.stop()


@contextlib.contextmanager
def broker_down(kafka: LocalKafka, crash: bool = False) -> Iterator[None]:
    """The broker stopped for the body, started again after it on the same port and data: a
    broker restart, as clients see one. Stopped by a controlled shutdown, or with `crash`
    SIGKILLed (it then recovers its logs on start)."""
    pid = kafka.pid()
    if crash and pid is not None:
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: kafka.pid() is None, timeout=30, what=f"broker pid {pid} to die")
    kafka.stop()
    try:
        yield
    finally:
        kafka.start(timeout=120)

"""A meterline stack for integration tests: topics, catalog, worker and HTTP edge processes,
all on the session's real Kafka broker with a unique topic prefix and app id."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from connectors.catalog_io import publish
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import free_port
from connectors.kafka.producer import new_producer
from streams.topics import Topics
from tests.support import Process, eventually, try_get_json

EXAMPLE_CATALOG = Path(__file__).resolve().parents[1] / "streams" / "catalog" / "example.yaml"
API_KEY = "test-key"


class Stack:
    def __init__(self, bootstrap: str, tmp: Path, partitions: int = 3, **env: str) -> None:
        prefix = f"s{os.urandom(4).hex()}."
        self.bootstrap = bootstrap
        self.topics = Topics(prefix=prefix, partitions=partitions)
        self.web_port = free_port()
        self.http_port = free_port()
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            METERLINE_TOPIC_PREFIX=prefix,
            METERLINE_PARTITIONS=str(partitions),
            METERLINE_APP_ID=prefix.rstrip("."),
            METERLINE_WORKER_WEB_PORT=str(self.web_port),
            METERLINE_HTTP_PORT=str(self.http_port),
            METERLINE_API_KEYS=API_KEY,
            METERLINE_ORG_ID="test-org",
            METERLINE_DATA_DIR=str(tmp),
            STRIPE_WEBHOOK_SECRET="whsec_test",
            **env,
        )
        self.worker = Process(["worker"], self.env, tmp / "worker.log")
        self.http = Process(["http"], self.env, tmp / "http.log")
        create_topics(bootstrap, self.topics.all())
        publish(bootstrap, self.topics.catalog, yaml.safe_load(EXAMPLE_CATALOG.read_text()))

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
        except AssertionError:
            raise AssertionError(self.worker.log_tail()) from None

    def start_http(self) -> None:
        self.http.start()
        try:
            eventually(
                lambda: try_get_json(f"http://127.0.0.1:{self.http_port}/healthz"), timeout=60
            )
        except AssertionError:
            raise AssertionError(self.http.log_tail()) from None

    def stop(self) -> None:
        self.http.stop()
        self.worker.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    def produce(self, topic: str, key: str, values: list[bytes]) -> None:
        producer = new_producer(self.bootstrap)
        for value in values:
            producer.produce(topic, key=key.encode(), value=value)
        assert producer.flush(15) == 0

    def wait_for(self, check: Any, timeout: float = 30.0) -> Any:
        return eventually(check, timeout=timeout)


def now_s() -> int:
    return int(time.time())

"""Alert webhooks on the real broker: every alert reaches the receiver signed, a
receiver that fails is retried until it answers, and a restarted connector does not
send again what was delivered."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.alert_webhooks import ID_HEADER, SIGNATURE_HEADER, AlertWebhooks, verify
from connectors.kafka.admin import create_topics
from connectors.kafka.producer import new_producer
from streams.settings import load_settings
from streams.topics import ALERTS, Topics
from tests.support import eventually

pytestmark = pytest.mark.integration
SECRET = "whsec_alerts"


class Receiver:
    """A webhook receiver answering `statuses` in turn (then 200), recording each request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"


@contextmanager
def connector(bootstrap: str, topics: Topics, url: str, tmp: Path) -> Iterator[AlertWebhooks]:
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=topics.prefix,
        partitions=topics.partitions,
        app_id=topics.prefix.rstrip("."),
        data_dir=tmp,
        alert_webhook_url=url,
        alert_webhook_secret=SECRET,
        alert_webhook_retry_base_s=0.05,
    )
    webhooks = AlertWebhooks(settings)
    thread = threading.Thread(target=webhooks.run, name="alert-webhooks", daemon=True)
    thread.start()
    try:
        yield webhooks
    finally:
        webhooks.stopping.set()
        thread.join(30)


def alert(account: str, n: int) -> bytes:
    return orjson.dumps({"id": f"alert_{account}_{n}", "accountCode": account, "ruleCode": "r"})


def test_alerts_are_posted_signed_retried_until_answered_and_not_again_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(prefix=f"w{uuid.uuid4().hex[:8]}.", partitions=1)
    create_topics(kafka_bootstrap, [topics.resolve(ALERTS)])
    receiver = Receiver([503, 503])
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    producer = new_producer(kafka_bootstrap)
    for n in (1, 2):
        producer.produce(topics.alerts, key=b"acme", value=alert("acme", n))
    assert producer.flush(15) == 0
    try:
        with connector(kafka_bootstrap, topics, receiver.url, tmp_path) as webhooks:
            eventually(lambda: webhooks.outcomes.get("delivered") == 2, timeout=30)
            assert webhooks.outcomes["retry"] == 2
        bodies = [orjson.loads(body) for _, body in receiver.requests]
        assert [b["id"] for b in bodies] == ["alert_acme_1"] * 3 + ["alert_acme_2"]
        now = int(time.time())
        for headers, body in receiver.requests:
            assert verify(SECRET, headers[SIGNATURE_HEADER], body, now)
            assert not verify("another secret", headers[SIGNATURE_HEADER], body, now)
            assert headers[ID_HEADER] == orjson.loads(body)["id"]

        producer.produce(topics.alerts, key=b"acme", value=alert("acme", 3))
        assert producer.flush(15) == 0
        with connector(kafka_bootstrap, topics, receiver.url, tmp_path) as webhooks:
            eventually(lambda: webhooks.outcomes.get("delivered") == 1, timeout=30)
        assert [orjson.loads(body)["id"] for _, body in receiver.requests[4:]] == ["alert_acme_3"]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()

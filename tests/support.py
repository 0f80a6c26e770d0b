"""Test helpers: processes, JSON over HTTP, and polling with a deadline instead of
sleeping (`eventually`, the project's one poll loop, `connectors.waiting`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message

from connectors.kafka.consumer import read_to_end
from connectors.waiting import eventually
from streams.sources import source_of

__all__ = ["Process", "eventually", "get_json", "records_of", "try_get_json", "value_of"]


class Process:
    """A meterline process (`python -m connectors.cli ...`) run by a test, with its output."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connectors.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def try_get_json(url: str) -> Any:
    try:
        return get_json(url)
    except (OSError, ValueError):
        return None


def value_of(message: Message) -> bytes:
    """The value of a message that must carry one: a tombstone fails the test, naming where."""
    value = message.value()
    assert value is not None, f"tombstone at {source_of(message)}"
    return value


def records_of(bootstrap: str, topic: str, key: str) -> list[Any]:
    """Every record with `key` on `topic` (JSON), read up to the end of each partition."""
    return [
        orjson.loads(value_of(message))
        for message in read_to_end(bootstrap, topic)
        if message.key() == key.encode()
    ]

"""The dev stack: a local broker, topics, and every meterline process as a subprocess.

Children run in their own process groups and die with their parent (PR_SET_PDEATHSIG),
their output is streamed with a prefix, and `stop()` terminates every group. Without
STRIPE_API_KEY (and STRIPE_API_BASE) the Stripe simulator runs too and the sink writes
to it. Once everything is up, the health of every process is polled: a process that
turns unhealthy (a stalled worker) or recovers is reported with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors.environment import process_env, setting_variables
from connectors.kafka.admin import create_topics
from connectors.kafka.broker import LocalKafka, free_port, port_is_free
from connectors.stripe_sim.config import SimConfig
from connectors.stripe_sink.stripe_api import SIMULATOR_KEY
from connectors.waiting import eventually
from streams.kafka_access import Kafka
from streams.settings import Settings
from streams.worker_topics import worker_topics

PR_SET_PDEATHSIG = 1
COLOURS = {"worker": "cyan", "http": "green", "stripe-sink": "magenta", "stripe-sim": "yellow"}
DEV_WEBHOOK_SECRET = "whsec_meterline_dev"
HEALTH_EVERY_S = 2.0


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)  # this child's own settings
    process: subprocess.Popen[bytes] | None = None
    healthy: bool = False
    problem: str | None = None  # why it is not healthy, once it was

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


@dataclass
class DevStack:
    settings: Settings
    console: Console = field(default_factory=Console)
    children: list[Child] = field(default_factory=list)
    broker: LocalKafka | None = None
    broker_port: int = 9092
    extra_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False

    def bootstrap(self) -> str:
        return self.broker.bootstrap if self.broker else self.settings.kafka_bootstrap_servers

    def kafka(self) -> Kafka:
        """The local broker (PLAINTEXT), or the configured cluster with its security."""
        return self.broker.bootstrap if self.broker else self.settings.kafka

    def start_kafka(self, use_existing: bool) -> None:
        if use_existing:
            self.console.print(
                f"using the Kafka cluster at {self.settings.kafka_bootstrap_servers}"
            )
            return
        self.broker = LocalKafka(
            port=self.broker_port,
            data_dir=self.settings.data_dir / f"kafka-{self.broker_port}",
            version=self.settings.kafka_version,
            cache_dir=self.settings.cache_dir,
        )
        started = time.monotonic()
        with self.console.status(f"starting Apache Kafka {self.settings.kafka_version}…"):
            self.broker.start()
        self.console.print(
            f"Kafka {self.settings.kafka_version} up at {self.broker.bootstrap} "
            f"in {time.monotonic() - started:.1f}s"
        )

    def create_topics(self) -> None:
        """Every topic the processes need (the worker's changelogs too), leaders known."""
        topics = worker_topics(self.settings)
        for outcome in create_topics(self.kafka(), topics, self.settings.replication_factor):
            if outcome.problem:
                self.console.print(f"[red]topic {outcome.name} {outcome.problem}[/]")

    def add_stripe_simulator(self, port: int | None = None) -> str:
        """The Stripe simulator as a child, sending signed webhooks to the HTTP edge; the
        sink (every child) is pointed at it. Returns its base URL."""
        if port is None:
            default = SimConfig().port
            port = default if port_is_free(default) else free_port()
        url = f"http://127.0.0.1:{port}"
        webhook = f"http://127.0.0.1:{self.settings.http_port}/webhooks/stripe"
        self.add(
            "stripe-sim",
            ["stripe-sim", "--port", str(port), "--webhook-url", webhook],
            f"{url}/_sim/stats",
        )
        simulated = setting_variables(stripe_api_base=url, stripe_api_key=SIMULATOR_KEY)
        if not self.settings.stripe_webhook_secrets:
            simulated |= setting_variables(stripe_webhook_secrets=DEV_WEBHOOK_SECRET)
        self.extra_env = simulated | self.extra_env  # what is set already stays
        return url

    def add(
        self, name: str, command: list[str], health_url: str, env: dict[str, str] | None = None
    ) -> Child:
        argv = [sys.executable, "-m", "connectors.cli", *command]
        child = Child(name, argv, health_url, dict(env or {}))
        self.children.append(child)
        return child

    def add_defaults(self) -> None:
        """The worker, the HTTP edge and the sink; the simulator when Stripe is not set."""
        s = self.settings
        simulated = any(child.name == "stripe-sim" for child in self.children)
        if s.stripe_api_key is None and not s.stripe_api_base and not simulated:
            url = self.add_stripe_simulator()
            self.console.print(f"STRIPE_API_KEY unset: the Stripe simulator runs at {url}")
        self.add("worker", ["worker"], f"http://127.0.0.1:{s.worker_web_port}/healthz")
        self.add("http", ["http"], f"http://127.0.0.1:{s.http_port}/healthz")
        self.add("stripe-sink", ["stripe-sink"], f"http://127.0.0.1:{s.sink_port}/healthz")

    def child_env(self) -> dict[str, str]:
        env = process_env(kafka_bootstrap_servers=self.bootstrap())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def spawn(self) -> None:
        for child in self.children:
            self.start(child)

    def start(self, child: Child) -> None:
        """Start (or start again) one child, its output pumped to its log. It dies with
        the thread that calls this (PR_SET_PDEATHSIG): call it from one that lives on."""
        child.healthy, child.problem = False, None
        child.process = subprocess.Popen(
            child.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.child_env() | child.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert child.process.stdout is not None
        threading.Thread(
            target=self._pump, args=(child.name, child.process.stdout), daemon=True
        ).start()
        if not self.quiet:
            self.console.print(f"started {child.name} (pid {child.process.pid})")

    def kill(self, child: Child) -> None:
        """SIGKILL the child's process group (no clean stop) and reap it."""
        if child.process is None or child.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait()
        child.healthy = False

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        """Every line goes to `<data_dir>/logs/<name>.log`, and to the console unless quiet."""
        colour = COLOURS.get(name, "white")
        width = max(len(c.name) for c in self.children)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The pipe is closed at its end: a child started again gets a new one.
        with stream, open(self.log_dir / f"{name}.log", "ab") as log_file:
            for raw in iter(stream.readline, b""):
                log_file.write(raw)
                log_file.flush()
                if not self.quiet:
                    self._echo(name, colour, width, raw)

    def _echo(self, name: str, colour: str, width: int, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        self.console.print(
            f"[{colour}]{name:>{width}} |[/] {escape(line)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        def every_child_healthy() -> bool:
            for child in self.children:
                if child.healthy:
                    continue
                assert child.process is not None
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
                child.healthy = _get_ok(child.health_url)
            return all(child.healthy for child in self.children)

        try:
            eventually(every_child_healthy, timeout, 0.3, "every process to be healthy")
        except TimeoutError:
            pending = [c for c in self.children if not c.healthy]
            raise RuntimeError(
                "not healthy in time: " + ", ".join(f"{c.name} ({c.health_url})" for c in pending)
            ) from None

    def watch_health(self, stop: threading.Event) -> threading.Thread:
        """Poll every child's health until `stop`; print each change with its reason."""

        def watch() -> None:
            while not stop.wait(HEALTH_EVERY_S):
                for child in self.children:
                    self._check(child)

        thread = threading.Thread(target=watch, name="health", daemon=True)
        thread.start()
        return thread

    def _check(self, child: Child) -> None:
        if child.process is None or child.process.poll() is not None:
            return
        healthy, reason = probe(child.health_url)
        if healthy and not child.healthy:
            self.console.print(f"[green]{child.name} is healthy again[/]")
        elif not healthy and child.healthy:
            self.console.print(f"[red bold]{child.name} is unhealthy:[/] {escape(reason)}")
        child.healthy, child.problem = healthy, None if healthy else reason

    def problems(self) -> list[str]:
        """Every child that exited or is unhealthy, with the reason."""
        out = []
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                out.append(f"{child.name} exited ({child.process.returncode})")
            elif child.problem:
                out.append(f"{child.name} is unhealthy: {child.problem}")
        return out

    def status_table(self) -> Table:
        table = Table(title="meterline dev stack")
        for column in ("process", "pid", "health", "endpoint"):
            table.add_column(column)
        if self.broker:
            table.add_row("kafka", str(self.broker.pid()), "up", self.broker.bootstrap)
        for child in self.children:
            alive = child.process is not None and child.process.poll() is None
            state = "healthy" if child.healthy and alive else ("unhealthy" if alive else "exited")
            table.add_row(child.name, str(child.pid), state, child.health_url)
        return table

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child's process group, SIGKILL what is left, then the broker."""
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        for child in self.children:
            # Grandchildren (if any) share the group: make sure none is left behind.
            if child.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
        if self.broker:
            self.broker.stop()

    def run_until_interrupted(self, on_ready: Callable[[], None] | None = None) -> int:
        stop = threading.Event()

        def handle(signum: int, frame: object) -> None:
            stop.set()

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.spawn()
            self.wait_healthy()
            self.console.print(self.status_table())
            self.watch_health(stop)
            if on_ready:
                on_ready()
            self.console.print("dev stack ready; Ctrl-C stops every process")
            while not stop.is_set():
                for child in self.children:
                    assert child.process is not None
                    if child.process.poll() is not None:
                        self.console.print(
                            f"[red]{child.name} exited ({child.process.returncode})[/]"
                        )
                        return 1
                stop.wait(0.5)
            return 0
        finally:
            self.console.print("stopping the dev stack…")
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.console.print("all processes stopped")


def _get_ok(url: str) -> bool:
    return probe(url)[0]


def probe(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy?, why not) from a health URL: 200 is healthy; a worker's 503 names its
    stalls (`streams.watchdog`)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200), ""
    except urllib.error.HTTPError as exc:
        return False, _reason(exc.code, exc.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"no answer from {url} ({exc})"


def _reason(code: int, body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return f"HTTP {code}"
    stalls = document.get("stalls") if isinstance(document, dict) else None
    if stalls:
        return "; ".join(f"{s['what']} for {s['seconds']:.0f}s" for s in stalls)
    status = document.get("status") if isinstance(document, dict) else None
    return f"HTTP {code}" + (f" ({status})" if status else "")

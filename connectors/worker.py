"""The worker process around the faust app: its topics ready before it subscribes, and
a stop that cannot hang.

1. Before faust starts, every topic the worker needs (`streams.worker_topics`) exists
   and each partition has a leader: missing ones are named and created here. faust
   would create its changelog topics itself, too late for its own producer (see there).
2. faust runs the app.
3. A stop (SIGTERM, Ctrl-C, or the app ending) that has not finished within
   `worker_stop_timeout_s` ends the process at once, saying what was stuck. Nothing is
   lost: offsets of unfinished events were not committed, they are processed again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import faust

from connectors.kafka.admin import TopicOutcome, create_topics
from streams.context import MeterlineApp
from streams.settings import Settings
from streams.topics import ResolvedTopic
from streams.watchdog import describe
from streams.worker_topics import app_topics

log = logging.getLogger(__name__)
EXIT_STOP_TIMEOUT = 3
TOPICS_TIMEOUT_S = 60.0


class WorkerTopicsError(RuntimeError):
    """Topics the worker cannot run on (a partition count that breaks co-partitioning)."""


def prepare_topics(app: MeterlineApp, settings: Settings) -> list[TopicOutcome]:
    """Create the worker's missing topics and wait for every partition's leader."""
    topics = app_topics(app, app.context.topics)
    outcomes = create_topics(settings.kafka, topics, settings.replication_factor, TOPICS_TIMEOUT_S)
    check_outcomes(topics, outcomes)
    return outcomes


def check_outcomes(topics: list[ResolvedTopic], outcomes: list[TopicOutcome]) -> None:
    """Log what was missing and what differs; raise on a partition count that differs."""
    created = [o.name for o in outcomes if o.created]
    if created:
        log.warning(
            "%d topics were missing and were created now: %s. Create every topic before "
            "workers start: `meterline topics create`",
            len(created),
            ", ".join(created),
        )
    wanted = {topic.name: topic.partitions for topic in topics}
    fatal = []
    for outcome in outcomes:
        if outcome.problem is None:
            continue
        log.error("topic %s %s", outcome.name, outcome.problem)
        if outcome.partitions != wanted[outcome.name]:
            fatal.append(f"{outcome.name} {outcome.problem}")
    if fatal:
        raise WorkerTopicsError("the worker cannot run on these topics:\n" + "\n".join(fatal))


class StopDeadline:
    """Ends the process if a stop has not finished by `timeout` seconds after it began."""

    def __init__(self, timeout: float, why: Callable[[], str], exit: Callable[[int], Any]) -> None:
        self.timeout = timeout
        self.why = why
        self.exit = exit
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.timeout, self._expired)
            self._timer.daemon = True
            self._timer.start()

    def _expired(self) -> None:
        try:
            stuck = self.why()
        except Exception as exc:  # the loop thread may be changing what we read
            stuck = f"unknown ({exc!r})"
        log.critical(
            "the worker did not stop within %.0fs (stuck: %s); exiting now. Events it had "
            "not finished are processed again at the next start.",
            self.timeout,
            stuck or "nothing reported",
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.exit(EXIT_STOP_TIMEOUT)


class Worker(faust.Worker):
    """faust's Worker with a bounded stop."""

    def __init__(self, app: MeterlineApp, *, deadline: StopDeadline, **options: Any) -> None:
        super().__init__(app, **options)
        self.deadline = deadline

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self.deadline.arm()
        super()._schedule_shutdown(signal)

    def on_worker_shutdown(self) -> None:
        self.deadline.arm()  # the app ended by itself (a crash): its stop is bounded too
        super().on_worker_shutdown()


def run(app: MeterlineApp, settings: Settings) -> None:
    """Run the worker until it is stopped (never returns)."""
    watchdog = app.watchdog

    def stuck() -> str:
        return describe(watchdog.stalls(longer_than=0.0)) if watchdog is not None else ""

    deadline = StopDeadline(settings.worker_stop_timeout_s, stuck, os._exit)
    worker = Worker(app, deadline=deadline, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()

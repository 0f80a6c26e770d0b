"""Is the worker making progress? Wedge detection for `/healthz` and `/metrics`.

A worker can stay alive and answer HTTP while it processes nothing: an agent blocked
on a send Kafka never acknowledges, an offset commit waiting on a producer flush that
never ends. faust reports none of that. The watchdog follows faust's sensor events and
calls the worker stalled when, for longer than a bound:

- an agent was handed an event of `topic[partition]` and has not acknowledged it
  (no progress while its input has lag), or its input has lag that is not being
  delivered to it (`stall_after_s`);
- the committed offset of an agent's input partition does not advance while messages
  follow it and the agent is not holding the one there (`stall_after_s`): a record
  fetched and never handed to the agent stops the partition's commits for good
  (`streams.commits`), though the agent goes on with the later ones;
- a message sent to Kafka is not acknowledged (`send_after_s`);
- an offset commit is not finished (`send_after_s`: it waits for the producer);
- a rebalance is not finished (`stall_after_s`).

`Watchdog` is the bookkeeping (plain, clock injected, tested on its own);
`WatchdogSensor` feeds it from faust; `install_watchdog` adds both and the `/metrics` page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.sensors import Sensor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from streams.sources import Source

if TYPE_CHECKING:
    from collections import Counter

    import faust
    from faust.web import Request, Response

    from streams.settings import Settings

Clock = Callable[[], float]
# aiohttp wants the charset apart from the content type (it adds utf-8 itself).
CONTENT_TYPE = CONTENT_TYPE_LATEST.split("; charset=")[0]
# A send faust never reports back on (one that raised before reaching the producer) is
# forgotten after this long: aiokafka itself gives up on a send well before it.
FORGET_SEND_AFTER_S = 1_500.0


@dataclass(frozen=True)
class Stall:
    kind: str  # agent | input | committed | send | commit | rebalance
    what: str
    seconds: float
    topic: str | None = None
    partition: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "seconds": round(self.seconds, 1)}


@dataclass
class _Partition:
    delivered: int = -1  # highest offset handed to the agent
    acked: int = -1  # highest offset the agent acknowledged
    waiting: int = 0  # the first offset not acknowledged yet
    since: float = 0.0  # last acknowledgement, or when work arrived at an idle agent

    @property
    def pending(self) -> bool:
        return self.delivered > self.acked


@dataclass
class _Committed:
    offset: int  # the group's committed offset: the next message it would read
    since: float  # when it last advanced, or last had no message after it


@dataclass(eq=False)
class _Send:
    topic: str
    started: float


@dataclass
class Watchdog:
    """Progress of agents, sends, commits and rebalances; `stalls()` says what is stuck."""

    stall_after_s: float
    send_after_s: float
    clock: Clock = time.monotonic
    agents: dict[str, str] = field(default_factory=dict)  # input topic -> agent name
    highwater: Callable[[str, int], int | None] = lambda topic, partition: None
    _partitions: dict[tuple[str, int], _Partition] = field(default_factory=dict)
    _committed: dict[tuple[str, int], _Committed] = field(default_factory=dict)
    _sends: set[_Send] = field(default_factory=set)
    _commit_started: float | None = None
    _rebalance_started: float | None = None

    # events ---------------------------------------------------------------------------

    def delivered(self, topic: str, partition: int, offset: int) -> None:
        if topic not in self.agents:
            return  # changelogs and other non-agent topics are never acknowledged
        state = self._partitions.setdefault((topic, partition), _Partition(since=self.clock()))
        if not state.pending:
            state.since = self.clock()
            state.waiting = offset
        state.delivered = max(state.delivered, offset)

    def acked(self, topic: str, partition: int, offset: int) -> None:
        if topic not in self.agents:
            return
        state = self._partitions.setdefault((topic, partition), _Partition())
        state.acked = max(state.acked, offset)
        state.delivered = max(state.delivered, state.acked)
        state.waiting = state.acked + 1
        state.since = self.clock()

    def committed(self, topic: str, partition: int, offset: int) -> None:
        """The group's committed offset of a partition, seen after each commit round
        (faust runs one every commit interval, whether or not it has offsets to commit).
        A rebalance, table recovery included, stops the clock: nothing is delivered then."""
        if topic not in self.agents or self._rebalance_started is not None:
            return
        end = self.highwater(topic, partition)
        known = self._committed.get((topic, partition))
        if known is None or known.offset != offset or end is None or end <= offset:
            self._committed[(topic, partition)] = _Committed(offset, self.clock())

    def send_started(self, topic: str) -> _Send:
        send = _Send(topic, self.clock())
        self._sends.add(send)
        return send

    def send_finished(self, send: Any) -> None:
        self._sends.discard(send)

    def commit_started(self) -> None:
        self._commit_started = self.clock()

    def commit_finished(self) -> None:
        self._commit_started = None

    def rebalance_started(self) -> None:
        self._rebalance_started = self.clock()
        self._partitions.clear()  # offsets start again from the new assignment
        self._committed.clear()

    def rebalance_finished(self) -> None:
        self._rebalance_started = None
        self._committed.clear()  # faust ends a rebalance when its tables are recovered

    # verdict --------------------------------------------------------------------------

    def stalls(self, longer_than: float | None = None) -> list[Stall]:
        """What has been stuck past its bound (or past `longer_than` seconds, if given)."""
        now = self.clock()
        stall_s = self.stall_after_s if longer_than is None else longer_than
        send_s = self.send_after_s if longer_than is None else longer_than
        out = list(self._agent_stalls(now, stall_s))
        out.extend(self._commit_stalls(now, stall_s))
        oldest = self.oldest_send(now)
        if oldest is not None and now - oldest.started > send_s:
            count = sum(1 for s in self._sends if now - s.started > send_s)
            what = f"{count} sends not acknowledged by Kafka, the oldest to {oldest.topic}"
            out.append(Stall("send", what, now - oldest.started, topic=oldest.topic))
        if self._commit_started is not None and now - self._commit_started > send_s:
            what = "offset commit not finished (it waits for every pending send)"
            out.append(Stall("commit", what, now - self._commit_started))
        if self._rebalance_started is not None and now - self._rebalance_started > stall_s:
            what = "consumer group rebalance not finished"
            out.append(Stall("rebalance", what, now - self._rebalance_started))
        return out

    def oldest_send(self, now: float | None = None) -> _Send | None:
        now = self.clock() if now is None else now
        for send in [s for s in self._sends if now - s.started > FORGET_SEND_AFTER_S]:
            self._sends.discard(send)
        return min(self._sends, key=lambda s: s.started, default=None)

    def sends_pending(self) -> int:
        return len(self._sends)

    def commit_pending_s(self) -> float:
        return 0.0 if self._commit_started is None else self.clock() - self._commit_started

    def lag(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, messages not yet acknowledged) where the end is known."""
        for (topic, partition), state in sorted(self._partitions.items()):
            end = self.highwater(topic, partition)
            if end is not None and state.acked >= 0:
                yield topic, partition, max(end - state.acked - 1, 0)

    def _agent_stalls(self, now: float, bound: float) -> Iterator[Stall]:
        lags = {(topic, partition): lag for topic, partition, lag in self.lag()}
        for (topic, partition), state in sorted(self._partitions.items()):
            seconds = now - state.since
            if seconds <= bound:
                continue
            agent = self.agents.get(topic, "?")
            if state.pending:
                what = (
                    f"{agent} agent has not acknowledged {Source(topic, partition, state.waiting)}"
                )
                yield Stall("agent", what, seconds, topic, partition)
            elif lags.get((topic, partition), 0) > 0:
                what = (
                    f"{topic}[{partition}] has {lags[(topic, partition)]} messages after "
                    f"@{state.acked} that are not reaching the {agent} agent"
                )
                yield Stall("input", what, seconds, topic, partition)

    def _commit_stalls(self, now: float, bound: float) -> Iterator[Stall]:
        for (topic, partition), committed in sorted(self._committed.items()):
            seconds = now - committed.since
            end = self.highwater(topic, partition)
            if seconds <= bound or end is None or end <= committed.offset:
                continue
            state = self._partitions.get((topic, partition))
            if state is not None and state.pending and state.waiting <= committed.offset:
                continue  # the agent holds the message there: an "agent" stall
            agent = self.agents.get(topic, "?")
            what = (
                f"commits stopped at {Source(topic, partition, committed.offset)} with "
                f"{end - committed.offset} messages after it, and the {agent} agent "
                "does not hold the one there"
            )
            yield Stall("committed", what, seconds, topic, partition)


class WatchdogSensor(Sensor):
    """Feeds faust's sensor events to a Watchdog."""

    def __init__(self, watchdog: Watchdog, app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.watchdog = watchdog
        self.app = app

    async def on_start(self) -> None:
        # Started with the app, after every agent was registered.
        self.watchdog.agents.update(_agent_inputs(self.app))

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.watchdog.delivered(tp.topic, tp.partition, offset)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self.watchdog.acked(tp.topic, tp.partition, offset)

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        return self.watchdog.send_started(topic)

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self.watchdog.send_finished(state)

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.watchdog.send_finished(state)

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.watchdog.commit_started()

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        self.watchdog.commit_finished()
        for tp, offset in _committed_offsets(consumer):
            self.watchdog.committed(tp.topic, tp.partition, offset)

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        self.watchdog.rebalance_started()
        return {}

    def on_rebalance_end(self, app: Any, state: Any) -> None:
        self.watchdog.rebalance_finished()


def describe(stalls: Iterable[Stall]) -> str:
    return "; ".join(f"{stall.what} for {stall.seconds:.0f}s" for stall in stalls)


class _Collector(Collector):
    """Prometheus metrics of the watchdog and the worker's counters, read at scrape time."""

    def __init__(self, watchdog: Watchdog, stats: Mapping[str, int]) -> None:
        self.watchdog = watchdog
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        watchdog = self.watchdog
        stalls = watchdog.stalls()
        healthy = GaugeMetricFamily(
            "meterline_worker_healthy", "1 while no agent, send, commit or rebalance is stalled"
        )
        healthy.add_metric([], 0 if stalls else 1)
        yield healthy
        stalled = GaugeMetricFamily(
            "meterline_worker_stalled_seconds",
            "How long each stalled thing has been stuck",
            labels=["kind", "topic", "partition"],
        )
        for stall in stalls:
            where = [stall.topic or "", "" if stall.partition is None else str(stall.partition)]
            stalled.add_metric([stall.kind, *where], stall.seconds)
        yield stalled
        pending = GaugeMetricFamily(
            "meterline_worker_sends_pending", "Messages sent and not yet acknowledged by Kafka"
        )
        pending.add_metric([], watchdog.sends_pending())
        yield pending
        oldest = watchdog.oldest_send()
        age = GaugeMetricFamily(
            "meterline_worker_oldest_send_seconds", "Age of the oldest unacknowledged send"
        )
        age.add_metric([], 0.0 if oldest is None else watchdog.clock() - oldest.started)
        yield age
        commit = GaugeMetricFamily(
            "meterline_worker_commit_pending_seconds", "How long the running offset commit has run"
        )
        commit.add_metric([], watchdog.commit_pending_s())
        yield commit
        lag = GaugeMetricFamily(
            "meterline_worker_input_lag",
            "Messages of an agent's input partition not yet acknowledged",
            labels=["topic", "partition"],
        )
        for topic, partition, messages in watchdog.lag():
            lag.add_metric([topic, str(partition)], messages)
        yield lag
        events = CounterMetricFamily(
            "meterline_worker_events", "Events handled by the agents, by outcome", labels=["name"]
        )
        for name, count in sorted(self.stats.items()):
            events.add_metric([name], count)
        yield events


def install_watchdog(app: faust.App, settings: Settings, stats: Counter[str]) -> Watchdog:
    """Add the watchdog sensor and `/metrics` (the watchdog's gauges and the worker's
    `stats` counters) to a worker app, before it starts."""
    from faust.web import View

    watchdog = Watchdog(
        stall_after_s=settings.worker_stall_timeout_s,
        send_after_s=settings.worker_send_timeout_s,
        highwater=lambda topic, partition: _highwater(app, topic, partition),
    )
    app.sensors.add(WatchdogSensor(watchdog, app))
    registry = CollectorRegistry()
    registry.register(_Collector(watchdog, stats))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE)

    del Metrics
    return watchdog


def _agent_inputs(app: faust.App) -> dict[str, str]:
    """Input topic name -> agent name, for every agent of the app."""
    out = {}
    for agent in app.agents.values():
        for topic in getattr(agent.channel, "topics", ()):
            out[topic] = agent.name.rsplit(".", 1)[-1]
    return out


def _committed_offsets(consumer: Any) -> list[tuple[Any, int]]:
    """(partition, committed offset) of the consumer's assigned partitions where one is
    known (faust keeps them in `_committed_offset`, from its seek at assignment and its
    own commits; it keeps none for a partition whose committed offset is 0)."""
    assigned = consumer.assignment()
    known = getattr(consumer, "_committed_offset", {})
    return [
        (tp, offset) for tp, offset in list(known.items()) if offset is not None and tp in assigned
    ]


def _highwater(app: faust.App, topic: str, partition: int) -> int | None:
    from faust.types import TP

    try:
        end = app.consumer.highwater(TP(topic, partition))
    except Exception:  # not started, not assigned: unknown
        return None
    return int(end) if end is not None else None

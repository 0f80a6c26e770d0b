"""The one poll loop (`connectors.waiting.eventually`): it returns what the check found,
and a wait that runs out says what it waited for and what it saw last."""

from __future__ import annotations

import itertools

import pytest

from connectors.waiting import eventually


def test_eventually_returns_the_first_truthy_value_the_check_gives() -> None:
    answers = iter([None, 0, "", {"catalogItems": 3}])
    assert eventually(lambda: next(answers), timeout=5, interval=0) == {"catalogItems": 3}


def test_a_wait_that_runs_out_names_what_it_waited_for_and_the_last_value() -> None:
    calls = itertools.count(1)
    with pytest.raises(TimeoutError) as failure:
        eventually(lambda: next(calls) < 0, timeout=0.05, interval=0.01, what="the worker")
    assert str(failure.value) == "timed out after 0.05s waiting for the worker (last: False)"


def test_the_check_runs_at_least_once_even_without_time_to_wait() -> None:
    assert eventually(lambda: "ready", timeout=0) == "ready"


def test_an_error_of_the_check_ends_the_wait_at_once() -> None:
    def exited() -> bool:
        raise RuntimeError("the broker exited with 1")

    with pytest.raises(RuntimeError, match="exited with 1"):
        eventually(exited, timeout=60)

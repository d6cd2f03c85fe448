"""Circuit breaker: closed -> open after N consecutive failures -> half-open probe."""

import threading

import pytest

from f1backfill.errors import Cancelled
from f1backfill.worker.breaker import BreakerState, CircuitBreaker
from tests.support.clock import FakeClock


def test_opens_after_threshold_consecutive_failures_only():
    breaker = CircuitBreaker(3, 60, clock=FakeClock(0.0))
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_half_open_after_reset_lets_exactly_one_probe_through():
    clock = FakeClock(0.0)
    changes = []
    breaker = CircuitBreaker(1, 60, clock=clock, on_change=changes.append)
    breaker.record_failure()
    clock.now += 60
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_request()  # the probe
    second = threading.Event()
    thread = threading.Thread(target=lambda: (breaker.before_request(), second.set()))
    thread.start()
    assert not second.wait(0.3)  # a second caller waits for the probe's verdict
    breaker.record_success()
    assert second.wait(2)
    thread.join()
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_opens_it_again_for_another_period():
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(5, 60, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 60
    breaker.before_request()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 59
    assert breaker.state is BreakerState.OPEN
    clock.now += 1
    assert breaker.state is BreakerState.HALF_OPEN


def test_waiting_while_open_can_be_cancelled():
    breaker = CircuitBreaker(1, 3600, clock=FakeClock(0.0))
    breaker.record_failure()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        breaker.before_request(cancel)

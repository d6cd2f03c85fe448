"""The operator's metrics: one phase series per backfill, ghosts removed."""

from prometheus_client import generate_latest

from f1backfill.api import Phase
from f1backfill.controller.metrics import OperatorMetrics


def phase_lines(metrics: OperatorMetrics) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith("f1_backfill_phase{")]


def test_a_backfill_has_one_phase_series_that_follows_its_phase():
    metrics = OperatorMetrics()
    key = ("fleet", "aurora", "28191ed2-7cc7-43b2-a48a-c13674cfbc1c")
    metrics.record(key, Phase.QUEUED, 2, 0.0)
    metrics.record(key, Phase.RUNNING, None, 40.0)
    (line,) = phase_lines(metrics)
    assert 'phase="Running"' in line and line.endswith(" 1.0")


def test_deleted_backfills_leave_no_series_behind():
    metrics = OperatorMetrics()
    gone = ("fleet", "gone", "0b8f5d1e-8f0e-4c1a-9c53-2f1d8a6b9e10")
    kept = ("fleet", "kept", "6a0c3b1e-1f0e-4c1a-9c53-2f1d8a6b9e10")
    metrics.record(gone, Phase.SUCCEEDED, None, 100.0)
    metrics.record(kept, Phase.QUEUED, 1, 0.0)
    metrics.forget_missing({kept})
    text = generate_latest(metrics.registry).decode()
    assert 'name="gone"' not in text and 'name="kept"' in text

"""The operator's per-backfill metrics: one phase series per backfill, sparse queue
positions, ghosts removed."""

from prometheus_client import generate_latest

from f1backfill.api import Phase
from f1backfill.controller.metrics import BackfillSample, OperatorMetrics

AURORA = "28191ed2-7cc7-43b2-a48a-c13674cfbc1c"


def lines(metrics: OperatorMetrics, name: str) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith(name + "{")]


def sample(name: str, phase: Phase, position: int | None = None, percent: float = 0.0,
           yacht: str = AURORA) -> BackfillSample:
    return BackfillSample("fleet", name, yacht, phase, position, percent)


def test_a_backfill_has_one_phase_series_that_follows_its_phase():
    metrics = OperatorMetrics()
    metrics.record_backfills([sample("aurora", Phase.QUEUED, 2)])
    metrics.record_backfills([sample("aurora", Phase.RUNNING, None, 40.0)])
    (line,) = lines(metrics, "f1_backfill_phase")
    assert 'phase="Running"' in line and line.endswith(" 1.0")
    (progress,) = lines(metrics, "f1_backfill_progress_percent")
    assert f'yacht_id="{AURORA}"' in progress and progress.endswith(" 40.0")


def test_only_waiting_backfills_have_a_queue_position_series():
    metrics = OperatorMetrics()
    metrics.record_backfills([sample("waiting", Phase.QUEUED, 3),
                              sample("running", Phase.RUNNING, None, 10.0)])
    (line,) = lines(metrics, "f1_backfill_queue_position")
    assert 'name="waiting"' in line and line.endswith(" 3.0")


def test_deleted_backfills_leave_no_series_behind():
    metrics = OperatorMetrics()
    metrics.record_backfills([sample("gone", Phase.SUCCEEDED, None, 100.0),
                              sample("kept", Phase.QUEUED, 1)])
    metrics.record_backfills([sample("kept", Phase.QUEUED, 1)])
    text = generate_latest(metrics.registry).decode()
    assert 'name="gone"' not in text and 'name="kept"' in text


def test_a_per_yacht_gauge_has_a_series_only_while_its_value_is_not_zero():
    metrics = OperatorMetrics()
    metrics.set_sparse(metrics.dlq, 0, AURORA)
    assert lines(metrics, "f1_dlq_unresolved") == []
    metrics.set_sparse(metrics.dlq, 150, AURORA)
    (line,) = lines(metrics, "f1_dlq_unresolved")
    assert f'yacht_id="{AURORA}"' in line and line.endswith(" 150.0")
    metrics.set_sparse(metrics.dlq, 0, AURORA)
    assert lines(metrics, "f1_dlq_unresolved") == []

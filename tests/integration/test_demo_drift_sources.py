"""The demo creates the drift source tables the samples name, so the operator's drift
checks of the full sample run instead of warning that the tables do not exist."""

from __future__ import annotations

import logging

from f1backfill.api.spec import BackfillSpec
from f1backfill.db.figures import DriftProbe
from f1backfill.db.fleet import FleetDatabase
from f1sandbox.demo import create_drift_sources, load_samples


def _probes(samples) -> list[DriftProbe]:
    probes = []
    for doc in samples:
        spec = BackfillSpec.from_dict(doc["spec"])
        probes += [DriftProbe(yacht_id=spec.yacht_id, object_type=s.object_type, table=s.table,
                              id_column=s.id_column, updated_column=s.updated_at_column,
                              tolerance_minutes=spec.drift.tolerance_minutes)
                   for s in spec.drift.sources]
    return probes


def test_the_samples_drift_checks_run_without_warnings(db, database_url, caplog):
    samples = load_samples()
    # The full sample declares sources beyond the migrations' pms_work_orders.
    assert {"pms_equipment", "crew_certificates"} <= {p.table for p in _probes(samples)}
    assert sorted(create_drift_sources(db, samples)) == ["crew_certificates", "pms_equipment"]
    assert create_drift_sources(db, samples) == []  # idempotent
    fleet = FleetDatabase(database_url)
    try:
        with caplog.at_level(logging.WARNING, logger="f1backfill.db.fleet"):
            stale, requeued = fleet.drift(_probes(samples))
    finally:
        fleet.close()
    assert not [r for r in caplog.records if "drift check" in r.getMessage()]
    assert stale == {} and requeued == {}


def test_the_samples_keep_their_drift_sources_for_users():
    # The demo creates the tables; it does not strip the sources from its copy.
    full = next(d for d in load_samples() if d["metadata"]["name"] == "lady-marina")
    assert [s["table"] for s in full["spec"]["drift"]["sources"]] == \
        ["pms_work_orders", "pms_equipment", "crew_certificates"]

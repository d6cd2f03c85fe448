"""`f1sandbox seed`: demo rows for the yachts of YachtBackfill manifests, once."""

from __future__ import annotations

from pathlib import Path

from f1sandbox.cli import main
from tests.support.fleet import status_counts

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def test_seed_loads_each_sample_yacht_once(db, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["seed", "--samples", str(SAMPLES)]) == 0
    assert main(["seed", "--samples", str(SAMPLES)]) == 0  # idempotent
    out = capsys.readouterr().out
    assert "seeded 4 of 4 yachts" in out and "seeded 0 of 4 yachts" in out
    with db.cursor() as cur:
        cur.execute("SELECT id, tier FROM yachts ORDER BY name")
        yachts = cur.fetchall()
    assert len(yachts) == 4
    for yacht_id, _ in yachts:
        counts = status_counts(db, yacht_id)
        assert counts["pending"] >= 700


def test_seed_loads_the_samples_packaged_with_the_sandbox_by_default(db, database_url,
                                                                    monkeypatch, capsys):
    # What the chart's seed hook runs in the demo image: no checkout, no --samples.
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["seed"]) == 0
    assert "seeded 4 of 4 yachts" in capsys.readouterr().out


def test_seed_refuses_a_folder_without_backfills(tmp_path, database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["seed", "--samples", str(tmp_path)]) == 2
    assert "no YachtBackfill manifests" in capsys.readouterr().err

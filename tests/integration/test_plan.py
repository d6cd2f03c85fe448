"""`f1backfill plan`: CRs for every active yacht, valid against the CRD."""

from __future__ import annotations

import yaml

from f1backfill.plan import plan
from f1sandbox.crd import admit
from tests.support.crd_cases import SCHEMA
from tests.support.fleet import add_yacht


def test_plan_prints_a_valid_backfill_per_active_yacht_in_tier_order(db, database_url):
    add_yacht(db, "Standard Sally", "standard")
    vip = add_yacht(db, "Lady Marina", "enterprise")
    add_yacht(db, "Premium Pete", "premium")
    retired = add_yacht(db, "Old Hull", "premium")
    with db.cursor() as cur:
        cur.execute("UPDATE yachts SET status = 'retired' WHERE id = %s", (retired.id,))
    docs = list(yaml.safe_load_all(plan(database_url, "fleet")))
    assert [d["spec"]["tier"] for d in docs] == ["enterprise", "premium", "standard"]
    assert docs[0]["spec"]["yachtId"] == str(vip.id)
    assert docs[0]["metadata"]["name"] == f"lady-marina-{str(vip.id)[:8]}"
    assert docs[0]["metadata"]["namespace"] == "fleet"
    for doc in docs:
        admit(SCHEMA, doc)  # raises with the API server's messages when invalid

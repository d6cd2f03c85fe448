"""Generated fleet data: yachts and searchable entities with realistic-looking text.

Used by the demo, `f1sandbox seed`, the tests and the benchmarks, so all of them exercise
the same shapes of data: a fleet's object types (work orders, equipment, documents, emails,
certificates), texts mostly 200-3,000 characters with a tail of long documents.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg2.extras

from .data import SAMPLES, documents

OBJECT_TYPES = ("work_order", "equipment", "document", "email", "certificate")

WORDS = (
    "engine", "oil", "filter", "racor", "watermaker", "desalinator", "pump", "impeller",
    "generator", "hull", "anchor", "winch", "tender", "davit", "stabiliser", "gyro", "chiller",
    "compressor", "hydraulic", "valve", "seal", "gasket", "bearing", "shaft", "propeller",
    "thruster", "bilge", "fuel", "injector", "turbo", "exhaust", "manifold", "sensor", "alarm",
    "certificate", "class", "survey", "insurance", "crew", "manifest", "galley", "laundry",
    "hvac", "radar", "chartplotter", "autopilot", "vhf", "satcom", "battery", "inverter",
    "charger", "shorepower", "mtu", "caterpillar", "service", "interval", "overhaul",
    "inspection", "replaced", "leaking", "vibration", "temperature", "pressure",
)

@dataclass(frozen=True)
class Yacht:
    id: uuid.UUID
    name: str
    tier: str


def make_text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def text_lengths(rng: random.Random, *, min_chars: int = 200, max_chars: int = 3000,
                 long_share: float = 0.05, long_chars: int = 24000) -> Iterator[int]:
    while True:
        if rng.random() < long_share:
            yield rng.randint(max_chars, long_chars)
        else:
            yield rng.randint(min_chars, max_chars)


def add_yacht(conn, name: str = "Test Yacht", tier: str = "standard",
              yacht_id: uuid.UUID | None = None) -> Yacht:
    yacht = Yacht(yacht_id or uuid.uuid4(), name, tier)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO yachts (id, name, tier) VALUES (%s, %s, %s)",
                    (yacht.id, yacht.name, yacht.tier))
    if not conn.autocommit:
        conn.commit()
    return yacht


def add_rows(conn, yacht_id: uuid.UUID, count: int, *, seed: int = 1,
             texts: list[str] | None = None, min_chars: int = 200, max_chars: int = 3000,
             long_share: float = 0.0, long_chars: int = 24000,
             object_types: tuple[str, ...] = OBJECT_TYPES) -> list[tuple[str, uuid.UUID]]:
    """Insert `count` pending search_index rows; returns their keys in insertion order."""
    rng = random.Random(seed)
    lengths = text_lengths(rng, min_chars=min_chars, max_chars=max_chars,
                           long_share=long_share, long_chars=long_chars)
    rows = []
    for n in range(count):
        text = texts[n] if texts is not None else make_text(rng, next(lengths))
        object_id = uuid.uuid4()  # never derived from the seed: two calls must not collide
        rows.append((object_types[n % len(object_types)], object_id, yacht_id, text))
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO search_index (object_type, object_id, yacht_id, search_text) VALUES %s",
            rows, page_size=1000)
    if not conn.autocommit:
        conn.commit()
    return [(t, i) for t, i, _, _ in rows]


def status_counts(conn, yacht_id: uuid.UUID) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT embedding_status, count(*) FROM search_index WHERE yacht_id = %s "
                    "GROUP BY 1", (yacht_id,))
        return dict(cur.fetchall())


def load_backfill_manifests(folder: Path | Traversable = SAMPLES) -> list[dict]:
    """The YachtBackfill documents of every YAML file in `folder` (default: the samples
    packaged with the sandbox), in file order."""
    return [doc for doc in documents(folder) if doc.get("kind") == "YachtBackfill"]


def seed_from_manifests(conn, docs: list[dict], rows: tuple[int, ...] = (1200, 900, 1500, 700),
                        junk: int = 2) -> list[Yacht]:
    """A yacht and generated rows for each backfill's yachtId (demo data, idempotent per
    yacht: a yacht already present is left as it is). `junk` rows per yacht hold only
    control characters and end in the dead-letter table, as real junk does."""
    seeded = []
    for n, doc in enumerate(docs):
        spec = doc["spec"]
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM yachts WHERE id = %s", (spec["yachtId"],))
            if cur.fetchone():
                continue
        yacht = add_yacht(conn, spec.get("yachtName") or doc["metadata"]["name"],
                          spec.get("tier", "standard"), yacht_id=uuid.UUID(spec["yachtId"]))
        add_rows(conn, yacht.id, rows[n % len(rows)], seed=n, max_chars=1500,
                 long_share=0.02, long_chars=8000)
        if junk:
            add_rows(conn, yacht.id, junk, texts=["\x07\x1b \t"] * junk,
                     seed=100 + n)
        seeded.append(yacht)
    return seeded

"""Test data: yachts and search_index rows, written straight to the database."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import psycopg2.extras

OBJECT_TYPES = ("work_order", "equipment", "document", "email", "certificate")

WORDS = (
    "engine oil filter racor watermaker desalinator pump impeller generator hull anchor "
    "winch tender davit stabiliser gyro chiller compressor hydraulic valve seal gasket "
    "bearing shaft propeller thruster bilge fuel injector turbo exhaust manifold sensor "
    "alarm certificate class survey insurance crew manifest galley laundry hvac radar "
    "chartplotter autopilot vhf satcom battery inverter charger shorepower"
).split()


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


def add_yacht(conn, name: str = "Test Yacht", tier: str = "standard",
              yacht_id: uuid.UUID | None = None) -> Yacht:
    yacht = Yacht(yacht_id or uuid.uuid4(), name, tier)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO yachts (id, name, tier) VALUES (%s, %s, %s)",
                    (yacht.id, yacht.name, yacht.tier))
    return yacht


def add_rows(conn, yacht_id: uuid.UUID, count: int, *, seed: int = 1,
             texts: list[str] | None = None, min_chars: int = 200, max_chars: int = 3000,
             long_share: float = 0.0, long_chars: int = 24000,
             object_types: tuple[str, ...] = OBJECT_TYPES) -> list[tuple[str, uuid.UUID]]:
    """Insert `count` pending rows; returns their keys in insertion order."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        if texts is not None:
            text = texts[n]
        elif rng.random() < long_share:
            text = make_text(rng, rng.randint(max_chars, long_chars))
        else:
            text = make_text(rng, rng.randint(min_chars, max_chars))
        rows.append((object_types[n % len(object_types)], uuid.uuid4(), yacht_id, text))
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

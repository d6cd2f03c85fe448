"""A generated fleet: yachts and searchable entities with realistic-looking text.

Used by the demo, the tests and the benchmarks, so all three exercise the same shapes of
data: the playbook's object types, texts mostly 200-3,000 characters with a tail of long
documents, and per-yacht sizes that differ.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2.extras

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

YACHT_NAMES = (
    "Aurora Borealis", "Blue Meridian", "Coral Whisper", "Dawn Treader", "Eclipse Tide",
    "Falcon Crest", "Golden Horizon", "Halcyon Days", "Island Spirit", "Jade Serenity",
    "Kingfisher", "Lady Marina", "Midnight Sun", "Nautilus Star", "Ocean Pearl",
)
TIERS = ("enterprise", "premium", "standard")


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
        object_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        rows.append((object_types[n % len(object_types)], object_id, yacht_id, text))
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO search_index (object_type, object_id, yacht_id, search_text) VALUES %s",
            rows, page_size=1000)
    if not conn.autocommit:
        conn.commit()
    return [(t, i) for t, i, _, _ in rows]


def add_fleet(conn, yachts: int, entities: int, *, seed: int = 7,
              unembeddable: int = 0) -> list[Yacht]:
    """`yachts` yachts of mixed tiers, each with roughly `entities` rows (±50%).

    `unembeddable` rows per yacht hold only control characters: they end in the
    dead-letter table (empty_text), as real junk does.
    """
    rng = random.Random(seed)
    fleet = []
    for n in range(yachts):
        name = YACHT_NAMES[n % len(YACHT_NAMES)] + ("" if n < len(YACHT_NAMES) else f" {n}")
        yacht = add_yacht(conn, name, TIERS[n % len(TIERS)],
                          uuid.UUID(int=rng.getrandbits(128), version=4))
        size = max(1, int(entities * rng.uniform(0.5, 1.5)))
        add_rows(conn, yacht.id, size, seed=rng.randrange(2**31), max_chars=1500,
                 long_share=0.02, long_chars=8000)
        if unembeddable:
            add_rows(conn, yacht.id, unembeddable, texts=["\x07\x1b \t"] * unembeddable,
                     seed=rng.randrange(2**31), object_types=("email",))
        fleet.append(yacht)
    return fleet


def status_counts(conn, yacht_id: uuid.UUID) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT embedding_status, count(*) FROM search_index WHERE yacht_id = %s "
                    "GROUP BY 1", (yacht_id,))
        return dict(cur.fetchall())

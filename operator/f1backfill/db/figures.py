"""The rows the operator reads from the database, as plain types.

No I/O here, so the pure status builder can name these types without importing a database
driver; `fleet.py` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class YachtFigures:
    """One yacht's rows by embedding status, and its unresolved dead letters."""

    total: int = 0
    embedded: int = 0
    pending: int = 0
    queued: int = 0
    processing: int = 0
    failed: int = 0
    dlq: int = 0
    skipped: int = 0  # pending rows of types the backfill skips (skipObjectTypes)
    unresolved_dlq: int = 0

    @property
    def work(self) -> int:
        """Rows that still need an embedding (what admission orders by)."""
        return self.pending + self.queued + self.processing + self.failed


@dataclass(frozen=True)
class DriftProbe:
    """One yacht's drift check against one source table."""

    yacht_id: str
    object_type: str
    table: str
    id_column: str
    updated_column: str
    tolerance_minutes: int

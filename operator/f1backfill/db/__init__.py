"""The database layer: named queries from queries.sql, connections (connection.py),
migrations (migrate.py), the operator's reads (fleet.py) and dead letters (deadletters.py).

This package imports no database driver itself: `figures.py` and `query()` stay usable
from pure code.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """The named blocks of queries.sql, split on `-- name: <name>` lines (procrastinate's way)."""
    text = resources.files(__package__).joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    named = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        named[name] = body.strip()
    return named


def query(name: str) -> str:
    return queries()[name]

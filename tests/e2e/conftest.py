"""End-to-end fixtures: the whole stack per test (see tests/support/stack.py)."""

from __future__ import annotations

import psycopg2
import pytest

from tests.support.stack import running_stack


@pytest.fixture
def stack(pg_server, redis_url, tmp_path):
    with running_stack(pg_server, tmp_path, redis_url=redis_url) as s:
        yield s


@pytest.fixture
def stack_db(stack):
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    yield conn
    conn.close()

"""Test data helpers: the sandbox's fleet generator, re-exported for tests."""

from f1sandbox.samples import (  # noqa: F401
    OBJECT_TYPES,
    Yacht,
    add_rows,
    add_yacht,
    make_text,
    status_counts,
)

"""One way for tests to wait: poll a predicate until it is truthy or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Return the predicate's first truthy value; fail the test after ``timeout`` seconds.

    Exceptions from the predicate count as "not yet" (the object may not exist yet), and
    the last one is shown in the failure, with ``message`` (a string or a callable that
    describes the state at the time of failure).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as error:
            last_error, value = error, None
        else:
            last_error = None
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {text or predicate!r}{detail}"
            )
        time.sleep(interval)

"""What the informers have shown: backfills by uid, our Jobs by (namespace, name)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from ..admission import ObservedBackfill, ObservedJob
from ..api import BackfillStatus
from .observe import observe_backfill

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", ObservedBackfill, ObservedJob)


class Table(dict[K, T], Generic[K, T]):
    """The observed objects of one kind, by key: an informer's sink (see `informer.Sink`).

    Every change an informer delivers calls `on_change`, which wakes the reconciler; the
    reconciler's own writes (a created Job, a status it patched) are stored directly.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.on_change = on_change

    def known(self, key: K) -> T | None:
        return self.get(key)

    def listed(self, namespace: str | None, items: dict[K, T]) -> None:
        """Every object of `namespace` (of all namespaces: None), as a list showed them."""
        if namespace is None:
            self.clear()
        else:
            for key in [key for key, item in self.items() if item.namespace == namespace]:
                if key not in items:
                    del self[key]
        self.update(items)
        self.on_change()

    def seen(self, key: K, item: T) -> None:
        held = self.get(key)
        if held is item or (held is not None and item.resource_version
                            and held.resource_version == item.resource_version):
            # Nothing new: the informer's thread observed a body while the reconciler was
            # storing the response to its own write of the same version.
            return
        self[key] = item
        self.on_change()

    def gone(self, key: K) -> None:
        if self.pop(key, None) is not None:
            self.on_change()


class JobTable(Table[tuple[str, str], ObservedJob]):
    """Our Jobs. One that ends (or goes away unfinished) frees an admission slot: that also
    calls `on_freed`, so that the reconciler admits the next backfill at once."""

    def __init__(self, on_change: Callable[[], None] = lambda: None,
                 on_freed: Callable[[], None] = lambda: None) -> None:
        super().__init__(on_change)
        self.on_freed = on_freed

    def seen(self, key: tuple[str, str], item: ObservedJob) -> None:
        held = self.get(key)
        super().seen(key, item)
        if item.finished and (held is None or not held.finished):
            self.on_freed()

    def gone(self, key: tuple[str, str]) -> None:
        held = self.get(key)
        super().gone(key)
        if held is not None and not held.finished:
            self.on_freed()


class FleetCache:
    def __init__(self, on_change: Callable[[], None] = lambda: None,
                 on_freed: Callable[[], None] = lambda: None) -> None:
        self.backfills: Table[str, ObservedBackfill] = Table(on_change)
        self.jobs: JobTable = JobTable(on_change, on_freed)

    def apply_backfill(self, body: Mapping[str, Any],
                       written: BackfillStatus | None = None) -> ObservedBackfill:
        """A backfill's body as the API server returned it after a status write. When its
        status reads as `written` (the status just sent), that object is kept instead of a
        copy: after the first tick of a large fleet the two would double the cache."""
        backfill = observe_backfill(body)
        if written is not None and backfill.status == written:
            backfill = replace(backfill, status=written)
        self.backfills[backfill.uid] = backfill
        return backfill

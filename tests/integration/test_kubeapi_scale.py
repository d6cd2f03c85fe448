"""The emulator stays fast with the object counts a fleet benchmark needs (10,000 CRs)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from kubernetes import client as k

from f1sandbox.kubeapi import KubeAPI
from tests.support.kubeapi_fixtures import GROUP, PLURAL, VERSION, test_crd, yacht_backfill

COUNT = 10_000


async def create_many(url: str, start: int, count: int) -> list[float]:
    """POST ``count`` CRs with 8 requests in flight; return each one's latency."""
    latencies: list[float] = []
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def create(index: int) -> None:
            async with limit:
                began = time.perf_counter()
                body = yacht_backfill(f"yacht-{index:05d}", "default")
                async with session.post(url, json=body) as response:
                    assert response.status == 201, await response.text()
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(create(i) for i in range(start, start + count)))
    return latencies


@pytest.mark.slow
def test_ten_thousand_creates_stay_fast():
    with KubeAPI() as api:
        api.load_crd(test_crd())
        url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
        began = time.monotonic()
        first = asyncio.run(create_many(url, 0, 1000))
        asyncio.run(create_many(url, 1000, COUNT - 2000))
        last = asyncio.run(create_many(url, COUNT - 1000, 1000))
        elapsed = time.monotonic() - began
        assert elapsed < 45, f"{COUNT} creates took {elapsed:.1f}s"
        # No per-request scan of the history: the last thousand cost what the first did.
        assert sorted(last)[500] < 3 * sorted(first)[500] + 0.002

        custom = k.CustomObjectsApi(api.client())
        started = time.monotonic()
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
        assert len(listed["items"]) == COUNT
        patched = custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, "yacht-09999", {"status": {"phase": "Queued"}}
        )
        assert patched["status"]["phase"] == "Queued"
        assert time.monotonic() - started < 5

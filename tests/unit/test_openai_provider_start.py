"""The OpenAI provider makes its SDK client in a thread of its own (the import is most of a
worker's start): construction never waits for it or fails from it; the first request waits,
and what failed to make the client fails that request."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from f1backfill.worker.providers import OpenAIProvider


def fake_sdk(make) -> types.ModuleType:
    module = types.ModuleType("openai")
    module.OpenAI = make
    return module


def provider() -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", base_url=None, model="text-embedding-3-small",
                          dimensions=8, timeout=5.0)


def test_the_client_is_made_off_the_constructing_thread(monkeypatch):
    release, made_on = threading.Event(), []

    class Client:
        def __init__(self, **_) -> None:
            made_on.append(threading.current_thread())
            release.wait(5)

        def close(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "openai", fake_sdk(Client))
    made = provider()  # returns while the client is still being made
    made._made.join(0.05)
    assert made._made.is_alive()
    release.set()
    made.close()
    assert made_on and made_on[0] is not threading.current_thread()


def test_a_client_that_cannot_be_made_fails_the_first_request_not_the_start(monkeypatch):
    def refuse(**_):
        raise RuntimeError("no client today")

    monkeypatch.setitem(sys.modules, "openai", fake_sdk(refuse))
    made = provider()
    with pytest.raises(RuntimeError, match="no client today"):
        made.embed(["a text"])
    made.close()  # nothing to close, nothing raised

"""The search page at `/`, driven in headless Chromium (Debian's `chromium`, through
Playwright): sign in with a token, search, click a result, and the click is in
search_click_events for the token's user and yacht."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.support.fleet import add_rows, add_yacht
from tests.support.frontdoor import embed_all, running_door, token_for
from tests.support.tokens import USER_ID

TEXTS = ["MTU 16V2000 fuel filter, replaced at 1200 hours", "Anchor winch service log",
         "Desalinator manual, chapter 3", "Crew email about the tender davit",
         "Flag state safety certificate"]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not path:
        pytest.fail("the browser test needs Chromium: `apt-get install chromium` (Debian), or "
                    "set CHROMIUM to its path; .ci/run installs it")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def yacht(db, database_url, redis_url):
    yacht = add_yacht(db, "Page Yacht")
    keys = add_rows(db, yacht.id, len(TEXTS), texts=TEXTS)
    embed_all(database_url, yacht.id, redis_url=redis_url)
    return yacht.id, keys


def clicks(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT yacht_id, user_id, query_normalized, clicked_object_type, "
                    "clicked_object_id, click_position FROM search_click_events")
        return cur.fetchall()


def test_search_then_click_records_the_click(db, database_url, redis_url, yacht, browser):
    yacht_id, keys = yacht
    with running_door(database_url, redis_url) as door:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(door.url + "/")
        expect(page.get_by_label("Search this yacht")).to_be_disabled()
        page.get_by_label("Bearer token").fill(token_for(yacht_id))
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#status")).to_have_text("Signed in.")

        page.get_by_label("Search this yacht").fill("MTU filter")
        page.get_by_role("button", name="Search", exact=True).click()
        results = page.locator("#results li a")
        expect(results.first).to_contain_text("MTU 16V2000 fuel filter")
        expect(page.locator("#status")).to_contain_text("results in")

        results.first.click()
        expect(page.locator("#results .clicked")).to_have_text("click recorded")
        page.close()
    assert clicks(db) == [(yacht_id, uuid.UUID(USER_ID), "mtu filter",
                           keys[0][0], keys[0][1], 1)]
    assert errors == []


def test_a_refused_token_says_so_and_keeps_search_disabled(database_url, redis_url, browser):
    with running_door(database_url, redis_url) as door:
        page = browser.new_page()
        page.goto(door.url + "/")
        page.get_by_label("Bearer token").fill("not-a-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#status")).to_have_text("Sign-in refused: 401 unauthorized")
        expect(page.get_by_label("Search this yacht")).to_be_disabled()
        page.close()


def test_a_snippet_is_shown_as_text_never_as_markup(db, database_url, redis_url, browser):
    hostile = add_yacht(db, "Hostile")
    add_rows(db, hostile.id, 1, texts=['<img src=x onerror="document.title=\'owned\'"> pump'])
    embed_all(database_url, hostile.id, redis_url=redis_url)
    with running_door(database_url, redis_url) as door:
        page = browser.new_page()
        page.goto(door.url + "/")
        page.get_by_label("Bearer token").fill(token_for(hostile.id))
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Search this yacht").fill("pump")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("#results li a").first).to_contain_text("<img src=x")
        assert page.locator("#results img").count() == 0
        assert page.title() == "F1 Cortex search"
        page.close()

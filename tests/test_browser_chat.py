"""The web page in headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package): it shows the model, chats with streamed
replies, lists the home, runs the doctor, pulls a model with visible
progress, verifies and removes it, shows a failed pull with the doctor's
verdict in place, and serves another model of the home. Saves screenshots."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model
from qwenhome.demo.flow import ensure_demo_repo
from tests.app_support.servers import serve_app, wait_ready
from tests.app_support.shared import SharedServer, shared_server
from tests.app_support.tiny import seed_demo_repos, tiny_model_dir
from tests.support.mirror import Mirror

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/system-deps.sh)")


def screenshot_dir(tmp_path: Path) -> Path:
    # QWENHOME_SCREENSHOTS keeps them after the run (CI artifacts, or a look by eye).
    target = Path(os.environ.get("QWENHOME_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture(scope="module")
def server() -> SharedServer:
    return shared_server()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def test_page_shows_the_model_and_streams_a_chat_reply(server: SharedServer, page: Any, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    expect = playwright_api.expect
    # The demo model is labelled as such (random weights, a handful of answers).
    expect(page.locator("#model-name")).to_have_text(re.compile("^" + re.escape(DEMO_REPO) + r" \(demo model: "))
    expect(page.locator("#model-status")).to_have_text("ready")
    row = page.locator(f'#models-table tr[data-repo="{DEMO_REPO}"]')
    expect(row).to_contain_text("complete")
    expect(row).to_contain_text("served")

    page.fill("#chat-input", "Hello")
    page.keyboard.press("Enter")
    reply = page.locator("#chat-log .msg.assistant").last
    expect(reply).to_have_attribute("data-done", "true", timeout=60_000)
    text = reply.locator(".text").inner_text()
    assert text == "Hello! I am a tiny model running from your qwenhome, fully offline."
    assert int(reply.get_attribute("data-pieces")) >= 5  # streamed piece by piece, not in one block
    expect(page.locator("#chat-stats")).to_contain_text("first token")

    # A second turn sends the whole conversation.
    page.fill("#chat-input", "Who are you?")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#chat-send")
    roles = [m["role"] for m in sent.value.post_data_json["messages"]]
    assert roles == ["user", "assistant", "user"]
    second = page.locator("#chat-log .msg.assistant").nth(1)
    expect(second).to_have_attribute("data-done", "true", timeout=60_000)
    assert second.locator(".text").inner_text().strip()
    page.screenshot(path=str(screenshot_dir(tmp_path) / "chat.png"), full_page=True)


def test_page_runs_the_doctor_and_shows_its_table(server: SharedServer, page: Any, tmp_path: Path) -> None:
    page.goto(server.url + "/")
    page.click("#doctor-run")
    expect = playwright_api.expect
    expect(page.locator("#doctor-summary")).to_contain_text("checks", timeout=30_000)
    assert page.locator("#doctor-table tbody tr").count() >= 1
    page.screenshot(path=str(screenshot_dir(tmp_path) / "doctor.png"), full_page=True)


def test_page_shows_an_error_reply_when_the_pull_repo_is_invalid(server: SharedServer, page: Any) -> None:
    page.goto(server.url + "/")
    page.fill("#pull-repo", "not a repo")
    page.click("#pull-button")
    playwright_api.expect(page.locator("#pull-text")).to_contain_text("invalid-repo-id")


def test_page_pulls_a_model_with_visible_progress_then_verifies_and_removes_it(
    tmp_path: Path, mirror: Mirror, page: Any
) -> None:
    settings = load_settings({}, home=str(tmp_path / "home"), sources=[mirror.url])
    mirror.faults.bandwidth(1024 * 1024)  # per connection: the 5 MiB pull takes a moment, progress shows
    expect = playwright_api.expect
    with serve_app(create_app(AppState(settings, "Other/Model"))) as url:
        page.goto(url + "/")
        expect(page.locator("#models-table tbody")).to_contain_text("The home is empty.")
        page.fill("#pull-repo", "Org/Small")
        page.click("#pull-button")
        # Part of the way: the bar has a size and a value short of it, the text says how much.
        page.wait_for_function(
            "() => { const b = document.querySelector('#pull-progress');"
            " return b.hasAttribute('value') && b.max > 1 && b.value > 0 && b.value < b.max; }", timeout=30_000)
        expect(page.locator("#pull-text")).to_contain_text(" of 5.")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "pull-progress.png"), full_page=True)
        expect(page.locator("#pull-text")).to_contain_text("Org/Small: done", timeout=60_000)
        assert page.eval_on_selector("#pull-progress", "b => b.value === b.max")
        row = page.locator('#models-table tr[data-repo="Org/Small"]')
        expect(row).to_contain_text("complete")

        row.get_by_role("button", name="Verify").click()
        expect(page.locator("#models-message")).to_have_text("Org/Small: every file matches its hash.",
                                                             timeout=30_000)

        dialogs: list[str] = []
        page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        row.get_by_role("button", name="Remove").click()
        expect(page.locator("#models-message")).to_have_text("Org/Small removed.", timeout=30_000)
        assert dialogs == ["Remove Org/Small from the home?"]
        expect(page.locator("#models-table tbody")).to_contain_text("The home is empty.")
        assert not (settings.hub_cache / "models--Org--Small").exists()
        page.screenshot(path=str(screenshot_dir(tmp_path) / "removed.png"), full_page=True)


def test_page_shows_a_failed_pull_with_the_doctors_verdict_in_place(tmp_path: Path, page: Any) -> None:
    # The one source refuses connections (nothing listens on port 9).
    settings = load_settings({}, home=str(tmp_path / "home"), sources=["http://127.0.0.1:9"])
    expect = playwright_api.expect
    with serve_app(create_app(AppState(settings, "Other/Model"))) as url:
        page.goto(url + "/")
        page.fill("#pull-repo", "Org/Small")
        page.click("#pull-button")
        shown = page.locator("#pull-text .problem")
        expect(shown).to_have_attribute("data-code", "offline", timeout=60_000)
        expect(shown.locator(".badge")).to_have_text("offline")
        expect(shown.locator(".what")).to_contain_text("Org/Small is not in the home")
        verdict = shown.locator(".verdict")
        expect(verdict).to_contain_text("Doctor:")
        expect(verdict).to_contain_text("[connection-refused]")
        expect(verdict.locator(".fix")).to_contain_text("127.0.0.1")
        text = shown.inner_text()
        assert "`qwenhome" not in text and "offline: offline" not in text, text
        assert shown.evaluate("n => getComputedStyle(n).borderLeftStyle") == "solid"  # styled, not bare text
        page.screenshot(path=str(screenshot_dir(tmp_path) / "pull-failed.png"), full_page=True)


def test_page_serves_another_model_of_the_home_and_chats_with_it(tmp_path: Path, page: Any) -> None:
    home = tmp_path / "home"
    seed_demo_repos(home)
    settings = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(settings)
    second = "qwenhome/tiny-qwen2-second"
    ensure_demo_repo(settings, second, "config.json", lambda dest: shutil.copytree(tiny_model_dir(), dest),
                     "a second chat model")
    expect = playwright_api.expect
    with serve_app(create_app(AppState(settings, DEMO_REPO, snapshot=snapshot))) as url:
        wait_ready(url)
        page.goto(url + "/")
        expect(page.locator("#model-name")).to_have_text(re.compile("^" + re.escape(DEMO_REPO) + r" \(demo model: "))
        row = page.locator(f'#models-table tr[data-repo="{second}"]')
        expect(row).to_have_attribute("data-serving", "available")
        expect(page.locator(f'#models-table tr[data-repo="{DEMO_REPO}"]')).to_have_attribute("data-serving", "served")
        row.get_by_role("button", name="Serve").click()
        expect(page.locator("#models-message")).to_have_text(f"{second} is served.", timeout=120_000)
        expect(page.locator("#model-name")).to_have_text(second)
        expect(row).to_have_attribute("data-serving", "served")
        expect(page.locator(f'#models-table tr[data-repo="{DEMO_REPO}"]')).to_have_attribute("data-serving", "available")
        page.fill("#chat-input", "Hello")
        with page.expect_request("**/v1/chat/completions") as sent:
            page.keyboard.press("Enter")
        assert sent.value.post_data_json["model"] == second
        reply = page.locator("#chat-log .msg.assistant").last
        expect(reply).to_have_attribute("data-done", "true", timeout=60_000)
        assert reply.locator(".text").inner_text() == "Hello! I am a tiny model running from your qwenhome, fully offline."
        page.screenshot(path=str(screenshot_dir(tmp_path) / "served-switched.png"), full_page=True)

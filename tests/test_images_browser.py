"""The image panel in a real browser: generate an image and see it in the gallery."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from images_support.model import new_home, snapshot_in
from images_support.server import image_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium (scripts/system-deps.sh)")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = new_home(tmp_path_factory.mktemp("images-browser"))
    with image_server(home, snapshot_in(home)) as url:
        yield url


def test_panel_generates_an_image_and_shows_it_in_the_gallery(base: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            expect = sync_api.expect
            expect(page.get_by_test_id("images-status")).to_contain_text("cpu float32", timeout=30_000)
            # Presets come from the server (scaled for the tiny model).
            expect(page.get_by_test_id("images-preset").locator("option")).to_have_count(7)
            page.get_by_test_id("images-preset").select_option("88x160")
            page.get_by_test_id("images-prompt").fill("a red fox in the snow")
            page.get_by_test_id("images-negative").fill("blurry")
            page.get_by_test_id("images-steps").fill("5")
            page.get_by_test_id("images-seed").fill("1234")
            page.get_by_test_id("images-generate").click()

            expect(page.get_by_test_id("images-progress-text")).to_have_text("done", timeout=60_000)
            bar = page.get_by_test_id("images-progress")
            assert bar.evaluate("b => [b.value, b.max]") == [5, 5]
            card = page.get_by_test_id("images-card").filter(has_text="seed 1234")
            expect(card).to_have_count(1, timeout=10_000)
            expect(card).to_contain_text("a red fox in the snow")
            expect(card.get_by_test_id("images-card-params")).to_have_text("88x160 · seed 1234 · 5 steps · cfg 4")
            img = card.locator("img")
            img.evaluate("i => i.decode()")
            assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [88, 160]
            link = card.get_by_test_id("images-download")
            assert link.get_attribute("download", timeout=5_000).endswith("-0.png")
            with page.expect_download() as download_info:
                link.click()
            saved = tmp_path / "download.png"
            download_info.value.save_as(saved)
            assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)

            # An invalid request shows the server's error code and message.
            page.get_by_test_id("images-prompt").fill("   ")
            page.get_by_test_id("images-generate").click()
            expect(page.get_by_test_id("images-error")).to_contain_text("[invalid-image-request] the prompt is empty")
            assert errors == []
        finally:
            browser.close()

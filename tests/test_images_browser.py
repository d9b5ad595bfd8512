"""The complete path as a user meets it: the demo's tiny Qwen-Image model is
built locally, served from a local mirror and pulled into a fresh home; the
real app mounts the images extension it finds there; in a real browser the
page shows the image panel, generates an image and shows it in the gallery."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from qwenhome.config import load_settings
from qwenhome.images.demo import ensure_demo_image_model
from qwenhome.images.tiny import TINY_REPO_ID
from tests.images_support.server import image_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium (scripts/system-deps.sh)")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("images-demo") / "home"
    settings = load_settings({"QWEN_HOME": str(home)})
    said: list[str] = []
    snapshot = ensure_demo_image_model(settings, say=said.append)
    assert any("local mirror" in line for line in said)
    assert snapshot.parent.parent.name == "models--" + TINY_REPO_ID.replace("/", "--")
    assert (snapshot / "model_index.json").is_file() and (snapshot / "transformer").is_dir()
    # Now in the home: the second call neither builds nor pulls.
    said.clear()
    assert ensure_demo_image_model(settings, say=said.append) == snapshot and said == []
    return home


@pytest.fixture(scope="module")
def base(home: Path) -> Iterator[str]:
    with image_server(home) as url:
        yield url


def test_real_app_lists_the_images_extension(base: str) -> None:
    info = httpx.get(base + "/api/info").json()
    assert {"name": "images", "title": "Images", "script": "/ext/images/images.js"} in info["extensions"]
    assert httpx.get(base + "/ext/images/images.js").status_code == 200
    assert httpx.get(base + "/api/images/status").json()["model"] == TINY_REPO_ID


def test_panel_generates_an_image_and_shows_it_in_the_gallery(base: str, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            expect = sync_api.expect
            panel = page.locator("#extensions #images-panel")
            expect(panel.get_by_test_id("images-status")).to_contain_text(
                re.compile("^" + re.escape(TINY_REPO_ID) + r" \(demo model: random weights[^·]*\) · cpu float32"), timeout=30_000)
            # The panel brought its own stylesheet, and it applies (it may
            # still be loading when the status text shows: wait, or time out).
            page.wait_for_function("""() => {
                const link = document.querySelector('link[href$="/ext/images/images.css"]');
                return !!(link && link.sheet && link.sheet.cssRules.length > 5);
            }""", timeout=10_000)
            assert panel.evaluate("p => getComputedStyle(p.querySelector('.qh-gallery')).display") == "grid"
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

            # Image-to-image: the source image is uploaded from the page.
            from PIL import Image

            Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "source.png")
            page.get_by_test_id("images-source").set_input_files(str(tmp_path / "source.png"))
            expect(page.get_by_test_id("images-preset")).to_be_disabled()
            page.get_by_test_id("images-strength").fill("0.5")
            page.get_by_test_id("images-steps").fill("4")
            page.get_by_test_id("images-seed").fill("77")
            page.get_by_test_id("images-generate").click()
            edited = page.get_by_test_id("images-card").filter(has_text="seed 77")
            expect(edited.get_by_test_id("images-card-params")).to_have_text(
                "img2img · 64x48 · seed 77 · 4 steps · cfg 4 · strength 0.5", timeout=60_000)
            assert bar.evaluate("b => [b.value, b.max]") == [2, 2]  # strength 0.5 of 4 steps
            edited.locator("img").evaluate("i => i.decode()")
            assert edited.locator("img").evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 48]

            # An invalid request shows the server's error code and message.
            page.get_by_test_id("images-prompt").fill("   ")
            page.get_by_test_id("images-generate").click()
            expect(page.get_by_test_id("images-error")).to_contain_text("[invalid-image-request] the prompt is empty")
            assert errors == []
        finally:
            browser.close()

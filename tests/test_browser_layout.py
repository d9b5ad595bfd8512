"""Every panel of the page as a user meets it, in headless Chromium at a
desktop width and at a phone's 390 px: the real server process with the
demo's chat and image models, the doctor run, a pull failed in place. No
console error (the favicon included), nothing wider than the screen or cut
off inside its panel (the doctor's table, the models table), and the panels
line up: one column of equal width on a phone; on a desktop the full-width
panels (doctor, images) span exactly the chat and models panels beside each
other. Saves a screenshot per width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_api

from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model
from qwenhome.images.demo import ensure_demo_image_model
from qwenhome.images.tiny import TINY_REPO_ID
from tests.app_support.servers import ServerProcess, serve_process, wait_ready
from tests.app_support.tiny import seed_demo_repos
from tests.test_browser_chat import CHROMIUM, CHROMIUM_ARGS, screenshot_dir

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (scripts/system-deps.sh)")

PANELS = ("#chat-panel", "#models-panel", "#doctor-panel", "#images-panel")
WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}

# Each panel's box, and whether anything in it is wider than the panel
# (scrollWidth past clientWidth: cut off or scrolled sideways), and the same
# for every table and the page itself.
MEASURE = """(panels) => {
  const out = { page: { scroll: document.documentElement.scrollWidth, width: window.innerWidth }, panels: {}, wide: [] };
  for (const sel of panels) {
    const p = document.querySelector(sel);
    if (!p) { out.panels[sel] = null; continue; }
    const r = p.getBoundingClientRect();
    out.panels[sel] = { left: r.left, right: r.right, width: r.width };
    for (const n of [p, ...p.querySelectorAll("table, form, .problem, p, div")]) {
      if (n.offsetParent === null) continue;  // not rendered
      if (n.scrollWidth > n.clientWidth + 1 && getComputedStyle(n).overflowX !== "visible" || n.getBoundingClientRect().right > r.right + 1)
        out.wide.push(`${sel} ${n.tagName.toLowerCase()}${n.id ? "#" + n.id : ""}${n.className ? "." + n.className : ""}: ` +
                      `${n.scrollWidth} px of content in ${n.clientWidth}, right edge ${Math.round(n.getBoundingClientRect().right)} of ${Math.round(r.right)}`);
    }
    if (p.scrollWidth > p.clientWidth + 1) out.wide.push(`${sel}: ${p.scrollWidth} px of content in ${p.clientWidth}`);
  }
  return out;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server over a home with the demo's chat and image models,
    pulled the way ``--demo`` pulls them; pulls from the page go to a source
    that refuses connections."""
    work = tmp_path_factory.mktemp("layout")
    home = work / "home"
    seed_demo_repos(home)
    conf = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(conf)
    ensure_demo_image_model(conf)
    with serve_process(home, snapshot, DEMO_REPO, "--source", "http://127.0.0.1:9", workdir=work) as s:
        wait_ready(s.url)
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_favicon_is_served(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), (r.status_code, r.headers)
    page = httpx.get(server.url + "/").text
    icon = re.search(r'<link rel="icon"[^>]* href="([^"]+)"', page)
    assert icon, "the page names its icon"
    assert httpx.get(server.url + icon.group(1)).status_code == 200


@pytest.mark.parametrize("name", list(WIDTHS))
def test_every_panel_fits_lines_up_and_logs_no_console_error(
    name: str, server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    width, height = WIDTHS[name]
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=name == "phone",
                                  has_touch=name == "phone", device_scale_factor=2 if name == "phone" else 1)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    expect = playwright_api.expect
    try:
        page.goto(server.url + "/")
        expect(page.locator("#model-status")).to_have_text("ready", timeout=30_000)
        images = page.locator("#images-panel")
        expect(images.get_by_test_id("images-status")).to_contain_text(TINY_REPO_ID + " (demo model:", timeout=30_000)
        page.wait_for_function("() => { const l = document.querySelector('link[href$=\"/ext/images/images.css\"]');"
                               " return !!(l && l.sheet); }", timeout=10_000)
        expect(page.locator(f'#models-table tr[data-repo="{TINY_REPO_ID}"]')).to_have_attribute("data-serving", "served")
        page.click("#doctor-run")
        expect(page.locator("#doctor-summary")).to_contain_text("checks", timeout=60_000)
        assert page.locator("#doctor-table tbody tr").count() >= 3
        # A failed pull shows its problem box (code, message, hint, the doctor's verdict) in place.
        page.fill("#pull-repo", "Org/Small")
        page.click("#pull-button")
        expect(page.locator("#pull-text .problem")).to_be_visible(timeout=60_000)
        page.evaluate("() => document.fonts.ready")
        m = page.evaluate(MEASURE, list(PANELS))
        page.screenshot(path=str(screenshot_dir(tmp_path) / f"layout-{name}.png"), full_page=True)
    finally:
        context.close()

    assert m["page"]["scroll"] <= m["page"]["width"], f"the page scrolls sideways: {m['page']}"
    boxes = m["panels"]
    assert all(boxes[p] is not None for p in PANELS), boxes
    for sel, box in boxes.items():
        assert box["left"] >= 0 and box["right"] <= width, f"{sel} leaves the screen: {box}"
    assert not m["wide"], "content wider than its panel:\n" + "\n".join(m["wide"])
    chat, models, doctor, imgs = (boxes[p] for p in PANELS)
    if name == "phone":  # one column: every panel the same width
        assert max(b["width"] for b in boxes.values()) - min(b["width"] for b in boxes.values()) <= 1, boxes
    else:  # chat and models side by side; the doctor and images panels span both
        for wide in (doctor, imgs):
            assert abs(wide["left"] - chat["left"]) <= 1 and abs(wide["right"] - models["right"]) <= 1, boxes
    assert not problems, problems


def test_phone_width_keeps_the_header_and_its_demo_note_on_screen(server: ServerProcess, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        playwright_api.expect(page.locator("#model-name")).to_contain_text("(demo model:", timeout=30_000)
        right = page.evaluate("() => Math.max(...[...document.querySelectorAll('header, header *')]"
                              ".map((n) => n.getBoundingClientRect().right))")
    finally:
        context.close()
    assert right <= 390, f"the header reaches {right} px on a 390 px screen"


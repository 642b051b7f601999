"""The viewer in a real browser: Debian's chromium driven by playwright (never a downloaded browser), tiny NLAs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("NLAKIT_CHROMIUM", "/usr/bin/chromium")

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (.ci/run installs Debian's)")]

SCRIPT = 'The text so far ends with: "…sat on the mat". Then "a purple zebra".\nThe current token is "mat".'


@pytest.fixture(scope="module")
def page_at(make_nla, tiny_llama, tiny_gemma):
    from nlakit.serve import Limits, Model, background, create_app
    from nlakit.verbalizer import Explanation

    nla = dataclasses.replace(make_nla("llama", 2))  # real AR and target; the AV answers with known quotes
    nla.explain = lambda vectors, **kw: [Explanation(text=SCRIPT, raw=SCRIPT, ok=True, n_tokens=9) for _ in range(len(vectors))]
    app = create_app({"a": Model(nla, tiny_llama, label="tiny NLA (scripted AV)"),
                      "b": Model(make_nla("llama", 2), tiny_llama, label="tiny NLA")}, Limits(max_new_tokens=6))
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with background(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(url)
        yield page
        browser.close()


def show(page, text: str) -> None:
    page.fill("#text", text)
    page.click("#go")
    page.wait_for_function("document.getElementById('chips').textContent === document.getElementById('text').value")


def test_click_a_token_shows_its_explanation_bars_and_quote_marks(page_at, tmp_path):
    page = page_at
    show(page, "The cat sat on the mat. The dog ran.")
    chip = page.locator('#chips .tok[data-i="5"]')
    assert chip.inner_text() == " mat"
    assert page.locator("#chips .tok.sink").count() == 1  # position 0 cannot be clicked
    assert page.locator("#compare-wrap").is_visible()
    page.uncheck("#compare")
    chip.click()
    panel = page.locator('.panel[data-model="a"]')
    panel.locator(".expl").wait_for()
    assert "purple zebra" in panel.locator(".expl").inner_text()
    assert "sel" in chip.get_attribute("class")
    marks = panel.locator(".q-mark")
    assert [marks.nth(k).get_attribute("class").split()[-1] for k in range(marks.count())] == ["found", "missing", "found"]
    assert panel.locator(".q.found").first.inner_text() == "sat on the mat"
    names = panel.locator("tr.bar-row").evaluate_all("rows => rows.map(r => r.dataset.name)")
    assert names[0].startswith("NLA") and {"mean", "echo_ar8"} <= set(names)
    assert panel.locator("tr.bar-row .bar .fill").count() >= 2 * len(names) - 2  # fve and cos bars (None has none)
    assert panel.locator(".line-row").count() == 3  # line salience rows
    assert page.locator("#chips .tok.qhit-found").count() >= 4  # " sat on the mat" underlined in the text
    page.select_option("#color", "keyword")
    page.fill("#keyword", "ZEBRA")  # case-insensitive: the explanation says "a purple zebra"
    assert chip.evaluate("c => c.style.background") != ""
    page.fill("#keyword", "giraffe")
    assert chip.evaluate("c => c.style.background") == ""
    page.fill("#keyword", "")
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


def test_compare_heatmap_and_chat_in_the_browser(page_at):
    page = page_at
    page.check("#chat")
    page.fill("#text", "user: hello cat\nassistant: the mat")
    page.click("#go")
    page.wait_for_function("document.getElementById('chips').textContent.includes('<|im_start|>assistant')")
    page.uncheck("#chat")
    page.select_option("#color", "none")
    show(page, "The cat sat on the mat.")
    page.check("#compare")
    page.locator('#chips .tok[data-i="3"]').click()
    page.locator('.panel[data-model="b"] .scores').wait_for()
    assert page.locator(".panel").count() == 2
    page.click("#heatmap")
    page.wait_for_function("document.getElementById('hm-status').textContent.includes('mean fve_nrm')")
    assert page.locator("#color").input_value() == "fve"
    colored = page.locator("#chips .tok").evaluate_all("cs => cs.filter(c => c.style.background).length")
    assert colored == page.locator("#chips .tok").count() - 1  # every token but the sink

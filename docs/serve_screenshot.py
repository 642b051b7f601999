"""Make docs/serve.png: the viewer on the bundled NLA (SmolLM2-135M-Instruct, layer 20), CPU, offline.

    python docs/serve_screenshot.py [--out docs/serve.png]

Starts the viewer on a free loopback port, runs the heatmap on a short text, clicks one token and waits for its
explanation, then screenshots the page with Debian's chromium (playwright, never a downloaded browser).
"""

from __future__ import annotations

import argparse
import time

TEXT = "Marie Curie was born in Warsaw. She moved to Paris to study physics, and later won two Nobel prizes."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/serve.png")
    ap.add_argument("--token", default=" Paris", help="the token to click (its text)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from nlakit.bundle import load_nla
    from nlakit.serve import Model, background, create_app
    from nlakit.targets import load_target

    target = load_target("smollm2")
    nla = load_nla("default", target=target)
    app = create_app({"a": Model(nla, target, label="bundled NLA on SmolLM2-135M-Instruct")})
    t0 = time.time()
    with background(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1240, "height": 900}, device_scale_factor=1)
        page.set_default_timeout(1_800_000)
        page.goto(url)
        page.fill("#text", TEXT)
        page.click("#go")
        page.wait_for_function("document.getElementById('chips').textContent === document.getElementById('text').value")
        page.click("#heatmap")
        page.wait_for_function("document.getElementById('hm-status').textContent.includes('mean fve_nrm')")
        print(f"heatmap done after {time.time() - t0:.0f} s")
        page.locator("#chips .tok", has_text=args.token).first.click()
        page.locator('.panel[data-model="a"] .scores').wait_for()
        print(f"token explained after {time.time() - t0:.0f} s")
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print("wrote", args.out)


if __name__ == "__main__":
    main()

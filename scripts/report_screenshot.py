"""Screenshots of an HTML report (``classify --html`` / ``classify report``) in headless Chromium,
for the docs: the summary with intervals and paired tests, and a model's confusion matrix after
a click on its most frequent mistake's cell (the images of that cell listed below it).

    python scripts/report_screenshot.py recipe/report.html --out docs --model m0

Needs Playwright (``pip install playwright``, in the ``test`` extra) and a Chromium: Debian's
``chromium`` package (``apt install chromium``), or one given with ``--browser``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the report")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNG files")
    parser.add_argument("--model", default="m0", help="the model whose confusion matrix is shown "
                        "(m0 is the report's first)")
    parser.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser"),
                        help="the Chromium executable (default: chromium on the PATH)")
    args = parser.parse_args()
    if not args.browser:
        print("report_screenshot: no chromium on the PATH; apt install chromium, or pass --browser",
              file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.browser)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(args.html.resolve().as_uri())
        summary = args.out / "report-summary.png"
        top = page.locator("#per-class").bounding_box()
        page.screenshot(path=summary, clip={"x": 0, "y": 0, "width": 1400, "height": top["y"]})
        # The off-diagonal cell with the most images: the model's most frequent mistake.
        cells = page.locator(f"td.cell[data-model='{args.model}']")
        best, count = None, 0
        for k in range(cells.count()):
            cell = cells.nth(k)
            text = cell.text_content().strip()
            mistaken = cell.get_attribute("data-true") != cell.get_attribute("data-pred")
            if text and mistaken and int(text) > count:
                best, count = cell, int(text)
        if best is not None:
            best.click()
        page.evaluate("window.scrollTo(0, 0)")  # boxes in page coordinates for a full-page clip
        start = page.locator(f"#{args.model} + h3").bounding_box()
        end = page.locator(f"#mistakes-{args.model}").bounding_box()
        confusion = args.out / "report-confusion.png"
        page.screenshot(path=confusion, full_page=True,
                        clip={"x": 0, "y": start["y"], "width": 1400, "height": end["y"] - start["y"]})
        browser.close()
    print(f"{summary}\n{confusion}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

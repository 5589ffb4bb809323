"""The serve page in a real headless browser (Debian's chromium + chromedriver, Selenium).

Set ``TAXOCLIP_SCREENSHOT=FILE.png`` to also keep the screenshot there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TREE_COLUMNS = [
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species_epithet",
    "species",
    "common_name",
    "score",
]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="the browser test needs Debian's chromium and chromium-driver "
    "(/usr/bin/chromium, /usr/bin/chromedriver): apt-get install chromium chromium-driver",
)


def open_browser(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-extensions",
        "--disable-sync",
        "--window-size=1280,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_the_page_predicts_an_uploaded_photo(serve, images, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server = serve()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    browser = open_browser(tmp_path / "profile")
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(server.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-info"), "12 taxa"))
        picker = browser.find_element(By.ID, "files")
        label = browser.find_element(By.CSS_SELECTOR, "label[for=files]")
        assert label.text == "choose photos"  # the file input has an accessible label
        picker.send_keys(f"{images[0]}\n{broken}")
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "article[data-state]")) == 2)

        good, bad = browser.find_elements(By.CSS_SELECTOR, "article.file-result")
        assert good.get_attribute("data-state") == "done"
        columns = [th.get_attribute("data-col") for th in good.find_elements(By.TAG_NAME, "th")]
        assert columns == TREE_COLUMNS
        rows = good.find_elements(By.CSS_SELECTOR, "tr.result-row")
        assert len(rows) == 5
        cells = {
            td.get_attribute("data-col"): td.text for td in rows[0].find_elements(By.TAG_NAME, "td")
        }
        assert cells["kingdom"] and cells["genus"] and cells["species"].startswith(cells["genus"])
        assert cells["score"].endswith("%")
        thumbnail = good.find_element(By.TAG_NAME, "img")
        assert thumbnail.get_attribute("src").startswith("blob:")
        assert thumbnail.get_attribute("alt") == f"photo {images[0].name}"

        assert bad.get_attribute("data-state") == "error"
        alert = bad.find_element(By.CSS_SELECTOR, ".body [role=alert]")  # in the file's row
        assert "not a readable image" in alert.text
        assert not bad.find_elements(By.CSS_SELECTOR, ".pending")
        assert browser.find_element(By.ID, "status").get_attribute("role") == "status"

        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("TAXOCLIP_SCREENSHOT"):
            shutil.copy(shot, os.environ["TAXOCLIP_SCREENSHOT"])
        problems = [
            entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
        ]
        assert not problems  # no blocked resource, no script error, no failed load
    finally:
        browser.quit()

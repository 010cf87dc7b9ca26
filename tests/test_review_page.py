"""The review page in a real browser (Debian's chromium through Selenium and chromium-driver):
open a result, click a point, choose a colour, save; the next colorize run honours it.

Skipped, with the reason printed, where no browser or driver is installed (``.ci/run``
installs them). ``KOALA_SCREENSHOTS=DIR`` keeps the page's screenshots there."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.color import rgb2lab

from cli.review import make_server
from flows.colorize import colorize_archive
from koala.hints import Hint
from tests.test_colorize_hints import DISC, SIZE, disc_mask, scene


def browser():
    """A headless chromium driven by Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not exe or not driver:
        reason = "no chromium and chromedriver here (apt-get install chromium chromium-driver)"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = exe
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def shot(driver, name: str) -> None:
    folder = os.environ.get("KOALA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_click_a_point_choose_a_colour_save_and_the_rerun_honours_it(
    tmp_path: Path, registry: str, prefect_server: str
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    src, out = tmp_path / "box", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        scene(10 + i).save(src / f"scan{i}.png")
    assert colorize_archive(input=str(src), output=str(out), registry=registry)["new"] == 3
    server = make_server(str(out), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        driver.get(url + "/")
        links = driver.find_elements(By.CSS_SELECTOR, ".grid a")
        assert [a.text for a in links] == ["scan0", "scan1", "scan2"]
        shot(driver, "review-index.png")
        links[1].click()
        pic = WebDriverWait(driver, 20).until(
            lambda d: (
                d.find_element(By.ID, "pic")
                if d.execute_script(
                    "const p=document.getElementById('pic');return p&&p.complete&&p.naturalWidth>0"
                )
                else None
            )
        )
        driver.find_element(By.ID, "named").send_keys("crimson")
        assert driver.find_element(By.ID, "colour").get_attribute("value") == "#dc143c"
        scale = pic.size["width"] / SIZE[0]
        dx = round(DISC[0] * scale - pic.size["width"] / 2)
        dy = round(DISC[1] * scale - pic.size["height"] / 2)
        ActionChains(driver).move_to_element_with_offset(pic, dx, dy).click().perform()
        assert len(driver.find_elements(By.CSS_SELECTOR, "#stage .mark")) == 1  # marked
        assert "crimson at point" in driver.find_element(By.ID, "list").text
        driver.find_element(By.ID, "save").click()
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "status").text.startswith("saved")
        )
        shot(driver, "review-saved.png")
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()

    saved = json.loads((out / "hints" / "scan1.hints.json").read_text())
    (hint,) = saved["hints"]
    assert hint["colour"] == "crimson"
    assert abs(hint["x"] - DISC[0]) <= 3 and abs(hint["y"] - DISC[1]) <= 3

    again = colorize_archive(input=str(src), output=str(out), registry=registry)
    assert again["new"] == 1  # only the hinted scan
    index = pd.read_parquet(out / "index")
    rows = index[index["input_uri"].str.endswith("scan1.png")].sort_values("colorized_at")
    before, after = (rgb2lab(np.asarray(Image.open(u).convert("RGB"))) for u in rows["output_uri"])
    crimson = np.asarray(Hint((0, 0, 1, 1), (220, 20, 60), "crimson").ab)
    inside = disc_mask(-3)
    assert np.hypot(*(after[inside][:, 1:] - crimson).T).mean() < 10  # the disc is crimson now
    assert np.hypot(*(before[inside][:, 1:] - crimson).T).mean() > 20  # and was not before

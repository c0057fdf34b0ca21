"""The demo page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) presses Play.

Nothing is downloaded at run time: Selenium is given the system chromedriver and browser.
A machine without them fails this test (it never skips): `.ci/run` installs them.
The screenshot is kept in test-artifacts/ (or $TTS_TEST_ARTIFACTS).
"""
import os
import shutil
from pathlib import Path

from .conftest import SEED, TOKENS

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("TTS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,1000")
PAGE_TIMEOUT_S = 90  # the request runs on a loaded 2-core machine


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("the browser test needs Debian's chromium and chromium-driver: "
                                 "apt-get install -y chromium chromium-driver (.ci/run installs them)")
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")  # empty: no state from any earlier run
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_the_demo_page_plays_the_stream_as_it_arrives(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(tmp_path / "profile")
    try:
        driver.get(f"{server.url}/")
        wait = WebDriverWait(driver, PAGE_TIMEOUT_S)
        wait.until(lambda d: d.execute_script("return document.getElementById('voice').options.length") > 0)
        driver.execute_script("""
            for (const [id, v] of Object.entries(arguments[0])) document.getElementById(id).value = v;
            document.getElementById('ignore_eos').checked = true;""",
                              {"seed": SEED, "max_new_tokens": TOKENS, "n_timesteps": 2})
        driver.find_element(By.ID, "play").click()  # a real click: the user gesture WebAudio asks for
        wait.until(lambda d: d.execute_script("return window.ttsDemo.state") in ("done", "error"))
        demo = driver.execute_script("return window.ttsDemo")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "http-demo.png"))
        assert demo["state"] == "done", demo
        # every sample of the stream went to WebAudio: the page's text as the server plans it (at the built-in tiny
        # model's char-level tokenizer a text of this length is a long-form request: segments of TOKENS + pauses)
        from pipeline.longform import plan_text
        from pipeline.models import ModelSpec

        text = driver.execute_script("return document.getElementById('text').value")
        plan = plan_text(ModelSpec(), text, {"seed": SEED, "ignore_eos": True, "max_new_tokens": TOKENS})
        samples = plan.total_samples([960 * TOKENS] * len(plan.segments))
        assert demo["samplesScheduled"] == samples
        assert demo["contextState"] == "running"
        assert 0 < demo["firstAudioMs"] <= demo["requestMs"] and len(demo["chunks"]) >= 1
        assert demo["seed"] == str(SEED) and demo["requestId"]
        assert demo["wavBytes"] == 44 + 2 * samples  # the download: a 44-byte header + s16 samples
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
        assert "done" in driver.find_element(By.ID, "status").text
        assert demo["errors"] == []
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        driver.quit()

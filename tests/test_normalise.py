"""Recording-level amplitude normalisation: ``psgvlm render --normalise`` and inference."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from render_helpers import synth_and_render

from engine.epochs import EpochSource
from engine.errors import PSGError
from engine.io.hypnogram import Hypnogram
from engine.normalise import WINDOW_SECONDS, parse_normalise, recording_gain
from engine.preprocess import Preprocessing
from engine.synth import synth_night


@pytest.fixture(scope="module")
def night():
    return synth_night(7, n_epochs=40, fs=200.0, channels=("EEG C4-M1", "EMG chin"))


def _source(night, gain: float, normalise: dict | None) -> EpochSource:
    signals = {label: x * gain for label, x in night.signals.items()}
    return EpochSource.from_arrays(
        signals, night.fs, Hypnogram.from_stages(list(night.stages), 30.0),
        "eeg=C4-M1,emg=chin", Preprocessing(normalise=normalise),
    )  # fmt: skip


def _window_rms(row: np.ndarray, fs: float) -> np.ndarray:
    width = int(WINDOW_SECONDS * fs)
    count = row.size // width
    return np.sqrt((row[: count * width].reshape(count, width) ** 2).mean(axis=1))


def test_a_recording_at_any_gain_is_drawn_alike(night):
    quiet, loud = _source(night, 0.5, {"eeg": 15.0}), _source(night, 2.0, {"eeg": 15.0})
    np.testing.assert_allclose(quiet.signals[0], loud.signals[0], rtol=1e-4, atol=1e-3)
    assert quiet.gains[0] == pytest.approx(4 * loud.gains[0], rel=1e-5)
    assert np.median(_window_rms(loud.signals[0], loud.fs)) == pytest.approx(15.0, rel=1e-4)
    # roles without a target keep their µV: the EMG row scales with the recording's gain
    assert quiet.gains[1] == loud.gains[1] == 1.0
    np.testing.assert_allclose(4 * quiet.signals[1], loud.signals[1], rtol=1e-4, atol=1e-3)
    # without the option the µV are drawn as recorded
    plain = _source(night, 2.0, None)
    assert plain.gains == [1.0, 1.0]
    assert not np.allclose(plain.signals[0], loud.signals[0], atol=1.0)


def test_gaps_and_flat_channels_do_not_set_the_gain():
    fs = 100.0
    rng = np.random.default_rng(0)
    row = rng.normal(0.0, 30.0, int(600 * fs))
    with_gap = row.copy()
    with_gap[: int(200 * fs)] = np.nan  # a stretch without signal
    assert recording_gain(row, fs, 15.0) == pytest.approx(0.5, rel=0.02)
    assert recording_gain(with_gap, fs, 15.0) == pytest.approx(0.5, rel=0.02)
    assert recording_gain(np.zeros(int(600 * fs)), fs, 15.0) == 1.0
    assert recording_gain(row[: int(10 * fs)], fs, 15.0) == 1.0  # under one window


@pytest.mark.parametrize("text", ["eeg", "eeg=0", "eeg=-3", "eeg=abc", "brain=15"])
def test_malformed_targets_are_refused(text):
    with pytest.raises(PSGError, match="--normalise"):
        parse_normalise(text)
    with pytest.raises(ValueError, match="normalise"):
        Preprocessing(normalise={"eeg": -1.0})


def test_render_records_the_option_and_the_model_stages_with_it(tmp_path):
    from vlm.render_setup import RenderConfig

    done, meta = synth_and_render(
        tmp_path, "EEG C4-M1", 4, "--montage", "eeg=C4-M1", "--normalise", "eeg=15"
    )
    assert done.returncode == 0, done.stderr
    nights, out = tmp_path / "nights", tmp_path / "shards"
    assert meta["preprocessing"]["normalise"] == {"eeg": 15.0}
    assert meta["channels"][0]["gain"] > 0 and meta["channels"][0]["gain"] != 1.0
    setup = RenderConfig.from_shards(out)
    assert setup.preprocessing_params().normalise == {"eeg": 15.0}
    bad = subprocess.run(
        [sys.executable, "-m", "psgvlm", "render", f"synthetic:{nights}", "--out",
         str(tmp_path / "bad"), "--normalise", "eeg=-3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--normalise" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_inference_sources_normalise_like_the_training_shards(night):
    from vlm.sources import partial_source

    class Config:  # the two things partial_source reads of a render setup
        channels = [{"role": "eeg", "name": "C4-M1"}]

        @staticmethod
        def preprocessing_params() -> Preprocessing:
            return Preprocessing(normalise={"eeg": 15.0})

    grid = Hypnogram.from_stages(list(night.stages), 30.0)
    signals = {"EEG C4-M1": night.signals["EEG C4-M1"] * 3.0}
    source = partial_source(signals, night.fs, {"EEG C4-M1": "eeg"}, grid, Config())
    reference = _source(night, 1.0, {"eeg": 15.0})
    np.testing.assert_allclose(source.signals[0], reference.signals[0], rtol=1e-4, atol=1e-3)


def test_render_help_names_the_option():
    done = subprocess.run(
        [sys.executable, "-m", "psgvlm", "render", "--help"], capture_output=True, text=True
    )
    assert "--normalise ROLE=UV" in done.stdout

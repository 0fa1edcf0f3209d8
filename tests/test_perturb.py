"""engine.perturb: deterministic signal perturbations and the --perturb grammar."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import PSGError
from engine.perturb import (
    Perturbation,
    PerturbError,
    add_baseline_wander,
    add_electrode_pops,
    add_gaussian_noise,
    add_line_noise,
    channel_seed,
    drop_signal,
    parse_perturb_spec,
)

FS = 100.0


@pytest.fixture(scope="module")
def eeg():
    t = np.arange(int(600 * FS)) / FS
    return 40 * np.sin(2 * np.pi * 1.3 * t) + 10 * np.sin(2 * np.pi * 12 * t)


@pytest.mark.parametrize(
    "perturb",
    [
        lambda x, s: add_gaussian_noise(x, FS, 5.0, s),
        lambda x, s: add_line_noise(x, FS, 40.0, s),
        lambda x, s: add_baseline_wander(x, FS, 100.0, s),
        lambda x, s: add_electrode_pops(x, FS, 3.0, s),
    ],
    ids=["noise", "line", "wander", "pops"],
)
def test_deterministic_by_seed(eeg, perturb):
    first = perturb(eeg, channel_seed(7, "EEG C4-M1"))
    again = perturb(eeg.copy(), channel_seed(7, "EEG C4-M1"))
    other = perturb(eeg, channel_seed(8, "EEG C4-M1"))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, eeg)


def test_noise_reaches_the_requested_snr(eeg):
    for snr in (20.0, 5.0, 0.0):
        noisy = add_gaussian_noise(eeg, FS, snr, 3)
        measured = 10 * np.log10(np.var(eeg) / np.var(noisy - eeg))
        assert measured == pytest.approx(snr, abs=0.2)


def test_gain_line_drop_wander_pops(eeg):
    p = parse_perturb_spec("gain:2")[0]
    np.testing.assert_allclose(p.apply(eeg, FS, "eeg", "EEG", 0), 2 * eeg)
    line = add_line_noise(np.zeros(int(10 * FS)), FS, 2.0, 1, amplitude_uv=20.0)
    assert np.max(np.abs(line)) == pytest.approx(20.0, rel=0.01)
    # 50 and 60 Hz cannot exist in a 100-Hz recording: left unchanged.
    np.testing.assert_array_equal(add_line_noise(eeg, FS, 60.0, 1), eeg)
    assert not drop_signal(eeg, FS, "flat").any()
    assert np.isnan(drop_signal(eeg, FS, "nan")).all()
    wander = add_baseline_wander(np.zeros(int(120 * FS)), FS, 100.0, 2)
    assert np.max(np.abs(wander)) == pytest.approx(100.0)
    spectrum = np.abs(np.fft.rfft(wander))
    freqs = np.fft.rfftfreq(wander.size, 1 / FS)
    assert freqs[np.argmax(spectrum)] <= 0.5
    pops = add_electrode_pops(np.zeros(int(600 * FS)), FS, 6.0, 4, amplitude_uv=300.0)
    steps = np.flatnonzero(np.abs(np.diff(pops)) > 100)
    assert 30 <= steps.size <= 95  # Poisson, mean 60 over 10 min
    assert np.max(np.abs(pops)) >= 300.0 * 0.99


def test_recording_perturbation_is_per_channel_and_pure(eeg):
    signals = {"EEG C4-M1": eeg, "EOG E1-M2": eeg * 2, "EMG chin": eeg / 4}
    fs = dict.fromkeys(signals, FS)
    roles = {"EEG C4-M1": "eeg", "EOG E1-M2": "eog", "EMG chin": "emg"}
    before = {k: v.copy() for k, v in signals.items()}
    noise = Perturbation("noise", 10.0, (("roles", ("eeg", "eog")),))
    out = noise.apply_mapping(signals, fs, roles, seed=5)
    for key in signals:
        np.testing.assert_array_equal(signals[key], before[key])  # inputs untouched
    np.testing.assert_array_equal(out["EMG chin"], signals["EMG chin"])  # role not selected
    assert not np.array_equal(out["EEG C4-M1"], signals["EEG C4-M1"])
    # A channel's stream depends on the seed and its label, not on the other channels.
    alone = noise.apply_mapping({"EEG C4-M1": eeg}, fs, roles, seed=5)
    np.testing.assert_array_equal(alone["EEG C4-M1"], out["EEG C4-M1"])
    drop = parse_perturb_spec("drop:eog/mode=nan")[0]
    dropped = drop.apply_array(np.stack(list(signals.values())), FS, list(roles.values()),
                               list(signals), seed=0)  # fmt: skip
    assert np.isnan(dropped[1]).all() and np.isfinite(dropped[[0, 2]]).all()
    with pytest.raises(PerturbError, match="drop ecg"):
        parse_perturb_spec("drop:ecg")[0].apply_mapping(signals, fs, roles, seed=0)


def test_spec_grammar():
    spec = "noise:snr=20,10,5;gain:0.5,2;line:50/amp=30;wander;pops:rate=4/amp=200;drop:eog,emg;size:448x448"
    labels = [p.label for p in parse_perturb_spec(spec)]
    assert labels == [
        "noise snr=20 dB", "noise snr=10 dB", "noise snr=5 dB", "gain x0.5", "gain x2",
        "line 50 Hz 30 µV", "wander 100 µV", "pops 4/min 200 µV", "drop eog (flat)",
        "drop emg (flat)", "size 448x448",
    ]  # fmt: skip
    assert parse_perturb_spec("size:448x448")[0].image_size == (448, 448)
    assert [p.level for p in parse_perturb_spec("noise")] == [20.0, 10.0, 5.0]
    assert parse_perturb_spec("noise:-3/roles=eeg+eog")[0].option("roles") == ("eeg", "eog")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty"),
        ("blur:3", "unknown perturbation"),
        ("gain:0", "out of range"),
        ("gain:abc", "not a number"),
        ("noise:snr=10/amp=3", "unknown option"),
        ("size:448", "WIDTHxHEIGHT"),
        ("noise:roles=brain", "roles"),
        ("drop:eog/mode=zero", "mode"),
        ("noise:10/snr=5", "twice"),
    ],
)
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(PerturbError, match=match) as info:
        parse_perturb_spec(spec)
    assert isinstance(info.value, PSGError)


def test_bad_arguments_are_refused(eeg):
    with pytest.raises(PerturbError, match="1-D"):
        add_gaussian_noise(eeg.reshape(2, -1), FS, 10, 0)
    with pytest.raises(PerturbError, match="seed"):
        channel_seed(-1, "EEG")
    with pytest.raises(PerturbError, match="sampling rate"):
        add_line_noise(eeg, 0.0, 50, 0)

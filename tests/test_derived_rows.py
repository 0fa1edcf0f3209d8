"""Derived rows: the EEG's fast band (``fast=``) and slow band (``slow=``) drawn beside the
EEG they come from."""

from __future__ import annotations

import numpy as np
import pytest
from render_helpers import synth_and_render
from scipy import signal

from engine.epochs import EpochSource
from engine.errors import ChannelNotFoundError, MontageError
from engine.io.hypnogram import Hypnogram
from engine.montage import resolve_montage
from engine.normalise import ROLE_TARGETS_UV, WINDOW_SECONDS
from engine.preprocess import Preprocessing
from engine.synth import synth_night

FAST = "eeg=C4-M1,fast=C4-M1"
SLOW = "eeg=C4-M1,fast=C4-M1,slow=C4-M1"


@pytest.fixture(scope="module")
def night():
    return synth_night(11, n_epochs=40, fs=200.0, channels=("EEG C4-M1", "EMG chin"))


def _source(night, gain: float, montage: str = FAST, normalise=None) -> EpochSource:
    signals = {label: x * gain for label, x in night.signals.items()}
    return EpochSource.from_arrays(
        signals, night.fs, Hypnogram.from_stages(list(night.stages), 30.0), montage,
        Preprocessing(normalise=normalise),
    )  # fmt: skip


def _median_window_rms(row: np.ndarray, fs: float) -> float:
    width = int(WINDOW_SECONDS * fs)
    count = row.size // width
    return float(np.median(np.sqrt((row[: count * width].reshape(count, width) ** 2).mean(1))))


@pytest.mark.parametrize(
    ("labels", "expected", "via"),
    [
        (["EEG C4-M1", "EMG chin"], "EEG C4-M1", "exact"),
        (["EMG", "EEG"], "EEG", "alias"),  # SHHS
        (["CZ-A1", "EOG1-A1"], "CZ-A1", "fallback"),  # DREAMS: a vertex lead
        (["EEG Fpz-Cz", "EEG Pz-Oz"], "EEG Fpz-Cz", "fallback"),  # Sleep-EDF
    ],
)
def test_the_fast_row_follows_its_eeg_however_that_was_found(labels, expected, via):
    eeg, fast = resolve_montage(FAST, labels)
    assert (eeg.role, fast.role) == ("eeg", "fast")
    assert eeg.label == fast.label == expected and eeg.via == fast.via == via
    # a fast row alone resolves as an EEG request would
    assert resolve_montage("fast=C4-M1", labels)[0].label == expected


def test_a_recording_without_eeg_names_the_eeg_it_lacks():
    with pytest.raises(ChannelNotFoundError) as err:
        resolve_montage(FAST, ["ECG", "EMG chin"], source="ecg.edf")
    text = str(err.value)
    assert "ecg.edf" in text and "eeg=C4-M1" in text and "fast=" not in text
    assert "ECG, EMG chin" in text


@pytest.mark.parametrize(
    ("montage", "row", "band", "margin", "outside"),
    [
        (FAST, 1, (10.0, 45.0), 500, (0.0, 5.0)),
        (SLOW, 2, (0.5, 2.0), 3000, (4.0, 50.0)),
    ],
    ids=["fast", "slow"],
)
def test_a_derived_row_is_its_eegs_band_at_a_recording_level_scale(
    night, montage, row, band, margin, outside
):
    quiet, loud = _source(night, 0.5, montage), _source(night, 2.0, montage)
    fs, role = loud.fs, montage.split(",")[row].partition("=")[0]
    # the same picture whatever the amplifier's gain; the EEG row keeps its µV
    np.testing.assert_allclose(quiet.signals[row], loud.signals[row], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(4 * quiet.signals[0], loud.signals[0], rtol=1e-4, atol=1e-2)
    assert loud.gains[0] == 1.0 and quiet.gains[row] == pytest.approx(4 * loud.gains[row])
    assert _median_window_rms(loud.signals[row], fs) == pytest.approx(ROLE_TARGETS_UV[role])
    # its content is the EEG channel's band: scipy's polyphase resampling to 100 Hz and
    # zero-phase Butterworth band-pass of the recorded channel, times the gain
    raw = 2.0 * np.asarray(night.signals["EEG C4-M1"], np.float64)
    sos = signal.butter(4, band, "bandpass", fs=fs, output="sos")
    reference = loud.gains[row] * signal.sosfiltfilt(sos, signal.resample_poly(raw, 1, 2))
    middle = slice(margin, -margin)
    error = loud.signals[row][middle] - reference[middle]
    assert np.sqrt(np.mean(error**2)) < 0.01 * ROLE_TARGETS_UV[role]
    freqs, power = signal.welch(loud.signals[row], fs, nperseg=2048)
    out_of_band = power[(freqs > outside[0]) & (freqs < outside[1])].sum()
    assert out_of_band < 0.01 * power[(freqs > band[0]) & (freqs < band[1])].sum()


def test_normalise_can_set_the_fast_target_and_leaves_other_roles_alone(night):
    source = _source(night, 1.0, normalise={"fast": 4.0})
    assert _median_window_rms(source.signals[1], source.fs) == pytest.approx(4.0)
    assert source.gains[0] == 1.0


def test_captions_and_prompt_name_the_fast_row(night):
    from vlm.data import channel_phrase

    assert _source(night, 1.0).drawn_labels == ["C4-M1", "C4-M1 10-45Hz"]
    phrase = channel_phrase([{"role": "eeg", "name": "C4-M1"}, {"role": "fast", "name": "C4-M1"}])
    assert phrase == "Channels from top to bottom: EEG C4-M1, EEG C4-M1 fast band 10-45 Hz."
    assert "EMG" not in phrase


def test_captions_and_prompt_name_the_slow_row(night):
    from vlm.data import channel_phrase

    assert _source(night, 1.0, SLOW).drawn_labels == ["C4-M1", "C4-M1 10-45Hz", "C4-M1 0.5-2Hz"]
    rows = [{"role": role, "name": "C4-M1"} for role in ("eeg", "fast", "slow")]
    assert channel_phrase(rows) == (
        "Channels from top to bottom: EEG C4-M1, EEG C4-M1 fast band 10-45 Hz, "
        "EEG C4-M1 slow band 0.5-2 Hz."
    )


def test_another_derivation_for_a_fast_model_carries_its_fast_row():
    from vlm.render_setup import RenderConfig
    from vlm.sources import training_montage

    setup = RenderConfig(
        channels=[{"role": "eeg", "name": "C4-M1"}, {"role": "fast", "name": "C4-M1"}],
        render={"scales_uv": [75.0, 50.0]},
    )
    assert str(training_montage(setup, "eeg=Cz-A1")) == "eeg=Cz-A1,fast=Cz-A1"
    assert str(training_montage(setup)) == FAST
    with pytest.raises(MontageError, match="rows"):
        training_montage(setup, "eog=E1-M2")
    three = RenderConfig(
        channels=[{"role": role, "name": "C4-M1"} for role in ("eeg", "fast", "slow")],
        render={"scales_uv": [75.0, 50.0, 75.0]},
    )
    assert str(training_montage(three, "eeg=Cz-A1")) == "eeg=Cz-A1,fast=Cz-A1,slow=Cz-A1"


def test_in_memory_recordings_draw_the_fast_row_from_their_eeg(night):
    from vlm.sources import partial_source

    class Config:  # the two things partial_source reads of a render setup
        channels = [{"role": "eeg", "name": "C4-M1"}, {"role": "fast", "name": "C4-M1"}]

        @staticmethod
        def preprocessing_params() -> Preprocessing:
            return Preprocessing()

    grid = Hypnogram.from_stages(list(night.stages), 30.0)
    signals = {"EEG": night.signals["EEG C4-M1"] * 3.0}
    source = partial_source(signals, {"EEG": 200.0}, {"EEG": "eeg"}, grid, Config())
    assert [c.label for c in source.channels] == ["EEG", "EEG"]
    np.testing.assert_allclose(source.signals, _source(night, 3.0).signals, rtol=1e-3, atol=1e-2)


def test_the_default_stager_is_chosen_by_the_channels_a_recording_fills():
    from vlm.defaults import pick_stager

    class Fake:
        def __init__(self, name: str, roles: list[str]) -> None:
            self.name, self.roles, self.montage_spec = name, roles, ",".join(roles)

        def resolve(self, labels) -> list:
            return []

    eeg_fast = Fake("eeg_fast", ["eeg", "fast"])
    three = Fake("three", ["eeg", "eog", "emg"])
    assert pick_stager([eeg_fast, three], ["EEG"]) is three  # 3 channels read, not 2 rows
    assert pick_stager([eeg_fast, Fake("eeg", ["eeg"])], ["EEG"]) is eeg_fast  # a tie


def test_render_draws_the_fast_row_from_the_command_line(tmp_path):
    done, meta = synth_and_render(tmp_path, "EEG C3-M2", 5, "--montage", FAST)
    assert done.returncode == 0, done.stderr
    eeg, fast = meta["channels"]
    assert eeg["source"] == fast["source"] == "EEG C3-M2"
    assert (fast["role"], fast["drawn"], fast["scale_uv"]) == ("fast", "C3-M2 10-45Hz", 50.0)
    assert "gain" in fast and "gain" not in eeg
    assert meta["preprocessing"]["bands"]["fast"] == [10.0, 45.0]


def test_render_draws_the_slow_row_from_the_command_line(tmp_path):
    done, meta = synth_and_render(tmp_path, "EEG C3-M2", 5, "--montage", SLOW)
    assert done.returncode == 0, done.stderr
    eeg, fast, slow = meta["channels"]
    assert eeg["source"] == fast["source"] == slow["source"] == "EEG C3-M2"
    assert (slow["role"], slow["drawn"], slow["scale_uv"]) == ("slow", "C3-M2 0.5-2Hz", 75.0)
    assert "gain" in slow and meta["preprocessing"]["bands"]["slow"] == [0.5, 2.0]

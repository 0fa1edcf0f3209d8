"""Sleep statistics (vlm.hypno): hand-computed values, YASA's definitions, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import HypnogramError
from vlm.hypno import STAT_KEYS, sleep_statistics

W, N1, N2, N3, R, U = 0, 1, 2, 3, 4, -1

# 23 epochs of 30 s. Index: stage
#  0-1 W W | 2 N1 | 3-4 N2 N2 | 5 W | 6-17 N2 N2 N3 N3 N3 N2 R R R N2 N2 N1 | 18 UNK |
#  19-20 R R | 21-22 W W
FIXED = [W, W, N1, N2, N2, W, N2, N2, N3, N3, N3, N2, R, R, R, N2, N2, N1, U, R, R, W, W]

# Worked out by hand (minutes = epochs / 2):
# first sleep = epoch 2, last sleep = epoch 20 -> SPT = 19 epochs
# sleep epochs: N1 {2, 17}, N2 {3, 4, 6, 7, 11, 15, 16}, N3 {8, 9, 10}, R {12, 13, 14, 19, 20}
# -> TST = 2 + 7 + 3 + 5 = 17 epochs; WASO = W inside SPT = {5} = 1 epoch; UNK = {18}
# awakenings (sleep epoch followed by W): 4->5 and 20->21 = 2 (17->18 goes to UNK)
# SOL_5min: first run of >= 10 sleep epochs is 6..17 (12 epochs) -> epoch 6
HAND = {
    "TIB": 11.5,  # 23 epochs
    "SPT": 9.5,  # 19 epochs
    "WASO": 0.5,
    "TST": 8.5,
    "SE": 73.913,  # 100 * 8.5 / 11.5 = 73.9130...
    "SME": 89.4737,  # 100 * 8.5 / 9.5 = 89.47368...
    "SFI": 14.1176,  # 2 / (8.5 / 60) = 14.11764...
    "n_awakenings": 2,
    "SOL": 1.0,  # epoch 2
    "SOL_5min": 3.0,  # epoch 6
    "Lat_REM": 6.0,  # first R at epoch 12
    "WAKE": 2.5,  # epochs 0, 1, 5, 21, 22
    "N1": 1.0,
    "N2": 3.5,
    "N3": 1.5,
    "REM": 2.5,
    "UNS": 0.5,
    "%N1": 11.7647,  # 100 * 1 / 8.5
    "%N2": 41.1765,  # 100 * 3.5 / 8.5
    "%N3": 17.6471,  # 100 * 1.5 / 8.5
    "%REM": 29.4118,  # 100 * 2.5 / 8.5
}


def test_fixed_hypnogram_matches_hand_computed_values():
    stats = sleep_statistics(FIXED, epoch_length=30.0)
    assert list(stats) == [k for k in STAT_KEYS if k in HAND]
    for key, expected in HAND.items():
        assert stats[key] == pytest.approx(expected, abs=1e-4), key


def test_matches_yasa_when_installed():
    yasa = pytest.importorskip("yasa")
    names = {W: "WAKE", N1: "N1", N2: "N2", N3: "N3", R: "REM", U: "UNS"}
    rng = np.random.default_rng(3)
    cases = [FIXED, rng.choice([U, W, N1, N2, N3, R], size=300).tolist(), [W, W, N2, W, N2]]
    for stages in cases:
        reference = yasa.Hypnogram([names[s] for s in stages], freq="30s", n_stages=5)
        expected = {k: float(v) for k, v in reference.sleep_statistics().items()}
        ours = sleep_statistics(stages)
        assert ours.pop("n_awakenings") == round(expected["SFI"] * expected["TST"] / 60)
        assert set(ours) == set(expected)
        for key, value in expected.items():
            if math.isnan(value):
                assert math.isnan(ours[key]), key
            else:
                assert ours[key] == pytest.approx(value, abs=1e-4), key


def test_epoch_length_scales_minutes_not_ratios():
    stats30 = sleep_statistics(FIXED, 30.0)
    stats20 = sleep_statistics(FIXED, 20.0)
    for key in ("TIB", "TST", "WASO", "SOL", "Lat_REM", "N2"):
        assert stats20[key] == pytest.approx(stats30[key] * 2 / 3, abs=1e-4), key
    for key in ("SE", "SME", "%N2", "n_awakenings"):
        assert stats20[key] == stats30[key], key
    # 5 minutes of persistent sleep are 15 epochs of 20 s: the run 6..17 is too short now
    assert math.isnan(stats20["SOL_5min"])


def test_night_without_sleep_has_undefined_latencies():
    stats = sleep_statistics([W, W, U, W])
    assert stats["TIB"] == 2.0 and stats["TST"] == 0.0 and stats["SPT"] == 0.0
    assert stats["SE"] == 0.0 and stats["n_awakenings"] == 0
    for key in ("WASO", "SME", "SFI", "SOL", "SOL_5min", "Lat_REM", "%N2"):
        assert math.isnan(stats[key]), key


@pytest.mark.parametrize(
    "stages, epoch_length, message",
    [([], 30.0, "empty"), ([0, 7], 30.0, "unknown stage ids"), ([0.5], 30.0, "integer"),
     ([0, 1], 0.0, "positive"), ([[0, 1]], 30.0, "1-D")],
    ids=["empty", "bad-id", "float", "zero-epoch", "2d"],
)  # fmt: skip
def test_bad_input_is_refused(stages, epoch_length, message):
    with pytest.raises(HypnogramError, match=message):
        sleep_statistics(stages, epoch_length)

"""``scripts/band_medians.py``: per-stage EEG amplitude by band, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.io.hypnogram import read_hypnogram
from engine.preprocess import preprocess
from engine.stages import Stage
from engine.synth import synth_night, write_night

ROOT = Path(__file__).resolve().parents[1]


def test_band_medians_of_a_synthetic_night(tmp_path):
    night = synth_night(21, n_epochs=40, fs=200.0, channels=("EEG C4-M1",))
    psg, hyp = write_night(night, tmp_path, "synth-0021")[:2]
    out = tmp_path / "medians.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "band_medians.py"), str(psg), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(out.read_text())
    assert result["channel"] == "EEG C4-M1" and result["fs"] == 200.0
    grid = read_hypnogram(hyp).to_epochs()
    drawn = preprocess(night.signals["EEG C4-M1"].astype(np.float64), 200.0, "eeg", 100.0)
    counted = 0
    for stage, row in result["stages"].items():
        starts = [round(grid.onsets[i] * 100) for i in np.flatnonzero(grid.stages == Stage[stage])]
        starts = [a for a in starts if a + 3000 <= drawn.size]  # whole epochs only
        assert row["epochs"] == len(starts)
        counted += len(starts)
        rms = [np.sqrt(np.mean(drawn[a : a + 3000] ** 2)) for a in starts]
        assert row["broad"] == round(float(np.median(rms)), 2)
        assert 0 < row["0.5-2 Hz"] < row["broad"]
    assert counted >= 39  # the 40 epochs, but a last one cut short by the resampling
    assert f"| {psg} | EEG C4-M1 | 200 |" in done.stdout

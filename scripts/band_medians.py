"""Per-stage EEG amplitude by band, in synthetic and real recordings (issue 19).

For each recording: the EEG the montage's ``eeg`` entry resolves to, preprocessed as the
images draw it (role ``eeg``, 100 Hz, :func:`engine.preprocess.preprocess`), then the rms
of each scored epoch in each band (zero-phase 4th-order Butterworth, scipy), and the median
over the epochs of each stage. Prints one markdown row per recording and stage, and with
``--out`` writes them as JSON too.

    python scripts/band_medians.py prerau:../shared/data/prerau \\
        dreams:../shared/data/dreams-dev/excerpt1.txt out/default/fastrole/nights/*-PSG.edf \\
        --out bench/results/dev/band_medians.json

Synthetic nights (``synth-NNNN-PSG.edf``) are read with the hypnogram beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.signal as sps

from engine.montage import resolve_montage
from engine.preprocess import preprocess
from engine.stages import Stage
from vlm.sources import open_recording

BANDS: dict[str, tuple[float, float] | None] = {
    "0.5-2 Hz": (0.5, 2.0),
    "2-16 Hz": (2.0, 16.0),
    "broad": None,
}
RATE = 100.0


def stage_medians(spec: str) -> dict[str, dict[str, float | int]]:
    """Stage -> {band: median epoch rms (µV), "epochs": count} for one recording."""
    hypnogram = None
    if spec.endswith("-PSG.edf"):
        hypnogram = spec.replace("-PSG.edf", "-Hypnogram.edf")
    rec = open_recording(spec, hypnogram)
    label = resolve_montage("eeg=C4-M1", list(rec.labels))[0].label
    raw, fs = rec.raw(label)
    drawn = preprocess(np.asarray(raw, np.float64), fs, "eeg", RATE)
    filtered = {
        name: drawn if band is None
        else sps.sosfiltfilt(sps.butter(4, band, "bandpass", fs=RATE, output="sos"), drawn)
        for name, band in BANDS.items()
    }  # fmt: skip
    grid = rec.hypnogram
    rows: dict[str, dict[str, float | int]] = {}
    for stage in (Stage.W, Stage.N1, Stage.N2, Stage.N3, Stage.R):
        picked = np.flatnonzero(grid.stages == int(stage))
        spans = [
            (
                int(round(grid.onsets[i] * RATE)),
                int(round((grid.onsets[i] + grid.durations[i]) * RATE)),
            )
            for i in picked
        ]
        spans = [(a, b) for a, b in spans if b <= drawn.size and b > a]
        if not spans:
            continue
        row: dict[str, float | int] = {"epochs": len(spans)}
        for name, values in filtered.items():
            rms = [float(np.sqrt(np.mean(values[a:b] ** 2))) for a, b in spans]
            row[name] = round(float(np.median(rms)), 2)
        rows[stage.name] = row
    return {"recording": str(rec), "channel": label, "fs": fs, "stages": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "recordings", nargs="+", help="EDF paths, prerau:DIR, dreams:DIR/excerptN.txt"
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    results = [stage_medians(spec) for spec in args.recordings]
    bands = list(BANDS)
    print("| recording | channel | fs | stage | epochs | " + " | ".join(bands) + " |")
    print("|---|---|---|---|---|" + "---|" * len(bands))
    for result in results:
        for stage, row in result["stages"].items():
            cells = " | ".join(f"{row[b]:.1f}" for b in bands)
            print(f"| {result['recording']} | {result['channel']} | {result['fs']:g} | {stage} "
                  f"| {row['epochs']} | {cells} |")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

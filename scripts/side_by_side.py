"""Write engine-vs-matplotlib images side by side, one epoch of each sleep stage.

Run from the repository root::

    python scripts/side_by_side.py [--out bench/out/side_by_side] [--seed 0] [--height 224]

Signals come from :func:`engine.synth.synth_night` (a synthetic night at 100 Hz); when
that module is missing, sinusoid mixtures stand in. Each output PNG holds the engine image
(left) and the matplotlib reference (right), separated by a grey bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reference import render_matplotlib  # noqa: E402
from engine.encode import encode_image  # noqa: E402
from engine.raster import RenderSpec, render  # noqa: E402
from engine.stages import STAGE_NAMES  # noqa: E402

MONTAGE = ("EEG C4-M1", "EEG F4-M1", "EOG E1-M2", "EOG E2-M1", "EMG chin", "ECG")
FS = 100.0
EPOCH_SAMPLES = int(30 * FS)


def _role(label: str) -> str:
    return label.split()[0].lower()


def stage_epochs(seed: int) -> dict[str, np.ndarray]:
    """One ``(C, S)`` epoch per stage name, from a synthetic night (or sinusoids)."""
    try:
        from engine.synth import synth_night
    except ImportError:
        return _sinusoid_epochs(seed)
    night = synth_night(seed, n_epochs=600, fs=FS, channels=MONTAGE, randomize=False)
    signals = np.stack([np.asarray(night.signals[label], np.float32) for label in MONTAGE])
    epochs = {}
    for stage, name in enumerate(STAGE_NAMES):
        hits = np.flatnonzero(np.asarray(night.stages) == stage)
        if hits.size:
            k = int(hits[hits.size // 2])
            epochs[name] = signals[:, k * EPOCH_SAMPLES : (k + 1) * EPOCH_SAMPLES]
    return epochs


def _sinusoid_epochs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(EPOCH_SAMPLES) / FS
    dominant = {"W": 10.0, "N1": 6.0, "N2": 13.0, "N3": 1.0, "R": 5.0}
    out = {}
    for name, freq in dominant.items():
        eeg = 30 * np.sin(2 * np.pi * freq * t) + 10 * rng.standard_normal(t.size)
        eog = 40 * np.sin(2 * np.pi * 0.3 * t) + 5 * rng.standard_normal(t.size)
        emg = 8 * rng.standard_normal(t.size)
        ecg = 800 * (np.sin(2 * np.pi * 1.1 * t) > 0.98)
        out[name] = np.stack([eeg, eeg * 0.8, eog, -eog, emg, ecg]).astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "side_by_side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--height", type=int, default=224)
    args = parser.parse_args(argv)
    spec = RenderSpec.for_roles(
        [_role(label) for label in MONTAGE],
        width=args.width,
        height=args.height,
        labels=MONTAGE,
        grid=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, epoch in stage_epochs(args.seed).items():
        engine = render(epoch[None], spec)[0]
        reference = render_matplotlib(epoch[None], spec)[0]
        bar = np.full((spec.height, 4), 128, np.uint8)
        path = args.out / f"{name}.png"
        path.write_bytes(encode_image(np.hstack([engine, bar, reference]), "png"))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

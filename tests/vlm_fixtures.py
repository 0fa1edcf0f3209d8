"""Fixture shards for the vlm tests, written to the shard contract of docs/ARCHITECTURE.md.

Each epoch image shows three channels (EEG, EOG, EMG) as polylines whose frequency and
amplitude depend on the stage, with random phase and noise; subjects are split between
train and test so accuracy is measured on held-out subjects. Replace with
``engine.pipeline`` synthetic shards once that renders fast enough for CI.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from engine.stages import STAGE_NAMES

__all__ = ["CHANNELS", "draw_epoch", "write_shards"]

CHANNELS = [
    {"role": "eeg", "name": "C4-M1", "label": "EEG C4-M1", "scale_uv": 100.0},
    {"role": "eog", "name": "E1-M2", "label": "EOG E1-M2", "scale_uv": 200.0},
    {"role": "emg", "name": "chin", "label": "EMG chin", "scale_uv": 50.0},
]
# (cycles across the image, relative amplitude) per channel, per stage W N1 N2 N3 R.
_WAVES = {
    0: [(24, 0.35), (3, 0.8), (40, 0.9)],
    1: [(14, 0.45), (2, 0.5), (40, 0.5)],
    2: [(9, 0.6), (1, 0.1), (40, 0.35)],
    3: [(3, 0.95), (1, 0.1), (40, 0.3)],
    4: [(16, 0.4), (6, 0.9), (40, 0.05)],
}


def draw_epoch(
    cls: int, rng: np.random.Generator, width: int = 224, height: int = 224
) -> np.ndarray:
    """A white-on-black uint8 image of one synthetic epoch of stage ``cls``."""
    image = np.zeros((height, width), dtype=np.uint8)
    band = height // len(CHANNELS)
    x = np.arange(width + 1)
    rows = np.arange(height)[:, None]
    for c, (cycles, amp) in enumerate(_WAVES[cls]):
        cycles *= rng.uniform(0.85, 1.15)
        phase = rng.uniform(0, 2 * np.pi)
        y = np.sin(2 * np.pi * cycles * x / width + phase) * amp
        y += rng.normal(0, 0.06, size=y.shape)
        y = (c + 0.5) * band + np.clip(y, -1, 1) * 0.45 * band
        lo, hi = np.minimum(y[:-1], y[1:]), np.maximum(y[:-1], y[1:])
        image[(rows >= np.floor(lo)) & (rows <= np.ceil(hi))] = 255
    return image


def write_shards(
    out_dir: str | Path,
    *,
    subjects: dict[str, list[str]] | None = None,
    epochs_per_subject: int = 40,
    per_shard: int = 50,
    width: int = 224,
    height: int = 224,
    unknown_every: int = 17,
    image_field: str = "png",
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write ``{split}-{shard:06d}.tar`` shards; every ``unknown_every``-th epoch has cls -1.

    Returns the shard paths per split.
    """
    subjects = subjects or {"train": ["s01", "s02", "s03", "s04"], "test": ["s05", "s06"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for split, names in subjects.items():
        samples = []
        for subject in names:
            for epoch in range(epochs_per_subject):
                cls = (
                    -1
                    if unknown_every and epoch % unknown_every == unknown_every - 1
                    else int(rng.integers(0, len(STAGE_NAMES)))
                )
                samples.append((subject, epoch, cls))
        paths = []
        for shard, start in enumerate(range(0, len(samples), per_shard)):
            path = out / f"{split}-{shard:06d}.tar"
            with open(path, "wb") as f, wds.TarWriter(f, mtime=0, encoder=False) as writer:
                for subject, epoch, cls in samples[start : start + per_shard]:
                    pixels = draw_epoch(max(cls, 0), rng, width, height)
                    if image_field == "npy":
                        buf = io.BytesIO()
                        np.save(buf, pixels)
                        data = buf.getvalue()
                    else:
                        buf = io.BytesIO()
                        Image.fromarray(pixels).save(buf, format="PNG")
                        data = buf.getvalue()
                    recording = f"{subject}n1"
                    meta = {
                        "dataset": "fixture",
                        "subject": subject,
                        "recording": recording,
                        "epoch": epoch,
                        "onset": 30.0 * epoch,
                        "duration": 30.0,
                        "stage": STAGE_NAMES[cls] if cls >= 0 else "UNK",
                        "raw_label": str(cls),
                        "scorer": 1,
                        "split": split,
                        "fs": 100.0,
                        "channels": CHANNELS,
                        "render": {"width": width, "height": height},
                        "engine_version": "test",
                    }
                    writer.write(
                        {
                            "__key__": f"fixture_{recording}_{epoch:05d}",
                            image_field: data,
                            "cls": str(cls).encode(),
                            "json": json.dumps(meta).encode(),
                        }
                    )
            paths.append(path)
        written[split] = paths
    return written

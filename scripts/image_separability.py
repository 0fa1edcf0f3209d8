"""Is a stage visible in the rendered images? A diagnostic for issue 19.

A gradient-boosted classifier (scikit-learn) is trained on synthetic training nights and
scored on held-out synthetic nights twice, on the same epochs:

- **image**: simple statistics of each image's ink, column by column (how much ink, how
  far the trace spreads, where it sits), in blocks of 8 (16 above 700 px) columns, plus
  the target epoch's summary;
- **signal**: the log band powers (Welch) of the same epochs' preprocessed EEG (the 100-Hz
  signal the image is drawn from; the target epoch only), in the classic bands.

If the signal features recall a stage and the image features do not, the stage is lost in
the picture as drawn (size, pixels per second, µV per pixel), whatever model reads it.
Both sets are rendered here from a ``scripts/train_default_stager.sh`` run's nights
(training) and calibration nights (held out), at the run's image size and context unless
told otherwise. Run from the repository root::

    python scripts/image_separability.py out/default/frag --out bench/results/dev/separability
    python scripts/image_separability.py out/default/frag --size 672x224 --out ...

Writes ``separability.json`` and ``separability.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import welch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from engine.epochs import open_epochs
from engine.pipeline import RenderSettings, render_dataset

STAGES = ("W", "N1", "N2", "N3", "R")
BANDS = ((0.5, 2), (2, 4), (4, 8), (8, 12), (12, 16), (16, 25), (25, 35))


def image_features(png: bytes, context: int, strips: int) -> np.ndarray:
    """Per-column ink statistics of each strip of one image."""
    image = 255 - np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
    height = image.shape[0] // strips
    return np.concatenate([
        _strip_features(image[i * height : (i + 1) * height] / 255, context)
        for i in range(strips)
    ])  # fmt: skip


def _strip_features(ink: np.ndarray, context: int) -> np.ndarray:
    ink = ink[ink.shape[0] // 8 :]  # the channel label's rows cut off
    rows = np.arange(ink.shape[0])[:, None]
    amount = ink.sum(0)
    weight = amount + 1e-6
    centre = (ink * rows).sum(0) / weight
    spread = np.sqrt((ink * (rows - centre) ** 2).sum(0) / weight)
    block = 16 if ink.shape[1] > 700 else 8
    features = []
    for column in (amount, spread, centre):
        blocks = column[: column.size // block * block].reshape(-1, block)
        features += [blocks.mean(1), blocks.std(1)]
    width = ink.shape[1] // (2 * context + 1)
    target = slice(context * width, (context + 1) * width)
    features.append(np.array([
        amount[target].mean(), amount[target].std(), np.percentile(amount[target], 90),
        spread[target].mean(), np.percentile(spread[target], 90),
        np.abs(np.diff(centre[target])).mean(),
    ]))  # fmt: skip
    return np.concatenate(features)


def shard_samples(pattern: str) -> dict[tuple[str, int], tuple[bytes, str]]:
    """``(recording, epoch index) -> (png, stage)`` of every scored sample in the shards."""
    samples = {}
    for shard in sorted(glob.glob(pattern)):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for fields in members.values():
            meta = json.loads(fields["json"])
            if meta["stage"] in STAGES:
                samples[(meta["recording"], int(meta["epoch"]))] = (
                    fields["png"],
                    meta["stage"],
                )
    return samples


def signal_features(nights: Path, montage: str) -> dict[tuple[str, int], np.ndarray]:
    """``(recording, epoch index) -> log band powers`` of the target epochs' EEG."""
    out = {}
    for psg in sorted(nights.glob("*-PSG.edf")):
        source = open_epochs(psg, psg.with_name(psg.name.replace("PSG", "Hypnogram")), montage)
        for batch in source.iter_batches(512):
            freqs, power = welch(batch.signals[:, 0], fs=source.fs, nperseg=int(4 * source.fs))
            bands = [power[:, (freqs >= lo) & (freqs < hi)].mean(1) for lo, hi in BANDS]
            rows = np.log(np.stack(bands, 1) + 1e-6)
            total = np.log(power[:, (freqs >= 0.5) & (freqs < 35)].sum(1) + 1e-6)[:, None]
            for index, row in zip(batch.index, np.hstack([rows, rows - total])):
                out[(psg.name.removesuffix("-PSG.edf"), int(index))] = row
    return out


def score(train: tuple, test: tuple) -> dict:
    model = HistGradientBoostingClassifier(max_iter=300, random_state=0).fit(*train)
    predicted = model.predict(test[0])
    per_stage = f1_score(test[1], predicted, labels=list(STAGES), average=None, zero_division=0)
    return {
        "accuracy": round(accuracy_score(test[1], predicted), 3),
        "kappa": round(cohen_kappa_score(test[1], predicted), 3),
        "macro_f1": round(f1_score(test[1], predicted, average="macro"), 3),
        "f1": {stage: round(value, 3) for stage, value in zip(STAGES, per_stage)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a train_default_stager.sh run folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--montage", default="eeg=C4-M1", help="drawn strips (EEG first)")
    parser.add_argument("--size", help="WIDTHxHEIGHT (default: the run's)")
    parser.add_argument("--context", type=int, help="neighbours each side (default: the run's)")
    parser.add_argument("--normalise", help="as psgvlm render --normalise")
    args = parser.parse_args()
    for needed in ("train/adapter/render.json", "nights", "calibration-nights"):
        if not (args.run / needed).exists():
            parser.error(f"{args.run / needed} not found: RUN must be a finished "
                         "scripts/train_default_stager.sh run folder")  # fmt: skip
    render = json.loads((args.run / "train/adapter/render.json").read_text())["render"]
    width, height = (
        map(int, args.size.lower().split("x")) if args.size else (render["width"], render["height"])
    )
    context = render["context"] if args.context is None else args.context
    size, strips = f"{width}x{height}", args.montage.count("=")
    settings = RenderSettings(montage=args.montage, width=width, height=height,
                              context=context, normalise=args.normalise)  # fmt: skip
    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, nights in (("train", "nights"), ("held_out", "calibration-nights")):
            shards = Path(tmp) / name
            render_dataset([f"synthetic:{args.run / nights}"], shards, settings,
                           split=(1.0, 0.0, 0.0), workers=2, progress=False)  # fmt: skip
            samples = shard_samples(str(shards / "train-*.tar"))
            signals = signal_features(args.run / nights, "eeg=C4-M1")
            keys = sorted(set(samples) & set(signals))
            data[name] = (
                np.array([image_features(samples[k][0], context, strips) for k in keys]),
                np.array([signals[k] for k in keys]),
                np.array([samples[k][1] for k in keys]),
            )
    train, test = data["train"], data["held_out"]
    report = {
        "command": " ".join(["python scripts/image_separability.py", *sys.argv[1:]]),
        "image_size": size,
        "context": context,
        "montage": args.montage,
        "normalise": args.normalise,
        "epochs": {"train": len(train[2]), "held_out": len(test[2])},
        "image": score((train[0], train[2]), (test[0], test[2])),
        "signal": score((train[1], train[2]), (test[1], test[2])),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "separability.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Stage separability: images vs signal (synthetic held-out nights)",
        "",
        f"`{report['command']}`: {size}, context {context}, montage {args.montage}"
        f"{', normalise ' + args.normalise if args.normalise else ''}; "
        f"{report['epochs']['train']} training epochs, {report['epochs']['held_out']} held out.",
        "",
        "| features | accuracy | κ | macro-F1 | " + " | ".join(f"F1 {s}" for s in STAGES) + " |",
        "|---" * (4 + len(STAGES)) + "|",
    ]
    for name in ("image", "signal"):
        r = report[name]
        lines.append(
            f"| {name} | {r['accuracy']} | {r['kappa']} | {r['macro_f1']} | "
            + " | ".join(str(r["f1"][s]) for s in STAGES)
            + " |"
        )
    (args.out / "separability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

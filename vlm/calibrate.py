"""Fit a stager's calibration on synthetic nights, and measure ECE on evaluation reports.

::

    python -m vlm.calibrate fit --model tiny:qwen2vl --adapter RUN/adapter \\
        --nights RUN/calibration-nights
    python -m vlm.calibrate ece --adapter RUN/adapter out/dev/eval/NAME/predictions.csv

``fit`` stages the nights with the adapter (raw probabilities), fits the temperature
(:func:`vlm.calibration.fit_temperature`), records the input range of their drawn signals
(:func:`vlm.calibration.input_reference`) and writes ``calibration.json`` beside the
adapter. ``ece`` reads ``psgvlm eval`` predictions (made with or without the temperature)
and reports the expected calibration error per recording and pooled, before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.stages import STAGE_NAMES

from .calibration import (
    chunk_statistics,
    expected_calibration_error,
    fit_temperature,
    input_reference,
    load_calibration,
    negative_log_likelihood,
    save_calibration,
    temperature_scale,
)

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _fit(args: argparse.Namespace) -> int:
    from engine.stages import Stage

    from .runtime import Stager
    from .sources import find_recordings

    stager = Stager.from_adapter(args.model, args.adapter)
    stager.temperatures = [1.0] * len(stager.adapters)  # raw probabilities for the fit
    probabilities, labels, stats = [], [], [[] for _ in stager.roles]
    for recording in find_recordings([f"synthetic:{args.nights}"]):
        source = stager.open(recording)
        scored = np.flatnonzero(source.hypnogram.stages != int(Stage.UNK))
        probabilities.append(stager.probabilities(source, scored, args.batch_size))
        labels.append(source.hypnogram.stages[scored])
        for row in range(len(stager.roles)):
            stats[row].append(chunk_statistics(source.signals[row], source.fs))
        logger.info("%s: %d epochs", recording, scored.size)
    p, y = np.concatenate(probabilities), np.concatenate(labels).astype(np.int64)
    temperature = fit_temperature(p, y)
    calibrated = temperature_scale(p, temperature)
    data = {
        "temperature": round(temperature, 4),
        "fitted_on": {
            "nights": str(args.nights),
            "epochs": int(y.size),
            "accuracy": round(float((p.argmax(1) == y).mean()), 4),
            "nll_before": round(negative_log_likelihood(p, y), 4),
            "nll_after": round(negative_log_likelihood(calibrated, y), 4),
            "ece_before": round(expected_calibration_error(p, y), 4),
            "ece_after": round(expected_calibration_error(calibrated, y), 4),
        },
        "input_reference": input_reference([np.concatenate(s) for s in stats]),
    }
    path = save_calibration(args.out or args.adapter, data)
    print(json.dumps(data, indent=1))
    print(path)
    return 0


def _reference(args: argparse.Namespace) -> int:
    """Recompute only the input range (no model inference) into an existing calibration."""
    from .render_setup import find_render_setup
    from .sources import find_recordings

    setup = find_render_setup(args.adapter, None)
    stats: list[list[np.ndarray]] = [[] for _ in setup.roles]
    for recording in find_recordings([f"synthetic:{args.nights}"]):
        source = recording.epochs(setup)
        for row in range(len(setup.roles)):
            stats[row].append(chunk_statistics(source.signals[row], source.fs))
    data = load_calibration(args.adapter) or {"temperature": 1.0}
    data["input_reference"] = input_reference([np.concatenate(s) for s in stats])
    print(save_calibration(args.adapter, data))
    return 0


def _ece(args: argparse.Namespace) -> int:
    import csv

    calibration = load_calibration(args.adapter) or {}
    temperature = float(calibration.get("temperature", 1.0))
    report: dict[str, Any] = {"temperature": temperature, "recordings": {}}
    groups: dict[str, tuple[list, list]] = {}
    for file in args.predictions:
        with open(file, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("true") not in STAGE_NAMES:
                    continue
                key = row.get("recording", "all")
                p = [float(row[f"p_{name}"]) for name in STAGE_NAMES]
                for group in (key, "pooled"):
                    groups.setdefault(group, ([], []))[0].append(p)
                    groups[group][1].append(STAGE_NAMES.index(row["true"]))
    for group, (p, y) in groups.items():
        p, y = np.asarray(p), np.asarray(y)
        raw = temperature_scale(p, 1.0 / temperature) if args.calibrated_input else p
        report["recordings"][group] = {
            "n": int(y.size),
            "ece_raw": round(expected_calibration_error(raw, y), 4),
            "ece_calibrated": round(
                expected_calibration_error(temperature_scale(raw, temperature), y), 4
            ),
            "mean_confidence_raw": round(float(raw.max(1).mean()), 4),
            "mean_confidence_calibrated": round(
                float(temperature_scale(raw, temperature).max(1).mean()), 4
            ),
            "accuracy": round(float((p.argmax(1) == y).mean()), 4),
        }
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vlm.calibrate fit|reference|ece``."""
    parser = argparse.ArgumentParser(prog="python -m vlm.calibrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit the temperature and input range on synthetic nights")
    fit.add_argument("--model", default="tiny:qwen2vl", help="base model (default: tiny:qwen2vl)")
    fit.add_argument("--adapter", type=Path, required=True, help="adapter directory")
    fit.add_argument("--nights", type=Path, required=True,
                     help="synthetic validation nights (psgvlm synth --out DIR)")  # fmt: skip
    fit.add_argument("--batch-size", type=int, default=16, help="(default: 16)")
    fit.add_argument("--out", type=Path, help="where calibration.json goes (default: --adapter)")
    ref = sub.add_parser("reference", help="recompute only the input range (no inference)")
    ref.add_argument("--adapter", type=Path, required=True, help="adapter with calibration.json")
    ref.add_argument("--nights", type=Path, required=True, help="synthetic validation nights")
    ece = sub.add_parser("ece", help="ECE before/after the temperature from eval predictions")
    ece.add_argument("--adapter", type=Path, required=True, help="adapter with calibration.json")
    ece.add_argument("predictions", nargs="+", help="psgvlm eval predictions.csv files")
    ece.add_argument("--calibrated-input", action="store_true",
                     help="the predictions were already scaled by the temperature")  # fmt: skip
    ece.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return {"fit": _fit, "reference": _reference, "ece": _ece}[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

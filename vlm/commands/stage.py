"""Whole-night staging: every epoch of a recording → stage probabilities → hypnogram files.

Each epoch is drawn exactly as the adapter's training shards were (montage, preprocessing,
:class:`~engine.raster.RenderSpec`, image format: a :class:`RenderConfig`), asked the
training question, and scored by answer likelihood over W, N1, N2, N3, R
(:func:`vlm.scoring.score_candidates`; no free text). Command line::

    psgvlm stage night.edf --model Qwen/Qwen2-VL-2B-Instruct --adapter runs/qwen/adapter \\
        --out staged/night [--hypnogram night-Hypnogram.edf | --reference H] [--batch-size 16]

writes into ``--out``:

- ``hypnogram.csv``: ``onset, duration, stage, p_W, p_N1, p_N2, p_N3, p_R``;
- ``hypnogram.edf``: EDF+ annotations ``Sleep stage W/N1/N2/N3/R``, one per epoch, with the
  recording's start time (readable by pyedflib and :func:`engine.io.hypnogram.read_hypnogram`);
- ``hypnogram.png``: hypnogram over hypnodensity (stacked probabilities);
- ``summary.json``: sleep statistics (:func:`vlm.hypno.sleep_statistics`) over every
  staged epoch (so the grid should span lights off to lights on), and with
  ``--reference`` agreement (accuracy, Cohen's κ, per-stage F1, confusion matrix, also
  drawn as ``confusion.png``) and the reference's own statistics.

Epoch grid: the ``--hypnogram`` epochs (scored or not), else the ``--reference`` epochs,
else consecutive 30-s epochs from the recording start (the one case where no scorer grid
exists).

Render parameters: ``--render-config``, else found from the adapter
(:func:`vlm.render_setup.find_render_setup`).

Ensembles: ``--ensemble B C`` stages the night with ``--adapter`` and with B and C (each
loaded in turn, e.g. one configuration trained on other synthetic subjects and seeds, whose
``render.json`` must equal the first's) and writes the mean of their stage probabilities.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import HypnogramError, ModelError
from engine.stages import STAGE_NAMES, Stage

from ..model_options import add_model_arguments, stager_from_args
from ..runtime import StagingResult
from ..sources import open_recording

__all__ = ["align_reference", "write_outputs", "add_arguments", "run"]

logger = logging.getLogger(__name__)

_ALIGN_TOLERANCE_S = 0.05


def align_reference(reference, onsets: np.ndarray, epoch_length: float) -> np.ndarray:
    """Reference stage per grid epoch (UNK where the reference has no epoch at that onset).

    Raises
    ------
    HypnogramError
        When no reference epoch lines up with the grid (pass it as ``--hypnogram`` too).
    """
    epochs = reference if reference.is_epoched else reference.to_epochs()
    if abs(epochs.epoch_length - epoch_length) > 1e-6:
        raise HypnogramError(
            f"{reference.source or 'reference'}: {epochs.epoch_length:g}-s epochs, but staging "
            f"used {epoch_length:g}-s epochs"
        )
    aligned = np.full(onsets.size, int(Stage.UNK), dtype=np.int8)
    if onsets.size == 0 or len(epochs) == 0:
        return aligned
    position = np.clip(np.searchsorted(onsets, epochs.onsets), 0, onsets.size - 1)
    before = np.clip(position - 1, 0, onsets.size - 1)
    nearest = np.where(
        np.abs(onsets[before] - epochs.onsets) < np.abs(onsets[position] - epochs.onsets),
        before,
        position,
    )
    matched = np.abs(onsets[nearest] - epochs.onsets) <= _ALIGN_TOLERANCE_S
    aligned[nearest[matched]] = epochs.stages[matched]
    if not np.any(matched & (epochs.stages != int(Stage.UNK))):
        raise HypnogramError(
            f"{reference.source or 'reference'}: none of its scored epochs starts on the "
            "staging grid; pass the same file as --hypnogram to stage on its epochs"
        )
    return aligned


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_outputs(
    result: StagingResult,
    out_dir: str | os.PathLike,
    reference: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
    title: str = "",
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write ``hypnogram.csv/.edf/.png`` and ``summary.json`` (+ ``confusion.png``).

    Parameters
    ----------
    result : StagingResult
    out_dir : path
        Created when missing.
    reference : ndarray, optional
        Reference stage per grid epoch (:func:`align_reference`); adds agreement metrics.
    info : dict, optional
        Extra fields for ``summary.json`` (recording, model, adapter...).
    title : str
        Plot title.

    Returns
    -------
    (dict, dict)
        Output name -> path, and the summary as written (NaN as None).
    """
    from ..hypno import plot_hypnogram, sleep_statistics, write_edf_annotations, write_stage_csv
    from ..metrics import classification_metrics, plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": write_stage_csv(
            out / "hypnogram.csv", result.onsets, result.durations, result.stages,
            result.probabilities,
        ),
        "edf": write_edf_annotations(
            out / "hypnogram.edf", result.onsets, result.durations, result.stages,
            result.start_time,
        ),
        "png": plot_hypnogram(
            out / "hypnogram.png", result.onsets, result.stages, result.probabilities,
            result.durations, reference, title,
        ),
    }  # fmt: skip
    confidence = result.probabilities.max(axis=1) if len(result.stages) else np.zeros(0)
    summary: dict[str, Any] = dict(info or {})
    summary.update(
        epochs=int(result.stages.size),
        epoch_length=result.epoch_length,
        start_time=result.start_time.isoformat() if result.start_time else None,
        statistics=sleep_statistics(result.stages, result.epoch_length),
        mean_probability=float(confidence.mean()) if confidence.size else None,
        epochs_per_stage={
            name: int(np.sum(result.stages == k)) for k, name in enumerate(STAGE_NAMES)
        },
    )
    if reference is not None:
        scored = reference != int(Stage.UNK)
        if not scored.any():
            raise HypnogramError("the reference has no scored epoch on the staging grid")
        metrics = classification_metrics(reference[scored], result.stages[scored])
        metrics["epochs_compared"] = int(scored.sum())
        summary["agreement"] = metrics
        summary["reference_statistics"] = sleep_statistics(reference, result.epoch_length)
        paths["confusion"] = plot_confusion(
            metrics["confusion"], out / "confusion.png", title or "Agreement with the reference"
        )
    summary = _json_ready(summary)
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths["summary"] = summary_path
    return paths, summary


# -- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm stage``."""
    parser.add_argument("recording", type=Path, help="EDF/EDF+/BDF recording or prerau:DIR")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--hypnogram", type=Path,
                        help="hypnogram whose epochs form the grid (default: the --reference "
                        "epochs, else 30-s epochs from the recording start)")  # fmt: skip
    parser.add_argument("--reference", type=Path, help="scored hypnogram to measure agreement")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="epochs per forward pass (default: 16)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_arguments(parser)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """``psgvlm stage``: stage every epoch and write the outputs."""
    if args.batch_size < 1:
        raise ModelError(f"--batch-size must be at least 1, got {args.batch_size}")
    recording = open_recording(args.recording, args.hypnogram or args.reference)
    stager = stager_from_args(args, recording)
    logger.info("render parameters from %s", stager.setup.source)
    reference = None
    if args.reference is not None:  # on the recording's clock, like the grid
        reference = (
            recording.hypnogram
            if args.hypnogram is None
            else open_recording(args.recording, args.reference).hypnogram
        )
    source = stager.open(recording)
    caveat = stager.caveat(source)
    result = stager.stage(source, args.batch_size, progress=not args.no_progress)
    aligned = None
    if reference is not None:
        aligned = align_reference(reference, result.onsets, result.epoch_length)
    info = {
        "recording": str(args.recording),
        "model": str(args.model or stager.model_id),
        "adapter": str(args.adapter or stager.adapters[0]),
        "caveat": caveat,
        "ensemble": [str(m) for m in stager.adapters] if len(stager.adapters) > 1 else None,
        "render_config": stager.setup.source,
        "grid": str(args.hypnogram or args.reference or f"{result.epoch_length:g}-s epochs "
                    "from the recording start"),
        "reference": str(args.reference) if args.reference else None,
    }  # fmt: skip
    paths, summary = write_outputs(result, args.out, aligned, info, title=args.recording.name)
    stats = summary["statistics"]
    if caveat:
        print(caveat)
    print(
        f"{summary['epochs']} epochs: TST {_fmt(stats['TST'])} min, SE {_fmt(stats['SE'])}%, "
        f"mean probability {_fmt(summary['mean_probability'], 2)}"
    )
    if "agreement" in summary:
        agreement = summary["agreement"]
        print(
            f"agreement on {agreement['epochs_compared']} epochs: accuracy "
            f"{_fmt(agreement['accuracy'], 3)}, kappa {_fmt(agreement['kappa'], 3)}, "
            f"macro-F1 {_fmt(agreement['macro_f1'], 3)}"
        )
    for path in paths.values():
        print(path)
    return 0

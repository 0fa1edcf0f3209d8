"""Whole-night staging: every epoch of a recording → stage probabilities → hypnogram files.

Each epoch is drawn exactly as the adapter's training shards were (montage, preprocessing,
:class:`~engine.raster.RenderSpec`, image format: a :class:`RenderConfig`), asked the
training question, and scored by answer likelihood over W, N1, N2, N3, R
(:func:`vlm.evaluate.score_candidates`; no free text). Command line::

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

Render parameters come from, in order: ``--render-config`` (a ``render.json`` or a shard
directory/file), ``ADAPTER/render.json`` or ``ADAPTER/../render.json``, and finally the
training run's ``ADAPTER/../config.yaml`` → ``train_shards`` → the first sample's
metadata (``channels``, ``render``, ``preprocessing``) and ``answer_mode``.

Ensembles: ``--ensemble B C`` stages the night with ``--adapter`` and with B and C (each
loaded in turn, e.g. one configuration trained on other synthetic subjects and seeds, whose
``render.json`` must equal the first's) and writes the mean of their stage probabilities.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import HypnogramError, ModelError, MontageError
from engine.stages import STAGE_NAMES, Stage

from .render_setup import RENDER_CONFIG_NAME, RenderConfig, find_render_setup

__all__ = [
    "open_source",
    "model_images",
    "StagingResult",
    "stage_source",
    "align_reference",
    "write_outputs",
    "add_model_arguments",
    "add_ensemble_argument",
    "ensemble_members",
    "load_model",
    "read_grid",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

_ALIGN_TOLERANCE_S = 0.05


# -- epochs and images ------------------------------------------------------------------
def open_source(
    psg_path: str | os.PathLike,
    config: RenderConfig,
    hypnogram=None,
    montage: str | None = None,
):
    """Open a recording as an :class:`engine.epochs.EpochSource` drawn like the training data.

    Parameters
    ----------
    psg_path : path
        EDF/EDF+ recording.
    config : RenderConfig
    hypnogram : Hypnogram, optional
        Epoch grid; without it, consecutive epochs of the render spec's length (30 s) from
        the recording start, all UNK.
    montage : str, optional
        Override of the training montage (e.g. other derivation names); it must give the
        same roles in the same order.

    Raises
    ------
    MontageError
        When the montage's roles differ from the training images' rows.
    HypnogramError
        When the recording is shorter than one epoch.
    """
    from engine.epochs import open_epochs
    from engine.io.edf import open_recording
    from engine.io.hypnogram import Hypnogram
    from engine.montage import Montage

    parsed = Montage.parse(montage or config.montage)
    roles = [role.lower() for role in parsed.roles]
    if roles != config.roles:
        raise MontageError(
            f"montage {str(parsed)!r} gives roles {roles}, but the adapter was trained on "
            f"images with rows {config.roles} ({config.montage})"
        )
    epoch_length = config.spec().epoch_seconds
    if hypnogram is not None and abs(hypnogram.epoch_length - epoch_length) > 1e-6:
        logger.warning(
            "%s: %g-s epochs, but the adapter was trained on %g-s images",
            hypnogram.source or "hypnogram",
            hypnogram.epoch_length,
            epoch_length,
        )
    if hypnogram is None:
        with open_recording(psg_path) as recording:
            duration = recording.duration
        count = int(math.floor(duration / epoch_length + 1e-9))
        if count < 1:
            raise HypnogramError(
                f"{psg_path}: {duration:g} s of signal is shorter than one {epoch_length:g}-s epoch"
            )
        hypnogram = Hypnogram.from_stages([int(Stage.UNK)] * count, epoch_length)
    return open_epochs(psg_path, hypnogram, parsed, config.preprocessing_params())


def model_images(pixels: np.ndarray, config: RenderConfig) -> list:
    """Rendered uint8 images → RGB PIL images exactly as training decoded them from shards."""
    from .data import images_as_trained

    return images_as_trained(pixels, config.image_format, config.quality)


# -- staging ----------------------------------------------------------------------------
@dataclass
class StagingResult:
    """Predicted stage and probabilities of every epoch of the grid.

    Attributes
    ----------
    onsets, durations : ndarray
        Seconds from the recording start.
    stages : ndarray
        int8 predicted stage ids (argmax of ``probabilities``).
    probabilities : ndarray
        ``(n, 5)`` probabilities of W, N1, N2, N3, R.
    grid_stages : ndarray
        The grid hypnogram's own stage ids (all UNK for the 30-s grid).
    epoch_length : float
    start_time : datetime or None
        Clock time of the recording start.
    """

    onsets: np.ndarray
    durations: np.ndarray
    stages: np.ndarray
    probabilities: np.ndarray
    grid_stages: np.ndarray
    epoch_length: float
    start_time: datetime | None = None


def stage_source(
    source,
    model,
    processor,
    config: RenderConfig,
    batch_size: int = 16,
    progress: bool = True,
) -> StagingResult:
    """Score every epoch of ``source`` (UNK grid epochs included) by candidate likelihood."""
    from tqdm import tqdm

    from engine.raster import render

    from .evaluate import score_candidates

    if batch_size < 1:
        raise ModelError(f"--batch-size must be at least 1, got {batch_size}")
    spec = config.spec()
    question = config.question()
    n = len(source)
    probabilities = np.zeros((n, len(STAGE_NAMES)))
    onsets, durations = np.zeros(n), np.zeros(n)
    bar = tqdm(total=n, desc="stage", unit="epoch", disable=not progress)
    try:
        for batch in source.iter_batches(batch_size, context=spec.context, keep_unknown=True):
            images = model_images(render(batch.signals, spec), config)
            probs = score_candidates(
                model, processor, images, [question] * len(images), STAGE_NAMES, batch_size
            )
            probabilities[batch.index] = probs
            onsets[batch.index] = batch.onset
            durations[batch.index] = batch.duration
            bar.update(len(batch))
    finally:
        bar.close()
    return StagingResult(
        onsets=onsets,
        durations=durations,
        stages=probabilities.argmax(axis=1).astype(np.int8),
        probabilities=probabilities,
        grid_stages=np.asarray(source.hypnogram.stages, dtype=np.int8),
        epoch_length=float(source.epoch_length),
        start_time=source.start_time,
    )


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
    from .evaluate import classification_metrics, plot_confusion
    from .hypno import plot_hypnogram, sleep_statistics, write_edf_annotations, write_stage_csv

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
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``stage``, ``ask`` and ``chat``: model, adapter, rendering, device."""
    parser.add_argument("--model", required=True, help="base model id or directory")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter directory (vlm.train output)")
    parser.add_argument(
        "--render-config", type=Path,
        help=f"{RENDER_CONFIG_NAME} or shard directory giving the training render parameters "
        "(default: found from the adapter)",
    )  # fmt: skip
    parser.add_argument("--montage", help="override the training montage (same roles and order)")
    parser.add_argument("--hypnogram", type=Path, help="hypnogram whose epochs form the grid")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm stage``."""
    parser.add_argument("recording", type=Path, help="EDF/EDF+ recording")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--reference", type=Path, help="scored hypnogram to measure agreement")
    parser.add_argument("--batch-size", type=int, default=16, help="epochs per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_ensemble_argument(parser)


def add_ensemble_argument(parser: argparse.ArgumentParser) -> None:
    """``--ensemble ADAPTER...``: more members beside ``--adapter`` (:func:`ensemble_members`)."""
    parser.add_argument(
        "--ensemble", type=Path, nargs="+", default=[], metavar="ADAPTER",
        help="more adapters trained with the same render parameters (e.g. other seeds): "
        "each epoch's stage probabilities are the mean over --adapter and these",
    )  # fmt: skip


def load_model(args: argparse.Namespace, adapter: Path | None = None):
    """Model + processor for parsed ``add_model_arguments`` options.

    ``adapter`` overrides ``args.adapter`` (an ensemble member).
    """
    import torch

    from .model import load_model_and_processor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, _ = load_model_and_processor(
        args.model,
        adapter=args.adapter if adapter is None else adapter,
        quantization=args.quantization,
        device=device,
    )
    return model, processor


def ensemble_members(args: argparse.Namespace, config: RenderConfig) -> list[Path]:
    """``--adapter`` and the ``--ensemble`` adapters, checked to draw epochs alike."""
    members = list(getattr(args, "ensemble", None) or [])
    if not members:
        return [args.adapter]
    if args.adapter is None:
        raise ModelError("--ensemble needs --adapter (the first member)")
    for member in members:
        if find_render_setup(member) != config:
            raise ModelError(
                f"--ensemble {member}: its training images were drawn differently from "
                f"{args.adapter}'s (render.json differs); members must share one render setup"
            )
    return [args.adapter, *members]


def read_grid(path: Path | None, recording: Path):
    """The grid hypnogram read against ``recording``, or None."""
    from engine.io.hypnogram import read_hypnogram

    return None if path is None else read_hypnogram(path, signal_path=recording)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """``psgvlm stage``: stage every epoch and write the outputs."""
    config = find_render_setup(args.adapter, args.render_config)
    logger.info("render parameters from %s", config.source)
    reference = read_grid(args.reference, args.recording)
    grid = read_grid(args.hypnogram, args.recording) if args.hypnogram else reference
    source = open_source(args.recording, config, grid, args.montage)
    members = ensemble_members(args, config)
    results = []
    for adapter in members:
        model, processor = load_model(args, adapter)
        results.append(
            stage_source(
                source, model, processor, config, args.batch_size, progress=not args.no_progress
            )
        )
        del model, processor
    result = results[0]
    if len(results) > 1:
        mean = np.mean([r.probabilities for r in results], axis=0)
        result = dataclasses.replace(
            result, probabilities=mean, stages=mean.argmax(axis=1).astype(np.int8)
        )
    aligned = None
    if reference is not None:
        aligned = align_reference(reference, result.onsets, result.epoch_length)
    info = {
        "recording": str(args.recording),
        "model": str(args.model),
        "adapter": str(args.adapter) if args.adapter else None,
        "ensemble": [str(m) for m in members] if len(members) > 1 else None,
        "render_config": config.source,
        "grid": str(args.hypnogram or args.reference or f"{result.epoch_length:g}-s epochs "
                    "from the recording start"),
        "reference": str(args.reference) if args.reference else None,
    }  # fmt: skip
    paths, summary = write_outputs(result, args.out, aligned, info, title=args.recording.name)
    stats = summary["statistics"]
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

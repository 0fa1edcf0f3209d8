"""``psgvlm eval --perturb SPEC``: accuracy of a model (and YASA) under signal perturbations.

Each recording's channels are perturbed at every level of ``SPEC`` (the grammar of
:mod:`engine.perturb`: Gaussian noise at several SNRs, gain, mains, baseline wander,
electrode pops, a dropped channel, another image size), then re-rendered and re-scored
exactly as :class:`vlm.runtime.Stager` does for the clean signal (the perturbation
is applied to the raw samples, before the training preprocessing, as a real artefact would
be). Perturbations are deterministic: recording ``i`` uses seed ``--perturb-seed + i``, and
each channel its own stream (:func:`engine.perturb.channel_seed`).

YASA (``--peers yasa``) is given the same perturbed EEG channel where a perturbation
changes it; where it does not (EOG/EMG drops, image size) YASA's result is the unperturbed
one and is reported as such.

Command line::

    psgvlm eval night.edf --hypnogram night-Hypnogram.edf --model BASE --adapter DIR \\
        --perturb 'noise:snr=20,10,5;gain:0.5,2;line:50;wander;pops;drop:eog,emg;size:448x448' \\
        --out reports/robustness

writes ``robustness.json``, ``robustness.md`` (one row per level: accuracy, macro-F1, κ for
the model and YASA) and ``robustness.png`` (accuracy vs level, one panel per kind).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PSGError
from engine.montage import source_role
from engine.perturb import Perturbation

__all__ = [
    "evaluate_perturbed",
    "robustness_markdown",
    "plot_robustness",
]

logger = logging.getLogger(__name__)

_BASELINE = "none"


def _metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    from .metrics import classification_metrics

    metrics = classification_metrics(y_true, y_pred)
    return {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "kappa", "per_class_f1")}


def evaluate_perturbed(
    recordings: list,
    stager,
    perturbations: list[Perturbation],
    positions: list[np.ndarray],
    *,
    batch_size: int = 8,
    seed: int = 0,
    peers: tuple[str, ...] = ("yasa",),
) -> list[dict[str, Any]]:
    """Model (and YASA) metrics on the clean recordings and under each perturbation.

    Parameters
    ----------
    recordings : list of vlm.sources.Recording
        With scorer hypnograms; their montage channels are perturbed.
    stager : vlm.runtime.Stager
    perturbations : list of Perturbation
    positions : list of ndarray
        Scored epochs to compare, per recording: positions in the hypnogram of
        ``stager.open(recording)`` (the epochs inside the signal).
    batch_size : int
        Images per forward pass.
    seed : int
        Recording ``i`` is perturbed with seed ``seed + i``.
    peers : tuple of str
        ``("yasa",)`` or ``()``.

    Returns
    -------
    list of dict
        One per condition (``"none"`` first): ``kind``, ``level``, ``label``, ``model``
        metrics, and ``yasa`` metrics, ``{"refused": why}`` or ``{"unchanged": True}``.
    """
    from engine.montage import resolve_montage

    from .peers import yasa_stage

    montages = [resolve_montage(stager.montage_spec, r.labels, source=str(r)) for r in recordings]
    in_memory = [r.in_memory(sorted({c.label for c in m}, key=r.labels.index))
                 for r, m in zip(recordings, montages)]  # fmt: skip
    for perturbation in perturbations:
        for channels in montages:
            perturbation.check_channels(
                [source_role(c.role) for c in channels], [c.label for c in channels]
            )
    truth = None
    results = []
    for condition in [None, *perturbations]:
        staged = stager
        if condition is not None and condition.image_size is not None:
            width, height = condition.image_size
            render = {**stager.setup.render, "width": width, "height": height}
            staged = copy.copy(stager)
            staged.setup = dataclasses.replace(stager.setup, render=render)
        predicted, scored, peer_stages, peer_note = [], [], [], None
        for i, (recording, channels, chosen) in enumerate(zip(in_memory, montages, positions)):
            arrays = recording.arrays
            signals = dict(arrays.signals)
            if condition is not None:
                roles = {c.label: source_role(c.role) for c in channels}
                signals |= condition.apply_mapping(
                    {c.label: arrays.signals[c.label] for c in channels}, arrays.fs, roles, seed + i
                )
            source = staged.open(recording.with_signals(signals))
            probs = staged.probabilities(source, chosen, batch_size)
            predicted.append(probs.argmax(axis=1))
            scored.append(source.hypnogram.stages[chosen].astype(np.int64))
            eeg = next((c.label for c in channels if c.role == "eeg"), None)
            if "yasa" not in peers or peer_note is not None:
                continue
            if eeg is None:
                peer_note = {"refused": "the model's montage has no EEG channel for YASA"}
            elif condition is not None and not condition.affects("eeg", eeg):
                peer_note = {"unchanged": True}
            elif not np.isfinite(signals[eeg]).all():
                peer_note = {"refused": "the EEG has missing (NaN) samples"}
            else:
                result = yasa_stage(np.asarray(signals[eeg], dtype=np.float64),
                                    arrays.fs[eeg], source.hypnogram, chosen)  # fmt: skip
                if result.stages is None:
                    peer_note = {"refused": result.refused}
                else:
                    peer_stages.append(result.stages)
        if truth is None:
            truth = np.concatenate(scored)
        row: dict[str, Any] = {
            "kind": _BASELINE if condition is None else condition.kind,
            "level": None if condition is None else _json_level(condition.level),
            "label": "clean" if condition is None else condition.label,
            "model": _metrics(truth, np.concatenate(predicted)),
        }
        if "yasa" in peers:
            if peer_note is not None:
                row["yasa"] = peer_note
            else:
                stages = np.concatenate(peer_stages)
                covered = stages >= 0
                row["yasa"] = _metrics(truth[covered], stages[covered])
        logger.info("%s: model accuracy %.3f", row["label"], row["model"]["accuracy"])
        results.append(row)
    return results


def _json_level(level: Any) -> Any:
    return list(level) if isinstance(level, tuple) else level


def _fmt(metrics: dict[str, Any] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return "—"
    value = metrics[key]
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def robustness_markdown(results: list[dict[str, Any]], title: str = "Robustness") -> str:
    """Markdown table: one row per condition, model and YASA metrics side by side."""
    has_yasa = any("yasa" in r for r in results)
    head = "| perturbation | n | model acc | model macro-F1 | model κ |"
    rule = "|---|---|---|---|---|"
    if has_yasa:
        head += " YASA acc | YASA κ |"
        rule += "---|---|"
    lines = [f"**{title}**", "", head, rule]
    baseline_yasa = results[0].get("yasa") if results else None
    for row in results:
        m = row["model"]
        line = (f"| {row['label']} | {m['n']} | {_fmt(m, 'accuracy')} | {_fmt(m, 'macro_f1')} | "
                f"{_fmt(m, 'kappa')} |")  # fmt: skip
        if has_yasa:
            yasa = row.get("yasa") or {}
            if yasa.get("unchanged"):
                line += f" ({_fmt(baseline_yasa, 'accuracy')}, EEG unchanged) | — |"
            elif "refused" in yasa:
                line += f" refused: {yasa['refused']} | — |"
            else:
                line += f" {_fmt(yasa, 'accuracy')} | {_fmt(yasa, 'kappa')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot_robustness(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy vs level, one panel per perturbation kind; the clean accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline = results[0]
    kinds = list(dict.fromkeys(r["kind"] for r in results[1:]))
    if not kinds:
        raise PSGError("no perturbation to plot")
    fig, axes = plt.subplots(1, len(kinds), figsize=(2.3 * len(kinds) + 0.6, 2.8), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in results if r["kind"] == kind]
        xs = np.arange(len(rows))
        names = [r["label"].split(" ", 1)[1] if " " in r["label"] else r["label"] for r in rows]
        ax.plot(xs, [r["model"]["accuracy"] for r in rows], "o-", label="model")
        ax.axhline(baseline["model"]["accuracy"], color="C0", linestyle="--", linewidth=0.8)
        yasa = [(x, r["yasa"]["accuracy"]) for x, r in zip(xs, rows)
                if isinstance(r.get("yasa"), dict) and "accuracy" in r["yasa"]]  # fmt: skip
        base_yasa = baseline.get("yasa") or {}
        if "accuracy" in base_yasa:
            ax.axhline(base_yasa["accuracy"], color="C1", linestyle="--", linewidth=0.8)
        if yasa:
            ax.plot([x for x, _ in yasa], [a for _, a in yasa], "s-", color="C1", label="YASA")
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=7)
        ax.set_title(kind, fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("accuracy (dashed: clean)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

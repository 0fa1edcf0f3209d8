"""Agreement of predicted stages with a scorer: metrics, tables and confusion plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PSGError
from engine.stages import STAGE_NAMES

__all__ = ["classification_metrics", "group_metrics", "plot_confusion", "metrics_markdown"]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, Any]:
    """Accuracy, macro-F1, Cohen's kappa, per-class F1 and support, confusion matrix."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise PSGError(
            f"metrics need equal, non-empty label arrays ({y_true.shape} vs {y_pred.shape})"
        )
    labels = list(range(len(STAGE_NAMES)))
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    kappa = cohen_kappa_score(y_true, y_pred, labels=labels) if len(present) > 1 else float("nan")
    return {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "kappa": float(kappa),
        "per_class_f1": {name: float(f) for name, f in zip(STAGE_NAMES, per_class)},
        "support": {name: int((y_true == i).sum()) for i, name in enumerate(STAGE_NAMES)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def group_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` per group (e.g. subject), without confusion matrices."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    out = {}
    for group in sorted(set(groups.tolist())):
        sel = groups == group
        metrics = classification_metrics(y_true[sel], y_pred[sel])
        metrics.pop("confusion")
        out[str(group)] = metrics
    return out


def plot_confusion(
    confusion: Sequence[Sequence[int]], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Row-normalised confusion matrix with counts, written as PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = STAGE_NAMES[: cm.shape[0]]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j,
            i,
            f"{int(count)}",
            ha="center",
            va="center",
            color="white" if norm[i, j] > 0.5 else "black",
            fontsize=8,
        )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metrics_markdown(metrics: dict[str, Any], title: str = "Evaluation") -> str:
    """Markdown report: headline metrics, per-class F1, per-group table when present."""
    lines = [
        f"# {title}",
        "",
        "| n | accuracy | macro-F1 | Cohen's κ |",
        "|---|---|---|---|",
        f"| {metrics['n']} | {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} "
        f"| {metrics['kappa']:.3f} |",
        "",
        "| stage | F1 | support |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {metrics['per_class_f1'][name]:.3f} | {metrics['support'][name]} |"
        for name in STAGE_NAMES
    ]
    groups = metrics.get("per_subject") or {}
    if groups:
        lines += ["", "| subject | n | accuracy | macro-F1 | κ |", "|---|---|---|---|---|"]
        lines += [
            f"| {g} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['kappa']:.3f} |"
            for g, m in groups.items()
        ]
    return "\n".join(lines) + "\n"

"""Attribution over many epochs: channel importance and the pointing game.

- :func:`channel_importance` occludes each whole strip of many epochs and reports the mean
  drop of the predicted stage's probability per channel and stage.
- :func:`pointing_game` measures the share of attribution mass (positive part) that falls
  on stage-defining events of the epoch's **scored** stage (the map explains that stage):
  planted events from ``psgvlm synth`` (:func:`planted_events`), otherwise events detected
  by :mod:`engine.features` (:func:`detected_events`: spindles and K-complexes in N2, slow
  waves in N3, rapid eye movements in R, slow eye movements in N1). Chance: the same boxes
  moved to random times on the same strip (``chance_time``) and to random strips and times
  (``chance_any``); the pointing game counts the epochs whose peak cell lies on an event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DatasetError, PSGError
from engine.stages import STAGE_NAMES, Stage, stage_name

from .attribution import (
    ImageGrid,
    agg_pyplot,
    event_dicts,
    explain_epoch,
    image_grid,
    occlude,
    short_label,
)

__all__ = [
    "STAGE_EVENT_KINDS",
    "ChannelImportance",
    "channel_importance",
    "importance_markdown",
    "plot_importance",
    "event_boxes",
    "energy_in_boxes",
    "chance_energy",
    "pointing_game",
    "pointing_markdown",
    "planted_events",
    "planted_of",
    "detected_events",
    "scored_positions",
]

#: Event kinds (planted by :mod:`engine.synth` or detected by :mod:`engine.features`) that
#: define each stage, for the pointing game.
STAGE_EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "W": ("alpha_burst", "blink", "saccade"),
    "N1": ("vertex_wave", "slow_eye_movement"),
    "N2": ("spindle", "k_complex", "kcomplex"),
    "N3": ("slow_wave",),
    "R": ("rapid_eye_movement", "sawtooth_wave"),
}

_CHANCE_DRAWS = 64


@dataclass
class ChannelImportance:
    """Drop of the predicted stage's probability when each whole strip is cleared.

    Attributes
    ----------
    channels : list of str
        Strip labels.
    drops : ndarray
        ``(epochs, channels)`` drops.
    predicted, true : ndarray
        Predicted and scored stage ids per epoch (scored: -1 when unknown).
    """

    channels: list[str]
    drops: np.ndarray
    predicted: np.ndarray
    true: np.ndarray

    def table(self) -> dict[str, dict[str, Any]]:
        """Predicted stage -> ``{"n", channel: mean drop}`` (stages with epochs only)."""
        out: dict[str, dict[str, Any]] = {}
        for k, name in enumerate(STAGE_NAMES):
            rows = self.drops[self.predicted == k]
            if rows.size:
                out[name] = {"n": int(rows.shape[0])}
                out[name] |= {c: float(v) for c, v in zip(self.channels, rows.mean(axis=0))}
        out["all"] = {"n": int(self.drops.shape[0])}
        out["all"] |= {c: float(v) for c, v in zip(self.channels, self.drops.mean(axis=0))}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the table and the per-epoch values."""
        return {"channels": self.channels, "table": self.table(),
                "drops": self.drops.round(5).tolist(), "predicted": self.predicted.tolist(),
                "true": self.true.tolist()}  # fmt: skip


def channel_importance(
    stager,
    items: Iterable[tuple[np.ndarray, int]],
    *,
    channels: Sequence[str] | None = None,
    batch_size: int = 8,
) -> ChannelImportance:
    """Occlude each whole strip of each image and measure the predicted stage's drop.

    Parameters
    ----------
    stager : vlm.runtime.Stager
        The model (an ensemble's mean) and how its training images were drawn.
    items : iterable of (ndarray, int)
        uint8 images drawn with ``stager.setup.spec()`` and their scored stage (-1 if
        unknown).
    channels : sequence of str, optional
        Strip labels (default: the configuration's channel names).
    """
    config = stager.setup
    spec = config.spec()
    drops, predicted, true = [], [], []
    for pixels, stage in items:
        variants = [pixels] + [
            occlude(pixels, spec, c, 0, spec.width) for c in range(spec.channels)
        ]
        probs = stager.score(stager.images(np.stack(variants)), batch_size)
        k = int(probs[0].argmax())
        drops.append(probs[0, k] - probs[1:, k])
        predicted.append(k)
        true.append(int(stage))
    if not drops:
        raise PSGError("channel importance: no epochs to occlude")
    return ChannelImportance(list(channels or [c["name"] for c in config.channels]),
                             np.array(drops), np.array(predicted), np.array(true))  # fmt: skip


def importance_markdown(result: ChannelImportance) -> str:
    """Markdown table: predicted stage x channel mean drop of p(stage)."""
    table = result.table()
    names = [short_label(c) for c in result.channels]
    lines = ["| predicted stage | n | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    for stage, row in table.items():
        values = " | ".join(f"{row[c]:+.3f}" for c in result.channels)
        lines.append(f"| {stage} | {row['n']} | {values} |")
    return "\n".join(lines) + "\n"


def plot_importance(result: ChannelImportance, path: str | os.PathLike) -> Path:
    """Grouped bars: mean drop per channel for each predicted stage."""
    plt = agg_pyplot()
    table = {k: v for k, v in result.table().items() if k != "all"}
    stages = list(table)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(stages), 1), 3.2))
    width = 0.8 / max(len(result.channels), 1)
    for i, channel in enumerate(result.channels):
        xs = np.arange(len(stages)) + (i - (len(result.channels) - 1) / 2) * width
        ax.bar(xs, [table[s][channel] for s in stages], width, label=short_label(channel))
    ax.set_xticks(range(len(stages)), [f"{s}\n(n={table[s]['n']})" for s in stages])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("mean drop in p(predicted stage)")
    ax.set_title("channel importance (strip occlusion)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def event_boxes(
    events: Any, channel_labels: Sequence[str], grid: ImageGrid, kinds: Iterable[str] | None = None
) -> list[tuple[int, int, int]]:
    """Image boxes ``(strip, col_first, col_stop)`` of events drawn on one of the strips.

    An event's ``channel`` (labels joined by ``/``) and, for planted events, ``channels``
    list where it shows; the first of them that is a strip is used. Times are seconds from
    the target epoch's start; events outside the image are dropped.
    """
    labels = list(channel_labels)
    wanted = None if kinds is None else set(kinds)
    boxes = []
    for event in event_dicts(events):
        if wanted is not None and event["kind"] not in wanted:
            continue
        names = str(event.get("channel", "")).split("/") + list(event.get("channels") or [])
        strip = next((labels.index(n) for n in names if n in labels), None)
        if strip is None or event["end"] <= grid.edges_s[0] or event["start"] >= grid.edges_s[-1]:
            continue
        first, stop = grid.columns_of(float(event["start"]), float(event["end"]))
        boxes.append((strip, first, stop))
    return boxes


def _box_mask(boxes: Sequence[tuple[int, int, int]], grid: ImageGrid) -> np.ndarray:
    mask = np.zeros((grid.height, grid.width), dtype=bool)
    for strip, first, stop in boxes:
        mask[grid.row_first[strip] : grid.row_last[strip] + 1, first:stop] = True
    return mask


def energy_in_boxes(
    image_map: np.ndarray, boxes: Sequence[tuple[int, int, int]], grid: ImageGrid
) -> float:
    """Share of the map's positive mass inside the union of the boxes (NaN if no mass)."""
    positive = np.clip(np.nan_to_num(np.asarray(image_map, dtype=np.float64)), 0.0, None)
    total = positive.sum()
    if total <= 0:
        return float("nan")
    return float(positive[_box_mask(boxes, grid)].sum() / total)


def _peak_cell_mask(image_map: np.ndarray, grid: ImageGrid) -> np.ndarray:
    cells = grid.cell_means(np.asarray(image_map, dtype=np.float64))
    row, col = np.unravel_index(int(np.argmax(cells)), cells.shape)
    mask = np.zeros((grid.height, grid.width), dtype=bool)
    mask[grid.row_first[row] : grid.row_last[row] + 1, grid.col_first[col] : grid.col_stop[col]] = (
        True
    )
    return mask


def chance_energy(
    image_map: np.ndarray,
    boxes: Sequence[tuple[int, int, int]],
    grid: ImageGrid,
    rng: np.random.Generator,
    *,
    same_strip: bool = True,
    draws: int = _CHANCE_DRAWS,
) -> tuple[float, float]:
    """Energy and pointing-game hit rate of the same boxes placed at random.

    Each box keeps its width and moves to a uniformly random time (and, with
    ``same_strip=False``, a random strip).

    Returns
    -------
    (float, float)
        Mean share of positive mass inside the moved boxes, and the fraction of draws whose
        boxes overlap the peak cell.
    """
    peak = _peak_cell_mask(image_map, grid)
    n_strips = grid.shape[0]
    energies, hits = [], []
    for _ in range(draws):
        moved = []
        for strip, first, stop in boxes:
            span = stop - first
            start = int(rng.integers(0, grid.width - span + 1))
            moved.append(
                (strip if same_strip else int(rng.integers(0, n_strips)), start, start + span)
            )
        energies.append(energy_in_boxes(image_map, moved, grid))
        hits.append(bool((_box_mask(moved, grid) & peak).any()))
    energy = float(np.nanmean(energies)) if np.isfinite(energies).any() else float("nan")
    return energy, float(np.mean(hits))


def pointing_game(
    stager,
    source,
    events_of: Callable[[int], list[dict]],
    positions: Sequence[int],
    *,
    methods: Sequence[str] = ("occlusion",),
    window_s: float = 3.0,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Attribution mass on stage-defining events vs chance, per scored stage and method.

    Parameters
    ----------
    stager : vlm.runtime.Stager
    source : engine.epochs.EpochSource
        Recording with a scored hypnogram.
    events_of : callable
        Epoch position -> events (seconds from that epoch's start).
    positions : sequence of int
        Epochs to analyse; those without an event of their scored stage's kinds are skipped.
    methods : sequence of str
        Attribution methods; each map explains the scored stage.
    window_s : float
        Cell size of the occlusion and of the peak cell.
    seed : int
        Seed of the random boxes.

    Returns
    -------
    dict
        ``{"per_stage": {method: {stage: {...}}}, "epochs": [...]}`` with, per stage, ``n``,
        ``energy`` (share on events), ``chance_time``, ``chance_any``, ``hit`` (peak on an
        event), ``hit_chance_time``, ``hit_chance_any`` and ``area`` (share of image area).
    """
    rng = np.random.default_rng(seed)
    grid = image_grid(stager.setup.spec(), window_s)
    labels = [c.label for c in source.channels]
    epochs = []
    for position in positions:
        stage = int(source.hypnogram.stages[position])
        if stage == int(Stage.UNK):
            continue
        name = stage_name(stage)
        boxes = event_boxes(events_of(position), labels, grid, STAGE_EVENT_KINDS[name])
        if not boxes:
            continue
        _, attributions = explain_epoch(
            stager,
            source,
            int(position),
            methods,
            window_s=window_s,
            target=stage,
            batch_size=batch_size,
        )
        for attr in attributions:
            record = {"epoch": int(position), "stage": name, "method": attr.method,
                      "predicted": attr.predicted, "boxes": len(boxes),
                      "area": float(_box_mask(boxes, grid).mean()),
                      "energy": energy_in_boxes(attr.image_map, boxes, grid),
                      "hit": bool((_box_mask(boxes, grid) & _peak_cell_mask(attr.image_map, grid)).any())}  # fmt: skip
            record["chance_time"], record["hit_chance_time"] = chance_energy(
                attr.image_map, boxes, grid, rng, same_strip=True
            )
            record["chance_any"], record["hit_chance_any"] = chance_energy(
                attr.image_map, boxes, grid, rng, same_strip=False
            )
            epochs.append(record)
    keys = (
        "energy",
        "chance_time",
        "chance_any",
        "hit",
        "hit_chance_time",
        "hit_chance_any",
        "area",
    )
    per_stage: dict[str, dict[str, Any]] = {}
    for method in methods:
        per_stage[method] = {}
        for name in [*STAGE_NAMES, "all"]:
            rows = [r for r in epochs if r["method"] == method and name in (r["stage"], "all")]
            if rows:
                per_stage[method][name] = {"n": len(rows)} | {
                    k: float(np.nanmean([float(r[k]) for r in rows])) for k in keys
                }
    return {"per_stage": per_stage, "epochs": epochs}


def pointing_markdown(result: Mapping[str, Any], title: str) -> str:
    """Markdown table of :func:`pointing_game` results."""
    lines = [f"**{title}**", "",
             "| method | stage | n | energy on events | chance (same strip) | chance (any strip) "
             "| peak on event | chance (same strip) | chance (any strip) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, stages in result["per_stage"].items():
        for stage, row in stages.items():
            lines.append(
                f"| {method} | {stage} | {row['n']} | {row['energy']:.3f} | "
                f"{row['chance_time']:.3f} | {row['chance_any']:.3f} | {row['hit']:.2f} | "
                f"{row['hit_chance_time']:.2f} | {row['hit_chance_any']:.2f} |"
            )
    if not any(result["per_stage"].values()):
        lines.append("| — | — | 0 | no epoch with a stage-defining event | | | | | |")
    return "\n".join(lines) + "\n"


def planted_events(events_json: str | os.PathLike) -> tuple[list[dict], list[int]]:
    """Planted events and stages from a ``NAME-events.json`` written by ``psgvlm synth``."""
    path = Path(events_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(data["events"]), [int(s) for s in data["stages"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a psgvlm synth events file ({err})") from None


def planted_of(
    events: list[dict], onsets: np.ndarray, epoch_length: float
) -> Callable[[int], list[dict]]:
    starts = np.array([float(e["start"]) for e in events])
    ends = np.array([float(e["end"]) for e in events])

    def of(position: int) -> list[dict]:
        onset = float(onsets[position])
        hit = np.flatnonzero((ends > onset) & (starts < onset + epoch_length))
        return [events[i] | {"start": starts[i] - onset, "end": ends[i] - onset,
                             "channels": (events[i].get("extra") or {}).get("channels", [])}
                for i in hit]  # fmt: skip

    return of


def detected_events(
    source, position: int, extra: Mapping[str, np.ndarray] | None = None
) -> list[dict]:
    """Events :func:`engine.features.epoch_features` detects in one epoch's drawn channels.

    Only rows (and extra signals) with samples are analysed, over their common finite span
    from the first finite sample; times are seconds from the epoch's start.
    """
    from engine.features import epoch_features

    batch = source.epoch(position)
    signals = batch.signals[0].astype(np.float64)
    roles = [c.role for c in source.channels]
    labels = [c.label for c in source.channels]
    rows = [i for i in range(signals.shape[0]) if np.isfinite(signals[i]).any()]
    data = [signals[i] for i in rows]
    names, kinds = [labels[i] for i in rows], [roles[i] for i in rows]
    start = int(round(float(source.hypnogram.onsets[position]) * source.fs))
    for label, values in (extra or {}).items():
        segment = np.asarray(values[start : start + source.epoch_samples], dtype=np.float64)
        if label not in names and segment.size == signals.shape[1] and np.isfinite(segment).any():
            data.append(segment)
            names.append(label)
            kinds.append("eog" if "EOG" in label.upper() else "eeg")
    if not data:
        return []
    stack = np.stack(data)
    finite = np.isfinite(stack).all(axis=0)
    if not finite.any():
        return []
    first = int(np.argmax(finite))
    stop = first + int(np.argmin(finite[first:])) if not finite[first:].all() else finite.size
    if (stop - first) / source.fs < 5.0:
        return []
    features = epoch_features(stack[:, first:stop], source.fs, kinds, names)
    offset = first / source.fs
    return [e | {"start": e["start"] + offset, "end": e["end"] + offset} for e in features.events]


def scored_positions(source, epochs: str | None, per_stage: int | None, seed: int) -> np.ndarray:
    stages = np.asarray(source.hypnogram.stages)
    positions = np.arange(stages.size)
    if epochs:
        try:
            lo, hi = (int(p) if p.strip() else None for p in epochs.split(":"))
        except ValueError:
            raise DatasetError(f"--epochs {epochs!r}: expected START:STOP") from None
        positions = positions[slice(lo, hi)]
    if per_stage is not None:
        rng = np.random.default_rng(seed)
        chosen = []
        for k in range(len(STAGE_NAMES)):
            of_stage = positions[stages[positions] == k]
            if of_stage.size:
                chosen.append(
                    rng.choice(of_stage, size=min(per_stage, of_stage.size), replace=False)
                )
        positions = np.sort(np.concatenate(chosen)) if chosen else positions[:0]
    return positions

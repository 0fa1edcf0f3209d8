"""Where the model looks: attribution maps, channel importance and the pointing game.

Two attribution methods, both giving a map with the epoch image's geometry (H x W) for one
stage (the predicted one unless asked otherwise):

- ``occlusion``: each channel strip x time window (``--window`` s) is set back to the
  image's background (white page, grid, labels: :func:`occlude`), the image is re-scored,
  and the drop in the stage's probability is the value of every pixel of that cell;
- ``gradxinput``: gradient x input of the stage's log-probability (softmax over the five
  candidate answers, as in :func:`vlm.evaluate.score_candidates`) with respect to the
  Qwen2-VL ``pixel_values``. Qwen2-VL's processor cuts the image into 14 x 14 patches,
  stacks 2 frames (temporal patch) and orders the patches by 2 x 2 merge blocks; the map
  undoes that order from ``image_grid_thw`` (:func:`patches_to_image`), takes the absolute
  value summed over colour and frames, and is resized back to the image if the processor
  resized it. Processors giving ``(N, 3, H, W)`` tensors (LLaVA) are mapped directly.

Maps are averaged over a channel x time-window grid (seconds from the target epoch's
start) and written as a heatmap overlay PNG and a JSON. :func:`where_decision_rested`
turns a grid and the epoch's detected events into one sentence; ``psgvlm ask ... "where
did you look?"`` answers with it.

Command line::

    psgvlm explain night.edf --epoch 120 --model M --adapter A [--out DIR]
        [--method occlusion,gradxinput] [--window 3] [--target N3]
    psgvlm explain night.edf|SHARDS --channel-importance --model M --adapter A --out DIR
    psgvlm explain synth-0100-PSG.edf --pointing-game --model M --adapter A --out DIR

``--channel-importance`` occludes each whole strip of many epochs (``--per-stage`` N per
predicted stage, ``--epochs START:STOP``) and reports the mean drop of the predicted
stage's probability per channel and stage (``channel_importance.{md,json,png}``).
RECORDING may then also be shards (a directory, glob or ``.tar``).

``--pointing-game`` measures the share of attribution mass (positive part) that falls on
stage-defining events of the epoch's **scored** stage (the map explains that stage):
planted events from ``psgvlm synth`` (``NAME-events.json`` beside ``NAME-PSG.edf``, or
``--events``), otherwise events detected by :mod:`engine.features` (spindles and
K-complexes in N2, slow waves in N3, rapid eye movements in R, slow eye movements in N1).
Chance: the same boxes moved to random times on the same strip (``chance_time``) and to
random strips and times (``chance_any``); the pointing game counts the epochs whose peak
cell lies on an event. Outputs ``pointing_game.{md,json}``.

Recordings: EDF files (with ``--hypnogram``), ``prerau:DIR`` (the Prerau segment, one EEG
channel) and ``yasa:DIR`` (YASA's example snippets: a 15-s N2 excerpt, a 30-s N3 epoch and
859 s of REM EOG, joined one after the other). Channels the model reads but the recording
lacks are drawn as empty strips (NaN).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DatasetError, ModelError, PSGError
from engine.stages import STAGE_NAMES, Stage, stage_name, to_stage

__all__ = [
    "METHODS",
    "STAGE_EVENT_KINDS",
    "ImageGrid",
    "Attribution",
    "image_grid",
    "occlude",
    "patches_to_image",
    "occlusion_attribution",
    "gradient_attribution",
    "explain_epoch",
    "where_decision_rested",
    "write_explanation",
    "ChannelImportance",
    "channel_importance",
    "importance_markdown",
    "plot_importance",
    "event_boxes",
    "energy_in_boxes",
    "chance_energy",
    "pointing_game",
    "pointing_markdown",
    "partial_source",
    "open_explain_source",
    "planted_events",
    "detected_events",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: Attribution methods of ``--method``.
METHODS: tuple[str, ...] = ("occlusion", "gradxinput")
#: Event kinds (planted by :mod:`engine.synth` or detected by :mod:`engine.features`) that
#: define each stage, for the pointing game.
STAGE_EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "W": ("alpha_burst", "blink", "saccade"),
    "N1": ("vertex_wave", "slow_eye_movement"),
    "N2": ("spindle", "k_complex", "kcomplex"),
    "N3": ("slow_wave",),
    "R": ("rapid_eye_movement", "sawtooth_wave"),
}
_EVENT_NOUNS = {
    "spindle": "a sleep spindle", "kcomplex": "a K-complex", "k_complex": "a K-complex",
    "slow_wave": "a slow wave", "rapid_eye_movement": "a rapid eye movement",
    "slow_eye_movement": "a slow eye movement", "alpha_burst": "an alpha burst",
    "vertex_wave": "a vertex wave", "sawtooth_wave": "a sawtooth wave", "blink": "a blink",
    "saccade": "a saccade",
}  # fmt: skip
_SPAN_FRACTION = 0.5
_CHANCE_DRAWS = 64


# ----------------------------------------------------------------------------------------
# Image geometry: channel strips x time windows
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageGrid:
    """Cells of an epoch image: channel strips (rows) x time windows (columns).

    Attributes
    ----------
    height, width : int
        Image size in pixels.
    row_first, row_last : ndarray
        First and last pixel row (inclusive) of each channel's strip.
    col_first, col_stop : ndarray
        First and one-past-last pixel column of each time window.
    edges_s : ndarray
        Window edges in seconds from the target epoch's start (negative in the context
        before it).
    """

    height: int
    width: int
    row_first: np.ndarray
    row_last: np.ndarray
    col_first: np.ndarray
    col_stop: np.ndarray
    edges_s: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(channels, windows)``."""
        return int(self.row_first.size), int(self.col_first.size)

    def cell_means(self, image_map: np.ndarray) -> np.ndarray:
        """Mean of an ``(H, W)`` map over each cell: ``(channels, windows)``."""
        if image_map.shape != (self.height, self.width):
            raise ModelError(f"map {image_map.shape} does not match the image "
                             f"({self.height}, {self.width})")  # fmt: skip
        out = np.zeros(self.shape)
        for c, (r0, r1) in enumerate(zip(self.row_first, self.row_last)):
            for w, (c0, c1) in enumerate(zip(self.col_first, self.col_stop)):
                out[c, w] = float(image_map[r0 : r1 + 1, c0:c1].mean())
        return out

    def fill(self, values: np.ndarray) -> np.ndarray:
        """An ``(H, W)`` map holding each cell's value on its pixels (0 between strips)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.shape:
            raise ModelError(f"grid values {values.shape} do not match the grid {self.shape}")
        out = np.zeros((self.height, self.width))
        for c, (r0, r1) in enumerate(zip(self.row_first, self.row_last)):
            for w, (c0, c1) in enumerate(zip(self.col_first, self.col_stop)):
                out[r0 : r1 + 1, c0:c1] = values[c, w]
        return out

    def columns_of(self, start_s: float, end_s: float) -> tuple[int, int]:
        """Pixel columns ``[first, stop)`` covering seconds (from the target epoch start)."""
        total = self.edges_s[-1] - self.edges_s[0]
        first = math.floor((start_s - self.edges_s[0]) / total * self.width)
        stop = math.ceil((end_s - self.edges_s[0]) / total * self.width)
        first = min(max(first, 0), self.width - 1)
        return first, min(max(stop, first + 1), self.width)


def image_grid(spec, window_s: float = 3.0) -> ImageGrid:
    """The :class:`ImageGrid` of a :class:`engine.raster.RenderSpec`.

    Parameters
    ----------
    spec : engine.raster.RenderSpec
    window_s : float
        Window length in seconds; the last window may be shorter.

    Examples
    --------
    >>> from engine.raster import RenderSpec
    >>> image_grid(RenderSpec.for_roles(["eeg", "eog"], width=300, height=100), 3.0).shape
    (2, 10)
    """
    from engine.raster.layout import strip_rows

    if not (math.isfinite(window_s) and window_s > 0):
        raise ModelError(f"window must be a positive number of seconds, got {window_s}")
    total = spec.epochs_per_image * spec.epoch_seconds
    count = max(1, math.ceil(total / window_s - 1e-9))
    edges = np.minimum(np.arange(count + 1) * float(window_s), total)
    cols = np.round(edges / total * spec.width).astype(np.int64)
    first = cols[:-1]
    stop = np.maximum(cols[1:], first + 1)
    r0, r1 = strip_rows(spec.height, spec.channels)
    return ImageGrid(spec.height, spec.width, r0, r1, first, stop,
                     edges - spec.context * spec.epoch_seconds)  # fmt: skip


def occlude(pixels: np.ndarray, spec, channel: int, col_first: int, col_stop: int) -> np.ndarray:
    """A copy of a rendered image with one strip's columns set back to the background.

    Parameters
    ----------
    pixels : ndarray
        uint8 ``(H, W)`` or ``(H, W, 3)`` image drawn with ``spec``.
    spec : engine.raster.RenderSpec
    channel : int
        Strip index (montage order).
    col_first, col_stop : int
        Columns ``[col_first, col_stop)`` to clear.

    Returns
    -------
    ndarray
        Same shape and dtype; only the rows of ``channel``'s strip in those columns change,
        to the background (white page, target band, grid, labels) of ``spec``.
    """
    from engine.raster.layout import layout_for, strip_rows

    arr = np.asarray(pixels)
    if (
        arr.dtype != np.uint8
        or arr.shape[:2] != (spec.height, spec.width)
        or arr.ndim not in (2, 3)
    ):
        raise ModelError(f"image {arr.dtype} {arr.shape} is not a uint8 {spec.height}x{spec.width} "
                         "render of this spec")  # fmt: skip
    if not 0 <= channel < spec.channels:
        raise ModelError(f"channel {channel} out of range (0..{spec.channels - 1})")
    if not 0 <= col_first < col_stop <= spec.width:
        raise ModelError(f"columns [{col_first}, {col_stop}) outside 0..{spec.width}")
    r0, r1 = strip_rows(spec.height, spec.channels)
    rows = slice(int(r0[channel]), int(r1[channel]) + 1)
    template = layout_for(spec).template
    out = arr.copy()
    if out.ndim == 2:
        out[rows, col_first:col_stop] = template[rows, col_first:col_stop, 0]
    else:
        out[rows, col_first:col_stop] = template[rows, col_first:col_stop]  # broadcasts grey
    return out


# ----------------------------------------------------------------------------------------
# Attributions
# ----------------------------------------------------------------------------------------
@dataclass
class Attribution:
    """One attribution map of one epoch image.

    Attributes
    ----------
    method : str
        ``occlusion`` or ``gradxinput``.
    target : str
        Stage explained.
    predicted : str
        The model's most probable stage.
    probability : float
        ``p(target)`` on the intact image.
    probabilities : dict
        Stage -> probability on the intact image.
    image_map : ndarray
        ``(H, W)`` attribution (occlusion: probability drop; gradxinput: |gradient x input|).
    grid : ndarray
        ``(channels, windows)`` mean of ``image_map`` per cell.
    channels : list of str
        Strip labels, top to bottom.
    edges_s : ndarray
        Window edges in seconds from the target epoch's start.
    """

    method: str
    target: str
    predicted: str
    probability: float
    probabilities: dict[str, float]
    image_map: np.ndarray
    grid: np.ndarray
    channels: list[str]
    edges_s: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the grid, not the pixel map)."""
        return {
            "method": self.method,
            "target": self.target,
            "predicted": self.predicted,
            "probability": self.probability,
            "probabilities": self.probabilities,
            "channels": list(self.channels),
            "window_edges_s": [round(float(e), 3) for e in self.edges_s],
            "grid": [[float(v) for v in row] for row in self.grid],
            "image_shape": list(self.image_map.shape),
        }


def _target_index(target: str | int | None, probs: np.ndarray) -> int:
    if target is None:
        return int(np.argmax(probs))
    stage = int(to_stage(target)) if isinstance(target, str) else int(target)
    if not 0 <= stage < len(STAGE_NAMES):
        raise ModelError(f"target stage {target!r}: expected one of {STAGE_NAMES}")
    return stage


def occlusion_attribution(
    model,
    processor,
    pixels: np.ndarray,
    config,
    *,
    window_s: float = 3.0,
    target: str | int | None = None,
    batch_size: int = 8,
    channels: Sequence[str] | None = None,
) -> Attribution:
    """Occlusion map: drop of ``p(target)`` when each strip x window is cleared.

    Parameters
    ----------
    model, processor
        From :func:`vlm.model.load_model_and_processor`.
    pixels : ndarray
        uint8 rendered image ``(H, W)`` or ``(H, W, 3)`` (one epoch, as drawn by
        ``config.spec()``).
    config : vlm.stage.RenderConfig
        How the adapter's training images were made (spec, encoding, question).
    window_s : float
        Occlusion window in seconds.
    target : str or int, optional
        Stage to explain (default: the predicted one).
    batch_size : int
        Images per forward pass.
    channels : sequence of str, optional
        Strip labels (default: the configuration's channel names).
    """
    from .evaluate import score_candidates
    from .stage import model_images

    spec = config.spec()
    grid = image_grid(spec, window_s)
    occluded = [pixels]
    for c in range(spec.channels):
        for c0, c1 in zip(grid.col_first, grid.col_stop):
            occluded.append(occlude(pixels, spec, c, int(c0), int(c1)))
    images = model_images(np.stack(occluded), config)
    probs = score_candidates(model, processor, images, [config.question()] * len(images),
                             STAGE_NAMES, batch_size)  # fmt: skip
    k = _target_index(target, probs[0])
    drops = (probs[0, k] - probs[1:, k]).reshape(grid.shape)
    return Attribution(
        method="occlusion", target=STAGE_NAMES[k], predicted=STAGE_NAMES[int(probs[0].argmax())],
        probability=float(probs[0, k]),
        probabilities={n: float(p) for n, p in zip(STAGE_NAMES, probs[0])},
        image_map=grid.fill(drops), grid=drops,
        channels=list(channels or [c["name"] for c in config.channels]), edges_s=grid.edges_s,
    )  # fmt: skip


def patches_to_image(
    values: np.ndarray,
    grid_thw: Sequence[int],
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
) -> np.ndarray:
    """Undo Qwen2-VL's patch flattening: ``(t*h*w, C*T*P*P)`` -> ``(t*T, C, h*P, w*P)``.

    The processor orders patches as ``(t, h/m, w/m, m, m)`` (2 x 2 merge blocks together)
    and each patch's values as ``(C, T, P, P)``.

    Examples
    --------
    >>> patches_to_image(np.zeros((16, 3 * 2 * 14 * 14)), (1, 4, 4)).shape
    (2, 3, 56, 56)
    """
    t, h, w = (int(v) for v in grid_thw)
    m, p, tp = merge_size, patch_size, temporal_patch_size
    values = np.asarray(values)
    if h % m or w % m or values.shape[0] != t * h * w or values.shape[1] % (tp * p * p):
        raise ModelError(f"patch values {values.shape} do not fit grid {grid_thw} with patch "
                         f"{p}, temporal patch {tp}, merge {m}")  # fmt: skip
    colours = values.shape[1] // (tp * p * p)
    blocks = values.reshape(t, h // m, w // m, m, m, colours, tp, p, p)
    return blocks.transpose(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(t * tp, colours, h * p, w * p)


def _resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if values.shape == (height, width):
        return values
    resized = Image.fromarray(values.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    # Keep the total mass: a resized map spreads the same evidence over more or fewer pixels.
    out = np.asarray(resized, dtype=np.float64)
    return out * (values.size / out.size)


def _candidate_batch(processor, image, prompt: str):
    from .data import build_messages, encode_chats, render_chat

    messages = build_messages({}, question=prompt)
    texts, answers = [], []
    for cand in STAGE_NAMES:
        text, tail = render_chat(processor, messages, cand)
        texts.append(text)
        answers.append(tail[: tail.index(cand) + len(cand)])
    return encode_chats(processor, [image] * len(STAGE_NAMES), texts, answers)


def gradient_attribution(
    model,
    processor,
    image,
    config,
    *,
    window_s: float = 3.0,
    target: str | int | None = None,
    channels: Sequence[str] | None = None,
) -> Attribution:
    """Gradient x input of ``log p(target)`` with respect to the image's pixel values.

    ``p`` is the softmax over the five candidate answers' summed token log-likelihoods,
    computed in one differentiable forward pass; the five sequences share one leaf tensor
    of pixel values, so its gradient sums over them.

    Parameters
    ----------
    model, processor
        Model (with adapter) and processor; Qwen2-VL (patch tokens) or a processor that
        returns ``(N, 3, H, W)`` pixel tensors.
    image : PIL.Image.Image
        The epoch image the model sees (RGB).
    config : vlm.stage.RenderConfig
    window_s, target, channels
        As in :func:`occlusion_attribution`.
    """
    import torch

    spec = config.spec()
    grid = image_grid(spec, window_s)
    if (image.height, image.width) != (spec.height, spec.width):
        raise ModelError(f"image {image.width}x{image.height} is not the spec's "
                         f"{spec.width}x{spec.height}")  # fmt: skip
    batch = _candidate_batch(processor, image, config.question())
    device = next(model.parameters()).device
    n_cand = len(STAGE_NAMES)
    pixel_values = batch["pixel_values"]
    per_image = pixel_values.shape[0] // n_cand
    leaf = pixel_values[:per_image].detach().clone().to(device).float().requires_grad_(True)
    inputs = {k: v.to(device) for k, v in batch.items()
              if k not in ("labels", "answer_mask", "pixel_values")}  # fmt: skip
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    inputs["pixel_values"] = torch.cat([leaf] * n_cand).to(dtype)
    mask = batch["answer_mask"][:, 1:].to(device)
    targets = batch["input_ids"][:, 1:].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(**inputs, use_cache=False).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
            sequence = (logp * mask).sum(dim=1)
            log_probs = torch.log_softmax(sequence, dim=0)
            probs = log_probs.detach().exp().cpu().double().numpy()
            k = _target_index(target, probs)
            (grad,) = torch.autograd.grad(log_probs[k], leaf)
    finally:
        model.train(was_training)
    contribution = (grad * leaf).detach().cpu().double().numpy()
    if "image_grid_thw" in batch:
        ip = processor.image_processor
        frames = patches_to_image(
            contribution, batch["image_grid_thw"][0].tolist(), ip.patch_size,
            ip.temporal_patch_size, ip.merge_size,
        )  # fmt: skip
        saliency = np.abs(frames).sum(axis=(0, 1))
    elif contribution.ndim == 4:
        saliency = np.abs(contribution[0]).sum(axis=0)
    else:
        raise ModelError(f"gradient x input: pixel values of shape {tuple(pixel_values.shape)} "
                         "are neither Qwen2-VL patches nor (N, 3, H, W) images")  # fmt: skip
    image_map = _resize_map(saliency, spec.height, spec.width)
    return Attribution(
        method="gradxinput", target=STAGE_NAMES[k], predicted=STAGE_NAMES[int(probs.argmax())],
        probability=float(probs[k]), probabilities={n: float(p) for n, p in zip(STAGE_NAMES, probs)},
        image_map=image_map, grid=grid.cell_means(image_map),
        channels=list(channels or [c["name"] for c in config.channels]), edges_s=grid.edges_s,
    )  # fmt: skip


def explain_epoch(
    model,
    processor,
    source,
    config,
    index: int,
    methods: Sequence[str] = METHODS,
    *,
    window_s: float = 3.0,
    target: str | int | None = None,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[Attribution]]:
    """Render epoch ``index`` of ``source`` as the model saw it and attribute its stage.

    Returns
    -------
    (ndarray, list of Attribution)
        The rendered uint8 image and one attribution per method.
    """
    from engine.raster import render

    from .stage import model_images

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ModelError(f"methods {list(methods)}: expected some of {METHODS}")
    spec = config.spec()
    pixels = render(source.epoch(index, context=spec.context).signals, spec)[0]
    labels = [c.label for c in source.channels]
    out = []
    for method in methods:
        if method == "occlusion":
            out.append(occlusion_attribution(model, processor, pixels, config, window_s=window_s,
                                             target=target, batch_size=batch_size,
                                             channels=labels))  # fmt: skip
        else:
            image = model_images(pixels[None], config)[0]
            out.append(gradient_attribution(model, processor, image, config, window_s=window_s,
                                            target=target, channels=labels))  # fmt: skip
    return pixels, out


# ----------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------
def _short(label: str) -> str:
    return re.sub(r"^(EEG|EOG|EMG|ECG)\s+", "", str(label).strip(), flags=re.IGNORECASE)


def _event_dicts(events: Any) -> list[dict]:
    if events is None:
        return []
    if hasattr(events, "events"):  # EpochFeatures
        events = events.events
    out = []
    for event in events:
        item = event if isinstance(event, Mapping) else getattr(event, "__dict__", {})
        if not {"kind", "start", "end"} <= set(item):
            raise ModelError(f"event {event!r} lacks kind/start/end")
        out.append(dict(item))
    return out


def where_decision_rested(
    attribution_grid: np.ndarray,
    events: Any,
    channel_labels: Sequence[str],
    window_edges: Sequence[float] | None = None,
) -> str:
    """One sentence on where the attribution peaks and what was detected there.

    Parameters
    ----------
    attribution_grid : ndarray
        ``(channels, windows)`` attribution (e.g. :attr:`Attribution.grid`); only its
        positive part counts.
    events : EpochFeatures or sequence of dict
        Detected events with ``kind``, ``channel`` (labels joined by ``/``), ``start`` and
        ``end`` in seconds from the epoch start (:attr:`EpochFeatures.events`).
    channel_labels : sequence of str
        Strip labels, top to bottom.
    window_edges : sequence of float, optional
        Window edges in seconds from the epoch start (default: equal windows over 30 s).

    Returns
    -------
    str
        E.g. ``"The decision rested mostly on C4-M1 between 12 and 18 s (41% of the
        attribution), where a sleep spindle was detected (12.9-13.8 s)."``

    Examples
    --------
    >>> grid = np.array([[0.0, 0.1, 0.5, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    >>> ev = [{"kind": "spindle", "channel": "EEG C4-M1", "start": 13.0, "end": 14.0}]
    >>> where_decision_rested(grid, ev, ["EEG C4-M1", "EMG chin"])
    'The decision rested mostly on C4-M1 between 12 and 24 s (90% of the attribution), where a sleep spindle was detected (13.0-14.0 s).'
    """
    grid = np.asarray(attribution_grid, dtype=np.float64)
    labels = list(channel_labels)
    if grid.ndim != 2 or grid.shape[0] != len(labels) or grid.shape[1] < 1:
        raise ModelError(f"attribution grid {grid.shape} needs one row per channel ({len(labels)})")
    edges = (np.linspace(0.0, 30.0, grid.shape[1] + 1) if window_edges is None
             else np.asarray(window_edges, dtype=np.float64))  # fmt: skip
    if edges.shape != (grid.shape[1] + 1,):
        raise ModelError(f"{edges.size} window edges for {grid.shape[1]} windows")
    positive = np.where(np.isfinite(grid), np.clip(grid, 0.0, None), 0.0)
    total = positive.sum()
    if total <= 0:
        return ("No part of the image raised the stage's probability: the decision did not "
                "rest on any one channel or time.")  # fmt: skip
    row, col = np.unravel_index(int(np.argmax(positive)), positive.shape)
    peak = positive[row, col]
    first = last = col
    while first > 0 and positive[row, first - 1] >= _SPAN_FRACTION * peak:
        first -= 1
    while last < grid.shape[1] - 1 and positive[row, last + 1] >= _SPAN_FRACTION * peak:
        last += 1
    start, end = float(edges[first]), float(edges[last + 1])
    share = positive[row, first : last + 1].sum() / total
    text = (f"The decision rested mostly on {_short(labels[row])} between {start:g} and "
            f"{end:g} s ({100 * share:.0f}% of the attribution)")  # fmt: skip
    found = []
    for event in _event_dicts(events):
        on_strip = labels[row] in str(event.get("channel", "")).split("/")
        if on_strip and event["start"] < end and event["end"] > start:
            found.append(event)
    if not found:
        return text + ", where no sleep event was detected."
    first_event = found[0]
    noun = _EVENT_NOUNS.get(first_event["kind"], first_event["kind"].replace("_", " "))
    more = f" and {len(found) - 1} more event(s)" if len(found) > 1 else ""
    return (f"{text}, where {noun} was detected ({first_event['start']:.1f}-"
            f"{first_event['end']:.1f} s){more}.")  # fmt: skip


# ----------------------------------------------------------------------------------------
# Figures and files
# ----------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_explanation(
    out_dir: str | os.PathLike,
    index: int,
    pixels: np.ndarray,
    attributions: Sequence[Attribution],
    sentence: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``epoch_NNNNN_<method>.png`` (heatmap over the image) and ``epoch_NNNNN.json``.

    Returns
    -------
    dict
        ``method -> PNG path`` and ``"json" -> path``.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    paths: dict[str, Path] = {}
    for attr in attributions:
        height, width = attr.image_map.shape
        fig, ax = plt.subplots(figsize=(max(4.0, width / 60), max(3.0, height / 60)))
        extent = (float(attr.edges_s[0]), float(attr.edges_s[-1]), height, 0)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent, aspect="auto")
        limit = float(np.max(np.abs(attr.image_map))) or 1.0
        cmap, vmin = ("RdBu_r", -limit) if attr.method == "occlusion" else ("inferno_r", 0.0)
        norm = plt.Normalize(vmin, limit)
        colours = plt.get_cmap(cmap)(norm(attr.image_map))
        colours[..., 3] = 0.75 * np.clip(np.abs(attr.image_map) / limit, 0.0, 1.0)  # faint = weak
        ax.imshow(colours, extent=extent, aspect="auto")
        shown = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        from engine.raster.layout import strip_rows

        r0, r1 = strip_rows(height, len(attr.channels))
        ax.set_yticks((r0 + r1 + 1) / 2, [_short(c) for c in attr.channels])
        ax.set_xlabel("seconds from the epoch start")
        what = "drop in p" if attr.method == "occlusion" else "|grad x input|"
        ax.set_title(f"epoch {index}: {attr.method} for {attr.target} (p = {attr.probability:.2f}"
                     f"; predicted {attr.predicted})", fontsize=9)  # fmt: skip
        fig.colorbar(shown, ax=ax, label=what, fraction=0.04)
        fig.tight_layout()
        path = out / f"epoch_{index:05d}_{attr.method}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[attr.method] = path
    payload = {"epoch": int(index), "attributions": [a.to_dict() for a in attributions]}
    if sentence is not None:
        payload["where"] = sentence
    payload.update(extra or {})
    json_path = out / f"epoch_{index:05d}.json"
    json_path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    paths["json"] = json_path
    return paths


# ----------------------------------------------------------------------------------------
# Channel importance
# ----------------------------------------------------------------------------------------
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
    model,
    processor,
    items: Iterable[tuple[np.ndarray, int]],
    config,
    *,
    channels: Sequence[str] | None = None,
    batch_size: int = 8,
) -> ChannelImportance:
    """Occlude each whole strip of each image and measure the predicted stage's drop.

    Parameters
    ----------
    items : iterable of (ndarray, int)
        uint8 images drawn with ``config.spec()`` and their scored stage (-1 if unknown).
    config : vlm.stage.RenderConfig
    channels : sequence of str, optional
        Strip labels (default: the configuration's channel names).
    """
    from .evaluate import score_candidates
    from .stage import model_images

    spec = config.spec()
    question = config.question()
    drops, predicted, true = [], [], []
    for pixels, stage in items:
        variants = [pixels] + [
            occlude(pixels, spec, c, 0, spec.width) for c in range(spec.channels)
        ]
        probs = score_candidates(model, processor, model_images(np.stack(variants), config),
                                 [question] * len(variants), STAGE_NAMES, batch_size)  # fmt: skip
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
    names = [_short(c) for c in result.channels]
    lines = ["| predicted stage | n | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    for stage, row in table.items():
        values = " | ".join(f"{row[c]:+.3f}" for c in result.channels)
        lines.append(f"| {stage} | {row['n']} | {values} |")
    return "\n".join(lines) + "\n"


def plot_importance(result: ChannelImportance, path: str | os.PathLike) -> Path:
    """Grouped bars: mean drop per channel for each predicted stage."""
    plt = _pyplot()
    table = {k: v for k, v in result.table().items() if k != "all"}
    stages = list(table)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(stages), 1), 3.2))
    width = 0.8 / max(len(result.channels), 1)
    for i, channel in enumerate(result.channels):
        xs = np.arange(len(stages)) + (i - (len(result.channels) - 1) / 2) * width
        ax.bar(xs, [table[s][channel] for s in stages], width, label=_short(channel))
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


# ----------------------------------------------------------------------------------------
# Pointing game
# ----------------------------------------------------------------------------------------
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
    for event in _event_dicts(events):
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
    model,
    processor,
    source,
    config,
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
    source : engine.epochs.EpochSource
        Recording with a scored hypnogram.
    config : vlm.stage.RenderConfig
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
    grid = image_grid(config.spec(), window_s)
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
            model,
            processor,
            source,
            config,
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


# ----------------------------------------------------------------------------------------
# Recordings: EDF, partial montages (Prerau, YASA snippets), events
# ----------------------------------------------------------------------------------------
def partial_source(
    signals: Mapping[str, np.ndarray],
    fs: Mapping[str, float],
    roles: Mapping[str, str],
    hypnogram,
    config,
    source: str = "",
    preprocessed: bool = False,
):
    """An :class:`engine.epochs.EpochSource` with the model's rows, filled with what exists.

    Each of the configuration's channels takes the first unused recording channel of its
    role, preprocessed as in training; rows without one are NaN (empty strips). Channels
    end with NaN where they are shorter than the longest.

    Parameters
    ----------
    signals, fs, roles : mapping
        Label -> samples (µV), rate (Hz) and role.
    hypnogram : engine.io.hypnogram.Hypnogram
    config : vlm.stage.RenderConfig
    source : str
        Name for messages.
    preprocessed : bool
        The signals are already filtered and at the configuration's target rate.
    """
    from engine.epochs import EpochSource
    from engine.montage import ResolvedChannel
    from engine.preprocess import preprocess

    params = config.preprocessing_params()
    if not params.resample:
        raise ModelError("partial montages need resampling to one rate (preprocessing.resample)")
    used: set[str] = set()
    rows: list[np.ndarray | None] = []
    channels = []
    for position, wanted in enumerate(config.channels):
        role = str(wanted["role"]).lower()
        label = next((k for k in signals if roles.get(k) == role and k not in used), None)
        if label is None:
            rows.append(None)
            channels.append(ResolvedChannel(role, str(wanted["name"]),
                                            f"{role.upper()} {wanted['name']} (absent)", -1,
                                            "absent"))  # fmt: skip
            continue
        used.add(label)
        values = np.asarray(signals[label], dtype=np.float64)
        if preprocessed and float(fs[label]) != params.target_fs:
            raise ModelError(f"{label}: preprocessed at {fs[label]} Hz, not the model's "
                             f"{params.target_fs:g} Hz")  # fmt: skip
        rows.append(values if preprocessed else preprocess(values, float(fs[label]), role,
                                                           params=params))  # fmt: skip
        channels.append(ResolvedChannel(role, str(wanted["name"]), label, position, "exact"))
    if all(r is None for r in rows):
        raise DatasetError(f"{source or 'recording'}: none of its channels has a role the model "
                           f"reads ({', '.join(config.roles)})")  # fmt: skip
    length = max(r.size for r in rows if r is not None)
    stacked = np.full((len(rows), length), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            stacked[i, : row.size] = row
    return EpochSource(stacked, params.target_fs, channels, hypnogram,
                       source=Path(source) if source else None)  # fmt: skip


def _yasa_snippets(folder: Path, config):
    """YASA's example snippets joined: N2 (15 s + 15 s empty), N3 (30 s), REM EOG epochs."""
    from engine.io.hypnogram import Hypnogram
    from engine.preprocess import preprocess

    files = {"n2": folder / "data_N2_spindles_15sec_200Hz.txt",
             "n3": folder / "data_N3_no-spindles_30sec_100Hz.txt",
             "rem": folder / "data_EOGs_REM_256Hz.npz"}  # fmt: skip
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"yasa:{folder}: missing {missing}")
    params = config.preprocessing_params()
    fs = params.target_fs
    epoch = int(round(30.0 * fs))
    n2 = preprocess(np.loadtxt(files["n2"]), 200.0, "eeg", params=params)
    n3 = preprocess(np.loadtxt(files["n3"]), 100.0, "eeg", params=params)
    with np.load(files["rem"]) as npz:
        eog, eog_fs = np.asarray(npz["data"], dtype=np.float64), float(npz["sf"])
    loc, roc = (preprocess(row, eog_fs, "eog", params=params) for row in eog[:2])
    n_rem = loc.size // epoch
    eeg = np.full((2 + n_rem) * epoch, np.nan)
    eeg[: min(n2.size, epoch)] = n2[:epoch]
    eeg[epoch : epoch + min(n3.size, epoch)] = n3[:epoch]
    eog_rows = [np.full_like(eeg, np.nan) for _ in range(2)]
    for row, values in zip(eog_rows, (loc, roc)):
        row[2 * epoch :] = values[: n_rem * epoch]
    hypnogram = Hypnogram.from_stages(["N2", "N3"] + ["R"] * n_rem, 30.0)
    signals = {"EEG": eeg, "EOG LOC": eog_rows[0], "EOG ROC": eog_rows[1]}
    roles = {"EEG": "eeg", "EOG LOC": "eog", "EOG ROC": "eog"}
    source = partial_source(signals, dict.fromkeys(signals, fs), roles, hypnogram, config,
                            f"yasa:{folder}", preprocessed=True)  # fmt: skip
    return source, {"EOG LOC": eog_rows[0], "EOG ROC": eog_rows[1]}


def open_explain_source(recording: str, config, hypnogram=None, montage: str | None = None):
    """EpochSource of an EDF recording, ``prerau:DIR`` or ``yasa:DIR`` (module docstring).

    Returns
    -------
    (EpochSource, dict)
        The source, and extra signals (label -> preprocessed samples) that are not strips
        but help detection (the second EOG of the YASA snippets).
    """
    from .stage import open_source

    text = str(recording)
    if text.startswith("prerau:") and not os.path.exists(text):
        from engine.io.prerau import load_prerau

        rec = load_prerau(text[len("prerau:") :])
        roles = {label: "eeg" for label in rec.signals}
        return partial_source(rec.signals, rec.fs, roles, rec.hypnogram, config, text), {}
    if text.startswith("yasa:") and not os.path.exists(text):
        return _yasa_snippets(Path(text[len("yasa:") :]), config)
    return open_source(Path(text), config, hypnogram, montage), {}


def planted_events(events_json: str | os.PathLike) -> tuple[list[dict], list[int]]:
    """Planted events and stages from a ``NAME-events.json`` written by ``psgvlm synth``."""
    path = Path(events_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return list(data["events"]), [int(s) for s in data["stages"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a psgvlm synth events file ({err})") from None


def _planted_of(
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


def _scored_positions(source, epochs: str | None, per_stage: int | None, seed: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm explain``."""
    from .stage import add_model_arguments

    parser.add_argument("recording", help="EDF recording, prerau:DIR, yasa:DIR, or shards "
                        "(--channel-importance)")  # fmt: skip
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--epoch", help="explain this epoch (0-based; several: 12,40,97)")
    mode.add_argument(
        "--channel-importance",
        action="store_true",
        help="occlude whole strips over many epochs; table + plot per stage",
    )
    mode.add_argument(
        "--pointing-game",
        action="store_true",
        help="attribution on planted/detected events vs random boxes",
    )
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("explain"), help="output directory")
    parser.add_argument(
        "--method",
        default="occlusion,gradxinput",
        help=f"comma-separated attribution methods: {', '.join(METHODS)}",
    )
    parser.add_argument("--window", type=float, default=3.0, help="occlusion window (s)")
    parser.add_argument("--target", help="stage to explain (default: the predicted one)")
    parser.add_argument("--epochs", metavar="START:STOP", help="epochs for the aggregate modes")
    parser.add_argument("--per-stage", type=int, help="at most N epochs per scored stage "
                        "(aggregate modes; drawn with --seed)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="at most N shard samples (--channel-importance)")
    parser.add_argument("--events", type=Path, help="planted events JSON (psgvlm synth)")
    parser.add_argument("--seed", type=int, default=0, help="seed of epoch draws and chance boxes")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ModelError(f"--method {text!r}: expected some of {', '.join(METHODS)}")
    return methods


def _is_shards(text: str) -> bool:
    path = Path(text)
    return text.endswith(".tar") or "*" in text or "{" in text or (
        path.is_dir() and any(path.glob("*-*.tar")))  # fmt: skip


def _epoch_list(text: str, count: int) -> list[int]:
    try:
        epochs = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise PSGError(f"--epoch {text!r}: expected epoch numbers such as 12 or 12,40") from None
    bad = [e for e in epochs if not 0 <= e < count]
    if bad or not epochs:
        raise PSGError(f"--epoch {text!r}: the recording has epochs 0..{count - 1}")
    return epochs


def _run_epoch(args, model, processor, config, source, extra) -> int:
    for index in _epoch_list(args.epoch, len(source)):
        pixels, attributions = explain_epoch(model, processor, source, config, index,
                                             _methods(args.method), window_s=args.window,
                                             target=args.target, batch_size=args.batch_size)  # fmt: skip
        events = detected_events(source, index, extra)
        lead = attributions[0]
        sentence = where_decision_rested(lead.grid, events, lead.channels, lead.edges_s)
        scored = int(source.hypnogram.stages[index])
        paths = write_explanation(args.out, index, pixels, attributions, sentence,
                                  {"recording": str(args.recording), "scored": stage_name(scored),
                                   "events": events})  # fmt: skip
        print(f"epoch {index} (scored {stage_name(scored)}): {lead.predicted} (p = "
              f"{lead.probabilities[lead.predicted]:.2f}). {sentence}")  # fmt: skip
        for path in paths.values():
            print(path)
    return 0


def _shard_items(args, config) -> tuple[list[tuple[np.ndarray, int]], list[str]]:
    from .data import expand_shards, read_samples

    samples = read_samples(expand_shards(args.recording, "test"), limit=args.limit)
    if not samples:
        raise PSGError(f"{args.recording}: no scored samples")
    spec = config.spec()
    items = []
    for s in samples:
        pixels = np.asarray(s["image"], dtype=np.uint8)
        if pixels.shape[:2] != (spec.height, spec.width):
            raise PSGError(f"{s['key']}: image {pixels.shape[:2]} is not the render config's "
                           f"{spec.height}x{spec.width}")  # fmt: skip
        items.append((pixels, int(s["cls"])))
    return items, [c.get("label") or c["name"] for c in config.channels]


def _run_importance(args, model, processor, config, source) -> int:
    from engine.raster import render

    if source is None:
        items, labels = _shard_items(args, config)
    else:
        spec = config.spec()
        positions = _scored_positions(source, args.epochs, args.per_stage, args.seed)
        scored = np.asarray(source.hypnogram.stages)[positions] != int(Stage.UNK)
        if scored.any():
            positions = positions[scored]
        items = ((render(source.epoch(int(p), context=spec.context).signals, spec)[0],
                  int(source.hypnogram.stages[p])) for p in positions)  # fmt: skip
        labels = [c.label for c in source.channels]
    result = channel_importance(model, processor, items, config, channels=labels,
                                batch_size=args.batch_size)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "channel_importance.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    markdown = importance_markdown(result)
    (out / "channel_importance.md").write_text(markdown)
    plot_importance(result, out / "channel_importance.png")
    print(markdown, end="")
    print(out / "channel_importance.png")
    return 0


def _run_pointing(args, model, processor, config, source, extra) -> int:
    events_path = args.events
    if events_path is None and str(args.recording).endswith("-PSG.edf"):
        candidate = Path(str(args.recording)[: -len("-PSG.edf")] + "-events.json")
        events_path = candidate if candidate.is_file() else None
    if events_path is not None:
        events, stages = planted_events(events_path)
        if args.hypnogram is None:
            from engine.io.hypnogram import Hypnogram

            source = open_explain_source(args.recording, config, Hypnogram.from_stages(stages, 30.0),
                                         args.montage)[0]  # fmt: skip
        events_of = _planted_of(events, np.asarray(source.hypnogram.onsets), source.epoch_length)
        kind = f"planted events ({events_path.name})"
    else:

        def events_of(position: int) -> list[dict]:
            return detected_events(source, position, extra)

        kind = "events detected by engine.features"
    if not (np.asarray(source.hypnogram.stages) != int(Stage.UNK)).any():
        raise PSGError(f"{args.recording}: the pointing game needs scored epochs (--hypnogram)")
    positions = _scored_positions(source, args.epochs, args.per_stage, args.seed)
    result = pointing_game(model, processor, source, config, events_of, positions,
                           methods=_methods(args.method), window_s=args.window,
                           batch_size=args.batch_size, seed=args.seed)  # fmt: skip
    result["events"] = kind
    result["recording"] = str(args.recording)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pointing_game.json").write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    markdown = pointing_markdown(result, f"{args.recording}: {kind}")
    (out / "pointing_game.md").write_text(markdown)
    print(markdown, end="")
    return 0


def run(args: argparse.Namespace) -> int:
    """``psgvlm explain``: one epoch, channel importance or the pointing game."""
    import torch

    from .stage import find_render_setup, load_model, read_grid

    if args.window <= 0:
        raise ModelError(f"--window must be positive, got {args.window}")
    if args.per_stage is not None and args.per_stage < 1:
        raise ModelError(f"--per-stage must be at least 1, got {args.per_stage}")
    if torch.get_num_threads() > 1 and not torch.cuda.is_available():
        torch.set_num_threads(1)
    config = find_render_setup(args.adapter, args.render_config)
    model, processor = load_model(args)
    text = str(args.recording)
    if args.channel_importance and _is_shards(text):
        return _run_importance(args, model, processor, config, None)
    grid = None
    if args.hypnogram is not None:
        grid = read_grid(args.hypnogram, Path(text))
    source, extra = open_explain_source(text, config, grid, args.montage)
    if args.channel_importance:
        return _run_importance(args, model, processor, config, source)
    if args.pointing_game:
        return _run_pointing(args, model, processor, config, source, extra)
    return _run_epoch(args, model, processor, config, source, extra)

"""Where the model looks: attribution maps of one epoch image for one stage.

Two methods, both giving a map with the epoch image's geometry (H x W) for one stage (the
predicted one unless asked otherwise):

- ``occlusion``: each channel strip x time window (``window_s`` s) is set back to the
  image's background (white page, grid, labels: :func:`occlude`), the image is re-scored,
  and the drop in the stage's probability is the value of every pixel of that cell;
- ``gradxinput``: gradient x input of the stage's log-probability (softmax over the five
  candidate answers, as in :func:`vlm.scoring.score_candidates`) with respect to the
  Qwen2-VL ``pixel_values``. Qwen2-VL's processor cuts the image into 14 x 14 patches,
  stacks 2 frames (temporal patch) and orders the patches by 2 x 2 merge blocks; the map
  undoes that order from ``image_grid_thw`` (:func:`patches_to_image`), takes the absolute
  value summed over colour and frames, and is resized back to the image if the processor
  resized it. Processors giving ``(N, 3, H, W)`` tensors (LLaVA) are mapped directly.

Maps are averaged over a channel x time-window grid (seconds from the target epoch's
start). :func:`where_decision_rested` turns a grid and the epoch's detected events into one
sentence; ``psgvlm ask ... "where did you look?"`` answers with it. Aggregate studies
(channel importance, the pointing game) are in :mod:`vlm.attribution_studies`; the
command is ``psgvlm explain`` (:mod:`vlm.commands.explain`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ModelError
from engine.stages import STAGE_NAMES, to_stage

__all__ = [
    "METHODS",
    "ImageGrid",
    "Attribution",
    "image_grid",
    "occlude",
    "patches_to_image",
    "occlusion_attribution",
    "gradient_attribution",
    "explain_epoch",
    "where_decision_rested",
    "short_label",
    "event_dicts",
    "agg_pyplot",
]

#: Attribution methods (``psgvlm explain --method``).
METHODS: tuple[str, ...] = ("occlusion", "gradxinput")

_EVENT_NOUNS = {
    "spindle": "a sleep spindle", "kcomplex": "a K-complex", "k_complex": "a K-complex",
    "slow_wave": "a slow wave", "rapid_eye_movement": "a rapid eye movement",
    "slow_eye_movement": "a slow eye movement", "alpha_burst": "an alpha burst",
    "vertex_wave": "a vertex wave", "sawtooth_wave": "a sawtooth wave", "blink": "a blink",
    "saccade": "a saccade",
}  # fmt: skip

_SPAN_FRACTION = 0.5


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
    stager,
    pixels: np.ndarray,
    *,
    window_s: float = 3.0,
    target: str | int | None = None,
    batch_size: int = 8,
    channels: Sequence[str] | None = None,
) -> Attribution:
    """Occlusion map: drop of ``p(target)`` when each strip x window is cleared.

    Parameters
    ----------
    stager : vlm.runtime.Stager
        The model (an ensemble's mean) and how its training images were drawn.
    pixels : ndarray
        uint8 rendered image ``(H, W)`` or ``(H, W, 3)`` (one epoch, as drawn by
        ``stager.setup.spec()``).
    window_s : float
        Occlusion window in seconds.
    target : str or int, optional
        Stage to explain (default: the predicted one).
    batch_size : int
        Images per forward pass.
    channels : sequence of str, optional
        Strip labels (default: the configuration's channel names).
    """
    config = stager.setup
    spec = config.spec()
    grid = image_grid(spec, window_s)
    occluded = [pixels]
    for c in range(spec.channels):
        for c0, c1 in zip(grid.col_first, grid.col_stop):
            occluded.append(occlude(pixels, spec, c, int(c0), int(c1)))
    probs = stager.score(stager.images(np.stack(occluded)), batch_size)
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
    stager,
    image,
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
    stager : vlm.runtime.Stager
        Its first member's model and processor are used: Qwen2-VL (patch tokens) or a
        processor that returns ``(N, 3, H, W)`` pixel tensors.
    image : PIL.Image.Image
        The epoch image the model sees (RGB).
    window_s, target, channels
        As in :func:`occlusion_attribution`.
    """
    import torch

    model, processor, config = stager.model, stager.processor, stager.setup
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
    stager,
    source,
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
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ModelError(f"methods {list(methods)}: expected some of {METHODS}")
    pixels = stager.pixels(source, [index])[0]
    labels = [c.row_name for c in source.channels]
    out = []
    for method in methods:
        if method == "occlusion":
            out.append(occlusion_attribution(stager, pixels, window_s=window_s, target=target,
                                             batch_size=batch_size, channels=labels))  # fmt: skip
        else:
            image = stager.images(pixels[None])[0]
            out.append(gradient_attribution(stager, image, window_s=window_s, target=target,
                                            channels=labels))  # fmt: skip
    return pixels, out


def short_label(label: str) -> str:
    return re.sub(r"^(EEG|EOG|EMG|ECG)\s+", "", str(label).strip(), flags=re.IGNORECASE)


def event_dicts(events: Any) -> list[dict]:
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
    text = (f"The decision rested mostly on {short_label(labels[row])} between {start:g} and "
            f"{end:g} s ({100 * share:.0f}% of the attribution)")  # fmt: skip
    found = []
    for event in event_dicts(events):
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


def agg_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

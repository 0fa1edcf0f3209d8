"""What the API returns about a night: JSON-ready dicts and PNG bytes.

Every function takes a :class:`~vlm.serve.night.Night` (opened, unless it says
otherwise) and returns plain Python values: NaN becomes None, stages are names (``W``,
``N1``, ``N2``, ``N3``, ``R``) or None where there is none, times are seconds from the
recording start.
"""

from __future__ import annotations

import io
import math
import re
from datetime import timedelta
from typing import Any

import numpy as np

from engine.raster.layout import ROLE_SCALES
from engine.stages import STAGE_NAMES, Stage

__all__ = [
    "clean",
    "summary",
    "hypnogram",
    "statistics",
    "epoch_info",
    "traces",
    "png",
    "overlay_png",
    "cited_events",
]

#: Most samples per second sent for a trace (denser signals go as a min/max envelope).
MAX_TRACE_RATE = 200.0

# Event kinds the answers name -> how the text names them.
_CITED = {
    "spindle": re.compile(r"spindle", re.I),
    "kcomplex": re.compile(r"k[- ]?complex", re.I),
    "slow_wave": re.compile(r"slow[- ]?waves?(?!\s+sleep)", re.I),
    "rapid_eye_movement": re.compile(r"rapid eye movement|\beye movements?\b", re.I),
    "slow_eye_movement": re.compile(r"slow eye movement|\beye movements?\b", re.I),
}
_CHIN = re.compile(r"\bchin\b|\bEMG\b|muscle tone", re.I)


def clean(value: Any) -> Any:
    """``value`` with numpy types as Python ones and NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _name(stage: int) -> str | None:
    return None if int(stage) == int(Stage.UNK) else STAGE_NAMES[int(stage)]


def summary(night, low_confidence: float = 0.6) -> dict[str, Any]:
    """Status and shape of a night (works before it is opened)."""
    out: dict[str, Any] = {
        "id": night.rid,
        "name": night.entry.name,
        "file": night.entry.spec,
        "status": night.status,
        "error": night.error,
        "opened": night.opened,
        "low_confidence": low_confidence,
    }
    if not night.opened:
        return out
    source = night.source
    stager = night.stager
    out.update(
        epochs=len(night),
        epoch_length=source.epoch_length,
        start_time=source.start_time.isoformat() if source.start_time else None,
        duration=float(source.hypnogram.onsets[-1] + source.hypnogram.durations[-1]),
        staged=int(night.staged.sum()),
        has_reference=night.reference is not None,
        edit_seq=night.edits.seq,
        edited=len(night.edits.stages),
        channels=[
            {
                "label": c.label,
                "name": source.drawn_labels[k],
                "role": c.role,
                "scale_uv": ROLE_SCALES.get(c.role, float(stager.setup.spec().scales_uv[k])),
            }
            for k, c in enumerate(source.channels)
        ],  # fmt: skip
        model={
            "model": stager.model_id,
            "adapters": [str(a) if a else None for a in stager.adapters],
        },  # fmt: skip
    )
    return clean(out)


def hypnogram(night) -> dict[str, Any]:
    """Every epoch: onset, reviewed stage, model stage and probabilities, reference."""
    with night.lock:
        probs = None if night.probabilities is None else night.probabilities.copy()
        stages, model = night.stages(), night.model_stages()
        edited = sorted(night.edits.stages.copy())
        seq = night.edits.seq
    hyp = night.source.hypnogram
    reference = night.reference
    return clean(
        {
            "onsets": np.round(hyp.onsets, 3),
            "durations": np.round(hyp.durations, 3),
            "stages": [_name(s) for s in stages],
            "model": [_name(s) for s in model],
            "probabilities": None if probs is None else np.round(probs, 4),
            "confidence": None if probs is None else np.round(np.max(probs, axis=1), 4),
            "reference": None if reference is None else [_name(s) for s in reference],
            "edited": edited,
            "edit_seq": seq,
        }
    )


def statistics(night) -> dict[str, Any]:
    """Sleep statistics of the reviewed hypnogram, and agreement with the reference."""
    from vlm.hypno import sleep_statistics
    from vlm.metrics import classification_metrics

    with night.lock:
        stages, model = night.stages(), night.model_stages()
        complete = bool(np.all(night.staged))
    length = night.source.epoch_length
    out: dict[str, Any] = {"complete": complete, "reviewed": sleep_statistics(stages, length)}
    reference = night.reference
    if reference is not None:
        out["reference"] = sleep_statistics(reference, length)
        for key, ours in (("agreement", stages), ("model_agreement", model)):
            both = (reference != int(Stage.UNK)) & (ours != int(Stage.UNK))
            if both.any():
                metrics = classification_metrics(reference[both], ours[both])
                out[key] = {"epochs": int(both.sum()), "accuracy": metrics["accuracy"],
                            "kappa": metrics["kappa"], "macro_f1": metrics["macro_f1"]}  # fmt: skip
    return clean(out)


def _clock(night, seconds: float) -> str | None:
    start = night.source.start_time
    return None if start is None else (start + timedelta(seconds=seconds)).strftime("%H:%M:%S")


def epoch_info(night, index: int) -> dict[str, Any]:
    """One epoch: times, reviewed / model / reference stage, probabilities."""
    index = night.check_epoch(index)
    hyp = night.source.hypnogram
    onset = float(hyp.onsets[index])
    with night.lock:
        probs = night.probabilities[index]
        stage = int(night.stages()[index])
        edited = night.edits.stages.get(index)
    staged = bool(np.isfinite(probs[0]))
    reference = None if night.reference is None else _name(night.reference[index])
    return clean(
        {
            "index": index,
            "onset": onset,
            "duration": float(hyp.durations[index]),
            "clock": _clock(night, onset),
            "stage": _name(stage),
            "edited": edited is not None,
            "model": STAGE_NAMES[int(np.argmax(probs))] if staged else None,
            "probabilities": dict(zip(STAGE_NAMES, probs)) if staged else None,
            "reference": reference,
        }
    )


def _envelope(values: np.ndarray, factor: int) -> np.ndarray:
    """Min and max of each run of ``factor`` samples, interleaved (keeps spikes visible)."""
    n = values.size // factor * factor
    runs = values[:n].reshape(-1, factor)
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(runs, axis=1), np.nanmax(runs, axis=1)
    out = np.empty(2 * lo.size, dtype=values.dtype)
    out[0::2], out[1::2] = lo, hi
    return out


def traces(night, index: int, context: int = 1) -> dict[str, Any]:
    """The preprocessed signals of epoch ``index`` and ``context`` epochs on each side.

    Values are µV (0.1 µV steps) at ``1 / dt`` samples per second from ``start`` (seconds
    from the recording start); None where there is no signal. ``epochs`` lists the epochs
    in view with their stages.
    """
    import warnings

    index = night.check_epoch(index)
    source = night.source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        signals = source.epoch(index, context).signals[0]
    length = source.epoch_length
    start = float(source.hypnogram.onsets[index]) - context * length
    fs = source.fs
    factor = max(1, math.ceil(fs / MAX_TRACE_RATE))
    dt = 1.0 / fs
    rows = []
    for row in signals:
        if factor > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                row = _envelope(row, factor)
        rows.append(np.round(row.astype(np.float64), 1))
    if factor > 1:
        dt = factor / fs / 2
    lo, hi = max(0, index - context), min(len(night), index + context + 1)
    with night.lock:
        stages, model = night.stages(), night.model_stages()
    hyp = source.hypnogram
    epochs = [
        {"index": j, "onset": float(hyp.onsets[j]), "duration": float(hyp.durations[j]),
         "stage": _name(stages[j]), "model": _name(model[j]),
         "reference": None if night.reference is None else _name(night.reference[j])}
        for j in range(lo, hi)
    ]  # fmt: skip
    return clean({"index": index, "start": start, "dt": dt, "fs": fs, "context": context,
                  "values": rows, "epochs": epochs})  # fmt: skip


def png(image) -> bytes:
    """A PIL image (or uint8 array) as PNG bytes."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(pixels: np.ndarray, attribution) -> bytes:
    """The model's image with the attribution map over it, as ``psgvlm explain`` draws it:
    occlusion red where hiding a cell lowers the stage's probability (blue where it
    raises it), gradient x input dark where it is large; faint where weak."""
    from matplotlib import colormaps

    grey = pixels.astype(np.float64) if pixels.ndim == 2 else pixels.mean(axis=2)
    values = np.asarray(attribution.image_map, dtype=np.float64)
    limit = float(np.max(np.abs(values))) or 1.0
    if attribution.method == "occlusion":
        colours = colormaps["RdBu_r"]((values / limit + 1.0) / 2.0)
    else:
        colours = colormaps["inferno_r"](np.clip(values / limit, 0.0, 1.0))
    alpha = 0.75 * np.clip(np.abs(values) / limit, 0.0, 1.0)[..., None]
    mixed = grey[..., None] * (1.0 - alpha) + 255.0 * colours[..., :3] * alpha
    return png(np.clip(mixed, 0, 255).astype(np.uint8))


def cited_events(night, answer, features) -> list[dict[str, Any]]:
    """The detected events an answer names, placed on the traces.

    Each has ``kind``, ``rows`` (strip indices), ``start`` and ``end`` (seconds from the
    epoch start). Chin tone, when the answer speaks of it, marks the EMG strip.
    """
    labels = [c.label for c in night.source.channels]
    text = answer.text
    out = []
    for event in features.events:
        pattern = _CITED.get(event["kind"])
        if pattern is None or not pattern.search(text):
            continue
        rows = [labels.index(p) for p in str(event["channel"]).split("/") if p in labels]
        if rows:
            out.append({"kind": event["kind"], "rows": rows, "start": event["start"],
                        "end": event["end"], "amplitude": event.get("amplitude")})  # fmt: skip
    roles = [c.role for c in night.source.channels]
    if "emg" in roles and _CHIN.search(text):
        level = getattr(features, "emg_level", None)
        out.append({"kind": "chin_tone", "rows": [roles.index("emg")], "start": 0.0,
                    "end": float(night.source.epoch_length), "level": level})  # fmt: skip
    return clean(out)

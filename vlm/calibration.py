"""Calibrated confidence and an out-of-distribution check for a trained stager.

Two things are stored beside an adapter in ``calibration.json`` (:data:`CALIBRATION_NAME`)
and used by :class:`vlm.runtime.Stager` and the ``stage``/``ask``/``chat`` commands:

- a **temperature** ``T`` fitted on synthetic validation nights (subjects the adapter was
  not trained on), by minimising the negative log-likelihood of the expert stages;
  probabilities are then ``softmax(log p / T)`` (Guo et al. 2017, "On calibration of
  modern neural networks", ICML). It never changes the predicted stage, only how sure the
  model says it is;
- the **input range** seen in those nights: per-30-s-chunk log10 rms, excess kurtosis and
  the share of power in four bands of each image row after the model's preprocessing. A recording most of whose chunks fall
  outside that range (a flat channel, an ECG given as EEG, a signal in mV instead of µV) is
  flagged by :func:`input_caveat` with one line instead of a silent "N3, p = 0.98".

The fit and the figures come from :mod:`vlm.calibrate`::

    python -m vlm.calibrate fit --model tiny:qwen2vl --adapter RUN/adapter \\
        --nights RUN/calibration-nights
    python -m vlm.calibrate ece --adapter RUN/adapter out/dev/eval/NAME/predictions.csv

Expected calibration error (:func:`expected_calibration_error`) is the usual equal-width
15-bin estimate over the top-class probability (Naeini et al. 2015; Guo et al. 2017).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_NAME",
    "temperature_scale",
    "fit_temperature",
    "expected_calibration_error",
    "negative_log_likelihood",
    "chunk_statistics",
    "input_reference",
    "input_caveat",
    "load_calibration",
    "save_calibration",
]

#: File written beside an adapter (and read by :class:`vlm.runtime.Stager`).
CALIBRATION_NAME = "calibration.json"
#: Seconds per chunk of the input statistics.
CHUNK_S = 30.0
#: Share of a row's chunks outside the training range that raises the caveat.
OUTSIDE_SHARE = 0.25
#: Margin added on each side of each statistic's training range (log10 units for rms and
#: band shares, kurtosis units for kurtosis).
MARGIN = (0.15, 1.0, 0.1, 0.1, 0.1, 0.1)
_EPS = 1e-12


def temperature_scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row (``T = 1`` returns ``p`` renormalised).

    Examples
    --------
    >>> p = np.array([[0.7, 0.2, 0.1, 0.0, 0.0]])
    >>> temperature_scale(p, 2.0).round(3)
    array([[0.523, 0.279, 0.198, 0.   , 0.   ]])
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    logits = np.log(p + _EPS) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits) * (p > 0)
    total = out.sum(axis=-1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(label)``."""
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(np.log(p[np.arange(labels.size), labels] + _EPS)))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` (searched over 0.05-20).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 5, 2000)
    >>> sure = np.full((2000, 5), 0.01); sure[np.arange(2000), labels] = 0.96
    >>> wrong = rng.random(2000) < 0.3                    # 30 % wrong but 96 % sure
    >>> sure[wrong] = np.roll(sure[wrong], 1, axis=1)
    >>> fit_temperature(sure, labels) > 1.5                # over-confident: T > 1
    True
    """
    from scipy.optimize import minimize_scalar

    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or p.shape[0] != labels.size or labels.size == 0:
        raise ValueError(f"need (n, k) probabilities and n labels, got {p.shape}, {labels.shape}")
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(temperature_scale(p, np.exp(log_t)), labels),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(found.x))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """Equal-width-bin ECE of the top-class probability.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> round(expected_calibration_error(p, np.array([0, 0, 0, 1])), 3)
    0.1
    """
    p = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return float("nan")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


# -- input statistics -----------------------------------------------------------------------
#: Bands (Hz) whose share of the 0.3-35 Hz power is part of the input statistics.
BANDS = ((0.3, 2.0), (2.0, 8.0), (8.0, 13.0), (13.0, 35.0))
#: Names of the :func:`chunk_statistics` columns.
STATISTICS = ("log_rms", "kurtosis", *(f"log_share_{lo:g}-{hi:g}Hz" for lo, hi in BANDS))


def chunk_statistics(signal: np.ndarray, fs: float, chunk_s: float = CHUNK_S) -> np.ndarray:
    """Per consecutive chunk: log10 rms (µV), excess kurtosis and the log10 share of the
    0.3-35 Hz power in each of :data:`BANDS` (Welch, 4-s segments); see :data:`STATISTICS`.

    Flat chunks get ``-inf`` rms and NaN for the rest; chunks with NaN are skipped.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stats = chunk_statistics(rng.normal(0, 20, 6000), 100.0)
    >>> stats.shape, bool(abs(stats[0, 0] - np.log10(20)) < 0.02), bool(abs(stats[0, 1]) < 0.3)
    ((2, 6), True, True)
    """
    from scipy.signal import welch

    x = np.asarray(signal, dtype=np.float64)
    n = int(round(chunk_s * fs))
    chunks = x[: (x.size // n) * n].reshape(-1, n) if x.size >= n else x[None, :]
    chunks = chunks[np.isfinite(chunks).all(axis=1)]
    out = np.full((chunks.shape[0], len(STATISTICS)), np.nan)
    if chunks.shape[0] == 0:
        return out
    centred = chunks - chunks.mean(axis=1, keepdims=True)
    variance = (centred**2).mean(axis=1)
    flat = variance < 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 0] = np.where(flat, -np.inf, 0.5 * np.log10(variance))
        out[:, 1] = (centred**4).mean(axis=1) / variance**2 - 3.0
        f, power = welch(centred, fs=fs, nperseg=min(n, int(round(4 * fs))), axis=1)
        total = power[:, (f >= BANDS[0][0]) & (f < BANDS[-1][1])].sum(axis=1)
        for k, (lo, hi) in enumerate(BANDS):
            share = power[:, (f >= lo) & (f < min(hi, fs / 2))].sum(axis=1) / total
            out[:, 2 + k] = np.log10(share + 1e-6)
    out[flat, 1:] = np.nan
    return out


def input_reference(statistics: Sequence[np.ndarray]) -> dict[str, Any]:
    """Training range per image row from the chunk statistics of validation nights.

    Parameters
    ----------
    statistics : sequence of ndarray
        One ``(n_chunks, len(STATISTICS))`` array per row (all nights stacked).

    Returns
    -------
    dict
        ``statistics``: the column names; ``ranges``: per row, ``[lo, hi]`` per column (the
        0.5th-99.5th percentile, widened by :data:`MARGIN` of the column).
    """
    ranges = []
    for stats in statistics:
        finite = stats[np.isfinite(stats).all(axis=1)]
        lo, hi = np.percentile(finite, [0.5, 99.5], axis=0)
        ranges.append(
            [[round(float(a - m), 4), round(float(b + m), 4)] for a, b, m in zip(lo, hi, MARGIN)]
        )
    return {"statistics": list(STATISTICS), "ranges": ranges}


def _outside(stats: np.ndarray, ranges: Sequence[Sequence[float]]) -> np.ndarray:
    bounds = np.asarray(ranges, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        inside = (stats >= bounds[:, 0]) & (stats <= bounds[:, 1])  # NaN: outside
    return ~inside.all(axis=1)


def input_caveat(source, calibration: dict[str, Any] | None) -> str | None:
    """One line when the recording's drawn signals look unlike the training nights.

    A 30-s chunk is outside when any of its :data:`STATISTICS` falls outside the range of
    the calibration nights; the caveat is raised when more than :data:`OUTSIDE_SHARE` of a
    row's chunks are.

    Parameters
    ----------
    source : engine.epochs.EpochSource
        The recording as the model reads it (preprocessed rows).
    calibration : dict or None
        :func:`load_calibration` of the adapter; None: no check (returns None).

    Returns
    -------
    str or None
        ``"caveat: the recording looks unlike what the model was trained on (EEG C4: 92 %
        of 30-s chunks outside the training range (median 412 µV rms, trained on 4.2-50
        µV; most often out: log_rms)); ..."``, or None.
    """
    reference = (calibration or {}).get("input_reference")
    if not reference or "ranges" not in reference:
        return None
    signals = np.asarray(source.signals)
    problems = []
    for row, ranges in enumerate(reference["ranges"][: signals.shape[0]]):
        stats = chunk_statistics(signals[row], source.fs)
        if stats.shape[0] == 0:
            continue
        outside = _outside(stats, ranges)
        if outside.mean() <= OUTSIDE_SHARE:
            continue
        bounds = np.asarray(ranges)
        with np.errstate(invalid="ignore"):
            per_column = ~((stats >= bounds[:, 0]) & (stats <= bounds[:, 1]))
        worst = STATISTICS[int(per_column.mean(axis=0).argmax())]
        finite = stats[np.isfinite(stats[:, 0]), 0]
        median = f"{10 ** np.median(finite):.3g} µV rms" if finite.size else "flat"
        label = getattr(source.channels[row], "label", f"row {row}")
        problems.append(
            f"{label}: {outside.mean():.0%} of 30-s chunks outside the training range "
            f"(median {median}, trained on {10 ** ranges[0][0]:.2g}-{10 ** ranges[0][1]:.3g} µV; "
            f"most often out: {worst})"
        )
    if not problems:
        return None
    return (
        "caveat: the recording looks unlike what the model was trained on ("
        + "; ".join(problems)
        + "); treat its stages and probabilities as unreliable"
    )


# -- persistence -----------------------------------------------------------------------------
def load_calibration(adapter: str | os.PathLike | None) -> dict[str, Any] | None:
    """``calibration.json`` beside an adapter, or None."""
    if adapter is None:
        return None
    path = Path(adapter) / CALIBRATION_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_calibration(adapter: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``ADAPTER/calibration.json``."""
    path = Path(adapter) / CALIBRATION_NAME
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path

"""Post-hoc smoothing of a night's stage probabilities with a stage HMM.

Each night's probability vectors are decoded by Viterbi with a stage transition matrix
counted on synthetic hypnograms only (:func:`synthetic_stage_hmm`; nothing is estimated
from the evaluated recordings), after dividing out the class prior the model was trained
with (:func:`training_class_prior`). Known bias: dividing by the training prior multiplies
N1 (~5 % of synthetic epochs) about tenfold against N2; on the real Prerau segment it
lowered the accuracy of most models by turning light N2 into N1 runs, while it usually
helped REM (bench/RESULTS.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from engine.errors import DatasetError, ModelError
from engine.stages import STAGE_NAMES

from .render_setup import training_config

__all__ = [
    "SMOOTHERS",
    "StageHMM",
    "synthetic_stage_hmm",
    "training_class_prior",
    "viterbi_stages",
    "smooth_runs",
]


#: Post-hoc smoothers of a night's per-epoch probabilities that ``--smooth`` accepts.
SMOOTHERS: tuple[str, ...] = ("none", "hmm")


@dataclass(frozen=True)
class StageHMM:
    """First-order Markov model of the 30-s stage sequence.

    Attributes
    ----------
    transition : numpy.ndarray
        ``(5, 5)`` row-stochastic matrix, ``transition[a, b] = P(next = b | now = a)``.
    prior : numpy.ndarray
        ``(5,)`` stage frequencies of the hypnograms it was estimated from (used as the
        initial distribution: a recording may start anywhere in a night).
    source : str
        Where it was estimated from.
    """

    transition: np.ndarray
    prior: np.ndarray
    source: str = ""


def synthetic_stage_hmm(
    nights: int = 200, hours: float = 8.0, seed: int = 100_000, floor: float = 0.02
) -> StageHMM:
    """A stage HMM counted on :func:`engine.synth.synth_hypnogram` nights (no real labels).

    Parameters
    ----------
    nights : int
        Synthetic hypnograms to count transitions on (seeds ``seed .. seed + nights - 1``).
    hours : float
        Length of each.
    seed : int
        First seed.
    floor : float
        Share of each row spread uniformly over the five stages: the generator's transition
        structure is rule-based and narrower than real scoring (it never goes N2 -> N1, for
        example); a transition it never makes must stay possible, only unlikely.

    Returns
    -------
    StageHMM

    Examples
    --------
    >>> hmm = synthetic_stage_hmm(nights=5)
    >>> bool(np.allclose(hmm.transition.sum(axis=1), 1.0)), bool(hmm.transition[2, 2] > 0.9)
    (True, True)
    """
    from engine.transitions import synthetic_transition_counts

    if not 0.0 <= floor < 1.0:
        raise DatasetError(f"synthetic_stage_hmm: floor must lie in [0, 1), got {floor}")
    k = len(STAGE_NAMES)
    counts, occupancy = synthetic_transition_counts(nights, hours, seed)
    rows = counts.sum(axis=1, keepdims=True)
    transition = np.divide(counts, rows, out=np.full_like(counts, 1.0 / k), where=rows > 0)
    transition = (1.0 - floor) * transition + floor / k
    return StageHMM(
        transition,
        occupancy / occupancy.sum(),
        f"engine.synth hypnograms: {nights} nights x {hours:g} h, seeds {seed}+, floor {floor:g}",
    )


def training_class_prior(adapter: str | os.PathLike[str] | None, hmm: StageHMM) -> np.ndarray:
    """The class prior a model's probabilities carry, from its training config.

    A model trained with ``class_weights: auto`` saw the classes as equally frequent
    (uniform prior); otherwise it learnt the frequencies of its synthetic training nights,
    which are ``hmm.prior`` (the same generator's stage frequencies).
    """
    found = training_config(adapter) if adapter else None
    if found is not None and str(found[1].get("class_weights", "none")) == "auto":
        return np.full(len(STAGE_NAMES), 1.0 / len(STAGE_NAMES))
    return np.asarray(hmm.prior, dtype=np.float64)


def viterbi_stages(
    probs: np.ndarray, hmm: StageHMM, class_prior: np.ndarray | None = None
) -> np.ndarray:
    """Most likely stage sequence of consecutive epochs given per-epoch model probabilities.

    Hybrid HMM decoding: the model's posterior divided by the class prior it was trained
    with is a scaled likelihood ``p(image | stage) / p(image)``; the Viterbi path
    maximises it times the HMM's transition probabilities.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(n, 5)`` stage probabilities of ``n`` consecutive epochs.
    hmm : StageHMM
    class_prior : numpy.ndarray, optional
        ``(5,)`` prior the probabilities carry (default: ``hmm.prior``).

    Returns
    -------
    numpy.ndarray
        int64 stage ids, shape ``(n,)``.

    Examples
    --------
    >>> hmm = StageHMM(np.full((5, 5), 0.02) + np.eye(5) * 0.9, np.full(5, 0.2))
    >>> p = np.tile([0.05, 0.05, 0.8, 0.05, 0.05], (5, 1)); p[2] = [0.05, 0.05, 0.4, 0.05, 0.45]
    >>> viterbi_stages(p, hmm).tolist()
    [2, 2, 2, 2, 2]
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = len(STAGE_NAMES)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise ModelError(f"viterbi_stages: expected (n, {k}) probabilities, got {probs.shape}")
    if probs.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    prior = hmm.prior if class_prior is None else np.asarray(class_prior, dtype=np.float64)
    tiny = 1e-12
    emission = np.log(np.maximum(probs, tiny)) - np.log(np.maximum(prior, tiny))
    log_t = np.log(np.maximum(hmm.transition, tiny))
    score = np.log(np.maximum(hmm.prior, tiny)) + emission[0]
    back = np.zeros(probs.shape, dtype=np.int64)
    for i in range(1, probs.shape[0]):
        candidates = score[:, None] + log_t
        back[i] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + emission[i]
    path = np.empty(probs.shape[0], dtype=np.int64)
    path[-1] = int(score.argmax())
    for i in range(probs.shape[0] - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def smooth_runs(
    probs: np.ndarray, positions: np.ndarray, hmm: StageHMM, class_prior: np.ndarray
) -> np.ndarray:
    """Viterbi over each run of consecutive epoch positions (a gap restarts the chain)."""
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return np.concatenate(
        [
            viterbi_stages(probs[run], hmm, class_prior)
            for run in np.split(np.arange(positions.size), breaks)
        ]
    )

"""Stage transitions counted on synthetic hypnograms, for models that need a stage prior.

The inference side (``vlm.smoothing``) builds its stage HMM from these counts without
importing the generator itself.
"""

from __future__ import annotations

import numpy as np

from .errors import DatasetError
from .stages import STAGE_NAMES

__all__ = ["synthetic_transition_counts"]


def synthetic_transition_counts(
    nights: int = 200, hours: float = 8.0, seed: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-to-stage transition counts and stage occupancy of synthetic hypnograms.

    Parameters
    ----------
    nights : int
        Hypnograms of :func:`engine.synth.synth_hypnogram` (seeds ``seed .. seed + nights - 1``).
    hours : float
        Length of each.
    seed : int
        First seed.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(5, 5)`` counts ``counts[a, b]`` of 30-s epochs in stage ``a`` followed by ``b``,
        and ``(5,)`` epochs per stage.

    Examples
    --------
    >>> counts, occupancy = synthetic_transition_counts(nights=2, hours=1.0)
    >>> counts.shape, int(occupancy.sum())
    ((5, 5), 240)
    """
    from .synth import EPOCH_LENGTH, synth_hypnogram

    if int(nights) < 1 or hours <= 0:
        raise DatasetError(f"need nights >= 1 and hours > 0, got {nights}, {hours}")
    k = len(STAGE_NAMES)
    counts = np.zeros((k, k))
    occupancy = np.zeros(k)
    n_epochs = int(round(hours * 3600.0 / EPOCH_LENGTH))
    for night in range(int(nights)):
        stages = synth_hypnogram(int(seed) + night, n_epochs).astype(np.int64)
        np.add.at(counts, (stages[:-1], stages[1:]), 1.0)
        occupancy += np.bincount(stages, minlength=k)
    return counts, occupancy

"""Evidence features: what an AASM scorer measures in an epoch, in numbers and words.

- :mod:`.detectors`: spindles, slow waves, K-complexes, eye movements on raw arrays;
- :mod:`.epoch`: :func:`epoch_features` / :func:`recording_features` -> :class:`EpochFeatures`,
  the :data:`FEATURES` table (unit and plain-language template of each feature);
- :mod:`.evidence`: :func:`evidence_sentence`, one short sentence per epoch and stage;
- :mod:`.claims`: :func:`check_claims`, which reads such statements back and flags those
  the signal contradicts.

``engine`` never imports YASA; its detectors are only used as a peer in tests.
"""

from .claims import Claim, ClaimReport, check_claims
from .detectors import (
    Event,
    bandpass,
    detect_eye_movements,
    detect_kcomplexes,
    detect_slow_waves,
    detect_spindles,
    slow_wave_fraction,
)
from .epoch import (
    BANDS,
    FEATURES,
    EMGReference,
    EpochFeatures,
    Feature,
    describe,
    emg_rms,
    epoch_features,
    recording_features,
)
from .evidence import N3_THRESHOLD, evidence_sentence

__all__ = [
    "BANDS",
    "FEATURES",
    "N3_THRESHOLD",
    "Claim",
    "ClaimReport",
    "EMGReference",
    "EpochFeatures",
    "Event",
    "Feature",
    "bandpass",
    "check_claims",
    "describe",
    "detect_eye_movements",
    "detect_kcomplexes",
    "detect_slow_waves",
    "detect_spindles",
    "emg_rms",
    "epoch_features",
    "evidence_sentence",
    "recording_features",
    "slow_wave_fraction",
]

"""One short, deterministic evidence sentence per epoch, built only from measured features.

The sentence names the stage, then the few measurements an AASM scorer would cite for it
(and the contrasting ones: the 20% slow-wave threshold for N2/N3, atonia and spindle
absence for R). Every number in it equals a feature, in the phrases of
:data:`engine.features.epoch.FEATURES`, so :func:`engine.features.claims.check_claims`
can read it back.
"""

from __future__ import annotations

from collections.abc import Callable

from ..stages import Stage, stage_name, to_stage
from .epoch import EpochFeatures, _short_channel, describe

__all__ = ["N3_THRESHOLD", "evidence_sentence", "as_features"]

#: AASM N3 criterion: slow waves fill at least 20% of the epoch.
N3_THRESHOLD: float = 0.20
_MAX_ARTEFACT_CHANNELS = 2


def as_features(features: dict | EpochFeatures) -> EpochFeatures:
    """Accept an :class:`EpochFeatures` or its :meth:`~EpochFeatures.to_dict` form."""
    if isinstance(features, EpochFeatures):
        return features
    return EpochFeatures.from_dict(dict(features))


def _range(values: list[float], unit: str) -> str:
    lo, hi = min(values), max(values)
    if f"{lo:.1f}" == f"{hi:.1f}":
        return f"{lo:.1f} {unit}"
    return f"{lo:.1f}-{hi:.1f} {unit}"


def _spindles_kcomplexes(f: EpochFeatures) -> str | None:
    if f.spindle_count is None:
        return None
    if f.spindle_count == 0 and not f.kcomplex_count:
        return "no sleep spindles or K-complexes"
    spindles = describe("spindle_count", f.spindle_count, f.eeg_channel)
    if f.spindle_count:
        detail = f"({_range(f.spindle_freqs, 'Hz')}, {_range(f.spindle_durations, 's')})"
        spindles = spindles.replace(" on ", f" {detail} on ", 1)
    kcomplexes = describe("kcomplex_count", f.kcomplex_count or 0, f.frontal_channel)
    if f.frontal_channel == f.eeg_channel:
        suffix = f" on {_short_channel(f.eeg_channel)}"
        return f"{spindles.removesuffix(suffix)} and {kcomplexes}"
    return f"{spindles} and {kcomplexes}"


def _slow_waves(f: EpochFeatures) -> str | None:
    if f.slow_wave_fraction is None:
        return None
    side = "at or above" if round(100 * f.slow_wave_fraction) >= 100 * N3_THRESHOLD else "below"
    phrase = describe("slow_wave_fraction", f.slow_wave_fraction, f.frontal_channel)
    return f"{phrase} ({side} the 20% N3 threshold)"


def _band(name: str) -> Callable[[EpochFeatures], str | None]:
    def fragment(f: EpochFeatures) -> str | None:
        value = getattr(f, name)
        return None if value is None else describe(name, value, f.eeg_channel)

    return fragment


def _alpha(f: EpochFeatures) -> str | None:
    if f.occipital_alpha_rel is not None:
        return describe("occipital_alpha_rel", f.occipital_alpha_rel, f.occipital_channel)
    return _band("alpha_rel")(f)


def _count(name: str) -> Callable[[EpochFeatures], str | None]:
    def fragment(f: EpochFeatures) -> str | None:
        value = getattr(f, name)
        return None if value is None else describe(name, value)

    return fragment


def _emg(f: EpochFeatures) -> str | None:
    if f.emg_percentile is not None:
        return f"{describe('emg_percentile', f.emg_percentile)} ({f.emg_level})"
    if f.emg_rms is not None:
        return describe("emg_rms", f.emg_rms)
    return None


def _artefacts(f: EpochFeatures) -> str | None:
    if not f.artefacts:
        return None
    if len(f.artefacts) <= _MAX_ARTEFACT_CHANNELS:
        return describe("artefacts", f.artefacts)
    kinds = sorted({flag for flags in f.artefacts.values() for flag in flags})
    return f"artefacts on {len(f.artefacts)} channels ({', '.join(kinds)})"


_PLANS: dict[Stage, tuple[Callable[[EpochFeatures], str | None], ...]] = {
    Stage.W: (_alpha, _count("rem_count"), _emg),
    Stage.N1: (_alpha, _band("theta_rel"), _count("sem_count"), _spindles_kcomplexes, _emg),
    Stage.N2: (_spindles_kcomplexes, _slow_waves, _emg),
    Stage.N3: (_slow_waves, _band("slow_delta_rel"), _emg),
    Stage.R: (_count("rem_count"), _emg, _spindles_kcomplexes),
    Stage.UNK: (_spindles_kcomplexes, _slow_waves, _count("rem_count"), _emg),
}


def evidence_sentence(features: dict | EpochFeatures, stage: str | int) -> str:
    """Short evidence sentence for ``stage`` from an epoch's measured features.

    Parameters
    ----------
    features : EpochFeatures or dict
        Output of :func:`~engine.features.epoch.epoch_features` (or its ``to_dict()``).
    stage : str or int
        The stage to justify (any label :func:`engine.stages.to_stage` knows, or a
        class id).

    Returns
    -------
    str
        E.g. ``"N2. Evidence: 3 sleep spindles (12.1-13.8 Hz, 0.6-1.1 s) and one
        K-complex on C4-M1; slow waves fill 6% of the epoch on C4-M1 (below the 20% N3
        threshold); chin EMG at the 31st percentile of the night (medium)."``
        Fragments whose channel is absent are left out; artefact flags are appended.
    """
    f = as_features(features)
    code = Stage(stage) if isinstance(stage, int) else to_stage(stage)
    fragments = [text for make in _PLANS[code] if (text := make(f)) is not None]
    if (flags := _artefacts(f)) is not None:
        fragments.append(flags)
    body = "; ".join(fragments) if fragments else "no evidence channels measured"
    return f"{stage_name(int(code))}. Evidence: {body}."

"""A stage's AASM criteria checked against an epoch's measured features, in words.

Used by :mod:`vlm.answers` to answer "why not N3?" or "could it be REM?": each criterion
is met, not met or unknown, with the measurement behind it (e.g. slow waves fill 6% of
the epoch, below the 20% N3 threshold). Measurements come from :mod:`engine.features`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.stages import Stage, stage_name

__all__ = [
    "N3_PERCENT",
    "Criterion",
    "criteria",
    "criteria_text",
    "swf_reaches",
    "swf_phrase",
    "swf_sentence",
    "sk_phrase",
    "emg_phrase",
    "alpha_theta",
]

#: AASM: N3 when slow waves (0.5-2 Hz, > 75 uV) fill at least this share of the epoch.
N3_PERCENT = 20


@dataclass(frozen=True)
class Criterion:
    need: str  # what the stage needs, in words check_claims does not read as claims
    measured: str | None  # measured phrase (true claims), None when not measured
    met: bool | None


def swf_reaches(f) -> bool:
    return round(100 * f.slow_wave_fraction) >= N3_PERCENT


def swf_phrase(f) -> str | None:
    from engine.features import describe

    if f.slow_wave_fraction is None:
        return None
    side = "at or above" if swf_reaches(f) else "below"
    phrase = describe("slow_wave_fraction", f.slow_wave_fraction, f.frontal_channel)
    return f"{phrase} ({side} the {N3_PERCENT}% N3 threshold)"


def sk_phrase(f) -> str | None:
    from engine.features import describe

    if f.spindle_count is None:
        return None
    spindles, kcomplexes = f.spindle_count, f.kcomplex_count or 0
    if spindles == 0 and kcomplexes == 0:
        return "no sleep spindles or K-complexes"
    return (
        f"{describe('spindle_count', spindles, f.eeg_channel)} and "
        f"{describe('kcomplex_count', kcomplexes, f.frontal_channel)}"
    )


def emg_phrase(f) -> str | None:
    from engine.features import describe

    if f.emg_percentile is not None:
        return f"{describe('emg_percentile', f.emg_percentile)} ({f.emg_level})"
    if f.emg_rms is not None:
        return describe("emg_rms", f.emg_rms)
    return None


def alpha_theta(f) -> tuple[str | None, float | None]:
    """Phrase with alpha and theta shares, and alpha minus theta (None when not measured)."""
    from engine.features import describe

    if f.theta_rel is None:
        return None, None
    if f.occipital_alpha_rel is not None:
        alpha = f.occipital_alpha_rel
        alpha_text = describe("occipital_alpha_rel", alpha, f.occipital_channel)
    else:
        alpha = f.alpha_rel
        alpha_text = describe("alpha_rel", alpha, f.eeg_channel)
    theta_text = describe("theta_rel", f.theta_rel, f.eeg_channel)
    return f"{alpha_text}; {theta_text}", alpha - f.theta_rel


def criteria(stage: Stage, f) -> list[Criterion]:
    """AASM criteria of ``stage`` with the epoch's measurements."""
    from engine.features import describe

    sk = sk_phrase(f)
    no_sk = None if sk is None else (f.spindle_count == 0 and not f.kcomplex_count)
    swf = swf_phrase(f)
    emg = emg_phrase(f)
    level = f.emg_level
    alpha_text, alpha_minus_theta = alpha_theta(f)
    alpha_wins = None if alpha_minus_theta is None else alpha_minus_theta > 0
    if stage == Stage.W:
        return [
            Criterion("an alpha rhythm stronger than theta", alpha_text, alpha_wins),
            Criterion("high chin muscle tone", emg, None if level is None else level == "high"),
        ]
    if stage == Stage.N1:
        return [
            Criterion("theta activity replacing alpha", alpha_text,
                       None if alpha_wins is None else not alpha_wins),
            Criterion("neither sleep spindles nor K-complexes", sk, no_sk),
        ]  # fmt: skip
    if stage == Stage.N2:
        return [
            Criterion("sleep spindles or K-complexes", sk, None if no_sk is None else not no_sk),
            Criterion("slow waves in less than a fifth of the epoch", swf,
                       None if swf is None else not swf_reaches(f)),
        ]  # fmt: skip
    if stage == Stage.N3:
        return [
            Criterion("slow waves in at least a fifth of the epoch", swf,
                       None if swf is None else swf_reaches(f)),
        ]  # fmt: skip
    rems = None if f.rem_count is None else describe("rem_count", f.rem_count)
    return [
        Criterion("REMs", rems, None if f.rem_count is None else f.rem_count > 0),
        Criterion("the lowest chin muscle tone of the night", emg,
                   None if level is None else level == "low"),
        Criterion("neither sleep spindles nor K-complexes", sk, no_sk),
    ]  # fmt: skip


def criteria_text(stage: Stage, criteria: list[Criterion]) -> str:
    name = stage_name(int(stage))
    sentences = []
    for c in criteria:
        if c.measured is None:
            sentences.append(f"{name} needs {c.need}. Not measured (channel missing).")
        else:
            verdict = {True: "Met", False: "Not met", None: "Cannot tell"}[c.met]
            sentences.append(f"{name} needs {c.need}. {verdict}: {c.measured}.")
    return " ".join(sentences)


def swf_sentence(f) -> str:
    phrase = swf_phrase(f)
    return phrase[0].upper() + phrase[1:] + "."

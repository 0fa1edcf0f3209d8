"""Calibrated synthetic polysomnography: whole nights with known stages and planted events.

A night is generated continuously (no seams at the 30-s epoch borders): a hypnogram is
drawn from a cycle-structured semi-Markov model, every EEG rhythm is a coloured-noise
source whose amplitude envelope follows the stages (smoothed over a few seconds), and
the graphoelements that define the AASM stages are planted as discrete events whose
positions, amplitudes and frequencies are returned in :attr:`SyntheticNight.events`.

Reference figures used here (each also cited where it is used):

- Ohayon, Carskadon, Guilleminault & Vitiello (2004), *Sleep* 27:1255-1273,
  meta-analysis of quantitative sleep parameters: sleep-onset latency ~10-20 min, sleep
  efficiency 85-95 %, N1 ~5 %, N2 ~50 %, slow-wave sleep 15-20 %, REM 20-25 %, REM
  latency 70-100 min in healthy adults.
- Carskadon & Dement, "Normal human sleep: an overview", *Principles and Practice of
  Sleep Medicine*: NREM-REM cycles of ~90 (70-120) min, slow-wave sleep concentrated in
  the first third of the night, REM periods lengthening across the night.
- AASM Manual for the Scoring of Sleep and Associated Events v2.6 (2020): stage
  definitions (alpha > 50 % of the epoch in W; theta, slow eye movements and vertex
  sharp waves in N1; spindles and K-complexes (>= 0.5 s) in N2; >= 20 % of the epoch in
  0.5-2 Hz waves > 75 uV peak-to-peak, measured frontally, in N3; low-amplitude mixed
  frequency EEG, rapid eye movements, sawtooth waves and low chin tone in R) and the
  E1-M2 / E2-M1 EOG derivations (eye movements out of phase, EEG in phase).
- De Gennaro & Ferrara (2003), *Sleep Med Rev* 7:423-440: spindles 11-16 Hz,
  0.5-2 s, ~2-7 per minute of N2, centrally maximal (fast) or frontal (slow).
- Massimini, Huber, Ferrarelli, Hill & Tononi (2004), *J Neurosci* 24:6862-6870: slow
  oscillations < 1.25 Hz of 75-200+ uV peak-to-peak that originate frontally.
- Aeschbach & Borbely (1993), *J Sleep Res* 2:70-81; Achermann & Borbely (process S):
  slow-wave activity declines across NREM episodes (time constant ~4 h) while spindle
  (sigma) activity rises.
- Klimesch (1999), *Brain Res Rev* 29:169-195: individual alpha frequency ~10 +/- 1 Hz.
- Cantero & Atienza (2000), alpha bursts in REM sleep ~1 Hz slower than waking alpha;
  Aserinsky (1971): REM density rises across successive REM periods.
- Lendner et al. (2020), *eLife* 9:e55092: the aperiodic (1/f) exponent differs between
  subjects and stages.

The per-stage amplitudes of the C4-M1 components were tuned with ``psgvlm synth-report``
against the real, AASM-scored Prerau segment (relative band powers after the default
0.3-35 Hz band-pass; see :mod:`engine.synth_report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import signal as sps
from scipy.ndimage import uniform_filter1d

from .errors import ChannelNotFoundError, EDFError, PSGError
from .stages import Stage

__all__ = [
    "ALL_CHANNELS",
    "EPOCH_LENGTH",
    "EVENT_KINDS",
    "PlantedEvent",
    "SyntheticNight",
    "SynthError",
    "synth_hypnogram",
    "synth_night",
    "write_night",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: The synthetic montage, in output order.
ALL_CHANNELS: tuple[str, ...] = (
    "EEG C4-M1",
    "EEG C3-M2",
    "EEG F4-M1",
    "EEG O2-M1",
    "EOG E1-M2",
    "EOG E2-M1",
    "EMG chin",
    "ECG",
)
EEG_CHANNELS = ALL_CHANNELS[:4]
EOG_CHANNELS = ALL_CHANNELS[4:6]
EMG_CHANNEL = ALL_CHANNELS[6]
ECG_CHANNEL = ALL_CHANNELS[7]

#: Scoring epoch in seconds.
EPOCH_LENGTH = 30.0

#: Kinds of :class:`PlantedEvent`.
EVENT_KINDS: tuple[str, ...] = (
    "spindle",
    "k_complex",
    "slow_wave",
    "vertex_wave",
    "alpha_burst",
    "blink",
    "saccade",
    "slow_eye_movement",
    "rapid_eye_movement",
    "sawtooth_wave",
    "emg_twitch",
    "artefact",
)

W, N1, N2, N3, R = (int(s) for s in (Stage.W, Stage.N1, Stage.N2, Stage.N3, Stage.R))
_EPOCHS_PER_MIN = 2
_ENV_RATE = 4.0  # Hz, rate of the amplitude envelopes before interpolation
_FS_RANGE = (50.0, 2048.0)
_RANDOM_RATES = (50.0, 64.0, 100.0, 125.0, 128.0, 200.0, 250.0, 256.0, 500.0, 512.0)
_RANDOM_RATE_WEIGHTS = (0.03, 0.03, 0.2, 0.12, 0.1, 0.12, 0.1, 0.2, 0.05, 0.05)
_ANNOTATION_LABELS = {
    W: "Sleep stage W",
    N1: "Sleep stage 1",
    N2: "Sleep stage 2",
    N3: "Sleep stage 3",
    R: "Sleep stage R",
}


class SynthError(PSGError):
    """Invalid arguments to the synthetic-PSG generator."""


@dataclass(frozen=True)
class PlantedEvent:
    """One graphoelement or artefact planted in a synthetic night.

    Attributes
    ----------
    kind : str
        One of :data:`EVENT_KINDS`.
    channel : str
        The rendered channel where the event is strongest (it may show on others too).
    start, end : float
        Seconds from the start of the recording.
    stage : int
        Stage id of the epoch that holds the event's start.
    extra : dict
        Kind-specific values: ``amplitude_uv`` (peak-to-peak on ``channel``),
        ``frequency_hz``, ``channels`` (every channel it was added to)...
    """

    kind: str
    channel: str
    start: float
    end: float
    stage: int
    extra: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "kind": self.kind,
            "channel": self.channel,
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "stage": self.stage,
            "extra": self.extra,
        }


@dataclass
class SyntheticNight:
    """A generated night.

    Attributes
    ----------
    signals : dict
        Channel label -> float32 samples in uV.
    fs : dict
        Channel label -> sampling rate in Hz.
    stages : numpy.ndarray
        int8 stage id (:class:`engine.stages.Stage`) per 30-s epoch.
    events : list of PlantedEvent
    subject, seed : str, int
    params : dict
        The per-subject draws (gains, rhythm frequencies, artefact settings...).
    """

    signals: dict[str, np.ndarray]
    fs: dict[str, float]
    stages: np.ndarray
    events: list[PlantedEvent]
    subject: str
    seed: int
    params: dict
    epoch_length: float = EPOCH_LENGTH

    @property
    def n_epochs(self) -> int:
        """Number of scored epochs."""
        return int(self.stages.size)

    @property
    def duration(self) -> float:
        """Length of the recording in seconds."""
        return self.n_epochs * self.epoch_length

    @property
    def channels(self) -> tuple[str, ...]:
        """Rendered channel labels, in montage order."""
        return tuple(self.signals)

    def events_of(self, kind: str) -> list[PlantedEvent]:
        """The planted events of one kind."""
        if kind not in EVENT_KINDS:
            raise SynthError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        return [event for event in self.events if event.kind == kind]


# --------------------------------------------------------------------------- hypnogram

#: Minutes of N3 and REM in NREM-REM cycle k (Carskadon & Dement: N3 front-loaded, REM
#: periods lengthening); scaled so a 7.5-h night gives ~17 % N3 and ~22 % REM (Ohayon 2004).
_N3_MINUTES = (38.0, 24.0, 9.0, 3.0, 0.0, 0.0, 0.0)
_REM_MINUTES = (9.0, 18.0, 23.0, 28.0, 31.0, 31.0, 31.0)


def _epochs(minutes: float) -> int:
    return int(round(minutes * _EPOCHS_PER_MIN))


def _cycle_stages(rng: np.random.Generator, cycle: int) -> list[int]:
    """Stages of one NREM-REM cycle (Carskadon & Dement: ~90 min, 70-120 min)."""
    k = min(cycle, len(_N3_MINUTES) - 1)
    length = float(np.clip(rng.normal(85.0 if cycle == 0 else 95.0, 10.0), 70.0, 120.0))
    n1 = rng.uniform(2.0, 6.0) if cycle == 0 else rng.uniform(0.5, 2.0)
    n3 = _N3_MINUTES[k] * rng.uniform(0.7, 1.3)
    rem = _REM_MINUTES[k] * rng.uniform(0.75, 1.25)
    n2 = max(length - n1 - n3 - rem, 10.0)
    n2_descent = n2 * rng.uniform(0.45, 0.7)
    out = [N1] * max(1, _epochs(n1)) + [N2] * _epochs(n2_descent)
    remaining = _epochs(n3)
    while remaining > 0:  # N3 bouts (gamma, mean ~9 min) broken by brief N2 lightenings
        bout = min(remaining, max(2, int(rng.gamma(2.0, 9.0))))
        out += [N3] * bout
        remaining -= bout
        if remaining > 0:
            out += [N2] * int(rng.integers(1, 5))
    out += [N2] * _epochs(n2 - n2_descent)
    remaining = _epochs(rem)
    while remaining > 0:  # REM bouts broken by brief N1/W or N2 intrusions
        bout = min(remaining, max(4, int(rng.gamma(2.0, 10.0))))
        out += [R] * bout
        remaining -= bout
        if remaining > 0:
            out += [int(rng.choice([N1, W, N2], p=[0.5, 0.25, 0.25]))] * int(rng.integers(1, 3))
    if rng.random() < 0.35:  # arousal at the REM-NREM transition
        out += [W] * int(rng.integers(1, 3))
    return out


def _hypnogram(rng: np.random.Generator, n_epochs: int) -> np.ndarray:
    # Sleep-onset latency (Ohayon 2004: ~10-20 min), with drowsy W/N1 alternation before it.
    latency = _epochs(float(np.clip(rng.lognormal(np.log(12.0), 0.45), 3.0, 40.0)))
    seq: list[int] = [W] * latency
    for _ in range(int(rng.integers(0, 3))):
        seq += [N1] * int(rng.integers(1, 3)) + [W] * int(rng.integers(1, 4))
    cycle = 0
    while len(seq) < n_epochs:
        seq += _cycle_stages(rng, cycle)
        cycle += 1
    stages = np.asarray(seq[:n_epochs], dtype=np.int8)
    onset = min(latency, n_epochs)
    # Brief awakenings: Poisson, ~1-2.5 per hour, more frequent late and out of REM/N1.
    hours = (n_epochs - onset) / 120.0
    n_wake = int(rng.poisson(max(hours, 0.0) * 1.6))
    if n_wake and n_epochs - onset > 4:
        weights = np.array([0.0, 1.5, 1.0, 0.1, 2.0])[stages[onset:]]
        weights = weights * np.linspace(0.6, 1.4, weights.size)
        if weights.sum() > 0:
            positions = onset + rng.choice(weights.size, n_wake, p=weights / weights.sum())
            for pos in np.sort(positions):
                length = int(rng.choice([1, 2, 3, 5, 10], p=[0.45, 0.25, 0.15, 0.1, 0.05]))
                stages[pos : pos + length] = W
                after = pos + length
                if after < n_epochs and stages[after] in (N2, N3):
                    stages[after : after + int(rng.integers(1, 3))] = N1
    # Final morning awakening in nights long enough to have one.
    if n_epochs - onset > 8 * 60:
        stages[n_epochs - _epochs(rng.uniform(1.0, 8.0)) :] = W
    return stages


def synth_hypnogram(seed: int, n_epochs: int) -> np.ndarray:
    """The stage sequence :func:`synth_night` uses for ``seed``, without any signal.

    Parameters
    ----------
    seed : int
        Non-negative seed.
    n_epochs : int
        Number of 30-s epochs.

    Returns
    -------
    numpy.ndarray
        int8 stage ids, identical to ``synth_night(seed, n_epochs=n_epochs).stages``.

    Examples
    --------
    >>> synth_hypnogram(1, 960).shape
    (960,)
    """
    _check_seed(seed)
    if int(n_epochs) < 1:
        raise SynthError(f"n_epochs must be at least 1, got {n_epochs}")
    return _hypnogram(np.random.default_rng(_streams(seed)[0]), int(n_epochs))


# --------------------------------------------------------------------------- subject


@dataclass
class _Subject:
    """Per-recording draws (domain randomisation); canonical values when not randomised."""

    gain: float = 1.0
    slow_gain: float = 1.0
    channel_gain: dict[str, float] = field(default_factory=dict)
    aperiodic_exponent: float = 1.6
    alpha_freq: float = 10.0
    rem_alpha_freq: float = 9.0
    theta_freq: float = 6.0
    spindle_freq: float = 13.5
    spindle_density: float = 4.5
    kc_density: float = 1.2
    slow_wave_pp: float = 100.0
    emg_tone: float = 1.0
    heart_rate: float = 62.0
    ecg_amplitude: float = 1000.0
    ecg_in_eeg: float = 0.0
    line_freq: float = 50.0
    line_amplitude: dict[str, float] = field(default_factory=dict)
    dc_offset: dict[str, float] = field(default_factory=dict)
    pop_rate_per_hour: float = 0.0
    movement_probability: float = 0.0
    sweat_episodes: int = 0
    # --variability wide (see _widen_subject); neutral values otherwise
    level_scale: dict[str, list[float]] = field(default_factory=dict)
    alpha_burst_scale: float = 1.0
    slow_wave_floor: float = 95.0
    eyes_closed_scale: float = 1.0
    #: fraction of the corneo-retinal potential (eye movements, blinks) each EEG derivation
    #: picks up; channels not listed take _EYE_PICKUP
    eye_pickup: dict[str, float] = field(default_factory=dict)
    #: rms (uV) of the scalp-muscle burst that comes with a movement artefact on the EEG
    movement_muscle_rms: tuple[float, float] = (0.0, 0.0)
    #: amplifier range (uV) beyond which EEG/EOG samples saturate (0: none)
    clip_uv: float = 0.0
    # --variability sites (see _vary_site); neutral otherwise
    #: amplitude factor of the slow activity (< 2 Hz: delta rhythm, K-complexes, slow
    #: waves) at the recorded derivation
    slow_site: float = 1.0
    # --variability threshold (see _spread_threshold); neutral otherwise
    #: factor on the share of an N3 epoch its slow waves cover, and the least share
    n3_cover_scale: float = 1.0
    n3_cover_floor: float = 0.3
    #: the most of an N2 epoch that slow waves cover (under AASM's 20 %; 0: none)
    n2_slow_cover: float = 0.0
    # --variability lightn1 (see _lighten_n1); neutral otherwise
    #: factor on N1's delta rhythm
    n1_delta_scale: float = 1.0


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _draw_subject(rng: np.random.Generator, channels: tuple[str, ...]) -> _Subject:
    gain = _loguniform(rng, 0.5, 2.0)
    channel_gain = {c: float(np.exp(rng.normal(0.0, 0.1))) for c in EEG_CHANNELS}
    channel_gain |= {c: _loguniform(rng, 0.6, 1.6) for c in EOG_CHANNELS}
    channel_gain[EMG_CHANNEL] = _loguniform(rng, 0.5, 2.0)
    channel_gain[ECG_CHANNEL] = _loguniform(rng, 0.5, 2.0) * float(rng.choice([1.0, -1.0]))
    alpha = float(np.clip(rng.normal(10.0, 0.8), 8.5, 11.8))
    line = rng.random() < 0.7
    return _Subject(
        gain=gain,
        # AASM amplitude criteria are absolute: compress the gain below 2 Hz so that N2
        # never reaches, and N3 always keeps, the 75 uV slow-wave criterion.
        slow_gain=float(np.clip(gain, 0.8, 1.1)),
        channel_gain=channel_gain,
        aperiodic_exponent=rng.uniform(1.3, 1.9),
        alpha_freq=alpha,
        rem_alpha_freq=alpha - rng.uniform(0.5, 1.5),
        theta_freq=rng.uniform(5.0, 7.0),
        spindle_freq=float(np.clip(rng.normal(13.4, 0.6), 12.0, 14.8)),
        spindle_density=rng.uniform(2.5, 6.5),
        kc_density=rng.uniform(0.5, 2.0),
        slow_wave_pp=rng.uniform(95.0, 140.0),
        emg_tone=_loguniform(rng, 0.5, 2.0),
        heart_rate=rng.uniform(52.0, 72.0),
        ecg_amplitude=rng.uniform(500.0, 1800.0),
        ecg_in_eeg=rng.uniform(0.004, 0.02) if rng.random() < 0.5 else 0.0,
        line_freq=float(rng.choice([50.0, 60.0])),
        line_amplitude={c: _loguniform(rng, 0.2, 8.0) if line else 0.0 for c in channels},
        dc_offset={c: rng.uniform(-150.0, 150.0) for c in channels},
        pop_rate_per_hour=rng.uniform(0.0, 3.0),
        movement_probability=rng.uniform(0.2, 0.7),
        sweat_episodes=int(rng.integers(1, 4)) if rng.random() < 0.35 else 0,
    )


# --------------------------------------------------------------------------- arguments


def _widen_subject(rng: np.random.Generator, subject: _Subject) -> _Subject:
    """``variability="wide"``: a subject drawn from a broader population than the standard
    profile (other people, ages and amplifiers), so that no absolute amplitude or texture of
    one stage is a reliable cue on its own. Figures from the literature, not from any
    recording:

    - older sleepers' slow waves are smaller: slow-wave amplitude and slope fall from young
      to middle age (Carrier et al. 2011, *Eur J Neurosci* 33:758-766) and delta power of
      NREM sleep roughly halves by middle age (Landolt et al. 1996, *Brain Res*
      738:205-212; Mander, Winer & Walker 2017, *Neuron* 94:19-36); scorers still score N3
      in them, so the slow-wave amplitude is scaled by an age factor 0.55-1.0 and its floor
      follows (95 µV x factor instead of AASM's fixed 75 µV criterion);
    - waking alpha differs widely between people and is weak at central derivations, and
      some 5-10 % of adults have a low-voltage EEG with little alpha (Niedermeyer's
      *Electroencephalography*, ch. "The normal EEG of the waking adult"); a patient awake
      in bed at night often lies with eyes open, and waking alpha fades with drowsiness: W
      alpha (level and bursts) x0.15-1.5, eyes-closed wake x0.2-1 as frequent;
    - the fast activity of W (beta, scalp muscle) depends on vigilance and electrode
      contact: x0.3-1.5 (beta) and x0.3-2 (muscle); N1 is "low-amplitude, mixed frequency"
      (AASM v2.6) with variable theta: N1 background x0.6-1.1, theta x0.6-1.6, beta x0.5-2;
    - every stage's background x0.8-1.25 independently (inter-individual spectra differ
      by stage; Lendner et al. 2020 for the aperiodic part);
    - eye movements and blinks reach the EEG in proportions that differ between people and
      sites (see ``_WIDE_EYE_PICKUP``), so that the slow deflections of waking eyes and of
      N1's slow eye movements show on a central derivation as they do in clinical records;
    - a movement artefact brings a scalp-muscle burst (rms 5 to 15-60 uV) with its slow
      swings, and the amplifiers of 40 % of subjects saturate at +-250-400 uV (clipped
      movement).
    """
    ones = [1.0] * 5
    background = [_loguniform(rng, 0.8, 1.25) for _ in range(5)]
    background[N1] *= rng.uniform(0.6, 1.1)
    age = rng.uniform(0.55, 1.0)
    theta, beta, muscle = list(ones), list(ones), list(ones)
    theta[N1] = _loguniform(rng, 0.6, 1.6)
    beta[W] = _loguniform(rng, 0.3, 1.5)
    beta[N1] = _loguniform(rng, 0.5, 2.0)
    muscle[W] = _loguniform(rng, 0.3, 2.0)
    alpha = list(ones)
    alpha[W] = _loguniform(rng, 0.15, 1.5)
    delta = list(ones)
    delta[N3] = age
    subject.level_scale = {
        "background": background, "delta": delta, "theta": theta, "alpha": alpha,
        "beta": beta, "muscle": muscle,
    }  # fmt: skip
    subject.alpha_burst_scale = alpha[W]
    subject.slow_wave_pp *= age
    subject.slow_wave_floor = 95.0 * age
    subject.eyes_closed_scale = rng.uniform(0.2, 1.0)
    subject.eye_pickup = {c: rng.uniform(*_WIDE_EYE_PICKUP[c[4:6]]) for c in EEG_CHANNELS}
    subject.movement_muscle_rms = (5.0, rng.uniform(15.0, 60.0))
    subject.clip_uv = rng.uniform(250.0, 400.0) if rng.random() < 0.4 else 0.0
    return subject


def _vary_site(rng: np.random.Generator, subject: _Subject) -> _Subject:
    """``variability="sites"``: ``wide``'s subject, its slow activity scaled by the site.

    Slow-wave activity is not uniform over the scalp: it is largest frontally and falls
    towards the back, while sigma peaks at the vertex (Finelli, Borbély & Achermann 2001,
    *Eur J Neurosci* 13:2282-2290, 27 derivations), and each person's map is a stable
    trait of its own (Finelli, Achermann & Borbély 2001, *Neuropsychopharmacology*
    25:S57-S62). A clinical central lead (C3 or C4 against an ipsi- or contralateral ear
    or mastoid, or Cz) therefore carries slow activity at a level that depends on the
    derivation and the person more than the faster rhythms do, and scorers adapt to it:
    a recording's N2 can hold slow waves that another's N3 would. ``wide`` ties the
    amplitude below 2 Hz to AASM's absolute 75-uV criterion (``slow_gain`` 0.8-1.1, slow
    waves and K-complexes at fixed amplitudes); here everything below ~2 Hz (the delta
    rhythm through ``slow_gain``, K-complexes and slow waves) is scaled by one factor per
    subject, x0.7-1.7 log-uniform, an assumption that spans those site and person
    differences; the hypnogram keeps the stages the subject was drawn with.
    """
    subject.slow_site = _loguniform(rng, 0.7, 1.7)
    return subject


def _spread_threshold(rng: np.random.Generator, subject: _Subject) -> _Subject:
    """``variability="threshold"``: ``sites``' subject, its N2 and N3 drawn across the whole
    range that AASM's slow-wave criterion leaves them.

    AASM scores N3 when waves of 0.5-2 Hz and >= 75 uV peak to peak cover 20 % of an epoch
    or more, and N2 below that (AASM Manual v2.6; Berry et al. 2017, *J Clin Sleep Med*
    13:665-666): an N3 epoch can hold as little as a fifth of slow waves, an N2 epoch up
    to just under a fifth. The standard and wide nights draw N3 well above the criterion
    (30-62 % of the epoch) and N2 without slow waves, a contrast between the two stages
    that scorers' epochs near the boundary do not show. Here each subject's N3 cover is
    scaled x0.6-1.0 with AASM's 20 % as its floor, and each of its N2 epochs holds slow
    waves over 0 to 4-14 % of it (the subject's most; with the last wave drawn, under 20 %);
    the hypnogram is unchanged.
    """
    subject.n3_cover_scale = rng.uniform(0.6, 1.0)
    subject.n3_cover_floor = 0.2
    subject.n2_slow_cover = rng.uniform(0.04, 0.14)
    return subject


def _lighten_n1(rng: np.random.Generator, subject: _Subject) -> _Subject:
    """``variability="lightn1"``: ``sites``' subject, its N1 drawn with less delta than N2.

    Slow-wave activity is the sleep EEG's measure of NREM depth: lowest in N1, higher in
    N2, highest in N3 (Borbély & Achermann 1999, *J Biol Rhythms* 14:557-568; AASM v2.6
    describes N1 as "low-amplitude, mixed frequency"), and how much less N1 holds than N2
    differs between people. The other profiles draw N1's delta rhythm at 10 µV against
    N2's 13 for every subject, so N1 is nearly as slow as N2 (0.5-2 Hz rms N1/N2 of
    0.73-1.03 on fastrole's twelve training nights, ``bench/results/dev/band_medians``).
    Here each subject's N1 delta is scaled x0.35-1.0 log-uniform, an assumed range from
    N1 as slow as before to a third of its delta; the other stages and the hypnogram
    are ``sites``'.
    """
    subject.n1_delta_scale = _loguniform(rng, 0.35, 1.0)
    delta = list(subject.level_scale.get("delta", [1.0] * 5))
    delta[N1] *= subject.n1_delta_scale
    subject.level_scale = subject.level_scale | {"delta": delta}
    return subject


#: Domain-randomisation profiles of ``synth_night(variability=...)``: the changes each one
#: makes to the drawn subject, in order, each from its own random stream (the spawn key),
#: so that a new profile leaves the nights of the others as they were. Every profile but
#: ``standard`` also fragments the hypnogram (:func:`_fragment`).
_SubjectChange = Callable[[np.random.Generator, _Subject], _Subject]
_PROFILES: dict[str, tuple[tuple[_SubjectChange, int], ...]] = {
    "standard": (),
    "wide": ((_widen_subject, 4),),
    "sites": ((_widen_subject, 4), (_vary_site, 6)),
    "threshold": ((_widen_subject, 4), (_vary_site, 6), (_spread_threshold, 7)),
    "lightn1": ((_widen_subject, 4), (_vary_site, 6), (_lighten_n1, 8)),
}
VARIABILITY = tuple(_PROFILES)


def _fragment(rng: np.random.Generator, hyp: np.ndarray) -> np.ndarray:
    """``variability="wide"``: a clinical patient's fragmented sleep.

    The base hypnogram is a healthy adult's; patients referred for PSG (apnoea, insomnia,
    older adults) wake briefly and drift into N1 far more often: wake after sleep onset and
    N1 rise with age (Ohayon et al. 2004, *Sleep* 27:1255-1273) and respiratory events end
    in arousals several to dozens of times an hour. Each subject draws a rate of brief
    awakenings and of N1 intrusions (up to ~7 and ~10 an hour); an awakening is one or two
    W epochs, often followed by an N1 epoch as sleep resumes.
    """
    out = hyp.copy()
    asleep = np.flatnonzero(hyp != W)
    if asleep.size == 0:
        return out
    wake_rate, n1_rate = _loguniform(rng, 0.005, 0.06), _loguniform(rng, 0.005, 0.08)
    e = int(asleep[0]) + 1
    while e < out.size - 1:
        if out[e] in (N2, N3, R):
            draw = rng.random()
            if draw < wake_rate:
                length = 1 + int(rng.random() < 0.4)
                out[e : e + length] = W
                e += length
                if e < out.size - 1 and out[e] != W and rng.random() < 0.5:
                    out[e] = N1
            elif draw < wake_rate + n1_rate:
                out[e] = N1
        e += 1
    return out


#: Share of the corneo-retinal potential seen by each EEG derivation by default.
_EYE_PICKUP = {"EEG F4-M1": 0.2}
_EYE_PICKUP_DEFAULT = 0.03
#: ``variability="wide"``: ranges of that share per electrode site, relative to the eye
#: signal as E1-M2 sees it. At the vertex against linked mastoids blinks transmit 9.3 %
#: and vertical eye movements 13.9 % of the *vertical* EOG on average (Corby & Kopell
#: 1972, *Psychophysiology* 9:640-644), which is about twice E1-M2's deflection (a
#: supra-/infra-orbital pair against one electrode beside the canthus and a mastoid);
#: propagation falls from frontal to parietal sites (Gratton, Coles & Donchin 1983,
#: *EEG Clin Neurophysiol* 55:468-484; Croft & Barry 2000, *Neurophysiol Clin* 30:5-19).
_WIDE_EYE_PICKUP = {"F4": (0.2, 0.6), "C4": (0.06, 0.3), "C3": (0.06, 0.3), "O2": (0.0, 0.08)}


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")


def _streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent streams: hypnogram, subject, events, noise sources."""
    return np.random.SeedSequence(int(seed)).spawn(4)


def _pick_channels(channels: Any, rng: np.random.Generator) -> tuple[str, ...]:
    if isinstance(channels, str) and channels == "random":
        eeg = rng.choice(len(EEG_CHANNELS), int(rng.integers(1, 5)), replace=False)
        chosen = {EEG_CHANNELS[i] for i in eeg}
        eog = rng.random()
        chosen |= set(EOG_CHANNELS) if eog < 0.7 else ({EOG_CHANNELS[0]} if eog < 0.85 else set())
        chosen |= {EMG_CHANNEL} if rng.random() < 0.7 else set()
        chosen |= {ECG_CHANNEL} if rng.random() < 0.6 else set()
        return tuple(c for c in ALL_CHANNELS if c in chosen)
    if isinstance(channels, str):
        channels = (channels,)
    labels = tuple(channels)
    if not labels:
        raise SynthError("channels must name at least one channel")
    for label in labels:
        if label not in ALL_CHANNELS:
            raise ChannelNotFoundError(
                f"synthetic montage has no channel {label!r}; expected some of {ALL_CHANNELS}"
            )
    if len(set(labels)) != len(labels):
        raise SynthError(f"channels repeat a label: {labels}")
    return tuple(c for c in ALL_CHANNELS if c in labels)


def _check_rate(label: str, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise SynthError(f"sampling rate of {label!r} must be a number, got {value!r}") from None
    if not _FS_RANGE[0] <= rate <= _FS_RANGE[1]:
        raise SynthError(f"sampling rate of {label!r} must be within {_FS_RANGE} Hz, got {rate}")
    if abs(rate * EPOCH_LENGTH - round(rate * EPOCH_LENGTH)) > 1e-9:
        raise SynthError(f"sampling rate of {label!r} must give whole samples per epoch: {rate}")
    return rate


def _pick_rates(fs: Any, channels: tuple[str, ...], rng: np.random.Generator) -> dict[str, float]:
    if isinstance(fs, str):
        if fs != "random":
            raise SynthError(f"fs must be a number, a dict or 'random', got {fs!r}")
        base = float(rng.choice(_RANDOM_RATES, p=_RANDOM_RATE_WEIGHTS))
        rates = {c: base for c in channels}
        if rng.random() < 0.3:  # separate EMG / ECG rates, as in SHHS or MASS
            rates[EMG_CHANNEL] = float(rng.choice([r for r in _RANDOM_RATES if r >= base]))
            rates[ECG_CHANNEL] = float(rng.choice([r for r in _RANDOM_RATES if r >= 100.0]))
        return {c: rates[c] for c in channels}
    if isinstance(fs, dict):
        missing = [c for c in channels if c not in fs]
        if missing:
            raise SynthError(f"fs dict has no rate for {missing}")
        return {c: _check_rate(c, fs[c]) for c in channels}
    rate = _check_rate("all channels", fs)
    return {c: rate for c in channels}


# --------------------------------------------------------------------------- noise sources


def _decimation(fs: float) -> int:
    """Largest integer factor that keeps the rhythm rate >= 80 Hz with whole epochs."""
    samples = int(round(fs * EPOCH_LENGTH))
    for step in range(max(1, int(fs // 80.0)), 1, -1):
        if samples % step == 0:
            return step
    return 1


def _band_window(f: np.ndarray, low: float, high: float, edges: tuple[float, float]) -> np.ndarray:
    """1 inside [low, high], raised-cosine skirts of widths ``edges`` below and above."""
    below = np.clip((low - f) / edges[0], 0.0, 1.0)
    above = np.clip((f - high) / edges[1], 0.0, 1.0)
    return 0.25 * (1 + np.cos(np.pi * below)) * (1 + np.cos(np.pi * above))


def _slow_gain_curve(f: np.ndarray, subject: _Subject) -> np.ndarray:
    """Amplitude gain per frequency: ``slow_gain`` (times the site's ``slow_site``) below
    2 Hz, ``gain`` above 4 Hz."""
    mix = np.clip((f - 2.0) / 2.0, 0.0, 1.0)
    return subject.slow_gain * subject.slow_site * (1 - mix) + subject.gain * mix


def _amplitude(n: int, fs: float, shape: Any, subject: _Subject | None) -> np.ndarray:
    """Amplitude per rfft bin giving unit-variance noise with power spectrum ``shape(f)``,
    times the subject's frequency-dependent gain when ``subject`` is given."""
    m = n // 2 + 1
    f = np.arange(m, dtype=np.float32) * np.float32(fs / n)
    amplitude = np.sqrt(np.maximum(shape(f), 0.0), dtype=np.float32)
    amplitude[0] = 0.0
    norm = 2.0 * float(np.sqrt(np.dot(amplitude.astype(np.float64), amplitude))) / n
    if subject is not None:
        amplitude *= _slow_gain_curve(f, subject).astype(np.float32)
    amplitude /= np.float32(norm if norm > 0 else 1.0)
    return amplitude


def _coloured_noise(rng: np.random.Generator, amplitude: np.ndarray, n: int) -> np.ndarray:
    """Stationary Gaussian noise of ``n`` samples with rfft amplitudes ``amplitude``.

    Drawn directly in the frequency domain: complex Gaussian bins, one inverse real FFT.
    """
    spectrum = rng.standard_normal(2 * amplitude.size, dtype=np.float32).view(np.complex64)
    spectrum *= amplitude
    return sfft.irfft(spectrum, n).astype(np.float32, copy=False)


def _aperiodic(exponent: float) -> Any:
    """1/f^exponent with a knee at 0.5 Hz and a 0.1 Hz high-pass (Lendner et al. 2020)."""

    def shape(f: np.ndarray) -> np.ndarray:
        f = np.maximum(f, 1e-3)
        return 1.0 / (0.5**exponent + f**exponent) / (1.0 + (0.1 / f) ** 4)

    return shape


def _peak(centre: float, width: float) -> Any:
    return lambda f: np.exp(-0.5 * ((f - centre) / width) ** 2)


def _band(low: float, high: float, exponent: float = 0.0, edges: tuple = (0.5, 0.5)) -> Any:
    return lambda f: _band_window(f, low, high, edges) / np.maximum(f, 0.1) ** exponent


# --------------------------------------------------------------------------- envelopes


class _Timeline:
    """Time bases of one night: epochs, envelope rate, per-stage levels."""

    def __init__(self, stages: np.ndarray, fs: float) -> None:
        self.stages = stages
        self.fs = fs
        self.duration = stages.size * EPOCH_LENGTH
        self.n = int(round(self.duration * fs))
        self.k = max(1, int(round(fs / _ENV_RATE)))  # samples per envelope step
        self.env_rate = fs / self.k
        self.n_env = -(-self.n // self.k) + 1
        t_env = np.arange(self.n_env) * (self.k / fs)
        self.env_epoch = np.minimum((t_env // EPOCH_LENGTH).astype(np.int64), stages.size - 1)

    def steps(self, per_epoch: np.ndarray, smooth_s: float = 3.0) -> np.ndarray:
        """Per-epoch levels as an envelope, smoothed over ``smooth_s`` seconds."""
        env = np.asarray(per_epoch, dtype=np.float64)[self.env_epoch]
        size = max(1, int(round(smooth_s * self.env_rate)))
        return uniform_filter1d(env, size, mode="nearest")

    def wobble(self, rng: np.random.Generator, sigma: float, period_s: float) -> np.ndarray:
        """Log-normal slow modulation (waxing and waning) with unit median."""
        white = rng.standard_normal(self.n_env)
        size = max(1, int(round(period_s * self.env_rate)))
        smooth = uniform_filter1d(uniform_filter1d(white, size), size)
        smooth -= smooth.mean()
        spread = float(smooth.std())
        if spread < 1e-9:  # a night shorter than the period: nothing to modulate
            return np.ones(self.n_env)
        return np.exp(sigma * smooth / spread)

    def add_bump(self, env: np.ndarray, start: float, end: float, height: float) -> None:
        """Add a raised-cosine bump (0.5-s edges) of ``height`` over [start, end] s."""
        i0 = int(np.floor((start - 0.5) * self.env_rate))
        i1 = int(np.ceil((end + 0.5) * self.env_rate)) + 1
        i0, i1 = max(i0, 0), min(i1, self.n_env)
        if i1 <= i0:
            return
        t = np.arange(i0, i1) / self.env_rate
        rise = np.clip((t - (start - 0.5)) / 1.0, 0.0, 1.0)
        fall = np.clip(((end + 0.5) - t) / 1.0, 0.0, 1.0)
        env[i0:i1] += height * 0.5 * (1 - np.cos(np.pi * np.minimum(rise, fall)))

    def upsample(self, env: np.ndarray) -> np.ndarray:
        """Linear interpolation of an envelope to the sample rate (float32)."""
        env = env.astype(np.float32)
        w = (np.arange(self.k, dtype=np.float32) / self.k)[None, :]
        out = env[:-1, None] * (1 - w) + env[1:, None] * w
        return out.reshape(-1)[: self.n]


# --------------------------------------------------------------------------- waveforms


def _cusp(u: np.ndarray, power: float) -> np.ndarray:
    """Pointed lobe on u in [0, 1] (power > 1 makes concave, sharp flanks)."""
    return np.clip(1.0 - np.abs(2.0 * u - 1.0), 0.0, 1.0) ** power


def _wave(kind: str, t: np.ndarray, p: dict) -> np.ndarray:
    """Waveform of one event at times ``t`` (s from its start), unit = uV."""
    d = p["duration"]
    if kind == "spindle":
        env = np.sin(np.pi * np.clip(t / d, 0, 1))
        return 0.5 * p["pp"] * env * np.sin(2 * np.pi * p["freq"] * t + p["phase"])
    if kind in ("slow_wave", "k_complex", "vertex_wave"):
        d_neg = d * p["neg_fraction"]
        neg = t < d_neg
        out = np.empty_like(t)
        u = t[neg] / d_neg
        out[neg] = (
            -p["pp"]
            * p["neg_share"]
            * (np.sin(np.pi * u) if p["sharpness"] == 0 else _cusp(u, p["sharpness"]))
        )
        u = (t[~neg] - d_neg) / (d - d_neg)
        out[~neg] = p["pp"] * (1 - p["neg_share"]) * np.sin(np.pi * np.clip(u, 0, 1))
        return out
    if kind == "sawtooth_wave":
        env = np.sin(np.pi * np.clip(t / d, 0, 1)) ** 0.5
        return 0.5 * p["pp"] * env * sps.sawtooth(2 * np.pi * p["freq"] * t, 0.8)
    if kind == "blink":
        u = t / p["peak"]
        return p["pp"] * u**2 * np.exp(2.0 * (1.0 - u))
    if kind in ("saccade", "rapid_eye_movement"):
        rise = p["rise"]
        up = 0.5 * (1 - np.cos(np.pi * np.clip(t / rise, 0, 1)))
        return p["pp"] * up * np.exp(-np.maximum(t - rise, 0) / p["tau"])
    if kind == "slow_eye_movement":
        return p["pp"] * np.sin(np.pi * np.clip(t / d, 0, 1))
    if kind == "electrode_pop":
        return p["pp"] * np.exp(-t / p["tau"]) * np.clip(t * 500.0, 0, 1)
    raise SynthError(f"no waveform for event kind {kind!r}")


#: Relative amplitude of each brain event kind on the EEG channels (C4-M1 = reference).
_TOPOGRAPHY: dict[str, dict[str, float]] = {
    "spindle": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 0.75, "EEG O2-M1": 0.35},
    "k_complex": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.15, "EEG O2-M1": 0.45},
    "slow_wave": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.15, "EEG O2-M1": 0.55},
    "vertex_wave": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 0.7, "EEG O2-M1": 0.3},
    "sawtooth_wave": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 0.8, "EEG O2-M1": 0.4},
}
#: Relative amplitude of the continuous EEG rhythms per channel.
_RHYTHM_TOPOGRAPHY: dict[str, dict[str, float]] = {
    "delta": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.05, "EEG O2-M1": 0.6},
    "theta": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.0, "EEG O2-M1": 0.75},
    "alpha": {"EEG C4-M1": 0.55, "EEG C3-M2": 0.55, "EEG F4-M1": 0.3, "EEG O2-M1": 1.0},
    "sleep_alpha": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 0.9, "EEG O2-M1": 0.5},
    "beta": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.1, "EEG O2-M1": 0.9},
    "muscle": {"EEG C4-M1": 1.0, "EEG C3-M2": 1.0, "EEG F4-M1": 1.4, "EEG O2-M1": 1.2},
}
#: Mixing of three shared 1/f background sources into each EEG channel (rows normalised):
#: neighbouring referential derivations correlate ~0.6-0.9, occipital-frontal less.
_BACKGROUND_MIX: dict[str, tuple[float, float, float]] = {
    "EEG C4-M1": (0.85, 0.45, 0.27),
    "EEG C3-M2": (0.85, 0.2, -0.48),
    "EEG F4-M1": (0.75, 0.65, 0.1),
    "EEG O2-M1": (0.6, -0.55, 0.58),
}

#: Within a NREM episode slow-wave activity builds up over ~10-20 min (Achermann &
#: Borbely 1990; Dijk et al. 1993): N2 at an episode's start carries this fraction of the
#: background and delta of the N2 that precedes N3, rising with time constant below
#: (floor set from the Prerau segment's early-to-late N2 amplitude ratio, ~0.65).
_LIGHT_N2_FLOOR = 0.6
_BUILDUP_MINUTES = 12.0


def _nrem_buildup(stages: np.ndarray) -> np.ndarray:
    """Per-epoch SWA build-up factor: ``_LIGHT_N2_FLOOR`` at a NREM episode's first epoch,
    rising towards 1 with the minutes of N2/N3 since then (W or R ends an episode)."""
    minutes = np.zeros(stages.size)
    elapsed = 0.0
    for i, stage in enumerate(stages):
        if stage in (W, R):
            elapsed = 0.0
        elif stage in (N2, N3):
            minutes[i] = elapsed
            elapsed += EPOCH_LENGTH / 60.0
    return 1.0 - (1.0 - _LIGHT_N2_FLOOR) * np.exp(-minutes / _BUILDUP_MINUTES)


#: Level (uV rms before topography weights) of each continuous component per stage (W, N1,
#: N2, N3, R) for a unit-gain subject; tuned so that C4-M1 matches the Prerau segment's
#: relative band powers with ``psgvlm synth-report``.
_LEVELS: dict[str, tuple[float, float, float, float, float]] = {
    "background": (9.0, 9.0, 11.0, 9.0, 7.5),
    "delta": (3.0, 10.0, 13.0, 7.0, 3.0),
    "theta": (3.0, 4.0, 1.0, 4.5, 3.0),
    "alpha": (5.0, 6.0, 3.8, 4.4, 4.5),
    "beta": (4.0, 2.0, 0.8, 0.5, 2.6),
    "muscle": (2.5, 1.0, 0.5, 0.4, 0.3),
}
#: Extra C4-M1 alpha rms while eyes are closed in W (bursts; ~20 uV rms on O2-M1).
_ALPHA_BURST_RMS = 14.0
#: Chin EMG rms (uV) per stage for unit tone.
_EMG_RMS = (14.0, 7.0, 5.0, 4.5, 1.3)
#: Heart-rate offset (bpm) per stage relative to the subject's N2 rate.
_HR_OFFSET = (8.0, 4.0, 0.0, -2.0, 5.0)


# --------------------------------------------------------------------------- the night


class _Night:
    """Builds one night: plan per epoch, events, then signals."""

    def __init__(
        self,
        stages: np.ndarray,
        subject: _Subject,
        channels: tuple[str, ...],
        rates: dict[str, float],
        randomize: bool,
        event_rng: np.random.Generator,
        noise_seed: np.random.SeedSequence,
    ) -> None:
        self.stages = stages
        self.subject = subject
        self.channels = channels
        self.rates = rates
        self.randomize = randomize
        self.rng = event_rng
        self.noise_streams = iter(noise_seed.spawn(64))
        self.n_epochs = stages.size
        self.duration = self.n_epochs * EPOCH_LENGTH
        self.events: list[PlantedEvent] = []
        # events added to the brain (EEG) or to the eyes (EOG), as (kind, start, params)
        self.brain_events: list[tuple[PlantedEvent, dict]] = []
        self.eye_events: list[tuple[PlantedEvent, dict]] = []
        self.artefacts: list[tuple[PlantedEvent, dict]] = []
        self.alpha_bursts: list[tuple[float, float, float]] = []
        self.twitches: list[tuple[float, float, float]] = []
        onset = np.flatnonzero(stages != W)
        self.onset_epoch = int(onset[0]) if onset.size else self.n_epochs
        hours_asleep = np.maximum(
            (np.arange(self.n_epochs) - self.onset_epoch + 0.5) * EPOCH_LENGTH / 3600.0, 0.0
        )
        # Process S: slow-wave activity decays across the night (Achermann & Borbely, ~4 h).
        self.decay = np.exp(-hours_asleep / 4.2)
        self.buildup = _nrem_buildup(stages)
        self.eyes_closed = np.zeros(self.n_epochs, dtype=bool)

    def noise_rng(self) -> np.random.Generator:
        return np.random.default_rng(next(self.noise_streams))

    # ---------------------------------------------------------------- event planning
    def _place(self, epoch: int, durations: list[float], margin: float = 0.2) -> list[float]:
        """Non-overlapping random starts for ``durations`` inside one epoch."""
        total = sum(durations)
        free = EPOCH_LENGTH - 2 * margin - total
        if free <= 0:
            return []
        gaps = self.rng.dirichlet(np.ones(len(durations) + 1)) * free
        starts, t = [], epoch * EPOCH_LENGTH + margin
        for gap, d in zip(gaps[:-1], durations):
            t += gap
            starts.append(t)
            t += d
        return starts

    def _event(
        self, kind: str, start: float, duration: float, epoch: int, into: str, **params: Any
    ) -> None:
        params["duration"] = duration
        extra = {
            k: round(float(v), 4)
            for k, v in params.items()
            if k in ("pp", "freq", "duration", "n_waves")
        }
        extra = {
            {"pp": "amplitude_uv", "freq": "frequency_hz"}.get(k, k): v for k, v in extra.items()
        }
        event = PlantedEvent(kind, "", start, start + duration, int(self.stages[epoch]), extra)
        {"brain": self.brain_events, "eye": self.eye_events, "artefact": self.artefacts}[
            into
        ].append((event, params))

    def plan(self) -> None:
        rng = self.rng
        for e, stage in enumerate(self.stages):
            t0 = e * EPOCH_LENGTH
            if stage == W:
                closed_p = (0.7 if e < self.onset_epoch else 0.45) * self.subject.eyes_closed_scale
                self.eyes_closed[e] = rng.random() < closed_p
                if self.eyes_closed[e]:
                    burst = _ALPHA_BURST_RMS * self.subject.alpha_burst_scale
                    self._alpha_train(e, rng.uniform(0.55, 0.9), burst, (2.0, 12.0))
                    self._blinks(e, rng.poisson(1.0))
                    self._sems(e, rng.poisson(0.3))
                else:
                    self._blinks(e, rng.poisson(7.0))
                    self._saccades(e, rng.poisson(8.0))
            elif stage == N1:
                self._alpha_train(e, rng.uniform(0.0, 0.25), 0.6 * _ALPHA_BURST_RMS, (1.0, 4.0))
                self._sems(e, rng.poisson(1.5))
                for start in self._place(e, [0.3] * rng.poisson(1.2)):
                    self._vertex_wave(start, e)
            elif stage in (N2, N3):
                self._spindles(e, stage)
                if stage == N2:
                    self._k_complexes(e)
                    if self.subject.n2_slow_cover > 0:
                        self._slow_waves(e, rng.uniform(0.0, self.subject.n2_slow_cover))
                else:
                    self._slow_waves(e, self._n3_cover(e))
            elif stage == R:
                self._rem_epoch(e)
            if self.randomize:
                self._artefacts(e, t0)
        if self.randomize:
            self._sweat()

    def _alpha_train(
        self, epoch: int, cover: float, rms: float, lengths: tuple[float, float]
    ) -> None:
        t, end = epoch * EPOCH_LENGTH, (epoch + 1) * EPOCH_LENGTH
        while t < end - lengths[0]:
            length = min(self.rng.uniform(*lengths), end - t)
            if self.rng.random() < cover:
                height = rms * self.rng.uniform(0.7, 1.3)
                self.alpha_bursts.append((t, t + length, height))
                extra = {"rms_uv": round(height, 2)}
                self.events.append(
                    PlantedEvent("alpha_burst", "", t, t + length, int(self.stages[epoch]), extra)
                )
            t += length + self.rng.uniform(0.3, 2.0)

    def _blinks(self, epoch: int, count: int) -> None:
        for start in self._place(epoch, [0.6] * count):
            pp = self.rng.uniform(60.0, 180.0)
            self._event("blink", start, 0.6, epoch, "eye", pp=pp, peak=self.rng.uniform(0.08, 0.13))

    def _saccades(self, epoch: int, count: int) -> None:
        for start in self._place(epoch, [0.8] * count):
            pp = self.rng.uniform(20.0, 120.0) * self.rng.choice([-1.0, 1.0])
            tau = self.rng.uniform(0.4, 1.2)
            rise = self.rng.uniform(0.03, 0.07)
            self._event("saccade", start, rise + 3 * tau, epoch, "eye", pp=pp, rise=rise, tau=tau)

    def _sems(self, epoch: int, count: int) -> None:
        durations = [self.rng.uniform(1.0, 4.0) for _ in range(count)]
        for start, d in zip(self._place(epoch, durations), durations):
            pp = self.rng.uniform(40.0, 130.0) * self.rng.choice([-1.0, 1.0])
            self._event("slow_eye_movement", start, d, epoch, "eye", pp=pp)

    def _vertex_wave(self, start: float, epoch: int) -> None:
        pp = self.rng.uniform(50.0, 120.0) * self.subject.gain**0.5
        d = self.rng.uniform(0.18, 0.35)
        self._event(
            "vertex_wave", start, d, epoch, "brain",
            pp=pp, neg_fraction=0.6, neg_share=0.75, sharpness=1.6,
        )  # fmt: skip

    def _spindles(self, epoch: int, stage: int) -> None:
        # Spindle density rises across the night as SWA falls (Aeschbach & Borbely 1993).
        rate = (
            self.subject.spindle_density
            * (1.3 - 0.5 * self.decay[epoch])
            * (1.0 if stage == N2 else 0.8)
        )
        count = self.rng.poisson(rate * EPOCH_LENGTH / 60.0)
        durations = [
            float(np.clip(self.rng.lognormal(np.log(0.9), 0.3), 0.55, 1.95)) for _ in range(count)
        ]
        for start, d in zip(self._place(epoch, durations), durations):
            self._spindle(start, d, epoch)

    def _spindle(self, start: float, duration: float, epoch: int) -> None:
        s = self.subject
        freq = float(np.clip(s.spindle_freq + self.rng.normal(0.0, 0.35), 11.3, 15.7))
        pp = float(np.clip(self.rng.lognormal(np.log(38.0), 0.3), 16.0, 90.0)) * s.gain
        phase = self.rng.uniform(0, 2 * np.pi)
        self._event("spindle", start, duration, epoch, "brain", pp=pp, freq=freq, phase=phase)

    def _k_complexes(self, epoch: int) -> None:
        count = self.rng.poisson(self.subject.kc_density * EPOCH_LENGTH / 60.0)
        durations = [self.rng.uniform(0.6, 1.2) for _ in range(count)]
        for start, d in zip(self._place(epoch, [d + 1.0 for d in durations]), durations):
            pp = float(np.clip(self.rng.lognormal(np.log(130.0), 0.25), 85.0, 250.0))
            self._event(
                "k_complex", start, d, epoch, "brain",
                pp=pp, neg_fraction=0.4, neg_share=0.65, sharpness=1.4,
            )  # fmt: skip
            if self.rng.random() < 0.35 and start + d + 1.0 < (epoch + 1) * EPOCH_LENGTH - 0.2:
                self._spindle(start + d, float(self.rng.uniform(0.55, 0.95)), epoch)

    def _n3_cover(self, epoch: int) -> float:
        """The share of an N3 epoch its slow waves cover: ~30-60 %, more early in the night
        (``variability="threshold"``: from AASM's 20 %)."""
        s = self.subject
        cover = (0.27 + 0.3 * self.decay[epoch]) * self.rng.uniform(0.85, 1.25) * s.n3_cover_scale
        return float(np.clip(cover, s.n3_cover_floor, 0.62))

    def _slow_waves(self, epoch: int, cover: float) -> None:
        """0.6-1.7 Hz waves > 75 uV p-p covering ``cover`` of the epoch (AASM, Massimini)."""
        depth = self.decay[epoch]
        durations: list[float] = []
        while sum(durations) < cover * EPOCH_LENGTH:
            durations.append(self.rng.uniform(0.6, 1.6))
        base = self.subject.slow_wave_pp * (0.8 + 0.3 * depth)
        for start, d in zip(self._place(epoch, durations, margin=0.1), durations):
            floor = self.subject.slow_wave_floor
            pp = float(np.clip(base * self.rng.lognormal(0.0, 0.18), floor, 230.0))
            self._event(
                "slow_wave", start, d, epoch, "brain",
                pp=pp, neg_fraction=0.55, neg_share=0.58, sharpness=0,
            )  # fmt: skip

    def _rem_epoch(self, epoch: int) -> None:
        rng = self.rng
        # REM density rises across the night (Aserinsky 1971).
        phasic = rng.random() < 0.3 + 0.4 * (1.0 - self.decay[epoch])
        bursts = rng.poisson(2.0) if phasic else rng.poisson(0.3)
        burst_lengths = [rng.uniform(1.0, 4.0) for _ in range(bursts)]
        for start, length in zip(self._place(epoch, burst_lengths), burst_lengths):
            t = start
            while t < start + length:
                pp = rng.uniform(50.0, 220.0) * rng.choice([-1.0, 1.0])
                rise, tau = rng.uniform(0.06, 0.15), rng.uniform(0.25, 0.7)
                self._event(
                    "rapid_eye_movement", t, rise + 3 * tau, epoch, "eye", pp=pp, rise=rise, tau=tau
                )
                t += rng.uniform(0.35, 1.2)
        trains = [rng.uniform(1.5, 5.0) for _ in range(rng.poisson(0.7 if phasic else 0.3))]
        for start, length in zip(self._place(epoch, trains), trains):
            freq = rng.uniform(2.0, 5.0)
            pp = rng.uniform(30.0, 80.0) * self.subject.gain**0.5
            self._event(
                "sawtooth_wave", start, length, epoch, "brain",
                pp=pp, freq=freq, n_waves=round(length * freq),
            )  # fmt: skip
        for start in self._place(epoch, [0.3] * rng.poisson(1.5)):
            d = rng.uniform(0.05, 0.25)
            height = rng.uniform(3.0, 10.0)
            self.twitches.append((start, start + d, height))
            self.events.append(
                PlantedEvent(
                    "emg_twitch", EMG_CHANNEL, start, start + d, R, {"gain": round(height, 2)}
                )
            )
        self._alpha_train(epoch, rng.uniform(0.0, 0.3), 0.7 * _ALPHA_BURST_RMS, (1.0, 5.0))

    def _artefacts(self, epoch: int, t0: float) -> None:
        rng, s = self.rng, self.subject
        stage = int(self.stages[epoch])
        awakened = stage == W and epoch > self.onset_epoch and self.stages[epoch - 1] != W
        if stage == W and rng.random() < (s.movement_probability if awakened else 0.05):
            d = rng.uniform(2.0, 10.0)
            start = t0 + rng.uniform(0.2, EPOCH_LENGTH - d - 0.2)
            muscle = rng.uniform(*s.movement_muscle_rms) if s.movement_muscle_rms[1] else 0.0
            self._event(
                "artefact", start, d, epoch, "artefact",
                type="movement", pp=rng.uniform(100, 300), muscle=muscle,
            )  # fmt: skip
            self.twitches.append((start, start + d, rng.uniform(3.0, 8.0)))
        if rng.random() < s.pop_rate_per_hour * EPOCH_LENGTH / 3600.0:
            targets = [c for c in self.channels if c in EEG_CHANNELS + EOG_CHANNELS]
            if targets:
                tau = rng.uniform(0.1, 0.6)
                start = t0 + rng.uniform(0.0, EPOCH_LENGTH - 5 * tau)
                pp = rng.uniform(100.0, 400.0) * rng.choice([-1.0, 1.0])
                self._event(
                    "artefact", start, 5 * tau, epoch, "artefact",
                    type="electrode_pop", electrode=str(rng.choice(targets)), pp=pp, tau=tau,
                )  # fmt: skip

    def _sweat(self) -> None:
        for _ in range(self.subject.sweat_episodes):
            d = min(self.rng.uniform(120.0, 600.0), self.duration)
            start = self.rng.uniform(0.0, self.duration - d)
            epoch = int(start // EPOCH_LENGTH)
            self._event(
                "artefact", start, d, epoch, "artefact",
                type="sweat", pp=self.rng.uniform(30.0, 120.0), freq=self.rng.uniform(0.04, 0.2),
            )  # fmt: skip

    # ---------------------------------------------------------------- rendering
    def _level(self, component: str) -> np.ndarray:
        scale = self.subject.level_scale.get(component, (1.0,) * 5)
        return (np.asarray(_LEVELS[component]) * np.asarray(scale))[self.stages]

    def render_brain(self, labels: tuple[str, ...], fs: float) -> dict[str, np.ndarray]:
        """EEG channels (and the frontal signal the EOG picks up) at rate ``fs``.

        Scalp muscle activity is drawn at ``fs``; the 1/f background and the rhythms at an
        integer fraction of it (>= 80 Hz, see :func:`_decimation`), interpolated once per
        channel (polyphase), which keeps a full night within a few seconds.
        """
        s = self.subject
        full = _Timeline(self.stages, fs)
        step = _decimation(fs)
        low = _Timeline(self.stages, fs / step)
        gains = {c: s.channel_gain.get(c, 1.0) for c in labels}
        out = {c: np.zeros(full.n, dtype=np.float32) for c in labels}
        slow = {c: np.zeros(low.n, dtype=np.float32) for c in labels}

        def add(
            into: dict[str, np.ndarray], tl: _Timeline, amplitude: np.ndarray,
            envelope: np.ndarray, weights: dict[str, float],
        ) -> None:  # fmt: skip
            modulated = _coloured_noise(self.noise_rng(), amplitude, tl.n) * tl.upsample(envelope)
            for c in labels:
                if weights.get(c, 0.0):
                    into[c] += np.float32(weights[c] * gains[c]) * modulated

        muscle = _amplitude(full.n, fs, _band(20.0, 0.45 * fs, 0.0, (5.0, 1.0)), s)
        env = full.steps(self._level("muscle") * s.emg_tone) * full.wobble(
            self.noise_rng(), 0.5, 5.0
        )
        add(out, full, muscle, env, _RHYTHM_TOPOGRAPHY["muscle"])
        background = _amplitude(low.n, low.fs, _aperiodic(s.aperiodic_exponent), s)
        light = np.where(self.stages == N2, self.buildup, 1.0)  # light N2 early in an episode
        env = low.steps(self._level("background") * light) * low.wobble(
            self.noise_rng(), 0.15, 20.0
        )
        for i in range(3):
            mix = {c: _BACKGROUND_MIX[c][i] / np.linalg.norm(_BACKGROUND_MIX[c]) for c in labels}
            add(slow, low, background, env, mix)
        # SWA declines across the night (process S), so does NREM delta.
        nrem = np.isin(self.stages, (N2, N3))
        delta = self._level("delta") * np.where(nrem, 0.85 + 0.25 * self.decay, 1.0) * light
        rhythms = {
            "delta": (_band(0.5, 5.0, 1.5, (0.3, 2.0)), delta, 0.25, 10.0),
            "theta": (_peak(s.theta_freq, 1.2), self._level("theta"), 0.3, 5.0),
            "beta": (_band(12.0, 28.0, 0.5, (3.0, 4.0)), self._level("beta"), 0.2, 10.0),
        }
        for name, (shape, level, sigma, period) in rhythms.items():
            env = low.steps(level) * low.wobble(self.noise_rng(), sigma, period)
            add(slow, low, _amplitude(low.n, low.fs, shape, s), env, _RHYTHM_TOPOGRAPHY[name])
        # Alpha: posterior waking alpha (subject frequency), slower REM alpha (Cantero &
        # Atienza) and the fronto-central ~10 Hz activity that persists in NREM sleep.
        groups = (
            ((W, N1), s.alpha_freq, "alpha"),
            ((N2, N3), s.alpha_freq, "sleep_alpha"),
            ((R,), s.rem_alpha_freq, "alpha"),
        )
        for stages_of, freq, topography in groups:
            member = np.isin(self.stages, stages_of)
            if not member.any():
                continue
            env = low.steps(np.where(member, self._level("alpha"), 0.0))
            for start, end, height in self.alpha_bursts:
                if member[min(int(start // EPOCH_LENGTH), self.n_epochs - 1)]:
                    low.add_bump(env, start, end, height)
            env *= low.wobble(self.noise_rng(), 0.3, 2.0)
            amplitude = _amplitude(low.n, low.fs, _peak(freq, 0.5), s)
            add(slow, low, amplitude, env, _RHYTHM_TOPOGRAPHY[topography])
        for c in labels:
            if step > 1:
                out[c] += sps.resample_poly(slow[c], step, 1).astype(np.float32)[: full.n]
            else:
                out[c] += slow[c]
        for event, params in self.brain_events:
            weights = {
                c: _TOPOGRAPHY[event.kind].get(c, 0.0) * self._gain(event, c) for c in labels
            }
            self._stamp(out, event, params, fs, weights)
        return out

    def _gain(self, event: PlantedEvent, channel: str) -> float:
        """Per-channel gain of a brain event; for the AASM amplitude-anchored kinds only the
        site's (``slow_site``, 1 but with ``variability="sites"``)."""
        if event.kind in ("slow_wave", "k_complex"):
            return self.subject.slow_site
        return self.subject.channel_gain.get(channel, 1.0)

    def _stamp(
        self, out: dict[str, np.ndarray], event: PlantedEvent, params: dict, fs: float,
        weights: dict[str, float],
    ) -> None:  # fmt: skip
        i0 = int(np.ceil(event.start * fs))
        i1 = min(int(np.ceil(event.end * fs)), next(iter(out.values())).size)
        if i1 <= i0:
            return
        wave = _wave(event.kind, np.arange(i0, i1) / fs - event.start, params).astype(np.float32)
        for c, w in weights.items():
            if w and c in out:
                out[c][i0:i1] += np.float32(w) * wave

    def render_eyes(self, fs: float, n: int) -> np.ndarray:
        """Corneo-retinal potential seen by E1-M2 (E2-M1 sees it inverted)."""
        eye = {"E": np.zeros(n, dtype=np.float32)}
        for event, params in self.eye_events:
            self._stamp(eye, event, params, fs, {"E": 1.0})
        return eye["E"]

    def render_emg(self, fs: float) -> np.ndarray:
        s = self.subject
        tl = _Timeline(self.stages, fs)
        level = (
            np.asarray(_EMG_RMS)[self.stages] * s.emg_tone * s.channel_gain.get(EMG_CHANNEL, 1.0)
        )
        env = tl.steps(level, smooth_s=2.0) * tl.wobble(self.noise_rng(), 0.25, 8.0)
        full = tl.upsample(env)
        base = np.asarray(_EMG_RMS)[R] * s.emg_tone
        for start, end, height in self.twitches:
            i0, i1 = int(start * fs), min(int(np.ceil(end * fs)) + 1, tl.n)
            if i1 > i0:
                full[i0:i1] += np.float32(height * base) * np.hanning(i1 - i0).astype(np.float32)
        high = min(100.0, 0.45 * fs)
        noise = _coloured_noise(
            self.noise_rng(), _amplitude(tl.n, fs, _band(10.0, high, 0.0, (3.0, 1.0)), None), tl.n
        )
        return noise * full

    def render_ecg(self, fs: float) -> np.ndarray:
        """QRS train (Gaussian P-QRS-T template) with stage-dependent heart rate and RSA."""
        s = self.subject
        tl = _Timeline(self.stages, fs)
        rng = self.noise_rng()
        t_env = np.arange(tl.n_env) / tl.env_rate
        hr = tl.steps(s.heart_rate + np.asarray(_HR_OFFSET)[self.stages], smooth_s=20.0)
        breath = rng.uniform(0.2, 0.3)
        hr = hr + 3.0 * np.sin(2 * np.pi * breath * t_env + rng.uniform(0, 2 * np.pi))
        hr = hr + 2.0 * np.log(tl.wobble(rng, 1.0, 60.0))
        phase = np.concatenate([[0.0], np.cumsum(hr[:-1] / 60.0 / tl.env_rate)]) + rng.random()
        beats = np.interp(np.arange(np.ceil(phase[0]), phase[-1]), phase, t_env)
        index = np.round(beats * fs).astype(np.int64)
        index = index[(index >= 0) & (index < tl.n)]
        train = np.zeros(tl.n, dtype=np.float32)
        train[index] = 1.0
        tt = np.arange(int(-0.25 * fs), int(0.45 * fs) + 1) / fs
        waves = (
            (0.12, -0.16, 0.025),
            (-0.12, -0.03, 0.008),
            (1.0, 0.0, 0.01),
            (-0.25, 0.03, 0.01),
            (0.3, 0.26, 0.04),
        )
        template = sum(a * np.exp(-0.5 * ((tt - mu) / sd) ** 2) for a, mu, sd in waves)
        ecg = sps.oaconvolve(train, template.astype(np.float32), mode="full")
        start = -int(-0.25 * fs)
        ecg = ecg[start : start + tl.n] * np.float32(
            s.ecg_amplitude * s.channel_gain.get(ECG_CHANNEL, 1.0)
        )
        return ecg.astype(np.float32) + rng.standard_normal(tl.n, dtype=np.float32) * 5.0

    def render_artefacts(self, out: dict[str, np.ndarray]) -> None:
        for event, params in self.artefacts:
            kind = params["type"]
            if kind == "electrode_pop":
                target = params["electrode"]
                if target in out:
                    fs = self.rates[target]
                    self._stamp(
                        out,
                        PlantedEvent("electrode_pop", target, event.start, event.end, event.stage),
                        params,
                        fs,
                        {target: 1.0},
                    )
                continue
            for c in out:
                if c == ECG_CHANNEL or (kind == "sweat" and c not in EEG_CHANNELS + EOG_CHANNELS):
                    continue
                fs = self.rates[c]
                i0, i1 = (
                    int(np.ceil(event.start * fs)),
                    min(int(np.ceil(event.end * fs)), out[c].size),
                )
                if i1 <= i0:
                    continue
                t = np.arange(i1 - i0) / fs
                window = np.hanning(i1 - i0)
                if kind == "sweat":
                    wave = 0.5 * params["pp"] * np.sin(2 * np.pi * params["freq"] * t) * window
                else:  # movement: large low-frequency swings on every electrode
                    local = self.rng.standard_normal(i1 - i0)
                    local = uniform_filter1d(
                        uniform_filter1d(local, max(1, int(0.15 * fs))), max(1, int(0.15 * fs))
                    )
                    local /= max(float(np.ptp(local)), 1e-9)
                    wave = params["pp"] * local * window
                    if params["muscle"] and c in EEG_CHANNELS + EOG_CHANNELS:
                        wave += params["muscle"] * window * _muscle_burst(self.rng, i1 - i0, fs)
                out[c][i0:i1] += wave.astype(np.float32)

    def finish_events(self) -> list[PlantedEvent]:
        """Give each event the rendered channel where it is strongest, drop invisible ones."""
        rendered = set(self.channels)
        done = list(self.events)
        for event, params in self.brain_events:
            weights = {c: w for c, w in _TOPOGRAPHY[event.kind].items() if c in rendered}
            if not weights and (EOG_CHANNELS[0] in rendered or EOG_CHANNELS[1] in rendered):
                weights = {c: 0.35 for c in EOG_CHANNELS if c in rendered}
            if weights:
                best = max(weights, key=weights.get)
                extra = dict(event.extra)
                extra["amplitude_uv"] = round(
                    abs(params["pp"]) * weights[best] * self._gain(event, best), 2
                )
                extra["channels"] = sorted(weights)
                done.append(
                    PlantedEvent(event.kind, best, event.start, event.end, event.stage, extra)
                )
        eyes = [c for c in EOG_CHANNELS if c in rendered] or (
            ["EEG F4-M1"] if "EEG F4-M1" in rendered else []
        )
        for event, _ in self.eye_events:
            if eyes:
                done.append(
                    PlantedEvent(
                        event.kind,
                        eyes[0],
                        event.start,
                        event.end,
                        event.stage,
                        dict(event.extra, channels=eyes),
                    )
                )
        for event, params in self.artefacts:
            target = params.get("electrode")
            if params["type"] == "electrode_pop" and target not in rendered:
                continue
            channel = target or self.channels[0]
            done.append(
                PlantedEvent(
                    "artefact",
                    channel,
                    event.start,
                    event.end,
                    event.stage,
                    dict(event.extra, type=params["type"]),
                )
            )
        eeg = [c for c in EEG_CHANNELS if c in rendered]
        alpha_channel = "EEG O2-M1" if "EEG O2-M1" in rendered else (eeg[0] if eeg else None)
        done = [
            e if e.kind != "alpha_burst" else
            PlantedEvent(e.kind, alpha_channel, e.start, e.end, e.stage, e.extra)
            for e in done
            if e.kind != "alpha_burst" or alpha_channel
        ]  # fmt: skip
        done = [e for e in done if e.kind != "emg_twitch" or EMG_CHANNEL in rendered]
        return sorted(done, key=lambda e: (e.start, e.kind))


def _muscle_burst(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Unit-rms broadband noise above ~20 Hz (scalp muscle), ``n`` samples at ``fs``."""
    noise = rng.standard_normal(n)
    noise -= uniform_filter1d(noise, max(1, int(fs / 20.0)))
    return noise / max(float(np.std(noise)), 1e-9)


def _resample(x: np.ndarray, fs_from: float, fs_to: float, n_to: int) -> np.ndarray:
    if fs_from == fs_to:
        return x
    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    y = sps.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
    if y.size < n_to:
        y = np.pad(y, (0, n_to - y.size), mode="edge")
    return y[:n_to]


def _mains(freq: float, fs: float, n: int) -> np.ndarray:
    """Unit mains sinusoid, built from one exact period and tiled when the rate allows."""
    ratio = Fraction(freq / fs).limit_denominator(10_000)
    period = ratio.denominator if abs(float(ratio) - freq / fs) < 1e-12 else n
    one = np.sin(2 * np.pi * (freq / fs) * np.arange(min(period, n))).astype(np.float32)
    return np.resize(one, n)


def synth_night(
    seed: int,
    hours: float = 8.0,
    n_epochs: int | None = None,
    fs: float | dict | str = 256.0,
    channels: Any = ALL_CHANNELS,
    randomize: bool = True,
    stages: Any = None,
    variability: str = "standard",
) -> SyntheticNight:
    """Generate one synthetic PSG night.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same arguments and seed give the same night.
    hours : float
        Length of the night when ``n_epochs`` and ``stages`` are not given.
    n_epochs : int, optional
        Number of 30-s epochs (overrides ``hours``).
    fs : float, dict or "random"
        Sampling rate for every channel, a ``label -> rate`` dict, or ``"random"``
        (a clinical rate between 50 and 512 Hz, sometimes separate EMG/ECG rates).
    channels : sequence of str or "random"
        Labels from :data:`ALL_CHANNELS`, or ``"random"`` (one EEG up to the full montage).
    randomize : bool
        Draw per-subject gains (x0.5-2), DC offsets, mains interference, electrode pops,
        movement and sweat artefacts, 1/f exponent, alpha and spindle frequencies, heart
        rate... When False a canonical subject without artefacts is used.
    stages : sequence of int, optional
        Use this hypnogram (stage ids 0-4 per epoch) instead of drawing one.
    variability : {"standard", "wide", "sites", "threshold", "lightn1"}
        ``"wide"`` (with ``randomize``) also draws older sleepers' smaller slow waves, weak
        or absent waking alpha, quieter or busier wake and N1 and per-stage background
        levels (:func:`_widen_subject`, from an extra random stream: standard nights of a
        seed are unchanged); ``"sites"`` is ``"wide"`` with the slow activity scaled per
        subject (:func:`_vary_site`, another stream: wide nights are unchanged);
        ``"threshold"`` is ``"sites"`` with N3 down to AASM's 20 % of slow waves and N2
        holding some under it (:func:`_spread_threshold`, a third stream); ``"lightn1"``
        is ``"sites"`` with each subject's N1 delta scaled x0.35-1.0 (:func:`_lighten_n1`,
        a fourth stream).

    Returns
    -------
    SyntheticNight

    Raises
    ------
    SynthError
        On invalid arguments.
    ChannelNotFoundError
        When a channel is not in the synthetic montage.

    Examples
    --------
    >>> night = synth_night(3, n_epochs=20, fs=100.0, randomize=False)
    >>> night.signals["EEG C4-M1"].shape
    (60000,)
    """
    _check_seed(seed)
    if variability not in VARIABILITY:
        raise SynthError(f"variability must be one of {VARIABILITY}, got {variability!r}")
    hyp_seed, subject_seed, event_seed, noise_seed = _streams(seed)
    if stages is not None:
        hyp = np.asarray(stages)
        if hyp.ndim != 1 or hyp.size == 0 or not np.isin(hyp, (W, N1, N2, N3, R)).all():
            raise SynthError("stages must be a non-empty 1-D sequence of stage ids 0..4")
        hyp = hyp.astype(np.int8)
    else:
        if n_epochs is None:
            if not np.isfinite(hours) or hours <= 0:
                raise SynthError(f"hours must be a positive number, got {hours}")
            n_epochs = max(1, int(round(hours * 3600.0 / EPOCH_LENGTH)))
        if int(n_epochs) < 1:
            raise SynthError(f"n_epochs must be at least 1, got {n_epochs}")
        hyp = _hypnogram(np.random.default_rng(hyp_seed), int(n_epochs))
    subject_rng = np.random.default_rng(subject_seed)
    labels = _pick_channels(channels, subject_rng)
    rates = _pick_rates(fs, labels, subject_rng)
    subject = _draw_subject(subject_rng, labels) if randomize else _Subject()
    changes = _PROFILES[variability] if randomize else ()
    for change, stream in changes:
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream,)))
        subject = change(rng, subject)
    if changes and stages is None:  # a hypnogram given by the caller is kept as it is
        hyp = _fragment(
            np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(5,))), hyp
        )

    night = _Night(
        hyp, subject, labels, rates, randomize, np.random.default_rng(event_seed), noise_seed
    )
    night.plan()
    duration = hyp.size * EPOCH_LENGTH
    n_of = {c: int(round(duration * rates[c])) for c in labels}
    signals: dict[str, np.ndarray] = {}

    eog = [c for c in labels if c in EOG_CHANNELS]
    brain_labels = tuple(c for c in EEG_CHANNELS if c in labels or (eog and c == "EEG F4-M1"))
    if brain_labels:
        fs_brain = max(rates[c] for c in labels if c in EEG_CHANNELS + EOG_CHANNELS)
        brain = night.render_brain(brain_labels, fs_brain)
        eye = night.render_eyes(fs_brain, brain[brain_labels[0]].size)
        pickup_rng = night.noise_rng()
        for c in eog:
            sign = 1.0 if c == EOG_CHANNELS[0] else -1.0
            gain = subject.channel_gain.get(c, 1.0)
            x = np.float32(sign * gain) * eye + np.float32(0.35) * brain["EEG F4-M1"]
            x += pickup_rng.standard_normal(x.size, dtype=np.float32) * np.float32(2.0)
            signals[c] = _resample(x, fs_brain, rates[c], n_of[c])
        for c in brain_labels:
            if c in labels:
                pickup = subject.eye_pickup.get(c, _EYE_PICKUP.get(c, _EYE_PICKUP_DEFAULT))
                x = brain[c] + np.float32(pickup) * eye
                signals[c] = _resample(x, fs_brain, rates[c], n_of[c])
    if EMG_CHANNEL in labels:
        signals[EMG_CHANNEL] = night.render_emg(rates[EMG_CHANNEL])
    if ECG_CHANNEL in labels or subject.ecg_in_eeg > 0:
        ecg_fs = rates.get(ECG_CHANNEL, max(rates.values()))
        ecg = night.render_ecg(ecg_fs)
        for c in labels:
            if c in EEG_CHANNELS and subject.ecg_in_eeg > 0:
                signals[c] += np.float32(subject.ecg_in_eeg) * _resample(
                    ecg, ecg_fs, rates[c], n_of[c]
                )
        if ECG_CHANNEL in labels:
            signals[ECG_CHANNEL] = ecg
    night.render_artefacts(signals)
    for c in labels:
        amplitude = subject.line_amplitude.get(c, 0.0)
        if amplitude and subject.line_freq < 0.45 * rates[c]:
            signals[c] += np.float32(amplitude) * _mains(subject.line_freq, rates[c], n_of[c])
        if subject.clip_uv and c in EEG_CHANNELS + EOG_CHANNELS:
            np.clip(signals[c], -subject.clip_uv, subject.clip_uv, out=signals[c])
        signals[c] += np.float32(subject.dc_offset.get(c, 0.0))
    params = asdict(subject) | {
        "randomize": bool(randomize), "variability": variability, "channels": list(labels),
        "fs": rates,
    }  # fmt: skip
    return SyntheticNight(
        signals={c: signals[c] for c in labels},
        fs=rates,
        stages=hyp,
        events=night.finish_events(),
        subject=f"synth-{seed:04d}",
        seed=int(seed),
        params=_jsonable(params),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5)
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


# --------------------------------------------------------------------------- writing

#: Smallest symmetric physical range (uV) per channel type in the EDF header.
_RANGE_FLOOR = {"EEG": 250.0, "EOG": 500.0, "EMG": 250.0, "ECG": 2500.0}


def _nice_ceiling(value: float) -> float:
    exponent = 10.0 ** np.floor(np.log10(max(value, 1e-9)))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * exponent >= value:
            return float(step * exponent)
    return float(10.0 * exponent)


def _record_duration(rates: dict[str, float]) -> float:
    for duration in (1.0, 2.0, 5.0, 10.0, EPOCH_LENGTH):
        if all(abs(r * duration - round(r * duration)) < 1e-9 for r in rates.values()):
            return duration
    raise EDFError(f"no EDF data-record duration fits the sampling rates {rates}")


def _replace_atomically(write: Any, final: Path) -> None:
    temporary = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    try:
        write(temporary)
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_night(
    night: SyntheticNight, directory: str | os.PathLike, name: str | None = None
) -> tuple[Path, Path]:
    """Write a night as Sleep-EDF style files.

    Writes ``{name}-PSG.edf`` (EDF+, uV, per-channel rates), ``{name}-Hypnogram.edf``
    (EDF+ annotations ``Sleep stage W/1/2/3/R``, runs of equal epochs merged as in
    Sleep-EDF) and ``{name}-events.json`` (planted events and subject draws). Each file
    is written under a temporary name and moved into place.

    Parameters
    ----------
    night : SyntheticNight
    directory : path
        Created when missing.
    name : str, optional
        File stem; default ``synth-{seed:04d}``.

    Returns
    -------
    (Path, Path)
        The PSG and hypnogram paths.
    """
    import pyedflib

    name = name or f"synth-{night.seed:04d}"
    if not name or "/" in name or name.startswith("."):
        raise SynthError(f"invalid night name {name!r}")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EDFError(f"cannot create output directory {out}: {err}") from err
    psg, hyp, events = (out / f"{name}-{s}" for s in ("PSG.edf", "Hypnogram.edf", "events.json"))
    record = _record_duration(night.fs)
    start = datetime(2020, 1, 1, 23, 0, 0)

    def write_psg(path: Path) -> None:
        headers, data = [], []
        for label, x in night.signals.items():
            kind = label.split()[0]
            values = np.asarray(x, dtype=np.float64)
            offset = float(np.round(np.median(values), -1)) if values.size else 0.0
            half = max(
                _RANGE_FLOOR.get(kind, 500.0),
                _nice_ceiling(float(np.max(np.abs(values - offset), initial=0.0)) * 1.05),
            )
            headers.append(
                {
                    "label": label,
                    "dimension": "uV",
                    "sample_frequency": night.fs[label],
                    "physical_min": offset - half,
                    "physical_max": offset + half,
                    "digital_min": -32768,
                    "digital_max": 32767,
                    "transducer": "synthetic",
                    "prefilter": "none",
                }
            )
            data.append(values)
        writer = pyedflib.EdfWriter(str(path), len(headers), pyedflib.FILETYPE_EDFPLUS)
        try:
            if record != 1.0:
                writer.setDatarecordDuration(record)
            writer.setSignalHeaders(headers)
            writer.setPatientCode(night.subject)
            writer.setEquipment("psgvlm_synthetic_PSG")
            writer.setStartdatetime(start)
            writer.writeSamples(data)
        finally:
            writer.close()

    def write_hypnogram(path: Path) -> None:
        writer = pyedflib.EdfWriter(str(path), 0, pyedflib.FILETYPE_EDFPLUS)
        try:
            writer.setPatientCode(night.subject)
            writer.setStartdatetime(start)
            changes = np.flatnonzero(np.diff(night.stages)) + 1
            bounds = np.concatenate([[0], changes, [night.stages.size]])
            for begin, end in zip(bounds[:-1], bounds[1:]):
                label = _ANNOTATION_LABELS[int(night.stages[begin])]
                writer.writeAnnotation(
                    begin * night.epoch_length, (end - begin) * night.epoch_length, label
                )
        finally:
            writer.close()

    def write_events(path: Path) -> None:
        payload = {
            "subject": night.subject,
            "seed": night.seed,
            "epoch_length": night.epoch_length,
            "fs": night.fs,
            "params": night.params,
            "stages": night.stages.tolist(),
            "events": [e.to_dict() for e in night.events],
        }
        path.write_text(json.dumps(_jsonable(payload)))

    try:
        _replace_atomically(write_psg, psg)
        _replace_atomically(write_hypnogram, hyp)
        _replace_atomically(write_events, events)
    except OSError as err:
        raise EDFError(f"cannot write {name} into {out}: {err}") from err
    return psg, hyp


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm synth``; every option's help ends with its default."""
    parser.add_argument(
        "--nights", type=int, default=1, help="number of nights to write (default: 1)"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output directory; nights are named synth-SEED (two runs into different "
        "folders can be rendered together: their ids are told apart by folder) (required)",
    )
    parser.add_argument(
        "--hours", type=float, default=8.0, help="length of each night in hours (default: 8.0)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the first night; night i uses seed + i (default: 0)",
    )
    parser.add_argument(
        "--fs", default="256", help="sampling rate in Hz, or 'random' (default: 256)"
    )
    parser.add_argument(
        "--channels",
        default="all",
        help="'all', 'random' or comma-separated labels (default: all)",
    )
    parser.add_argument(
        "--variability",
        choices=VARIABILITY,
        default="standard",
        help="domain randomisation: standard, or wide (a clinical population: older "
        "sleepers' smaller slow waves, weak waking alpha, quieter or busier W and N1, "
        "per-stage levels, eye movements on the EEG, saturating amplifiers, fragmented "
        "sleep), or sites (wide, with the slow activity below 2 Hz scaled x0.7-1.7 per "
        "subject, as derivations and people differ), or threshold (sites, with N3 drawn "
        "down to AASM's 20 %% of slow waves and N2 holding some under it), or lightn1 (sites, "
        "with each subject's N1 delta x0.35-1.0) (default: standard)",
    )
    parser.add_argument(
        "--no-randomize",
        action="store_true",
        help="canonical subject, no artefacts (default: randomised subject and artefacts)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (default: shown when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate ``--nights`` nights with seeds ``--seed``, ``--seed + 1``... into ``--out``."""
    from tqdm import tqdm

    if args.nights < 1:
        raise SynthError(f"--nights must be at least 1, got {args.nights}")
    fs: float | str = args.fs if args.fs == "random" else _check_rate("--fs", args.fs)
    channels: Any = {"all": ALL_CHANNELS, "random": "random"}.get(
        args.channels, tuple(c.strip() for c in args.channels.split(","))
    )
    seeds = range(args.seed, args.seed + args.nights)
    for seed in tqdm(seeds, desc="synth", unit="night", disable=True if args.no_progress else None):
        night = synth_night(
            seed, hours=args.hours, fs=fs, channels=channels,
            randomize=not args.no_randomize, variability=args.variability,
        )  # fmt: skip
        psg, _ = write_night(night, args.out)
        logger.debug("wrote %s (%d epochs, %d events)", psg, night.n_epochs, len(night.events))
    logger.info("wrote %d nights into %s", args.nights, args.out)
    return 0

"""Signal perturbations for robustness tests: noise, gain, mains, wander, pops, dropped channels.

Every perturbation is a pure function of ``(signal, fs, level, seed)``: the same arguments
give the same samples, and nothing else (no global random state) is read. Channels of a
recording are perturbed independently, each with its own random stream derived from the
seed and the channel label (:func:`channel_seed`), so adding or reordering channels does
not change what happens to the others.

A perturbation specification (``psgvlm eval --perturb SPEC``) lists kinds and levels::

    SPEC   := ITEM (";" ITEM)*
    ITEM   := KIND [":" FIELD ("/" FIELD)*]
    FIELD  := [KEY "="] VALUE ("," VALUE)*

The first field without a key (or with the kind's level key) lists the levels swept; other
fields are ``key=value`` options (one value; several roles are joined with ``+``). A kind
given without levels uses its defaults.

========  ===========  =========  ==========================================================
kind      level key    default    what it does (options)
========  ===========  =========  ==========================================================
noise     ``snr``      20,10,5    white Gaussian noise at this SNR in dB of each channel's
                                  own power (``roles=eeg+eog``: only those roles)
gain      ``x``        0.5,2      multiply by this factor (``roles``)
line      ``hz``       50,60      mains sinusoid of ``amp`` µV (default 20) at this frequency,
                                  random phase; skipped above a channel's Nyquist (``roles``)
wander    ``amp``      100        baseline wander: 3 sinusoids of 0.05-0.5 Hz, peak ``amp``
                                  µV (``roles``)
pops      ``rate``     2          electrode pops per minute: steps of ± ``amp`` µV (default
                                  300) decaying with ``tau`` s (default 0.3) (``roles``)
drop      ``channel``  eog,emg    a role or channel label made flat (``mode=flat``, 0 µV) or
                                  missing (``mode=nan``: the strip stays empty)
size      ``size``     448x448    render the image at another ``WIDTHxHEIGHT`` (no signal
                                  change; see :attr:`Perturbation.image_size`)
========  ===========  =========  ==========================================================

Example: ``noise:snr=20,10,5;gain:0.5,2;line:50;wander;pops;drop:eog,emg;size:448x448``.

Examples
--------
>>> import numpy as np
>>> p = parse_perturb_spec("gain:0.5")[0]
>>> p.label
'gain x0.5'
>>> p.apply_array(np.ones((1, 4)), 100.0, ["eeg"], ["EEG C4-M1"], seed=0)
array([[0.5, 0.5, 0.5, 0.5]])
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import PSGError

__all__ = [
    "PERTURBATION_KINDS",
    "PerturbError",
    "Perturbation",
    "parse_perturb_spec",
    "channel_seed",
    "add_gaussian_noise",
    "scale_gain",
    "add_line_noise",
    "add_baseline_wander",
    "add_electrode_pops",
    "drop_signal",
]

#: kind -> (level key, default levels as text, allowed option keys)
PERTURBATION_KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "noise": ("snr", ("20", "10", "5"), ("roles",)),
    "gain": ("x", ("0.5", "2"), ("roles",)),
    "line": ("hz", ("50", "60"), ("amp", "roles")),
    "wander": ("amp", ("100",), ("roles",)),
    "pops": ("rate", ("2",), ("amp", "tau", "roles")),
    "drop": ("channel", ("eog", "emg"), ("mode",)),
    "size": ("size", ("448x448",), ()),
}

_ROLES = ("eeg", "eog", "emg", "ecg")
_LINE_AMPLITUDE_UV = 20.0
_POP_AMPLITUDE_UV = 300.0
_POP_TAU_S = 0.3
_WANDER_BAND_HZ = (0.05, 0.5)
_WANDER_COMPONENTS = 3
_SIZE = re.compile(r"^(\d+)x(\d+)$")


class PerturbError(PSGError):
    """A perturbation specification or argument that cannot be applied."""


# --------------------------------------------------------------------------- primitives
def channel_seed(seed: int, label: str) -> np.random.SeedSequence:
    """Random stream of one channel: a function of the seed and the channel label only."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise PerturbError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(str(label).encode("utf-8"))])


def _rng(seed: int | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    return np.random.default_rng(channel_seed(seed, ""))


def _as_signal(x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise PerturbError(f"a signal must be 1-D samples, got shape {arr.shape}")
    fs = float(fs)
    if not (math.isfinite(fs) and fs > 0):
        raise PerturbError(f"sampling rate must be positive, got {fs}")
    return arr, fs


def add_gaussian_noise(
    x: np.ndarray, fs: float, snr_db: float, seed: int | np.random.SeedSequence
) -> np.ndarray:
    """Add white Gaussian noise whose power is the signal's variance / 10^(snr/10).

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        Signal in µV (NaN samples are ignored for its power and stay NaN).
    fs : float
        Sampling rate in Hz.
    snr_db : float
        Signal-to-noise ratio in dB.
    seed : int or numpy.random.SeedSequence
        Random stream.
    """
    arr, _ = _as_signal(x, fs)
    if not math.isfinite(snr_db):
        raise PerturbError(f"noise: SNR must be a finite number of dB, got {snr_db}")
    finite = np.isfinite(arr)
    power = float(np.var(arr[finite])) if finite.any() else 0.0
    sigma = math.sqrt(power / 10.0 ** (snr_db / 10.0))
    return arr + _rng(seed).standard_normal(arr.size) * sigma


def scale_gain(x: np.ndarray, fs: float, factor: float) -> np.ndarray:
    """Multiply a signal by ``factor`` (an amplifier calibrated wrongly)."""
    arr, _ = _as_signal(x, fs)
    if not (math.isfinite(factor) and factor > 0):
        raise PerturbError(f"gain: factor must be positive, got {factor}")
    return arr * factor


def add_line_noise(
    x: np.ndarray,
    fs: float,
    freq_hz: float,
    seed: int | np.random.SeedSequence,
    amplitude_uv: float = _LINE_AMPLITUDE_UV,
) -> np.ndarray:
    """Add a mains sinusoid of ``amplitude_uv`` at ``freq_hz`` with a random phase.

    A frequency at or above the channel's Nyquist frequency cannot be in its samples (the
    amplifier's anti-aliasing filter removes it): the signal is then returned unchanged.
    """
    arr, fs = _as_signal(x, fs)
    if not (math.isfinite(freq_hz) and freq_hz > 0):
        raise PerturbError(f"line: frequency must be positive, got {freq_hz}")
    if not (math.isfinite(amplitude_uv) and amplitude_uv >= 0):
        raise PerturbError(f"line: amplitude must be >= 0 µV, got {amplitude_uv}")
    phase = _rng(seed).uniform(0.0, 2.0 * np.pi)
    if freq_hz >= fs / 2:
        return arr.copy()
    t = np.arange(arr.size) / fs
    return arr + amplitude_uv * np.sin(2.0 * np.pi * freq_hz * t + phase)


def add_baseline_wander(
    x: np.ndarray, fs: float, amplitude_uv: float, seed: int | np.random.SeedSequence
) -> np.ndarray:
    """Add slow baseline wander (sweat, respiration): sinusoids of 0.05-0.5 Hz, peak ``amplitude_uv``."""
    arr, fs = _as_signal(x, fs)
    if not (math.isfinite(amplitude_uv) and amplitude_uv >= 0):
        raise PerturbError(f"wander: amplitude must be >= 0 µV, got {amplitude_uv}")
    rng = _rng(seed)
    freqs = rng.uniform(*_WANDER_BAND_HZ, size=_WANDER_COMPONENTS)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=_WANDER_COMPONENTS)
    weights = rng.uniform(0.5, 1.0, size=_WANDER_COMPONENTS)
    t = np.arange(arr.size) / fs
    wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return arr + (wave * (amplitude_uv / peak) if peak > 0 else wave)


def add_electrode_pops(
    x: np.ndarray,
    fs: float,
    rate_per_min: float,
    seed: int | np.random.SeedSequence,
    amplitude_uv: float = _POP_AMPLITUDE_UV,
    tau_s: float = _POP_TAU_S,
) -> np.ndarray:
    """Add electrode pops: sudden steps of ± ``amplitude_uv`` decaying exponentially.

    The number of pops is Poisson with mean ``rate_per_min`` x minutes; onsets are uniform.
    """
    arr, fs = _as_signal(x, fs)
    if not (math.isfinite(rate_per_min) and rate_per_min >= 0):
        raise PerturbError(f"pops: rate must be >= 0 per minute, got {rate_per_min}")
    if not (math.isfinite(tau_s) and tau_s > 0):
        raise PerturbError(f"pops: tau must be positive seconds, got {tau_s}")
    rng = _rng(seed)
    count = int(rng.poisson(rate_per_min * arr.size / fs / 60.0))
    onsets = rng.integers(0, max(arr.size, 1), size=count)
    signs = rng.choice((-1.0, 1.0), size=count)
    length = min(arr.size, int(math.ceil(6 * tau_s * fs)))
    kernel = np.exp(-np.arange(length) / (tau_s * fs))
    out = arr.copy()
    for onset, sign in zip(onsets.tolist(), signs.tolist()):
        stop = min(arr.size, onset + length)
        out[onset:stop] += sign * amplitude_uv * kernel[: stop - onset]
    return out


def drop_signal(x: np.ndarray, fs: float, mode: str = "flat") -> np.ndarray:
    """A channel that stopped recording: all 0 µV (``flat``) or all NaN (``nan``)."""
    arr, _ = _as_signal(x, fs)
    if mode not in ("flat", "nan"):
        raise PerturbError(f"drop: mode must be 'flat' or 'nan', got {mode!r}")
    return np.zeros_like(arr) if mode == "flat" else np.full_like(arr, np.nan)


# --------------------------------------------------------------------------- perturbation
@dataclass(frozen=True)
class Perturbation:
    """One kind at one level, with its options (see the module docstring).

    Attributes
    ----------
    kind : str
        A key of :data:`PERTURBATION_KINDS`.
    level : float or str or tuple
        SNR (dB), gain factor, frequency (Hz), amplitude (µV), rate (per minute), a role or
        channel label (``drop``), or ``(width, height)`` (``size``).
    options : tuple of (key, value)
        ``amp``, ``tau``, ``mode``, ``roles`` (a tuple of roles).
    """

    kind: str
    level: float | str | tuple[int, int]
    options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise PerturbError(
                f"unknown perturbation {self.kind!r}; expected one of {sorted(PERTURBATION_KINDS)}"
            )
        allowed = PERTURBATION_KINDS[self.kind][2]
        for key, _ in self.options:
            if key not in allowed:
                raise PerturbError(
                    f"{self.kind}: unknown option {key!r}; allowed: {', '.join(allowed) or 'none'}"
                )

    def option(self, key: str, default: object = None) -> object:
        """Value of an option, or ``default``."""
        return dict(self.options).get(key, default)

    @property
    def label(self) -> str:
        """Short description: ``"noise snr=10 dB"``, ``"drop eog (flat)"``, ``"size 448x448"``."""
        level = self.level
        if self.kind == "noise":
            text = f"noise snr={level:g} dB"
        elif self.kind == "gain":
            text = f"gain x{level:g}"
        elif self.kind == "line":
            text = f"line {level:g} Hz {float(self.option('amp', _LINE_AMPLITUDE_UV)):g} µV"
        elif self.kind == "wander":
            text = f"wander {level:g} µV"
        elif self.kind == "pops":
            text = f"pops {level:g}/min {float(self.option('amp', _POP_AMPLITUDE_UV)):g} µV"
        elif self.kind == "drop":
            text = f"drop {level} ({self.option('mode', 'flat')})"
        else:
            text = f"size {level[0]}x{level[1]}"
        roles = self.option("roles")
        return f"{text} [{'+'.join(roles)}]" if roles else text

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(width, height)`` to render at, for ``size``; None otherwise."""
        return self.level if self.kind == "size" else None  # type: ignore[return-value]

    def affects(self, role: str, label: str) -> bool:
        """Whether this perturbation changes the samples of a channel of ``role``/``label``."""
        if self.kind == "size":
            return False
        if self.kind == "drop":
            return str(self.level).lower() in (role.lower(), label.lower())
        roles = self.option("roles")
        return roles is None or role.lower() in roles

    def apply(self, x: np.ndarray, fs: float, role: str, label: str, seed: int) -> np.ndarray:
        """Perturb one channel (float64 copy); channels it does not affect come back unchanged.

        Parameters
        ----------
        x : ndarray, shape (n_samples,)
            Samples in µV.
        fs : float
            Sampling rate in Hz.
        role, label : str
            The channel's role (``eeg``...) and label; the label also seeds its stream.
        seed : int
            Non-negative seed of the whole recording.
        """
        arr, fs = _as_signal(x, fs)
        stream = channel_seed(seed, label)
        if not self.affects(role, label):
            return arr.copy()
        level = self.level
        if self.kind == "noise":
            return add_gaussian_noise(arr, fs, float(level), stream)
        if self.kind == "gain":
            return scale_gain(arr, fs, float(level))
        if self.kind == "line":
            amp = float(self.option("amp", _LINE_AMPLITUDE_UV))
            return add_line_noise(arr, fs, float(level), stream, amp)
        if self.kind == "wander":
            return add_baseline_wander(arr, fs, float(level), stream)
        if self.kind == "pops":
            amp = float(self.option("amp", _POP_AMPLITUDE_UV))
            tau = float(self.option("tau", _POP_TAU_S))
            return add_electrode_pops(arr, fs, float(level), stream, amp, tau)
        return drop_signal(arr, fs, str(self.option("mode", "flat")))

    def apply_array(
        self,
        signals: np.ndarray,
        fs: float,
        roles: Sequence[str],
        labels: Sequence[str],
        seed: int,
    ) -> np.ndarray:
        """Perturb ``(n_channels, n_samples)`` signals sharing one rate; returns a new array."""
        arr = np.asarray(signals, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(roles) or len(roles) != len(labels):
            raise PerturbError(
                f"signals {arr.shape} need one role and one label per row "
                f"({len(roles)} roles, {len(labels)} labels)"
            )
        self.check_channels(roles, labels)
        return np.stack(
            [self.apply(row, fs, r, lab, seed) for row, r, lab in zip(arr, roles, labels)]
        )

    def apply_mapping(
        self,
        signals: Mapping[str, np.ndarray],
        fs: Mapping[str, float],
        roles: Mapping[str, str],
        seed: int,
    ) -> dict[str, np.ndarray]:
        """Perturb a ``label -> samples`` recording (per-channel rates and roles)."""
        missing = [label for label in signals if label not in fs or label not in roles]
        if missing:
            raise PerturbError(f"no rate or role for channels {missing}")
        self.check_channels([roles[k] for k in signals], list(signals))
        return {k: self.apply(v, fs[k], roles[k], k, seed) for k, v in signals.items()}

    def check_channels(self, roles: Sequence[str], labels: Sequence[str]) -> None:
        """Refuse a ``drop`` that names no channel of the recording."""
        if self.kind == "drop" and not any(self.affects(r, lab) for r, lab in zip(roles, labels)):
            raise PerturbError(
                f"drop {self.level}: no channel with that role or label among {list(labels)}"
            )


def _number(kind: str, text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PerturbError(f"{kind}: {text!r} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0) or value < 0 and kind != "noise":
        raise PerturbError(f"{kind}: {text!r} is out of range")
    return value


def _level(kind: str, text: str) -> float | str | tuple[int, int]:
    if kind == "size":
        match = _SIZE.match(text.lower())
        if not match:
            raise PerturbError(f"size: {text!r} is not WIDTHxHEIGHT (e.g. 448x448)")
        return int(match[1]), int(match[2])
    if kind == "drop":
        if not re.fullmatch(r"[\w .+-]+", text):
            raise PerturbError(f"drop: {text!r} is not a role or channel label")
        return text.lower() if text.lower() in _ROLES else text
    return _number(kind, text, positive=kind in ("gain", "line"))


def _option(kind: str, key: str, text: str) -> object:
    if key == "roles":
        roles = tuple(r.strip().lower() for r in text.split("+") if r.strip())
        bad = [r for r in roles if r not in _ROLES]
        if not roles or bad:
            raise PerturbError(
                f"{kind}: roles={text!r}: expected roles from {_ROLES} joined by '+'"
            )
        return roles
    if key == "mode":
        if text not in ("flat", "nan"):
            raise PerturbError(f"{kind}: mode={text!r}: expected flat or nan")
        return text
    return _number(f"{kind} {key}", text, positive=key == "tau")


def parse_perturb_spec(text: str) -> list[Perturbation]:
    """Parse a perturbation specification (grammar in the module docstring).

    Returns
    -------
    list of Perturbation
        One per kind and level, in the order written.

    Raises
    ------
    PerturbError
        For an empty specification, an unknown kind or option, or a bad value.

    Examples
    --------
    >>> [p.label for p in parse_perturb_spec("noise:snr=10,5;drop:eog/mode=nan")]
    ['noise snr=10 dB', 'noise snr=5 dB', 'drop eog (nan)']
    """
    if not isinstance(text, str) or not text.strip():
        raise PerturbError("empty perturbation specification")
    out: list[Perturbation] = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        kind, _, rest = item.partition(":")
        kind = kind.strip().lower()
        if kind not in PERTURBATION_KINDS:
            raise PerturbError(
                f"unknown perturbation {kind!r} in {item!r}; expected one of "
                f"{', '.join(PERTURBATION_KINDS)}"
            )
        level_key, defaults, _ = PERTURBATION_KINDS[kind]
        levels: list[str] | None = None
        options: list[tuple[str, object]] = []
        for part in (p.strip() for p in rest.split("/") if rest.strip()):
            key, eq, values = part.partition("=")
            key = key.strip().lower()
            if not eq or key == level_key:
                if levels is not None:
                    raise PerturbError(f"{item!r}: levels given twice")
                levels = [v.strip() for v in (values if eq else part).split(",") if v.strip()]
                if not levels:
                    raise PerturbError(f"{item!r}: no levels")
            else:
                if key in dict(options):
                    raise PerturbError(f"{item!r}: option {key!r} given twice")
                if key not in PERTURBATION_KINDS[kind][2]:
                    raise PerturbError(
                        f"{item!r}: unknown option {key!r}; allowed: "
                        f"{', '.join(PERTURBATION_KINDS[kind][2]) or 'none'}"
                    )
                options.append((key, _option(kind, key, values.strip())))
        for value in levels if levels is not None else list(defaults):
            out.append(Perturbation(kind, _level(kind, value), tuple(options)))
    if not out:
        raise PerturbError(f"perturbation specification {text!r} lists nothing")
    return out

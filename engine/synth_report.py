"""Synthetic versus real per-stage EEG spectra: the calibration check of :mod:`engine.synth`.

``psgvlm synth-report --real /path/to/prerau`` generates synthetic nights, filters the
synthetic ``EEG C4-M1`` and the real single-channel Prerau segment the same way (the
default EEG pre-processing of :mod:`engine.preprocess`: 0.3-35 Hz, 100 Hz), averages
Welch spectra (4-s Hann windows, scipy.signal) over the epochs of each stage and writes

- ``synth_report.png``: one panel per stage, log power of both,
- ``synth_report.json``: per-stage relative band powers (delta 0.5-4, theta 4-8,
  alpha 8-12, sigma 11-16, beta 16-30 Hz, each divided by the 0.5-30 Hz power) and
  epoch counts, for synthetic and real.

The real segment (``segment_data.csv``: one uV sample per line at 100 Hz;
``segment_stages.csv``: ``Time,Stage`` stage changes, codes 5 W, 4 REM, 3 N1, 2 N2,
1 N3, on a 30-s grid starting at 10.01 s) is one EEG channel of a clinical recording
from the Prerau lab (BSD-3-Clause, preraulab/pyDYNAM-O).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
from scipy import signal as sps

from .io.prerau import load_prerau
from .preprocess import preprocess
from .stages import STAGE_NAMES, Stage
from .synth import EEG_CHANNELS, EPOCH_LENGTH, SynthError, synth_night

__all__ = [
    "BANDS",
    "stage_spectra",
    "relative_band_powers",
    "synth_report",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: Frequency bands (Hz) of the relative band powers.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 12.0),
    "sigma": (11.0, 16.0),
    "beta": (16.0, 30.0),
}
_TOTAL_BAND = (0.5, 30.0)
_ANALYSIS_FS = 100.0
_WELCH_SECONDS = 4.0
_PRERAU_FS = 100.0
_PRERAU_GRID_START = 10.01
_PRERAU_CODES = {5: Stage.W, 4: Stage.R, 3: Stage.N1, 2: Stage.N2, 1: Stage.N3}


def stage_spectra(
    signal: np.ndarray, fs: float, stages: np.ndarray, grid_start: float = 0.0
) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, int]]]:
    """Mean Welch spectrum of the epochs of each stage, after EEG pre-processing.

    Parameters
    ----------
    signal : numpy.ndarray
        Raw EEG in uV.
    fs : float
        Its rate.
    stages : numpy.ndarray
        Stage id per epoch; epoch ``k`` starts at ``grid_start + 30 k`` s.
    grid_start : float
        Seconds before the first epoch.

    Returns
    -------
    freqs : numpy.ndarray
    spectra : dict
        Stage id -> (mean PSD in uV^2/Hz, number of epochs), for stages present.
    """
    x = preprocess(signal, fs, "eeg", target_fs=_ANALYSIS_FS)
    per_epoch = int(round(EPOCH_LENGTH * _ANALYSIS_FS))
    first = int(round(grid_start * _ANALYSIS_FS))
    n = min(len(stages), (x.size - first) // per_epoch)
    epochs = x[first : first + n * per_epoch].reshape(n, per_epoch)
    freqs, psd = sps.welch(epochs, _ANALYSIS_FS, nperseg=int(_WELCH_SECONDS * _ANALYSIS_FS))
    stages = np.asarray(stages[:n])
    spectra = {
        int(s): (psd[stages == s].mean(axis=0), int((stages == s).sum()))
        for s in np.unique(stages)
        if 0 <= s < len(STAGE_NAMES)
    }
    return freqs, spectra


def relative_band_powers(freqs: np.ndarray, psd: np.ndarray) -> dict[str, float]:
    """Power of each of :data:`BANDS` divided by the 0.5-30 Hz power."""
    total = psd[(freqs >= _TOTAL_BAND[0]) & (freqs < _TOTAL_BAND[1])].sum()
    return {
        name: float(psd[(freqs >= lo) & (freqs < hi)].sum() / total) if total > 0 else 0.0
        for name, (lo, hi) in BANDS.items()
    }


def _table(result: dict) -> str:
    lines = [f"{'stage':<6}{'source':<7}{'n':>5}  " + "".join(f"{b:>8}" for b in BANDS)]
    for name in STAGE_NAMES:
        for source in ("synthetic", "real"):
            row = result.get(source, {}).get(name)
            if row:
                bands = "".join(f"{row['relative'][b]:>8.3f}" for b in BANDS)
                lines.append(f"{name:<6}{source[:5]:<7}{row['n_epochs']:>5}  {bands}")
    return "\n".join(lines)


def synth_report(
    out: str | os.PathLike,
    real: str | os.PathLike | None = None,
    seed: int = 0,
    hours: float = 8.0,
    nights: int = 1,
    randomize: bool = False,
    channel: str = "EEG C4-M1",
) -> dict:
    """Write ``synth_report.png`` and ``synth_report.json`` into ``out``.

    Parameters
    ----------
    out : path
        Output folder (created).
    real : path, optional
        Folder of the Prerau segment; without it only the synthetic curves are drawn.
    seed, hours, nights : int, float, int
        Synthetic nights ``seed .. seed + nights - 1`` of ``hours`` each.
    randomize : bool
        Domain-randomised subjects instead of the canonical one.
    channel : str
        Synthetic EEG channel compared with the real one.

    Returns
    -------
    dict
        The JSON written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if channel not in EEG_CHANNELS:
        raise SynthError(f"channel must be one of {EEG_CHANNELS}, got {channel!r}")
    if nights < 1:
        raise SynthError(f"nights must be at least 1, got {nights}")
    sums: dict[int, list] = {}
    freqs = np.empty(0)
    for night_seed in range(seed, seed + nights):
        night = synth_night(night_seed, hours=hours, channels=(channel,), randomize=randomize)
        freqs, spectra = stage_spectra(night.signals[channel], night.fs[channel], night.stages)
        for stage, (psd, n) in spectra.items():
            total = sums.setdefault(stage, [np.zeros_like(psd), 0])
            total[0] += psd * n
            total[1] += n
    curves = {"synthetic": {s: (p / n, n) for s, (p, n) in sums.items()}}
    if real is not None:
        recording = load_prerau(real)
        (label,) = recording.signals
        hypnogram = recording.hypnogram
        freqs_real, curves["real"] = stage_spectra(
            recording.signals[label], recording.fs[label], hypnogram.stages, hypnogram.onsets[0]
        )
        if not np.allclose(freqs_real, freqs):
            raise SynthError("synthetic and real spectra have different frequency grids")
    result: dict = {
        "bands": {k: list(v) for k, v in BANDS.items()},
        "total_band": list(_TOTAL_BAND),
        "settings": {
            "channel": channel,
            "seed": seed,
            "nights": nights,
            "hours": hours,
            "randomize": randomize,
            "real": str(real) if real is not None else None,
            "preprocessing": "engine.preprocess eeg 0.3-35 Hz, 100 Hz",
            "welch_seconds": _WELCH_SECONDS,
        },
    }
    for source, by_stage in curves.items():
        result[source] = {
            STAGE_NAMES[s]: {"n_epochs": n, "relative": relative_band_powers(freqs, psd)}
            for s, (psd, n) in sorted(by_stage.items())
        }

    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SynthError(f"cannot create report folder {folder}: {err}") from err
    fig, axes = plt.subplots(1, len(STAGE_NAMES), figsize=(4 * len(STAGE_NAMES), 3.6), sharey=True)
    keep = (freqs >= 0.3) & (freqs <= 40.0)
    for stage, ax in enumerate(axes):
        for source, style in (("synthetic", "C0-"), ("real", "C3-")):
            if stage in curves.get(source, {}):
                psd, n = curves[source][stage]
                decibels = 10 * np.log10(np.maximum(psd[keep], 1e-12))
                ax.plot(freqs[keep], decibels, style, label=f"{source} (n={n})")
        ax.set_title(STAGE_NAMES[stage])
        ax.set_xlabel("Hz")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    axes[0].set_ylabel("PSD (dB re 1 uV^2/Hz)")
    fig.suptitle(f"{channel} synthetic vs real, 0.3-35 Hz band-pass")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.84, wspace=0.08)
    png, js = folder / "synth_report.png", folder / "synth_report.json"
    for final, write in (
        (png, lambda p: fig.savefig(p, dpi=100, format="png")),
        (js, lambda p: p.write_text(json.dumps(result, indent=1))),
    ):
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        write(temporary)
        os.replace(temporary, final)
    plt.close(fig)
    result["table"] = _table(result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm synth-report``."""
    parser.add_argument("--out", type=Path, default=Path("synth_report"), help="output folder")
    parser.add_argument("--real", type=Path, help="folder of the real Prerau segment")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first night")
    parser.add_argument("--hours", type=float, default=8.0, help="hours per synthetic night")
    parser.add_argument("--nights", type=int, default=1, help="number of synthetic nights")
    parser.add_argument("--randomize", action="store_true", help="domain-randomised subjects")
    parser.add_argument("--channel", default="EEG C4-M1", help="synthetic channel to compare")


def run(args: argparse.Namespace) -> int:
    """Write the report and print the relative band power table."""
    result = synth_report(
        args.out, args.real, args.seed, args.hours, args.nights, args.randomize, args.channel
    )
    print(result["table"])
    logger.info("wrote %s", Path(args.out) / "synth_report.png")
    return 0

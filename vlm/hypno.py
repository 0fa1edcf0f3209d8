"""Whole-night outputs: sleep statistics, hypnogram + hypnodensity plot, CSV and EDF+ files.

:func:`sleep_statistics` follows the definitions of YASA's ``Hypnogram.sleep_statistics``
(0.8) exactly, on an epoch sequence assumed to span time in bed (lights out to lights on):

- ``TIB``: all epochs; ``SPT``: first to last sleep epoch (N1, N2, N3, R) inclusive;
- ``WASO``: W epochs inside SPT; ``TST``: sleep epochs inside SPT (UNK epochs, e.g.
  movement or unscored, count in neither);
- ``SE`` = 100 TST / TIB; ``SME`` = 100 TST / SPT; ``SFI`` = awakenings per hour of TST,
  an awakening being a sleep epoch directly followed by a W epoch (``n_awakenings``, the
  one statistic YASA does not report by itself);
- ``SOL``: start to the first sleep epoch; ``SOL_5min``: start to the first run of at
  least 5 minutes of uninterrupted sleep; ``Lat_REM``: start to the first R epoch (the
  AASM REM latency counts from sleep onset: ``Lat_REM - SOL``);
- ``WAKE``, ``N1``, ``N2``, ``N3``, ``REM`` (and ``UNS`` when UNK epochs exist) in minutes;
  ``%N1`` ... ``%REM`` in percent of TST.

Minutes everywhere except SE, SME, SFI, the percentages and ``n_awakenings``; values are
rounded to 4 decimals as YASA does; undefined values (no sleep) are NaN.

No torch here: this module is used by ``psgvlm stage`` and by reports alike.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from engine.errors import HypnogramError
from engine.stages import STAGE_NAMES, Stage, stage_name

__all__ = [
    "EDF_LABELS",
    "STAT_KEYS",
    "sleep_statistics",
    "write_stage_csv",
    "write_edf_annotations",
    "plot_hypnogram",
]

#: EDF+ annotation text per stage id (read back by ``engine.io.hypnogram``).
EDF_LABELS: dict[int, str] = {
    int(Stage.UNK): "Sleep stage ?",
    int(Stage.W): "Sleep stage W",
    int(Stage.N1): "Sleep stage N1",
    int(Stage.N2): "Sleep stage N2",
    int(Stage.N3): "Sleep stage N3",
    int(Stage.R): "Sleep stage R",
}

#: Keys of :func:`sleep_statistics`, in YASA's order (``UNS`` only when UNK epochs exist).
STAT_KEYS: tuple[str, ...] = (
    "TIB", "SPT", "WASO", "TST", "SE", "SME", "SFI", "n_awakenings", "SOL", "SOL_5min",
    "Lat_REM", "WAKE", "N1", "N2", "N3", "REM", "UNS", "%N1", "%N2", "%N3", "%REM",
)  # fmt: skip

_SLEEP = (int(Stage.N1), int(Stage.N2), int(Stage.N3), int(Stage.R))
_MINUTES_NAMES = {"WAKE": Stage.W, "N1": Stage.N1, "N2": Stage.N2, "N3": Stage.N3, "REM": Stage.R}
_PERSISTENT_SLEEP_MIN = 5.0
# Hypnogram rows from top to bottom, as clinical hypnograms draw them.
_PLOT_ORDER = (int(Stage.W), int(Stage.R), int(Stage.N1), int(Stage.N2), int(Stage.N3))
_COLOURS = {"W": "#f4a259", "N1": "#9ad1d4", "N2": "#3c8dbc", "N3": "#1b3a6b", "R": "#d1495b"}


def _validate_stages(stages: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(stages)
    if arr.ndim != 1:
        raise HypnogramError(f"stages must be a 1-D sequence of stage ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise HypnogramError(f"stages must be integer stage ids (-1..4), got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.setdiff1d(np.unique(arr), [int(s) for s in Stage])
    if bad.size:
        raise HypnogramError(f"unknown stage ids {bad.tolist()}; expected -1 (UNK) or 0-4")
    return arr


def sleep_statistics(stages: Sequence[int] | np.ndarray, epoch_length: float = 30.0) -> dict:
    """Standard sleep statistics of a hypnogram (YASA's definitions, see module docstring).

    Parameters
    ----------
    stages : sequence of int
        One stage id per consecutive epoch (-1 UNK, 0 W, 1 N1, 2 N2, 3 N3, 4 R), cropped to
        time in bed.
    epoch_length : float
        Seconds per epoch.

    Returns
    -------
    dict
        The keys of :data:`STAT_KEYS` (``UNS`` only when there are UNK epochs).

    Raises
    ------
    HypnogramError
        For an empty hypnogram or unknown stage ids.

    Examples
    --------
    >>> stats = sleep_statistics([0, 0, 1, 2, 2, 4, 0], epoch_length=30.0)
    >>> stats["TIB"], stats["TST"], stats["SOL"], stats["n_awakenings"]
    (3.5, 2.0, 1.0, 1)
    """
    hypno = _validate_stages(stages)
    if hypno.size == 0:
        raise HypnogramError("cannot compute sleep statistics of an empty hypnogram")
    if not (math.isfinite(epoch_length) and epoch_length > 0):
        raise HypnogramError(f"epoch_length must be a positive number of seconds: {epoch_length}")
    per_min = 60.0 / epoch_length  # epochs per minute
    n = hypno.size
    is_sleep = np.isin(hypno, _SLEEP)
    idx_sleep = np.flatnonzero(is_sleep)
    has_sleep = idx_sleep.size > 0
    first, last = (int(idx_sleep[0]), int(idx_sleep[-1])) if has_sleep else (0, n)
    spt = slice(first, last + 1)
    stats: dict[str, float] = {"TIB": n / per_min}
    stats["SPT"] = (last + 1 - first) / per_min if has_sleep else 0.0
    stats["WASO"] = np.sum(hypno[spt] == int(Stage.W)) / per_min if has_sleep else math.nan
    stats["TST"] = np.sum(is_sleep[spt]) / per_min
    stats["SE"] = 100 * stats["TST"] / stats["TIB"]
    awakenings = int(np.count_nonzero(is_sleep[:-1] & (hypno[1:] == int(Stage.W))))
    if stats["SPT"] == 0:
        stats["SME"] = stats["SFI"] = math.nan
    else:
        stats["SME"] = 100 * stats["TST"] / stats["SPT"]
        stats["SFI"] = awakenings / (stats["TST"] / 60)
    stats["n_awakenings"] = awakenings
    stats["SOL"] = first / per_min if stats["TST"] > 0 else math.nan
    min_run = int(math.ceil(_PERSISTENT_SLEEP_MIN * per_min - 1e-9))
    stats["SOL_5min"] = math.nan
    # runs of consecutive sleep epochs
    edges = np.diff(np.concatenate([[0], is_sleep.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    long_runs = starts[(ends - starts) >= min_run]
    if long_runs.size:
        stats["SOL_5min"] = int(long_runs[0]) / per_min
    rem = np.flatnonzero(hypno == int(Stage.R))
    stats["Lat_REM"] = int(rem[0]) / per_min if rem.size else math.nan
    for name, stage in _MINUTES_NAMES.items():
        stats[name] = np.sum(hypno == int(stage)) / per_min
    unscored = int(np.sum(hypno == int(Stage.UNK)))
    if unscored:
        stats["UNS"] = unscored / per_min
    for name in ("N1", "N2", "N3", "REM"):
        stats[f"%{name}"] = 100 * stats[name] / stats["TST"] if stats["TST"] > 0 else math.nan
    return {
        key: (stats[key] if key == "n_awakenings" else round(float(stats[key]), 4))
        for key in STAT_KEYS
        if key in stats
    }


def _check_rows(onsets, durations, stages, probabilities=None):
    onsets = np.asarray(onsets, dtype=np.float64).reshape(-1)
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    stages = _validate_stages(stages)
    if not (onsets.size == durations.size == stages.size):
        raise HypnogramError(
            f"onsets, durations and stages differ in length "
            f"({onsets.size}, {durations.size}, {stages.size})"
        )
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (stages.size, len(STAGE_NAMES)):
            raise HypnogramError(
                f"probabilities must be ({stages.size}, {len(STAGE_NAMES)}), "
                f"got {probabilities.shape}"
            )
    return onsets, durations, stages, probabilities


def write_stage_csv(
    path: str | os.PathLike,
    onsets: Sequence[float],
    durations: Sequence[float],
    stages: Sequence[int],
    probabilities: np.ndarray,
) -> Path:
    """Write ``onset,duration,stage,p_W,p_N1,p_N2,p_N3,p_R`` rows (seconds, stage names).

    The file is also a ``csv`` hypnogram for :func:`engine.io.hypnogram.read_hypnogram`.
    """
    onsets, durations, stages, probabilities = _check_rows(onsets, durations, stages, probabilities)
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["onset", "duration", "stage", *(f"p_{name}" for name in STAGE_NAMES)])
        for onset, duration, stage, probs in zip(onsets, durations, stages, probabilities):
            writer.writerow(
                [f"{onset:.4f}", f"{duration:.4f}", stage_name(int(stage)),
                 *(f"{p:.6f}" for p in probs)]
            )  # fmt: skip
    return path


def write_edf_annotations(
    path: str | os.PathLike,
    onsets: Sequence[float],
    durations: Sequence[float],
    stages: Sequence[int],
    start_time: datetime | None = None,
) -> Path:
    """Write one EDF+ annotation per epoch (``Sleep stage W/N1/N2/N3/R``) with pyedflib.

    Parameters
    ----------
    path : path
        Output ``.edf`` file (annotations only, no signals), like a Sleep-EDF hypnogram.
    onsets, durations : sequence of float
        Seconds from the recording start (stored to 0.1 ms, EDF+'s resolution).
    stages : sequence of int
        Stage ids; UNK is written as ``Sleep stage ?``.
    start_time : datetime, optional
        The recording's start, so that readers line the annotations up with it.
    """
    from engine.io.hypnogram import write_annotations_edf

    onsets, durations, stages, _ = _check_rows(onsets, durations, stages)
    labels = [EDF_LABELS[int(stage)] for stage in stages]
    return write_annotations_edf(path, list(zip(onsets, durations, labels)), start_time)


def plot_hypnogram(
    path: str | os.PathLike,
    onsets: Sequence[float],
    stages: Sequence[int],
    probabilities: np.ndarray,
    durations: Sequence[float] | None = None,
    reference: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Hypnogram (top) over the hypnodensity, the stacked stage probabilities (bottom).

    Parameters
    ----------
    path : path
        PNG to write (matplotlib Agg).
    onsets : sequence of float
        Epoch onsets in seconds from the recording start.
    stages : sequence of int
        Predicted stage ids.
    probabilities : ndarray, shape (n, 5)
        Per-epoch probabilities of W, N1, N2, N3, R.
    durations : sequence of float, optional
        Epoch lengths (default 30 s).
    reference : sequence of int, optional
        A scorer's stage ids on the same epochs (UNK = -1 left blank), drawn in grey.
    title : str
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if durations is None:
        durations = np.full(len(stages), 30.0)
    onsets, durations, stages, probabilities = _check_rows(onsets, durations, stages, probabilities)
    if stages.size == 0:
        raise HypnogramError("nothing to plot: no epochs")
    level = {stage: len(_PLOT_ORDER) - 1 - i for i, stage in enumerate(_PLOT_ORDER)}
    hours_start = onsets / 3600.0
    hours_end = (onsets + durations) / 3600.0
    edges = np.append(hours_start, hours_end[-1])

    def steps(ids: np.ndarray) -> np.ndarray:
        values = np.array([level.get(int(s), np.nan) for s in ids], dtype=float)
        return np.append(values, values[-1])

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 4.8), sharex=True, gridspec_kw={"height_ratios": [1, 1.2]}
    )
    if reference is not None:
        ref = _validate_stages(reference)
        if ref.size != stages.size:
            raise HypnogramError(f"reference has {ref.size} epochs, predictions {stages.size}")
        top.step(edges, steps(ref), where="post", color="0.6", lw=2.5, label="reference")
    predicted = steps(stages)
    top.step(edges, predicted, where="post", color="black", lw=1.0, label="predicted")
    rem = np.where(predicted == level[int(Stage.R)], predicted, np.nan)
    top.step(edges, rem, where="post", color=_COLOURS["R"], lw=3.0)
    top.set_yticks([level[s] for s in _PLOT_ORDER], [stage_name(s) for s in _PLOT_ORDER])
    top.set_ylim(-0.5, len(_PLOT_ORDER) - 0.5)
    top.set_ylabel("stage")
    if reference is not None:
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    if title:
        top.set_title(title)
    cumulative = np.zeros(stages.size)
    for k, name in enumerate(STAGE_NAMES):
        upper = cumulative + probabilities[:, k]
        bottom.fill_between(
            edges, np.append(cumulative, cumulative[-1]), np.append(upper, upper[-1]),
            step="post", color=_COLOURS[name], label=name, lw=0,
        )  # fmt: skip
        cumulative = upper
    bottom.set_ylim(0, 1)
    bottom.set_xlim(edges[0], edges[-1])
    bottom.set_ylabel("probability")
    bottom.set_xlabel("hours from recording start")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

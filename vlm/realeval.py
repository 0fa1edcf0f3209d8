"""Stage real recordings directly with a fine-tuned model, beside YASA on the same epochs.

``psgvlm eval RECORDING... --model BASE --adapter DIR --out DIR`` (the recording path
of :mod:`vlm.evaluate`) reads each recording and its hypnogram, renders every scored
epoch exactly as the model's training shards were rendered (montage, preprocessing, image
size, scales, context, encoding: read from the first sample of the training shards), scores
the five stage answers with :func:`vlm.evaluate.score_candidates`, and compares with the
scorer on the **scorer's own epoch grid**. Inputs are EDF files, folders, globs, dataset
specs (``sleep-edf:DIR``..., see :func:`engine.io.datasets.find_pairs`) and ``prerau:DIR``
(:func:`engine.io.prerau.load_prerau`).

Epoch grids. The model always sees the window it was trained on (``(2 k + 1) x 30 s`` with
context ``k``) centred on the scored epoch. On a 30-s grid that is the epoch itself (plus
its neighbours); on a 20-s grid (some MASS subsets) it is the 20-s epoch with 5 s of
signal on each side, and the prediction is the 20-s epoch's.

Montage-specific models. Several adapters may be given (``--adapter A --adapters B C``);
each recording is staged by the model whose montage it can fill with the most channels
(:func:`pick_model` on :func:`available_roles`): an EEG-only recording goes to the
EEG-only model, a full PSG to the EEG+EOG+EMG model. Ensembles are spelled as in
``psgvlm stage``, ``ask`` and ``chat``: ``--adapter A --ensemble B C`` makes A, B and C
members of one ensemble (same montage, e.g. the same configuration trained on other
synthetic subjects and seeds): every recording is staged by all of them and their
per-epoch stage probabilities are averaged.

Peer: YASA (``--peers yasa``; the ``peers`` extra). ``yasa.SleepStaging`` runs on the same
recording and is compared on the same epochs. Its limits, which this module does not hide:

- it needs a sampling rate above 80 Hz (it refuses lower rates; the report says so);
- it scores consecutive 30-s epochs from the first sample only: the signal is therefore
  cropped to start at the first scored epoch's onset, so that YASA's epochs coincide with
  a 30-s scorer grid; on another grid each scorer epoch takes the YASA epoch holding its
  midpoint;
- its features are smoothed over 7.5 min and normalised over the whole recording, so it is
  meant for full nights: it is always given the whole recording, even when only some
  epochs are compared (``--epochs``);
- it uses one EEG channel here (the model's first EEG channel, unfiltered), not EOG/EMG.

Outputs in ``--out``: ``metrics.json`` (per model/peer and per recording), ``metrics.md``
(side-by-side table), ``predictions.csv`` and ``confusion.png`` (+ ``confusion-yasa.png``).

Post-hoc smoothing (``--smooth hmm``), reported beside the raw per-epoch figures, never
instead of them: each night's probability vectors are decoded by Viterbi with a stage
transition matrix counted on :func:`engine.synth.synth_hypnogram` nights only
(:func:`synthetic_stage_hmm`; nothing is estimated from the evaluated recordings), after
dividing out the class prior the model was trained with (:func:`training_class_prior`).
The column is ``model+hmm``; ``predictions.csv`` gains ``model_hmm``. Known bias: dividing by
the training prior multiplies N1 (~5 % of synthetic epochs) about tenfold against N2, and
on the real Prerau segment it lowered the accuracy of most models by turning light N2
into N1 runs, while it usually helped REM (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ChannelNotFoundError, DatasetError, ModelError
from engine.io.hypnogram import Hypnogram
from engine.io.prerau import ArrayRecording, load_prerau
from engine.montage import ALIASES, ROLES, Montage, resolve_montage
from engine.stages import STAGE_NAMES, Stage, to_stage

from .render_setup import RenderConfig, find_render_setup, training_config
from .stage import add_ensemble_argument

__all__ = [
    "PEERS",
    "StagingModel",
    "PeerResult",
    "SMOOTHERS",
    "StageHMM",
    "synthetic_stage_hmm",
    "training_class_prior",
    "viterbi_stages",
    "available_roles",
    "pick_model",
    "load_recordings",
    "model_windows",
    "epoch_source",
    "stage_recording",
    "yasa_stage",
    "comparison_markdown",
    "add_recording_arguments",
    "run_recordings",
]

logger = logging.getLogger(__name__)

#: Peers that ``--peers`` accepts.
PEERS: tuple[str, ...] = ("yasa",)
_PRERAU_PREFIX = "prerau:"
_YASA_MIN_FS = 80.0
_YASA_EPOCH = 30.0
#: Post-hoc smoothers of a night's per-epoch probabilities that ``--smooth`` accepts.
SMOOTHERS: tuple[str, ...] = ("none", "hmm")


# ----------------------------------------------------------------------------------------
# How the model's training images were made
# ----------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------
# Models and which recording each one stages
# ----------------------------------------------------------------------------------------
@dataclass
class StagingModel:
    """A base model + adapter and the setup its training images were rendered with.

    Attributes
    ----------
    base : str
        Base model id or directory (``tiny:qwen2vl`` is resolved in the tiny-model cache).
    adapter : str or None
        LoRA adapter directory (None: zero-shot).
    setup : vlm.stage.RenderConfig
    name : str
        Short name for reports (the adapter's run directory).
    """

    base: str
    adapter: str | None
    setup: RenderConfig
    name: str = ""
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def roles(self) -> tuple[str, ...]:
        """Roles of the montage this model reads."""
        return tuple(self.setup.roles)

    def load(self, device: str, quantization: str | None = None) -> tuple[Any, Any]:
        """``(model, processor)``, loaded once."""
        if self._loaded is None:
            from .model import load_model_and_processor

            self._loaded = load_model_and_processor(
                _resolve_base(self.base, self.adapter, self.setup),
                adapter=self.adapter,
                quantization=quantization,
                device=device,
            )[:2]
        return self._loaded


def _resolve_base(base: str, adapter: str | None, setup: RenderConfig) -> str:
    """Turn ``tiny:FAMILY`` into the built tiny model the adapter was trained on."""
    from .tiny import TINY_PREFIX, resolve_tiny_model

    if not base.startswith(TINY_PREFIX):
        return base
    cache = "~/.cache/psgvlm/tiny"
    spec = setup.spec()
    size = (spec.width, spec.height)
    found = training_config(adapter) if adapter else None
    if found is not None:
        cache = str(found[1].get("tiny_cache_dir", cache))
        text = str(found[1].get("image_size", f"{size[0]}x{size[1]}")).lower()
        size = tuple(int(v) for v in text.split("x"))  # type: ignore[assignment]
    return resolve_tiny_model(base, Path(cache).expanduser(), size)


def available_roles(labels: Iterable[str]) -> Counter[str]:
    """How many channels of each role a recording offers, by the montage alias table.

    A label counts for a role when it spells, or is an alias of, one of that role's
    derivations in :data:`engine.montage.ALIASES` (``EEG``, ``EEG C4-A1``, ``EOG(L)``,
    ``EMG chin``...). Fallbacks are not used: they would count one label for many names.

    Examples
    --------
    >>> dict(available_roles(["EEG Fpz-Cz", "EOG horizontal", "EMG submental"]))
    {'eeg': 1, 'eog': 1, 'emg': 1}
    """
    counts: Counter[str] = Counter()
    for label in labels:
        for name, (role, _) in ALIASES.items():
            try:
                hit = resolve_montage(f"{role}={name}", [label])[0]
            except ChannelNotFoundError:
                continue
            if hit.via in ("exact", "alias"):
                counts[role] += 1
                break
    return Counter({r: counts[r] for r in ROLES if counts[r]})


def pick_model(
    available: Mapping[str, int] | Iterable[str], models: Mapping[str, Sequence[str]]
) -> str:
    """The model whose montage a recording can fill, preferring the one that reads the most.

    Parameters
    ----------
    available : mapping or iterable
        Channels per role (``{"eeg": 2, "eog": 1}``, e.g. from :func:`available_roles`) or
        an iterable of roles, one entry per channel.
    models : mapping
        Model name -> roles of its montage, one entry per image row.

    Returns
    -------
    str
        The name of the model whose role counts all fit in ``available`` and that uses
        the most channels; ties go to the model listed first.

    Raises
    ------
    ChannelNotFoundError
        When no model's montage fits.

    Examples
    --------
    >>> models = {"eeg": ["eeg"], "psg": ["eeg", "eog", "emg"]}
    >>> pick_model(["eeg"], models), pick_model(["eeg", "eog", "emg", "ecg"], models)
    ('eeg', 'psg')
    """
    have = Counter(available) if not isinstance(available, Mapping) else Counter(dict(available))
    if not models:
        raise ModelError("no models to choose from")
    best, best_size = None, -1
    for name, roles in models.items():
        need = Counter(roles)
        if all(have[r] >= n for r, n in need.items()) and len(roles) > best_size:
            best, best_size = name, len(roles)
    if best is None:
        wanted = "; ".join(f"{n}: {'+'.join(r)}" for n, r in models.items())
        offered = ", ".join(f"{r} x{n}" for r, n in have.items() if n) or "nothing usable"
        raise ChannelNotFoundError(
            f"no model's montage fits the recording ({offered}); models: {wanted}"
        )
    return best


# ----------------------------------------------------------------------------------------
# Recordings
# ----------------------------------------------------------------------------------------
@dataclass
class _EDFInput:
    """An EDF recording + hypnogram whose channels are read when a model is chosen."""

    dataset: str
    recording: str
    psg_path: Path
    hypnogram: Hypnogram
    labels: list[str]

    def load(self, labels: Sequence[str]) -> ArrayRecording:
        from engine.io.edf import open_recording

        with open_recording(self.psg_path) as rec:
            signals = {label: rec.read(label) for label in labels}
            rates = {label: rec.channel(label).fs for label in labels}
        return ArrayRecording(
            self.dataset, self.recording, signals, rates, self.hypnogram, self.psg_path
        )


def _edf_input(
    dataset: str, recording: str, psg: Path, hypnogram_path: Path | Hypnogram, scorer: int = 1
) -> _EDFInput:
    from engine.io.edf import open_recording
    from engine.io.hypnogram import read_hypnogram

    hypnogram = (
        hypnogram_path
        if isinstance(hypnogram_path, Hypnogram)
        else read_hypnogram(hypnogram_path, scorer=scorer, signal_path=psg)
    )
    with open_recording(psg) as rec:
        labels = rec.labels
        if hypnogram.start_time is not None:
            offset = (hypnogram.start_time - rec.start_time).total_seconds()
            if offset:
                hypnogram = hypnogram.shifted(offset)
    if not hypnogram.is_epoched:
        hypnogram = hypnogram.to_epochs()
    return _EDFInput(dataset, recording, psg, hypnogram, labels)


def load_recordings(
    inputs: Sequence[str], hypnogram: str | None = None, scorer: int = 1
) -> list[ArrayRecording | _EDFInput]:
    """Resolve inputs into recordings with scorer hypnograms.

    Parameters
    ----------
    inputs : sequence of str
        ``prerau:DIR``, EDF files, folders, globs or dataset specs.
    hypnogram : str, optional
        Hypnogram file for a single EDF input (otherwise paired by dataset rules).
    scorer : int
        Scorer where a dataset has several.

    Raises
    ------
    DatasetError
        When an input names nothing, or ``hypnogram`` is given with several recordings.
    """
    from engine.io.datasets import find_pairs

    if not inputs:
        raise DatasetError("no recordings given")
    out: list[ArrayRecording | _EDFInput] = []
    for spec in inputs:
        if spec.startswith(_PRERAU_PREFIX) and not os.path.exists(spec):
            out.append(load_prerau(spec[len(_PRERAU_PREFIX) :]))
        elif hypnogram is not None:
            psg = Path(spec)
            if len(inputs) != 1 or not psg.is_file():
                raise DatasetError("--hypnogram pairs with exactly one EDF file input")
            out.append(_edf_input("edf", psg.stem, psg, Path(hypnogram), scorer))
        else:
            for pair in find_pairs(spec, scorer=scorer):
                out.append(
                    _edf_input(
                        pair.dataset,
                        pair.recording,
                        pair.psg_path,
                        pair.hypnogram_path,
                        pair.scorer,
                    )
                )
    return out


# ----------------------------------------------------------------------------------------
# Staging one recording with the model
# ----------------------------------------------------------------------------------------
def model_windows(source, positions: np.ndarray, window_s: float) -> np.ndarray:
    """Signals of the ``window_s``-second windows centred on the given scorer epochs.

    Parameters
    ----------
    source : engine.epochs.EpochSource
    positions : numpy.ndarray
        Epoch positions in ``source.hypnogram``.
    window_s : float
        Seconds the model's images show (30 s x (2 context + 1)).

    Returns
    -------
    numpy.ndarray
        float32 ``(n, channels, round(window_s * fs))``; NaN outside the recording.
    """
    length = source.epoch_length
    context = max(0, math.ceil((window_s - length) / 2 / length - 1e-9))
    width = int(round(window_s * source.fs))
    per_epoch = source.epoch_samples
    first = int(round(context * per_epoch + per_epoch / 2 - width / 2))
    out = np.empty((positions.size, len(source.channels), width), dtype=np.float32)
    for row, position in enumerate(positions.tolist()):
        batch = source.epoch(int(position), context=context)
        out[row] = batch.signals[0, :, first : first + width]
    return out


def epoch_source(recording: ArrayRecording, setup: RenderConfig):
    """The recording's scorer epochs, preprocessed as the model's training data was.

    Its ``hypnogram`` holds the epochs that lie inside the signal: epoch positions used
    by :func:`stage_recording` and :func:`yasa_stage` refer to it.
    """
    from engine.epochs import EpochSource

    source = EpochSource.from_arrays(
        recording.signals,
        recording.fs,
        recording.hypnogram,
        Montage.parse(setup.montage),
        setup.preprocessing_params(),
        source=recording.source,
    )
    names = [c.name for c in source.channels]
    if names != [c["name"] for c in setup.channels]:
        raise ChannelNotFoundError(f"{recording.recording}: montage resolved to {names}")
    return source


def stage_recording(
    source,
    model: StagingModel,
    positions: np.ndarray,
    device: str = "cpu",
    batch_size: int = 8,
    quantization: str | None = None,
) -> np.ndarray:
    """Stage probabilities ``(len(positions), 5)`` of scorer epochs of an epoch source.

    Parameters
    ----------
    source : engine.epochs.EpochSource
        From :func:`epoch_source` with ``model.setup``.
    model : StagingModel
    positions : numpy.ndarray
        Epoch positions in ``source.hypnogram``.
    device, batch_size, quantization
        Where and how to run the model.
    """
    from engine.raster import render

    from .data import build_question
    from .evaluate import score_candidates
    from .stage import model_images

    setup = model.setup
    prompt = build_question({"channels": [dict(c) for c in setup.channels]})
    net, processor = model.load(device, quantization)
    probs = []
    chunk = 64
    for lo in range(0, positions.size, chunk):
        windows = model_windows(source, positions[lo : lo + chunk], setup.window_seconds)
        images = model_images(render(windows, setup.spec()), setup)
        probs.append(
            score_candidates(
                net, processor, images, [prompt] * len(images), STAGE_NAMES, batch_size
            )
        )
    return np.concatenate(probs) if probs else np.zeros((0, len(STAGE_NAMES)))


# ----------------------------------------------------------------------------------------
# Post-hoc smoothing: a stage HMM estimated from synthetic hypnograms only
# ----------------------------------------------------------------------------------------
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
    from engine.synth import EPOCH_LENGTH, synth_hypnogram

    if int(nights) < 1 or hours <= 0:
        raise DatasetError(
            f"synthetic_stage_hmm: need nights >= 1 and hours > 0, got {nights}, {hours}"
        )
    if not 0.0 <= floor < 1.0:
        raise DatasetError(f"synthetic_stage_hmm: floor must lie in [0, 1), got {floor}")
    k = len(STAGE_NAMES)
    counts = np.zeros((k, k))
    occupancy = np.zeros(k)
    n_epochs = int(round(hours * 3600.0 / EPOCH_LENGTH))
    for night in range(int(nights)):
        stages = synth_hypnogram(int(seed) + night, n_epochs).astype(np.int64)
        np.add.at(counts, (stages[:-1], stages[1:]), 1.0)
        occupancy += np.bincount(stages, minlength=k)
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


def _smooth_runs(
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


# ----------------------------------------------------------------------------------------
# YASA
# ----------------------------------------------------------------------------------------
@dataclass
class PeerResult:
    """A peer's stages on the scorer epochs, or why it could not run.

    Attributes
    ----------
    stages : numpy.ndarray or None
        Stage id per requested epoch (-1 where the peer has no epoch covering it).
    refused : str or None
        Reason the peer did not run (rate too low, not installed...).
    """

    stages: np.ndarray | None = None
    refused: str | None = None


def yasa_stage(
    signal: np.ndarray, fs: float, hypnogram: Hypnogram, positions: np.ndarray, channel: str = "EEG"
) -> PeerResult:
    """Run ``yasa.SleepStaging`` (EEG only) and read its stages on given scorer epochs.

    Parameters
    ----------
    signal : numpy.ndarray
        The whole EEG channel in µV at its native rate (YASA filters it itself).
    fs : float
        Its sampling rate (YASA refuses 80 Hz and below).
    hypnogram : Hypnogram
        The scorer's epochs; the signal is cropped to start at its first onset.
    positions : numpy.ndarray
        Epochs to report.
    channel : str
        Channel name given to MNE/YASA.

    Returns
    -------
    PeerResult
    """
    try:
        import mne
        import yasa
    except ImportError as err:
        return PeerResult(refused=f"yasa is not installed ({err}); pip install 'psgvlm[peers]'")
    if fs <= _YASA_MIN_FS:
        return PeerResult(
            refused=f"YASA needs a sampling rate above {_YASA_MIN_FS:g} Hz, the EEG is at {fs:g} Hz"
        )
    if len(hypnogram) == 0:
        return PeerResult(refused="no scored epochs")
    start = float(hypnogram.onsets[0])
    stop = min(signal.size / fs, float(hypnogram.end))
    first, last = int(round(start * fs)), int(round(stop * fs))
    if (last - first) < _YASA_EPOCH * fs:
        return PeerResult(refused="YASA needs at least one 30-s epoch of signal")
    info = mne.create_info([channel], fs, ch_types=["eeg"], verbose=False)
    raw = mne.io.RawArray(signal[np.newaxis, first:last] * 1e-6, info, verbose=False)
    previous = mne.set_log_level("ERROR", return_old_level=True)
    try:
        predicted = yasa.SleepStaging(raw, eeg_name=channel).predict()
    finally:
        mne.set_log_level(previous)
    values = np.array([int(to_stage(str(v))) for v in np.asarray(predicted.hypno)])
    mids = hypnogram.onsets[positions] + hypnogram.durations[positions] / 2
    index = np.floor((mids - start) / _YASA_EPOCH).astype(np.int64)
    covered = (index >= 0) & (index < values.size)
    stages = np.full(positions.size, int(Stage.UNK), dtype=np.int64)
    stages[covered] = values[index[covered]]
    return PeerResult(stages=stages)


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def comparison_markdown(results: Mapping[str, Any], title: str = "Real recordings") -> str:
    """Markdown: side-by-side metrics of the model and its peers, then per recording."""
    smoothed = results.get("smoothed", {})
    columns = ["model", *smoothed, *results.get("peers", {})]
    metric_sets = [results["model"], *smoothed.values(), *results.get("peers", {}).values()]
    lines = [f"# {title}", ""]
    lines += [
        f"Compared on the same {results['model']['n']} scorer epochs "
        f"({', '.join(results['epoch_lengths'])}-s grid).",
        "",
    ]
    if smoothed:
        lines += [
            f"`model+hmm`: the model's per-epoch probabilities decoded by Viterbi with "
            f"a stage HMM from {results['smoothing']['hmm']} (no real labels).",
            "",
        ]
    lines += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = [("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("Cohen's κ", "kappa")]
    for label, key in rows:
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(m.get(key)) if "refused" not in m else "refused" for m in metric_sets)
            + " |"
        )
    for name in STAGE_NAMES:
        support = results["model"]["support"][name]
        lines.append(
            f"| F1 {name} (n={support}) | "
            + " | ".join(
                _fmt(m["per_class_f1"][name]) if "refused" not in m else "—" for m in metric_sets
            )
            + " |"
        )
    for peer, metrics in results.get("peers", {}).items():
        if "refused" in metrics:
            lines += ["", f"{peer} did not run: {metrics['refused']}"]
    lines += [
        "",
        "| recording | model | n | " + " | ".join(f"{c} acc" for c in columns) + " |",
        "|---" * (3 + len(columns)) + "|",
    ]
    for rec in results["recordings"]:
        accs = [
            _fmt(rec["metrics"][c]["accuracy"]) if "accuracy" in rec["metrics"].get(c, {}) else "—"
            for c in columns
        ]
        lines.append(
            f"| {rec['dataset']}/{rec['recording']} | {rec['model']} | {rec['n']} | "
            + " | ".join(accs)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _metrics_or_refusal(
    y_true: np.ndarray, y_pred: np.ndarray | None, refused: str | None
) -> dict[str, Any]:
    from .evaluate import classification_metrics

    if y_pred is None:
        return {"refused": refused}
    return classification_metrics(y_true, y_pred)


def _parse_epochs(text: str | None, n: int) -> np.ndarray:
    """Positions among the scored epochs selected by ``START:STOP`` (Python slice)."""
    if text is None:
        return np.arange(n)
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise DatasetError(f"--epochs {text!r}: expected START:STOP (e.g. 0:20)") from None
    if len(parts) != 2:
        raise DatasetError(f"--epochs {text!r}: expected START:STOP (e.g. 0:20)")
    selected = np.arange(n)[slice(*parts)]
    if selected.size == 0:
        raise DatasetError(f"--epochs {text!r} selects none of the {n} scored epochs")
    return selected


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm eval`` that only apply to recordings (see the module docstring)."""
    group = parser.add_argument_group("recordings (evaluate on recordings instead of shards)")
    group.add_argument(
        "recordings",
        nargs="*",
        metavar="RECORDING",
        default=[],
        help="EDF files, folders, globs, dataset specs (sleep-edf:DIR...) or prerau:DIR",
    )
    group.add_argument(
        "--recordings",
        dest="recordings_opt",
        nargs="+",
        metavar="RECORDING",
        default=[],
        help="same as the positional RECORDING inputs",
    )
    group.add_argument("--hypnogram", help="hypnogram file of a single EDF recording")
    group.add_argument("--scorer", type=int, default=1, help="hypnogram scorer (ISRUC: 1 or 2)")
    group.add_argument(
        "--adapters",
        nargs="+",
        default=[],
        metavar="DIR",
        help="more montage-specific adapters; each recording is staged by the "
        "one whose montage it fills with the most channels",
    )
    add_ensemble_argument(group)
    group.add_argument(
        "--render-from",
        metavar="SHARDS",
        help="shards whose render setup to use (default: the adapter's "
        "training shards, from its run's config.yaml)",
    )
    group.add_argument(
        "--montage",
        help="montage of the model images (must match the shards' "
        "roles and names; default: the shards' own)",
    )
    group.add_argument(
        "--peers",
        nargs="*",
        default=None,
        choices=PEERS,
        help="peers to run beside the model on the same epochs (default: yasa "
        "when installed; give --peers with no name for none)",
    )
    group.add_argument(
        "--epochs",
        metavar="START:STOP",
        help="compare only these scored epochs of each recording (peers still "
        "see the whole recording)",
    )
    group.add_argument(
        "--smooth",
        choices=SMOOTHERS,
        default="none",
        help="also report the model's stages after post-hoc smoothing of each night's "
        "probabilities: hmm = Viterbi with a stage transition matrix counted on synthetic "
        "hypnograms (engine.synth), reported beside the raw per-epoch figures",
    )


def _models(args: argparse.Namespace) -> list[StagingModel]:
    ensemble = [str(member) for member in getattr(args, "ensemble", None) or []]
    if ensemble and args.adapters:
        raise ModelError(
            "--ensemble and --adapters do not mix: --adapters picks one model per recording "
            "by montage, --ensemble averages models of one montage"
        )
    if ensemble and not args.adapter:
        raise ModelError("--ensemble needs --adapter (the first member)")
    adapters = [a for a in [args.adapter, *args.adapters, *ensemble] if a]
    if not adapters:
        if not args.render_from:
            raise ModelError("zero-shot evaluation on recordings needs --render-from SHARDS")
        adapters = [None]
    if args.render_from and len(adapters) > 1:
        raise ModelError("--render-from applies to one adapter; give each run's config instead")
    models = []
    for adapter in adapters:
        setup = find_render_setup(adapter, args.render_from)
        if args.montage:
            montage = Montage.parse(args.montage)
            wanted = [(e.role, e.name) for e in montage.entries]
            if [r for r, _ in wanted] != list(setup.roles):
                raise ModelError(
                    f"--montage {args.montage}: roles differ from the model's "
                    f"training montage {setup.montage}"
                )
            setup = dataclasses.replace(setup, channels=[{"role": r, "name": n} for r, n in wanted])
        models.append(StagingModel(args.model, adapter, setup, str(adapter or "zero-shot")))
    names = Counter(m.name for m in models)
    for i, m in enumerate(models):
        if names[m.name] > 1:
            m.name = f"{m.name}-{i}"
    if ensemble:
        montages = {m.setup.montage for m in models}
        if len(montages) > 1:
            raise ModelError(f"--ensemble members must share one montage; got {sorted(montages)}")
    return models


def run_recordings(args: argparse.Namespace) -> int:
    """``psgvlm eval RECORDING...``: stage recordings, compare with the scorer and peers."""
    import torch

    inputs = [*args.recordings, *args.recordings_opt]
    models = _models(args)
    by_name = {m.name: m for m in models}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    peers = [p for p in PEERS if _peer_available(p)] if args.peers is None else list(args.peers)
    recordings = load_recordings(inputs, args.hypnogram, args.scorer)
    smooth = getattr(args, "smooth", "none")
    hmm = synthetic_stage_hmm() if smooth == "hmm" else None
    ensemble = bool(getattr(args, "ensemble", None))
    y_smooth: list[np.ndarray] = []

    y_true, y_model, peer_pred = [], [], {p: [] for p in peers}
    refusals: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    per_recording = []
    lengths = set()
    for item in recordings:
        labels = item.labels
        chosen = by_name[pick_model(available_roles(labels), {m.name: m.roles for m in models})]
        resolved = resolve_montage(chosen.setup.montage, labels, source=item.recording)
        if isinstance(item, _EDFInput):
            item = item.load(sorted({c.label for c in resolved}, key=labels.index))
        members = models if ensemble else [chosen]
        first = epoch_source(item, members[0].setup)
        # Members drawn the same way (the usual ensemble) share one preprocessed source.
        sources = [
            first if m.setup == members[0].setup else epoch_source(item, m.setup) for m in members
        ]
        hyp = first.hypnogram
        scored = np.flatnonzero(hyp.stages != int(Stage.UNK))
        if scored.size == 0:
            raise DatasetError(f"{item.recording}: no scored epochs")
        positions = scored[_parse_epochs(args.epochs, scored.size)]
        lengths.add(f"{hyp.epoch_length:g}")
        logger.info(
            "%s/%s: %d epochs with model %s",
            item.dataset,
            item.recording,
            positions.size,
            chosen.name,
        )
        probs = np.mean(
            [
                stage_recording(source, m, positions, device, args.batch_size, args.quantization)
                for source, m in zip(sources, members)
            ],
            axis=0,
        )
        truth = hyp.stages[positions].astype(np.int64)
        pred = probs.argmax(axis=1)
        keep = np.ones(positions.size, dtype=bool)
        peer_stages = {}
        eeg = next(c.label for c in resolved if c.role == "eeg") if "eeg" in chosen.roles else None
        for peer in peers:
            if eeg is None:
                result = PeerResult(refused="the model's montage has no EEG channel for YASA")
            else:
                result = yasa_stage(item.signals[eeg], item.fs[eeg], hyp, positions)
            if result.stages is None:
                refusals[peer] = result.refused or "unknown reason"
                logger.warning("%s on %s: %s", peer, item.recording, result.refused)
                continue
            keep &= result.stages >= 0
            peer_stages[peer] = result.stages
        if not keep.all():
            logger.warning(
                "%s: %d epochs lie outside the peers' epochs; not compared",
                item.recording,
                int((~keep).sum()),
            )
        rec_metrics = {"model": _metrics_or_refusal(truth[keep], pred[keep], None)}
        smoothed = None
        if hmm is not None:
            prior = np.mean([training_class_prior(m.adapter, hmm) for m in members], axis=0)
            smoothed = _smooth_runs(probs, positions, hmm, prior)
            rec_metrics["model+hmm"] = _metrics_or_refusal(truth[keep], smoothed[keep], None)
            y_smooth.append(smoothed[keep])
        for peer, stages in peer_stages.items():
            rec_metrics[peer] = _metrics_or_refusal(truth[keep], stages[keep], None)
            peer_pred[peer].append(stages[keep])
        per_recording.append(
            {
                "dataset": item.dataset,
                "recording": item.recording,
                "model": "+".join(m.name for m in members),
                "n": int(keep.sum()),
                "epoch_length": hyp.epoch_length,
                "metrics": rec_metrics,
            }
        )
        y_true.append(truth[keep])
        y_model.append(pred[keep])
        for j in np.flatnonzero(keep):
            position = int(positions[j])
            row = {
                "dataset": item.dataset,
                "recording": item.recording,
                "epoch": position,
                "onset": f"{hyp.onsets[position]:.3f}",
                "duration": f"{hyp.durations[position]:g}",
                "true": STAGE_NAMES[truth[j]],
                "model": STAGE_NAMES[pred[j]],
            }
            if smoothed is not None:
                row["model_hmm"] = STAGE_NAMES[smoothed[j]]
            row |= {peer: STAGE_NAMES[s[j]] for peer, s in peer_stages.items()}
            row |= {f"p_{n}": f"{q:.5f}" for n, q in zip(STAGE_NAMES, probs[j])}
            rows.append(row)

    truth_all = np.concatenate(y_true)
    results: dict[str, Any] = {
        "model": _metrics_or_refusal(truth_all, np.concatenate(y_model), None),
        "peers": {},
        "recordings": per_recording,
        "epoch_lengths": sorted(lengths),
        "models": [
            {
                "name": m.name,
                "base": m.base,
                "adapter": m.adapter,
                "montage": m.setup.montage,
                "render_from": m.setup.source,
                "window_seconds": m.setup.window_seconds,
            }
            for m in models
        ],
        "ensemble": ensemble,
        "inputs": inputs,
        "epochs": args.epochs,
    }
    if hmm is not None:
        results["smoothed"] = {
            "model+hmm": _metrics_or_refusal(truth_all, np.concatenate(y_smooth), None)
        }
        results["smoothing"] = {
            "hmm": hmm.source,
            "transition": np.round(hmm.transition, 5).tolist(),
        }
    for peer in peers:
        if peer in refusals or len(peer_pred[peer]) != len(per_recording):
            results["peers"][peer] = {
                "refused": refusals.get(peer, "did not run on every recording")
            }
        else:
            results["peers"][peer] = _metrics_or_refusal(
                truth_all, np.concatenate(peer_pred[peer]), None
            )
    line = " ".join(
        f"{name}: acc={m['accuracy']:.3f} macro_f1={m['macro_f1']:.3f} kappa={m['kappa']:.3f}"
        for name, m in [
            ("model", results["model"]),
            *results.get("smoothed", {}).items(),
            *results["peers"].items(),
        ]
        if "accuracy" in m
    )
    print(f"n={results['model']['n']} {line}")
    if args.out is not None:
        _write(args.out, results, rows)
        print(args.out)
    return 0


def _peer_available(peer: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(peer) is not None


def _write(out: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from .evaluate import plot_confusion

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    (out / "metrics.md").write_text(comparison_markdown(results))
    with open(out / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_confusion(results["model"]["confusion"], out / "confusion.png", "model")
    for name, metrics in results.get("smoothed", {}).items():
        plot_confusion(metrics["confusion"], out / f"confusion-{name.replace('+', '-')}.png", name)
    for peer, metrics in results["peers"].items():
        if "confusion" in metrics:
            plot_confusion(metrics["confusion"], out / f"confusion-{peer}.png", peer)

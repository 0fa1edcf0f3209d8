"""``psgvlm render``: recordings to WebDataset shards, resumable, split by subject.

Each recording is one task: open it (the EDF reader's error comes first), read its
hypnogram (or none with ``--unscored``), open its epochs, stream batches through the
rasterizer and the encoder and hand the samples to the task's own
:class:`~engine.shards.ShardSink`. A task holds one recording and one batch of images at
a time, never a list of all images. Tasks run in this process (``--workers 1``), a
process pool (``--workers N``) or on a Ray cluster (``--ray ADDRESS``), all through the
same function, :func:`render_recording` (:func:`draw_recording` and its finish; in this
process, a recording's finish, the wait for its last shard and its marker to reach the
disk, runs in a thread while the next recording is drawn).

Output directory while running::

    OUT/_work/run.json                the arguments that shape the output (checked on resume)
    OUT/_work/parts/{rec}/{k:06d}.tar the shards of recording {rec}, written atomically
    OUT/_work/done/{rec}.json         done-marker, written atomically after its shards
    OUT/_synthetic/                   --synthetic nights, as EDF files

Shard numbering: a task names its shards inside its own folder, so parallel tasks never
collide. When every task has finished, the shards are renamed to
``OUT/{split}-{shard:06d}.tar``: split by split, recordings in sorted order, numbers
contiguous from 0. The rename plan is written first (``_work/finalize.json``) so that a
run killed while renaming completes it on the next start; then ``manifest.json`` is
written and ``_work`` removed.

Failures: before any drawing, every recording is paired with its hypnogram and its header
is read and matched against the montage; a recording that fails there or while it is
drawn is a *failure* named with its cause. Without ``--keep-going`` the run stops at the
first failure (at once when they show before drawing starts), keeps the recordings
already finished in ``OUT/_work`` and exits 1; with ``--keep-going`` every other
recording is rendered, the manifest lists the failures and the exit status is still 1.
Either way, rerunning the same command retries the failed recordings: their shards are
numbered after the existing ones of their split and the manifest is rewritten.

Resume: rerunning the same command skips every recording with a done-marker, deletes
and redoes the shards of recordings without one, and then renames. Arguments that change
the output (montage, size, format, split...) must be the same; ``--workers``, ``--ray``,
``--batch-size``, ``--device``, ``--keep-going`` and ``--strict`` may differ. A run that
produced nothing (stopped before its first recording was finished, or finished with every
recording failed) may be rerun with corrected arguments: its leftovers are discarded.

Montage: ``auto`` (the default) draws ``eeg=C4-M1,eog=E1-M2,emg=chin`` with the roles each
recording has (an EEG is required); strips are labelled with the derivation actually
drawn (:func:`engine.epochs.drawn_label`), and each sample's JSON keeps the montage slot
and the recording's channel (``channels[].slot``, ``.source``, ``.drawn``).

Splits are by subject: subjects are ordered by ``sha256(seed:dataset:subject)`` and cut
by the fractions (counts by largest remainder, every non-zero split getting a subject
when there are enough; with fewer subjects than non-zero splits, train gets the first,
then test, then val, so two subjects give 1 train / 0 val / 1 test). The result is
reproducible for a seed and a set of subjects; adding subjects can move a few across a
cut, so freeze a split with ``--subjects-file``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import (
    ChannelNotFoundError,
    DatasetError,
    PSGError,
    RenderError,
    ShardError,
)
from .io.datasets import RecordingPair, resolve_inputs
from .raster.layout import parse_size
from .shards import (
    IMAGE_FORMATS,
    SPLITS,
    Manifest,
    ShardInfo,
    ShardSink,
    atomic_write_text,
    list_shards,
    make_sample,
    read_manifest,
    sample_key,
    sanitize_key,
    shard_name,
)
from .stages import Stage, stage_name

__all__ = [
    "AUTO_MONTAGE",
    "EPOCH_SECONDS",
    "RenderSettings",
    "RecordingTask",
    "RenderReport",
    "parse_fractions",
    "assign_splits",
    "empty_splits",
    "read_subjects_file",
    "montage_for",
    "render_recording",
    "draw_recording",
    "render_dataset",
    "write_synthetic_nights",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

_WORK = "_work"
_SYNTHETIC = "_synthetic"
_RUN_FILE = "run.json"
_FINALIZE_FILE = "finalize.json"

#: ``--montage`` value that draws the default montage with the roles a recording has.
AUTO_MONTAGE = "auto"
#: Epoch length of unscored recordings (``--unscored``), in seconds.
EPOCH_SECONDS = 30.0


@dataclass(frozen=True)
class RenderSettings:
    """Everything that shapes the shards' bytes (the resume fingerprint).

    Attributes
    ----------
    montage : str
        Montage spec (``engine.montage.Montage.parse``), or ``"auto"``: the default
        montage with the roles each recording has (EEG required).
    width, height : int
        Image size in pixels.
    color, grid, labels : bool
        RenderSpec switches; ``labels`` draws the recording's channel names on the strips.
    context : int
        Neighbouring epochs shown on each side of the target epoch.
    fmt : {"png", "jpg", "npy"}
        Image encoding; ``quality`` is the JPEG quality.
    maxcount, maxsize : int
        Shard limits (samples, bytes).
    keep_unknown : bool
        Keep UNK epochs (``cls`` -1) instead of dropping them.
    features : bool
        Store evidence features per epoch in ``json["features"]``.
    scorer : int
        Hypnogram scorer where a dataset has several.
    unscored : bool
        Ignore hypnograms: every 30-s epoch of each recording, stage UNK (``cls`` -1).
    normalise : str or None
        ``ROLE=UV[@LOW-HIGH],...``: scale each channel of those roles, once per recording,
        to that median 30-s rms, measured in the band when given (:mod:`engine.normalise`);
        None draws the recorded µV.
    short_epochs : float
        Fraction of epochs (0-1) drawn as a scorer's shorter epoch is shown to a model:
        only the middle ``short_epoch_seconds`` of the target epoch, the rest of it left
        blank (``json["shown_seconds"]``), the label unchanged. Trains a model to read the
        20-s epochs of R&K sets (DREAMS, some MASS subsets) in its 30-s window
        (:func:`vlm.sources.model_windows`). The epochs are drawn at random, the same ones
        on every run.
    short_epoch_seconds : float
        Seconds shown of such an epoch (default 20).

    Raises
    ------
    RenderError, ShardError, MontageError
        On a value out of range or a malformed montage (checked once, before any work).
    """

    montage: str = AUTO_MONTAGE
    width: int = 448
    height: int = 224
    color: bool = False
    grid: bool = False
    labels: bool = True
    context: int = 0
    fmt: str = "png"
    quality: int = 90
    maxcount: int = 10000
    maxsize: int = 3_000_000_000
    keep_unknown: bool = False
    features: bool = False
    scorer: int = 1
    unscored: bool = False
    normalise: str | None = None
    short_epochs: float = 0.0
    short_epoch_seconds: float = 20.0

    def __post_init__(self) -> None:
        from .montage import Montage
        from .normalise import parse_normalise

        if self.normalise is not None:
            parse_normalise(self.normalise)  # a malformed --normalise stops here, once

        if self.montage != AUTO_MONTAGE:
            Montage.parse(self.montage)  # a malformed --montage stops here, once
        if self.fmt not in IMAGE_FORMATS:
            raise RenderError(f"--format must be one of {', '.join(IMAGE_FORMATS)}, got {self.fmt}")
        if not 1 <= self.quality <= 100:
            raise RenderError(f"--quality must be 1-100, got {self.quality}")
        if self.maxcount < 1 or self.maxsize < 1:
            raise ShardError("--maxcount and --maxsize must be positive")
        if not 0 <= self.context <= 10:
            raise RenderError(f"--context must be 0-10, got {self.context}")
        if isinstance(self.scorer, bool) or not isinstance(self.scorer, int) or self.scorer < 1:
            raise RenderError(f"--scorer must be a positive integer, got {self.scorer!r}")
        if not 0.0 <= self.short_epochs <= 1.0:
            raise RenderError(f"--short-epochs must be a fraction 0-1, got {self.short_epochs}")
        if not 0.0 < self.short_epoch_seconds < EPOCH_SECONDS:
            raise RenderError(
                f"--short-epoch-seconds must be between 0 and {EPOCH_SECONDS:g}, got "
                f"{self.short_epoch_seconds}"
            )


@dataclass(frozen=True)
class RecordingTask:
    """One unit of work: a recording, its split and where its shards go."""

    pair: RecordingPair
    split: str
    work_dir: Path
    settings: RenderSettings
    device: str = "cpu"
    batch_size: int = 64

    @property
    def slug(self) -> str:
        """File-name-safe recording id, unique in a run: ``{dataset}_{recording}``."""
        return sanitize_key(f"{self.pair.dataset}_{self.pair.recording}")


# ----------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------
def parse_fractions(text: str) -> tuple[float, float, float]:
    """Parse ``"0.8,0.1,0.1"`` into train/val/test fractions summing to 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DatasetError(
            f"--split: expected three numbers like 0.8,0.1,0.1, got {text!r}"
        ) from None
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise DatasetError(f"--split: expected three non-negative numbers, got {text!r}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise DatasetError(f"--split: fractions must sum to 1, got {sum(values):g}")
    return values  # type: ignore[return-value]


#: Which non-empty split gets a subject first when there are fewer subjects than splits:
#: train, then test (to evaluate on), then val.
_FEW_SUBJECTS_ORDER = (0, 2, 1)


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Subjects per split: largest remainder, one for each non-zero split if possible.

    With fewer subjects than non-zero splits, one subject each goes to train, then test,
    then val (two subjects: 1 train, 0 val, 1 test).
    """
    wanted = [n * f for f in fractions]
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    if n < len(nonzero):
        counts = [0, 0, 0]
        for i in [i for i in _FEW_SUBJECTS_ORDER if i in nonzero][:n]:
            counts[i] = 1
        return counts
    counts = [math.floor(w) for w in wanted]
    floor = [1 if i in nonzero else 0 for i in range(3)]
    counts = [max(c, m) for c, m in zip(counts, floor)]
    while sum(counts) > n:  # the minimums overshot: take from the most over-served split
        above = [i for i in range(3) if counts[i] > floor[i]]
        counts[max(above, key=lambda i: counts[i] - wanted[i])] -= 1
    order = sorted(range(3), key=lambda i: (-(wanted[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def assign_splits(
    subjects: Iterable[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Assign each subject to train/val/test, reproducibly for a seed.

    Parameters
    ----------
    subjects : iterable of str
        Subject ids (``dataset:subject``); repeats are ignored.
    fractions : three floats
        Train, val and test fractions (sum 1).
    seed : int
        Seed of the ordering hash.

    Returns
    -------
    dict
        Subject -> split name. With fewer subjects than non-zero fractions, train gets
        one first, then test, then val.

    Examples
    --------
    >>> sorted(assign_splits(["a", "b", "c"], (1 / 3, 1 / 3, 1 / 3)).values())
    ['test', 'train', 'val']
    >>> sorted(assign_splits(["a", "b"]).values())
    ['test', 'train']
    """
    unique = sorted(set(subjects))

    def rank(subject: str) -> str:
        return hashlib.sha256(f"{seed}:{subject}".encode()).hexdigest()

    ordered = sorted(unique, key=rank)
    counts = _split_counts(len(ordered), fractions)
    assignment: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for subject in ordered[start : start + count]:
            assignment[subject] = split
        start += count
    return assignment


def empty_splits(assignment: Mapping[str, str], fractions: Sequence[float]) -> list[str]:
    """Splits with a non-zero fraction that received no subject.

    Examples
    --------
    >>> empty_splits({"a": "train", "b": "test"}, (0.8, 0.1, 0.1))
    ['val']
    """
    used = set(assignment.values())
    return [split for split, f in zip(SPLITS, fractions) if f > 0 and split not in used]


def read_subjects_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a subject -> split table from JSON (``{"sleep-edf:00": "train"}``) or CSV.

    CSV files have two columns, subject and split (a header row ``subject,split`` is
    allowed). Subjects are ``dataset:subject`` or a bare subject id (matched in any
    dataset).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DatasetError(f"--subjects-file {path}: {err.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"--subjects-file {path}: invalid JSON: {err}") from None
        if not isinstance(table, dict):
            raise DatasetError(f"--subjects-file {path}: expected an object subject -> split")
    else:
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if rows and [c.strip().lower() for c in rows[0]] == ["subject", "split"]:
            rows = rows[1:]
        if any(len(r) != 2 for r in rows):
            raise DatasetError(f"--subjects-file {path}: every CSV row must be subject,split")
        table = {r[0].strip(): r[1].strip() for r in rows}
    bad = {s: v for s, v in table.items() if v not in SPLITS}
    if bad:
        raise DatasetError(f"--subjects-file {path}: splits must be {', '.join(SPLITS)}; got {bad}")
    return {str(s): str(v) for s, v in table.items()}


def _splits_from_table(subject_ids: Iterable[str], table: Mapping[str, str]) -> dict[str, str]:
    assignment, missing = {}, []
    for subject_id in sorted(set(subject_ids)):
        bare = subject_id.split(":", 1)[1]
        split = table.get(subject_id, table.get(bare))
        if split is None:
            missing.append(subject_id)
        else:
            assignment[subject_id] = split
    if missing:
        raise DatasetError(
            f"--subjects-file has no split for {len(missing)} subjects, e.g. {missing[:5]}"
        )
    return assignment


# ----------------------------------------------------------------------------------------
# One recording
# ----------------------------------------------------------------------------------------
def _encode(images: np.ndarray, settings: RenderSettings) -> list[bytes]:
    from .encode import encode_batch

    global _DEVICE_JPEG
    if not isinstance(images, np.ndarray):  # pages on a CUDA device
        if settings.fmt == "jpg" and _DEVICE_JPEG is not False:
            from .encode import encode_jpeg_cuda

            try:  # nvJPEG (torch and torchvision with CUDA), imported on first use only
                blobs = encode_jpeg_cuda(images, quality=settings.quality)
            except RenderError as err:
                logger.info("JPEG on the CPU: %s", err)
                _DEVICE_JPEG = False
            else:
                _DEVICE_JPEG = True
                return blobs
        from .dsp_cuda import to_host

        images = to_host(images)
    return encode_batch(images, settings.fmt, quality=settings.quality)


#: Whether nvJPEG encoded device pages (None: not tried yet in this process).
_DEVICE_JPEG: bool | None = None


def _device_preprocessing() -> bool:
    """Recordings can be decoded and filtered on the device (CuPy, or the simulator)."""
    from .raster.gpu import is_simulator

    if is_simulator():
        return True
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def _host(signals: Any) -> np.ndarray:
    """Signals of a batch on the host (they are on the device with ``--device cuda``)."""
    if isinstance(signals, np.ndarray):
        return signals
    from .dsp_cuda import to_host

    return to_host(signals)


class _Drawer:
    """Draws batches; on the CPU into one reused page buffer (no fresh pages per batch).

    The images of a batch are a view of the buffer: encode them before the next call.
    """

    def __init__(self, spec: Any, device: str) -> None:
        self.spec = spec
        self.device = device
        self.buffer: np.ndarray | None = None

    def __call__(self, signals: np.ndarray) -> np.ndarray:
        from .raster import render, render_cuda, render_gpu

        if self.device == "cuda":
            if isinstance(signals, np.ndarray):  # host signals: up, drawn, back down
                return render_gpu(signals, self.spec)
            return render_cuda(signals, self.spec)  # pages stay on the device
        n = len(signals)
        if self.buffer is None or self.buffer.shape[0] < n:
            planes = 3 if self.spec.color else 1
            self.buffer = np.empty((n, self.spec.height, self.spec.width, planes), np.uint8)
        return render(signals, self.spec, out=self.buffer[:n])


def montage_for(spec: str, labels: Sequence[str]) -> tuple[Any, list[str]]:
    """The montage to draw a recording with, and the default roles it lacks.

    Parameters
    ----------
    spec : str
        A montage spec, or ``"auto"``: the entries of
        :data:`engine.montage.DEFAULT_MONTAGE` whose role the recording has.
    labels : sequence of str
        The recording's channel labels.

    Returns
    -------
    (Montage, list of str)
        The montage, and (for ``"auto"``) the roles left out because the recording has
        no channel for them.

    Raises
    ------
    ChannelNotFoundError
        ``"auto"`` on a recording without an EEG channel, in one line that says which
        ``--montage`` to pass.
    MontageError
        A malformed spec.
    """
    from .montage import DEFAULT_MONTAGE, Montage, resolve_montage

    if spec != AUTO_MONTAGE:
        return Montage.parse(spec), []
    kept, missing = [], []
    for entry in Montage.parse(DEFAULT_MONTAGE).entries:
        try:
            resolve_montage(Montage((entry,)), labels)
        except ChannelNotFoundError:
            missing.append(entry.role)
        else:
            kept.append(entry)
    if not any(entry.role == "eeg" for entry in kept):
        shown = ", ".join(repr(label) for label in list(labels)[:8])
        more = f" and {len(labels) - 8} more" if len(labels) > 8 else ""
        raise ChannelNotFoundError(
            f"no EEG channel recognised among {shown or 'no channels'}{more}; pass "
            "--montage eeg=LABEL (e.g. --montage 'eeg=LABEL,eog=LABEL,emg=LABEL')"
        )
    return Montage(tuple(kept)), missing


def _unscored_hypnogram(recording: Any) -> Any:
    """Every whole 30-s epoch of a recording, stage UNK."""
    from .io.hypnogram import Hypnogram

    count = int(math.floor(recording.duration / EPOCH_SECONDS + 1e-9))
    if count < 1:
        raise RenderError(
            f"{recording.path}: {recording.duration:g} s is shorter than one "
            f"{EPOCH_SECONDS:g}-s epoch"
        )
    return Hypnogram.from_stages(
        [int(Stage.UNK)] * count, EPOCH_SECONDS, labels=["unscored"] * count
    )


class _OnceEach(logging.Filter):
    """Lets each distinct message through once (a file opened twice warns once)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def _reader_warnings_once() -> Iterator[None]:
    """Within the block, the EDF reader's messages are shown once each."""
    reader_logger = logging.getLogger("engine.io.edf")
    once = _OnceEach()
    reader_logger.addFilter(once)
    try:
        yield
    finally:
        reader_logger.removeFilter(once)


@contextlib.contextmanager
def _reader_silenced() -> Iterator[None]:
    """Within the block, the EDF reader logs nothing (a check before the real read)."""
    reader_logger = logging.getLogger("engine.io.edf")
    was = reader_logger.disabled
    reader_logger.disabled = True
    try:
        yield
    finally:
        reader_logger.disabled = was


def _channel_entry(
    channel: Any, scale: float, plan: Any, drawn: str, gain: float = 1.0
) -> dict[str, Any]:
    """The JSON description of one strip: slot, source channel, drawn label, scale (and
    the recording-level gain when ``--normalise`` scaled it)."""
    entry: dict[str, Any] = {
        "role": channel.role,
        "name": channel.name,
        "label": channel.label,
        "slot": channel.name,
        "source": channel.label,
        "drawn": drawn,
        "via": channel.via,
        "fs": float(plan.fs),
        "scale_uv": scale,
        "drawn_as": "envelope" if plan.too_slow else "signal",
    }
    if gain != 1.0:
        entry["gain"] = round(gain, 6)
    if plan.warning:
        entry["warning"] = plan.warning
    return entry


def render_recording(
    task: RecordingTask, on_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Render one recording into its own shards and write its done-marker.

    :func:`draw_recording`, then its finish (the last shard synced and renamed into
    place, the marker written).

    Parameters
    ----------
    task : RecordingTask
    on_progress : callable, optional
        Called with the number of epochs of each batch written.

    Returns
    -------
    dict
        The done-marker: ``pair``, ``subject_id``, ``split``, ``epochs``, ``labels``,
        ``shards`` (:class:`ShardInfo` dicts, names relative to the recording's folder),
        ``channels``, ``fs``, ``montage``, ``missing_roles``, ``scored``, ``warnings``,
        ``seconds``, ``read_seconds``, ``draw_seconds``.

    Raises
    ------
    PSGError
        When the recording or its hypnogram cannot be read or rendered (the reader's
        error first); the shards of this recording written so far are removed.
    """
    return draw_recording(task, on_progress)()


def draw_recording(
    task: RecordingTask, on_progress: Callable[[int], None] | None = None
) -> Callable[[], dict[str, Any]]:
    """Draw one recording into its shards; the finish that makes them final comes back.

    The finish (no arguments) closes the last shard (synced to disk, renamed into place)
    and writes the done-marker, which it returns (see :func:`render_recording`). Until it
    runs, the recording is not done: a resumed run renders it again. The in-process run
    lets it wait for the disk in a thread while the next recording is drawn.

    Raises
    ------
    PSGError
        As :func:`render_recording`; the shard in progress is removed.
    """
    from .epochs import open_epochs
    from .io.edf import open_recording
    from .io.hypnogram import read_hypnogram
    from .normalise import normalise_options
    from .preprocess import Preprocessing
    from .raster import RenderSpec

    started = time.perf_counter()
    settings, pair = task.settings, task.pair
    parts = task.work_dir / "parts" / task.slug
    shutil.rmtree(parts, ignore_errors=True)
    scored = pair.hypnogram_path is not None and not settings.unscored
    preprocessing = Preprocessing(**normalise_options(settings.normalise))
    with _reader_warnings_once(), open_recording(pair.psg_path) as recording:
        if not recording.channels:
            raise RenderError(
                f"{pair.psg_path}: holds no signal channels, only annotations (a hypnogram "
                "or event file, not a recording)"
            )
        montage, missing_roles = montage_for(settings.montage, recording.labels)
        if missing_roles:
            logger.info(
                "%s: no %s channel; drawn with %s",
                pair.psg_path.name,
                "/".join(role.upper() for role in missing_roles),
                montage,
            )
        if scored:
            # Without signal_path: open_epochs aligns an EDF+ start time to the open
            # recording (pyedflib refuses to open a file twice at once).
            hypnogram = read_hypnogram(pair.hypnogram_path, scorer=pair.scorer)
        else:
            hypnogram = _unscored_hypnogram(recording)
        on_device = task.device == "cuda" and _device_preprocessing()
        source = open_epochs(
            recording, hypnogram, montage, preprocessing, device="cuda" if on_device else "cpu"
        )
    read_seconds = time.perf_counter() - started
    keep_unknown = settings.keep_unknown or not scored
    channels = list(source.channels)
    roles = [c.role for c in channels]
    drawn = source.drawn_labels
    spec = RenderSpec.for_roles(
        roles,
        width=settings.width,
        height=settings.height,
        color=settings.color,
        grid=settings.grid,
        context=settings.context,
        labels=tuple(drawn) if settings.labels else None,
    )
    warnings = [f"{c.label!r}: {p.warning}" for c, p in zip(channels, source.plans) if p.warning]
    shorten = _ShortEpochs(settings, source, task.slug)
    header = {
        "dataset": pair.dataset,
        "subject": pair.subject,
        "recording": pair.recording,
        "scorer": pair.scorer,
        "scored": scored,
        "split": task.split,
        "fs": float(source.fs),
        "montage": str(montage),
        "channels": [
            _channel_entry(c, scale, plan, label, gain)
            for c, scale, plan, label, gain in zip(
                channels, spec.scales_uv, source.plans, drawn, source.gains
            )
        ],
        "render": spec.to_dict()
        | {"format": settings.fmt, "quality": settings.quality}
        | shorten.fields(),
        "preprocessing": preprocessing.to_dict(),
        "engine_version": __version__,
    }
    meta_json = _MetaJson(header)
    labels: Counter[str] = Counter()
    epochs = 0
    if settings.features:
        from .features.epoch import recording_features

        emg_reference = _emg_reference(source, roles, task, keep_unknown)
        channel_labels = [c.label for c in channels]
    draw = _Drawer(spec, task.device)
    sink = ShardSink(
        parts, task.split, "{shard:06d}.tar", maxcount=settings.maxcount, maxsize=settings.maxsize
    )
    try:
        for batch in source.iter_batches(
            task.batch_size, context=settings.context, keep_unknown=keep_unknown
        ):
            if len(batch.index) == 0:
                continue
            shown = shorten.choose(len(batch.index))
            images = draw(shorten.blank(batch.signals, shown))
            blobs = _encode(images, settings)
            features = None
            if settings.features:
                target = _target_epoch(_host(batch.signals), settings.context)
                features = [
                    _json_safe(f.to_dict())
                    for f in recording_features(
                        target, source.fs, roles, channel_labels, emg_reference=emg_reference
                    )
                ]
            for j, blob in enumerate(blobs):
                cls = int(batch.stage[j])
                meta = meta_json(
                    {
                        "epoch": int(batch.index[j]),
                        "onset": float(batch.onset[j]),
                        "duration": float(batch.duration[j]),
                        "stage": stage_name(cls),
                        "raw_label": batch.label[j],
                    }
                    | ({"shown_seconds": shorten.seconds} if shown[j] else {})
                    | ({} if features is None else {"features": features[j]})
                )
                key = sample_key(pair.dataset, pair.recording, int(batch.index[j]))
                sink.write(make_sample(key, blob, settings.fmt, cls, meta))
                labels[stage_name(cls)] += 1
            epochs += len(blobs)
            if on_progress is not None:
                on_progress(len(blobs))
        if epochs == 0:
            raise RenderError(
                f"{pair.psg_path}: no epochs to render (every epoch unscored? --keep-unknown "
                "keeps them, --unscored ignores the hypnogram)"
            )
    except BaseException:
        sink.abort()
        raise
    seconds = time.perf_counter() - started  # the drawing, not the wait for the disk

    def finish() -> dict[str, Any]:
        marker = {
            "pair": pair.to_dict(),
            "subject_id": pair.subject_id,
            "split": task.split,
            "epochs": epochs,
            "labels": dict(sorted(labels.items())),
            "shards": [asdict(info) for info in sink.close()],
            "channels": header["channels"],
            "fs": header["fs"],
            "montage": header["montage"],
            "missing_roles": missing_roles,
            "scored": scored,
            "warnings": warnings,
            "seconds": round(seconds, 3),
            "read_seconds": round(read_seconds, 3),
            "draw_seconds": round(seconds - read_seconds, 3),
        }
        done = task.work_dir / "done"
        done.mkdir(parents=True, exist_ok=True)
        atomic_write_text(done / f"{task.slug}.json", json.dumps(marker, indent=1))
        return marker

    return finish


class _ShortEpochs:
    """Which epochs of a recording ``--short-epochs`` draws short, and their blanking.

    A random draw per epoch, seeded by the recording's slug: the same epochs on every run
    (a resumed render writes the same bytes). The target epoch keeps its middle
    ``short_epoch_seconds``; the rest of it is NaN (not drawn), its context untouched.
    """

    def __init__(self, settings: RenderSettings, source: Any, slug: str) -> None:
        self.fraction = settings.short_epochs
        self.seconds = settings.short_epoch_seconds
        self.context = settings.context
        self.epoch = int(source.epoch_samples)
        kept = int(round(self.seconds * source.fs))
        self.flank = (self.epoch - kept) // 2 if kept < self.epoch else 0
        seed = int.from_bytes(hashlib.sha256(slug.encode("utf-8")).digest()[:8], "little")
        self.rng = np.random.default_rng(seed)

    def fields(self) -> dict[str, float]:
        """The render-metadata fields of ``--short-epochs`` (none without it)."""
        if self.fraction <= 0:
            return {}
        return {"short_epochs": self.fraction, "short_epoch_seconds": self.seconds}

    def choose(self, count: int) -> np.ndarray:
        """Booleans: which of the next ``count`` epochs are drawn short."""
        if self.fraction <= 0 or self.flank <= 0:
            return np.zeros(count, dtype=bool)
        return self.rng.random(count) < self.fraction

    def blank(self, signals: Any, shown: np.ndarray) -> Any:
        """``signals`` (a batch, host or device) with the chosen rows' flanks blank (a copy
        when any is chosen)."""
        if not shown.any():
            return signals
        from .epochs import blank_outside

        signals = signals.copy()
        start = self.context * self.epoch
        stop = start + self.epoch
        for row in np.flatnonzero(shown).tolist():
            blank_outside(signals[row], (start, stop), (start + self.flank, stop - self.flank))
        return signals


class _MetaJson:
    """A sample's JSON: the recording's header encoded once, each epoch's fields after it.

    ``_MetaJson(header)(fields)`` equals ``json.dumps(header | fields, separators=(",",
    ":"), allow_nan=False).encode()`` when no field name is in ``header`` (the merged
    dict keeps the header's keys first, in order, then the fields'), byte for byte.
    """

    def __init__(self, header: Mapping[str, Any]) -> None:
        self.header = header
        text = json.dumps(header, separators=(",", ":"), allow_nan=False)
        self.prefix = text[:-1] + ("," if header else "")

    def __call__(self, fields: Mapping[str, Any]) -> bytes:
        if not fields or any(name in self.header for name in fields):
            return json.dumps(
                dict(self.header) | dict(fields), separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        try:
            body = json.dumps(fields, separators=(",", ":"), allow_nan=False)
        except ValueError as err:
            raise ShardError(f"sample metadata is not JSON-serialisable: {err}") from None
        return (self.prefix + body[1:]).encode("utf-8")


def _target_epoch(signals: np.ndarray, context: int) -> np.ndarray:
    """The middle (target) epoch of signals that hold ``2 * context + 1`` epochs."""
    if context == 0:
        return signals
    per_epoch = signals.shape[2] // (2 * context + 1)
    return signals[:, :, context * per_epoch : (context + 1) * per_epoch]


def _emg_reference(
    source: Any, roles: Sequence[str], task: RecordingTask, keep_unknown: bool
) -> Any:
    """The night's chin-EMG distribution (a first, memory-light pass over the epochs)."""
    from .features.epoch import EMGReference, emg_rms

    if "emg" not in roles:
        return None
    channel = roles.index("emg")
    rms = [
        emg_rms(_host(batch.signals)[:, channel], source.fs)
        for batch in source.iter_batches(task.batch_size, context=0, keep_unknown=keep_unknown)
        if len(batch.index)
    ]
    return EMGReference.from_rms(np.concatenate(rms)) if rms else None


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _warm_up(settings: RenderSettings, device: str) -> None:
    """Load the render kernels and the encoder once, so that the render clock times work.

    The first call of a numba kernel loads (or compiles) it, the first encode imports
    the encoder and the first recording imports the readers and scipy's filters; in this
    process that happens here, before the drawing is timed.
    """
    from . import epochs, preprocess  # noqa: F401 - imported for their import time
    from .io import edf, hypnogram  # noqa: F401
    from .raster import RenderSpec

    spec = RenderSpec.for_roles(
        ["eeg"],
        width=settings.width,
        height=settings.height,
        color=settings.color,
        labels=("warm-up",) if settings.labels else None,
    )
    signals = np.zeros((1, 1, 3000), np.float32)
    _encode(_Drawer(spec, device)(signals), settings)


def _preflight(task: RecordingTask) -> tuple[int, str | None]:
    """Check a recording before any drawing: header, channels, montage.

    Returns
    -------
    (int, str or None)
        Its number of whole 30-s epochs (an estimate for the progress bar), and why it
        cannot be rendered (None when it can, as far as the header tells).
    """
    from .io.edf import open_recording
    from .montage import resolve_montage

    try:
        with _reader_silenced(), open_recording(task.pair.psg_path) as recording:
            if not recording.channels:
                return 0, (
                    "holds no signal channels, only annotations (a hypnogram or event "
                    "file, not a recording)"
                )
            montage, _ = montage_for(task.settings.montage, recording.labels)
            resolve_montage(montage, recording.labels, source=str(recording.path))
            return int(recording.duration // EPOCH_SECONDS), None
    except Exception as err:  # noqa: BLE001 - any reader failure is this recording's cause
        return 0, _reason(err, task.pair.psg_path)


def _check_tasks(
    tasks: Sequence[RecordingTask], failed: list[dict[str, str]], progress: bool | None
) -> tuple[list[RecordingTask], dict[str, int]]:
    """:func:`_preflight` every task; failures are appended to ``failed``.

    Returns
    -------
    (list of RecordingTask, dict)
        The tasks that passed, and their epoch estimates by slug.
    """
    from tqdm import tqdm

    checked, estimates = [], {}
    quiet = len(tasks) < 50 or progress is False
    for task in tqdm(tasks, desc="check", unit="rec", disable=True if quiet else None):
        estimate, problem = _preflight(task)
        if problem is None:
            estimates[task.slug] = estimate
            checked.append(task)
        else:
            failed.append(
                {
                    "file": str(task.pair.psg_path),
                    "recording": f"{task.pair.dataset}/{task.pair.recording}",
                    "reason": problem,
                }
            )
    return checked, estimates


def _reason(err: BaseException, path: Path) -> str:
    """A failure's cause in one line, without a leading ``PATH: `` (the file is listed)."""
    text = str(err) if isinstance(err, PSGError) else f"{type(err).__name__}: {err}"
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


# ----------------------------------------------------------------------------------------
# Synthetic nights
# ----------------------------------------------------------------------------------------
def write_synthetic_nights(
    directory: str | os.PathLike, count: int, hours: float, progress: bool | None = None
) -> Path:
    """Write ``count`` synthetic nights (seeds 0..count-1) as EDF files, resumably.

    Night ``i`` is ``night-{i:04d}-PSG.edf`` + ``-Hypnogram.edf`` + ``-events.json``,
    written into a scratch folder and moved into ``directory`` when complete; a night
    already there with the same length is kept (one of another length is written
    again). Returns ``directory`` (render it as ``synthetic:DIR``).

    Parameters
    ----------
    directory : path
    count : int
        Number of nights.
    hours : float
        Length of each night.
    progress : bool, optional
        Show a progress bar, one step per night (default: when stderr is a terminal).
    """
    return _write_synthetic_nights(directory, count, hours, progress)[0]


def _write_synthetic_nights(
    directory: str | os.PathLike, count: int, hours: float, progress: bool | None = None
) -> tuple[Path, int]:
    """:func:`write_synthetic_nights`, also returning how many nights were generated."""
    from tqdm import tqdm

    from .synth import synth_night, write_night

    if count < 1:
        raise DatasetError(f"--synthetic must be at least 1, got {count}")
    directory = Path(directory)
    # Nights beyond ``count`` (an earlier run asked for more) would be rendered too.
    for stale in directory.glob("night-*") if directory.is_dir() else ():
        number = stale.name[len("night-") :].split("-", 1)[0]
        if number.isdigit() and int(number) >= count:
            stale.unlink()
            (directory / f".night-{number}.done").unlink(missing_ok=True)
    if not (math.isfinite(hours) and hours > 0):
        raise DatasetError(f"--synthetic-hours must be positive, got {hours}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"hours": float(hours)})
    generated = 0
    bar = tqdm(
        range(count),
        desc="synthesise",
        unit="night",
        disable=(not progress) if progress is not None else None,
    )
    for number in bar:
        name = f"night-{number:04d}"
        marker = directory / f".{name}.done"
        if marker.exists() and marker.read_text(encoding="utf-8") == stamp:
            continue
        marker.unlink(missing_ok=True)
        bar.set_postfix_str(f"{name}, {hours:g} h")
        scratch = directory / f".partial-{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        write_night(synth_night(number, hours=hours), scratch, name=name)
        for path in sorted(scratch.iterdir()):
            os.replace(path, directory / path.name)
        scratch.rmdir()
        atomic_write_text(marker, stamp)
        generated += 1
    return directory, generated


# ----------------------------------------------------------------------------------------
# Running tasks
# ----------------------------------------------------------------------------------------
def _run_one(
    task: RecordingTask,
    strict: bool,
    queue: Any = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Render one recording; outside strict mode a failure becomes ``{"failed": ...}``.

    Progress (epochs written) goes to ``on_progress(slug, n)`` in this process, or as
    ``(slug, n)`` onto ``queue`` from a worker process.
    """
    callback: Callable[[int], None] | None = None
    if on_progress is not None:

        def callback(n: int) -> None:
            on_progress(task.slug, n)

    elif queue is not None:

        def callback(n: int) -> None:
            queue.put((task.slug, n))

    try:
        return {"slug": task.slug, "done": render_recording(task, callback)}
    except Exception as err:
        return _failure(task, err, strict)


def _failure(task: RecordingTask, err: Exception, strict: bool) -> dict[str, Any]:
    """A task's failure as an outcome (its shards removed); raised again when ``strict``."""
    shutil.rmtree(task.work_dir / "parts" / task.slug, ignore_errors=True)
    psg = str(task.pair.psg_path)
    if strict and isinstance(err, PSGError) and psg not in str(err):
        raise type(err)(f"{psg}: {err}") from err
    if strict:
        raise err
    logger.debug("%s failed", task.pair.psg_path, exc_info=err)
    return {
        "slug": task.slug,
        "failed": {
            "file": psg,
            "recording": f"{task.pair.dataset}/{task.pair.recording}",
            "reason": _reason(err, task.pair.psg_path),
        },
    }


def _execute_here(
    tasks: Sequence[RecordingTask],
    strict: bool,
    on_progress: Callable[[str, int], None] | None,
) -> Iterator[dict[str, Any]]:
    """Run the tasks one after another in this process, each one's finish (the wait for
    its last shard and its marker to reach the disk) in a thread while the next one is
    drawn. An outcome is yielded once its finish is done; stopping early waits for the
    finish under way."""
    from concurrent.futures import Future, ThreadPoolExecutor

    def start(task: RecordingTask) -> Future | dict[str, Any]:
        def callback(n: int) -> None:
            on_progress(task.slug, n)  # type: ignore[misc]

        try:
            finish = draw_recording(task, callback if on_progress is not None else None)
        except Exception as err:
            return _failure(task, err, strict)
        return finisher.submit(finish)

    def outcome(task: RecordingTask, started: Future | dict[str, Any]) -> dict[str, Any]:
        if isinstance(started, dict):
            return started
        try:
            return {"slug": task.slug, "done": started.result()}
        except Exception as err:
            return _failure(task, err, strict)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psgvlm-finish") as finisher:
        previous: tuple[RecordingTask, Future | dict[str, Any]] | None = None
        for task in tasks:
            current = (task, start(task))
            if previous is not None:
                yield outcome(*previous)
            previous = current
            if isinstance(current[1], dict):  # failed while drawing: told before the next
                yield current[1]
                previous = None
        if previous is not None:
            yield outcome(*previous)


def _init_worker(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _run_one_on_one_core(task: RecordingTask, strict: bool) -> dict[str, Any]:
    """:func:`_run_one` with one numba thread (a Ray task holds one CPU)."""
    _init_worker(1)
    return _run_one(task, strict)


def _execute(
    tasks: Sequence[RecordingTask],
    workers: int,
    ray_address: str | None,
    strict: bool,
    on_progress: Callable[[str, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield each task's outcome as it finishes: in process, in a pool or on Ray.

    Closing the generator early (the caller stops at a failure) lets running tasks
    finish and starts no new one.
    """
    if ray_address:
        yield from _execute_ray(tasks, workers, ray_address, strict)
    elif workers <= 1:
        yield from _execute_here(tasks, strict, on_progress)
    else:
        yield from _execute_pool(tasks, workers, strict, on_progress)


def _execute_pool(
    tasks: Sequence[RecordingTask],
    workers: int,
    strict: bool,
    on_progress: Callable[[str, int], None] | None,
) -> Iterator[dict[str, Any]]:
    """Run the tasks in a pool of worker processes; progress comes through a queue."""
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = _worker_context()
    manager, channel = None, None
    if on_progress is not None:
        try:
            manager = context.Manager()
            channel = manager.Queue()
        except Exception:  # noqa: BLE001 - without it the bar moves per recording
            logger.debug("no progress queue for the worker processes", exc_info=True)
            manager, channel = None, None

    def drain() -> None:
        while channel is not None:
            try:
                slug, n = channel.get_nowait()
            except queues.Empty:
                return
            on_progress(slug, n)  # type: ignore[misc]

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    try:
        pending = {pool.submit(_run_one, task, strict, channel) for task in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                yield future.result()
    except KeyboardInterrupt:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if manager is not None:
            manager.shutdown()


def _stop_workers(pool: Any) -> None:
    """Ctrl-C: end a pool's workers now. They ignore SIGINT (:mod:`engine.render_worker`),
    so that one Ctrl-C stops the run here, in one place; what they were drawing is drawn
    again by a rerun. ``ProcessPoolExecutor`` has no public call for this before Python
    3.14 (``terminate_workers``); a worker started during the pool's own start would
    otherwise wait for work forever, and the command with it."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _worker_context() -> Any:
    """The multiprocessing context render workers start from.

    A fork server that has imported :mod:`engine.render_worker` (the render path with
    its kernels loaded) where the platform has one: workers are forked from it ready to
    draw. Elsewhere, fresh spawned processes (each imports and loads on its own). Plain
    ``fork`` is never used: the parent may hold threads (numba's pool, progress bars).
    """
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["engine.render_worker"])
        return context
    return multiprocessing.get_context("spawn")


def worker_probe() -> dict:
    """What a render worker holds before its first task (the tests submit it to a pool).

    Returns
    -------
    dict
        ``pid``; ``heavy``: which of torch, webdataset, vlm and scipy.signal are
        imported (none should be); ``preloaded``: the fork server's preload
        (:mod:`engine.render_worker`) is there, kernels loaded (the filters', and both
        builds of the render kernel: prange, and the plain loop a one-thread worker uses).
    """
    heavy = ("torch", "webdataset", "vlm", "scipy.signal")
    dsp = sys.modules.get("engine.dsp")
    raster = sys.modules.get("engine.raster.kernels")
    return {
        "pid": os.getpid(),
        "heavy": sorted(m for m in heavy if m in sys.modules),
        "preloaded": "engine.render_worker" in sys.modules
        and dsp is not None
        and dsp._kernels.cache_info().currsize > 0
        and raster is not None
        and raster.build_render_kernels.cache_info().currsize >= 2,
    }


def _execute_ray(
    tasks: Sequence[RecordingTask], workers: int, address: str, strict: bool
) -> Iterator[dict[str, Any]]:
    """Run :func:`_run_one` as a Ray remote function, one task per recording."""
    try:
        import ray
    except ImportError:
        raise RenderError("--ray needs ray: pip install 'psgvlm[cluster]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(_run_one_on_one_core)
        pending = [remote.remote(task, strict) for task in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in pending:  # the caller stopped early: start no more
            ray.cancel(ref)
        if started_here:
            ray.shutdown()


# ----------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------
@dataclass
class RenderReport:
    """What a :func:`render_dataset` call did.

    Attributes
    ----------
    manifest : Manifest
        The finished directory's manifest (empty when the run stopped).
    out : Path
    rendered, resumed : int
        Recordings drawn in this call, and found finished by an earlier one.
    epochs : int
        Epochs drawn in this call.
    seconds : float
        Wall time of the drawing phase (reading, filtering, drawing, encoding, writing),
        without the synthesis of ``--synthetic`` nights.
    read_seconds, draw_seconds : float
        Summed over the recordings: reading + filtering, and drawing + encoding + writing.
    synth_nights, synth_hours, synth_seconds
        Synthetic nights generated in this call, their length and the time it took.
    startup_seconds : float
        Loading the render kernels and the encoder before the clock starts (in-process
        runs; worker processes load them inside their first recording).
    already_complete : bool
        The directory was finished already; nothing was done.
    failed : list of dict
        Recordings that could not be rendered: ``{"file", "reason"}`` (+ ``recording``).
    stopped : bool
        The run stopped at a failure (no ``--keep-going``): no manifest was written and
        the finished recordings wait in ``OUT/_work`` for a rerun.
    not_attempted : int
        Recordings left undone because the run stopped.
    retried : int
        Recordings of an earlier run's failure list tried again.
    notes : list of str
        Things a user should know (an empty split, mixed montages, too-slow channels).
    """

    manifest: Manifest
    out: Path
    rendered: int = 0
    resumed: int = 0
    epochs: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0
    draw_seconds: float = 0.0
    synth_nights: int = 0
    synth_hours: float = 0.0
    synth_seconds: float = 0.0
    startup_seconds: float = 0.0
    already_complete: bool = False
    failed: list[dict[str, str]] = field(default_factory=list)
    stopped: bool = False
    not_attempted: int = 0
    retried: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every recording was rendered."""
        return not self.failed and not self.stopped

    def summary(self, failures: bool = True) -> str:
        """A human-readable table: totals, per-split label counts, throughput, failures.

        Parameters
        ----------
        failures : bool
            End with the failed recordings and what to do (see :meth:`failure_report`).
        """
        manifest = self.manifest
        lines = []
        if self.already_complete:
            lines.append(f"{self.out}: already complete")
        elif self.stopped:
            lines.append(
                f"{self.out}: stopped at a failure: {len(self.failed)} failed, "
                f"{self.rendered} rendered ({self.epochs} epochs), {self.resumed} resumed, "
                f"{self.not_attempted} not attempted; no manifest written"
            )
        else:
            retried = f", {self.retried} retried" if self.retried else ""
            lines.append(
                f"{self.out}: rendered {self.rendered} recordings ({self.epochs} epochs), "
                f"{self.resumed} resumed{retried}"
            )
        if self.synth_nights:
            each = self.synth_seconds / self.synth_nights
            lines.append(
                f"synthesis: {self.synth_nights} nights of {self.synth_hours:g} h in "
                f"{self.synth_seconds:.1f} s ({each:.1f} s a night; not part of the render rate)"
            )
        if self.epochs:
            rate = self.epochs / self.seconds if self.seconds > 0 else 0.0
            line = f"render: {self.epochs} epochs in {self.seconds:.1f} s ({rate:.0f} epochs/s)"
            if self.startup_seconds:
                line += f" after {self.startup_seconds:.1f} s loading the kernels"
            if self.read_seconds or self.draw_seconds:
                draw_rate = self.epochs / self.draw_seconds if self.draw_seconds > 0 else 0.0
                line += (
                    f"; reading+filtering {self.read_seconds:.1f} s, drawing+encoding+writing "
                    f"{self.draw_seconds:.1f} s ({draw_rate:.0f} epochs/s)"
                )
            lines.append(line)
        if not self.stopped:
            unscored = " (unscored: every epoch UNK, cls -1)" if manifest.unscored else ""
            lines.append(
                f"{len(manifest.recordings)} recordings, {manifest.total_samples} samples in "
                f"{len(manifest.shards)} shards; {len(manifest.failed)} failed{unscored}"
            )
            names = ["W", "N1", "N2", "N3", "R", "UNK"]
            lines.append(
                f"{'split':<6}{'subj':>6}{'shards':>8}{'samples':>9}"
                + "".join(f"{n:>8}" for n in names)
            )
            for split, counts in manifest.split_counts().items():
                lines.append(
                    f"{split:<6}{len(manifest.subjects.get(split, [])):>6}{counts['shards']:>8}"
                    f"{counts['samples']:>9}" + "".join(f"{counts.get(n, 0):>8}" for n in names)
                )
        if not self.stopped:
            lines += [f"note: {note}" for note in self.notes]
        if failures and self.failed:
            lines.append(self.failure_report())
        return "\n".join(lines)

    def failure_report(self) -> str:
        """The failed recordings, one line each with its cause, and what to do next."""
        lines = [f"failed: {f['file']}: {f['reason']}" for f in self.failed]
        others = (
            f", or add --keep-going to render the other {self.not_attempted}"
            if self.not_attempted
            else ""
        )
        if self.stopped and not (self.rendered or self.resumed):
            lines.append(
                f"nothing was drawn: fix the cause and rerun (corrected arguments are "
                f"accepted){others}"
            )
        elif self.stopped:
            lines.append(
                f"stopped at the first failure; the {self.rendered + self.resumed} "
                f"recording(s) finished so far are kept in {self.out / _WORK}: fix the cause "
                f"and rerun the same command to go on{others}"
            )
        elif self.failed:
            lines.append(
                f"{len(self.failed)} recording(s) failed (listed in {self.out}/manifest.json); "
                "fix the cause and rerun the same command to retry them"
            )
        return "\n".join(lines)


def _absolute_spec(spec: str) -> str:
    """An input with its folder made absolute; ``NAME:DIR`` with an unknown NAME is kept as
    typed, so that the error names the dataset (``unknown dataset 'dreams'``), not a path."""
    from .io.datasets import is_dataset_spec

    name, sep, where = spec.partition(":")
    if is_dataset_spec(spec):
        return f"{name}:{Path(where).expanduser().resolve()}"
    if sep and re.fullmatch(r"[A-Za-z][\w-]*", name) and not os.path.exists(spec):
        return spec
    return str(Path(spec).expanduser().resolve())


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    differ = [k for k in keys if old.get(k) != new.get(k)]
    settings = [
        f"settings.{k}"
        for k in sorted(set(old.get("settings", {})) | set(new.get("settings", {})))
        if old.get("settings", {}).get(k) != new.get("settings", {}).get(k)
    ]
    return [k for k in differ if k != "settings"] + settings


def _finished_markers(work: Path) -> list[Path]:
    done = work / "done"
    return sorted(done.glob("*.json")) if done.is_dir() else []


def _start_or_resume(out: Path, work: Path, config: dict[str, Any], retrying: bool = False) -> None:
    """Refuse to mix runs: a resumed run must have the same output-shaping arguments.

    An unfinished run that finished no recording is discarded when the arguments
    changed (a corrected rerun).
    """
    run_file = work / _RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if previous == config:
            return
        differences = ", ".join(_config_differences(previous, config))
        finished = _finished_markers(work)
        if finished:
            raise ShardError(
                f"{out} holds an unfinished run with {len(finished)} finished recordings, "
                f"started with different arguments ({differences}); rerun it with the same "
                f"arguments, delete {work} to start over, or use a new --out"
            )
        logger.info(
            "%s: the earlier run there finished no recording; starting over with the new "
            "arguments (%s)",
            out,
            differences,
        )
        shutil.rmtree(work)
    if not retrying and list_shards(out):
        raise ShardError(f"{out} already holds shards but no run or manifest; use an empty --out")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(config, indent=1))


def _plan(
    out: Path,
    work: Path,
    tasks: Sequence[RecordingTask],
    failed: list[dict[str, str]],
    config: dict[str, Any],
    command: list[str],
    previous: Manifest | None = None,
) -> None:
    """Number the finished recordings' shards and write the rename plan + manifest.

    With ``previous`` (a finished run whose failures are being retried), its shards and
    recordings are kept and the new shards are numbered after its shards of each split.
    """
    renames: list[tuple[str, str]] = []
    shards: list[ShardInfo] = list(previous.shards) if previous else []
    recordings: list[dict[str, Any]] = list(previous.recordings) if previous else []
    subjects: dict[str, set[str]] = {
        split: set(previous.subjects.get(split, []) if previous else []) for split in SPLITS
    }
    for split in SPLITS:
        number = sum(1 for info in shards if info.split == split)
        for task in (t for t in tasks if t.split == split):
            marker_path = work / "done" / f"{task.slug}.json"
            if not marker_path.exists():
                continue
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
            names = []
            for info in marker["shards"]:
                final = shard_name(split, number)
                number += 1
                renames.append((f"parts/{task.slug}/{info['name']}", final))
                shards.append(ShardInfo.from_dict(info | {"name": final}))
                names.append(final)
            subjects[split].add(marker["subject_id"])
            keys = ("split", "epochs", "labels", "channels", "fs", "montage", "scored")
            recordings.append(
                marker["pair"] | {k: marker[k] for k in keys if k in marker} | {"shards": names}
            )
    shards.sort(key=lambda info: (SPLITS.index(info.split), info.name))
    manifest = Manifest(
        shards=shards,
        subjects={split: sorted(subjects[split]) for split in SPLITS},
        recordings=recordings,
        failed=failed,
        command=command,
        config=config,
        unscored=bool(config["settings"].get("unscored")),
    )
    plan = {"renames": renames, "manifest": manifest.to_dict()}
    atomic_write_text(work / _FINALIZE_FILE, json.dumps(plan, indent=1))


def _finalize(out: Path, work: Path) -> Manifest:
    """Carry out the rename plan (idempotent), write the manifest, remove the work folder."""
    plan = json.loads((work / _FINALIZE_FILE).read_text(encoding="utf-8"))
    for source, target in plan["renames"]:
        source_path, target_path = work / source, out / target
        if source_path.exists():
            os.replace(source_path, target_path)
        elif not target_path.exists():
            raise ShardError(
                f"{source_path} and {target_path} are both missing: the output folder was "
                f"changed during the run; delete {out} and render again"
            )
    manifest = Manifest.from_dict(plan["manifest"])
    manifest.write(out)
    shutil.rmtree(work)
    return manifest


def _run_notes(manifest: Manifest) -> list[str]:
    """Notes on a finished directory: mixed montages, channels too slow for their role."""
    notes = []
    montages = Counter(r.get("montage") for r in manifest.recordings if r.get("montage"))
    if len(montages) > 1:
        listed = "; ".join(f"{n} x {m}" for m, n in montages.most_common())
        notes.append(
            f"recordings were drawn with different montages ({listed}); pass --montage to "
            "draw every recording with the same channels"
        )
    slow: Counter[str] = Counter()
    for recording in manifest.recordings:
        for channel in recording.get("channels", []):
            if channel.get("drawn_as") == "envelope":
                slow[f"{channel['role']} channel at {channel.get('fs', 0):g} Hz"] += 1
    for what, n in slow.items():
        notes.append(
            f"{n} recording(s): {what} is too slow for its band; drawn as its night-"
            "normalised envelope (json channels[].drawn_as = envelope)"
        )
    return notes


def render_dataset(
    inputs: Sequence[str],
    out: str | os.PathLike,
    settings: RenderSettings,
    *,
    synthetic: int = 0,
    synthetic_hours: float = 8.0,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    subjects_file: str | os.PathLike | None = None,
    hypnogram: str | os.PathLike | None = None,
    workers: int = 1,
    device: str = "cpu",
    batch_size: int = 64,
    keep_going: bool = False,
    strict: bool = False,
    ray_address: str | None = None,
    command: Sequence[str] = (),
    progress: bool | None = None,
) -> RenderReport:
    """Render recordings (and/or synthetic nights) into ``out``; resume if interrupted.

    Parameters
    ----------
    inputs : sequence of str
        Files, folders, globs or dataset specs (:func:`engine.io.datasets.find_pairs`).
    out : str or Path
        Shard directory.
    settings : RenderSettings
        Everything that shapes the output (``settings.unscored`` ignores hypnograms).
    synthetic, synthetic_hours
        Also render this many synthetic nights of this length (written as EDF into
        ``out/_synthetic`` first).
    split, seed, subjects_file
        Subject split: fractions and seed, or a fixed subject -> split table.
    hypnogram : path, optional
        The hypnogram of the one recording ``inputs`` names.
    workers : int
        Parallel processes (or Ray CPUs with ``ray_address="local"``).
    device : {"cpu", "cuda"}
        Where images are drawn.
    batch_size : int
        Epochs per render/encode batch.
    keep_going : bool
        Render every other recording when some fail (the manifest lists the failures);
        by default the run stops at the first failure, keeping what is finished for a
        rerun.
    strict : bool
        Raise the first failure as an exception (for library callers).
    ray_address : str, optional
        Run tasks on Ray: ``"auto"``, ``"ray://host:10001"``, or ``"local"`` for a
        local Ray instance with ``workers`` CPUs.
    command : sequence of str
        The command line, recorded in the manifest.
    progress : bool, optional
        Show progress bars (default: when stderr is a terminal).

    Returns
    -------
    RenderReport
        ``report.ok`` is False when a recording failed (see ``report.failed``).

    Raises
    ------
    PSGError
        Invalid arguments, an output folder holding another run, or no recording at all
        that could be rendered.
    """
    from tqdm import tqdm

    if workers < 1:
        raise RenderError(f"--workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise RenderError(f"--batch-size must be at least 1, got {batch_size}")
    if device not in ("cpu", "cuda"):
        raise RenderError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        from .raster import cuda_available

        if not cuda_available():
            raise RenderError("--device cuda: no CUDA device is available")
    if len(split) != 3 or not math.isclose(sum(split), 1.0, abs_tol=1e-6) or min(split) < 0:
        raise DatasetError(
            f"split fractions must be three non-negative numbers summing to 1: {split}"
        )
    if not inputs and not synthetic:
        raise DatasetError("nothing to render: give INPUT files/specs or --synthetic N")
    if hypnogram is not None:
        if settings.unscored:
            raise DatasetError("--hypnogram and --unscored exclude each other")
        if len(inputs) != 1:
            raise DatasetError(
                f"--hypnogram pairs one recording: give exactly one INPUT file, got {len(inputs)}"
            )
        if not Path(hypnogram).expanduser().is_file():
            raise DatasetError(f"--hypnogram {hypnogram}: no such file")
    if synthetic < 0:
        raise DatasetError(f"--synthetic must be 0 or more, got {synthetic}")
    if synthetic and not (math.isfinite(synthetic_hours) and synthetic_hours > 0):
        raise DatasetError(f"--synthetic-hours must be positive, got {synthetic_hours}")
    out = Path(out).expanduser().resolve()
    table = read_subjects_file(subjects_file) if subjects_file else None
    out.mkdir(parents=True, exist_ok=True)
    work = out / _WORK
    config = json.loads(
        json.dumps(
            {
                "settings": asdict(settings),
                "inputs": [_absolute_spec(spec) for spec in inputs],
                "hypnogram": str(Path(hypnogram).expanduser().resolve()) if hypnogram else None,
                "synthetic": synthetic,
                "synthetic_hours": synthetic_hours if synthetic else None,
                "split": list(split) if table is None else None,
                "seed": seed if table is None else None,
                "subjects": table,
            }
        )
    )
    if (work / _FINALIZE_FILE).exists():
        started_with = json.loads((work / _RUN_FILE).read_text(encoding="utf-8"))
        if started_with != config:
            raise ShardError(
                f"{out} holds a run that was being finished, started with different arguments "
                f"({', '.join(_config_differences(started_with, config))}); rerun it with the "
                "same arguments to complete it"
            )
        manifest = _finalize(out, work)
        return RenderReport(manifest, out, failed=list(manifest.failed), notes=_run_notes(manifest))
    previous: Manifest | None = None
    if (out / "manifest.json").exists():
        manifest = read_manifest(out)
        if manifest.config != config:
            differences = ", ".join(_config_differences(manifest.config, config))
            if manifest.shards:
                raise ShardError(
                    f"{out} holds a finished render with different arguments ({differences}); "
                    "use a new --out"
                )
            logger.info(
                "%s: the earlier run there rendered nothing; starting over with the new "
                "arguments (%s)",
                out,
                differences,
            )
            (out / "manifest.json").unlink()
        elif not manifest.failed:
            return RenderReport(manifest, out, already_complete=True)
        else:
            previous = manifest
            logger.info(
                "%s: retrying the %d failed recording(s) of the earlier run",
                out,
                len(manifest.failed),
            )
    _start_or_resume(out, work, config, retrying=previous is not None)

    report = RenderReport(Manifest(), out)
    specs = list(config["inputs"])
    synthetic_spec = []
    if synthetic:
        began = time.perf_counter()
        directory, generated = _write_synthetic_nights(
            out / _SYNTHETIC, synthetic, synthetic_hours, progress
        )
        report.synth_nights, report.synth_hours = generated, synthetic_hours
        report.synth_seconds = time.perf_counter() - began
        synthetic_spec = [f"synthetic:{directory}"]
    failed: list[dict[str, str]] = []
    pairs: list[RecordingPair] = []
    if hypnogram is None and specs + synthetic_spec:
        pairs = resolve_inputs(
            specs + synthetic_spec,
            scorer=settings.scorer,
            unpaired=failed,
            unscored=settings.unscored,
        )
    else:  # --hypnogram belongs to the one INPUT, not to the synthetic nights
        pairs = resolve_inputs(specs, scorer=settings.scorer, unpaired=failed, hypnogram=hypnogram)
        if synthetic_spec:
            pairs += resolve_inputs(synthetic_spec, scorer=settings.scorer)
    if strict and failed:
        raise DatasetError(f"{failed[0]['file']}: {failed[0]['reason']}")
    done_before = {
        (r["dataset"], r["recording"]) for r in (previous.recordings if previous else [])
    }
    pairs = [p for p in pairs if (p.dataset, p.recording) not in done_before]
    subject_ids = [pair.subject_id for pair in pairs] + [
        s for subjects in (previous.subjects.values() if previous else []) for s in subjects
    ]
    assignment = (
        _splits_from_table(subject_ids, table)
        if table is not None
        else assign_splits(subject_ids, split, seed)
    )
    if previous is not None:  # a subject keeps the split it already has
        for split_name, subjects in previous.subjects.items():
            assignment.update({subject: split_name for subject in subjects})
    if table is None and not previous:
        if empty := empty_splits(assignment, split):
            counts = Counter(assignment.values())
            report.notes.append(
                f"{' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: "
                f"{len(assignment)} subject(s) for the splits "
                + ", ".join(f"{counts.get(s, 0)} {s}" for s in SPLITS)
                + " (with few subjects train gets one first, then test, then val)"
            )
    tasks = [
        RecordingTask(pair, assignment[pair.subject_id], work, settings, device, batch_size)
        for pair in pairs
    ]
    slugs = Counter(task.slug for task in tasks)
    if clash := [slug for slug, n in slugs.items() if n > 1]:
        raise DatasetError(f"recording ids collide after sanitizing into sample keys: {clash[:3]}")
    finished = {path.stem for path in _finished_markers(work)}
    pending = [t for t in tasks if t.slug not in finished]
    report.resumed = len(tasks) - len(pending)
    retry_files = {f["file"] for f in previous.failed} if previous else set()
    report.retried = sum(1 for t in pending if str(t.pair.psg_path) in retry_files)
    checked, estimates = _check_tasks(pending, failed, progress)
    if strict and failed:
        raise DatasetError(f"{failed[0]['file']}: {failed[0]['reason']}")
    if not tasks and not previous:
        raise DatasetError(
            "nothing can be rendered: " + "; ".join(f"{f['file']}: {f['reason']}" for f in failed)
            if failed
            else "no recording found"
        )
    if failed and not keep_going:
        report.failed = failed
        report.stopped = True
        report.not_attempted = len(checked)
        return report

    resumed_epochs = sum(
        json.loads(path.read_text(encoding="utf-8"))["epochs"] for path in _finished_markers(work)
    )
    counted: Counter[str] = Counter()
    bar = tqdm(
        total=resumed_epochs + sum(estimates.values()),
        initial=resumed_epochs,
        unit="epoch",
        desc="render",
        disable=(not progress) if progress is not None else None,
    )

    def advance(slug: str, n: int) -> None:
        counted[slug] += n
        bar.update(n)

    if checked and workers <= 1 and not ray_address:
        began = time.perf_counter()
        _warm_up(settings, device)
        report.startup_seconds = time.perf_counter() - began
    if workers > 1 or ray_address:
        # Longest first: the last recordings to start are short ones, so every process
        # finishes at about the same time. Shards are numbered by _plan, in task order.
        checked.sort(key=lambda task: estimates[task.slug], reverse=True)
    started = time.perf_counter()
    failed_slugs: set[str] = set()
    with bar:
        outcomes = _execute(
            checked, workers, ray_address, strict, advance if not bar.disable else None
        )
        try:
            for outcome in outcomes:
                slug = outcome["slug"]
                if "failed" in outcome:
                    failed_slugs.add(slug)
                    bar.update(-counted.pop(slug, 0))
                    failed.append(outcome["failed"])
                    logger.warning("%s: %s", outcome["failed"]["file"], outcome["failed"]["reason"])
                    if not keep_going:
                        report.stopped = True
                        break
                else:
                    marker = outcome["done"]
                    bar.update(marker["epochs"] - counted.pop(slug, 0))
                    report.rendered += 1
                    report.epochs += marker["epochs"]
                    report.read_seconds += marker.get("read_seconds", 0.0)
                    report.draw_seconds += marker.get("draw_seconds", 0.0)
        finally:
            outcomes.close()  # a stopped pool lets running tasks finish, starts no more
        bar.total = bar.n
        bar.refresh()
    report.seconds = time.perf_counter() - started
    report.failed = failed
    if report.stopped:
        # Tasks that were running when the run stopped may have finished meanwhile.
        now_finished = {path.stem for path in _finished_markers(work)}
        markers = [work / "done" / f"{t.slug}.json" for t in checked if t.slug in now_finished]
        report.rendered = len(markers)
        report.epochs = sum(json.loads(m.read_text(encoding="utf-8"))["epochs"] for m in markers)
        report.not_attempted = sum(
            1 for t in checked if t.slug not in now_finished and t.slug not in failed_slugs
        )
        return report
    _plan(out, work, tasks, failed, config, list(command), previous)
    report.manifest = _finalize(out, work)
    report.notes += _run_notes(report.manifest)
    return report


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except RenderError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 3e9, 500M or 2G, got {text!r}")
    factor = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match[2].lower()]
    return int(float(match[1]) * factor)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm render``; every option's help ends with its default."""
    from .montage import DEFAULT_MONTAGE

    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="EDF/BDF files, folders, globs or dataset specs (sleep-edf:DIR, shhs:DIR, "
        "mass:DIR, isruc:DIR, dcsm:DIR, synthetic:DIR); a file named explicitly is taken as "
        "a recording whatever its name (default: none)",
    )
    parser.add_argument("--out", required=True, type=Path, help="shard directory (required)")
    parser.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="also synthesise N nights and render them; their subjects are split by --split "
        "like any others, so 2 nights give 1 train / 0 val / 1 test (default: 0)",
    )
    parser.add_argument(
        "--synthetic-hours",
        type=float,
        default=8.0,
        metavar="H",
        help="length of each synthetic night in hours (default: 8.0)",
    )
    parser.add_argument(
        "--montage",
        default=AUTO_MONTAGE,
        help=f"channels to draw, in order, as role=NAME[,role=NAME...] with roles eeg, eog, "
        f"emg, ecg, and fast (the EEG's 10-45 Hz band, scaled per recording: "
        f"eeg=C4-M1,fast=C4-M1); 'auto' draws {DEFAULT_MONTAGE} with the roles each "
        "recording has (an EEG is required) (default: auto)",
    )
    parser.add_argument(
        "--hypnogram",
        type=Path,
        metavar="FILE",
        help="the hypnogram of the one recording INPUT names, when it is not found by its "
        "file name (default: found next to the recording)",
    )
    parser.add_argument(
        "--unscored",
        action="store_true",
        help="ignore hypnograms: render every 30-s epoch of each recording with stage UNK "
        "(cls -1), for inference and pre-training; the manifest says so (default: off)",
    )
    parser.add_argument(
        "--size", type=_parse_size, default=(448, 224), help="WIDTHxHEIGHT (default: 448x224)"
    )
    parser.add_argument(
        "--color", action="store_true", help="one colour per channel (default: grey)"
    )
    parser.add_argument(
        "--grid", action="store_true", help="draw 1-s and 5-s grid lines (default: off)"
    )
    parser.add_argument(
        "--no-labels",
        action="store_true",
        help="do not draw channel names (default: each strip is labelled with the "
        "recording's channel actually drawn)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=0,
        metavar="K",
        help="neighbouring epochs on each side, 0-10 (default: 0)",
    )
    parser.add_argument(
        "--normalise",
        metavar="ROLE=UV[@LOW-HIGH]",
        help="scale each channel of a role, once per recording, so that the median rms of "
        "its 30-s windows is UV µV (e.g. eeg=15), measured in the LOW-HIGH Hz band only when "
        "given (eeg=9@0.5-2: by its slow waves); models trained on such shards stage with "
        "the same scaling; default: drawn as recorded",
    )
    parser.add_argument(
        "--short-epochs",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="draw this fraction of epochs (0-1, at random, the same on every run) as a "
        "20-s scorer epoch is shown to a model: the middle --short-epoch-seconds of the "
        "target epoch, the rest of it blank; teaches a model to read 20-s R&K epochs "
        "(default: 0)",
    )
    parser.add_argument(
        "--short-epoch-seconds",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds shown of an epoch drawn short (default: 20)",
    )
    parser.add_argument(
        "--format", choices=IMAGE_FORMATS, default="png", help="image encoding (default: png)"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="render device (default: cpu)"
    )
    parser.add_argument(
        "--maxcount", type=int, default=10000, help="most samples per shard (default: 10000)"
    )
    parser.add_argument(
        "--maxsize",
        type=_parse_bytes,
        default=3_000_000_000,
        help="most bytes per shard, e.g. 500M or 2G (default: 3G)",
    )
    parser.add_argument(
        "--split",
        default="0.8,0.1,0.1",
        help="train,val,test fractions of SUBJECTS; with fewer subjects than non-zero "
        "fractions, train gets one first, then test, then val (default: 0.8,0.1,0.1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the subject split (default: 0)"
    )
    parser.add_argument(
        "--subjects-file",
        type=Path,
        help="JSON or CSV subject -> split table, overrides --split (default: none)",
    )
    parser.add_argument(
        "--keep-unknown",
        action="store_true",
        help="keep unscored epochs of scored recordings as cls -1 (default: dropped)",
    )
    parser.add_argument(
        "--features",
        action="store_true",
        help="store evidence features in json['features'] (default: off)",
    )
    parser.add_argument(
        "--scorer", type=int, default=1, help="hypnogram scorer, ISRUC: 1 or 2 (default: 1)"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="when a recording fails, render the others and list the failures in the "
        "manifest; the exit status is still 1 (default: stop at the first failure and keep "
        "what is finished for a rerun)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first failure; this is the default, kept for old scripts (default: off)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: auto, ray://HOST:10001, or local (a local Ray with --workers CPUs) "
        "(default: no Ray)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="epochs per render batch (default: 64)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bars (default: shown)"
    )


def _command_line(args: argparse.Namespace) -> list[str]:
    """The canonical ``psgvlm render`` command for parsed arguments."""
    words = ["psgvlm", "render", *args.inputs, "--out", str(args.out)]
    options = {
        "--synthetic": args.synthetic or None,
        "--synthetic-hours": args.synthetic_hours if args.synthetic else None,
        "--montage": args.montage,
        "--hypnogram": args.hypnogram,
        "--size": f"{args.size[0]}x{args.size[1]}",
        "--context": args.context,
        "--normalise": args.normalise,
        "--short-epochs": args.short_epochs or None,
        "--short-epoch-seconds": args.short_epoch_seconds if args.short_epochs else None,
        "--format": args.format,
        "--quality": args.quality,
        "--workers": args.workers,
        "--device": args.device,
        "--maxcount": args.maxcount,
        "--maxsize": args.maxsize,
        "--split": args.split,
        "--seed": args.seed,
        "--subjects-file": args.subjects_file,
        "--scorer": args.scorer,
        "--ray": args.ray,
        "--batch-size": args.batch_size,
    }
    for option, value in options.items():
        if value is not None:
            words += [option, str(value)]
    flags = ("color", "grid", "no_labels", "keep_unknown", "features", "unscored", "keep_going")
    words += [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]
    return words


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm render``; exit status 1 when any recording failed."""
    if args.strict and args.keep_going:
        raise RenderError("--strict and --keep-going exclude each other")
    settings = RenderSettings(
        montage=args.montage,
        width=args.size[0],
        height=args.size[1],
        color=args.color,
        grid=args.grid,
        labels=not args.no_labels,
        context=args.context,
        fmt=args.format,
        quality=args.quality,
        maxcount=args.maxcount,
        maxsize=args.maxsize,
        keep_unknown=args.keep_unknown,
        features=args.features,
        scorer=args.scorer,
        unscored=args.unscored,
        normalise=args.normalise,
        short_epochs=args.short_epochs,
        short_epoch_seconds=args.short_epoch_seconds,
    )
    report = render_dataset(
        args.inputs,
        args.out,
        settings,
        synthetic=args.synthetic,
        synthetic_hours=args.synthetic_hours,
        split=parse_fractions(args.split),
        seed=args.seed,
        subjects_file=args.subjects_file,
        hypnogram=args.hypnogram,
        workers=args.workers,
        device=args.device,
        batch_size=args.batch_size,
        keep_going=args.keep_going,
        ray_address=args.ray,
        command=_command_line(args),
        progress=False if args.no_progress else None,
    )
    print(report.summary(failures=False), flush=True)
    if report.failed or report.stopped:
        for line in report.failure_report().splitlines():
            print(f"psgvlm render: {line}", file=sys.stderr)
        return 1
    return 0

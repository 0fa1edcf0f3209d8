"""``psgvlm render``: recordings to WebDataset shards, resumable, split by subject.

Each recording is one task: read its hypnogram, open its epochs, stream batches through
the rasterizer and the encoder and hand the samples to the task's own
:class:`~engine.shards.ShardSink`. A task holds one recording and one batch of images at
a time, never a list of all images. Tasks run in this process (``--workers 1``), a
process pool (``--workers N``) or on a Ray cluster (``--ray ADDRESS``), all through the
same function, :func:`render_recording`.

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

Resume: rerunning the same command skips every recording with a done-marker, deletes
and redoes the shards of recordings without one, and then renames. Arguments that change
the output (montage, size, format, split...) must be the same; ``--workers``, ``--ray``,
``--batch-size``, ``--device`` and ``--strict`` may differ.

Splits are by subject: subjects are ordered by ``sha256(seed:dataset:subject)`` and cut
by the fractions (counts by largest remainder, every non-zero split getting a subject
when there are enough). The result is reproducible for a seed and a set of subjects;
adding subjects can move a few across a cut, so freeze a split with ``--subjects-file``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import DatasetError, PSGError, RenderError, ShardError
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
from .stages import stage_name

__all__ = [
    "RenderSettings",
    "RecordingTask",
    "RenderReport",
    "parse_fractions",
    "assign_splits",
    "read_subjects_file",
    "render_recording",
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


@dataclass(frozen=True)
class RenderSettings:
    """Everything that shapes the shards' bytes (the resume fingerprint).

    Attributes
    ----------
    montage : str
        Montage spec (``engine.montage.Montage.parse``).
    width, height : int
        Image size in pixels.
    color, grid, labels : bool
        RenderSpec switches; ``labels`` draws channel names on the strips.
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
    """

    montage: str
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

    def __post_init__(self) -> None:
        if self.fmt not in IMAGE_FORMATS:
            raise RenderError(f"--format must be one of {', '.join(IMAGE_FORMATS)}, got {self.fmt}")
        if not 1 <= self.quality <= 100:
            raise RenderError(f"--quality must be 1-100, got {self.quality}")
        if self.maxcount < 1 or self.maxsize < 1:
            raise ShardError("--maxcount and --maxsize must be positive")
        if not 0 <= self.context <= 10:
            raise RenderError(f"--context must be 0-10, got {self.context}")


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


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Subjects per split: largest remainder, one for each non-zero split if possible."""
    wanted = [n * f for f in fractions]
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    counts = [math.floor(w) for w in wanted]
    floor = [1 if i in nonzero and n >= len(nonzero) else 0 for i in range(3)]
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
        Subject -> split name.

    Examples
    --------
    >>> sorted(assign_splits(["a", "b", "c"], (1 / 3, 1 / 3, 1 / 3)).values())
    ['test', 'train', 'val']
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

    return encode_batch(images, settings.fmt, quality=settings.quality)


class _Drawer:
    """Draws batches; on the CPU into one reused page buffer (no fresh pages per batch).

    The images of a batch are a view of the buffer: encode them before the next call.
    """

    def __init__(self, spec: Any, device: str) -> None:
        self.spec = spec
        self.device = device
        self.buffer: np.ndarray | None = None

    def __call__(self, signals: np.ndarray) -> np.ndarray:
        from .raster import render, render_gpu

        if self.device == "cuda":
            return render_gpu(signals, self.spec)
        n = len(signals)
        if self.buffer is None or self.buffer.shape[0] < n:
            planes = 3 if self.spec.color else 1
            self.buffer = np.empty((n, self.spec.height, self.spec.width, planes), np.uint8)
        return render(signals, self.spec, out=self.buffer[:n])


def render_recording(task: RecordingTask) -> dict[str, Any]:
    """Render one recording into its own shards and write its done-marker.

    Returns
    -------
    dict
        The done-marker: ``pair``, ``split``, ``epochs``, ``labels``, ``shards``
        (:class:`ShardInfo` dicts, names relative to the recording's folder),
        ``channels``, ``seconds``.

    Raises
    ------
    PSGError
        When the recording or its hypnogram cannot be read or rendered; the shards of
        this recording written so far are removed.
    """
    from .epochs import open_epochs
    from .io.hypnogram import read_hypnogram
    from .montage import Montage
    from .preprocess import Preprocessing
    from .raster import RenderSpec

    started = time.perf_counter()
    settings, pair = task.settings, task.pair
    parts = task.work_dir / "parts" / task.slug
    shutil.rmtree(parts, ignore_errors=True)
    hypnogram = read_hypnogram(pair.hypnogram_path, scorer=pair.scorer, signal_path=pair.psg_path)
    preprocessing = Preprocessing()
    source = open_epochs(pair.psg_path, hypnogram, Montage.parse(settings.montage), preprocessing)
    channels = list(source.channels)
    roles = [c.role for c in channels]
    spec = RenderSpec.for_roles(
        roles,
        width=settings.width,
        height=settings.height,
        color=settings.color,
        grid=settings.grid,
        context=settings.context,
        labels=tuple(c.name for c in channels) if settings.labels else None,
    )
    header = {
        "dataset": pair.dataset,
        "subject": pair.subject,
        "recording": pair.recording,
        "scorer": pair.scorer,
        "split": task.split,
        "fs": float(source.fs),
        "channels": [
            {"role": c.role, "name": c.name, "label": c.label, "scale_uv": scale}
            for c, scale in zip(channels, spec.scales_uv)
        ],
        "render": spec.to_dict() | {"format": settings.fmt, "quality": settings.quality},
        "preprocessing": preprocessing.to_dict(),
        "engine_version": __version__,
    }
    labels: Counter[str] = Counter()
    epochs = 0
    if settings.features:
        from .features.epoch import recording_features

        emg_reference = _emg_reference(source, roles, task)
        channel_labels = [c.label for c in channels]
    draw = _Drawer(spec, task.device)
    with ShardSink(
        parts, task.split, "{shard:06d}.tar", maxcount=settings.maxcount, maxsize=settings.maxsize
    ) as sink:
        for batch in source.iter_batches(
            task.batch_size, context=settings.context, keep_unknown=settings.keep_unknown
        ):
            if len(batch.index) == 0:
                continue
            images = draw(batch.signals)
            blobs = _encode(images, settings)
            features = None
            if settings.features:
                target = _target_epoch(batch.signals, settings.context)
                features = [
                    _json_safe(f.to_dict())
                    for f in recording_features(
                        target, source.fs, roles, channel_labels, emg_reference=emg_reference
                    )
                ]
            for j, blob in enumerate(blobs):
                cls = int(batch.stage[j])
                meta = header | {
                    "epoch": int(batch.index[j]),
                    "onset": float(batch.onset[j]),
                    "duration": float(batch.duration[j]),
                    "stage": stage_name(cls),
                    "raw_label": batch.label[j],
                }
                if features is not None:
                    meta["features"] = features[j]
                key = sample_key(pair.dataset, pair.recording, int(batch.index[j]))
                sink.write(make_sample(key, blob, settings.fmt, cls, meta))
                labels[stage_name(cls)] += 1
            epochs += len(blobs)
    if epochs == 0:
        raise RenderError(f"{pair.psg_path}: no epochs to render (all unscored?)")
    marker = {
        "pair": pair.to_dict(),
        "subject_id": pair.subject_id,
        "split": task.split,
        "epochs": epochs,
        "labels": dict(sorted(labels.items())),
        "shards": [asdict(info) for info in sink.shards],
        "channels": header["channels"],
        "fs": header["fs"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    done = task.work_dir / "done"
    done.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done / f"{task.slug}.json", json.dumps(marker, indent=1))
    return marker


def _target_epoch(signals: np.ndarray, context: int) -> np.ndarray:
    """The middle (target) epoch of signals that hold ``2 * context + 1`` epochs."""
    if context == 0:
        return signals
    per_epoch = signals.shape[2] // (2 * context + 1)
    return signals[:, :, context * per_epoch : (context + 1) * per_epoch]


def _emg_reference(source: Any, roles: Sequence[str], task: RecordingTask) -> Any:
    """The night's chin-EMG distribution (a first, memory-light pass over the epochs)."""
    from .features.epoch import EMGReference, emg_rms

    if "emg" not in roles:
        return None
    channel = roles.index("emg")
    rms = [
        emg_rms(batch.signals[:, channel], source.fs)
        for batch in source.iter_batches(
            task.batch_size, context=0, keep_unknown=task.settings.keep_unknown
        )
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


# ----------------------------------------------------------------------------------------
# Synthetic nights
# ----------------------------------------------------------------------------------------
def write_synthetic_nights(directory: str | os.PathLike, count: int, hours: float) -> Path:
    """Write ``count`` synthetic nights (seeds 0..count-1) as EDF files, resumably.

    Night ``i`` is ``night-{i:04d}-PSG.edf`` + ``-Hypnogram.edf`` + ``-events.json``,
    written into a scratch folder and moved into ``directory`` when complete; a night
    already there is kept. Returns ``directory`` (render it as ``synthetic:DIR``).
    """
    from .synth import synth_night, write_night

    if count < 1:
        raise DatasetError(f"--synthetic must be at least 1, got {count}")
    if not (math.isfinite(hours) and hours > 0):
        raise DatasetError(f"--synthetic-hours must be positive, got {hours}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        name = f"night-{number:04d}"
        marker = directory / f".{name}.done"
        if marker.exists():
            continue
        scratch = directory / f".partial-{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        write_night(synth_night(number, hours=hours), scratch, name=name)
        for path in sorted(scratch.iterdir()):
            os.replace(path, directory / path.name)
        scratch.rmdir()
        atomic_write_text(marker, "")
    return directory


# ----------------------------------------------------------------------------------------
# Running tasks
# ----------------------------------------------------------------------------------------
def _run_one(task: RecordingTask, strict: bool) -> dict[str, Any]:
    """Render one recording; outside strict mode a failure becomes ``{"failed": ...}``."""
    try:
        return {"done": render_recording(task)}
    except Exception as err:
        shutil.rmtree(task.work_dir / "parts" / task.slug, ignore_errors=True)
        psg = str(task.pair.psg_path)
        if strict and isinstance(err, PSGError) and psg not in str(err):
            raise type(err)(f"{psg}: {err}") from err
        if strict:
            raise
        logger.debug("%s failed", task.pair.psg_path, exc_info=True)
        reason = str(err) if isinstance(err, PSGError) else f"{type(err).__name__}: {err}"
        return {"failed": {"file": str(task.pair.psg_path), "reason": reason}}


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
) -> Iterator[dict[str, Any]]:
    """Yield each task's outcome as it finishes: in process, in a pool or on Ray."""
    if ray_address:
        yield from _execute_ray(tasks, workers, ray_address, strict)
    elif workers <= 1:
        for task in tasks:
            yield _run_one(task, strict)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            futures = [pool.submit(_run_one, task, strict) for task in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise


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
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(_run_one_on_one_core)
        pending = [remote.remote(task, strict) for task in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started_here:
            ray.shutdown()


# ----------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------
@dataclass
class RenderReport:
    """What a :func:`render_dataset` call did."""

    manifest: Manifest
    out: Path
    rendered: int = 0
    resumed: int = 0
    epochs: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    failed: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """A human-readable table: totals, per-split label counts, throughput."""
        manifest = self.manifest
        rate = self.epochs / self.seconds if self.seconds > 0 else 0.0
        head = (
            f"{self.out}: already complete"
            if self.already_complete
            else f"{self.out}: rendered {self.rendered} recordings ({self.epochs} epochs, "
            f"{rate:.0f} epochs/s), {self.resumed} resumed"
        )
        lines = [
            head,
            f"{len(manifest.recordings)} recordings, {manifest.total_samples} samples in "
            f"{len(manifest.shards)} shards; {len(manifest.failed)} failed",
        ]
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
        lines += [f"failed: {f['file']}: {f['reason']}" for f in manifest.failed]
        return "\n".join(lines)


def _absolute_spec(spec: str) -> str:
    from .io.datasets import is_dataset_spec

    if is_dataset_spec(spec):
        name, _, where = spec.partition(":")
        return f"{name}:{Path(where).expanduser().resolve()}"
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


def _start_or_resume(out: Path, work: Path, config: dict[str, Any]) -> None:
    """Refuse to mix runs: a resumed run must have the same output-shaping arguments."""
    run_file = work / _RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if previous != config:
            raise ShardError(
                f"{out} holds an unfinished run started with different arguments "
                f"({', '.join(_config_differences(previous, config))}); rerun it with the "
                "same arguments, or use a new --out"
            )
        return
    if list_shards(out):
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
) -> None:
    """Number the finished recordings' shards and write the rename plan + manifest."""
    renames: list[tuple[str, str]] = []
    shards: list[ShardInfo] = []
    recordings: list[dict[str, Any]] = []
    subjects: dict[str, set[str]] = {split: set() for split in SPLITS}
    for split in SPLITS:
        number = 0
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
            recordings.append(
                marker["pair"]
                | {k: marker[k] for k in ("split", "epochs", "labels", "channels", "fs")}
                | {"shards": names}
            )
    manifest = Manifest(
        shards=shards,
        subjects={split: sorted(subjects[split]) for split in SPLITS},
        recordings=recordings,
        failed=failed,
        command=command,
        config=config,
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
    workers: int = 1,
    device: str = "cpu",
    batch_size: int = 64,
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
        Everything that shapes the output.
    synthetic, synthetic_hours
        Also render this many synthetic nights of this length (written as EDF into
        ``out/_synthetic`` first).
    split, seed, subjects_file
        Subject split: fractions and seed, or a fixed subject -> split table.
    workers : int
        Parallel processes (or Ray CPUs with ``ray_address="local"``).
    device : {"cpu", "cuda"}
        Where images are drawn.
    batch_size : int
        Epochs per render/encode batch.
    strict : bool
        Fail on the first recording that cannot be rendered instead of skipping it.
    ray_address : str, optional
        Run tasks on Ray: ``"auto"``, ``"ray://host:10001"``, or ``"local"`` for a
        local Ray instance with ``workers`` CPUs.
    command : sequence of str
        The command line, recorded in the manifest.
    progress : bool, optional
        Show a tqdm bar (default: when stderr is a terminal).

    Returns
    -------
    RenderReport
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
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / _WORK
    table = read_subjects_file(subjects_file) if subjects_file else None
    config = json.loads(
        json.dumps(
            {
                "settings": asdict(settings),
                "inputs": [_absolute_spec(spec) for spec in inputs],
                "synthetic": synthetic,
                "synthetic_hours": synthetic_hours if synthetic else None,
                "split": list(split) if table is None else None,
                "seed": seed if table is None else None,
                "subjects": table,
            }
        )
    )
    if (work / _FINALIZE_FILE).exists():
        _start_or_resume(out, work, config)
        return RenderReport(_finalize(out, work), out)
    if (out / "manifest.json").exists():
        manifest = read_manifest(out)
        if manifest.config != config:
            raise ShardError(
                f"{out} holds a finished render with different arguments "
                f"({', '.join(_config_differences(manifest.config, config))}); use a new --out"
            )
        return RenderReport(manifest, out, already_complete=True, failed=manifest.failed)
    _start_or_resume(out, work, config)

    specs = list(config["inputs"])
    if synthetic:
        specs.append(
            f"synthetic:{write_synthetic_nights(out / _SYNTHETIC, synthetic, synthetic_hours)}"
        )
    failed: list[dict[str, str]] = []
    pairs = resolve_inputs(specs, scorer=settings.scorer, unpaired=failed)
    if strict and failed:
        raise DatasetError(f"{failed[0]['file']}: {failed[0]['reason']}")
    subject_ids = [pair.subject_id for pair in pairs]
    assignment = (
        _splits_from_table(subject_ids, table)
        if table is not None
        else assign_splits(subject_ids, split, seed)
    )
    tasks = [
        RecordingTask(pair, assignment[pair.subject_id], work, settings, device, batch_size)
        for pair in pairs
    ]
    slugs = Counter(task.slug for task in tasks)
    if clash := [slug for slug, n in slugs.items() if n > 1]:
        raise DatasetError(f"recording ids collide after sanitizing into sample keys: {clash[:3]}")
    pending = [t for t in tasks if not (work / "done" / f"{t.slug}.json").exists()]
    report = RenderReport(Manifest(), out, resumed=len(tasks) - len(pending))
    started = time.perf_counter()
    bar = tqdm(
        total=len(tasks),
        initial=report.resumed,
        unit="rec",
        desc="render",
        disable=(not progress) if progress is not None else None,
    )
    with bar:
        for outcome in _execute(pending, workers, ray_address, strict):
            if "failed" in outcome:
                failed.append(outcome["failed"])
                logger.warning(
                    "%s: %s; skipped", outcome["failed"]["file"], outcome["failed"]["reason"]
                )
            else:
                report.rendered += 1
                report.epochs += outcome["done"]["epochs"]
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                epochs=report.epochs, rate=f"{report.epochs / max(elapsed, 1e-9):.0f}/s"
            )
            bar.update(1)
    report.seconds = time.perf_counter() - started
    report.failed = failed
    _plan(out, work, tasks, failed, config, list(command))
    report.manifest = _finalize(out, work)
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
    """Options of ``psgvlm render``."""
    from .montage import DEFAULT_MONTAGE

    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="EDF files, folders, globs or dataset specs (sleep-edf:DIR, shhs:DIR, mass:DIR, "
        "isruc:DIR, dcsm:DIR, synthetic:DIR)",
    )
    parser.add_argument("--out", required=True, type=Path, help="shard directory")
    parser.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="also render N synthetic nights"
    )
    parser.add_argument(
        "--synthetic-hours", type=float, default=8.0, metavar="H", help="length of synthetic nights"
    )
    parser.add_argument("--montage", default=DEFAULT_MONTAGE, help="channels to draw, in order")
    parser.add_argument("--size", type=_parse_size, default=(448, 224), help="WIDTHxHEIGHT")
    parser.add_argument("--color", action="store_true", help="one colour per channel")
    parser.add_argument("--grid", action="store_true", help="draw 1-s and 5-s grid lines")
    parser.add_argument("--no-labels", action="store_true", help="do not draw channel names")
    parser.add_argument(
        "--context", type=int, default=0, metavar="K", help="neighbouring epochs on each side"
    )
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png", help="image encoding")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="render device")
    parser.add_argument("--maxcount", type=int, default=10000, help="most samples per shard")
    parser.add_argument(
        "--maxsize", type=_parse_bytes, default=3_000_000_000, help="most bytes per shard (3G)"
    )
    parser.add_argument(
        "--split", default="0.8,0.1,0.1", help="train,val,test fractions of SUBJECTS"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject split")
    parser.add_argument(
        "--subjects-file", type=Path, help="JSON or CSV subject -> split table (overrides --split)"
    )
    parser.add_argument("--keep-unknown", action="store_true", help="keep unscored epochs (cls -1)")
    parser.add_argument(
        "--features", action="store_true", help="store evidence features in json['features']"
    )
    parser.add_argument("--scorer", type=int, default=1, help="hypnogram scorer (ISRUC: 1 or 2)")
    parser.add_argument(
        "--strict", action="store_true", help="fail on the first unreadable recording"
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray: auto, ray://HOST:10001, or local (a local Ray with --workers CPUs)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="epochs per render batch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _command_line(args: argparse.Namespace) -> list[str]:
    """The canonical ``psgvlm render`` command for parsed arguments."""
    words = ["psgvlm", "render", *args.inputs, "--out", str(args.out)]
    options = {
        "--synthetic": args.synthetic or None,
        "--synthetic-hours": args.synthetic_hours if args.synthetic else None,
        "--montage": args.montage,
        "--size": f"{args.size[0]}x{args.size[1]}",
        "--context": args.context,
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
    flags = ("color", "grid", "no_labels", "keep_unknown", "features", "strict")
    words += [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]
    return words


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm render``."""
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
        workers=args.workers,
        device=args.device,
        batch_size=args.batch_size,
        strict=args.strict,
        ray_address=args.ray,
        command=_command_line(args),
        progress=False if args.no_progress else None,
    )
    print(report.summary())
    return 0

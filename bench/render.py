"""``psgvlm bench render``: matplotlib vs psgvlm's rasterizer, encoder and pipeline.

One run measures, on the same synthetic epochs, every way of turning 30-s epochs into
images:

1. matplotlib naive: a new figure per epoch, one subplot per channel, ``savefig`` PNG;
2. matplotlib tuned: one reused figure, ``set_ydata``, the Agg buffer, psgvlm's PNG encoder;
3. psgvlm rasterization only (images in memory);
4. psgvlm raster + encode, PNG and JPEG;
5. the encoder alone on psgvlm's images (the CPU ceiling of any pipeline), PNG and JPEG;
6. end-to-end EDF -> shards with :func:`engine.pipeline.render_dataset`, per worker count,
   and, beside the pool, the same job split between separate 1-worker processes started at
   once (what the cores give this job on this machine at most: the pool's ceiling);
7. with ``--device cuda`` and a GPU: GPU raster, GPU raster + device JPEG, end-to-end.

The epochs are cut by :func:`engine.epochs.open_epochs` from synthetic nights (seeds 0,
1, ...) that :func:`engine.synth.write_night` wrote as EDF, i.e. resampled to 100 Hz and
filtered exactly as the pipeline does, ``C`` channels in a fixed montage order. Stage 6
renders the same files.

Timing: after one warm-up call per stage, all stages run once per *round*, round after
round, so a slow phase of a shared or throttled CPU hits every stage alike; figures are
the median over rounds (with min-max) and ratios are medians of per-round ratios. The
stages of one round still run seconds apart, and a shared VM's speed swings by ±15 % or
more in that time, so the ratio with a goal closest to 1, raster + PNG against the PNG
encoder alone, is timed *batch-paired* instead: each round, every batch is drawn and
encoded, and its pre-drawn images encoded alone, back to back in alternating order; the
ratio is the median over all batches of all rounds. "Per
core" figures run in one thread (``numba.set_num_threads(1)``, a one-thread encoder);
"all cores" figures use every usable core. Peak RSS is the process tree's (workers
included), sampled by :class:`bench.report.PeakRSS`.

End-to-end runs are slow to repeat (a process pool starts fresh workers, which import and
JIT-compile on every call), so they run in the first 2 (quick) or 4 rounds only, every
worker count at the first size and the smallest at the others. Their start-up is timed
apart (the same call on one 2-epoch night per worker) and reported beside the wall-time
figures. The notes say how much of each job's wall time the recordings were being read or
drawn, and what a new process pays to touch memory for the first time (a fresh worker
pays it for its working set).

Writes ``OUT/render.json``, ``OUT/render.md`` and ``OUT/render.png`` (``OUT`` defaults to
``bench/results/<machine>/``, the committed reports behind ``bench/RESULTS.md``)::

    psgvlm bench render
    python -m bench.render --quick --sizes 448x224 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.raster.layout import parse_size

from .report import (
    BenchError,
    PeakRSS,
    format_rate,
    goal,
    goal_line,
    gpu_name,
    machine_info,
    markdown_table,
    plot_render,
    report_dir,
    short_commit,
    summarize,
    usable_cores,
    write_report,
)

__all__ = [
    "MONTAGE_ORDER",
    "RenderBenchSettings",
    "montage_for",
    "parse_sizes",
    "parse_workers",
    "load_bench_epochs",
    "cpu_share",
    "first_touch_cost",
    "bench_render",
    "render_markdown",
    "add_arguments",
    "run",
    "main",
]

logger = logging.getLogger(__name__)

#: (role, channel) of the synthetic montage, in the order ``--channels C`` takes them.
MONTAGE_ORDER: tuple[tuple[str, str], ...] = (
    ("eeg", "C4-M1"),
    ("eog", "E1-M2"),
    ("emg", "chin"),
    ("eeg", "F4-M1"),
    ("eog", "E2-M1"),
    ("eeg", "O2-M1"),
    ("eeg", "C3-M2"),
    ("ecg", "ECG"),
)

#: Two epochs, in hours: the length of the nights that time a pipeline's start-up (engine.synth
#: cannot make a night of a single epoch for every seed).
_STARTUP_HOURS = 60.0 / 3600.0

#: Rounds that include the end-to-end runs (quick, full): a pool spawns fresh workers each time.
_E2E_ROUNDS = {True: 2, False: 4}

#: Per-mode defaults: (epochs in memory, rounds, naive epochs, tuned epochs, nights, hours).
#: The end-to-end job renders every night: a multi-night job (full mode: whole 8-h nights,
#: at least 16 and 8 per worker), so that a run's fixed costs (start-up, manifest, renames,
#: a fresh worker's first touch of its memory) weigh as in real use.
_QUICK = (96, 3, 3, 12, None, 0.5)
_FULL = (384, 5, 8, 32, None, 8.0)
#: Nights per worker of the end-to-end job, and the fewest (quick, full).
_E2E_NIGHTS = {True: (2, 4), False: (8, 16)}

# Goals made visible in the report (never asserted).
_GOAL_RASTER_VS_TUNED = 100.0
_GOAL_PNG_VS_NAIVE = 100.0
_GOAL_PNG_VS_TUNED = 20.0
_GOAL_E2E_VS_CEILING = 0.5  # issue 20: >= 0.5 of the encoder per core (floor 0.3)
_GOAL_WORKER_SCALING = 1.7  # 2 workers on 2 cores >= 1.7x one worker
_GOAL_PNG_VS_ENCODER = 0.8
_GOAL_RASTER_RATE = 20_000.0
_GOAL_RASTER_RATE_AT = (6, (448, 224))


def montage_for(channels: int) -> str:
    """Montage spec of the first ``channels`` entries of :data:`MONTAGE_ORDER`."""
    if not 1 <= channels <= len(MONTAGE_ORDER):
        raise BenchError(f"--channels must be 1-{len(MONTAGE_ORDER)}, got {channels}")
    return ",".join(f"{role}={name}" for role, name in MONTAGE_ORDER[:channels])


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"448x224,448x448"`` -> ``((448, 224), (448, 448))``."""
    return tuple(dict.fromkeys(parse_size(part) for part in text.split(",")))


def parse_workers(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)`` (sorted, unique, each at least 1)."""
    try:
        workers = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise BenchError(f"--workers: expected counts like 1,2, got {text!r}") from None
    if not workers or workers[0] < 1:
        raise BenchError(f"--workers: counts must be at least 1, got {text!r}")
    return tuple(workers)


@dataclass(frozen=True)
class RenderBenchSettings:
    """What ``psgvlm bench render`` measures; ``None`` fields take the quick/full default.

    Attributes
    ----------
    sizes : tuple of (int, int)
        Image sizes ``(width, height)``.
    channels : int
        Channels per image (first ``C`` of :data:`MONTAGE_ORDER`).
    workers : tuple of int
        Worker counts of the end-to-end runs.
    device : {"cpu", "cuda"}
        ``cuda`` adds the GPU stages (skipped with a note without a GPU).
    quick : bool
        Smaller workloads and fewer rounds (< 2 minutes on 2 cores).
    epochs : int, optional
        Epochs held in memory and drawn per round by the psgvlm stages (96 / 384).
    rounds : int, optional
        Timed rounds after the warm-up (3 / 5).
    naive_epochs, tuned_epochs : int, optional
        Epochs drawn per round by matplotlib naive (3 / 8) and tuned (12 / 32).
    nights, hours : optional
        Synthetic nights written for the end-to-end runs (default: 2 / 8 per worker of the
        largest worker count, at least 4 / 16) and their length in hours (0.5 / 8).
    batch_size : int
        Epochs per render/encode call, as in ``psgvlm render --batch-size``.
    quality : int
        JPEG quality.
    """

    sizes: tuple[tuple[int, int], ...] = ((448, 224), (448, 448))
    channels: int = 6
    workers: tuple[int, ...] = (1, 2)
    device: str = "cpu"
    quick: bool = False
    epochs: int | None = None
    rounds: int | None = None
    naive_epochs: int | None = None
    tuned_epochs: int | None = None
    nights: int | None = None
    hours: float | None = None
    batch_size: int = 64
    quality: int = 90

    def resolved(self) -> RenderBenchSettings:
        """A copy with every ``None`` replaced by its default, validated."""
        epochs, rounds, naive, tuned, _, hours = _QUICK if self.quick else _FULL
        per_worker, fewest = _E2E_NIGHTS[self.quick]
        done = replace(
            self,
            epochs=self.epochs or epochs,
            rounds=self.rounds or rounds,
            naive_epochs=self.naive_epochs or naive,
            tuned_epochs=self.tuned_epochs or tuned,
            nights=self.nights or max(fewest, per_worker * max(self.workers, default=1)),
            hours=self.hours or hours,
        )
        done._validate()
        return done

    def _validate(self) -> None:
        from engine.raster import RenderSpec

        if not self.sizes:
            raise BenchError("--sizes: give at least one WIDTHxHEIGHT")
        montage_for(self.channels)
        for width, height in self.sizes:
            RenderSpec.for_roles([r for r, _ in MONTAGE_ORDER[: self.channels]],
                                 width=width, height=height)  # fmt: skip
        if self.device not in ("cpu", "cuda"):
            raise BenchError(f"--device must be cpu or cuda, got {self.device!r}")
        if not self.workers or min(self.workers) < 1:
            raise BenchError(f"--workers: counts must be at least 1, got {self.workers}")
        for name in ("epochs", "rounds", "naive_epochs", "tuned_epochs", "nights", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BenchError(
                    f"--{name.replace('_', '-')} must be a positive integer, got {value!r}"
                )
        if not (math.isfinite(self.hours) and self.hours > 0):
            raise BenchError(f"--hours must be positive, got {self.hours}")
        if not 1 <= self.quality <= 100:
            raise BenchError(f"--quality must be 1-100, got {self.quality}")


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------
def load_bench_epochs(
    directory: Path, channels: int, count: int
) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Cut ``count`` epochs (cycling over the nights if needed) from synthetic EDF nights.

    Parameters
    ----------
    directory : Path
        Folder written by :func:`engine.pipeline.write_synthetic_nights`.
    channels : int
        Channels per epoch (:func:`montage_for`).
    count : int
        Epochs wanted.

    Returns
    -------
    (signals, roles, names)
        float32 ``(count, channels, samples)`` µV at 100 Hz, and the channel roles and
        names in row order (as the pipeline labels them).
    """
    from engine.epochs import open_epochs
    from engine.io.datasets import resolve_inputs

    pairs = resolve_inputs([f"synthetic:{directory}"])
    if not pairs:
        raise BenchError(f"no synthetic nights in {directory}")
    batches, roles, names = [], (), ()
    for pair in pairs:
        source = open_epochs(pair.psg_path, pair.hypnogram_path, montage_for(channels))
        roles = tuple(c.role for c in source.channels)
        names = tuple(c.name for c in source.channels)
        for batch in source.iter_batches(count):
            batches.append(batch.signals)
        if sum(len(b) for b in batches) >= count:
            break
    signals = np.concatenate(batches)
    if len(signals) < count:
        signals = np.resize(signals, (count, *signals.shape[1:]))
    return np.ascontiguousarray(signals[:count]), roles, names


# ----------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------
@dataclass
class _Stage:
    """One measured configuration; ``work()`` returns (images, encoded bytes[, seconds])."""

    key: str
    label: str
    size: str
    threads: int
    cores: int
    work: Callable[[], tuple[int, int] | tuple[int, int, float]]
    warmup: Callable[[], object] | None = None
    unit: str = "img/s"
    numba_threads: int | None = None
    startup: Callable[[], float] | None = None
    startup_s: float | None = None
    max_rounds: int | None = None
    paired: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    images: int = 0
    nbytes: int = 0
    peak: int = 0
    note: str = ""

    def measure(self) -> None:
        """Run ``work`` once, timed, under :class:`PeakRSS`.

        A ``work`` that returns a third value has timed itself (the end-to-end job, whose
        call also runs its paired encoder and removes its output): those seconds count.
        """
        _set_numba_threads(self.numba_threads)
        with PeakRSS(interval=0.02) as peak:
            started = time.perf_counter()
            done = self.work()
            seconds = time.perf_counter() - started
        images, nbytes = done[0], done[1]
        if len(done) == 3:
            seconds = done[2]
        self.rates.append(images / seconds)
        self.seconds.append(seconds)
        self.images, self.nbytes = images, nbytes
        self.peak = max(self.peak, peak.bytes)

    def measure_startup(self) -> None:
        """Time ``startup()`` once (the fixed cost of a run), if the stage has one."""
        if self.startup is not None:
            _set_numba_threads(self.numba_threads)
            self.startup_s = self.startup()

    def rates_excluding_startup(self) -> list[float]:
        """Per-round rates with the start-up time taken off (rounds shorter than it dropped)."""
        if self.startup_s is None:
            return []
        return [self.images / (s - self.startup_s) for s in self.seconds if s > self.startup_s]

    def to_dict(self) -> dict[str, Any]:
        rate = summarize(self.rates)
        steady = self.rates_excluding_startup()
        return {
            "key": self.key,
            "label": self.label,
            "size": self.size,
            "threads": self.threads,
            "cores": self.cores,
            "unit": self.unit,
            "rate": rate,
            "per_core": rate["median"] / self.cores,
            "rates": [round(r, 3) for r in self.rates],
            "images_per_round": self.images,
            "bytes_per_image": round(self.nbytes / self.images, 1) if self.images else None,
            "peak_rss_mb": round(self.peak / 2**20, 1),
            "startup_s": None if self.startup_s is None else round(self.startup_s, 3),
            "rate_excluding_startup": summarize(steady) if steady else None,
            "workers_busy": summarize(self.busy) if self.busy else None,
            "note": self.note,
        }


@dataclass
class _Paired:
    """Two stages' work timed batch by batch, back to back, in alternating order.

    ``ratios`` holds, per batch, the rate of ``top`` over the rate of ``bottom`` (the time
    of ``bottom`` over the time of ``top``): both were timed within milliseconds of each
    other, so a slow phase of the machine hits both alike.
    """

    name: str
    top: _Stage
    bottom: _Stage
    top_batch: Callable[[int], object]
    bottom_batch: Callable[[int], object]
    batches: int
    ratios: list[float] = field(default_factory=list)

    def measure(self, round_number: int) -> None:
        _set_numba_threads(self.top.numba_threads)
        for batch in range(self.batches):
            seconds = {}
            order = ("top", "bottom") if (round_number + batch) % 2 == 0 else ("bottom", "top")
            for which in order:
                work = self.top_batch if which == "top" else self.bottom_batch
                started = time.perf_counter()
                work(batch)
                seconds[which] = time.perf_counter() - started
            self.ratios.append(seconds["bottom"] / seconds["top"])


#: A pure-Python loop of about 0.2 s: :func:`cpu_share` runs it in 1 and in 2 processes.
_CPU_PROBE = "import time\nt = time.perf_counter()\nfor _ in range(4_000_000): pass\nprint(time.perf_counter() - t)"


def cpu_share(processes: int = 2) -> float:
    """How many cores ``processes`` CPU-bound processes get at once, as the run goes.

    The same loop runs alone, then in ``processes`` processes at once: ``processes x``
    the time alone over the slowest one's time, the median of 5 such pairs. Close to ``processes`` on free cores;
    close to 1 when other work holds the rest, nice or not (Linux groups the processes
    of each session and shares the CPUs between the groups, whatever their nice value),
    which caps every multi-core row of the report.
    """

    def run(n: int) -> float:
        probes = [
            subprocess.Popen([sys.executable, "-c", _CPU_PROBE], stdout=subprocess.PIPE)
            for _ in range(n)
        ]
        return max(float(probe.communicate()[0]) for probe in probes)

    return float(np.median([processes * run(1) / run(processes) for _ in range(5)]))


#: A new process fills 256 MiB twice (freeing it between): prints both times in seconds.
_TOUCH_PROBE = (
    "import time\nimport numpy as np\nn = 2**25\nt = time.perf_counter()\na = np.ones(n)\n"
    "first = time.perf_counter() - t\ndel a\nt = time.perf_counter()\nb = np.ones(n)\n"
    "print(first, time.perf_counter() - t)"
)


def first_touch_cost() -> dict[str, Any]:
    """What a new process pays to touch memory for the first time, in ms per MiB.

    A render worker is a new process: the pages it fills it touches for the first time,
    its later recordings reuse them. On a VM whose host backs guest memory lazily and
    takes freed pages back (virtio-balloon free page reporting), a first touch costs the
    host's fault as well as the guest's: each worker pays it for its working set, once per
    job. ``again`` is the same fill into the memory the process just freed.
    """
    probe = subprocess.run(
        [sys.executable, "-c", _TOUCH_PROBE], capture_output=True, text=True, check=True
    )
    first, again = (float(x) * 1000 / 256 for x in probe.stdout.split())
    return {
        "first_ms_per_mib": round(first, 3),
        "again_ms_per_mib": round(again, 3),
        "free_page_reporting": Path("/sys/module/page_reporting").is_dir(),
    }


def _set_numba_threads(threads: int | None) -> None:
    if threads is None:
        return
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _encoder(threads: int, quality: int) -> Callable[[np.ndarray, str], list[bytes]]:
    """psgvlm's batch encoder on ``threads`` threads (the codecs release the GIL)."""
    from engine.encode import encode_batch

    def encode(images: np.ndarray, fmt: str) -> list[bytes]:
        return encode_batch(images, fmt, quality=quality, threads=threads)

    return encode


def _batches(n: int, batch: int) -> list[slice]:
    return [slice(lo, min(lo + batch, n)) for lo in range(0, n, batch)]


def _cpu_stages(
    signals: np.ndarray,
    spec: Any,
    settings: RenderBenchSettings,
    thread_counts: Sequence[int],
) -> tuple[list[_Stage], list[_Paired]]:
    """Stages 1-5 for one image size, and raster + PNG paired with the PNG encoder alone."""
    import matplotlib

    matplotlib.use("Agg")  # before bench.reference imports pyplot: no display needed
    from engine.raster import render

    from .reference import TunedMatplotlib, naive_matplotlib_png

    size = f"{spec.width}x{spec.height}"
    parts = _batches(len(signals), settings.batch_size)
    raw = spec.width * spec.height * (3 if spec.color else 1)
    naive = signals[: settings.naive_epochs]
    tuned_signals = signals[: settings.tuned_epochs]
    tuned = TunedMatplotlib(spec)
    encode_one_thread = _encoder(1, settings.quality)
    images = [render(signals[s], spec) for s in parts]

    def mpl_naive() -> tuple[int, int]:
        blobs = naive_matplotlib_png(naive, spec)
        return len(blobs), sum(map(len, blobs))

    def mpl_tuned() -> tuple[int, int]:
        blobs = encode_one_thread(tuned.render(tuned_signals), "png")
        return len(blobs), sum(map(len, blobs))

    # One reused page buffer, as the render pipeline draws (engine.pipeline._Drawer).
    pages = np.empty((settings.batch_size, spec.height, spec.width, 3 if spec.color else 1),
                     np.uint8)  # fmt: skip

    def raster() -> tuple[int, int]:
        for s in parts:
            render(signals[s], spec, out=pages[: s.stop - s.start])
        return len(signals), raw * len(signals)

    def raster_encode(fmt: str, encoder: Callable) -> Callable[[], tuple[int, int]]:
        def work() -> tuple[int, int]:
            total = 0
            for s in parts:
                images = render(signals[s], spec, out=pages[: s.stop - s.start])
                total += sum(map(len, encoder(images, fmt)))
            return len(signals), total

        return work

    def encode_only(fmt: str, encoder: Callable) -> Callable[[], tuple[int, int]]:
        def work() -> tuple[int, int]:
            total = 0
            for batch in images:
                total += sum(map(len, encoder(batch, fmt)))
            return len(signals), total

        return work

    stages = [
        _Stage("mpl_naive", "matplotlib naive (figure per epoch, savefig PNG)", size, 1, 1,
               mpl_naive, warmup=lambda: naive_matplotlib_png(naive[:1], spec)),
        _Stage("mpl_tuned", "matplotlib tuned (reused figure, psgvlm PNG)", size, 1, 1,
               mpl_tuned, warmup=lambda: encode_one_thread(tuned.render(tuned_signals[:2]), "png")),
    ]  # fmt: skip
    for threads in thread_counts:
        encoder = _encoder(threads, settings.quality)
        cores = min(threads, usable_cores())
        suffix = "1 thread" if threads == 1 else f"{threads} threads"
        stages += [
            _Stage("raster", f"psgvlm raster only, {suffix}", size, threads, cores, raster,
                   warmup=raster, numba_threads=threads),
            _Stage("raster_png", f"psgvlm raster + PNG, {suffix}", size, threads, cores,
                   raster_encode("png", encoder), numba_threads=threads),
            _Stage("raster_jpg", f"psgvlm raster + JPEG, {suffix}", size, threads, cores,
                   raster_encode("jpg", encoder), numba_threads=threads),
            _Stage("encode_png", f"PNG encoder alone, {suffix}", size, threads, cores,
                   encode_only("png", encoder), numba_threads=threads),
            _Stage("encode_jpg", f"JPEG encoder alone, {suffix}", size, threads, cores,
                   encode_only("jpg", encoder), numba_threads=threads),
        ]  # fmt: skip
    for stage in stages:
        if stage.warmup is None:
            stage.warmup = stage.work
    encoder = _encoder(1, settings.quality)

    def draw_and_encode(batch: int) -> object:
        part = parts[batch]
        return encoder(render(signals[part], spec, out=pages[: part.stop - part.start]), "png")

    paired = _Paired(
        "raster+PNG / PNG encoder alone, per core",
        _find(stages, "raster_png", size, 1),
        _find(stages, "encode_png", size, 1),
        draw_and_encode,
        lambda batch: encoder(images[batch], "png"),
        len(parts),
    )
    return stages, [paired]


def _e2e_stage(
    nights_dir: Path,
    startup_dir: Path,
    scratch: Path,
    settings: RenderBenchSettings,
    size: tuple[int, int],
    workers: int,
    device: str,
    encode_alone: Callable[[int], object] | None = None,
) -> _Stage:
    """Stage 6 (or 7 on ``cuda``): EDF -> shards with ``workers`` processes.

    With ``encode_alone`` (the PNG encoder on ``n`` pre-drawn epochs, on as many threads
    as the job has cores), every job is paired with it, back to back in alternating
    order: ``stage.paired`` holds the job's rate over the encoder's on the same count.
    """
    from engine.pipeline import RenderSettings, render_dataset

    render_settings = RenderSettings(
        montage=montage_for(settings.channels), width=size[0], height=size[1], fmt="png"
    )
    runs = iter(range(1_000_000))

    def render_into_shards(nights: Path) -> tuple[int, Path, float]:
        """Render ``nights`` into a new folder: (epochs, the folder, the seconds the
        recordings took to read and draw, summed over the workers)."""
        out = scratch / f"e2e-{device}-{size[0]}x{size[1]}-w{workers}-{next(runs)}"
        report = render_dataset(
            [f"synthetic:{nights}"], out, render_settings, split=(1.0, 0.0, 0.0),
            workers=workers, device=device, batch_size=settings.batch_size, progress=False,
        )  # fmt: skip
        if report.failed:
            raise BenchError(f"end-to-end render failed: {report.failed[0]}")
        return report.epochs, out, report.read_seconds + report.draw_seconds

    def remove(out: Path) -> int:
        """The bytes of a rendered folder's shards; the folder is removed (not timed)."""
        nbytes = sum(p.stat().st_size for p in out.glob("*.tar"))
        shutil.rmtree(out)
        return nbytes

    known: list[int] = []  # the job's epoch count, learned by its first run

    def job() -> tuple[int, int, float]:
        started = time.perf_counter()
        epochs, out, drawing = render_into_shards(nights_dir)
        seconds = time.perf_counter() - started
        if known:  # not the warm-up
            stage.busy.append(drawing / (workers * seconds))
        known[:] = [epochs]
        return epochs, remove(out), seconds

    def encoder_seconds() -> float:
        started = time.perf_counter()
        encode_alone(known[0])
        return time.perf_counter() - started

    def work() -> tuple[int, int, float]:
        if encode_alone is None or not known:
            return job()
        first = len(stage.paired) % 2 == 0
        encoder = 0.0 if first else encoder_seconds()
        epochs, nbytes, seconds = job()
        if first:
            encoder = encoder_seconds()
        stage.paired.append(encoder / seconds)
        return epochs, nbytes, seconds

    def startup() -> float:
        started = time.perf_counter()
        out = render_into_shards(startup_dir)[1]
        seconds = time.perf_counter() - started
        remove(out)
        return seconds

    cores = min(workers, usable_cores())
    where = "GPU, " if device == "cuda" else ""
    label = f"end-to-end EDF -> PNG shards, {where}{workers} worker{'s' * (workers > 1)}"
    # A warm-up helps the in-process run only: a pool starts fresh workers on every call.
    stage = _Stage(f"e2e_{device}" if device == "cuda" else "e2e", label,
                   f"{size[0]}x{size[1]}", workers, cores, work,
                   warmup=work if workers == 1 else None, unit="epochs/s",
                   numba_threads=1 if workers == 1 else None, startup=startup,
                   max_rounds=min(settings.rounds, _E2E_ROUNDS[settings.quick]))  # fmt: skip
    stage.note = (
        "wall time of render_dataset (worker start-up and JIT included; the paired encoder "
        "run and the removal of the output are not timed); start-up = the same call on one "
        "2-epoch night per worker; bytes include tar headers and json"
    )
    if workers > 1 and device == "cpu":
        stage.warmup = job  # the epoch count (the fork server's start is timed as start-up)
    return stage


#: One process of :func:`_separate_stage`: loads the render path on a short night, says
#: "ready", waits for a line on stdin, then renders its share of the nights in process and
#: prints the seconds it took.
_SEPARATE_RENDER = """
import sys, time
from pathlib import Path
import numba
from engine.pipeline import RenderSettings, render_dataset
montage, width, height, warm, share, out, batch, threads = sys.argv[1:]
numba.set_num_threads(int(threads))  # as many as a pool gives each of its workers
settings = RenderSettings(montage=montage, width=int(width), height=int(height), fmt="png")
def render(nights, into):
    render_dataset([f"synthetic:{nights}"], Path(into), settings, split=(1.0, 0.0, 0.0),
                   workers=1, batch_size=int(batch), progress=False)
render(warm, out + "-warm")
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
render(share, out)
print(time.perf_counter() - started, flush=True)
"""


def _separate_stage(
    nights_dir: Path,
    startup_dir: Path,
    scratch: Path,
    settings: RenderBenchSettings,
    size: tuple[int, int],
    processes: int,
) -> _Stage:
    """The end-to-end job split between ``processes`` separate processes started at once.

    Each process renders its share of the nights in process (one worker, no pool), the
    nights dealt round robin (they are of one length: the pool's workers share them
    alike); the job's time is the slowest share's. Nothing is shared but the machine: the rate over one such process's (which
    renders every night) is what ``processes`` cores give this job here at most, the
    ceiling of the pool's scaling. Like a pool's workers, and like ``psgvlm render
    --workers 1`` run from the shell, a new process fills memory it has never touched
    (the in-process 1-worker stage reuses the benchmark process's).
    """
    nights = sorted(nights_dir.glob("*-PSG.edf"))
    shares = [scratch / f"share-{processes}-{i}" for i in range(processes)]
    for i, share in enumerate(shares):
        share.mkdir(exist_ok=True)
        for psg in nights[i::processes]:
            stem = psg.name[: -len("PSG.edf")]
            for part in nights_dir.glob(f"{stem}*"):
                (share / part.name).symlink_to(part.resolve())
    montage = montage_for(settings.channels)
    runs = iter(range(1_000_000))

    def work() -> tuple[int, int, float]:
        outs = [
            scratch / f"separate-{size[0]}x{size[1]}-{next(runs)}-{i}" for i in range(processes)
        ]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _SEPARATE_RENDER,
                    montage,
                    str(size[0]),
                    str(size[1]),
                    str(startup_dir),
                    str(share),
                    str(out),
                    str(settings.batch_size),
                    str(max(1, (os.cpu_count() or 1) // processes)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for share, out in zip(shares, outs)
        ]
        try:
            for child in children:
                if child.stdout.readline().strip() != "ready":
                    raise BenchError("a separate render process failed to start")
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
            seconds = max(float(child.communicate()[0]) for child in children)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        epochs = nbytes = 0
        for out in outs:
            manifest = json.loads((out / "manifest.json").read_text())
            epochs += sum(int(shard["count"]) for shard in manifest["shards"])
            nbytes += sum(p.stat().st_size for p in out.glob("*.tar"))
            shutil.rmtree(out)
            shutil.rmtree(out.with_name(out.name + "-warm"))
        return epochs, nbytes, seconds

    label = (
        f"{processes} separate 1-worker processes at once"
        if processes > 1
        else "1 worker in a new process"
    )
    stage = _Stage(
        "e2e_separate",
        f"end-to-end EDF -> PNG shards, {label}",
        f"{size[0]}x{size[1]}", processes, min(processes, usable_cores()), work,
        unit="epochs/s", max_rounds=min(settings.rounds, _E2E_ROUNDS[settings.quick]),
    )  # fmt: skip
    stage.note = (
        "each process renders its share of the nights (dealt round robin) in process; time "
        "= the slowest share's render (imports and a warm-up night before the start signal)"
    )
    return stage


def _encode_count(
    signals: np.ndarray, spec: Any, settings: RenderBenchSettings, threads: int
) -> Callable[[int], object]:
    """The PNG encoder alone on ``n`` epochs (the in-memory ones drawn once, cycled)."""
    from engine.raster import render

    encoder = _encoder(threads, settings.quality)
    images = [render(signals[s], spec) for s in _batches(len(signals), settings.batch_size)]

    def encode(n: int) -> object:
        _set_numba_threads(threads)
        done = 0
        while done < n:
            for batch in images:
                batch = batch[: n - done]
                encoder(batch, "png")
                done += len(batch)
                if done >= n:
                    break
        _set_numba_threads(1)
        return done

    return encode


def _gpu_stages(signals: np.ndarray, spec: Any, settings: RenderBenchSettings) -> list[_Stage]:
    """Stage 7 (in memory): GPU raster, GPU raster + device JPEG."""
    from numba import cuda

    from engine.encode import encode_jpeg_cuda
    from engine.raster import render_cuda
    from engine.raster.gpu import cp

    size = f"{spec.width}x{spec.height}"
    parts = _batches(len(signals), settings.batch_size)
    on_device = cp.asarray(signals) if cp is not None else cuda.to_device(signals)
    raw = spec.width * spec.height * (3 if spec.color else 1)

    def raster() -> tuple[int, int]:
        for s in parts:
            render_cuda(on_device[s], spec)
        cuda.synchronize()
        return len(signals), raw * len(signals)

    def raster_jpeg() -> tuple[int, int]:
        total = 0
        for s in parts:
            total += sum(
                map(
                    len, encode_jpeg_cuda(render_cuda(on_device[s], spec), quality=settings.quality)
                )
            )
        return len(signals), total

    return [
        _Stage("gpu_raster", "GPU raster only (device-resident)", size, 1, 1, raster,
               warmup=raster),
        _Stage("gpu_raster_jpg", "GPU raster + device JPEG", size, 1, 1, raster_jpeg,
               warmup=raster_jpeg),
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------
# Ratios and goals
# ----------------------------------------------------------------------------------------
def _find(
    stages: Sequence[_Stage], key: str, size: str, threads: int | None = None
) -> _Stage | None:
    for stage in stages:
        if stage.key == key and stage.size == size and threads in (None, stage.threads):
            return stage
    return None


def _ratio(
    name: str, top: _Stage | None, bottom: _Stage | None, exclude_startup: bool = False
) -> dict[str, Any] | None:
    """Median (min, max) over rounds of ``top``'s rate / ``bottom``'s rate in the same round."""
    if top is None or bottom is None:
        return None
    if exclude_startup and top.startup_s is not None:
        pairs = [
            (top.images / (s - top.startup_s), b)
            for s, b in zip(top.seconds, bottom.rates)
            if s > top.startup_s
        ]
    else:
        pairs = list(zip(top.rates, bottom.rates))
    if not pairs:
        return None
    per_round = [a / b for a, b in pairs]
    return {
        "name": name,
        "size": top.size,
        "numerator": top.label,
        "denominator": bottom.label,
        "paired": "round",
        **summarize(per_round),
    }


def _paired_ratio(pair: _Paired) -> dict[str, Any] | None:
    """Median (min, max) over every batch of every round of a :class:`_Paired` ratio."""
    if not pair.ratios:
        return None
    return {
        "name": pair.name,
        "size": pair.top.size,
        "numerator": pair.top.label,
        "denominator": pair.bottom.label,
        "paired": "batch",
        **summarize(pair.ratios),
    }


def _ratios_and_goals(
    stages: Sequence[_Stage], paired: Sequence[_Paired], settings: RenderBenchSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ratios: list[dict[str, Any]] = []
    goals: list[dict[str, Any]] = []
    cores = usable_cores()

    def record(entry: dict[str, Any] | None, target: float | None) -> None:
        if entry is None:
            return
        ratios.append(entry)
        if target is not None:
            name, size = entry["name"], entry["size"]
            goals.append(goal(f"{name} >= {target:g}x ({size})", entry["median"], target, "x",
                              low=entry["q1"]))  # fmt: skip

    def add(
        name: str,
        top: _Stage | None,
        bottom: _Stage | None,
        target: float | None,
        exclude_startup: bool = False,
    ) -> None:
        record(_ratio(name, top, bottom, exclude_startup), target)

    for width, height in settings.sizes:
        size = f"{width}x{height}"
        naive, tuned = _find(stages, "mpl_naive", size), _find(stages, "mpl_tuned", size)
        raster1 = _find(stages, "raster", size, 1)
        png1 = _find(stages, "raster_png", size, 1)
        add("raster only per core / matplotlib tuned", raster1, tuned, _GOAL_RASTER_VS_TUNED)
        add("raster only per core / matplotlib naive", raster1, naive, None)
        add("raster+PNG per core / matplotlib naive", png1, naive, _GOAL_PNG_VS_NAIVE)
        add("raster+PNG per core / matplotlib tuned", png1, tuned, _GOAL_PNG_VS_TUNED)
        add("raster+JPEG per core / matplotlib naive", _find(stages, "raster_jpg", size, 1),
            naive, None)  # fmt: skip
        add("raster+JPEG per core / matplotlib tuned", _find(stages, "raster_jpg", size, 1),
            tuned, None)  # fmt: skip
        for pair in paired:
            if pair.top.size == size:
                record(_paired_ratio(pair), _GOAL_PNG_VS_ENCODER)
        for workers in settings.workers:
            ceiling = _find(stages, "encode_png", size, min(workers, cores))
            e2e = _find(stages, "e2e", size, workers)
            on = f"PNG encoder ceiling on {min(workers, cores)} core(s)"
            if e2e is not None and e2e.paired:
                per = " per core" if workers == 1 else f" on {min(workers, cores)} core(s)"
                record({
                    "name": f"end-to-end {workers} worker(s) / PNG encoder alone on the same "
                            f"epochs{per}",
                    "size": size, "numerator": e2e.label, "denominator": "PNG encoder alone",
                    "paired": "job", **summarize(e2e.paired),
                }, _GOAL_E2E_VS_CEILING)  # fmt: skip
            add(f"end-to-end {workers} worker(s) / {on}", e2e, ceiling, None)
            add(f"end-to-end {workers} worker(s) without start-up / {on}", e2e, ceiling, None,
                exclude_startup=True)  # fmt: skip
        one, two = _find(stages, "e2e", size, 1), _find(stages, "e2e", size, 2)
        one_new = _find(stages, "e2e_separate", size, 1)
        two_separate = _find(stages, "e2e_separate", size, 2)
        if cores >= 2:
            add("end-to-end 2 workers / 1 worker", two, one, _GOAL_WORKER_SCALING)
            add("end-to-end 2 workers / 1 worker in a new process", two, one_new, None)
            add("end-to-end 2 separate processes / 1 worker in a new process (what 2 cores "
                "give this job here)", two_separate, one_new, None)  # fmt: skip
            add("end-to-end 2 workers / 2 separate processes", two, two_separate, None)
        add("GPU raster / CPU raster all cores", _find(stages, "gpu_raster", size),
            _find(stages, "raster", size, cores), None)  # fmt: skip
        add("GPU raster+JPEG / CPU raster+JPEG all cores", _find(stages, "gpu_raster_jpg", size),
            _find(stages, "raster_jpg", size, cores), None)  # fmt: skip
    channels, (width, height) = _GOAL_RASTER_RATE_AT
    at = f"{width}x{height}"
    raster1 = _find(stages, "raster", at, 1) if settings.channels == channels else None
    rate = None if raster1 is None else summarize(raster1.rates)
    line = goal(
        f"raster only >= {_GOAL_RASTER_RATE:,.0f} img/s per core at {channels} ch {at}",
        None if rate is None else rate["median"],
        _GOAL_RASTER_RATE,
        "img/s",
        low=None if rate is None else rate["q1"],
    )
    goals.append(line)
    return ratios, goals


# ----------------------------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------------------------
def bench_render(
    settings: RenderBenchSettings, work_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run the render benchmark and return the report dict (see the module docstring).

    Parameters
    ----------
    settings : RenderBenchSettings
    work_dir : path, optional
        Where the scratch folder (EDF nights, shards) is made; default the system's.
    """
    from engine.pipeline import write_synthetic_nights
    from engine.raster import RenderSpec

    settings = settings.resolved()
    started = time.perf_counter()
    notes: list[str] = []
    gpu = gpu_name()
    machine = machine_info(gpu=gpu)  # load, git state and date as the run starts
    shares = [cpu_share()] if usable_cores() > 1 else []
    touch = [first_touch_cost()]
    use_gpu = settings.device == "cuda" and gpu is not None
    if settings.device == "cuda" and gpu is None:
        from engine.raster.gpu import cuda_unavailable_reason, is_simulator

        why = "numba's CUDA simulator" if is_simulator() else cuda_unavailable_reason()
        notes.append(f"--device cuda: CUDA unavailable here ({why}); GPU stages skipped")
    cores = usable_cores()
    thread_counts = sorted({1, cores})
    try:
        with tempfile.TemporaryDirectory(prefix="psgvlm-bench-render-", dir=work_dir) as tmp:
            scratch = Path(tmp)
            logger.info("writing %d synthetic nights of %g h", settings.nights, settings.hours)
            nights = write_synthetic_nights(scratch / "nights", settings.nights, settings.hours)
            startup_nights = {
                workers: write_synthetic_nights(
                    scratch / f"startup-{workers}", workers, _STARTUP_HOURS
                )
                for workers in {*settings.workers, 1}
            }
            signals, roles, names = load_bench_epochs(nights, settings.channels, settings.epochs)
            stages: list[_Stage] = []
            paired: list[_Paired] = []
            for number, (width, height) in enumerate(settings.sizes):
                spec = RenderSpec.for_roles(roles, width=width, height=height, labels=names)
                cpu_stages, cpu_paired = _cpu_stages(signals, spec, settings, thread_counts)
                stages += cpu_stages
                paired += cpu_paired
                # Worker scaling at the first size; one run per size shows the size's cost.
                for workers in settings.workers if number == 0 else settings.workers[:1]:
                    alone = _encode_count(signals, spec, settings, min(workers, cores))
                    stages.append(_e2e_stage(nights, startup_nights[workers], scratch, settings,
                                             (width, height), workers, "cpu", alone))  # fmt: skip
                    if number == 0 and max(settings.workers) > 1:
                        stages.append(_separate_stage(nights, startup_nights[1], scratch,
                                                      settings, (width, height), workers))  # fmt: skip
                if use_gpu:
                    stages += _gpu_stages(signals, spec, settings)
                    stages.append(_e2e_stage(nights, startup_nights[1], scratch, settings,
                                             (width, height), 1, "cuda"))  # fmt: skip
            for stage in stages:
                if stage.warmup is not None:
                    _set_numba_threads(stage.numba_threads)
                    stage.warmup()
                stage.measure_startup()
            for number in range(settings.rounds):
                logger.info("round %d of %d", number + 1, settings.rounds)
                for stage in stages:
                    if stage.max_rounds is None or number < stage.max_rounds:
                        stage.measure()
                for pair in paired:
                    pair.measure(number)
    finally:
        _set_numba_threads(cores)
    ratios, goals = _ratios_and_goals(stages, paired, settings)
    if shares:
        shares.append(cpu_share())
        notes.append(
            "2 CPU-bound processes at once got {:.2f} cores at the start, {:.2f} at the end "
            "(2.00: two free cores; near 1: other work held one, and every 2-core row, the "
            "2-worker one included, is capped by it)".format(*shares)
        )
    touch.append(first_touch_cost())
    notes.append(
        "a new process's first touch of 256 MiB cost {:.2f} / {:.2f} ms per MiB at the start "
        "/ end, refilling the memory it had just freed {:.2f} / {:.2f}{}: each render worker "
        "is a new process and pays the first touch for its working set once per job".format(
            touch[0]["first_ms_per_mib"], touch[1]["first_ms_per_mib"],
            touch[0]["again_ms_per_mib"], touch[1]["again_ms_per_mib"],
            " (this VM hands freed guest pages back to its host: virtio-balloon free page "
            "reporting)" if touch[0]["free_page_reporting"] else "",
        )
    )  # fmt: skip
    for stage in stages:
        if stage.busy:
            busy = summarize(stage.busy)
            notes.append(
                f"{stage.label} ({stage.size}): the recordings were being read or drawn "
                f"{busy['median']:.0%} of the job's wall time x {stage.threads} (median; "
                f"{busy['min']:.0%}-{busy['max']:.0%}); the rest is start-up, waiting and "
                "the final renames"
            )
    if hasattr(os, "getloadavg"):
        at_end = ", ".join(f"{x:g}" for x in np.round(os.getloadavg(), 2))
        notes.append(f"load average at the end: [{at_end}] (at the start: the machine line)")
    if cores > 1:
        notes.append(
            f"{cores} usable cores: 'per core' rows run in 1 thread; the {cores}-thread rows "
            "show what all cores give (on small VMs vCPUs share physical cores, so expect "
            "well under a linear speed-up)"
        )
    return {
        "benchmark": "render",
        "settings": asdict(settings) | {"montage": montage_for(settings.channels)},
        "epoch": {
            "channels": list(names),
            "roles": list(roles),
            "fs": 100.0,
            "samples": int(signals.shape[2]),
            "seconds": 30.0,
        },  # fmt: skip
        "machine": machine,
        "first_touch": touch,
        "stages": [stage.to_dict() for stage in stages],
        "ratios": ratios,
        "goals": goals,
        "notes": notes,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: machine, throughput table, ratios, goal lines, notes."""
    machine, settings = report["machine"], report["settings"]
    gpu = machine["gpu"] or "no GPU"
    lines = [
        "# psgvlm render throughput",
        "",
        f"- machine: {machine['cpu']}, {machine['usable_cores']} usable cores, {gpu}; "
        f"load average at start {machine['load_average']}",
        f"- command: `{machine['command']}` ({report['wall_s']} s, git {short_commit(machine)}, "
        f"{machine['date']})",
        f"- epochs: {settings['channels']} channels ({settings['montage']}), 30 s at 100 Hz "
        f"from synthetic EDF nights; {settings['epochs']} epochs per round for psgvlm, "
        f"{settings['naive_epochs']} for matplotlib naive, {settings['tuned_epochs']} for "
        f"tuned; median of {settings['rounds']} interleaved rounds after a warm-up",
        f"- end-to-end: {settings['nights']} nights of {settings['hours']:g} h written as EDF "
        f"(256 Hz, 8 channels), rendered to PNG shards in the first "
        f"{min(settings['rounds'], _E2E_ROUNDS[settings['quick']])} rounds; every worker "
        f"count ({', '.join(map(str, settings['workers']))}) at the first size, "
        f"{settings['workers'][0]} at the others",
        "",
        "## Throughput",
        "",
    ]
    rows = []
    for stage in report["stages"]:
        rate, steady = stage["rate"], stage["rate_excluding_startup"]
        rows.append([
            stage["size"],
            stage["label"],
            stage["cores"],
            f"{format_rate(rate['median'])} {stage['unit']}",
            f"{format_rate(rate['min'])}–{format_rate(rate['max'])}",
            format_rate(stage["per_core"]),
            "-" if stage["bytes_per_image"] is None else f"{stage['bytes_per_image']:,.0f}",
            f"{stage['peak_rss_mb']:,.0f}",
            "-" if stage["startup_s"] is None else f"{stage['startup_s']:.2f}",
            "-" if steady is None else format_rate(steady["median"]),
        ])  # fmt: skip
    lines.append(markdown_table(
        ["size", "stage", "cores", "median", "min–max", "per core", "bytes/image",
         "peak RSS MiB", "start-up s", "median without start-up"],
        rows,
    ))  # fmt: skip
    lines += ["", "## Ratios (same run: median of per-round or per-batch ratios)", ""]
    lines.append(markdown_table(
        ["size", "ratio", "paired by", "median", "min–max", "pairs"],
        [[r["size"], r["name"], r["paired"], f"{r['median']:.3g}x",
          f"{r['min']:.3g}–{r['max']:.3g}", r["repeats"]] for r in report["ratios"]],
    ))  # fmt: skip
    lines += ["", "## Goals", ""]
    lines += [goal_line(line) for line in report["goals"]]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> Path:
    bars = [
        (s["size"], f"{s['label']}", s["rate"]["median"], s["rate"]["min"], s["rate"]["max"])
        for s in report["stages"]
    ]
    scaling: dict[str, list[tuple[int, float]]] = {}
    ceilings: dict[str, float] = {}
    cores = report["machine"]["usable_cores"]
    for stage in report["stages"]:
        if stage["key"] == "e2e":
            scaling.setdefault(stage["size"], []).append(
                (stage["threads"], stage["rate"]["median"])
            )
        if stage["key"] == "encode_png" and stage["threads"] == cores:
            ceilings[stage["size"]] = stage["rate"]["median"]
    title = f"{report['machine']['cpu']}, {cores} cores — {report['machine']['command']}"
    return plot_render(path, bars, scaling, ceilings, title)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm bench render``."""
    parser.add_argument("--quick", action="store_true", help="small workloads (< 2 min)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda adds the GPU stages")  # fmt: skip
    parser.add_argument("--sizes", default="448x224,448x448", help="WIDTHxHEIGHT list")
    parser.add_argument("--channels", type=int, default=6, help="channels per image (1-8)")
    parser.add_argument("--workers", default="1,2", help="end-to-end worker counts")
    parser.add_argument(
        "--out", type=Path, help="report directory (default: bench/results/MACHINE)"
    )
    parser.add_argument("--epochs", type=int, help="epochs per round for psgvlm stages")
    parser.add_argument("--rounds", type=int, help="timed rounds after the warm-up")
    parser.add_argument("--naive-epochs", type=int, help="epochs per round, matplotlib naive")
    parser.add_argument("--tuned-epochs", type=int, help="epochs per round, matplotlib tuned")
    parser.add_argument("--nights", type=int, help="synthetic nights for end-to-end runs")
    parser.add_argument("--hours", type=float, help="hours per synthetic night")
    parser.add_argument("--batch-size", type=int, default=64, help="epochs per render call")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm bench render`` and write ``render.json``, ``render.md``, ``render.png``."""
    settings = RenderBenchSettings(
        sizes=parse_sizes(args.sizes),
        channels=args.channels,
        workers=parse_workers(args.workers),
        device=args.device,
        quick=args.quick,
        epochs=args.epochs,
        rounds=args.rounds,
        naive_epochs=args.naive_epochs,
        tuned_epochs=args.tuned_epochs,
        nights=args.nights,
        hours=args.hours,
        batch_size=args.batch_size,
        quality=args.quality,
    )
    report = bench_render(settings)
    markdown = render_markdown(report)
    out = report_dir(args.out, report["machine"])
    json_path, md_path = write_report(out, "render", report, markdown)
    png_path = _plot(report, out / "render.png")
    print(markdown)
    print(f"\nwrote {json_path}, {md_path}, {png_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.render``: the same as ``psgvlm bench render``."""
    from engine.errors import PSGError

    parser = argparse.ArgumentParser(
        prog="python -m bench.render", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except PSGError as err:
        print(f"bench render: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

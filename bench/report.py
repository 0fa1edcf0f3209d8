"""Shared pieces of the benchmarks: timing summaries, peak memory, machine info, writing.

Every benchmark writes ``DIR/{name}.json`` (all figures, the machine and the command
line) and ``DIR/{name}.md`` (the same figures as a table, plus goal lines). Throughput is
quoted as the median over repetitions with the min-max range beside it; on a shared or
throttled machine only ratios measured in the same run are comparable.

Examples
--------
>>> summarize([3.0, 1.0, 2.0])
{'median': 2.0, 'min': 1.0, 'max': 3.0, 'repeats': 3}
>>> goal("raster vs tuned", 150.0, 100.0, "x")["status"]
'PASS'
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from engine.errors import PSGError

__all__ = [
    "BenchError",
    "PeakRSS",
    "summarize",
    "goal",
    "usable_cores",
    "cpu_model",
    "gpu_name",
    "machine_info",
    "library_versions",
    "markdown_table",
    "format_rate",
    "write_report",
    "plot_render",
]

#: Libraries named in every report.
BASE_LIBRARIES: tuple[str, ...] = (
    "numpy",
    "numba",
    "scipy",
    "pyedflib",
    "webdataset",
    "imagecodecs",
    "pillow",
    "matplotlib",
    "psutil",
)


class BenchError(PSGError):
    """Invalid benchmark arguments, or a benchmark that cannot run here."""


class PeakRSS:
    """Peak resident memory of this process and all its children while a block runs.

    A background thread samples the summed RSS of the process tree every ``interval``
    seconds (psutil), so processes spawned inside the block (pool workers, a
    ``psgvlm render`` subprocess) count too. Short spikes between samples can be missed.

    Examples
    --------
    >>> with PeakRSS() as peak:
    ...     data = bytearray(10_000_000)
    >>> peak.bytes > 10_000_000
    True
    """

    def __init__(self, interval: float = 0.01) -> None:
        if interval <= 0:
            raise BenchError(f"PeakRSS interval must be positive, got {interval}")
        self.interval = interval
        self.bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tree_rss(self) -> int:
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # the child ended between listing and reading
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.bytes = max(self.bytes, self._tree_rss())

    def __enter__(self) -> PeakRSS:
        self.bytes = self._tree_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.bytes = max(self.bytes, self._tree_rss())


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of repeated measurements.

    Raises
    ------
    BenchError
        When ``values`` is empty.
    """
    if len(values) == 0:
        raise BenchError("no measurements to summarize")
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "repeats": len(values),
    }


def goal(name: str, value: float | None, target: float, unit: str = "") -> dict[str, Any]:
    """A goal line: ``PASS`` when ``value >= target``, ``SHORT`` below, ``n/a`` if unmeasured."""
    if value is None:
        status = "n/a"
    else:
        status = "PASS" if value >= target else "SHORT"
    return {"goal": name, "value": value, "target": target, "unit": unit, "status": status}


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """Name of the first CUDA device, or None without one (the CUDA simulator counts as none)."""
    from engine.raster import cuda_available
    from engine.raster.gpu import is_simulator

    if is_simulator() or not cuda_available():
        return None
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of :data:`BASE_LIBRARIES` and ``extra`` (``"-"`` when missing)."""
    from engine import __version__

    found = {"psgvlm": __version__, "python": platform.python_version()}
    for package in (*BASE_LIBRARIES, *extra):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "-"
    return found


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def machine_info(extra_libraries: Iterable[str] = (), gpu: str | None = None) -> dict[str, Any]:
    """Where and how a benchmark ran: CPU, cores, memory, GPU, versions, load, command line.

    Parameters
    ----------
    extra_libraries : iterable of str
        Packages to report besides :data:`BASE_LIBRARIES` (``torch``, ``transformers``...).
    gpu : str, optional
        GPU name when the caller already knows it (e.g. from torch); else numba is asked.
    """
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu if gpu is not None else gpu_name(),
        "platform": platform.platform(),
        "libraries": library_versions(extra_libraries),
        "load_average": [round(x, 2) for x in load],
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def format_rate(value: float | None) -> str:
    """Compact throughput: ``12,345``, ``123``, ``4.6``, ``0.52``; ``-`` for None."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(headers):
            raise BenchError(f"table row has {len(cells)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: str | os.PathLike, name: str, payload: Mapping[str, Any], markdown: str
) -> tuple[Path, Path]:
    """Write ``out_dir/{name}.json`` and ``out_dir/{name}.md``; return their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / f"{name}.json", out / f"{name}.md"
        json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as err:
        raise BenchError(f"cannot write the {name} report into {out}: {err}") from err
    except ValueError as err:
        raise BenchError(f"the {name} report holds a non-finite number: {err}") from err
    return json_path, md_path


def plot_render(
    path: str | os.PathLike,
    bars: Sequence[tuple[str, str, float, float, float]],
    scaling: Mapping[str, Sequence[tuple[int, float]]],
    ceilings: Mapping[str, float],
    title: str,
) -> Path:
    """Bar chart of images/s (log scale, min-max whiskers) beside worker scaling.

    Parameters
    ----------
    path : path
        PNG to write.
    bars : sequence of (group, label, median, low, high)
        One bar per measured stage; ``group`` (e.g. the image size) picks its colour.
    scaling : mapping
        Group -> ``[(workers, epochs/s), ...]`` of the end-to-end runs.
    ceilings : mapping
        Group -> encoder-alone images/s on all cores (drawn as a dashed line).
    title : str
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(group for group, *_ in bars))
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    fig, (ax_bars, ax_scale) = plt.subplots(
        1, 2, figsize=(13, 0.32 * max(len(bars), 8) + 1.5), width_ratios=(2.2, 1)
    )
    ys = range(len(bars))
    medians = [b[2] for b in bars]
    errors = [[b[2] - b[3] for b in bars], [b[4] - b[2] for b in bars]]
    ax_bars.barh(ys, medians, xerr=errors, color=[colours[b[0]] for b in bars], capsize=2)
    ax_bars.set_yticks(list(ys), [f"{b[1]} ({b[0]})" for b in bars], fontsize=7)
    ax_bars.invert_yaxis()
    ax_bars.set_xscale("log")
    ax_bars.set_xlabel("images/s (median, min-max)")
    ax_bars.grid(axis="x", which="both", alpha=0.3)
    for group in groups:
        points = sorted(scaling.get(group, ()))
        if points:
            ax_scale.plot(*zip(*points), "o-", color=colours[group], label=f"end-to-end {group}")
        if group in ceilings:
            ax_scale.axhline(
                ceilings[group], ls="--", color=colours[group], label=f"encoder ceiling {group}"
            )
    counts = sorted({w for points in scaling.values() for w, _ in points})
    if counts:
        ax_scale.set_xticks(counts)
    ax_scale.set_xlabel("workers")
    ax_scale.set_ylabel("epochs/s")
    ax_scale.set_ylim(bottom=0)
    ax_scale.grid(alpha=0.3)
    if ax_scale.get_legend_handles_labels()[0]:
        ax_scale.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

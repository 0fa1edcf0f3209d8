"""Shared pieces of the benchmarks: timing summaries, peak memory, machine info, writing.

Every benchmark writes ``DIR/{name}.json`` (all figures, the machine, the git commit and
whether the tree was clean, the device, the date and the command line) and ``DIR/{name}.md``
(the same figures as a table, plus goal lines). ``DIR`` defaults to
``bench/results/<machine>/`` (:func:`default_out_dir`): reports there are committed, and
the tables of ``bench/RESULTS.md`` are generated from them (:mod:`bench.tables`).
Throughput is quoted as the median over repetitions with the min-max range beside it; on a
shared or throttled machine only ratios measured in the same run are comparable.

A goal is judged on the spread, not on the median alone (:func:`goal`): ``PASS`` when the
lower quartile meets the target, ``within noise`` when only the median does.

Examples
--------
>>> summarize([3.0, 1.0, 2.0])
{'median': 2.0, 'q1': 1.5, 'q3': 2.5, 'min': 1.0, 'max': 3.0, 'repeats': 3}
>>> goal("raster vs tuned", 150.0, 100.0, "x", low=120.0)["status"]
'PASS'
>>> goal("raster+PNG / PNG encoder", 0.802, 0.8, "x", low=0.71)["status"]
'within noise'
>>> machine_slug({"cpu": "AMD EPYC 7B13 64-Core Processor", "usable_cores": 2, "gpu": None})
'amd-epyc-7b13-2cpu'
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
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
    "GOAL_STATUSES",
    "usable_cores",
    "cpu_model",
    "gpu_name",
    "git_state",
    "source_digest",
    "machine_info",
    "machine_slug",
    "short_commit",
    "default_out_dir",
    "report_dir",
    "RESULTS_DIR",
    "library_versions",
    "markdown_table",
    "format_rate",
    "goal_line",
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


#: Where committed reports live, one folder per machine (:func:`default_out_dir`).
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Goal statuses, best first (:func:`goal`).
GOAL_STATUSES: tuple[str, ...] = ("PASS", "within noise", "SHORT", "n/a")

#: Files whose changes do not make a report's tree "dirty": the reports and the prose.
_NOT_SOURCE = (":(exclude)bench/results", ":(exclude)*.md", ":(exclude)bench/figures")


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
    """Median, quartiles, min, max and count of repeated measurements.

    The quartiles interpolate linearly between order statistics (numpy's default, the
    "inclusive" method of :func:`statistics.quantiles`); one value is its own quartiles.

    Raises
    ------
    BenchError
        When ``values`` is empty.
    """
    if len(values) == 0:
        raise BenchError("no measurements to summarize")
    values = [float(v) for v in values]
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": float(statistics.median(values)),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(min(values)),
        "max": float(max(values)),
        "repeats": len(values),
    }


def goal(
    name: str,
    value: float | None,
    target: float,
    unit: str = "",
    *,
    low: float | None = None,
) -> dict[str, Any]:
    """A goal line judged on the spread of the measurement, not on its median alone.

    Parameters
    ----------
    name : str
    value : float or None
        The median (``None``: not measured).
    target : float
        Higher is better.
    unit : str
    low : float, optional
        The lower quartile of the repetitions; without it ``value`` is taken as a single
        measurement (its own lower quartile).

    Returns
    -------
    dict
        ``goal, value, low, target, unit, status`` with status ``PASS`` (the lower
        quartile meets the target: three quarters of the repetitions do), ``within noise``
        (the median meets it, the lower quartile does not), ``SHORT`` (the median misses
        it) or ``n/a`` (not measured).
    """
    if value is None:
        status, low = "n/a", None
    else:
        low = value if low is None else low
        if low > value:
            raise BenchError(f"goal {name!r}: lower quartile {low} above the median {value}")
        if low >= target:
            status = "PASS"
        elif value >= target:
            status = "within noise"
        else:
            status = "SHORT"
    return {
        "goal": name,
        "value": value,
        "low": low,
        "target": target,
        "unit": unit,
        "status": status,
    }


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


_ROOT = Path(__file__).resolve().parents[1]

#: Folders whose Python files make up :func:`source_digest` (with ``pyproject.toml``).
SOURCE_FOLDERS: tuple[str, ...] = ("engine", "bench", "vlm", "psgvlm")


def _git(*args: str, root: Path = _ROOT) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def source_digest(root: Path = _ROOT) -> str:
    """sha256 (first 16 hex digits) of the project's source: every ``*.py`` under
    :data:`SOURCE_FOLDERS` and ``pyproject.toml``, by relative path and content.

    It names the code a report was measured with even where the git metadata is missing
    or stale (a copy of the working tree on a lent machine): the same files give the same
    digest on any machine, whatever ``.git`` says.
    """
    digest = hashlib.sha256()
    files = [p for folder in SOURCE_FOLDERS for p in (root / folder).rglob("*.py")]
    files.append(root / "pyproject.toml")
    for path in sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def git_state(root: Path = _ROOT) -> dict[str, Any]:
    """The commit a report was measured at and whether the tree differed from it.

    Returns
    -------
    dict
        ``git_commit`` (full hash, or ``None`` outside a git checkout), ``git_dirty``
        (tracked or untracked-but-not-ignored changes outside ``bench/results``, the
        figures and ``*.md``; ``None`` when unknown), ``git_dirty_files`` (at most 20 of
        them) and ``source_digest`` (:func:`source_digest`).

    ``PSGVLM_GIT_COMMIT`` names the commit where ``.git`` cannot be trusted (a copy of the
    tree on another machine whose metadata is stale): it is recorded as the commit, with
    ``git_dirty`` ``None`` unless the checkout's own HEAD is that commit. The source digest
    says which tree it was either way.
    """
    head = _git("rev-parse", "HEAD", root=root)
    head = head.strip() if head else None
    claimed = os.environ.get("PSGVLM_GIT_COMMIT", "").strip() or None
    status = _git("status", "--porcelain", "--", ".", *_NOT_SOURCE, root=root)
    files = None if status is None else [line[3:] for line in status.splitlines() if line]
    commit, dirty = head, (None if files is None else bool(files))
    if claimed is not None and not (head and head.startswith(claimed)):
        commit, dirty = claimed, None
    return {
        "git_commit": commit,
        "git_commit_from": "PSGVLM_GIT_COMMIT" if claimed is not None else "git",
        "git_dirty": dirty,
        "git_dirty_files": (files or [])[:20],
        "source_digest": source_digest(root),
    }


def machine_info(extra_libraries: Iterable[str] = (), gpu: str | None = None) -> dict[str, Any]:
    """Where and how a benchmark ran: CPU, cores, memory, GPU, versions, load, git, command.

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
        **git_state(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
    }


def _command_line() -> str:
    """This process's command line as typed: ``psgvlm bench ...``, ``python -m bench.tables``."""
    program = Path(sys.argv[0])
    name = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    return " ".join([name, *map(shlex.quote, sys.argv[1:])])


def machine_slug(machine: Mapping[str, Any]) -> str:
    """Folder name of a machine's reports: its GPU (if any) or CPU model, and its cores.

    ``PSGVLM_BENCH_MACHINE`` overrides it (e.g. to keep two VMs of one CPU model apart).
    """
    override = os.environ.get("PSGVLM_BENCH_MACHINE", "").strip()
    if override:
        return _slug(override)
    name = machine.get("gpu") or machine.get("cpu") or platform.machine() or "unknown"
    name = re.sub(r"\((R|TM|C)\)|\bCPU\b|@.*$|\b\d+-Core Processor\b|\bProcessor\b", " ",
                  str(name), flags=re.IGNORECASE)  # fmt: skip
    return f"{_slug(name)}-{machine.get('usable_cores') or usable_cores()}cpu"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def default_out_dir(gpu: str | None = None) -> Path:
    """``bench/results/<machine>``: where a benchmark on this machine writes its report."""
    return RESULTS_DIR / machine_slug(
        {"cpu": cpu_model(), "usable_cores": usable_cores(), "gpu": gpu}
    )


def report_dir(out: str | os.PathLike | None, machine: Mapping[str, Any]) -> Path:
    """``out`` when given, else ``bench/results/<machine_slug(machine)>`` (the committed place)."""
    return Path(out) if out is not None else RESULTS_DIR / machine_slug(machine)


def short_commit(machine: Mapping[str, Any]) -> str:
    """``abc1234``, ``abc1234+dirty`` or ``abc1234 (dirty: unknown)``; ``?`` without git."""
    commit = machine.get("git_commit")
    if not commit:
        return "?"
    dirty = machine.get("git_dirty", False)
    return commit[:7] + ("+dirty" if dirty else " (dirty: unknown)" if dirty is None else "")


def goal_line(line: Mapping[str, Any]) -> str:
    """A goal as a markdown bullet: status, goal, median and lower quartile.

    >>> goal_line(goal("x / y >= 0.8x", 0.802, 0.8, "x", low=0.71))
    '- **within noise** x / y >= 0.8x: median 0.802x, lower quartile 0.71x'
    """
    if line["value"] is None:
        return f"- **{line['status']}** {line['goal']}: not measured"
    unit = line["unit"]
    spaced = f" {unit}" if unit and unit != "x" else unit
    return (
        f"- **{line['status']}** {line['goal']}: median {line['value']:,.3g}{spaced}, "
        f"lower quartile {line['low']:,.3g}{spaced}"
    )


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

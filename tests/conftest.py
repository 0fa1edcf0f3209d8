"""Shared test fixtures: the real-data folder and an EDF/EDF+ writer (pyedflib)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

# The tests never write into the user's ~/.cache/psgvlm (tiny models are built here);
# child processes (CLI tests, accelerate launch) inherit it, the process that made it
# removes it at exit.
if "PSGVLM_CACHE_DIR" not in os.environ:
    os.environ["PSGVLM_CACHE_DIR"] = tempfile.mkdtemp(prefix="psgvlm-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PSGVLM_CACHE_DIR"], ignore_errors=True)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: (label, samples, fs, unit) of one channel to write.
Channel = tuple[str, np.ndarray, float, str]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real recordings); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not available at {SHARED_DATA}")
    return SHARED_DATA


def write_edf_file(
    path: Path,
    channels: Sequence[Channel],
    annotations: Sequence[tuple[float, float, str]] = (),
    start: datetime = datetime(2021, 3, 4, 22, 15, 0),
    plus: bool = True,
    physical_range: tuple[float, float] | None = None,
) -> Path:
    """Write an EDF (``plus=False``) or EDF+ file with pyedflib and return its path.

    Each channel's samples must cover a whole number of seconds; the physical range
    defaults to the data range (widened slightly) so values round-trip to within a
    digital step.
    """
    import pyedflib

    filetype = pyedflib.FILETYPE_EDFPLUS if plus else pyedflib.FILETYPE_EDF
    writer = pyedflib.EdfWriter(str(path), len(channels), filetype)
    try:
        headers = []
        for label, samples, fs, unit in channels:
            if physical_range is None:
                low, high = float(np.min(samples)), float(np.max(samples))
                pad = max(1e-3, 0.01 * (high - low))
                low, high = low - pad, high + pad
            else:
                low, high = physical_range
            headers.append(
                {
                    "label": label,
                    "dimension": unit,
                    "sample_frequency": fs,
                    "physical_min": round(low, 3),
                    "physical_max": round(high, 3),
                    "digital_min": -32768,
                    "digital_max": 32767,
                }
            )
        writer.setSignalHeaders(headers)
        writer.setStartdatetime(start)
        writer.writeSamples([np.asarray(c[1], dtype=np.float64) for c in channels])
        for onset, duration, text in annotations:
            writer.writeAnnotation(onset, duration, text)
    finally:
        writer.close()
    return path


def write_annotation_edf(
    path: Path,
    annotations: Sequence[tuple[float, float, str]],
    start: datetime = datetime(2021, 3, 4, 22, 15, 0),
) -> Path:
    """Write an annotation-only EDF+ file (a Sleep-EDF-style hypnogram)."""
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), 0, pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setStartdatetime(start)
        for onset, duration, text in annotations:
            writer.writeAnnotation(onset, duration, text)
    finally:
        writer.close()
    return path


@pytest.fixture
def write_edf() -> Callable[..., Path]:
    """:func:`write_edf_file` as a fixture."""
    return write_edf_file


@pytest.fixture
def write_hypnogram_edf() -> Callable[..., Path]:
    """:func:`write_annotation_edf` as a fixture."""
    return write_annotation_edf

"""Write EDF/EDF+/BDF/BDF+ files byte by byte, for cases pyedflib cannot write.

pyedflib writes whole-second starts, contiguous records, ASCII labels and annotation
signals only in EDF+; real files have sub-second starts (``+0.3945312``), EDF+D gaps,
Latin-1 or UTF-8 header text and plain EDF files carrying an ``EDF Annotations`` signal.
:func:`write_raw_edf` writes any of those from digital samples and raw TAL bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RawSignal", "annotation_signal", "tal", "time_keeping", "write_raw_edf"]


@dataclass(frozen=True)
class RawSignal:
    """One signal: header text as bytes (any encoding) and digital samples.

    ``digital`` holds ``n_records * samples_per_record`` integers, or is ``None`` for an
    annotation signal (its bytes come from ``tals``).
    """

    label: bytes
    samples_per_record: int
    digital: np.ndarray | None = None
    unit: bytes = b"uV"
    physical: tuple[float, float] = (-500.0, 500.0)
    digital_range: tuple[int, int] = (-32768, 32767)
    transducer: bytes = b""
    prefilter: bytes = b""


def annotation_signal(samples_per_record: int = 60, bdf: bool = False) -> RawSignal:
    """An ``EDF Annotations`` (``BDF Annotations``) signal of the given size."""
    label = b"BDF Annotations" if bdf else b"EDF Annotations"
    limits = (-8388608, 8388607) if bdf else (-32768, 32767)
    return RawSignal(label, samples_per_record, None, b"", (-1.0, 1.0), limits)


def time_keeping(onset: float) -> bytes:
    """A record's time-keeping TAL (``+onset`` then an empty annotation)."""
    return f"+{onset:.7f}".rstrip("0").rstrip(".").encode() + b"\x14\x14\x00"


def tal(onset: float, text: str, duration: float | None = None) -> bytes:
    """One annotation TAL, UTF-8 text."""
    timing = f"{onset:+.7f}".rstrip("0").rstrip(".")
    if duration is not None:
        timing += "\x15" + f"{duration:.7f}".rstrip("0").rstrip(".")
    return timing.encode() + b"\x14" + text.encode("utf-8") + b"\x14\x00"


def _field(value: bytes | str | float, width: int) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{raw!r} does not fit {width} bytes")
    return raw.ljust(width, b" ")


def write_raw_edf(
    path: Path,
    signals: Sequence[RawSignal],
    n_records: int,
    record_duration: float,
    tals: Sequence[bytes] = (),
    *,
    reserved: bytes = b"EDF+C",
    bdf: bool = False,
    start_date: bytes = b"04.03.21",
    start_time: bytes = b"22.15.00",
    patient: bytes = b"X X X X",
    recording: bytes = b"Startdate 04-MAR-2021 X X X",
) -> Path:
    """Write the header and ``n_records`` data records; return ``path``.

    ``tals[r]`` holds the annotation bytes of record ``r`` (padded with NULs; every
    annotation signal of the record gets the same bytes).
    """
    n = len(signals)
    version = b"\xffBIOSEMI" if bdf else b"0       "
    width = 3 if bdf else 2
    duration_text = f"{record_duration:.6f}".rstrip("0").rstrip(".")
    head = (
        version
        + _field(patient, 80)
        + _field(recording, 80)
        + _field(start_date, 8)
        + _field(start_time, 8)
        + _field(256 * (n + 1), 8)
        + _field(reserved, 44)
        + _field(n_records, 8)
        + _field(duration_text, 8)
        + _field(n, 4)
    )
    columns = (
        ("label", 16),
        ("transducer", 80),
        ("unit", 8),
        ("pmin", 8),
        ("pmax", 8),
        ("dmin", 8),
        ("dmax", 8),
        ("prefilter", 80),
        ("spr", 8),
        ("reserved", 32),
    )
    for name, size in columns:
        for s in signals:
            value = {
                "label": s.label,
                "transducer": s.transducer,
                "unit": s.unit,
                "pmin": f"{s.physical[0]:g}",
                "pmax": f"{s.physical[1]:g}",
                "dmin": s.digital_range[0],
                "dmax": s.digital_range[1],
                "prefilter": s.prefilter,
                "spr": s.samples_per_record,
                "reserved": b"",
            }[name]
            head += _field(value, size)
    out = bytearray(head)
    for record in range(n_records):
        for s in signals:
            size = s.samples_per_record * width
            if s.digital is None:
                raw = tals[record] if record < len(tals) else b""
                if len(raw) > size:
                    raise ValueError(f"annotations of record {record} exceed {size} bytes")
                out += raw.ljust(size, b"\x00")
                continue
            chunk = np.asarray(s.digital, dtype=np.int64)[
                record * s.samples_per_record : (record + 1) * s.samples_per_record
            ]
            if bdf:
                unsigned = (chunk & 0xFFFFFF).astype(np.uint32)
                triples = np.stack([unsigned & 255, (unsigned >> 8) & 255, unsigned >> 16], 1)
                out += triples.astype(np.uint8).tobytes()
            else:
                out += chunk.astype("<i2").tobytes()
    Path(path).write_bytes(bytes(out))
    return Path(path)

"""EDF / EDF+ / BDF / BDF+ recordings, read channel by channel and range by range.

:func:`open_recording` parses the fixed-width header itself (so every problem is
reported with the file and the field at fault), then reads samples through pyedflib.
Whether a file is EDF (16-bit) or BDF (24-bit) is decided by its first bytes (``0`` or
``\\xffBIOSEMI``), never by its name: :func:`signal_file_family` says it for any path.
Public datasets contain files that pyedflib refuses (digital limits outside the 16-bit
range, odd date characters, non-ASCII labels, malformed annotation records,
discontinuous EDF+D): those are read by a tolerant NumPy path that maps the data records
from disk, and the recording's ``warnings`` say so when the file breaks the spec.

Time
    Times are seconds from the first sample. In EDF+ the first data record's
    time-keeping annotation (``+0.3945312``) says how far after the header's whole
    second the first sample lies: :attr:`Recording.start_time` includes it and every
    annotation onset is counted from it, as pyedflib and MNE do. In EDF+D
    (discontinuous) files each data record is placed at its own time stamp; gaps read
    as NaN and :attr:`Recording.duration` is the true span.

Annotations
    Read from every ``EDF Annotations`` / ``BDF Annotations`` signal, in EDF+ and (as
    MNE does) in plain EDF/BDF files that carry one. They are parsed here rather than by
    pyedflib, because pyedflib silently rewrites text that is not valid UTF-8; here such
    text raises :class:`~engine.errors.EDFError`.

Header text
    Labels, units, transducer, prefilter, patient and recording fields are decoded as
    UTF-8 when they are valid UTF-8, else as Latin-1.

Samples come back as float64 in µV whatever the file's voltage unit (V, mV, µV, nV); a
channel whose unit is not a voltage (``%``, ``bpm``, ``Ohm``...) or is empty is returned
in its own unit, and :attr:`Recording.notes` says so once (information, not a warning).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ..errors import EDFError

__all__ = [
    "ChannelInfo",
    "Annotation",
    "Recording",
    "open_recording",
    "signal_file_family",
    "unit_scale_to_uv",
]

logger = logging.getLogger(__name__)

_HEADER_FIELDS = (  # name, width of each signal's entry in the signal header
    ("label", 16),
    ("transducer", 80),
    ("unit", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefilter", 80),
    ("samples_per_record", 8),
    ("reserved", 32),
)
_ANNOTATION_LABELS = ("edf annotations", "bdf annotations")
_UNIT_SCALE = {"v": 1e6, "mv": 1e3, "uv": 1.0, "µv": 1.0, "μv": 1.0, "microv": 1.0, "nv": 1e-3}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TAL_ONSET = re.compile(rb"^[+-]\d+(\.\d*)?$")
_EDF_MAGIC = b"0       "
_BDF_MAGIC = b"\xffBIOSEMI"
#: Files this process has open through pyedflib (resolved path -> open readers).
_PYEDFLIB_OPEN: Counter[str] = Counter()


def unit_scale_to_uv(unit: str) -> float | None:
    """Factor that turns values in ``unit`` into µV, or ``None`` for a non-voltage unit."""
    return _UNIT_SCALE.get(unit.strip().lower().replace(" ", ""))


def signal_file_family(path: str | os.PathLike[str]) -> str | None:
    """``"EDF"`` or ``"BDF"`` from a file's first 8 bytes, ``None`` for anything else.

    EDF and EDF+ files start with ``"0"`` (padded with spaces), BDF and BDF+ files with
    the byte 0xFF and ``"BIOSEMI"``; the file name is not looked at. Never raises: a
    missing, unreadable or short file gives ``None``.

    Examples
    --------
    >>> signal_file_family("night.txt")  # doctest: +SKIP
    'EDF'
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return _family(head)


def _family(head: bytes) -> str | None:
    """``"EDF"``, ``"BDF"`` or ``None`` from the 8-byte version field."""
    if head == _BDF_MAGIC:
        return "BDF"
    if len(head) == 8 and head[:1] == b"0" and head[1:].strip(b" \x00") == b"":
        return "EDF"
    return None


def _decode(raw: bytes) -> str:
    """Header text: UTF-8 when it is valid UTF-8, else Latin-1 (never fails)."""
    raw = raw.rstrip(b" \x00")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.start >= len(raw) - 3:
            # A multi-byte character cut by the fixed field width.
            try:
                return raw[: err.start].decode("utf-8").strip()
            except UnicodeDecodeError:
                pass
        return raw.decode("latin-1").strip()


@dataclass(frozen=True)
class ChannelInfo:
    """One signal of a recording (annotation signals are not channels).

    ``index`` is the position among the recording's channels, ``fs`` the sampling rate
    in Hz, ``unit`` the physical dimension as written in the file, ``n_samples`` the
    number of samples :meth:`Recording.read` returns for the whole channel (in an EDF+D
    file with gaps this includes the NaN-filled gaps).
    """

    index: int
    label: str
    fs: float
    unit: str
    physical_min: float
    physical_max: float
    n_samples: int
    digital_min: int
    digital_max: int
    transducer: str = ""
    prefilter: str = ""


@dataclass(frozen=True)
class Annotation:
    """One EDF+ annotation: onset (s from the first sample), duration (s or None), text."""

    onset: float
    duration: float | None
    text: str


@dataclass(frozen=True)
class _Signal:
    label: str
    transducer: str
    unit: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    samples_per_record: int
    offset: int  # sample offset of this signal inside a data record

    @property
    def is_annotation(self) -> bool:
        return self.label.strip().lower() in _ANNOTATION_LABELS


@dataclass(frozen=True)
class _Header:
    version: bytes
    patient: str
    recording: str
    start_time: datetime
    header_bytes: int
    reserved: str
    n_records: int
    record_duration: float
    signals: tuple[_Signal, ...]
    bytes_per_sample: int
    warnings: tuple[str, ...]

    @property
    def record_samples(self) -> int:
        return sum(signal.samples_per_record for signal in self.signals)


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace").strip()


def _number(path: Path, raw: bytes, field: str, kind: type = float) -> float:
    text = _text(raw)
    try:
        value = float(text)
    except ValueError:
        raise EDFError(f"{path}: header field {field} is {text!r}, not a number") from None
    if not np.isfinite(value):
        raise EDFError(f"{path}: header field {field} is {text!r}, not a finite number")
    if kind is int:
        if value != int(value):
            raise EDFError(f"{path}: header field {field} is {text!r}, not an integer")
        return int(value)
    return value


def _start_time(path: Path, date: bytes, time: bytes, recording: str, notes: list[str]) -> datetime:
    """Start from ``dd.mm.yy`` / ``hh.mm.ss``, with the EDF+ 4-digit year when present."""
    date_text, time_text = _text(date), _text(time)
    numbers = re.split(r"[.:/\-]", date_text), re.split(r"[.:/\-]", time_text)
    try:
        day, month, year = (int(part) for part in numbers[0])
        hour, minute, second = (int(part) for part in numbers[1])
        year += 1900 if year >= 85 else 2000
        match = re.search(r"Startdate (\d{2})-([A-Z]{3})-(\d{4})", recording)
        if match and match.group(2) in _MONTHS:
            year = int(match.group(3))
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        notes.append(
            f"start date/time {date_text!r} {time_text!r} unreadable; using 1985-01-01 00:00:00"
        )
        return datetime(1985, 1, 1)


def _parse_header(path: Path, size: int) -> _Header:
    """Parse and check the fixed-width header; raise EDFError naming the bad field."""
    if size < 256:
        raise EDFError(f"{path}: truncated header ({size} bytes, an EDF header has at least 256)")
    with open(path, "rb") as handle:
        fixed = handle.read(256)
        version = fixed[:8]
        family = _family(version)
        if family == "BDF":
            bytes_per_sample = 3
        elif family == "EDF":
            bytes_per_sample = 2
        else:
            raise EDFError(
                f"{path}: not an EDF/BDF file (version field is {version!r}, expected '0' "
                "or '\\xffBIOSEMI')"
            )
        n_signals = _number(path, fixed[252:256], "number of signals", int)
        if n_signals < 1:
            raise EDFError(f"{path}: header field number of signals is {n_signals}")
        header_bytes = 256 * (n_signals + 1)
        if size < header_bytes:
            raise EDFError(
                f"{path}: truncated header ({size} bytes, {n_signals} signals need {header_bytes})"
            )
        raw = handle.read(256 * n_signals)
    notes: list[str] = []
    declared = _number(path, fixed[184:192], "header bytes", int)
    if declared != header_bytes:
        notes.append(f"header bytes field says {declared}, {n_signals} signals need {header_bytes}")
    recording = _decode(fixed[88:168])
    start = _start_time(path, fixed[168:176], fixed[176:184], recording, notes)
    record_duration = _number(path, fixed[244:252], "duration of a data record")
    if record_duration < 0:
        raise EDFError(f"{path}: header field duration of a data record is {record_duration}")
    columns: dict[str, list[bytes]] = {}
    position = 0
    for name, width in _HEADER_FIELDS:
        columns[name] = [
            raw[position + i * width : position + (i + 1) * width] for i in range(n_signals)
        ]
        position += width * n_signals
    signals = []
    offset = 0
    for i in range(n_signals):
        label = _decode(columns["label"][i])
        where = f"of signal {i} ({label!r})"
        spr = int(
            _number(path, columns["samples_per_record"][i], f"samples per record {where}", int)
        )
        if spr < 1:
            raise EDFError(f"{path}: header field samples per record {where} is {spr}")
        digital_min = int(_number(path, columns["digital_min"][i], f"digital minimum {where}", int))
        digital_max = int(_number(path, columns["digital_max"][i], f"digital maximum {where}", int))
        limit = 2 ** (8 * bytes_per_sample - 1)
        if not (-limit <= digital_min < limit and -limit <= digital_max < limit):
            notes.append(
                f"digital range {digital_min}..{digital_max} {where} exceeds the "
                f"{8 * bytes_per_sample}-bit range"
            )
        signals.append(
            _Signal(
                label=label,
                transducer=_decode(columns["transducer"][i]),
                unit=_decode(columns["unit"][i]),
                physical_min=_number(path, columns["physical_min"][i], f"physical minimum {where}"),
                physical_max=_number(path, columns["physical_max"][i], f"physical maximum {where}"),
                digital_min=digital_min,
                digital_max=digital_max,
                prefilter=_decode(columns["prefilter"][i]),
                samples_per_record=spr,
                offset=offset,
            )
        )
        offset += spr
    record_bytes = offset * bytes_per_sample
    available = (size - header_bytes) // record_bytes
    n_records = int(_number(path, fixed[236:244], "number of data records", int))
    if n_records == -1:
        notes.append(f"number of data records is -1; {available} found from the file size")
        n_records = available
    elif n_records < 0:
        raise EDFError(f"{path}: header field number of data records is {n_records}")
    expected = header_bytes + n_records * record_bytes
    if size < expected:
        raise EDFError(
            f"{path}: truncated: the header announces {n_records} data records of "
            f"{record_bytes} bytes ({expected} bytes in all) but the file has {size} bytes "
            f"({available} complete records)"
        )
    if size > expected:
        notes.append(f"{size - expected} bytes after the last data record ignored")
    if record_duration == 0 and any(not s.is_annotation for s in signals):
        raise EDFError(f"{path}: header field duration of a data record is 0 but it holds signals")
    return _Header(
        version=version,
        patient=_decode(fixed[8:88]),
        recording=recording,
        start_time=start,
        header_bytes=header_bytes,
        reserved=_text(fixed[192:236]),
        n_records=n_records,
        record_duration=record_duration,
        signals=tuple(signals),
        bytes_per_sample=bytes_per_sample,
        warnings=tuple(notes),
    )


class Recording:
    """An open EDF/EDF+/BDF/BDF+ recording; use :func:`open_recording` to get one.

    Attributes
    ----------
    path : Path
    channels : list of ChannelInfo
        Signal channels (annotation signals excluded), in file order.
    start_time : datetime
        Clock time of the first sample: the header's date and time plus, in EDF+, the
        first data record's time-keeping offset (:attr:`start_offset`).
    start_offset : float
        Seconds from the header's start time to the first sample (the first data
        record's time-keeping annotation; 0 without one).
    duration : float
        Seconds from the first sample to the end of the last data record (in an EDF+D
        file with gaps, the true span including the gaps).
    gaps : list of (float, float)
        Missing stretches (start, end) in seconds of an EDF+D file; they read as NaN.
    file_type : str
        ``"EDF"``, ``"EDF+C"``, ``"EDF+D"``, ``"BDF"``, ``"BDF+C"`` or ``"BDF+D"``.
    backend : str
        ``"pyedflib"``, or ``"numpy"`` when pyedflib refused the file, for EDF+D files
        and for files without channels.
    warnings : list of str
        Deviations from the EDF specification that were tolerated.
    notes : list of str
        Information about the file that is not a fault: channels returned in their own
        non-voltage unit, gaps of a discontinuous file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise EDFError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise EDFError(f"{self.path}: not a file")
        size = self.path.stat().st_size
        if size == 0:
            raise EDFError(f"{self.path}: empty file")
        self._header = _parse_header(self.path, size)
        header = self._header
        self.warnings: list[str] = list(header.warnings)
        self.notes: list[str] = []
        family = "BDF" if header.bytes_per_sample == 3 else "EDF"
        plus = header.reserved[:5].upper()
        self.file_type = (
            family + plus[3:] if plus in ("EDF+C", "EDF+D", "BDF+C", "BDF+D") else family
        )
        self._data: np.memmap | None = None
        self._reader = None
        self._reader_index: list[int] = []  # channel index -> pyedflib signal index
        self.backend = "numpy"
        self._annotation_signals = [s for s in header.signals if s.is_annotation]
        self._signal_index: list[int] = [  # channel index -> signal index in the header
            i for i, signal in enumerate(header.signals) if not signal.is_annotation
        ]
        self.duration: float = header.n_records * header.record_duration
        self.gaps: list[tuple[float, float]] = []
        self._record_starts: np.ndarray | None = None  # set when records are not contiguous
        self.start_offset, stamps = self._time_keeping()
        try:
            self.start_time: datetime = header.start_time + timedelta(seconds=self.start_offset)
        except OverflowError:
            self.warnings.append(
                f"time-keeping offset {self.start_offset:g} s is out of range; ignored"
            )
            self.start_offset, stamps = 0.0, None
            self.start_time = header.start_time
        if stamps is not None:
            self._place_records(stamps)
        channels = []
        for signal_index in self._signal_index:
            signal = header.signals[signal_index]
            fs = signal.samples_per_record / header.record_duration
            n_samples = signal.samples_per_record * header.n_records
            if self._record_starts is not None:
                n_samples = int(np.rint(self._record_starts[-1] * fs)) + signal.samples_per_record
            channels.append(
                ChannelInfo(
                    index=len(channels),
                    label=signal.label,
                    fs=fs,
                    unit=signal.unit,
                    physical_min=signal.physical_min,
                    physical_max=signal.physical_max,
                    n_samples=n_samples,
                    digital_min=signal.digital_min,
                    digital_max=signal.digital_max,
                    transducer=signal.transducer,
                    prefilter=signal.prefilter,
                )
            )
        self.channels: list[ChannelInfo] = channels
        self._note_units()
        if channels and not self.file_type.endswith("+D"):  # pyedflib refuses EDF+D
            self._open_pyedflib()
        for message in self.warnings:
            logger.warning("%s: %s", self.path.name, message)
        for message in self.notes:
            logger.info("%s: %s", self.path.name, message)

    # -- opening ---------------------------------------------------------------------
    def _open_pyedflib(self) -> None:
        import pyedflib

        key = str(self.path.resolve())
        if _PYEDFLIB_OPEN[key]:
            # pyedflib refuses a file this process already has open, and that refusal
            # breaks the open handle (its reads return zeros): read this one with NumPy.
            logger.debug("%s: already open through pyedflib; read by the NumPy reader", key)
            return
        try:
            self._reader = pyedflib.EdfReader(
                str(self.path), annotations_mode=pyedflib.DO_NOT_READ_ANNOTATIONS
            )
        except OSError as err:
            reason = str(err).replace(str(self.path), "").lstrip(": ")
            self.warnings.append(f"pyedflib refused the file ({reason}); read by the NumPy reader")
            return
        labels = [label.strip() for label in self._reader.getSignalLabels()]
        if labels == [channel.label for channel in self.channels]:
            self._reader_index = list(range(len(self.channels)))
        elif labels == [signal.label for signal in self._header.signals]:
            # A plain EDF carrying an annotation signal: pyedflib lists it as a channel.
            self._reader_index = list(self._signal_index)
        else:
            self._reader.close()
            self._reader = None
            self.warnings.append("pyedflib lists other channels; read by the NumPy reader")
            return
        self.backend = "pyedflib"
        _PYEDFLIB_OPEN[key] += 1

    def _note_units(self) -> None:
        """One note for all channels returned in their own (non-voltage or no) unit."""
        other = [
            f"{c.label} ({c.unit})"
            for c in self.channels
            if c.unit.strip() and unit_scale_to_uv(c.unit) is None
        ]
        blank = [c.label for c in self.channels if not c.unit.strip()]
        if other:
            self.notes.append(
                f"{len(other)} channel(s) with a non-voltage unit, returned in that unit: "
                + ", ".join(other)
            )
        if blank:
            self.notes.append(
                f"{len(blank)} channel(s) without a unit, returned as written (taken as µV "
                "where a voltage is expected): " + ", ".join(blank)
            )

    def _time_keeping(self) -> tuple[float, np.ndarray | None]:
        """The first record's time-keeping offset, and every record's stamp in EDF+D.

        Returns
        -------
        (offset, stamps)
            ``offset`` in seconds after the header's start time (0 when the first data
            record has no time-keeping annotation); ``stamps`` the seconds from the
            first record's start to each record's start (EDF+D only, else ``None``).
        """
        header = self._header
        if not self._annotation_signals or header.n_records == 0:
            if self.file_type != self.file_type[:3] and header.n_records:
                self.warnings.append("EDF+ file without an annotation signal (time keeping)")
            return 0.0, None
        discontinuous = self.file_type.endswith("+D")
        rows = header.n_records if discontinuous else 1
        block = self._annotation_bytes(self._annotation_signals[0], rows)
        stamps = np.array([_record_stamp(block[row].tobytes()) for row in range(rows)])
        plus = self.file_type != self.file_type[:3]
        first = float(stamps[0])
        if not np.isfinite(first):
            if plus:
                self.warnings.append(
                    "the first data record has no time-keeping annotation; times counted "
                    "from the header's start time"
                )
            first = 0.0
        if not discontinuous:
            return first, None
        missing = int(np.count_nonzero(~np.isfinite(stamps)))
        if missing:
            self.warnings.append(
                f"{missing} data record(s) of this EDF+D file have no time stamp; "
                "records read back to back"
            )
            return first, None
        return first, stamps - first

    def _place_records(self, stamps: np.ndarray) -> None:
        """Keep each EDF+D record at its time stamp when the records are not contiguous."""
        if not self._signal_index:
            return  # annotations only: nothing to place
        header = self._header
        duration = header.record_duration
        rates = [header.signals[i].samples_per_record / duration for i in self._signal_index]
        tolerance = 0.5 / max(rates)
        steps = np.diff(stamps)
        back = np.flatnonzero(steps < duration - tolerance)
        if back.size:
            record = int(back[0]) + 1
            self.warnings.append(
                f"EDF+D data record {record} starts at {stamps[record]:g} s, before the end "
                f"of record {record - 1} ({stamps[record - 1] + duration:g} s); records read "
                "back to back"
            )
            return
        after = np.flatnonzero(steps > duration + tolerance)
        if after.size == 0:
            return  # EDF+D without gaps: the same as EDF+C
        self._record_starts = stamps
        self.duration = float(stamps[-1] + duration)
        self.gaps = [(float(stamps[k] + duration), float(stamps[k + 1])) for k in after]
        missing = sum(end - start for start, end in self.gaps)
        listed = ", ".join(f"{start:g}-{end:g} s" for start, end in self.gaps[:5])
        more = f" and {len(self.gaps) - 5} more" if len(self.gaps) > 5 else ""
        self.notes.append(
            f"discontinuous (EDF+D): {len(self.gaps)} gap(s), {missing:g} s in all, read as "
            f"NaN: {listed}{more}"
        )

    def _records(self) -> np.ndarray:
        """The data records as a (records, bytes) memory map, opened on first use."""
        if self._data is None:
            header = self._header
            record_bytes = header.record_samples * header.bytes_per_sample
            if header.n_records == 0:
                return np.zeros((0, record_bytes), dtype=np.uint8)
            self._data = np.memmap(
                self.path,
                dtype=np.uint8,
                mode="r",
                offset=header.header_bytes,
                shape=(header.n_records, record_bytes),
            )
        return self._data

    def _annotation_bytes(self, signal: _Signal, rows: int | None = None) -> np.ndarray:
        """The raw bytes of one annotation signal, one row per data record (the first
        ``rows`` records: one is read straight from the file, without a memory map, which
        costs more to set up than opening a recording otherwise does)."""
        header = self._header
        size = header.bytes_per_sample
        columns = slice(signal.offset * size, (signal.offset + signal.samples_per_record) * size)
        if rows == 1 and self._data is None and header.n_records:
            row = np.zeros((1, columns.stop - columns.start), np.uint8)
            with open(self.path, "rb") as handle:
                handle.seek(header.header_bytes + columns.start)
                handle.readinto(memoryview(row))  # a short file leaves zeros (no stamp)
            return row
        return np.ascontiguousarray(self._records()[:rows, columns])

    # -- context manager -------------------------------------------------------------
    def close(self) -> None:
        """Release the file."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            _PYEDFLIB_OPEN[str(self.path.resolve())] -= 1
        self._data = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Recording({str(self.path)!r}, {self.file_type}, {len(self.channels)} channels, "
            f"{self.duration:g} s)"
        )

    # -- channels --------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Channel labels in file order."""
        return [channel.label for channel in self.channels]

    def channel(self, label_or_index: str | int) -> ChannelInfo:
        """The :class:`ChannelInfo` of a label (exact, then case-insensitive) or index."""
        if isinstance(label_or_index, (int, np.integer)) and not isinstance(label_or_index, bool):
            if not 0 <= label_or_index < len(self.channels):
                raise EDFError(
                    f"{self.path}: channel index {label_or_index} out of range "
                    f"(0..{len(self.channels) - 1})"
                )
            return self.channels[int(label_or_index)]
        if not isinstance(label_or_index, str):
            raise TypeError(f"channel must be a label or an index, got {label_or_index!r}")
        for channel in self.channels:
            if channel.label == label_or_index:
                return channel
        wanted = label_or_index.strip().lower()
        for channel in self.channels:
            if channel.label.lower() == wanted:
                return channel
        raise EDFError(
            f"{self.path}: no channel {label_or_index!r}; channels are {', '.join(self.labels)}"
        )

    # -- samples ---------------------------------------------------------------------
    def read(
        self, label_or_index: str | int, start_s: float = 0.0, stop_s: float | None = None
    ) -> np.ndarray:
        """Samples of one channel between two times, in µV.

        Parameters
        ----------
        label_or_index : str or int
            Channel label or index in :attr:`channels`.
        start_s, stop_s : float
            Seconds from the first sample; ``stop_s=None`` reads to the end. Times are
            rounded to the nearest sample and clipped to the recording.

        Returns
        -------
        numpy.ndarray
            float64, ``round(stop_s * fs) - round(start_s * fs)`` samples; gaps of an
            EDF+D file are NaN. A channel whose unit is not a voltage comes back in its
            own unit (see :attr:`notes`).
        """
        channel = self.channel(label_or_index)
        if start_s < 0 or (stop_s is not None and stop_s < start_s):
            raise ValueError(f"need 0 <= start_s <= stop_s, got start_s={start_s}, stop_s={stop_s}")
        first = min(int(round(start_s * channel.fs)), channel.n_samples)
        last = channel.n_samples if stop_s is None else int(round(stop_s * channel.fs))
        last = min(max(last, first), channel.n_samples)
        if last == first:
            return np.zeros(0, dtype=np.float64)
        if self._record_starts is not None:
            values = self._read_placed(channel, first, last)
        elif self._reader is not None:
            values = self._reader.readSignal(
                self._reader_index[channel.index], first, last - first
            ).astype(np.float64)
        else:
            values = self._read_numpy(channel, first, last)
        scale = unit_scale_to_uv(channel.unit)
        if scale is not None and scale != 1.0:
            values *= scale
        return values

    def read_channels(
        self, labels_or_indices: Sequence[str | int], out: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Whole channels as float32, in µV: :meth:`read`'s values, read in one pass.

        The data records are read once, in file order, and every requested channel's
        samples are converted straight from them (no float64 copy, no pass per channel):
        the render path reads its montage this way. Values equal :meth:`read`'s to
        float32 precision. EDF+D files with gaps go through :meth:`read` (NaN in the
        gaps). ``out``: a float32 array of at least the channels' total length to read into
        (the channels are views of it).
        """
        layout = self.channel_layout(labels_or_indices)
        if layout is None:
            return [self.read(item).astype(np.float32) for item in labels_or_indices]
        records, size, offsets, counts, gains, shifts, starts = layout
        if out is None or out.size < starts[-1] or out.dtype != np.float32:
            out = np.empty(int(starts[-1]), np.float32)
        convert = _convert_records()
        # The records are read in blocks into one reused buffer (a fresh memory map costs a
        # page fault per 4 KiB, more than the conversion), and converted block by block.
        record_bytes = records.shape[1]
        per_block = max(1, _READ_BLOCK // max(record_bytes, 1))
        buffer = np.empty(per_block * record_bytes, np.uint8)
        total = records.shape[0]
        with open(self.path, "rb") as handle:
            handle.seek(self._header.header_bytes)
            for first in range(0, total, per_block):
                count = min(per_block, total - first)
                block = buffer[: count * record_bytes]
                if handle.readinto(memoryview(block)) != block.size:
                    raise EDFError(f"{self.path}: data records end early (read {first} of {total})")
                block = block.reshape(count, record_bytes)
                convert(
                    block,
                    block.view("<i2") if size == 2 else np.zeros((0, 0), "<i2"),
                    size,
                    offsets,
                    counts,
                    gains,
                    shifts,
                    starts,
                    first,
                    total,
                    out,
                )
        return [out[starts[i] : starts[i + 1]] for i in range(len(offsets))]

    def channel_layout(self, labels_or_indices: Sequence[str | int]) -> tuple | None:
        """Where whole channels lie in the data records, and how to scale them to µV.

        Returns
        -------
        tuple or None
            ``(records, bytes_per_sample, offsets, counts, gains, shifts, starts)``:
            the (records, bytes) map of the data, each channel's first sample and
            samples per record, the factor and offset from digital values to µV, and
            where each channel starts in a concatenation of them (one more entry: the
            total). ``None`` for EDF+D files with gaps and files without records (read
            those with :meth:`read`).
        """
        channels = [self.channel(item) for item in labels_or_indices]
        header = self._header
        if self._record_starts is not None or header.n_records == 0:
            return None
        offsets, counts, gains, shifts, starts = [], [], [], [], [0]
        for channel in channels:
            signal = header.signals[self._signal_index[channel.index]]
            if signal.digital_max == signal.digital_min:
                self._physical(signal, np.zeros(1, np.int32))  # raises the reader's error
            gain = (signal.physical_max - signal.physical_min) / (
                signal.digital_max - signal.digital_min
            )
            shift = signal.physical_min - signal.digital_min * gain
            scale = unit_scale_to_uv(channel.unit)
            if scale is not None and scale != 1.0:
                gain, shift = gain * scale, shift * scale
            offsets.append(signal.offset)
            counts.append(signal.samples_per_record)
            gains.append(gain)
            shifts.append(shift)
            starts.append(starts[-1] + signal.samples_per_record * header.n_records)
        return (
            np.asarray(self._records()),
            header.bytes_per_sample,
            np.array(offsets, np.int64),
            np.array(counts, np.int64),
            np.array(gains, np.float64),
            np.array(shifts, np.float64),
            np.array(starts, np.int64),
        )

    def _read_numpy(self, channel: ChannelInfo, first: int, last: int) -> np.ndarray:
        signal = self._header.signals[self._signal_index[channel.index]]
        spr = signal.samples_per_record
        first_record, last_record = first // spr, (last - 1) // spr + 1
        digital = self._digital(signal, first_record, last_record)
        digital = digital[first - first_record * spr : last - first_record * spr]
        return self._physical(signal, digital)

    def _read_placed(self, channel: ChannelInfo, first: int, last: int) -> np.ndarray:
        """Samples ``first:last`` of an EDF+D channel, each record at its time stamp."""
        assert self._record_starts is not None
        signal = self._header.signals[self._signal_index[channel.index]]
        spr = signal.samples_per_record
        positions = np.rint(self._record_starts * channel.fs).astype(np.int64)
        out = np.full(last - first, np.nan)
        hit = np.flatnonzero((positions < last) & (positions + spr > first))
        if hit.size == 0:
            return out
        low, high = int(hit[0]), int(hit[-1]) + 1
        values = self._physical(signal, self._digital(signal, low, high)).reshape(-1, spr)
        targets = positions[low:high, None] + np.arange(spr) - first
        inside = (targets >= 0) & (targets < last - first)
        out[targets[inside]] = values[inside]
        return out

    def _physical(self, signal: _Signal, digital: np.ndarray) -> np.ndarray:
        """Digital samples of ``signal`` in its physical unit (float64)."""
        if signal.digital_max == signal.digital_min:
            raise EDFError(
                f"{self.path}: digital maximum equals digital minimum ({signal.digital_min}) "
                f"for channel {signal.label!r}"
            )
        gain = (signal.physical_max - signal.physical_min) / (
            signal.digital_max - signal.digital_min
        )
        return (digital.astype(np.float64) - signal.digital_min) * gain + signal.physical_min

    def _digital(self, signal: _Signal, first_record: int, last_record: int) -> np.ndarray:
        """Digital samples of one signal over whole records, as int32."""
        size = self._header.bytes_per_sample
        block = self._records()[
            first_record:last_record,
            signal.offset * size : (signal.offset + signal.samples_per_record) * size,
        ]
        if size == 2:
            return np.ascontiguousarray(block).view("<i2").reshape(-1).astype(np.int32)
        triples = np.ascontiguousarray(block).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        return np.where(values >= 1 << 23, values - (1 << 24), values)

    # -- annotations -----------------------------------------------------------------
    def annotations(self) -> list[Annotation]:
        """Annotations of every annotation signal (time-keeping entries excluded).

        Read in EDF+/BDF+ and in plain EDF/BDF files that carry an ``EDF Annotations``
        signal (as MNE does); an empty list when there is none. Onsets are seconds from
        the first sample (the first record's time-keeping offset subtracted), sorted.
        Malformed annotation lists are skipped and counted in :attr:`warnings`.

        Raises
        ------
        EDFError
            When annotation text is not valid UTF-8.
        """
        found: list[Annotation] = []
        malformed = 0
        for signal in self._annotation_signals:
            block = self._annotation_bytes(signal)
            for record in range(block.shape[0]):
                for onset, duration, texts, ok in _parse_tals(block[record].tobytes()):
                    malformed += not ok
                    for text in texts:
                        try:
                            decoded = text.decode("utf-8")
                        except UnicodeDecodeError as err:
                            raise EDFError(
                                f"{self.path}: annotation at {onset:g} s in data record {record} "
                                f"is not UTF-8 text ({err.reason} at byte {err.start}: "
                                f"{text!r})"
                            ) from None
                        found.append(Annotation(self._onset(onset), duration, decoded))
        if malformed:
            message = f"{malformed} malformed annotation list(s) skipped"
            self.warnings.append(message)
            logger.warning("%s: %s", self.path.name, message)
        found.sort(key=lambda annotation: annotation.onset)
        return found

    def _onset(self, written: float) -> float:
        """Seconds from the first sample of an onset written after the header's start."""
        if not self.start_offset:
            return written
        return round(written - self.start_offset, 9)  # no 1.9999999999999998 for 2

    def iter_channels(self) -> Iterator[tuple[ChannelInfo, np.ndarray]]:
        """Each channel with its whole signal, one at a time (bounded memory)."""
        for channel in self.channels:
            yield channel, self.read(channel.index)


@functools.cache
def _convert_records():
    """numba kernel: selected signals of every data record -> float32 ``gain * d + shift``.

    ``records`` is a block of the data records, record ``record0`` of ``total`` first
    (``words`` the same as 16-bit integers for EDF); signal ``i`` starts at sample
    ``offsets[i]`` of a record and has ``counts[i]`` samples per record, written to
    ``out[starts[i]:starts[i + 1]]``. Samples are little-endian 16-bit (EDF) or 24-bit
    (BDF) two's complement.
    """
    import numba

    @numba.njit(nogil=True, cache=True)
    def convert(records, words, size, offsets, counts, gains, shifts, starts, record0, total, out):
        # records: a block of the data records, the first being record ``record0`` of ``total``.
        for r in range(records.shape[0]):
            record = records[r]
            for i in range(offsets.shape[0]):
                count = counts[i]
                where = starts[i] + (record0 + r) * count
                target = out[where : where + count]
                first = offsets[i] * size
                gain, shift = gains[i], shifts[i]
                if size == 2:
                    source = words[r, offsets[i] : offsets[i] + count]
                    for c in range(count):
                        target[c] = np.float32(gain * source[c] + shift)
                else:
                    for c in range(count):
                        value = (
                            np.int32(record[first + 3 * c])
                            | (np.int32(record[first + 3 * c + 1]) << 8)
                            | (np.int32(np.int8(record[first + 3 * c + 2])) << 16)
                        )
                        target[c] = np.float32(gain * value + shift)

    return convert


#: Bytes of data records read at a time by :meth:`Recording.read_channels`.
_READ_BLOCK = 4 << 20


def _record_stamp(raw: bytes) -> float:
    """The time-keeping onset that opens one record's annotation signal, or NaN.

    A time-keeping list is ``+onset`` followed by an empty annotation (``\\x14\\x14``).
    """
    chunk = next((part for part in raw.split(b"\x00") if part), b"")
    parts = chunk.split(b"\x14")
    if len(parts) < 3 or parts[1] != b"" or not _TAL_ONSET.match(parts[0]):
        return float("nan")
    return float(parts[0])


def _parse_tals(raw: bytes) -> Iterator[tuple[float, float | None, list[bytes], bool]]:
    """Time-stamped annotation lists of one record: (onset, duration, texts, well_formed).

    Onsets are as written (seconds after the header's start time). The record's
    time-keeping list (``+onset\\x14\\x14``) yields only the texts that follow its empty
    annotation, usually none.
    """
    for chunk in raw.split(b"\x00"):
        if not chunk:
            continue
        parts = chunk.split(b"\x14")
        timing, texts = parts[0], [text for text in parts[1:] if text]
        onset_raw, _, duration_raw = timing.partition(b"\x15")
        if len(parts) < 2 or not _TAL_ONSET.match(onset_raw):
            yield 0.0, None, [], False
            continue
        try:
            duration = float(duration_raw) if duration_raw else None
        except ValueError:
            yield 0.0, None, [], False
            continue
        yield float(onset_raw), duration, texts, True


def open_recording(path: str | os.PathLike[str]) -> Recording:
    """Open an EDF/EDF+/BDF/BDF+ file for reading, whatever its name.

    EDF and BDF are told apart by the file's first bytes (see
    :func:`signal_file_family`), so a BDF named ``.edf`` or an EDF named ``.rec`` or
    ``.dat`` opens the same way.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    Recording
        Use it as a context manager (``with open_recording(p) as rec: ...``).

    Raises
    ------
    EDFError
        Missing, empty, truncated or corrupt file; not an EDF/BDF file; header fields
        that cannot be read.

    Examples
    --------
    >>> with open_recording("night.edf") as rec:  # doctest: +SKIP
    ...     eeg = rec.read("EEG C4-M1", 0.0, 30.0)
    """
    return Recording(path)

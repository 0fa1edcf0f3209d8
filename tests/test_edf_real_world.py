"""Real-world EDF variants (issue 17): sub-second starts, BDF/BDF+ by header, EDF+D gaps,
plain EDF with an annotation signal, Latin-1/UTF-8 header text, non-voltage and 1-Hz
channels; compared with pyedflib and MNE where they read the file, and through
``psgvlm info``.

The files are written byte by byte (:mod:`edf_bytes`) where pyedflib cannot write them.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import numpy as np
import pyedflib
import pytest
from edf_bytes import RawSignal, annotation_signal, tal, time_keeping, write_raw_edf

from engine.io.edf import open_recording, signal_file_family
from engine.io.hypnogram import detect_format, find_hypnogram, read_hypnogram
from psgvlm.cli import main

START = datetime(2021, 3, 4, 22, 15, 0)


def _ramp(n: int, period: int = 200, step: int = 100) -> np.ndarray:
    """Distinct digital values: a saw tooth (records can be told apart by their values)."""
    return ((np.arange(n) % period) - period // 2) * step + np.arange(n) // period


def _mne():
    return pytest.importorskip("mne")


def _info_json(capsys, *args: str) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- 1. EDF+ sub-second start ------------------------------------------------------------
OFFSET = 0.3945312


@pytest.fixture
def subsecond_edf(tmp_path):
    """EDF+C whose first sample lies 0.3945312 s after the header's start second."""
    fs, records = 100, 60
    eeg = RawSignal(b"EEG C3-A1", fs, _ramp(fs * records))
    tals = [time_keeping(OFFSET + r) for r in range(records)]
    tals[0] += tal(OFFSET + 0.0, "Sleep stage W", 30)
    tals[1] += tal(OFFSET + 30.0, "Sleep stage 2", 30)
    tals[5] += tal(OFFSET + 12.25, "Arousal")
    return write_raw_edf(tmp_path / "sub.edf", [eeg, annotation_signal()], records, 1.0, tals)


def test_subsecond_start_is_subtracted_like_pyedflib_and_mne(subsecond_edf):
    with open_recording(subsecond_edf) as rec:
        assert rec.file_type == "EDF+C" and rec.backend == "pyedflib"
        assert rec.start_offset == pytest.approx(OFFSET)
        assert rec.start_time == START + timedelta(microseconds=394531)
        assert rec.duration == 60.0 and rec.warnings == [] and rec.notes == []
        ours = rec.annotations()
    assert [(a.onset, a.duration, a.text) for a in ours] == [
        (0.0, 30.0, "Sleep stage W"),
        (12.25, None, "Arousal"),
        (30.0, 30.0, "Sleep stage 2"),
    ]
    with pyedflib.EdfReader(str(subsecond_edf)) as reader:
        onsets, _, texts = reader.readAnnotations()
    order = np.argsort(onsets, kind="stable")
    assert [texts[i] for i in order] == [a.text for a in ours]
    np.testing.assert_allclose([a.onset for a in ours], np.asarray(onsets)[order], atol=1e-3)
    raw = _mne().io.read_raw_edf(subsecond_edf, verbose="error")
    by_text = dict(zip(raw.annotations.description, raw.annotations.onset))
    for annotation in ours:
        assert annotation.onset == pytest.approx(by_text[annotation.text], abs=1e-3)


def test_edf_plus_hypnogram_onsets_count_from_the_first_sample(subsecond_edf, tmp_path):
    hypnogram = read_hypnogram(subsecond_edf)
    np.testing.assert_allclose(hypnogram.onsets, [0.0, 30.0], atol=1e-9)
    assert hypnogram.start_time == START + timedelta(microseconds=394531)
    # Against its own recording nothing moves; against a whole-second recording that
    # started 10 s earlier, onsets move by 10.3945312 s.
    same = read_hypnogram(subsecond_edf, signal_path=subsecond_edf)
    np.testing.assert_allclose(same.onsets, [0.0, 30.0], atol=1e-9)
    earlier = write_raw_edf(
        tmp_path / "earlier.edf",
        [RawSignal(b"EEG", 10, _ramp(10 * 100)), annotation_signal()],
        100,
        1.0,
        [time_keeping(r) for r in range(100)],
        start_time=b"22.14.50",
    )
    moved = read_hypnogram(subsecond_edf, signal_path=earlier)
    np.testing.assert_allclose(moved.onsets, [10.3945312, 40.3945312], atol=1e-6)


def test_info_json_lists_annotations_with_subsecond_onsets(subsecond_edf, capsys):
    info = _info_json(capsys, str(subsecond_edf))
    assert info["annotations"] == [
        {"onset": 0.0, "duration": 30.0, "text": "Sleep stage W"},
        {"onset": 12.25, "duration": None, "text": "Arousal"},
        {"onset": 30.0, "duration": 30.0, "text": "Sleep stage 2"},
    ]
    assert info["start_time"] == "2021-03-04 22:15:00.394531"
    assert info["start_offset_s"] == pytest.approx(OFFSET)
    assert main(["info", str(subsecond_edf)]) == 0
    text = capsys.readouterr().out
    assert "annotations 3" in text and "12.250 s  Arousal" in text


# -- 4. BDF / BDF+ decided by header --------------------------------------------------------
def _write_bdf_plus(path, annotations=((3.5, 30.0, "Sleep stage W"), (40.0, -1, "Spindle"))):
    writer = pyedflib.EdfWriter(str(path), 1, pyedflib.FILETYPE_BDFPLUS)
    try:
        writer.setSignalHeaders(
            [
                {
                    "label": "EEG Cz-A1",
                    "dimension": "uV",
                    "sample_frequency": 128,
                    "physical_min": -400,
                    "physical_max": 400,
                    "digital_min": -8388608,
                    "digital_max": 8388607,
                }
            ]
        )
        writer.setStartdatetime(START)
        t = np.arange(128 * 90) / 128
        writer.writeSamples([150 * np.sin(2 * np.pi * 3 * t)])
        for onset, duration, text in annotations:
            writer.writeAnnotation(onset, duration, text)
    finally:
        writer.close()
    return path


def test_bdf_plus_opens_by_header_whatever_its_name(tmp_path):
    written = _write_bdf_plus(tmp_path / "night.bdf")
    with pyedflib.EdfReader(str(written)) as reader:
        expected = reader.readSignal(0)
        onsets, durations, texts = reader.readAnnotations()
    for name in ("night.edf", "night.dat", "recording"):
        path = tmp_path / name
        path.write_bytes(written.read_bytes())
        assert signal_file_family(path) == "BDF"
        with open_recording(path) as rec:
            assert rec.file_type == "BDF+C" and rec.labels == ["EEG Cz-A1"]
            np.testing.assert_allclose(rec.read(0), expected, atol=1e-9)
            got = rec.annotations()
        assert [a.text for a in got] == list(texts)
        np.testing.assert_allclose([a.onset for a in got], onsets, atol=1e-3)
    hypnogram = read_hypnogram(tmp_path / "night.dat")
    assert detect_format(tmp_path / "night.dat") == "edf+"
    assert hypnogram.labels == ["Sleep stage W"] and hypnogram.onsets[0] == pytest.approx(3.5)


def test_bdf_plus_with_a_subsecond_start_matches_mne(tmp_path):
    fs, records = 64, 40
    tals = [time_keeping(0.7 + r) for r in range(records)]
    tals[0] += tal(0.7 + 5.0, "Lights off")
    tals[2] += tal(0.7 + 30.0, "Sleep stage 1", 10)
    path = write_raw_edf(
        tmp_path / "x.bdf",
        [
            RawSignal(
                b"EEG C4-A2",
                fs,
                _ramp(fs * records, step=20000),
                physical=(-1000.0, 1000.0),
                digital_range=(-8388608, 8388607),
            ),
            annotation_signal(40, bdf=True),
        ],
        records,
        1.0,
        tals,
        reserved=b"BDF+C",
        bdf=True,
    )
    with open_recording(path) as rec:
        assert rec.file_type == "BDF+C" and rec.start_offset == pytest.approx(0.7)
        ours = rec.annotations()
        values = rec.read(0)
    assert [(a.onset, a.text) for a in ours] == [(5.0, "Lights off"), (30.0, "Sleep stage 1")]
    raw = _mne().io.read_raw_bdf(path, verbose="error")
    np.testing.assert_allclose([a.onset for a in ours], raw.annotations.onset, atol=1e-3)
    np.testing.assert_allclose(values, raw.get_data()[0] * 1e6, rtol=1e-6, atol=1e-3)


def test_signal_file_family_reads_bytes_not_names(tmp_path, write_edf):
    edf = write_edf(tmp_path / "a.bdf", [("EEG", np.zeros(100), 10, "uV")], plus=False)
    text = tmp_path / "b.edf"
    text.write_text("hello, not an EDF file\n")
    assert signal_file_family(edf) == "EDF"
    assert signal_file_family(text) is None
    assert signal_file_family(tmp_path / "missing.edf") is None
    assert signal_file_family(tmp_path) is None
    with open_recording(edf) as rec:  # an EDF named .bdf is read as 16-bit EDF
        assert rec.file_type == "EDF"
        np.testing.assert_allclose(rec.read(0), 0.0, atol=1e-6)


def test_find_hypnogram_next_to_a_bdf(tmp_path):
    psg = _write_bdf_plus(tmp_path / "night7.bdf")
    (tmp_path / "night7-hypnogram.csv").write_text("onset,duration,stage\n0,30,W\n")
    assert find_hypnogram(psg) == tmp_path / "night7-hypnogram.csv"


# -- 11. EDF+D (discontinuous) -------------------------------------------------------------
STAMPS = (0.0, 1.0, 2.0, 10.0, 11.0, 19.0)  # 6 one-second records spanning 20 s


@pytest.fixture
def discontinuous_edf(tmp_path):
    fs = 100
    digital = _ramp(fs * len(STAMPS))
    tals = [time_keeping(stamp) for stamp in STAMPS]
    tals[3] += tal(10.5, "Arousal", 1.0)
    path = write_raw_edf(
        tmp_path / "gaps.edf",
        [RawSignal(b"EEG C4-M1", fs, digital), RawSignal(b"Pos", 1, np.arange(6), b"")]
        + [annotation_signal()],
        len(STAMPS),
        1.0,
        tals,
        reserved=b"EDF+D",
    )
    return path, digital


def test_edf_plus_d_records_are_placed_at_their_time_stamps(discontinuous_edf):
    path, digital = discontinuous_edf
    gain = 1000.0 / 65535
    physical = (digital + 32768) * gain - 500.0
    with open_recording(path) as rec:
        assert rec.file_type == "EDF+D"
        assert rec.duration == 20.0
        assert rec.gaps == [(3.0, 10.0), (12.0, 19.0)]
        assert [c.n_samples for c in rec.channels] == [2000, 20]
        assert rec.warnings == []
        assert len(rec.notes) == 2 and "2 gap(s), 14 s in all" in rec.notes[0]
        eeg = rec.read("EEG C4-M1")
        assert eeg.size == 2000 and int(np.isnan(eeg).sum()) == 1400
        np.testing.assert_allclose(eeg[:300], physical[:300], atol=1e-9)
        np.testing.assert_allclose(eeg[1000:1200], physical[300:500], atol=1e-9)
        np.testing.assert_allclose(eeg[1900:], physical[500:], atol=1e-9)
        part = rec.read(0, 9.5, 10.5)
        assert np.isnan(part[:50]).all()
        np.testing.assert_allclose(part[50:], physical[300:350], atol=1e-9)
        assert np.isnan(rec.read(0, 4.0, 8.0)).all()
        slow = rec.read("Pos")
        np.testing.assert_array_equal(np.flatnonzero(np.isfinite(slow)), [0, 1, 2, 10, 11, 19])
        assert [(a.onset, a.text) for a in rec.annotations()] == [(10.5, "Arousal")]


def test_edf_plus_d_hypnogram_stays_on_the_clock_after_a_gap(tmp_path):
    fs, stamps = 10, (0.0, 30.0, 90.0, 120.0)  # 30-s records, one 30-s gap at 60 s
    digital = np.repeat([1000, 2000, 3000, 4000], 30 * fs)
    tals = [time_keeping(stamp) for stamp in stamps]
    for i, (stamp, stage) in enumerate(zip(stamps, ("W", "2", "2", "R"))):
        tals[i] += tal(stamp, f"Sleep stage {stage}", 30)
    path = write_raw_edf(
        tmp_path / "night.edf",
        [RawSignal(b"EEG C4-M1", 30 * fs, digital), annotation_signal(40)],
        4,
        30.0,
        tals,
        reserved=b"EDF+D",
    )
    epochs = read_hypnogram(path).to_epochs()
    np.testing.assert_allclose(epochs.onsets, [0, 30, 90, 120])
    with open_recording(path) as rec:
        assert rec.duration == 150.0
        for onset, level in zip(epochs.onsets, (1000, 2000, 3000, 4000)):
            epoch = rec.read(0, onset, onset + 30)
            expected = (level + 32768) * 1000.0 / 65535 - 500.0
            np.testing.assert_allclose(epoch, expected, atol=1e-9)
        assert np.isnan(rec.read(0, 60, 90)).all()


def test_edf_plus_d_without_gaps_reads_like_edf_plus_c_without_a_warning(tmp_path):
    fs, records = 100, 8
    digital = _ramp(fs * records)
    signals = [RawSignal(b"EEG C4-M1", fs, digital), annotation_signal()]
    tals = [time_keeping(0.25 + r) for r in range(records)]
    tals[2] += tal(2.75, "Arousal")
    kwargs = {"start_time": b"22.15.00"}
    plus_d = write_raw_edf(tmp_path / "d.edf", signals, records, 1.0, tals, reserved=b"EDF+D")
    plus_c = write_raw_edf(tmp_path / "c.edf", signals, records, 1.0, tals, **kwargs)
    with open_recording(plus_c) as rec:
        assert rec.backend == "pyedflib"
        # The first record's stamp, read straight from the file (no memory map).
        assert rec.start_offset == pytest.approx(0.25)
        expected, expected_notes = rec.read(0), rec.annotations()
    with open_recording(plus_d) as rec:
        assert rec.file_type == "EDF+D"
        assert rec.warnings == [] and rec.notes == [] and rec.gaps == []
        assert rec.duration == 8.0 and rec.start_offset == pytest.approx(0.25)
        np.testing.assert_allclose(rec.read(0), expected, atol=1e-9)
        assert rec.annotations() == expected_notes
        assert [(a.onset, a.text) for a in expected_notes] == [(2.5, "Arousal")]


def test_info_reports_the_true_span_of_an_edf_plus_d_file(discontinuous_edf, capsys, caplog):
    path, _ = discontinuous_edf
    with caplog.at_level(logging.WARNING):
        info = _info_json(capsys, str(path))
    assert info["duration_s"] == 20.0 and info["gaps"] == [[3.0, 10.0], [12.0, 19.0]]
    assert info["problems"]["file"] == []
    assert "EEG C4-M1" not in info["problems"]["channels"]  # NaN gaps are no problem
    assert any("discontinuous" in note for note in info["notes"])
    assert info["annotations"] == [{"onset": 10.5, "duration": 1.0, "text": "Arousal"}]
    assert not [r for r in caplog.records if r.name.startswith("engine")]


@pytest.mark.parametrize(
    ("stamps", "message"),
    [
        ((0.0, 1.0, 0.5, 3.0), "before the end of record 1"),
        ((0.0, None, 2.0, 3.0), "1 data record(s) of this EDF+D file have no time stamp"),
    ],
)
def test_edf_plus_d_with_bad_time_stamps_is_read_back_to_back(tmp_path, stamps, message):
    tals = [b"" if stamp is None else time_keeping(stamp) for stamp in stamps]
    path = write_raw_edf(
        tmp_path / "bad.edf",
        [RawSignal(b"EEG", 10, _ramp(40)), annotation_signal(20)],
        4,
        1.0,
        tals,
        reserved=b"EDF+D",
    )
    with open_recording(path) as rec:
        assert rec.duration == 4.0 and rec.gaps == [] and np.isfinite(rec.read(0)).all()
        assert any(message in w for w in rec.warnings), rec.warnings


def test_absurd_time_keeping_offset_is_ignored_with_a_warning(tmp_path, capsys):
    tals = [b"+99999999999999999\x14\x14\x00", time_keeping(1.0)]
    path = write_raw_edf(
        tmp_path / "odd.edf",
        [RawSignal(b"EEG", 10, _ramp(20)), annotation_signal(20)],
        2,
        1.0,
        tals,
    )
    with open_recording(path) as rec:
        assert rec.start_offset == 0.0 and rec.start_time == START
        assert any("out of range" in w for w in rec.warnings)
    assert main(["info", str(path)]) == 0


# -- 12. plain EDF with an annotation signal, header text, non-voltage units ---------------
@pytest.fixture
def plain_with_annotations(tmp_path):
    fs, records = 100, 20
    tals = [time_keeping(r) for r in range(records)]
    tals[2] += tal(2.5, "Lights off", 1.0)
    tals[9] += tal(9.0, "Bathroom")
    return write_raw_edf(
        tmp_path / "plain.edf",
        [
            RawSignal(b"EEG Fpz-Cz", fs, _ramp(fs * records)),
            RawSignal(b"SpO2", 1, 9500 + np.arange(records) % 3, b"%", (0.0, 100.0), (0, 10000)),
            annotation_signal(),
        ],
        records,
        1.0,
        tals,
        reserved=b"",
        patient=b"X",
        recording=b"X",
    )


def test_plain_edf_annotation_signal_is_read_as_mne_does(plain_with_annotations):
    path = plain_with_annotations
    with open_recording(path) as rec:
        assert rec.file_type == "EDF" and rec.backend == "pyedflib"
        assert rec.labels == ["EEG Fpz-Cz", "SpO2"]
        eeg, spo2 = rec.read("EEG Fpz-Cz"), rec.read("SpO2")
        ours = rec.annotations()
    assert [(a.onset, a.duration, a.text) for a in ours] == [
        (2.5, 1.0, "Lights off"),
        (9.0, None, "Bathroom"),
    ]
    np.testing.assert_allclose(spo2, 95.0 + np.arange(20) % 3 / 100, atol=1e-6)
    raw = _mne().io.read_raw_edf(path, verbose="error")
    assert raw.ch_names == ["EEG Fpz-Cz", "SpO2"]
    assert list(raw.annotations.description) == ["Lights off", "Bathroom"]
    np.testing.assert_allclose([a.onset for a in ours], raw.annotations.onset, atol=1e-3)
    np.testing.assert_allclose(eeg, raw.get_data(picks=[0])[0] * 1e6, atol=1e-6)


def test_plain_edf_annotations_reach_info_json(plain_with_annotations, capsys):
    info = _info_json(capsys, str(plain_with_annotations))
    assert [a["text"] for a in info["annotations"]] == ["Lights off", "Bathroom"]
    assert info["problems"]["file"] == [] and info["problems"]["channels"] == {}
    assert info["notes"] == [
        "1 channel(s) with a non-voltage unit, returned in that unit: SpO2 (%)"
    ]


def test_non_voltage_channels_are_reported_once_as_information(tmp_path, capsys, caplog):
    units = [b"%", b"bpm", b"Ohm", b"kOhm", b"lux", b"degC", b"cmH2O", b"L/min"]
    signals = [RawSignal(b"EEG C4-M1", 100, _ramp(100 * 10))] + [
        RawSignal(f"Aux{i}".encode(), 10, np.arange(100) + 100 * i, unit)
        for i, unit in enumerate(units)
    ]
    path = write_raw_edf(tmp_path / "aux.edf", signals, 10, 1.0, reserved=b"", patient=b"X")
    with caplog.at_level(logging.INFO):
        info = _info_json(capsys, str(path))
    assert info["problems"]["file"] == []
    assert info["problems"]["channels"] == {}
    assert len(info["notes"]) == 1 and "8 channel(s) with a non-voltage unit" in info["notes"][0]
    assert "Aux0 (%), Aux1 (bpm), Aux2 (Ohm), Aux3 (kOhm)" in info["notes"][0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_latin1_and_utf8_header_text(tmp_path, capsys):
    cut = "EEG1 ééééé".encode() + b"\xc3"  # 16 bytes: the sixth é cut by the field width
    assert len(cut) == 16
    path = write_raw_edf(
        tmp_path / "fr.edf",
        [
            RawSignal("Impédance".encode("latin-1"), 10, np.zeros(100, int), "kΩ".encode()),
            RawSignal("Impédance 2".encode(), 10, np.zeros(100, int), b"\xb5V"),
            RawSignal(cut, 10, np.zeros(100, int), "µV".encode()),
            RawSignal(b"EEG", 10, np.zeros(100, int), transducer="électrode".encode("latin-1")),
        ],
        10,
        1.0,
        reserved=b"",
        patient="Müller".encode("latin-1"),
        recording="Hôpital".encode(),
    )
    with open_recording(path) as rec:
        assert rec.labels == ["Impédance", "Impédance 2", "EEG1 ééééé", "EEG"]
        assert [c.unit for c in rec.channels] == ["kΩ", "µV", "µV", "uV"]
        assert rec.channels[3].transducer == "électrode"
        assert rec._header.patient == "Müller" and rec._header.recording == "Hôpital"
        np.testing.assert_allclose(rec.read("Impédance 2"), 0.0, atol=0.01)
    assert main(["info", str(path), "--no-scan"]) == 0
    text = capsys.readouterr().out
    assert "Impédance" in text and "Ã" not in text


# -- 1-Hz channels ------------------------------------------------------------------------
def test_one_hz_channel_beside_100_hz_matches_pyedflib(tmp_path):
    # Sleep-EDF layout: 30-s records, EEG at 100 Hz, a 1-Hz chin EMG envelope.
    records = 4
    emg = np.arange(30 * records) * 7 - 400
    path = write_raw_edf(
        tmp_path / "SC4001E0-PSG.edf",
        [
            RawSignal(b"EEG Fpz-Cz", 3000, _ramp(3000 * records)),
            RawSignal(b"EMG submental", 30, emg),
            annotation_signal(),
        ],
        records,
        30.0,
        [time_keeping(30 * r) for r in range(records)],
    )
    with pyedflib.EdfReader(str(path)) as reader:
        expected = [reader.readSignal(i) for i in range(2)]
        rates = [reader.getSampleFrequency(i) for i in range(2)]
    for force_numpy in (False, True):
        with open_recording(path) as rec:
            if force_numpy:
                rec._reader.close()
                rec._reader = None
            assert [c.fs for c in rec.channels] == rates == [100.0, 1.0]
            assert [c.n_samples for c in rec.channels] == [12000, 120]
            np.testing.assert_allclose(rec.read(1), expected[1], atol=1e-9)
            np.testing.assert_allclose(rec.read("EMG submental", 31, 61), expected[1][31:61])
            np.testing.assert_allclose(rec.read(0, 29.5, 30.5), expected[0][2950:3050])
            assert rec.read(1, 10.2, 10.4).size == 0  # rounds onto one sample boundary


# -- real recordings -----------------------------------------------------------------------
def test_real_dreams_excerpt_reads_like_its_text_export_and_mne(shared_data, capsys, caplog):
    path = shared_data / "dreams-dev" / "excerpt3.edf"
    text = shared_data / "dreams-dev" / "excerpt3.txt"
    if not path.exists() or not text.exists():
        pytest.skip("dreams-dev/excerpt3 absent")
    with caplog.at_level(logging.INFO, logger="engine.io.edf"):
        info = _info_json(capsys, str(path), "--no-scan")
    assert info["format"] == "EDF" and info["duration_s"] == 1800.0
    assert info["dataset"]["name"] == "generic" and info["annotations"] == []
    non_voltage = [n for n in info["notes"] if "non-voltage" in n]
    assert len(non_voltage) == 1 and "SAO2 (%)" in non_voltage[0] and "PR (BPM)" in non_voltage[0]
    assert not any("voltage" in p or "assumed" in p for p in info["problems"]["file"])
    assert [c["label"] for c in info["montage"]["channels"]] == ["C3-A1", "EOG1-A1", "EMG1"]
    assert [c["via"] for c in info["montage"]["channels"]] == ["fallback", "alias", "alias"]
    assert sum("non-voltage" in r.getMessage() for r in caplog.records) == 1
    exported = np.loadtxt(text, skiprows=1)
    with open_recording(path) as rec:
        eeg = rec.read("C3-A1")
        raw = _mne().io.read_raw_edf(path, verbose="error")
        assert raw.ch_names == rec.labels
        assert raw.n_times / raw.info["sfreq"] == rec.duration
    np.testing.assert_allclose(eeg, exported, atol=1e-3)
    # MNE does not know the unit 'UV' and leaves the values as written: the same numbers.
    np.testing.assert_allclose(eeg, raw.get_data(picks=["C3-A1"])[0], rtol=1e-9, atol=1e-6)

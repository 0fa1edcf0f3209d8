"""Hypnogram readers (every format) and the epoch grid."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import HypnogramError, UnknownStageError
from engine.io.hypnogram import Hypnogram, detect_format, find_hypnogram, read_hypnogram
from engine.stages import Stage

START = datetime(2021, 3, 4, 22, 15, 0)
W, N1, N2, N3, R, UNK = (
    int(s) for s in (Stage.W, Stage.N1, Stage.N2, Stage.N3, Stage.R, Stage.UNK)
)


def test_sleep_edf_merged_annotations_split_into_epochs(tmp_path, write_hypnogram_edf):
    annotations = [
        (0.0, 90.0, "Sleep stage W"),
        (90.0, 30.0, "Sleep stage 1"),
        (120.0, 60.0, "Sleep stage 2"),
        (180.0, 30.0, "Sleep stage 3"),
        (210.0, 30.0, "Sleep stage 4"),
        (240.0, 30.0, "Movement time"),
        (270.0, 60.0, "Sleep stage R"),
        (330.0, 600.0, "Sleep stage ?"),
    ]
    path = write_hypnogram_edf(tmp_path / "SC4001EC-Hypnogram.edf", annotations, start=START)
    assert detect_format(path) == "sleep-edf"
    hypnogram = read_hypnogram(path)
    assert hypnogram.format == "sleep-edf" and hypnogram.source == path
    assert len(hypnogram) == 8 and hypnogram.epoch_length == 30.0
    assert hypnogram.start_time == START
    assert hypnogram.labels[5] == "Movement time"
    assert hypnogram.stages.tolist() == [W, N1, N2, N3, N3, UNK, R, UNK]
    epochs = hypnogram.to_epochs()
    assert len(epochs) == 31 and epochs.is_epoched and not hypnogram.is_epoched
    assert epochs.stages[:11].tolist() == [W, W, W, N1, N2, N2, N3, N3, UNK, R, R]
    np.testing.assert_allclose(epochs.onsets, 30.0 * np.arange(31))
    assert epochs.labels[:3] == ["Sleep stage W"] * 3
    assert (
        epochs.stage_counts()
        == hypnogram.stage_counts()
        == {
            "W": 3,
            "N1": 1,
            "N2": 2,
            "N3": 2,
            "R": 2,
            "UNK": 21,
        }
    )


def test_synthetic_style_hypnogram_round_trip(tmp_path, write_hypnogram_edf):
    """engine.synth writes consecutive equal epochs merged into one annotation."""
    stages = ["W"] * 4 + ["1"] * 2 + ["2"] * 10 + ["3"] * 5 + ["2"] * 3 + ["R"] * 6 + ["W"]
    runs, onset = [], 0.0
    for label in stages:
        if runs and runs[-1][2] == f"Sleep stage {label}":
            runs[-1] = (runs[-1][0], runs[-1][1] + 30.0, runs[-1][2])
        else:
            runs.append((onset, 30.0, f"Sleep stage {label}"))
        onset += 30.0
    path = write_hypnogram_edf(tmp_path / "night-0000-Hypnogram.edf", runs)
    epochs = read_hypnogram(path).to_epochs()
    assert [int(s) for s in epochs.stages] == [
        {"W": W, "1": N1, "2": N2, "3": N3, "R": R}[label] for label in stages
    ]


def test_mass_base_keeps_offset_onsets_and_20_s_epochs(tmp_path, write_hypnogram_edf):
    annotations = [(7.64 + 20.0 * i, 20.0, f"Sleep stage {s}") for i, s in enumerate("W1223R?")]
    path = write_hypnogram_edf(tmp_path / "01-01-0001 Base.edf", annotations)
    hypnogram = read_hypnogram(path)
    assert hypnogram.format == "mass" and hypnogram.epoch_length == 20.0
    np.testing.assert_allclose(hypnogram.onsets, 7.64 + 20.0 * np.arange(7))
    assert hypnogram.stages.tolist() == [W, N1, N2, N2, N3, R, UNK]
    assert len(hypnogram.to_epochs()) == 7


NSRR_XML = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<PSGAnnotation><SoftwareVersion>Compumedics</SoftwareVersion><EpochLength>30</EpochLength>
<ScoredEvents>
<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>
<Duration>32520.0</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>
<Start>0.0</Start><Duration>60.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Respiratory|Respiratory</EventType>
<EventConcept>Obstructive apnea|Obstructive Apnea</EventConcept><Start>65.2</Start>
<Duration>12.1</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 1 sleep|1</EventConcept>
<Start>60.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 2 sleep|2</EventConcept>
<Start>90.0</Start><Duration>90.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Stage 4 sleep|4</EventConcept>
<Start>180.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>REM sleep|5</EventConcept>
<Start>210.0</Start><Duration>30.0</Duration></ScoredEvent>
<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Unscored|9</EventConcept>
<Start>240.0</Start><Duration>30.0</Duration></ScoredEvent>
</ScoredEvents></PSGAnnotation>
"""

PROFUSION_XML = """<?xml version="1.0" encoding="utf-8"?>
<CMPStudyConfig><EpochLength>30</EpochLength><ScoredEvents></ScoredEvents>
<SleepStages><SleepStage>0</SleepStage><SleepStage>0</SleepStage><SleepStage>1</SleepStage>
<SleepStage>2</SleepStage><SleepStage>3</SleepStage><SleepStage>4</SleepStage>
<SleepStage>5</SleepStage><SleepStage>9</SleepStage></SleepStages></CMPStudyConfig>
"""


def test_nsrr_xml(tmp_path):
    path = tmp_path / "shhs1-200001-nsrr.xml"
    path.write_text(NSRR_XML)
    hypnogram = read_hypnogram(path)
    assert hypnogram.format == "nsrr-xml"
    assert hypnogram.labels[0] == "Wake|0" and len(hypnogram) == 6
    assert hypnogram.stages.tolist() == [W, N1, N2, N3, R, UNK]
    assert hypnogram.to_epochs().stage_counts() == {
        "W": 2,
        "N1": 1,
        "N2": 3,
        "N3": 1,
        "R": 1,
        "UNK": 1,
    }


def test_profusion_xml(tmp_path):
    path = tmp_path / "shhs1-200001-profusion.xml"
    path.write_text(PROFUSION_XML)
    hypnogram = read_hypnogram(path)
    assert hypnogram.format == "profusion-xml" and hypnogram.is_epoched
    assert hypnogram.stages.tolist() == [W, W, N1, N2, N3, N3, R, UNK]
    np.testing.assert_allclose(hypnogram.onsets, 30.0 * np.arange(8))


def test_isruc_scorers(tmp_path):
    (tmp_path / "1_1.txt").write_text("0\n0\n1\n2\n3\n5\n\n")
    (tmp_path / "1_2.txt").write_text("0\n1\n1\n2\n2\n5\n")
    first = read_hypnogram(tmp_path / "1_1.txt")
    assert first.format == "isruc" and first.scorer == 1
    assert first.stages.tolist() == [W, W, N1, N2, N3, R]
    second = read_hypnogram(tmp_path / "1_2.txt")
    assert second.scorer == 2 and second.stages.tolist() == [W, N1, N1, N2, N2, R]
    by_dir = read_hypnogram(tmp_path, scorer=2)
    assert by_dir.source == tmp_path / "1_2.txt"
    (tmp_path / "1.rec").write_bytes(b"")
    assert read_hypnogram(tmp_path / "1.rec", fmt="isruc", scorer=1).source == tmp_path / "1_1.txt"
    with pytest.raises(HypnogramError, match="no ISRUC scorer file 1_3.txt"):
        read_hypnogram(tmp_path / "1.rec", fmt="isruc", scorer=3)


def test_isruc_code_4_is_unknown(tmp_path):
    (tmp_path / "2_1.txt").write_text("0\n4\n7\n")
    with pytest.raises(UnknownStageError, match=r"2_1.txt: .*'4' \(x1\), '7' \(x1\)"):
        read_hypnogram(tmp_path / "2_1.txt")


def test_dcsm_ids_and_csv(tmp_path):
    ids = tmp_path / "hypnogram.ids"
    ids.write_text("0,90,W\n90,30,N1\n120,60,N2\n180,30,N3\n210,30,REM\n")
    hypnogram = read_hypnogram(ids)
    assert hypnogram.format == "dcsm"
    assert hypnogram.to_epochs().stages.tolist() == [W, W, W, N1, N2, N2, N3, R]
    table = tmp_path / "night-hypnogram.csv"
    table.write_text("Onset,Duration,Stage\n10.5,30,W\n40.5,60,N2\n100.5,30,R\n")
    hypnogram = read_hypnogram(table)
    assert hypnogram.format == "csv"
    np.testing.assert_allclose(hypnogram.to_epochs().onsets, [10.5, 40.5, 70.5, 100.5])


def test_unknown_labels_are_all_listed_with_the_file(tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text(
        "onset,duration,stage\n0,30,W\n30,30,Stage X\n60,30,N2\n90,30,Zzz\n120,30,Zzz\n"
    )
    with pytest.raises(UnknownStageError) as info:
        read_hypnogram(table)
    message = str(info.value)
    assert "bad.csv" in message and "'Stage X' (x1)" in message and "'Zzz' (x2)" in message


def test_edf_hypnogram_unknown_labels(tmp_path, write_hypnogram_edf):
    path = write_hypnogram_edf(
        tmp_path / "x-Hypnogram.edf",
        [(0.0, 30.0, "Sleep stage W"), (30.0, 30.0, "Sleep stage 5"), (60.0, 0.0, "Lights off")],
    )
    with pytest.raises(UnknownStageError, match="x-Hypnogram.edf: .*'Sleep stage 5'"):
        read_hypnogram(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.xml", "<PSGAnnotation><ScoredEvents>", "not well-formed XML"),
        ("none.xml", "<PSGAnnotation><ScoredEvents/></PSGAnnotation>", "no ScoredEvent"),
        ("short.csv", "onset,duration,stage\n0,30\n", "line 2 has 2 field"),
        ("cols.csv", "time,stage\n0,W\n", "expected the columns onset, duration, stage"),
        ("nan.ids", "0,thirty,W\n", "duration on line 1 is 'thirty'"),
        ("empty.csv", "", "empty file"),
        ("what.dat", "1,2,3", "cannot tell the hypnogram format"),
        ("overlap.csv", "onset,duration,stage\n0,60,W\n30,30,N1\n", "overlaps 'N1' at 30 s"),
        ("zero.csv", "onset,duration,stage\n0,0,W\n", "has duration 0 s"),
    ],
)
def test_malformed_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(HypnogramError, match=message):
        read_hypnogram(path)


def test_missing_file_and_unreadable_edf(tmp_path):
    with pytest.raises(HypnogramError, match="gone.edf: no such file"):
        read_hypnogram(tmp_path / "gone.edf")
    (tmp_path / "trunc-Hypnogram.edf").write_bytes(b"0       " + b" " * 100)
    with pytest.raises(HypnogramError, match="cannot read hypnogram: .*truncated header"):
        read_hypnogram(tmp_path / "trunc-Hypnogram.edf")


def test_onsets_move_to_the_recording_start(tmp_path, write_edf, write_hypnogram_edf):
    psg = write_edf(tmp_path / "n-PSG.edf", [("EEG", np.zeros(1200), 10, "uV")], start=START)
    hyp = write_hypnogram_edf(
        tmp_path / "n-Hypnogram.edf",
        [(0.0, 30.0, "Sleep stage W"), (30.0, 30.0, "Sleep stage 2")],
        start=START + timedelta(seconds=30),
    )
    hypnogram = read_hypnogram(hyp, signal_path=psg)
    np.testing.assert_allclose(hypnogram.onsets, [30.0, 60.0])
    assert hypnogram.start_time == START
    assert find_hypnogram(psg) == hyp


def test_find_hypnogram_by_dataset_naming(tmp_path):
    for name in (
        "SC4001E0-PSG.edf",
        "SC4001EC-Hypnogram.edf",
        "01-02-0003 PSG.edf",
        "01-02-0003 Base.edf",
        "shhs1-200001.edf",
        "shhs1-200001-nsrr.xml",
        "7.rec",
    ):
        (tmp_path / name).write_bytes(b"")
    assert find_hypnogram(tmp_path / "SC4001E0-PSG.edf").name == "SC4001EC-Hypnogram.edf"
    assert find_hypnogram(tmp_path / "01-02-0003 PSG.edf").name == "01-02-0003 Base.edf"
    assert find_hypnogram(tmp_path / "shhs1-200001.edf").name == "shhs1-200001-nsrr.xml"
    assert find_hypnogram(tmp_path / "7.rec") is None


def test_partial_epoch_tail_is_dropped_with_a_warning():
    hypnogram = Hypnogram([0.0, 75.0], [75.0, 30.0], [W, N2], ["W", "N2"], epoch_length=30.0)
    with pytest.warns(UserWarning, match="15 s of partial epochs dropped"):
        epochs = hypnogram.to_epochs()
    np.testing.assert_allclose(epochs.onsets, [0.0, 30.0, 75.0])


def test_from_stages_and_stage_seconds():
    hypnogram = Hypnogram.from_stages(["W", "N2", 2, "R", "?"], epoch_length=20.0, start=5.0)
    assert hypnogram.stages.tolist() == [W, N2, N2, R, UNK]
    assert hypnogram.stage_seconds()["N2"] == 40.0
    assert hypnogram.end == 105.0


runs = st.lists(
    st.tuples(st.sampled_from([W, N1, N2, N3, R, UNK]), st.integers(1, 40)), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(
    runs=runs, start=st.floats(0, 5000), length=st.sampled_from([20.0, 30.0]), gap=st.integers(0, 3)
)
def test_epoch_grid_has_no_overlaps_or_gaps_and_keeps_stage_seconds(runs, start, length, gap):
    onsets, durations, stages = [], [], []
    onset = start
    for stage, count in runs:
        onsets.append(onset)
        durations.append(count * length)
        stages.append(stage)
        onset += count * length + gap * length  # whole-epoch gaps between runs are allowed
    hypnogram = Hypnogram(onsets, durations, stages, [str(s) for s in stages], epoch_length=length)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epochs = hypnogram.to_epochs()
    assert len(epochs) == sum(count for _, count in runs)
    assert np.all(epochs.durations == length)
    steps = np.diff(epochs.onsets)
    assert np.all(steps >= length - 1e-6)  # no overlap
    assert np.allclose(np.mod(epochs.onsets - start + 1e-6, length), 1e-6, atol=1e-5)  # on grid
    if gap == 0:
        np.testing.assert_allclose(steps, length)  # contiguous runs: no gap
    assert epochs.stage_seconds() == pytest.approx(hypnogram.stage_seconds())
    assert epochs.stage_counts() == hypnogram.stage_counts()
    assert epochs.to_epochs().onsets.tolist() == epochs.onsets.tolist()

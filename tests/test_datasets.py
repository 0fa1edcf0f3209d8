"""Tests for engine.io.datasets: pairing signal files with hypnograms, subject ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import DatasetError
from engine.io.datasets import RecordingPair, find_pairs, is_dataset_spec, resolve_inputs


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def _summary(pairs: list[RecordingPair]) -> list[tuple[str, str, str, str]]:
    return [(p.dataset, p.subject, p.recording, p.hypnogram_path.name) for p in pairs]


def test_sleep_edf_pairs_by_prefix_and_groups_nights_by_subject(tmp_path):
    _touch(
        tmp_path,
        "SC4001E0-PSG.edf",
        "SC4001EC-Hypnogram.edf",
        "SC4002E0-PSG.edf",
        "SC4002EC-Hypnogram.edf",
        "SC4011E0-PSG.edf",
        "SC4011EH-Hypnogram.edf",
        "telemetry/ST7011J0-PSG.edf",
        "telemetry/ST7011JP-Hypnogram.edf",
        "SC4021E0-PSG.edf",  # no hypnogram
    )
    unpaired: list = []
    pairs = find_pairs(f"sleep-edf:{tmp_path}", unpaired=unpaired)
    assert _summary(pairs) == [
        ("sleep-edf", "00", "SC4001E0", "SC4001EC-Hypnogram.edf"),
        ("sleep-edf", "00", "SC4002E0", "SC4002EC-Hypnogram.edf"),
        ("sleep-edf", "01", "SC4011E0", "SC4011EH-Hypnogram.edf"),
        ("sleep-edf", "ST01", "ST7011J0", "ST7011JP-Hypnogram.edf"),
    ]
    assert pairs[0].subject_id == pairs[1].subject_id == "sleep-edf:00"
    # The reader's complaint comes first (an empty file is not a recording at all).
    assert unpaired == [{"file": str(tmp_path / "SC4021E0-PSG.edf"), "reason": "empty file"}]
    with pytest.raises(DatasetError, match="SC4021E0-PSG.edf: empty file"):
        find_pairs(f"sleep-edf:{tmp_path}")


def test_sleep_edf_ambiguous_hypnograms_use_seven_characters(tmp_path):
    _touch(tmp_path, "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "SC4001FC-Hypnogram.edf")
    assert find_pairs(str(tmp_path / "SC4001E0-PSG.edf"))[0].hypnogram_path.name == (
        "SC4001EC-Hypnogram.edf"
    )
    _touch(tmp_path, "SC4001EH-Hypnogram.edf")
    with pytest.raises(DatasetError, match="several hypnograms"):
        find_pairs(f"sleep-edf:{tmp_path}")


def test_shhs_nsrr_layout_prefers_nsrr_xml_and_links_visits(tmp_path):
    root = tmp_path / "shhs" / "polysomnography"
    _touch(
        root,
        "edfs/shhs1/shhs1-200001.edf",
        "edfs/shhs1/shhs1-200002.edf",
        "edfs/shhs2/shhs2-200001.edf",
        "annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
        "annotations-events-profusion/shhs1/shhs1-200001-profusion.xml",
        "annotations-events-profusion/shhs1/shhs1-200002-profusion.xml",
        "annotations-events-nsrr/shhs2/shhs2-200001-nsrr.xml",
    )
    pairs = find_pairs(f"shhs:{tmp_path / 'shhs'}")
    assert _summary(pairs) == [
        ("shhs", "200001", "shhs1-200001", "shhs1-200001-nsrr.xml"),
        ("shhs", "200002", "shhs1-200002", "shhs1-200002-profusion.xml"),
        ("shhs", "200001", "shhs2-200001", "shhs2-200001-nsrr.xml"),
    ]
    # A single SHHS file given plainly finds its annotation through the same layout.
    single = find_pairs(str(root / "edfs/shhs2/shhs2-200001.edf"))
    assert _summary(single) == [("shhs", "200001", "shhs2-200001", "shhs2-200001-nsrr.xml")]


def test_mass_isruc_dcsm_and_synthetic_layouts(tmp_path):
    _touch(
        tmp_path / "mass",
        "SS3/01-03-0001 PSG.edf",
        "SS3/01-03-0001 Base.edf",
        "SS3/01-03-0002 PSG.edf",
        "SS3/01-03-0002 Base.edf",
    )
    assert _summary(find_pairs(f"mass:{tmp_path / 'mass'}")) == [
        ("mass", "01-03-0001", "01-03-0001", "01-03-0001 Base.edf"),
        ("mass", "01-03-0002", "01-03-0002", "01-03-0002 Base.edf"),
    ]
    _touch(tmp_path / "isruc", "1/1.rec", "1/1_1.txt", "1/1_2.txt", "2/2.edf", "2/2_1.txt")
    assert _summary(find_pairs(f"isruc:{tmp_path / 'isruc'}")) == [
        ("isruc", "1", "1", "1_1.txt"),
        ("isruc", "2", "2", "2_1.txt"),
    ]
    second = find_pairs(f"isruc:{tmp_path / 'isruc'}", scorer=2, unpaired=(missing := []))
    assert [(p.recording, p.hypnogram_path.name, p.scorer) for p in second] == [("1", "1_2.txt", 2)]
    assert missing[0]["file"].endswith("2.edf")
    _touch(tmp_path / "dcsm", "tp0a1b/psg.edf", "tp0a1b/hypnogram.ids", "tp9z/psg.edf")
    assert _summary(find_pairs(f"dcsm:{tmp_path / 'dcsm'}", unpaired=[])) == [
        ("dcsm", "tp0a1b", "tp0a1b", "hypnogram.ids")
    ]
    _touch(tmp_path / "syn", "night-0000-PSG.edf", "night-0000-Hypnogram.edf")
    assert _summary(find_pairs(f"synthetic:{tmp_path / 'syn'}")) == [
        ("synthetic", "night-0000", "night-0000", "night-0000-Hypnogram.edf")
    ]


def test_plain_folder_detects_datasets_and_pairs_by_name(tmp_path):
    _touch(
        tmp_path,
        "SC4001E0-PSG.edf",
        "SC4001EC-Hypnogram.edf",
        "lab/patient7.edf",
        "lab/patient7.xml",
        "lab/night_PSG.edf",
        "lab/night-Hypnogram.edf",
        "lab/notes.txt",
    )
    pairs = resolve_inputs([str(tmp_path)])
    assert _summary(pairs) == [
        ("edf", "night", "night", "night-Hypnogram.edf"),
        ("edf", "patient7", "patient7", "patient7.xml"),
        ("sleep-edf", "00", "SC4001E0", "SC4001EC-Hypnogram.edf"),
    ]
    # The same files named again through a glob and a file are rendered once.
    again = resolve_inputs([str(tmp_path / "lab" / "*.edf"), str(tmp_path / "lab/patient7.edf")])
    assert [p.recording for p in again] == ["night", "patient7"]


def test_errors_name_the_input(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        find_pairs(f"nope:{tmp_path}")
    with pytest.raises(DatasetError, match="is not a directory"):
        find_pairs(f"mass:{tmp_path / 'missing'}")
    with pytest.raises(DatasetError, match="no mass recordings"):
        find_pairs(f"mass:{tmp_path}")
    with pytest.raises(DatasetError, match="matches no file"):
        find_pairs(str(tmp_path / "*.edf"))
    _touch(tmp_path, "a.csv")
    with pytest.raises(DatasetError, match="a.csv: empty file"):  # the reader's error
        find_pairs(str(tmp_path / "a.csv"))
    with pytest.raises(DatasetError, match="no inputs"):
        resolve_inputs([])
    with pytest.raises(DatasetError, match="scorer"):
        find_pairs(str(tmp_path), scorer=0)
    _touch(tmp_path, "x/rec.edf", "x/rec.csv", "y/rec.edf", "y/rec.csv")
    # Two different files with one id are named apart by their folders.
    pairs = resolve_inputs([str(tmp_path / "x"), str(tmp_path / "y")])
    assert [(p.subject, p.recording) for p in pairs] == [("x/rec", "x/rec"), ("y/rec", "y/rec")]


def test_is_dataset_spec_prefers_existing_paths(tmp_path, monkeypatch):
    assert is_dataset_spec("sleep-edf:/data")
    assert not is_dataset_spec("/data/x.edf")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mass:odd").mkdir()
    assert not is_dataset_spec("mass:odd")


# ----------------------------------------------------------------------------------------
# Real files: reader first, explicit names, BDF by header, --hypnogram, --unscored, ids
# ----------------------------------------------------------------------------------------
def _recording(path: Path, seconds: int = 60) -> Path:
    """A small real EDF+ recording (one EEG channel at 100 Hz)."""
    import numpy as np

    from tests.conftest import write_edf_file

    samples = np.sin(np.arange(seconds * 100) / 10.0) * 50.0
    return write_edf_file(path, [("EEG C4-M1", samples, 100.0, "uV")])


def test_the_reader_error_comes_before_a_missing_hypnogram(tmp_path):
    (tmp_path / "notes.edf").write_text("this is a text file, not an EDF\n" * 20)
    (tmp_path / "cut.edf").write_bytes(b"0       " + b" " * 18)
    _recording(tmp_path / "fine.edf")
    unpaired: list = []
    assert resolve_inputs([str(tmp_path)], unpaired=unpaired) == []
    reasons = {Path(f["file"]).name: f["reason"] for f in unpaired}
    assert "not an EDF/BDF file" in reasons["notes.edf"]
    assert "truncated header (26 bytes" in reasons["cut.edf"]
    assert reasons["fine.edf"].startswith("no edf hypnogram found")
    assert "--hypnogram" in reasons["fine.edf"] and "--unscored" in reasons["fine.edf"]


def test_explicit_files_are_taken_whatever_their_name(tmp_path):
    for name in ("night annotations.edf", "hypnogram_study.edf", "base.edf", "scoring-3.edf"):
        _recording(tmp_path / name)
    (tmp_path / "night annotations.csv").write_text("stage\nW\n")
    # A folder scan skips names that look like hypnograms...
    with pytest.raises(DatasetError, match="no EDF/BDF signal files found"):
        find_pairs(str(tmp_path))
    # ...a named file is a recording.
    pairs = find_pairs(str(tmp_path / "night annotations.edf"))
    assert [(p.recording, p.hypnogram_path.name) for p in pairs] == [
        ("night annotations", "night annotations.csv")
    ]
    pairs = find_pairs(str(tmp_path / "base.edf"), unscored=True)
    assert [(p.dataset, p.recording, p.hypnogram_path) for p in pairs] == [("edf", "base", None)]


def test_bdf_and_odd_suffixes_are_decided_by_header(tmp_path):
    _recording(tmp_path / "a.edf")
    (tmp_path / "a.edf").rename(tmp_path / "night.bdf")  # an EDF named .bdf: header decides
    (tmp_path / "night.csv").write_text("stage\nW\nW\n")
    assert [p.recording for p in find_pairs(str(tmp_path))] == ["night"]  # folder: .bdf taken
    _recording(tmp_path / "b.edf").rename(tmp_path / "study.dat")
    pairs = find_pairs(str(tmp_path / "study.dat"), unscored=True)
    assert [(p.recording, p.psg_path.name) for p in pairs] == [("study", "study.dat")]
    (tmp_path / "words.dat").write_text("not a recording at all\n" * 20)
    with pytest.raises(DatasetError, match="words.dat: not an EDF/BDF file"):
        find_pairs(str(tmp_path / "words.dat"), unscored=True)


def test_hypnogram_option_pairs_the_one_named_recording(tmp_path):
    psg = _recording(tmp_path / "psg.edf")
    stages = tmp_path / "elsewhere" / "scored by hand.csv"
    stages.parent.mkdir()
    stages.write_text("stage\nW\nN1\n")
    pairs = resolve_inputs([str(psg)], hypnogram=stages)
    assert [(p.recording, p.hypnogram_path) for p in pairs] == [("psg", stages)]
    with pytest.raises(DatasetError, match="exactly one INPUT"):
        resolve_inputs([str(psg), str(psg)], hypnogram=stages)
    with pytest.raises(DatasetError, match="no such file"):
        resolve_inputs([str(psg)], hypnogram=tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="exclude each other"):
        find_pairs(str(psg), hypnogram=stages, unscored=True)
    with pytest.raises(DatasetError, match="names 2 signal files"):
        _recording(tmp_path / "second.edf")
        find_pairs(str(tmp_path), hypnogram=stages)


def test_two_synth_runs_into_different_folders_get_distinct_ids(tmp_path):
    for run in ("run1", "run2"):
        _touch(tmp_path / run, "synth-0000-PSG.edf", "synth-0000-Hypnogram.edf")
    pairs = resolve_inputs([str(tmp_path / "run1"), str(tmp_path / "run2")])
    assert [(p.dataset, p.subject, p.recording) for p in pairs] == [
        ("edf", "run1/synth-0000", "run1/synth-0000"),
        ("edf", "run2/synth-0000", "run2/synth-0000"),
    ]
    # The same file named twice is still one recording, under its plain id.
    again = resolve_inputs([str(tmp_path / "run1"), str(tmp_path / "run1/synth-0000-PSG.edf")])
    assert [p.recording for p in again] == ["synth-0000"]
    # Sleep-EDF nights keep their subject (it is not the file's own name).
    for run in ("a", "b"):
        _touch(tmp_path / run, "SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf")
    pairs = resolve_inputs([str(tmp_path / "a"), str(tmp_path / "b")])
    assert [(p.subject, p.recording) for p in pairs] == [("00", "a/SC4001E0"), ("00", "b/SC4001E0")]

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
    assert unpaired == [
        {
            "file": str(tmp_path / "SC4021E0-PSG.edf"),
            "reason": "no sleep-edf hypnogram found for this recording",
        }
    ]
    with pytest.raises(DatasetError, match="SC4021E0-PSG.edf: no sleep-edf hypnogram"):
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
    with pytest.raises(DatasetError, match="not an EDF signal file"):
        find_pairs(str(tmp_path / "a.csv"))
    with pytest.raises(DatasetError, match="no inputs"):
        resolve_inputs([])
    with pytest.raises(DatasetError, match="scorer"):
        find_pairs(str(tmp_path), scorer=0)
    _touch(tmp_path, "x/rec.edf", "x/rec.csv", "y/rec.edf", "y/rec.csv")
    with pytest.raises(DatasetError, match="share the id edf/rec"):
        resolve_inputs([str(tmp_path / "x"), str(tmp_path / "y")])


def test_is_dataset_spec_prefers_existing_paths(tmp_path, monkeypatch):
    assert is_dataset_spec("sleep-edf:/data")
    assert not is_dataset_spec("/data/x.edf")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mass:odd").mkdir()
    assert not is_dataset_spec("mass:odd")

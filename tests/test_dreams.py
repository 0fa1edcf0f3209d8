"""DREAMS excerpts: text signals and 5-s R&K codes read as the expert's 20-s epochs."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import DatasetError, HypnogramError
from engine.io.dreams import find_dreams_excerpts, load_dreams_excerpt
from engine.io.hypnogram import detect_format, read_hypnogram
from engine.stages import Stage


def _write_excerpt(folder, name="excerpt7", fs=50, label="CZ-A1", codes=(5, 5, 5, 5, 3, 3, 3, 3)):
    samples = np.round(np.sin(np.arange(int(1800 * fs)) / 7.0) * 40, 4)
    (folder / f"{name}.txt").write_text(f"[{label}]\n" + "\n".join(f"{v:10.4f}" for v in samples))
    (folder / f"Hypnogram_{name}.txt").write_text("[Hypnogram]\n" + "\n".join(map(str, codes)))
    return folder / f"{name}.txt"


def test_an_excerpt_reads_with_its_rate_derivation_and_20s_epochs(tmp_path):
    path = _write_excerpt(tmp_path, codes=(5, 5, 5, 5, 3, 3, 3, 3, 0, 0, 0, 0, 9, 9, 9, 9))
    rec = load_dreams_excerpt(path)
    assert rec.labels == ["CZ-A1"] and rec.fs == {"CZ-A1": 50.0}
    assert rec.signals["CZ-A1"].size == 90_000
    hyp = rec.hypnogram
    assert hyp.epoch_length == 20.0 and hyp.onsets.tolist() == [0.0, 20.0, 40.0, 60.0]
    assert [int(s) for s in hyp.stages] == [Stage.W, Stage.N1, Stage.N3, Stage.UNK]
    assert find_dreams_excerpts(tmp_path) == [path]
    assert detect_format(tmp_path / "Hypnogram_excerpt7.txt") == "dreams"
    assert read_hypnogram(tmp_path / "Hypnogram_excerpt7.txt").stages.tolist() == (
        hyp.stages.tolist()
    )


def test_bad_dreams_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match="no excerptN.txt"):
        find_dreams_excerpts(tmp_path)
    bad = tmp_path / "Hypnogram_excerpt1.txt"
    bad.write_text("[Hypnogram]\n5\nx\n")
    with pytest.raises(HypnogramError, match="one integer R&K code per line"):
        read_hypnogram(bad, fmt="dreams")
    short = tmp_path / "excerpt2.txt"
    short.write_text("[C3-A1]\n1\n2\n3\n")
    with pytest.raises(DatasetError, match="not a whole rate"):
        load_dreams_excerpt(short)


def test_real_dreams_development_excerpts(shared_data):
    folder = shared_data / "dreams-dev"
    if not folder.is_dir():
        pytest.skip("dreams-dev absent")
    found = {p.stem: load_dreams_excerpt(p) for p in find_dreams_excerpts(folder)}
    assert {name: rec.fs for name, rec in found.items()} == {
        "excerpt1": {"C3-A1": 100.0}, "excerpt2": {"CZ-A1": 200.0}, "excerpt3": {"C3-A1": 50.0},
    }  # fmt: skip
    counts = {name: rec.hypnogram.stage_counts() for name, rec in found.items()}
    # the data README's 5-s label counts, divided by four
    assert counts["excerpt1"] == {"W": 14, "N1": 3, "N2": 55, "N3": 18, "R": 0, "UNK": 0}
    assert counts["excerpt3"] == {"W": 8, "N1": 22, "N2": 56, "N3": 4, "R": 0, "UNK": 0}
    # the full PSG of excerpt 3 pairs with the same hypnogram through read_hypnogram
    hyp = read_hypnogram(folder / "Hypnogram_excerpt3.txt", signal_path=folder / "excerpt3.edf")
    assert len(hyp) == 90 and hyp.epoch_length == 20.0


def test_an_excerpt_given_as_a_plain_path_says_how_to_read_it(tmp_path, capsys):
    """``psgvlm stage excerptN.txt`` (without ``dreams:``) exits 2 with the reader's error and
    the spelling that reads it, before any model loads; a text file of another kind gets
    the reader's error alone."""
    from psgvlm.cli import main

    path = _write_excerpt(tmp_path, fs=10)
    assert main(["stage", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not an EDF/BDF file" in err and f"is read as dreams:{path}" in err
    other = tmp_path / "notes.txt"
    other.write_text("just notes\n" * 40)
    assert main(["stage", str(other), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not an EDF/BDF file" in err and "dreams:" not in err
    assert not (tmp_path / "out").exists()

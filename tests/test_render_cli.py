"""``psgvlm render`` on real-world files, through the command line (issues 16 and 17).

Exit codes, failure summaries, retry of failed recordings, corrected reruns, the reader's
error first, explicit file names, BDF, ``--hypnogram``, ``--unscored``, default montage on
an EEG-only recording, strip labels, too-slow channels, unique synthetic ids, help texts.
Every fixture is a small EDF/BDF written here with pyedflib.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from engine.pipeline import RecordingTask, RenderSettings, render_recording
from engine.shards import _iter_samples, list_shards, read_manifest, verify_shards
from psgvlm.cli import main
from tests.conftest import write_annotation_edf, write_edf_file

START = datetime(2021, 3, 4, 22, 15, 0)
FAST = ["--size", "64x32", "--format", "npy", "--no-progress"]
#: 8 epochs of 30 s: the stages the test hypnograms score.
STAGES = ["W", "1", "2", "2", "3", "R", "2", "W"]


def _wave(seconds: int, fs: float, amplitude: float = 40.0, freq: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return amplitude * np.sin(2 * np.pi * freq * t) + 5.0 * np.sin(2 * np.pi * 11.0 * t)


def _psg(path: Path, labels=("EEG C4-M1", "EOG E1-M2", "EMG chin"), seconds: int = 240) -> Path:
    """A small EDF+ recording with the given channel labels at 100 Hz."""
    channels = [
        (label, _wave(seconds, 100.0, 40.0 + 10 * i), 100.0, "uV") for i, label in enumerate(labels)
    ]
    return write_edf_file(path, channels, start=START)


def _hypnogram(path: Path, stages=STAGES) -> Path:
    """A Sleep-EDF style EDF+ hypnogram, one 30-s annotation per stage."""
    notes = [(30.0 * i, 30.0, f"Sleep stage {s}") for i, s in enumerate(stages)]
    return write_annotation_edf(path, notes, start=START)


def _night(folder: Path, name: str, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _hypnogram(folder / f"{name}-Hypnogram.edf")
    return _psg(folder / f"{name}.edf", **kwargs)


def _samples(out: Path) -> list[dict]:
    return [sample for shard in list_shards(out) for sample in _iter_samples(shard)]


def _meta(sample: dict) -> dict:
    return json.loads(sample["json"])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])


# ----------------------------------------------------------------------------------------
# Exit codes, failure summary, --keep-going, retry
# ----------------------------------------------------------------------------------------
def test_failures_exit_1_keep_going_lists_them_and_a_rerun_retries(tmp_path, capsys):
    data = tmp_path / "in"
    _night(data, "a")
    _night(data, "b")
    _truncate(data / "b.edf")
    out = tmp_path / "out"
    argv = ["render", str(data), "--out", str(out), *FAST]

    # Default: stops before drawing anything (the header check sees b), exit 1, the
    # cause named on stderr, no manifest.
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert f"failed: {data / 'b.edf'}: truncated" in captured.err
    assert "--keep-going" in captured.err
    assert not (out / "manifest.json").exists() and not list_shards(out)

    # --keep-going: a is rendered, the manifest lists b with its cause, still exit 1.
    assert main([*argv, "--keep-going"]) == 1
    captured = capsys.readouterr()
    assert "1 recording(s) failed" in captured.err and "truncated" in captured.err
    manifest = read_manifest(out)
    assert [r["recording"] for r in manifest.recordings] == ["a"]
    assert [(Path(f["file"]).name, f["reason"].split(":")[0]) for f in manifest.failed] == [
        ("b.edf", "truncated")
    ]

    # A rerun retries the failed recording (here still broken: exit 1 again, no change).
    assert main([*argv, "--keep-going"]) == 1
    capsys.readouterr()
    assert [r["recording"] for r in read_manifest(out).recordings] == ["a"]

    # Fixed: the same command renders b, numbers its shards after a's, exit 0.
    _psg(data / "b.edf")
    assert main(argv) == 0
    assert "1 retried" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert sorted(r["recording"] for r in manifest.recordings) == ["a", "b"]
    assert manifest.failed == []
    for split in ("train", "val", "test"):
        names = [p.name for p in list_shards(out, split)]
        assert names == [f"{split}-{n:06d}.tar" for n in range(len(names))]
    assert verify_shards(out)["samples"] == 16
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out


def test_a_failure_while_drawing_stops_and_the_rerun_resumes(tmp_path, capsys):
    data = tmp_path / "in"
    _night(data, "a")
    _night(data, "b")
    (data / "b-Hypnogram.edf").write_text("garbage, not a hypnogram\n" * 30)
    out = tmp_path / "out"
    argv = ["render", str(data), "--out", str(out), *FAST]
    assert main(argv) == 1
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.startswith("psgvlm render: failed:")]
    assert "b.edf" in line and "hypnogram" in line
    assert "stopped at the first failure" in captured.err
    assert len(list((out / "_work" / "done").glob("*.json"))) == 1  # a is kept
    _hypnogram(data / "b-Hypnogram.edf")
    assert main(argv) == 0
    assert "1 resumed" in capsys.readouterr().out
    assert verify_shards(out)["samples"] == 16


def test_a_run_that_produced_nothing_can_be_rerun_with_corrected_arguments(tmp_path, capsys):
    data = tmp_path / "in"
    _night(data, "a")
    out = tmp_path / "out"
    argv = ["render", str(data), "--out", str(out), *FAST]
    assert main([*argv, "--montage", "eeg=Nope"]) == 1
    assert "eeg=Nope" in capsys.readouterr().err
    assert main([*argv, "--montage", "eeg=Nope", "--keep-going"]) == 1  # manifest, 0 shards
    capsys.readouterr()
    assert read_manifest(out).shards == []
    assert main([*argv, "--montage", "eeg=C4-M1"]) == 0
    assert read_manifest(out).total_samples == 8
    # A finished render with shards still refuses other arguments.
    assert main([*argv, "--montage", "eeg=C4-M1,emg=chin"]) == 2
    assert "different arguments" in capsys.readouterr().err


def test_malformed_montage_is_rejected_once_before_any_work(tmp_path, capsys):
    data = tmp_path / "in"
    _night(data, "a")
    _night(data, "b")
    out = tmp_path / "out"
    assert main(["render", str(data), "--out", str(out), "--montage", "eeg", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not role=NAME" in err
    assert not out.exists()


# ----------------------------------------------------------------------------------------
# The reader's error first; explicit names; BDF
# ----------------------------------------------------------------------------------------
def test_the_reader_error_is_reported_not_a_missing_hypnogram(tmp_path, capsys):
    text = tmp_path / "notes.edf"
    text.write_text("Patient notes, not a recording.\n" * 20)
    assert main(["render", str(text), "--out", str(tmp_path / "o1"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "not an EDF/BDF file" in err and "no edf hypnogram" not in err
    night = _night(tmp_path / "cut", "night")
    _truncate(night)
    assert main(["render", str(night), "--out", str(tmp_path / "o2"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and "no edf hypnogram" not in err


def test_explicit_file_named_like_a_hypnogram_is_rendered(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    psg = _psg(folder / "night annotations.edf")
    out = tmp_path / "out"
    assert main(["render", str(psg), "--out", str(out), "--unscored", *FAST]) == 0
    assert [r["recording"] for r in read_manifest(out).recordings] == ["night annotations"]


def _write_bdf(path: Path, seconds: int = 240) -> Path:
    """A BDF+ recording (24-bit samples) with EEG and EOG at 128 Hz."""
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), 2, pyedflib.FILETYPE_BDFPLUS)
    try:
        writer.setSignalHeaders(
            [
                {
                    "label": label,
                    "dimension": "uV",
                    "sample_frequency": 128,
                    "physical_min": -500.0,
                    "physical_max": 500.0,
                    "digital_min": -8388608,
                    "digital_max": 8388607,
                }
                for label in ("EEG C3-A2", "EOG E1-M2")
            ]
        )
        writer.setStartdatetime(START)
        writer.writeSamples([_wave(seconds, 128.0), _wave(seconds, 128.0, 80.0, 0.5)])
    finally:
        writer.close()
    return path


def test_bdf_plus_is_rendered_with_a_named_hypnogram(tmp_path):
    bdf = _write_bdf(tmp_path / "subject.bdf")
    (tmp_path / "scored").mkdir()
    stages = _hypnogram(tmp_path / "scored" / "stages.edf")
    out = tmp_path / "out"
    assert main(["render", str(bdf), "--hypnogram", str(stages), "--out", str(out), *FAST]) == 0
    samples = _samples(out)
    assert [int(s["cls"]) for s in sorted(samples, key=lambda s: s["__key__"])] == [
        0,
        1,
        2,
        2,
        3,
        4,
        2,
        0,
    ]
    meta = _meta(samples[0])
    assert [c["source"] for c in meta["channels"]] == ["EEG C3-A2", "EOG E1-M2"]
    assert meta["montage"] == "eeg=C4-M1,eog=E1-M2"  # auto: the recording has no EMG
    assert read_manifest(out).config["hypnogram"] == str(stages.resolve())


# ----------------------------------------------------------------------------------------
# --unscored, --hypnogram
# ----------------------------------------------------------------------------------------
def test_unscored_renders_every_epoch_as_unk_and_says_so(tmp_path, capsys):
    psg = _psg(tmp_path / "lonely.edf", seconds=200)  # 6 whole epochs and 20 s
    out = tmp_path / "out"
    assert main(["render", str(psg), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no edf hypnogram found" in err and "--unscored" in err
    assert main(["render", str(psg), "--out", str(out), "--unscored", *FAST]) == 0
    assert "unscored: every epoch UNK" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.unscored and manifest.config["settings"]["unscored"]
    samples = sorted(_samples(out), key=lambda s: s["__key__"])
    assert [int(s["cls"]) for s in samples] == [-1] * 6
    meta = _meta(samples[1])
    assert meta["stage"] == "UNK" and meta["scored"] is False and meta["onset"] == 30.0
    assert np.load(io.BytesIO(samples[0]["npy"])).shape == (32, 64)
    assert (
        main(
            [
                "render",
                str(psg),
                "--out",
                str(tmp_path / "x"),
                "--unscored",
                "--hypnogram",
                str(psg),
                *FAST,
            ]
        )
        == 2
    )
    assert "exclude each other" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# Montage, labels, slow channels
# ----------------------------------------------------------------------------------------
def test_eeg_only_recording_renders_with_default_arguments(tmp_path, capsys):
    psg = _night(tmp_path / "in", "nap", labels=("EEG Fpz-Cz",))
    out = tmp_path / "out"
    assert main(["render", str(psg), "--out", str(out), *FAST]) == 0
    meta = _meta(_samples(out)[0])
    assert meta["montage"] == "eeg=C4-M1"
    (channel,) = meta["channels"]
    # The strip is labelled with the derivation drawn; slot and source stay in the JSON.
    assert channel["slot"] == "C4-M1" and channel["source"] == "EEG Fpz-Cz"
    assert channel["drawn"] == "Fpz-Cz" and channel["via"] == "fallback"
    assert meta["render"]["labels"] == ["Fpz-Cz"]
    # Without any EEG: one short line that says which --montage to pass.
    emg_only = _night(tmp_path / "emg", "chin", labels=("EMG chin", "ECG"))
    assert main(["render", str(emg_only), "--out", str(tmp_path / "o2"), *FAST]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "no EEG channel" in x]
    assert "--montage eeg=" in line and len(line) < 400


def test_labels_name_the_channel_actually_drawn(tmp_path):
    psg = _night(tmp_path / "in", "r", labels=("CZ-A1", "EOG Left", "EMG EMG1"))
    out = tmp_path / "out"
    assert (
        main(
            [
                "render",
                str(psg),
                "--out",
                str(out),
                "--size",
                "448x224",
                "--format",
                "npy",
                "--no-progress",
            ]
        )
        == 0
    )
    sample = _samples(out)[0]
    meta = _meta(sample)
    assert [c["drawn"] for c in meta["channels"]] == ["CZ-A1", "EOG Left", "EMG EMG1"]
    assert [c["slot"] for c in meta["channels"]] == ["C4-M1", "E1-M2", "chin"]
    assert meta["render"]["labels"] == ["CZ-A1", "EOG Left", "EMG EMG1"]
    # The page carries the derivations' names, not the slots'.
    import dataclasses

    from engine.raster import RenderSpec, render

    image = np.load(io.BytesIO(sample["npy"]))
    fields = {k: v for k, v in meta["render"].items() if k not in ("format", "quality")}
    spec = RenderSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    blank = np.full((1, 3, 3000), np.nan, np.float32)
    drawn = render(blank, spec)[0]
    slots = render(blank, dataclasses.replace(spec, labels=("C4-M1", "E1-M2", "chin")))[0]
    ink = drawn < 128
    assert ink.sum() > 50 and np.all(image[ink] <= drawn[ink])
    assert np.any((slots < 128) & (image == 255))


def test_a_one_hertz_emg_envelope_is_drawn_as_an_envelope_and_said_so(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    seconds = 240
    envelope = 2.0 + np.repeat([1.0, 4.0, 0.5, 3.0, 1.0, 0.3, 2.0, 1.5], 30)  # µV, 1 Hz
    write_edf_file(
        folder / "sc.edf",
        [
            ("EEG Fpz-Cz", _wave(seconds, 100.0), 100.0, "uV"),
            ("EMG submental", envelope[:seconds], 1.0, "uV"),
        ],
        start=START,
    )
    _hypnogram(folder / "sc-Hypnogram.edf")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        argv = ["render", str(folder / "sc.edf"), "--out", str(out), "--no-labels", *FAST]
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'EMG submental'" in m and "1 Hz is too slow" in m for m in warned)
    samples = sorted(_samples(out), key=lambda s: s["__key__"])
    emg = _meta(samples[0])["channels"][1]
    assert emg["drawn_as"] == "envelope" and "too slow" in emg["warning"] and emg["fs"] == 1.0
    # Not a flat line: the strip's trace moves with the envelope from epoch to epoch.
    rows = [
        np.flatnonzero(np.load(io.BytesIO(s["npy"]))[16:, :].min(axis=1) < 128) for s in samples
    ]
    centres = [float(np.mean(r)) for r in rows if r.size]
    assert len(centres) == 8 and max(centres) - min(centres) > 3


# ----------------------------------------------------------------------------------------
# Synthetic nights: ids, progress callback, help texts
# ----------------------------------------------------------------------------------------
def test_two_synth_runs_into_different_folders_render_together(tmp_path, capsys):
    for folder in ("run1", "run2"):
        assert main(["synth", "--out", str(tmp_path / folder), "--hours", "0.05"]) == 0
    out = tmp_path / "out"
    argv = ["render", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(out)]
    assert main([*argv, *FAST]) == 0
    recordings = sorted(r["recording"] for r in read_manifest(out).recordings)
    assert recordings == ["run1/synth-0000", "run2/synth-0000"]
    keys = [s["__key__"] for s in _samples(out)]
    assert len(keys) == len(set(keys)) > 6


def test_progress_counts_epochs(tmp_path):
    psg = _night(tmp_path / "in", "p")
    from engine.io.datasets import resolve_inputs

    (pair,) = resolve_inputs([str(psg)])
    seen: list[int] = []
    task = RecordingTask(pair, "train", tmp_path / "work", RenderSettings(), batch_size=3)
    marker = render_recording(task, seen.append)
    assert seen == [3, 3, 2] and marker["epochs"] == 8


@pytest.mark.parametrize("command", ["render", "synth"])
def test_every_option_shows_its_default(command):
    import importlib

    module = importlib.import_module(
        {"render": "engine.pipeline", "synth": "engine.synth"}[command]
    )
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or "") or action.required, action.option_strings


def test_corrected_synthetic_rerun_renders_only_the_nights_asked_for(tmp_path, capsys):
    out = tmp_path / "out"
    small = ["--synthetic-hours", "0.05", *FAST]
    assert (
        main(["render", "--synthetic", "3", "--montage", "eeg=Nope", "--out", str(out), *small])
        == 1
    )
    capsys.readouterr()
    assert main(["render", "--synthetic", "2", "--out", str(out), *small]) == 0
    manifest = read_manifest(out)
    assert sorted(r["recording"] for r in manifest.recordings) == ["night-0000", "night-0001"]
    assert not list((out / "_synthetic").glob("night-0002*"))


def test_a_whole_render_never_imports_torch(tmp_path):
    """Writing shards does not go through webdataset (whose import pulls in torch)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    code = (
        "import sys; from psgvlm.cli import main; "
        f"rc = main(['render', '--synthetic', '1', '--synthetic-hours', '0.05', '--out', "
        f"{str(out)!r}, '--no-progress', '--size', '64x32']); "
        "print(rc, sorted(m for m in ('torch', 'webdataset', 'vlm') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    assert verify_shards(out)["samples"] > 0

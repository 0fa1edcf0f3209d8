"""Tests for engine.pipeline: ``psgvlm render`` end to end, splits, resume, faults."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from engine.errors import DatasetError, ShardError
from engine.pipeline import (
    RenderSettings,
    assign_splits,
    parse_fractions,
    read_subjects_file,
    render_dataset,
)
from engine.shards import list_shards, read_manifest, sample_key, verify_shards
from engine.stages import Stage
from psgvlm.cli import main

HOURS = 0.25  # 30 epochs per synthetic night
SMALL = ["--synthetic-hours", str(HOURS), "--size", "96x48", "--no-progress"]


def _truth(nights: int, hours: float = HOURS) -> dict[str, int]:
    """Expected sample key -> class of synthetic nights 0..nights-1 (UNK dropped)."""
    from engine.synth import synth_hypnogram

    expected = {}
    for number in range(nights):
        stages = synth_hypnogram(number, round(hours * 120))
        for epoch, stage in enumerate(stages.tolist()):
            if stage != int(Stage.UNK):
                expected[sample_key("synthetic", f"night-{number:04d}", epoch)] = stage
    return expected


def _read_all(out: Path, decode: bool = False) -> list[dict]:
    urls = [str(p) for p in list_shards(out)]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return list(dataset.decode("pil") if decode else dataset)


# ----------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------
def test_assign_splits_is_reproducible_proportional_and_seeded():
    subjects = [f"sleep-edf:{i:02d}" for i in range(20)]
    first = assign_splits(subjects, (0.8, 0.1, 0.1), seed=1)
    assert first == assign_splits(list(reversed(subjects)) + subjects[:3], (0.8, 0.1, 0.1), 1)
    assert Counter(first.values()) == {"train": 16, "val": 2, "test": 2}
    assert assign_splits(subjects, (0.8, 0.1, 0.1), seed=2) != first
    # Few subjects: every non-zero split gets one as soon as there are enough.
    assert Counter(assign_splits(["a", "b", "c"], (0.8, 0.1, 0.1)).values()) == {
        "train": 1,
        "val": 1,
        "test": 1,
    }
    # Fewer subjects than splits: train first, then test (to evaluate on), then val.
    assert sorted(assign_splits(["a", "b"], (0.8, 0.1, 0.1)).values()) == ["test", "train"]
    assert list(assign_splits(["a"], (0.8, 0.1, 0.1)).values()) == ["train"]
    assert sorted(assign_splits(["a", "b"], (0.5, 0.5, 0.0)).values()) == ["train", "val"]
    assert set(assign_splits(subjects, (1.0, 0.0, 0.0)).values()) == {"train"}


def test_parse_fractions_and_subjects_file(tmp_path):
    assert parse_fractions("0.7,0.2,0.1") == (0.7, 0.2, 0.1)
    for bad in ("0.5,0.5", "0.5,0.6,0.1", "a,b,c", "1.2,-0.1,-0.1"):
        with pytest.raises(DatasetError, match="--split"):
            parse_fractions(bad)
    (tmp_path / "s.json").write_text(json.dumps({"synthetic:night-0000": "val", "x": "test"}))
    assert read_subjects_file(tmp_path / "s.json") == {"synthetic:night-0000": "val", "x": "test"}
    (tmp_path / "s.csv").write_text("subject,split\nnight-0000,test\nnight-0001,train\n")
    assert read_subjects_file(tmp_path / "s.csv") == {"night-0000": "test", "night-0001": "train"}
    (tmp_path / "bad.csv").write_text("night-0000,holdout\n")
    with pytest.raises(DatasetError, match="splits must be"):
        read_subjects_file(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="--subjects-file"):
        read_subjects_file(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Four short synthetic nights rendered through the command line, split 2/1/1."""
    out = tmp_path_factory.mktemp("render") / "shards"
    argv = ["render", "--synthetic", "4", *SMALL, "--split", "0.5,0.25,0.25", "--maxcount", "25"]
    assert main([*argv, "--out", str(out), "--features"]) == 0
    return out


def test_end_to_end_synthetic_shards_read_back(rendered):
    out = rendered
    manifest = read_manifest(out)
    samples = _read_all(out, decode=True)
    truth = _truth(4)
    # Every scored epoch exactly once, with the synthetic truth as its class.
    keys = [s["__key__"] for s in samples]
    assert sorted(keys) == sorted(truth) and len(set(keys)) == len(keys)
    assert all(int(s["cls"]) == truth[s["__key__"]] for s in samples)
    # Images decode at the requested size; metadata describes the epoch.
    first = samples[0]
    assert isinstance(first["png"], Image.Image) and first["png"].size == (96, 48)
    meta = first["json"]
    assert meta["dataset"] == "synthetic" and meta["subject"] == meta["recording"]
    assert meta["onset"] == meta["epoch"] * 30.0 and meta["duration"] == 30.0
    assert [c["role"] for c in meta["channels"]] == ["eeg", "eog", "emg"]
    assert all(c["scale_uv"] > 0 for c in meta["channels"]) and meta["fs"] > 0
    assert meta["render"]["width"] == 96 and meta["render"]["format"] == "png"
    assert meta["stage"] == ["W", "N1", "N2", "N3", "R"][int(first["cls"])]
    assert {"preprocessing", "engine_version", "raw_label", "scorer"} <= set(meta)
    assert isinstance(meta["features"], dict) and "delta_rel" in meta["features"]
    # Splits by subject: no subject in two splits, 2/1/1 subjects, manifest agrees.
    splits_of = {}
    for sample in samples:
        splits_of.setdefault(sample["json"]["subject"], set()).add(sample["json"]["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert Counter(next(iter(s)) for s in splits_of.values()) == {"train": 2, "val": 1, "test": 1}
    assert {k: [x.split(":")[1] for x in v] for k, v in manifest.subjects.items()} == {
        split: sorted(subj for subj, s in splits_of.items() if split in s)
        for split in ("train", "val", "test")
    }
    # Counts equal the manifest, per split and per label.
    per_split = Counter(s["json"]["split"] for s in samples)
    assert {k: v["samples"] for k, v in manifest.split_counts().items()} == dict(per_split)
    labels = Counter(["W", "N1", "N2", "N3", "R"][int(s["cls"])] for s in samples)
    totals = Counter()
    for counts in manifest.split_counts().values():
        totals.update({k: v for k, v in counts.items() if k not in ("samples", "shards")})
    assert totals == labels
    assert verify_shards(out)["samples"] == len(truth)
    # Shard names contiguous per split, at most --maxcount samples each.
    for split in ("train", "val", "test"):
        names = [p.name for p in list_shards(out, split)]
        assert names == [f"{split}-{n:06d}.tar" for n in range(len(names))]
    assert max(info.count for info in manifest.shards) <= 25
    assert manifest.command[:2] == ["psgvlm", "render"] and "--features" in manifest.command
    assert {"psgvlm", "numpy", "numba", "webdataset", "python"} <= set(manifest.versions)
    assert not (out / "_work").exists()


def test_rerun_of_a_finished_render_is_a_no_op_and_changed_arguments_are_refused(rendered, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in list_shards(rendered)}
    argv = ["render", "--synthetic", "4", *SMALL, "--split", "0.5,0.25,0.25", "--maxcount", "25"]
    assert main([*argv, "--out", str(rendered), "--features"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in list_shards(rendered)} == before
    assert main([*argv, "--out", str(rendered)]) == 2
    assert "settings.features" in capsys.readouterr().err


def test_render_defaults_command_line(tmp_path, capsys):
    """``psgvlm render --synthetic 2 --out DIR`` (the README's main job) but tiny nights.

    Two nights give a train and a test split (val is empty, and the summary says so), so
    that the next steps can train on the train split and evaluate on the test split.
    """
    out = tmp_path / "x"
    assert main(["render", "--synthetic", "2", "--synthetic-hours", "0.1", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "rendered 2 recordings" in summary and "train" in summary
    assert "note: val split is empty" in summary
    assert [p.name for p in list_shards(out)] == ["test-000000.tar", "train-000000.tar"]
    # Synthesis and drawing are timed apart: the render rate is the engine's.
    assert re.search(r"^synthesis: 2 nights of 0.1 h in [\d.]+ s", summary, re.M)
    assert re.search(r"^render: \d+ epochs in [\d.]+ s \(\d+ epochs/s\)", summary, re.M)
    samples = _read_all(out)
    image = Image.open(io.BytesIO(samples[0]["png"]))
    assert image.size == (448, 224)
    manifest = read_manifest(out)
    assert manifest.total_samples == len(samples) == len(_truth(2, 0.1))
    assert manifest.config["settings"]["montage"] == "auto"
    assert {r["montage"] for r in manifest.recordings} == {"eeg=C4-M1,eog=E1-M2,emg=chin"}
    assert {len(v) for v in manifest.subjects.values()} == {0, 1}
    assert manifest.subjects["val"] == []


def test_failed_recordings_are_listed_and_strict_fails(tmp_path, capsys):
    broken = tmp_path / "in"
    broken.mkdir()
    (broken / "bad-PSG.edf").write_bytes(b"0       this is not an EDF header")
    (broken / "bad-Hypnogram.edf").write_bytes(b"nor this")
    (broken / "lonely.edf").write_bytes(b"")
    out = tmp_path / "out"
    settings = RenderSettings(montage="eeg=C4-M1", width=64, height=32, fmt="npy")
    # Without keep_going the run stops before drawing anything and writes no manifest.
    stopped = render_dataset(
        [str(broken)],
        tmp_path / "stop",
        settings,
        synthetic=1,
        synthetic_hours=0.1,
        progress=False,
    )
    assert stopped.stopped and not stopped.ok and stopped.rendered == 0
    assert not (tmp_path / "stop" / "manifest.json").exists()
    report = render_dataset(
        [str(broken)],
        out,
        settings,
        synthetic=1,
        synthetic_hours=0.1,
        keep_going=True,
        progress=False,
    )
    failed = {Path(f["file"]).name: f["reason"] for f in report.manifest.failed}
    assert set(failed) == {"bad-PSG.edf", "lonely.edf"}
    # The reader's error, not a missing hypnogram, is the cause given.
    assert failed["lonely.edf"] == "empty file"
    assert failed["bad-PSG.edf"].startswith("truncated header (33 bytes")
    assert "failed: " in report.summary() and not report.ok
    samples = _read_all(out)
    assert np.load(io.BytesIO(samples[0]["npy"])).shape == (32, 64)
    assert read_manifest(out).total_samples == len(samples) == len(_truth(1, 0.1))
    assert main(["render", str(broken / "bad-PSG.edf"), "--strict", "--out", str(tmp_path / "s")])
    assert "bad-PSG.edf" in capsys.readouterr().err


def test_subjects_file_context_and_colour(tmp_path):
    table = tmp_path / "subjects.csv"
    table.write_text("subject,split\nnight-0000,test\nnight-0001,val\n")
    settings = RenderSettings(
        montage="eeg=C4-M1,eog=E1-M2", width=64, height=32, fmt="npy", color=True, context=1
    )
    out = tmp_path / "out"
    report = render_dataset(
        [], out, settings, synthetic=2, synthetic_hours=0.1, subjects_file=table, progress=False
    )
    assert [p.name for p in list_shards(out)] == ["test-000000.tar", "val-000000.tar"]
    assert report.manifest.subjects == {
        "train": [],
        "val": ["synthetic:night-0001"],
        "test": ["synthetic:night-0000"],
    }
    sample = _read_all(out)[0]
    assert np.load(io.BytesIO(sample["npy"])).shape == (32, 64, 3)
    meta = json.loads(sample["json"])
    assert meta["render"]["context"] == 1 and meta["render"]["color"] is True
    table.write_text("night-0000,test\n")
    with pytest.raises(DatasetError, match="no split for 1 subjects"):
        render_dataset(
            [], tmp_path / "o2", settings, synthetic=2, synthetic_hours=0.1, subjects_file=table
        )


def test_run_interrupted_while_renaming_shards_is_completed(tmp_path, monkeypatch):
    import engine.pipeline as pipeline

    def killed(out, work):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    settings = RenderSettings(montage="eeg=C4-M1", width=64, height=32, maxcount=4)
    arguments = dict(synthetic=2, synthetic_hours=0.1, progress=False)
    monkeypatch.setattr(pipeline, "_finalize", killed)
    with pytest.raises(KeyboardInterrupt):
        render_dataset([], out, settings, **arguments)
    monkeypatch.undo()
    plan = json.loads((out / "_work" / "finalize.json").read_text())
    source, target = plan["renames"][0]
    (out / "_work" / source).rename(out / target)  # the first rename happened, then a kill
    report = render_dataset([], out, settings, **arguments)
    assert len(report.manifest.shards) == len(plan["renames"]) > 2
    keys = Counter(sample["__key__"] for sample in _read_all(out))
    assert set(keys) == set(_truth(2, 0.1)) and max(keys.values()) == 1
    verify_shards(out)


def test_output_folder_with_foreign_shards_is_refused(tmp_path):
    (tmp_path / "train-000000.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="already holds shards"):
        render_dataset([], tmp_path, RenderSettings(montage="eeg=C4-M1"), synthetic=1)


def test_a_failure_while_finishing_a_recording_fails_it_alone(tmp_path, monkeypatch):
    """The in-process run finishes each recording (last shard synced, marker written) in a
    thread while it draws the next: a failure there is that recording's, its shards are
    removed, the others are done, and a rerun renders only it."""
    import engine.pipeline as pipeline

    settings = RenderSettings(montage="eeg=C4-M1", width=64, height=32, fmt="npy")
    write_marker = pipeline.atomic_write_text

    def failing(path, text):
        if path.name == "synthetic_night-0001.json" and path.parent.name == "done":
            raise OSError("disk full")
        write_marker(path, text)

    monkeypatch.setattr(pipeline, "atomic_write_text", failing)
    out = tmp_path / "out"
    report = render_dataset(
        [], out, settings, synthetic=3, synthetic_hours=0.1, keep_going=True, progress=False
    )
    assert [f["recording"] for f in report.manifest.failed] == ["synthetic/night-0001"]
    assert report.rendered == 2 and "disk full" in report.manifest.failed[0]["reason"]
    assert not (out / "_work" / "parts" / "synthetic_night-0001").exists()
    monkeypatch.setattr(pipeline, "atomic_write_text", write_marker)
    rerun = render_dataset(
        [], out, settings, synthetic=3, synthetic_hours=0.1, keep_going=True, progress=False
    )
    assert rerun.rendered == 1 and rerun.ok
    assert read_manifest(out).total_samples == len(_read_all(out)) == len(_truth(3, 0.1))


def test_killed_run_resumes_without_missing_or_duplicated_epochs(tmp_path, capsys):
    """SIGKILL a real ``psgvlm render`` mid-run, rerun it, check every epoch once."""
    out = tmp_path / "out"
    argv = ["render", "--synthetic", "5", *SMALL, "--maxcount", "7", "--out", str(out)]
    command = [sys.executable, "-m", "psgvlm.cli", *argv]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = out / "_work" / "done"
    deadline = time.monotonic() + 120
    while not (done.is_dir() and any(done.glob("*.json"))):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the render never finished a recording"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (out / "manifest.json").exists(), "killed too late: the run had finished"
    finished = len(list(done.glob("*.json")))
    assert finished < 5
    # The same command again (in this process, which has compiled the kernels already).
    assert main(argv) == 0
    assert f"{finished} resumed" in capsys.readouterr().out
    keys = Counter(sample["__key__"] for sample in _read_all(out))
    truth = _truth(5)
    assert set(keys) == set(truth)
    assert max(keys.values()) == 1
    assert verify_shards(out)["samples"] == len(truth)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_process_pool_and_ray_run_the_same_task_function(tmp_path, backend):
    """``--workers 2`` (spawned processes) and ``--ray local`` (one CPU, one worker)."""
    if backend == "ray":
        pytest.importorskip("ray")
    out = tmp_path / backend
    settings = RenderSettings(montage="eeg=C4-M1,emg=chin", width=64, height=32)
    report = render_dataset(
        [],
        out,
        settings,
        synthetic=2,
        synthetic_hours=0.1,
        workers=2 if backend == "processes" else 1,
        ray_address="local" if backend == "ray" else None,
        progress=False,
    )
    assert report.rendered == 2
    keys = [sample["__key__"] for sample in _read_all(out)]
    assert sorted(keys) == sorted(_truth(2, 0.1))
    verify_shards(out)


@pytest.mark.parametrize("when", ["starting", "drawing"])
def test_ctrl_c_during_a_pool_render_stops_it_and_a_rerun_finishes(tmp_path, when):
    """SIGINT to the main process alone (kill -INT, timeout, a job scheduler) while the
    pool's workers start from the fork server, or while they draw: the command stops
    within seconds with 130, and the same command then renders every recording. (A worker
    started before an interrupt in the middle of the pool's start used to wait forever
    for work, and the command with it.)"""
    from engine.pipeline import write_synthetic_nights

    nights = write_synthetic_nights(tmp_path / "nights", 4, 8.0)
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "psgvlm", "render", str(nights), "--out", str(out),
               "--workers", "2", "--no-progress"]  # fmt: skip
    # a fresh session: the SIGINT below reaches the main process only, as kill -INT does
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120

    def reached() -> bool:  # the plan written (the pool starts next), or a shard begun
        if when == "starting":
            return (out / "_work").is_dir()
        return any((out / "_work" / "parts").glob("*/*"))

    while not reached() and run.poll() is None:
        assert time.monotonic() < deadline, f"the render never reached {when}"
        time.sleep(0.02)
    time.sleep(0.5 if when == "starting" else 0.0)  # into the fork server's start
    if run.poll() is not None:
        pytest.skip("the render finished before it could be interrupted")
    run.send_signal(signal.SIGINT)
    try:
        stderr = run.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        run.kill()
        subprocess.run(["pkill", "-KILL", "-s", str(run.pid)], check=False)
        pytest.fail("psgvlm render --workers 2 did not stop after SIGINT")
    assert run.returncode == 130 and "interrupted" in stderr, stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(read_manifest(out).recordings) == 4


def test_short_epochs_draw_the_middle_20_s_of_chosen_epochs_and_nothing_else(tmp_path):
    """``--short-epochs``: the chosen epochs lose the first and last 5 s of their target
    epoch (blank, ``shown_seconds`` in their json), everything else is drawn as without it;
    the render metadata says so, and the same epochs are chosen on every run."""
    from vlm.render_setup import RenderConfig

    common = [*SMALL, "--synthetic", "2", "--montage", "eeg=C4-M1", "--size", "180x48",
              "--context", "1", "--format", "npy", "--split", "1,0,0"]  # fmt: skip
    assert main(["render", "--out", str(tmp_path / "full"), *common]) == 0
    short = ["--short-epochs", "0.5"]
    assert main(["render", "--out", str(tmp_path / "short"), *common, *short]) == 0
    assert main(["render", "--out", str(tmp_path / "again"), *common, *short]) == 0
    full = {s["__key__"]: s for s in _read_all(tmp_path / "full")}
    drawn = {s["__key__"]: s for s in _read_all(tmp_path / "short")}
    again = {s["__key__"]: json.loads(s["json"]) for s in _read_all(tmp_path / "again")}
    assert full.keys() == drawn.keys() == again.keys()
    shown = 0
    for key, sample in drawn.items():
        meta = json.loads(sample["json"])
        assert meta["render"]["short_epochs"] == 0.5
        assert meta["render"]["short_epoch_seconds"] == 20.0
        assert meta.get("shown_seconds") == again[key].get("shown_seconds")
        assert sample["cls"] == full[key]["cls"]
        image = np.load(io.BytesIO(sample["npy"])).astype(int)
        before = np.load(io.BytesIO(full[key]["npy"])).astype(int)
        if "shown_seconds" not in meta:
            np.testing.assert_array_equal(image, before)
            continue
        shown += 1
        assert meta["shown_seconds"] == 20.0
        # 180 px for 90 s: the target epoch is columns 60-119, its flanks 60-69 and 110-119.
        for flank in (slice(61, 69), slice(111, 119)):
            assert (image[:, flank] == image[:, flank][:1, :1]).all()  # background only
        assert (before[:, 61:69] != before[:1, 61:62]).any()  # a trace was there before
        for kept in (slice(0, 58), slice(72, 108), slice(122, 180)):
            np.testing.assert_array_equal(image[:, kept], before[:, kept])
    assert 0.3 * len(drawn) < shown < 0.7 * len(drawn)
    setup = RenderConfig.from_shards(str(tmp_path / "short"), split="train")
    assert setup.short_epochs_blank
    assert not RenderConfig.from_shards(str(tmp_path / "full"), split="train").short_epochs_blank
    assert main(["render", "--out", str(tmp_path / "bad"), *common, "--short-epochs", "1.5"]) == 2
    assert not (tmp_path / "bad").exists()

"""``psgvlm eval`` on recordings: Prerau loader, 20-s grids, model choice, YASA beside."""

from __future__ import annotations

import csv
import dataclasses
import json
import tarfile
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from engine.epochs import EpochSource
from engine.errors import ChannelNotFoundError, DatasetError, UnknownStageError
from engine.io.hypnogram import Hypnogram
from engine.io.prerau import load_prerau
from engine.preprocess import Preprocessing
from engine.raster import RenderSpec
from engine.stages import STAGE_NAMES, Stage
from vlm.defaults import pick_stager
from vlm.peers import yasa_stage
from vlm.render_setup import RenderConfig, find_render_setup
from vlm.runtime import Stager
from vlm.smoothing import synthetic_stage_hmm, viterbi_stages
from vlm.sources import model_windows

IMAGE = (224, 56)  # tiny model and render size: small, multiples of 28


# --------------------------------------------------------------------------- Prerau loader
def test_prerau_loader_matches_the_documented_scoring(shared_data):
    rec = load_prerau(shared_data / "prerau")
    hyp = rec.hypnogram
    assert rec.labels == ["EEG"] and rec.fs == {"EEG": 100.0}
    assert rec.signals["EEG"].size == 502600
    assert len(hyp) == 167 and hyp.epoch_length == 30.0
    assert np.allclose(hyp.onsets[:3], [10.01, 40.01, 70.01])
    assert hyp.stage_counts() == {"W": 2, "N1": 7, "N2": 95, "N3": 37, "R": 26, "UNK": 0}
    # Changes in the file: 0 REM, 40.01 W, 70.01 N1, 100.01 N2 (codes 4, 5, 3, 2).
    assert hyp.stages[:4].tolist() == [Stage.R, Stage.W, Stage.N1, Stage.N2]


def _write_prerau(folder: Path, stages: str) -> Path:
    folder.mkdir()
    (folder / "segment_data.csv").write_text("\n".join(["1.5"] * 10000) + "\n")
    (folder / "segment_stages.csv").write_text(stages)
    return folder


def test_prerau_loader_rejects_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_prerau(tmp_path / "missing")
    with pytest.raises(UnknownStageError, match=r"unknown stage codes \[7\]"):
        load_prerau(_write_prerau(tmp_path / "a", "Time,Stage\n0,2\n40.01,7\n100,2\n"))
    with pytest.raises(Exception, match="Time,Stage"):
        load_prerau(_write_prerau(tmp_path / "b", "t,s\n0,2\n100,2\n"))
    rec = load_prerau(_write_prerau(tmp_path / "c", "Time,Stage\n0,2\n40.01,1\n100,1\n"))
    assert rec.hypnogram.stages.tolist() == [Stage.N2, Stage.N3]  # 10.01-40.01, 40.01-70.01


# --------------------------------------------------------------------------- model choice
def _stager(name: str, channels: list[tuple[str, str]]) -> Stager:
    spec = RenderSpec.for_roles([role for role, _ in channels])
    setup = RenderConfig(channels=[{"role": r, "name": n} for r, n in channels],
                         render=spec.to_dict())  # fmt: skip
    return Stager("unused", [None], setup, name=name)


def test_pick_stager_uses_the_one_montage_rule():
    eeg_only = _stager("eeg_only", [("eeg", "C4-M1")])
    full = _stager("psg", [("eeg", "C4-M1"), ("eog", "E1-M2"), ("emg", "chin")])
    stagers = [eeg_only, full]
    assert pick_stager(stagers, ["EEG"]) is eeg_only
    assert pick_stager(stagers, ["EEG C4-A1", "EEG O2-A1", "EOG(L)", "EMG chin", "Pleth"]) is full
    # DREAMS-style vertex and ipsilateral derivations resolve through the montage rule too
    assert pick_stager(stagers, ["CZ-A1", "EOG1", "EMG1"]) is full
    assert pick_stager(stagers, ["C3-A1"]) is eeg_only
    assert pick_stager(stagers, ["EEG C3-A2", "EOG(L)"]) is eeg_only  # no EMG: 3 rows can't run
    twin = _stager("twin", [("eeg", "C4-M1")])
    assert pick_stager([eeg_only, twin], ["EEG"]) is eeg_only  # ties: the first listed
    with pytest.raises(ChannelNotFoundError, match="no model's montage can be filled"):
        pick_stager(stagers, ["EOG(L)", "EMG chin"])


def test_pick_stager_passes_over_a_model_that_would_draw_an_envelope(tmp_path, caplog):
    """Sleep-EDF cassette files carry a 1-Hz chin-EMG envelope: the EEG+EOG+EMG model would
    draw it as an envelope it never saw, so the EEG-only one stages them; a 100-Hz EMG
    (Sleep-EDF telemetry) keeps the full model. Rates come from the EDF header."""
    import logging

    import pyedflib

    from vlm.sources import open_recording

    eeg_only = _stager("eeg_only", [("eeg", "C4-M1")])
    full = _stager("psg", [("eeg", "C4-M1"), ("eog", "E1-M2"), ("emg", "chin")])
    labels = ["EEG Fpz-Cz", "EOG horizontal", "EMG submental"]
    cassette = {"EEG Fpz-Cz": 100.0, "EOG horizontal": 100.0, "EMG submental": 1.0}
    telemetry = dict(cassette, **{"EMG submental": 100.0})
    with caplog.at_level(logging.INFO, logger="vlm.defaults"):
        assert pick_stager([eeg_only, full], labels, "SC4001E0", cassette) is eeg_only
    assert "psg passed over: it would draw emg 'EMG submental' at 1 Hz" in caplog.text
    assert full.envelope_rows(full.resolve(labels), telemetry) == []
    assert pick_stager([eeg_only, full], labels, "ST7011J0", telemetry) is full
    assert pick_stager([full], labels, "SC4001E0", cassette) is full  # the only one: kept

    path = tmp_path / "SC4001E0-PSG.edf"
    writer = pyedflib.EdfWriter(str(path), 3, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": label, "dimension": "uV", "sample_frequency": fs, "physical_max": 500,
         "physical_min": -500, "digital_max": 32767, "digital_min": -32768}
        for label, fs in cassette.items()
    ])  # fmt: skip
    writer.writeSamples([np.zeros(int(60 * fs)) for fs in cassette.values()])
    writer.close()
    rec = open_recording(path)
    assert rec.rates == cassette
    assert pick_stager([eeg_only, full], rec.labels, str(rec), rec.rates) is eeg_only


def test_model_windows_centre_30s_on_20s_epochs():
    fs, n = 100.0, 6000  # 60 s
    ramp = np.arange(n) / fs  # value = time in seconds
    hyp = Hypnogram.from_stages(["W", "N1", "N2"], epoch_length=20.0)
    source = EpochSource.from_arrays(
        {"EEG": ramp}, fs, hyp, "eeg=C4-M1", Preprocessing(filter=False)
    )
    windows = model_windows(source, np.arange(3), 30.0)
    assert windows.shape == (3, 1, 3000)
    for i, onset in enumerate([0.0, 20.0, 40.0]):
        expected = onset - 5.0 + np.arange(3000) / fs
        inside = (expected >= 0) & (expected < 60.0)
        np.testing.assert_allclose(windows[i, 0, inside], expected[inside], atol=1e-3)
        assert np.isnan(windows[i, 0, ~inside]).all()
    # A 30-s grid with context 1 gives the epoch and both neighbours (90 s).
    hyp30 = Hypnogram.from_stages(["W", "N2"], epoch_length=30.0)
    source30 = EpochSource.from_arrays(
        {"EEG": ramp}, fs, hyp30, "eeg=C4-M1", Preprocessing(filter=False)
    )
    wide = model_windows(source30, np.array([1]), 90.0)
    np.testing.assert_allclose(wide[0, 0, :6000], np.arange(6000) / fs, atol=1e-3)
    assert np.isnan(wide[0, 0, 6000:]).all()
    # The model's epoch length given, a 30-s grid is drawn as before (nothing blanked).
    np.testing.assert_array_equal(model_windows(source30, np.array([1]), 90.0, 30.0), wide)


def test_model_windows_blank_the_rest_of_the_model_epoch_on_20s_grids():
    """A 20-s epoch is drawn alone in the model's 30-s centre epoch (5 s blank each side);
    the context epochs keep the neighbouring signal, at the same seconds per pixel."""
    fs, n = 100.0, 20000  # 200 s: ten 20-s epochs
    ramp = np.arange(n) / fs
    hyp = Hypnogram.from_stages(["N2"] * 10, epoch_length=20.0)
    source = EpochSource.from_arrays(
        {"EEG": ramp}, fs, hyp, "eeg=C4-M1", Preprocessing(filter=False)
    )
    filled = model_windows(source, np.array([2, 5]), 90.0)
    windows = model_windows(source, np.array([2, 5]), 90.0, epoch_s=30.0)
    assert windows.shape == filled.shape == (2, 1, 9000)
    for i, onset in enumerate([40.0, 100.0]):
        expected = onset - 35.0 + np.arange(9000) / fs  # 35 s each side of the 20-s epoch
        np.testing.assert_allclose(filled[i, 0], expected, atol=1e-3)
        blank = np.isnan(windows[i, 0])
        assert blank[3000:3500].all() and blank[5500:6000].all()  # the rest of the 30 s
        assert not blank[:3000].any() and not blank[3500:5500].any() and not blank[6000:].any()
        np.testing.assert_allclose(windows[i, 0, ~blank], expected[~blank], atol=1e-3)


def test_a_model_trained_with_short_epochs_sees_20s_epochs_with_blank_flanks():
    """The runtime draws a 20-s epoch as the model's shards drew short epochs: blank flanks
    for a setup from ``--short-epochs`` shards, the neighbouring signal otherwise."""
    from vlm.render_setup import RenderConfig
    from vlm.runtime import Stager

    fs = 100.0
    rng = np.random.default_rng(0)
    hyp = Hypnogram.from_stages(["N2"] * 10, epoch_length=20.0)
    source = EpochSource.from_arrays(
        {"EEG": 30.0 * rng.standard_normal(20000)}, fs, hyp, "eeg=C4-M1",
        Preprocessing(filter=False),
    )  # fmt: skip
    render = {"scales_uv": [75.0], "width": 180, "height": 32, "context": 1}
    channels = [{"role": "eeg", "name": "C4-M1"}]
    plain = Stager("tiny:qwen2vl", [None], RenderConfig(channels=channels, render=render))
    short = Stager("tiny:qwen2vl", [None], RenderConfig(
        channels=channels, render=render | {"short_epochs": 0.3, "short_epoch_seconds": 20.0}
    ))  # fmt: skip
    assert short.setup.short_epochs_blank and not plain.setup.short_epochs_blank
    filled, blank = plain.pixels(source, [4]).astype(int), short.pixels(source, [4]).astype(int)
    # 180 px for 90 s: the 20-s epoch is columns 70-109 of the centre epoch's 60-119.
    for flank in (slice(61, 69), slice(111, 119)):
        assert (blank[0][:, flank] == blank[0][:1, flank.start]).all()
        assert (filled[0][:, flank] != filled[0][:1, flank.start]).any()
    np.testing.assert_array_equal(blank[0][:, 72:108], filled[0][:, 72:108])
    np.testing.assert_array_equal(blank[0][:, :58], filled[0][:, :58])


# --------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Tiny Qwen2-VL at the render size, an untrained LoRA adapter, and a one-sample shard."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from vlm.model import LoraArgs, load_model_and_processor
    from vlm.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    base = build_tiny_model(
        "qwen2vl", root / "base", image_size=IMAGE, hidden_size=64, num_layers=1, vision_depth=1
    )
    model, processor, _ = load_model_and_processor(
        base, lora=LoraArgs(lora_r=4, lora_alpha=8, modules_to_save=["lm_head"])
    )
    adapter = root / "run" / "adapter"
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    spec = RenderSpec.for_roles(["eeg"], width=IMAGE[0], height=IMAGE[1], labels=("C4-M1",))
    meta = {
        "channels": [{"role": "eeg", "name": "C4-M1", "label": "EEG C4-M1", "scale_uv": 75.0}],
        "render": spec.to_dict() | {"format": "png", "quality": 90},
        "preprocessing": Preprocessing().to_dict(),
        "fs": 100.0,
    }
    shard = root / "shards" / "train-000000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        data = json.dumps(meta).encode()
        info = tarfile.TarInfo("synthetic_night-0000_00000.json")
        info.size = len(data)
        tar.addfile(info, BytesIO(data))
    return {"base": base, "adapter": adapter, "shards": shard.parent}


def test_render_setup_round_trips_the_shard_json(tiny_model):
    setup = find_render_setup(None, tiny_model["shards"])
    assert isinstance(setup, RenderConfig)
    assert setup.montage == "eeg=C4-M1" and setup.roles == ["eeg"]
    spec = setup.spec()
    assert (spec.width, spec.height, spec.scales_uv) == (*IMAGE, (75.0,))
    assert setup.window_seconds == 30.0 and setup.preprocessing_params().target_fs == 100.0


def _eval(inputs, tiny_model, out, *extra):
    from psgvlm.cli import main

    code = main(
        [
            "eval",
            *inputs,
            "--model",
            str(tiny_model["base"]),
            "--adapter",
            str(tiny_model["adapter"]),
            "--render-config",
            str(tiny_model["shards"]),
            "--device",
            "cpu",
            "--out",
            str(out),
            *extra,
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    return metrics, rows


def test_eval_on_a_20s_grid_edf(tiny_model, tmp_path, write_edf):
    rng = np.random.default_rng(0)
    fs, seconds = 100.0, 600
    eeg = rng.normal(0, 20, int(fs * seconds))
    psg = write_edf(tmp_path / "rec.edf", [("EEG C3-A2", eeg, fs, "uV")], plus=False)
    stages = ["W", "N1", "N2", "N3", "R"] * 6  # thirty 20-s epochs
    rows = "\n".join(f"{20 * i},20,{s}" for i, s in enumerate(stages))
    hyp = tmp_path / "rec-hypnogram.csv"
    hyp.write_text("onset,duration,stage\n" + rows + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, preds = _eval(
            [str(psg)],
            tiny_model,
            tmp_path / "out",
            "--hypnogram",
            str(hyp),
            "--peers",
            "--smooth",
            "hmm",
        )
    assert metrics["model"]["n"] == 30 and metrics["epoch_lengths"] == ["20"]
    assert [r["true"] for r in preds] == stages
    assert {r["duration"] for r in preds} == {"20"}
    assert metrics["peers"] == {}
    accuracy = np.mean([r["true"] == r["model"] for r in preds])
    assert metrics["model"]["accuracy"] == pytest.approx(accuracy)
    smoothed = np.mean([r["true"] == r["model_hmm"] for r in preds])
    assert metrics["smoothed"]["model+hmm"]["accuracy"] == pytest.approx(smoothed)
    report = (tmp_path / "out" / "metrics.md").read_text()
    assert report.startswith("# Recordings") and "model+hmm" in report


def test_eval_on_prerau_slice_with_yasa_beside(tiny_model, shared_data, tmp_path):
    out = tmp_path / "prerau"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, rows = _eval(
            [f"prerau:{shared_data / 'prerau'}"],
            tiny_model,
            out,
            "--epochs",
            "0:20",
            *(["--peers"] if _no_yasa() else []),
        )
    hyp = load_prerau(shared_data / "prerau").hypnogram
    assert metrics["model"]["n"] == 20 and len(rows) == 20
    assert [int(r["epoch"]) for r in rows] == list(range(20))
    assert [r["true"] for r in rows] == [STAGE_NAMES[s] for s in hyp.stages[:20]]
    assert sum(metrics["model"]["support"].values()) == 20
    probs = np.array([[float(r[f"p_{n}"]) for n in STAGE_NAMES] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert [r["model"] for r in rows] == [STAGE_NAMES[i] for i in probs.argmax(axis=1)]
    if _no_yasa():
        return
    peer = metrics["peers"]["yasa"]
    assert peer["n"] == 20
    assert peer["accuracy"] == pytest.approx(np.mean([r["yasa"] == r["true"] for r in rows]))
    # YASA saw the whole segment: its stages on the slice are those of the full comparison.
    rec = load_prerau(shared_data / "prerau")
    full = yasa_stage(rec.signals["EEG"], 100.0, hyp, np.arange(len(hyp)))
    assert [STAGE_NAMES[s] for s in full.stages[:20]] == [r["yasa"] for r in rows]
    accuracy = float(np.mean(full.stages == hyp.stages))
    assert 0.7 < accuracy < 0.97  # measured peer: 0.868 on the 167 epochs


def test_synthetic_stage_hmm_is_a_floored_markov_chain():
    hmm = synthetic_stage_hmm(nights=4, hours=8.0, floor=0.02)
    np.testing.assert_allclose(hmm.transition.sum(axis=1), 1.0)
    np.testing.assert_allclose(hmm.prior.sum(), 1.0)
    assert hmm.transition.min() >= 0.02 / 5 - 1e-12  # never-seen transitions stay possible
    assert np.all(np.diag(hmm.transition) > 0.5)  # stages persist from epoch to epoch
    assert hmm.prior[Stage.N2] == hmm.prior.max()
    with pytest.raises(DatasetError, match="floor"):
        synthetic_stage_hmm(nights=1, floor=1.0)


def test_viterbi_removes_a_blip_but_keeps_a_sustained_change():
    hmm = synthetic_stage_hmm(nights=4)
    n2, rem = np.eye(5)[Stage.N2] * 0.8 + 0.04, np.eye(5)[Stage.R] * 0.8 + 0.04
    weak_rem = np.array([0.05, 0.05, 0.35, 0.05, 0.5])
    blip = np.array([n2] * 10 + [weak_rem] + [n2] * 10)
    assert blip.argmax(axis=1)[10] == Stage.R
    assert viterbi_stages(blip, hmm).tolist() == [int(Stage.N2)] * 21
    change = np.array([n2] * 10 + [rem] * 10)
    assert viterbi_stages(change, hmm).tolist() == [int(Stage.N2)] * 10 + [int(Stage.R)] * 10
    assert viterbi_stages(np.zeros((0, 5)), hmm).size == 0
    # The class prior is divided out: a model trained with a uniform prior keeps rare W.
    wake = np.tile([0.3, 0.1, 0.4, 0.1, 0.1], (6, 1))
    assert set(viterbi_stages(wake, hmm, class_prior=np.full(5, 0.2)).tolist()) == {2}
    assert set(viterbi_stages(wake, hmm).tolist()) == {int(Stage.W)}


def test_yasa_refuses_low_rates_and_says_why():
    pytest.importorskip("yasa")
    hyp = Hypnogram.from_stages(["N2"] * 12)
    result = yasa_stage(np.zeros(12 * 30 * 64), 64.0, hyp, np.arange(12))
    assert result.stages is None and "80 Hz" in result.refused


def _no_yasa() -> bool:
    import importlib.util

    return importlib.util.find_spec("yasa") is None


def test_ensemble_averages_the_members_probabilities(tiny_model, tmp_path, write_edf):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from psgvlm.cli import main
    from vlm.render_setup import RenderConfig

    with tarfile.open(next(tiny_model["shards"].glob("*.tar"))) as tar:
        meta = json.loads(tar.extractfile(tar.getmembers()[0]).read())
    config = RenderConfig.from_sample_meta(meta, "label")
    members = []
    for i, scale in enumerate((0.0, 0.5)):
        base = AutoModelForImageTextToText.from_pretrained(tiny_model["base"])
        model = PeftModel.from_pretrained(base, tiny_model["adapter"])
        torch.manual_seed(i)
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if "modules_to_save" in name:  # the trained lm_head copy: make members differ
                    weight.add_(scale * torch.randn_like(weight))
        folder = tmp_path / f"member{i}" / "adapter"
        model.save_pretrained(folder)
        config.save(folder)
        members.append(folder)

    rng = np.random.default_rng(1)
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", rng.normal(0, 20, 6000), 100.0, "uV")])
    hyp = tmp_path / "rec-hypnogram.csv"
    hyp.write_text("onset,duration,stage\n" + "".join(f"{30 * i},30,N2\n" for i in range(2)))

    def probabilities(out, *adapters):
        args = ["eval", str(psg), "--hypnogram", str(hyp), "--model", str(tiny_model["base"])]
        args += ["--adapter", str(adapters[0])]
        if len(adapters) > 1:
            args += ["--ensemble", *map(str, adapters[1:])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main([*args, "--peers", "--device", "cpu", "--out", str(out)]) == 0
        with open(out / "predictions.csv") as handle:
            rows = list(csv.DictReader(handle))
        return np.array([[float(r[f"p_{n}"]) for n in STAGE_NAMES] for r in rows]), out

    first, _ = probabilities(tmp_path / "a", members[0])
    second, _ = probabilities(tmp_path / "b", members[1])
    assert np.abs(first - second).max() > 1e-3  # the members really differ
    both, out = probabilities(tmp_path / "ab", *members)
    np.testing.assert_allclose(both, (first + second) / 2, atol=2e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["models"]) == 1 and len(metrics["models"][0]["adapters"]) == 2


def test_ensemble_and_adapters_do_not_mix(tiny_model, capsys):
    from psgvlm.cli import main

    code = main(["eval", "x.edf", "--model", str(tiny_model["base"]), "--adapter",
                 str(tiny_model["adapter"]), "--adapters", "B", "--ensemble", "C", "--out",
                 "unused"])  # fmt: skip
    assert code != 0
    assert "--ensemble and --adapters do not mix" in capsys.readouterr().err


def test_ensemble_needs_members(tiny_model, capsys):
    from psgvlm.cli import main

    with pytest.raises(SystemExit):  # argparse refuses an empty member list
        main(["eval", "x.edf", "--model", str(tiny_model["base"]), "--adapter",
              str(tiny_model["adapter"]), "--ensemble", "--out", "unused"])  # fmt: skip
    assert "expected at least one argument" in capsys.readouterr().err


def test_ensemble_members_must_share_one_montage(tiny_model, tmp_path, capsys):
    import shutil

    from psgvlm.cli import main

    with tarfile.open(next(tiny_model["shards"].glob("*.tar"))) as tar:
        meta = json.loads(tar.extractfile(tar.getmembers()[0]).read())
    config = RenderConfig.from_sample_meta(meta, "label")
    wider = dataclasses.replace(
        config,
        channels=[*config.channels, {"role": "emg", "name": "chin"}],
        render=config.render | {"scales_uv": [*config.render["scales_uv"], 50.0], "labels": None},
    )
    members = []
    for name, setup in (("eeg", config), ("eeg-emg", wider)):
        folder = tmp_path / name / "adapter"
        shutil.copytree(tiny_model["adapter"], folder)
        setup.save(folder)
        members.append(str(folder))
    code = main(["eval", "x.edf", "--model", str(tiny_model["base"]), "--adapter", members[0],
                 "--ensemble", members[1], "--out", str(tmp_path / "out")])  # fmt: skip
    assert code != 0
    assert "members must share one setup" in capsys.readouterr().err


def test_eval_names_unreadable_recordings_and_keeps_going_when_asked(
    tiny_model, tmp_path, write_edf, shared_data, capsys
):
    from psgvlm.cli import main

    fake = tmp_path / "notes.edf"
    fake.write_text("not an EDF file\n")
    eeg_only = write_edf(tmp_path / "emg.edf", [("EMG chin", np.zeros(6000), 100.0, "uV")])
    args = ["eval", f"prerau:{shared_data / 'prerau'}", str(fake), str(eeg_only),
            "--model", str(tiny_model["base"]), "--adapter", str(tiny_model["adapter"]),
            "--render-config", str(tiny_model["shards"]), "--peers", "--epochs", "0:4"]  # fmt: skip
    # default: stop before any model loads, naming the file and the reader's error
    assert main([*args, "--out", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err
    assert str(fake) in err and "(and 1 more)" in err and "--keep-going" in err
    assert not (tmp_path / "stop").exists()
    # --keep-going: the readable one is evaluated, the others listed, the status is still 1
    out = tmp_path / "kept"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--keep-going", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["n"] == 4
    assert [f["recording"] for f in metrics["failed"]] == [str(fake), str(eeg_only)]
    assert "hypnogram" in metrics["failed"][1]["error"]
    assert f"failed: {fake}" in err and "Not evaluated:" in (out / "metrics.md").read_text()

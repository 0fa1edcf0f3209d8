"""``psgvlm stage``: a synthetic night staged by a tiny Qwen2-VL + LoRA adapter on CPU.

Structure, not accuracy (that is measured in the evaluation tests): every epoch gets
probabilities, the CSV, EDF+ annotations and summary agree with each other and with
independent computations, render parameters are found the ways the docs say.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine.errors import HypnogramError, ModelError, MontageError  # noqa: E402
from engine.io.hypnogram import Hypnogram, read_hypnogram  # noqa: E402
from engine.raster import RenderSpec  # noqa: E402
from engine.stages import STAGE_NAMES, Stage  # noqa: E402
from vlm.commands.stage import align_reference  # noqa: E402
from vlm.hypno import sleep_statistics  # noqa: E402
from vlm.render_setup import RenderConfig, find_render_setup  # noqa: E402
from vlm.runtime import Stager  # noqa: E402
from vlm.sources import open_source as _open_source  # noqa: E402


def open_source(psg, config, hypnogram=None, montage=None):
    """The epochs of ``psg`` drawn for ``config`` (:func:`vlm.sources.open_source`)."""
    return _open_source(psg, config, hypnogram, montage)[0]


# 24 epochs (12 minutes) with every stage, so statistics and agreement are not trivial.
STAGES = [0, 0, 0, 1, 2, 2, 2, 3, 3, 3, 3, 2, 2, 4, 4, 4, 2, 0, 2, 2, 3, 4, 4, 0]
CHANNELS = [
    {"role": "eeg", "name": "C4-M1"},
    {"role": "eog", "name": "E1-M2"},
    {"role": "emg", "name": "chin"},
]
IMAGE_SIZE = (112, 112)


# -- helpers shared with test_chat.py ------------------------------------------------------
def write_test_night(directory: Path) -> tuple[np.ndarray, Path, Path]:
    """A canonical synthetic night of :data:`STAGES` at 100 Hz: (stages, psg, hypnogram)."""
    from engine.synth import synth_night, write_night

    night = synth_night(
        11,
        stages=STAGES,
        fs=100.0,
        channels=("EEG C4-M1", "EEG F4-M1", "EOG E1-M2", "EOG E2-M1", "EMG chin"),
        randomize=False,
    )
    psg, hyp = write_night(night, directory)
    return night.stages, psg, hyp


def make_render_config() -> RenderConfig:
    """The render parameters the test adapters are 'trained' with."""
    spec = RenderSpec.for_roles(
        [c["role"] for c in CHANNELS],
        width=IMAGE_SIZE[0],
        height=IMAGE_SIZE[1],
        labels=tuple(c["name"] for c in CHANNELS),
    )
    return RenderConfig(channels=CHANNELS, render=spec.to_dict())


def build_adapter(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny Qwen2-VL (built once per session) + an untrained LoRA adapter with render.json."""
    import torch

    from vlm.model import LoraArgs, load_model_and_processor
    from vlm.tiny import resolve_tiny_model

    torch.manual_seed(0)
    base = Path(
        resolve_tiny_model(
            "tiny:qwen2vl", tmp_path_factory.getbasetemp() / "tiny-models", IMAGE_SIZE
        )
    )
    adapter = tmp_path_factory.mktemp("adapter")
    model, _, _ = load_model_and_processor(
        base, lora=LoraArgs(lora_r=4, lora_alpha=8, lora_dropout=0.0)
    )
    model.save_pretrained(adapter)
    make_render_config().save(adapter)
    return base, adapter


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_test_night(tmp_path_factory.mktemp("night"))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return build_adapter(tmp_path_factory)


@pytest.fixture(scope="module")
def staged(night, model_dirs, tmp_path_factory):
    """``psgvlm stage`` with --reference run once; (out dir, printed output)."""
    import contextlib

    from psgvlm.cli import main

    _, psg, hyp = night
    base, adapter = model_dirs
    out = tmp_path_factory.mktemp("staged")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["stage", str(psg), "--model", str(base), "--adapter", str(adapter), "--out",
             str(out), "--reference", str(hyp), "--batch-size", "8", "--no-progress",
             "--device", "cpu"]
        )  # fmt: skip
    assert code == 0
    return out, printed.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- tests -------------------------------------------------------------------------------
def test_csv_has_every_epoch_with_probabilities(staged, night):
    out, _ = staged
    rows = _read_csv(out / "hypnogram.csv")
    assert list(rows[0]) == ["onset", "duration", "stage", "p_W", "p_N1", "p_N2", "p_N3", "p_R"]
    assert len(rows) == len(STAGES)
    onsets = np.array([float(r["onset"]) for r in rows])
    np.testing.assert_allclose(onsets, 30.0 * np.arange(len(STAGES)))
    assert all(float(r["duration"]) == 30.0 for r in rows)
    probs = np.array([[float(r[f"p_{s}"]) for s in STAGE_NAMES] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [r["stage"] for r in rows] == [STAGE_NAMES[i] for i in probs.argmax(axis=1)]


def test_edf_annotations_read_back_equal_the_csv(staged, night):
    import pyedflib

    out, _ = staged
    _, psg, _ = night
    rows = _read_csv(out / "hypnogram.csv")
    reader = pyedflib.EdfReader(str(out / "hypnogram.edf"))
    try:
        onsets, durations, texts = reader.readAnnotations()
        start = reader.getStartdatetime()
    finally:
        reader.close()
    assert list(texts) == [f"Sleep stage {r['stage']}" for r in rows]
    np.testing.assert_allclose(onsets, [float(r["onset"]) for r in rows], atol=1e-4)
    np.testing.assert_allclose(durations, [float(r["duration"]) for r in rows], atol=1e-4)
    recording = pyedflib.EdfReader(str(psg))
    try:
        assert start == recording.getStartdatetime()
    finally:
        recording.close()
    hypnogram = read_hypnogram(out / "hypnogram.edf", signal_path=psg)
    assert [STAGE_NAMES[s] for s in hypnogram.stages] == [r["stage"] for r in rows]
    np.testing.assert_allclose(hypnogram.onsets, [float(r["onset"]) for r in rows], atol=1e-4)


def test_summary_statistics_and_agreement(staged, night):
    out, printed = staged
    truth = np.asarray(night[0])
    rows = _read_csv(out / "hypnogram.csv")
    predicted = np.array([STAGE_NAMES.index(r["stage"]) for r in rows])
    summary = json.loads((out / "summary.json").read_text())
    expected = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in sleep_statistics(predicted, 30.0).items()}  # fmt: skip
    assert summary["statistics"] == expected
    assert summary["epochs"] == len(STAGES)
    assert summary["reference_statistics"]["TST"] == sleep_statistics(truth)["TST"]
    agreement = summary["agreement"]
    assert agreement["epochs_compared"] == agreement["n"] == len(STAGES)
    assert agreement["accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
    confusion = np.array(agreement["confusion"])
    assert confusion.sum() == len(STAGES)
    assert confusion.sum(axis=1).tolist() == np.bincount(truth, minlength=5).tolist()
    assert set(agreement["per_class_f1"]) == set(STAGE_NAMES)
    assert f"agreement on {len(STAGES)} epochs" in printed
    print(f"\nstaged {len(rows)} epochs; accuracy vs synthetic truth {agreement['accuracy']:.3f}")


def test_plots_are_images(staged):
    from PIL import Image

    out, _ = staged
    for name, min_width in (("hypnogram.png", 800), ("confusion.png", 300)):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= min_width
            assert len(set(image.convert("L").getdata())) > 10  # not a blank page


def test_no_hypnogram_means_30s_grid_from_start(staged, night, model_dirs):
    out, _ = staged
    _, psg, _ = night
    base, adapter = model_dirs
    config = find_render_setup(adapter)
    source = open_source(psg, config)
    assert len(source) == len(STAGES)  # the night is exactly 24 x 30 s
    assert np.all(source.hypnogram.stages == int(Stage.UNK))
    np.testing.assert_allclose(source.hypnogram.onsets, 30.0 * np.arange(len(STAGES)))
    # the first epochs again: same images as on the reference's grid, same probabilities
    first = open_source(psg, config, Hypnogram.from_stages([int(Stage.UNK)] * 4))
    result = Stager(str(base), [adapter], config).stage(first, batch_size=4)
    rows = _read_csv(out / "hypnogram.csv")[:4]
    previous = np.array([[float(r[f"p_{s}"]) for s in STAGE_NAMES] for r in rows])
    np.testing.assert_allclose(result.probabilities, previous, atol=2e-5)
    assert np.all(result.grid_stages == int(Stage.UNK))


def test_briefly_trained_adapter_uses_its_shards_render_parameters(tmp_path, night, model_dirs):
    import webdataset as wds

    from engine.pipeline import RenderSettings, render_dataset
    from psgvlm.cli import main
    from vlm.train import train
    from vlm.train_args import parse_config

    _, psg, _ = night
    base, _ = model_dirs
    shards = tmp_path / "shards"
    settings = RenderSettings(
        montage="eeg=C4-M1,eog=E1-M2,emg=chin", width=IMAGE_SIZE[0], height=IMAGE_SIZE[1]
    )
    render_dataset([str(psg)], shards, settings, split=(1.0, 0.0, 0.0), progress=False)
    adapter = train(*parse_config([
        "--model", str(base), "--image_size", "112x112", "--dtype", "float32",
        "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
        "--modules_to_save", "lm_head", "--train_shards", str(shards / "train-*.tar"),
        "--eval_shards", "null", "--shuffle_buffer", "8", "--output_dir", str(tmp_path / "run"),
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--warmup_steps", "0",
        "--logging_steps", "1", "--save_steps", "100", "--learning_rate", "1e-3",
    ]))  # fmt: skip
    config = find_render_setup(adapter)
    assert config.montage == "eeg=C4-M1,eog=E1-M2,emg=chin"
    # the stager draws an epoch pixel for pixel as the training shard holds it
    sample = next(iter(wds.WebDataset(str(shards / "train-000000.tar"), shardshuffle=False)))
    meta = json.loads(sample["json"])
    from PIL import Image

    shard_image = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"))
    source = open_source(psg, config, read_hypnogram(night[2], signal_path=psg))
    stager = Stager(str(base), [adapter], config)
    drawn = stager.images(stager.pixels(source, [meta["epoch"]]))[0]
    np.testing.assert_array_equal(np.asarray(drawn), shard_image)

    out = tmp_path / "staged"
    assert main(["stage", str(psg), "--model", str(base), "--adapter", str(adapter), "--out",
                 str(out), "--batch-size", "12", "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    rows = _read_csv(out / "hypnogram.csv")
    assert len(rows) == len(STAGES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["render_config"] == config.source
    print(f"\ntrained-adapter render parameters from {config.source}")


def test_render_config_sources(tmp_path, model_dirs):
    import webdataset as wds
    import yaml

    _, adapter = model_dirs
    config = find_render_setup(adapter)
    assert config == make_render_config() and config.source.endswith("render.json")
    assert config.montage == "eeg=C4-M1,eog=E1-M2,emg=chin"

    # a training output without render.json: config.yaml -> train_shards -> sample metadata
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    shards = tmp_path / "shards"
    shards.mkdir()
    meta = {"channels": [c | {"label": c["name"], "scale_uv": 1.0} for c in CHANNELS],
            "render": make_render_config().render | {"format": "jpg", "quality": 85},
            "preprocessing": {"target_fs": 128.0}}  # fmt: skip
    with wds.TarWriter(str(shards / "train-000000.tar"), mtime=0, encoder=False) as writer:
        writer.write({"__key__": "x_y_00000", "npy": _npy(np.zeros((4, 4), np.uint8)),
                      "cls": b"2", "json": json.dumps(meta).encode()})  # fmt: skip
    settings = {"train_shards": str(shards / "train-*.tar"), "answer_mode": "evidence"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    found = find_render_setup(run_dir / "adapter")
    assert found.answer_mode == "evidence" and found.image_format == "jpg"
    assert found.quality == 85 and found.preprocessing_params().target_fs == 128.0
    assert found.spec() == make_render_config().spec() and "config.yaml" in found.source
    assert find_render_setup(None, shards).image_format == "jpg"

    with pytest.raises(ModelError, match="cannot tell how its training images"):
        find_render_setup(tmp_path / "nowhere" / "adapter")
    (run_dir / "adapter" / "render.json").write_text(json.dumps({"channels": CHANNELS}))
    with pytest.raises(ModelError, match="render required"):
        find_render_setup(run_dir / "adapter")
    with pytest.raises(ModelError, match="channel scales"):
        RenderConfig(channels=CHANNELS[:2], render=make_render_config().render)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_montage_must_keep_the_training_rows(night):
    _, psg, _ = night
    with pytest.raises(MontageError, match="trained on images with rows"):
        open_source(psg, make_render_config(), montage="eeg=C4-M1,emg=chin")
    # other derivations with the same roles are fine
    source = open_source(psg, make_render_config(), montage="eeg=C3-M2,eog=E2-M1,emg=chin")
    assert [c.label for c in source.channels] == ["EEG C4-M1", "EOG E2-M1", "EMG chin"]
    # the strips are captioned with what is drawn, not with the training montage's slots
    stager = Stager("unused", [None], make_render_config())
    assert stager.setup.spec().labels == ("C4-M1", "E1-M2", "chin")
    assert stager.spec(source).labels == ("C4-M1", "E2-M1", "EMG chin")


def test_reference_alignment():
    onsets = 30.0 * np.arange(6)
    reference = Hypnogram.from_stages([0, 1, 2, 2], start=60.0)
    aligned = align_reference(reference, onsets, 30.0)
    assert aligned.tolist() == [-1, -1, 0, 1, 2, 2]
    with pytest.raises(HypnogramError, match="none of its scored epochs"):
        align_reference(Hypnogram.from_stages([0, 1], start=10.0), onsets, 30.0)
    with pytest.raises(HypnogramError, match="20-s epochs"):
        align_reference(Hypnogram.from_stages([0, 1], epoch_length=20.0), onsets, 30.0)


def perturbed_adapter(base: Path, adapter: Path, out: Path, seed: int = 3):
    """A second ensemble member: ``adapter`` with its own LoRA B weights, saved to ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:  # zero at initialisation: give this member its own weights
                weight.add_(0.5 * torch.randn_like(weight))
    model.save_pretrained(out)
    make_render_config().save(out)
    return model


def test_ensemble_stages_with_the_mean_of_its_members(tmp_path, night, model_dirs):
    from psgvlm.cli import main

    _, psg, hyp = night
    base, adapter = model_dirs
    other = tmp_path / "other"
    model = perturbed_adapter(base, adapter, other)

    def probabilities(out: Path, *extra: str) -> np.ndarray:
        code = main(["stage", str(psg), "--model", str(base), "--adapter", *extra, "--out",
                     str(out), "--hypnogram", str(hyp), "--no-progress", "--device", "cpu"])  # fmt: skip
        assert code == 0
        rows = _read_csv(out / "hypnogram.csv")
        return np.array([[float(r[f"p_{s}"]) for s in STAGE_NAMES] for r in rows])

    first = probabilities(tmp_path / "a", str(adapter))
    second = probabilities(tmp_path / "b", str(other))
    assert np.abs(first - second).max() > 1e-3
    both = probabilities(tmp_path / "ab", str(adapter), "--ensemble", str(other))
    np.testing.assert_allclose(both, (first + second) / 2, atol=2e-4)
    summary = json.loads((tmp_path / "ab" / "summary.json").read_text())
    assert summary["ensemble"] == [str(adapter), str(other)]

    # A member drawn differently is refused, naming it.
    odd = tmp_path / "odd"
    model.save_pretrained(odd)
    dataclasses.replace(make_render_config(), image_format="jpg").save(odd)
    assert main(["stage", str(psg), "--model", str(base), "--adapter", str(adapter),
                 "--ensemble", str(odd), "--out", str(tmp_path / "x"), "--device", "cpu"]) != 0  # fmt: skip

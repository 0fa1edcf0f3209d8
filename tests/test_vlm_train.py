"""Shards → chats → LoRA training: collator masking, streaming, configs, training, resume.

Collator and streaming tests read the hand-drawn fixture shards of ``vlm_fixtures``; the
accuracy, reload and resume tests train on synthetic nights rendered by the real pipeline
(``engine.pipeline.render_dataset``), split by subject.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import PSGError, ShardError
from engine.stages import STAGE_NAMES

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from vlm import data as vdata  # noqa: E402
from vlm.model import LoraArgs, load_model_and_processor  # noqa: E402
from vlm.render_setup import RenderConfig, find_render_setup  # noqa: E402
from vlm.tiny import build_tiny_model, parse_image_size  # noqa: E402
from vlm.train import latest_checkpoint, parse_config, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vlm_fixtures import write_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "vlm" / "configs"
#: Synthetic training data: montage, image size, nights of this length, steps to train.
SYNTH_MONTAGE = "eeg=C4-M1,eog=E1-M2,emg=chin"
SYNTH_SIZE = "224x112"
SYNTH_NIGHTS, SYNTH_HOURS = 6, 1.5
SYNTH_STEPS = 150


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(out)
    return out


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory):
    """Synthetic nights through ``render_dataset``: 4 subjects train, 2 held out for test."""
    from engine.pipeline import RenderSettings, render_dataset

    out = tmp_path_factory.mktemp("synthetic")
    width, height = parse_image_size(SYNTH_SIZE)
    render_dataset(
        [],
        out,
        RenderSettings(montage=SYNTH_MONTAGE, width=width, height=height),
        synthetic=SYNTH_NIGHTS,
        synthetic_hours=SYNTH_HOURS,
        split=(2 / 3, 0.0, 1 / 3),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Tiny-model cache shared by the tests (``tiny_cache_dir``)."""
    out = tmp_path_factory.mktemp("tiny")
    for family in ("qwen2vl", "llava"):
        build_tiny_model(family, out / f"tiny-{family}-224x224")
    return out


def _args(shards: Path, cache: Path, out: Path, *extra: str, config: str = "tiny_cpu.yaml"):
    return parse_config(
        [
            "--config",
            str(CONFIGS / config),
            "--train_shards",
            str(shards / "train-*.tar"),
            "--eval_shards",
            "null",
            "--tiny_cache_dir",
            str(cache),
            "--output_dir",
            str(out),
            *extra,
        ]
    )


@pytest.mark.parametrize("family,answer", [("qwen2vl", "N2<|im_end|>\n"), ("llava", " N2</s>")])
def test_collator_unmasks_only_the_answer(shards, cache, family, answer):
    _, processor, _ = load_model_and_processor(cache / f"tiny-{family}-224x224")
    samples = vdata.read_samples(vdata.expand_shards(shards, "test"), limit=3)
    samples[0]["cls"] = 2
    batch = vdata.ChatCollator(processor)(samples)
    tok = processor.tokenizer
    labels, mask = batch["labels"], batch["answer_mask"]
    assert (labels[~mask] == -100).all() and (labels[mask] != -100).all()
    assert tok.decode(labels[0][mask[0]]) == answer
    for row, sample in enumerate(samples):
        assert (
            tok.decode(batch["input_ids"][row][mask[row]])
            .strip()
            .startswith(STAGE_NAMES[sample["cls"]])
        )
    # The prompt (system, image tokens, question, generation prompt) is all masked.
    image_id = processor.image_token_id
    assert (batch["input_ids"][mask] != image_id).all()
    if family == "qwen2vl":
        assert "mm_token_type_ids" in batch and "image_grid_thw" in batch


def test_prompt_must_be_a_token_prefix(cache, shards):
    _, processor, _ = load_model_and_processor(cache / "tiny-llava-224x224")
    image = vdata.read_samples(vdata.expand_shards(shards, "test"), limit=1)[0]["image"]
    # A trailing space after "ASSISTANT:" merges into " N" once the answer follows.
    with pytest.raises(ShardError, match="prefix"):
        vdata.encode_chats(processor, [image], ["USER: <image>\nStage? ASSISTANT: "], ["N2</s>"])


def test_streams_skip_unknown_and_cover_each_sample_once(tmp_path):
    written = write_shards(
        tmp_path,
        subjects={"val": ["a", "b"]},
        epochs_per_subject=20,
        per_shard=15,
        image_field="npy",
    )
    urls = vdata.expand_shards(tmp_path, "val")
    assert urls == [str(p) for p in written["val"]]
    samples = vdata.read_samples(urls)
    assert len(samples) == 38  # 40 epochs, one unknown per subject
    assert len({s["key"] for s in samples}) == 38
    assert all(s["cls"] >= 0 and s["image"].mode == "RGB" for s in samples)
    counts = vdata.count_classes(urls)
    assert counts.sum() == 38
    assert counts.tolist() == np.bincount([s["cls"] for s in samples], minlength=5).tolist()
    stream = iter(vdata.make_dataset(urls, training=True, seed=3, shuffle_buffer=10))
    keys = [next(stream)["key"] for _ in range(100)]  # resampled: more than one pass
    assert len(set(keys)) > 20
    again = iter(vdata.make_dataset(urls, training=True, seed=3, shuffle_buffer=10))
    assert [next(again)["key"] for _ in range(100)] == keys  # deterministic per seed


def test_expand_shards_errors(tmp_path):
    with pytest.raises(ShardError, match="no shards"):
        vdata.expand_shards(str(tmp_path / "train-*.tar"))
    with pytest.raises(ShardError, match="split"):
        vdata.expand_shards(tmp_path)


def test_answers_and_class_weights(monkeypatch):
    meta = {"recording": "r1", "epoch": 3, "channels": [{"role": "eeg", "name": "C4-M1"}]}
    assert vdata.build_answer(2, meta) == "N2"
    assert "EEG C4-M1" in vdata.build_question(meta)
    with pytest.raises(ShardError, match="features"):
        vdata.build_answer(2, meta, "evidence")
    with pytest.raises(ShardError):
        vdata.build_answer(5, meta)
    monkeypatch.setattr(
        vdata,
        "_evidence_sentence",
        lambda: lambda features, stage: f"sigma {features['sigma']} for {stage}",
    )
    assert vdata.build_answer(2, {**meta, "features": {"sigma": 0.4}}, "evidence") == (
        "N2. sigma 0.4 for N2"
    )
    weights = vdata.balanced_class_weights(np.array([10, 0, 30, 10, 50]))
    assert weights[1] == 0
    assert np.isclose((weights * [10, 0, 30, 10, 50]).sum(), 100)
    assert weights[0] == pytest.approx(100 / (4 * 10))


def test_config_yaml_and_overrides(tmp_path):
    for config in (
        "tiny_cpu.yaml",
        "tiny_llava_cpu.yaml",
        "qwen2vl_lora.yaml",
        "qwen2vl_qlora.yaml",
        "llava_lora.yaml",
    ):
        model, lora, data, tr = parse_config(["--config", str(CONFIGS / config)])
        assert model.model and tr.max_steps > 0
    model, lora, data, tr = parse_config(
        [
            "--config",
            str(CONFIGS / "qwen2vl_qlora.yaml"),
            "--max_steps",
            "7",
            "--lora_vision",
            "true",
            "--modules_to_save",
            "lm_head",
            "--quantization",
            "null",
        ]
    )
    assert (
        model.model,
        model.quantization,
        tr.max_steps,
        lora.lora_vision,
        lora.modules_to_save,
    ) == ("Qwen/Qwen2-VL-2B-Instruct", None, 7, True, ["lm_head"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny:qwen2vl\nlearning_rat: 0.1\n")
    with pytest.raises(PSGError, match="learning_rat"):
        parse_config(["--config", str(bad)])
    with pytest.raises(PSGError, match="class_weights"):
        parse_config(["--class_weights", "sometimes"])


@pytest.mark.parametrize("family,vision_word", [("qwen2vl", "visual"), ("llava", "vision_tower")])
def test_default_lora_targets_stay_in_the_language_model(cache, family, vision_word):
    model, _, _ = load_model_and_processor(cache / f"tiny-{family}-224x224", lora=LoraArgs())
    adapted = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    assert adapted and all("language_model" in n for n in adapted)
    assert len(adapted) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    model, _, _ = load_model_and_processor(
        cache / f"tiny-{family}-224x224", lora=LoraArgs(lora_vision=True)
    )
    names = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    assert any(vision_word in n for n in names)


@pytest.fixture(scope="module")
def trained(synthetic_shards, cache, tmp_path_factory):
    """The tiny Qwen2-VL fine-tuned on the synthetic train split: (output_dir, adapter)."""
    out = tmp_path_factory.mktemp("run")
    final = train(
        *_synthetic_args(
            synthetic_shards,
            cache,
            out,
            "--max_steps",
            str(SYNTH_STEPS),
            "--save_steps",
            "50",
            "--logging_steps",
            "25",
        )
    )
    return out, final


def _synthetic_args(shards: Path, cache: Path, out: Path, *extra: str):
    return _args(shards, cache, out, "--image_size", SYNTH_SIZE, *extra)


def _base_model(cache: Path) -> Path:
    return cache / f"tiny-qwen2vl-{SYNTH_SIZE}"


def _subjects(shards: Path, split: str) -> set[str]:
    import webdataset as wds

    samples = wds.WebDataset(vdata.expand_shards(shards, split), shardshuffle=False)
    return {json.loads(sample["json"])["subject"] for sample in samples}


def _held_out(shards: Path, every: int = 1) -> list[dict]:
    return vdata.read_samples(vdata.expand_shards(shards, "test"))[::every]


@pytest.mark.slow
def test_training_learns_held_out_subjects(trained, synthetic_shards, cache):
    from vlm.evaluate import evaluate_samples

    out, final = trained
    assert (final / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(25, SYNTH_STEPS + 1, 25))
    assert log[-1]["loss"] < log[0]["loss"]
    train_subjects, test_subjects = (_subjects(synthetic_shards, s) for s in ("train", "test"))
    assert len(train_subjects) == 4 and len(test_subjects) == 2
    assert not train_subjects & test_subjects
    samples = _held_out(synthetic_shards)
    model, processor, _ = load_model_and_processor(_base_model(cache), adapter=final)
    y_true, probs = evaluate_samples(model, processor, samples)
    accuracy = float((probs.argmax(1) == y_true).mean())
    print(
        f"held-out accuracy after {SYNTH_STEPS} steps: {accuracy:.3f} (n={len(y_true)}, "
        f"true {np.bincount(y_true, minlength=5).tolist()}, "
        f"predicted {np.bincount(probs.argmax(1), minlength=5).tolist()})"
    )
    assert accuracy >= 0.8


@pytest.mark.slow
def test_adapters_carry_the_render_parameters(trained, synthetic_shards):
    out, final = trained
    expected = RenderConfig.from_shards(str(synthetic_shards / "train-*.tar"))
    width, height = parse_image_size(SYNTH_SIZE)
    assert expected.montage == SYNTH_MONTAGE
    assert (expected.render["width"], expected.render["height"]) == (width, height)
    adapters = [final, *sorted(out.glob("checkpoint-*/adapter"))]
    assert len(adapters) == 1 + SYNTH_STEPS // 50
    for adapter in adapters:
        config = find_render_setup(adapter)
        assert config.source == str(adapter / "render.json")
        assert config == expected


_RELOAD = """
import sys, numpy as np
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor
from vlm import data
from vlm.evaluate import evaluate_samples
base, adapter, shards, every, out = sys.argv[1:]
processor = AutoProcessor.from_pretrained(adapter)
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter)
samples = data.read_samples(data.expand_shards(shards, "test"))[:: int(every)]
np.save(out, evaluate_samples(model.eval(), processor, samples)[1])
"""


@pytest.mark.slow
def test_adapter_reloads_in_a_fresh_process(trained, synthetic_shards, cache, tmp_path):
    from vlm.evaluate import evaluate_samples

    _, final = trained
    base = _base_model(cache)
    out = tmp_path / "probs.npy"
    every = 30  # 12 epochs spread over both held-out nights
    subprocess.run(
        [sys.executable, "-c", _RELOAD, str(base), str(final), str(synthetic_shards), str(every),
         str(out)],
        check=True,
        cwd=REPO,
    )  # fmt: skip
    model, processor, _ = load_model_and_processor(base, adapter=final)
    samples = _held_out(synthetic_shards, every)
    assert len({s["cls"] for s in samples}) > 2
    _, probs = evaluate_samples(model, processor, samples)
    fresh = np.load(out)
    assert (fresh.argmax(1) == probs.argmax(1)).all()
    np.testing.assert_allclose(fresh, probs, atol=1e-4)


@pytest.mark.slow
def test_resume_continues_at_the_saved_step(trained, synthetic_shards, cache, tmp_path):
    from safetensors.torch import load_file

    out, _ = trained
    shards = synthetic_shards
    assert latest_checkpoint(out).name == f"checkpoint-{SYNTH_STEPS:06d}"
    ckpt = out / "checkpoint-000100"
    # Resuming at max_steps == saved step trains nothing: the adapter is the restored one.
    restored = train(
        *_synthetic_args(
            shards, cache, tmp_path / "same", "--resume", str(ckpt), "--max_steps", "100"
        )
    )
    saved = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    again = load_file(restored / "adapter_model.safetensors")
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    run = tmp_path / "more"
    train(
        *_synthetic_args(
            shards, cache, run, "--resume", str(ckpt), "--max_steps", "103", "--logging_steps", "1"
        )
    )
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [101, 102, 103]
    state = json.loads((run / "checkpoint-000103" / "trainer_state.json").read_text())
    assert state["step"] == 103 and state["samples_seen"] == 103 * 8
    # auto picks the latest checkpoint of output_dir
    train(*_synthetic_args(shards, cache, run, "--resume", "auto", "--max_steps", "104"))
    assert json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())["step"] == 104


@pytest.mark.slow
def test_qlora_trains_on_cpu(shards, cache, tmp_path):
    import bitsandbytes as bnb

    model, _, _ = load_model_and_processor(
        cache / "tiny-qwen2vl-224x224",
        quantization="4bit",
        lora=LoraArgs(modules_to_save=["lm_head"]),
    )
    kinds = {n: type(m) for n, m in model.named_modules()}
    assert any(k is bnb.nn.Linear4bit and "language_model" in n for n, k in kinds.items())
    assert not any(k is bnb.nn.Linear4bit and "visual" in n for n, k in kinds.items())
    final = train(
        *_args(
            shards,
            cache,
            tmp_path,
            "--quantization",
            "4bit",
            "--max_steps",
            "3",
            "--logging_steps",
            "1",
        )
    )
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    assert (final / "adapter_model.safetensors").is_file()
    # The hand-drawn fixture shards hold no render parameters: no render.json, a warning.
    assert not (final / "render.json").exists()


@pytest.mark.slow
def test_psgvlm_train_runs_tiny_llava(shards, cache, tmp_path):
    from psgvlm.cli import main

    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIGS / "tiny_llava_cpu.yaml"),
                "--train_shards",
                str(shards / "train-*.tar"),
                "--eval_shards",
                "null",
                "--tiny_cache_dir",
                str(cache),
                "--output_dir",
                str(tmp_path),
                "--max_steps",
                "2",
                "--logging_steps",
                "1",
                "--class_weights",
                "auto",
            ]
        )
        == 0
    )
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(shards, cache, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "accelerate_multi_cpu.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        str(REPO / "vlm" / "train.py"),
        "--config",
        str(CONFIGS / "tiny_cpu.yaml"),
        "--train_shards",
        str(shards / "train-*.tar"),
        "--eval_shards",
        "null",
        "--tiny_cache_dir",
        str(cache),
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "3",
    ]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=240)
    state = tmp_path / "checkpoint-000003"
    assert (state / "state" / "random_states_1.pkl").is_file()  # a second rank ran
    assert json.loads((state / "trainer_state.json").read_text())["samples_seen"] == 3 * 8 * 2

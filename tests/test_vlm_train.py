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
from vlm.scoring import evaluate_samples  # noqa: E402
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
#: Evaluation during training: every EVAL_STEPS on the first EVAL_LIMIT held-out epochs.
EVAL_STEPS, EVAL_LIMIT = 75, 60


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


def _corrupt_member(shard: Path, index: int, field: str = "png") -> str:
    """Replace the ``field`` of the ``index``-th sample of ``shard`` by garbage; its key."""
    import io
    import tarfile

    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    images = [m for m, _ in members if m.name.endswith("." + field)]
    target = images[index].name
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == target:
                data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return target.rsplit(".", 1)[0]


def test_training_stream_skips_a_corrupt_sample(tmp_path, caplog):
    written = write_shards(tmp_path, subjects={"train": ["a"]}, epochs_per_subject=12)
    urls = [str(u) for u in written["train"]]
    scored = {s["key"] for s in vdata.read_samples(urls)}
    key = _corrupt_member(Path(urls[0]), 5)
    assert key in scored
    stream = iter(vdata.make_dataset(urls, training=True, seed=1, shuffle_buffer=4))
    with caplog.at_level("WARNING", logger="vlm.data"):
        keys = [next(stream)["key"] for _ in range(4 * len(scored))]  # four passes
    assert set(keys) == scored - {key}
    skipped = [r.getMessage() for r in caplog.records if "corrupt sample" in r.getMessage()]
    assert skipped and key in skipped[0] and "(1 so far)" in skipped[0]
    assert f"({len(skipped)} so far)" in skipped[-1]
    # an evaluation stream stops there, naming the sample
    with pytest.raises(ShardError, match=f"{key}.*cannot decode"):
        vdata.read_samples(urls)


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
    configs = [p for p in sorted(CONFIGS.glob("*.yaml")) if not p.name.startswith("accelerate_")]
    assert {"tiny_cpu.yaml", "qwen2vl_qlora.yaml", "default_eeg_only.yaml"} <= {
        p.name for p in configs
    }
    for config in configs:  # every training config committed, experiments' included
        model, lora, data, tr = parse_config(["--config", str(config)])
        assert model.model and tr.max_steps > 0, config.name
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
    with pytest.raises(PSGError, match="'learning_rat'; did you mean learning_rate"):
        parse_config(["--config", str(bad)])
    bad.write_text("per_device_batch_size: 4\n")
    with pytest.raises(PSGError, match="now per_device_train_batch_size"):
        parse_config(["--config", str(bad)])
    with pytest.raises(PSGError, match="class_weights"):
        parse_config(["--class_weights", "sometimes"])
    with pytest.raises(PSGError, match=r"--max_step 5 \(did you mean --max_steps\?\)"):
        parse_config(["--max_step", "5"])  # no abbreviations
    with pytest.raises(PSGError, match="--resume .* or --overwrite"):
        parse_config(["--resume", "auto", "--overwrite"])
    # YAML values are typed like options ("1e-4" is a string to YAML), the CLI wins
    good = tmp_path / "good.yaml"
    good.write_text("learning_rate: 1e-4\nmax_steps: 9\neval_shards: null\nreport_to: none\n")
    _, _, data, tr = parse_config(["--config", str(good), "--max_steps", "11"])
    assert (tr.learning_rate, tr.max_steps, data.eval_shards) == (1e-4, 11, None)
    assert parse_config(["--eval_shards", "null"])[2].eval_shards is None


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
            "--eval_shards",
            str(synthetic_shards / "test-*.tar"),
            "--eval_strategy",
            "steps",
            "--eval_steps",
            str(EVAL_STEPS),
            "--eval_limit",
            str(EVAL_LIMIT),
        )
    )
    return out, final


def _log(out: Path, key: str = "loss") -> list[dict]:
    """The rows of ``out/log.jsonl`` that hold ``key``."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if key in r]


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
    out, final = trained
    assert (final / "adapter_model.safetensors").is_file()
    log = _log(out)
    assert [r["step"] for r in log] == list(range(25, SYNTH_STEPS + 1, 25))
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(r["samples_per_s"] > 0 for r in log)
    # label-scoring evaluation during training, on the held-out subjects
    evals = _log(out, "eval_accuracy")
    assert [(r["step"], r["eval_samples"]) for r in evals] == [
        (step, EVAL_LIMIT) for step in range(EVAL_STEPS, SYNTH_STEPS + 1, EVAL_STEPS)
    ]
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
    assert accuracy >= 0.9
    first = _held_out(synthetic_shards)[:EVAL_LIMIT]
    y_first, p_first = evaluate_samples(model, processor, first)
    assert evals[-1]["eval_accuracy"] == pytest.approx(float((p_first.argmax(1) == y_first).mean()))


@pytest.mark.slow
def test_adapters_carry_the_render_parameters(trained, synthetic_shards):
    out, final = trained
    expected = RenderConfig.from_shards(str(synthetic_shards / "train-*.tar"))
    width, height = parse_image_size(SYNTH_SIZE)
    assert expected.montage == SYNTH_MONTAGE
    assert (expected.render["width"], expected.render["height"]) == (width, height)
    adapters = [final, *sorted(out.glob("checkpoint-*"))]
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
from vlm.scoring import evaluate_samples
base, adapter, shards, every, out = sys.argv[1:]
processor = AutoProcessor.from_pretrained(adapter)
model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter)
samples = data.read_samples(data.expand_shards(shards, "test"))[:: int(every)]
np.save(out, evaluate_samples(model.eval(), processor, samples)[1])
"""


@pytest.mark.slow
def test_adapter_reloads_in_a_fresh_process(trained, synthetic_shards, cache, tmp_path):
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
    assert latest_checkpoint(out).name == f"checkpoint-{SYNTH_STEPS}"
    ckpt = out / "checkpoint-100"
    # Resuming at max_steps == saved step trains nothing: the adapter is the restored one.
    restored = train(
        *_synthetic_args(
            shards, cache, tmp_path / "same", "--resume", str(ckpt), "--max_steps", "100"
        )
    )
    saved = load_file(ckpt / "adapter_model.safetensors")
    again = load_file(restored / "adapter_model.safetensors")
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    run = tmp_path / "more"
    train(
        *_synthetic_args(
            shards, cache, run, "--resume", str(ckpt), "--max_steps", "103", "--logging_steps", "1"
        )
    )
    assert [r["step"] for r in _log(run)] == [101, 102, 103]
    state = json.loads((run / "checkpoint-103" / "trainer_state.json").read_text())
    assert state["global_step"] == 103
    # auto picks the latest checkpoint of output_dir
    train(*_synthetic_args(shards, cache, run, "--resume", "auto", "--max_steps", "104"))
    assert latest_checkpoint(run).name == "checkpoint-104"
    state = json.loads((run / "checkpoint-104" / "trainer_state.json").read_text())
    assert state["global_step"] == 104


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
    log = _log(tmp_path)
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
    assert [r["step"] for r in _log(tmp_path)] == [1, 2]


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
        "--tiny_cache_dir",
        str(cache),
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "3",
    ]
    done = subprocess.run(cmd, check=True, cwd=REPO, timeout=240, capture_output=True, text=True)
    # eval_shards: auto and no val split beside the training shards: it says so, once
    assert done.stderr.count(f"eval_shards auto: no val-*.tar in {shards}, so no evaluation") == 1
    state = tmp_path / "checkpoint-3"
    assert (state / "rng_state_1.pth").is_file()  # a second rank ran
    assert json.loads((state / "trainer_state.json").read_text())["global_step"] == 3
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_strong_noise_lowers_the_trained_models_accuracy(trained, cache, tmp_path):
    """The robustness runs measure something: a model that stages a new synthetic night
    well loses that when its EEG, EOG and EMG are buried in noise (SNR -20 dB)."""
    from engine.perturb import parse_perturb_spec
    from engine.synth import synth_night, write_night
    from vlm.robustness import evaluate_perturbed
    from vlm.runtime import Stager
    from vlm.sources import open_recording

    _, final = trained
    psg, hyp = write_night(synth_night(4242, hours=1.0), tmp_path)
    recording = open_recording(psg, hyp)
    stager = Stager.from_adapter(str(_base_model(cache)), final)
    positions = [np.arange(0, len(recording.hypnogram), 3)]
    clean, noisy = evaluate_perturbed([recording], stager, parse_perturb_spec("noise:snr=-20"),
                                      positions, peers=())  # fmt: skip
    print(f"\nnew night: accuracy {clean['model']['accuracy']:.3f} clean, "
          f"{noisy['model']['accuracy']:.3f} at SNR -20 dB")  # fmt: skip
    assert clean["model"]["accuracy"] >= 0.6
    assert noisy["model"]["accuracy"] <= clean["model"]["accuracy"] - 0.2

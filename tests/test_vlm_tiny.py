"""Tiny offline VLMs: built with the real architectures, reloaded through the Auto classes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.errors import ModelError
from engine.stages import STAGE_NAMES

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vlm.tiny import build_tiny_model, parse_image_size, resolve_tiny_model  # noqa: E402

EXPECTED = {
    "qwen2vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "<|im_end|>"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "</s>"),
}


@pytest.fixture(scope="module", params=["qwen2vl", "llava"])
def tiny(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, build_tiny_model(request.param, out)


def test_reloads_through_auto_classes(tiny):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, path = tiny
    model_cls, processor_cls, eos = EXPECTED[family]
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(model).__name__ == model_cls
    assert type(processor).__name__ == processor_cls
    tok = processor.tokenizer
    assert tok.padding_side == "left"
    assert tok.eos_token == eos
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.config.image_token_id == tok.convert_tokens_to_ids(processor.image_token)
    assert tok.unk_token_id not in tok(" ".join(STAGE_NAMES))["input_ids"]
    assert tok.decode(tok("N2 W R", add_special_tokens=False)["input_ids"]) == "N2 W R"
    image = Image.fromarray(np.zeros((224, 224, 3), dtype=np.uint8))
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Stage?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size >= len(tok)
    assert torch.isfinite(logits).all()


def test_cli_pins_qwen_image_size(tmp_path):
    from transformers import AutoProcessor

    from psgvlm.cli import main

    out = tmp_path / "q448"
    assert (
        main(
            [
                "tiny-model",
                "--family",
                "qwen2vl",
                "--out",
                str(out),
                "--image-size",
                "448x224",
                "--hidden-size",
                "64",
            ]
        )
        == 0
    )
    processor = AutoProcessor.from_pretrained(out)
    image = Image.fromarray(np.zeros((224, 448, 3), dtype=np.uint8))
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 224 // 14, 448 // 14]]
    # Larger renders of the same aspect are resized to the pinned size (min == max pixels).
    other = Image.fromarray(np.zeros((336, 672, 3), dtype=np.uint8))
    grid = processor.image_processor(images=[other], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 16, 32]]


def test_resolve_tiny_model_builds_once(tmp_path):
    path = resolve_tiny_model("tiny:llava", tmp_path, (224, 224))
    assert (tmp_path / "tiny-llava-224x224" / "config.json").is_file()
    mtime = (tmp_path / "tiny-llava-224x224" / "config.json").stat().st_mtime_ns
    assert resolve_tiny_model("tiny:llava", tmp_path, (224, 224)) == path
    assert (tmp_path / "tiny-llava-224x224" / "config.json").stat().st_mtime_ns == mtime
    assert resolve_tiny_model("Qwen/Qwen2-VL-2B-Instruct", tmp_path, (224, 224)) == (
        "Qwen/Qwen2-VL-2B-Instruct"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda p: parse_image_size("448"),
        lambda p: parse_image_size("0x224"),
        lambda p: build_tiny_model("gpt2", p),
        lambda p: build_tiny_model("qwen2vl", p, image_size=(450, 224)),
        lambda p: build_tiny_model("qwen2vl", p, hidden_size=100),
    ],
    ids=["no-x", "zero", "family", "qwen-not-28", "hidden"],
)
def test_bad_arguments(call, tmp_path):
    with pytest.raises(ModelError):
        call(tmp_path / "m")


def test_parse_image_size():
    assert parse_image_size("448x224") == (448, 224)

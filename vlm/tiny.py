"""Tiny, randomly initialised vision-language models of the real architectures.

``build_tiny_model("qwen2vl", "tiny-qwen")`` writes a Qwen2-VL (or a LLaVA) with a small
config, a byte-level BPE tokenizer trained locally on the prompt/answer vocabulary, the
family's chat template and its real image processor. The directory loads through
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` exactly like a hub id
such as ``Qwen/Qwen2-VL-2B-Instruct``, so every code path runs offline on a CPU.

Command line::

    psgvlm tiny-model --family qwen2vl --out models/tiny-qwen2vl --image-size 448x224
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import ModelError, RenderError
from engine.raster.layout import parse_size
from engine.stages import STAGE_NAMES

__all__ = [
    "FAMILIES",
    "TINY_PREFIX",
    "parse_image_size",
    "build_tiny_model",
    "resolve_tiny_model",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: Model families with a tiny builder.
FAMILIES: tuple[str, ...] = ("qwen2vl", "llava")
#: ``model: tiny:qwen2vl`` in a config means "build (once) and use a tiny model".
TINY_PREFIX = "tiny:"

# Qwen2-VL-Instruct's own chat template (image placeholders inside the user turn).
_QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# llava-hf/llava-1.5-*-hf's chat template.
_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_LLAVA_SPECIAL = ("<unk>", "<s>", "</s>", "<pad>", "<image>")

# Words the tokenizer should see besides the prompts: evidence vocabulary and units.
_EVIDENCE_WORDS = (
    "alpha theta beta delta sigma gamma rhythm activity power band relative absolute "
    "spindles spindle K-complexes K-complex slow waves wave vertex sharp sawtooth "
    "rapid eye movements movement slow rolling blinks blink muscle tone chin EMG EEG EOG ECG "
    "high low reduced increased dominant present absent amplitude frequency percent of the "
    "epoch is are with and no than above below µV uV Hz s % mean median ratio atonia arousal "
    "wake wakefulness light deep sleep REM NREM stage stages scored as because shows"
)


def parse_image_size(text: str) -> tuple[int, int]:
    """Parse ``"448x224"`` (width x height) into ``(width, height)``.

    Raises
    ------
    ModelError
        When the text is not two positive integers joined by ``x``.
    """
    try:
        return parse_size(text)
    except RenderError as err:
        raise ModelError(str(err)) from None


def _corpus() -> list[str]:
    from .data import ANSWER_SEPARATOR, QUESTION, SYSTEM_PROMPT, channel_phrase

    roles = ("eeg", "eog", "emg", "ecg", "resp")
    names = ("C4-M1", "C3-M2", "F4-M1", "O2-M1", "Fpz-Cz", "Pz-Oz", "E1-M2", "E2-M1", "chin")
    lines = [SYSTEM_PROMPT, QUESTION, _EVIDENCE_WORDS, " ".join(STAGE_NAMES), "0 1 2 3 4 5 6 7 8 9"]
    for i, name in enumerate(names):
        channels = [
            {"role": roles[(i + k) % len(roles)], "name": names[(i + k) % len(names)]}
            for k in range(3)
        ]
        channels[0]["name"] = name
        lines.append(channel_phrase(channels) + " " + QUESTION)
    for stage in STAGE_NAMES:
        lines += [stage, f"{stage}{ANSWER_SEPARATOR}{_EVIDENCE_WORDS}", f" {stage} "]
    return lines * 4


def _train_tokenizer(special: tuple[str, ...], vocab_size: int, bos: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if bos is None:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tok


def _qwen2vl(width: int, height: int, hidden: int, layers: int, depth: int):
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    if width % 28 or height % 28:
        raise ModelError(
            f"Qwen2-VL image size {width}x{height}: both sides must be multiples of 28"
        )
    raw = _train_tokenizer(_QWEN_SPECIAL, 640, bos=None)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(_QWEN_SPECIAL[1:]),
        padding_side="left",
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    heads = 4
    head_dim = hidden // heads
    quarter = head_dim // 2
    section = [quarter - 2 * (quarter * 3 // 8), quarter * 3 // 8, quarter * 3 // 8]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": section,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": depth,
            "embed_dim": 64,
            "hidden_size": hidden,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = width * height
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels),
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    return model, processor, ids["<|im_end|>"], ids["<|endoftext|>"]


def _llava(width: int, height: int, hidden: int, layers: int, depth: int):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    side = min(width, height)
    if side % 14:
        raise ModelError(f"LLaVA image side {side}: must be a multiple of the patch size 14")
    if width != height:
        logger.warning(
            "LLaVA's CLIP tower takes square images: %dx%d inputs are resized to %dx%d",
            width,
            height,
            side,
            side,
        )
    raw = _train_tokenizer(_LLAVA_SPECIAL, 640, bos="<s>")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
        padding_side="left",
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _LLAVA_SPECIAL}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=depth,
            num_attention_heads=4,
            image_size=side,
            patch_size=14,
            projection_dim=64,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
            tie_word_embeddings=False,
        ),
        image_token_index=ids["<image>"],
        image_seq_length=(side // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        do_center_crop=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT_TEMPLATE,
    )
    return model, processor, ids["</s>"], ids["<pad>"]


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    image_size: tuple[int, int] = (224, 224),
    hidden_size: int = 128,
    num_layers: int = 2,
    vision_depth: int = 2,
    seed: int = 0,
) -> Path:
    """Build, randomly initialise and save a tiny model of a real VLM architecture.

    Parameters
    ----------
    family : {"qwen2vl", "llava"}
        Architecture: ``Qwen2VLForConditionalGeneration`` or ``LlavaForConditionalGeneration``.
    out_dir : str or Path
        Directory written with ``save_pretrained`` (model, tokenizer, processor, template).
    image_size : (int, int)
        ``(width, height)`` of the rendered epochs. Qwen2-VL pins ``min_pixels`` =
        ``max_pixels`` to it; LLaVA's CLIP tower is square with side ``min(width, height)``.
    hidden_size, num_layers, vision_depth : int
        Size of the language model and depth of the vision tower.
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    Path
        ``out_dir``, loadable by ``vlm.model.load_model_and_processor``.
    """
    import torch

    if family not in FAMILIES:
        raise ModelError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    if hidden_size % 32 or hidden_size <= 0:
        raise ModelError(f"hidden_size {hidden_size}: must be a positive multiple of 32")
    if num_layers < 1 or vision_depth < 1:
        raise ModelError("num_layers and vision_depth must be at least 1")
    width, height = image_size
    out = Path(out_dir)
    torch.manual_seed(seed)
    builder = _qwen2vl if family == "qwen2vl" else _llava
    model, processor, eos_id, pad_id = builder(width, height, hidden_size, num_layers, vision_depth)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info(
        "tiny %s model (%d parameters) written to %s",
        family,
        sum(p.numel() for p in model.parameters()),
        out,
    )
    return out


def resolve_tiny_model(name: str, cache_dir: str | Path, image_size: tuple[int, int]) -> str:
    """Turn ``"tiny:qwen2vl"`` into a built model directory under ``cache_dir``.

    Any other name is returned unchanged. The model is built on first use, so the shipped
    tiny configs run on a fresh clone without a download. It is built in a private folder
    and renamed into place, so processes that build it at the same time (an ensemble's
    members, ``accelerate launch`` ranks) never read a half-written one.
    """
    if not name.startswith(TINY_PREFIX):
        return name
    family = name[len(TINY_PREFIX) :]
    width, height = image_size
    out = Path(cache_dir) / f"tiny-{family}-{width}x{height}"
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            build_tiny_model(family, scratch, image_size=image_size)
            os.rename(scratch, out)
        except OSError:
            if not (out / "config.json").is_file():  # not another process's finished build
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return str(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm tiny-model``."""
    parser.add_argument("--family", choices=FAMILIES, required=True, help="architecture")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--image-size", default="224x224", help="WIDTHxHEIGHT (default 224x224)")
    parser.add_argument("--hidden-size", type=int, default=128, help="language model width")
    parser.add_argument("--layers", type=int, default=2, help="language model layers")
    parser.add_argument("--vision-depth", type=int, default=2, help="vision tower blocks")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")


def run(args: argparse.Namespace) -> int:
    """Build the tiny model and print its directory."""
    out = build_tiny_model(
        args.family,
        args.out,
        image_size=parse_image_size(args.image_size),
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        vision_depth=args.vision_depth,
        seed=args.seed,
    )
    print(out)
    return 0

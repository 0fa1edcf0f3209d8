"""Shards to chats: stream WebDataset shards, turn each epoch into a conversation, collate.

Shard layout (docs/ARCHITECTURE.md): ``DIR/{split}-{shard:06d}.tar`` with one image field
(``png`` | ``jpg`` | ``npy``), ``cls`` (ASCII class id, ``-1`` = unknown, skipped here) and
``json`` (metadata: dataset, subject, recording, epoch, stage, channels, optional features).

Streaming (:func:`make_dataset`):

- training streams are **always resampled**: every rank x dataloader worker draws shards
  with replacement from its own deterministic seed (webdataset seeds ``ResampledShards`` with
  ``rank * 1000 + worker``), so any number of shards feeds any number of processes and
  training is counted in steps, not epochs. A sample shuffle buffer, seeded per rank and
  worker, mixes epochs across shards. Resuming reseeds with the saved step: the stream is a
  fresh draw from the same distribution, not the exact continuation (webdataset keeps no
  read position in a resampled stream).
- evaluation streams read every shard once, in order, split by node then by worker.
- a sample that cannot be decoded (a corrupt image, ``cls`` or ``json``; a damaged tar
  member) is skipped with a warning in a training stream, and counted
  (:class:`SkipCorrupt`); an evaluation stream stops with a :class:`ShardError` naming it,
  since a silently smaller evaluation set would misstate the result.

Each sample becomes: system prompt, user turn (image + question naming the channels), and
the assistant answer (``"N2"``, or ``"N2. <evidence sentence>"`` in ``evidence`` mode).
:class:`ChatCollator` renders the chat template, runs the processor and masks everything
except the answer tokens (and the end-of-turn token) to -100.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import ShardError
from engine.stages import STAGE_NAMES

__all__ = [
    "SYSTEM_PROMPT",
    "QUESTION",
    "ANSWER_MODES",
    "ANSWER_SEPARATOR",
    "IMAGE_FIELDS",
    "channel_phrase",
    "build_question",
    "build_messages",
    "build_answer",
    "expand_shards",
    "make_dataset",
    "count_classes",
    "balanced_class_weights",
    "render_chat",
    "encode_chats",
    "ChatCollator",
    "read_samples",
    "images_as_trained",
    "SkipCorrupt",
]

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a sleep technologist. You score 30-s polysomnography epochs by the AASM rules."
)
QUESTION = "What sleep stage is this 30-s epoch? Answer W, N1, N2, N3 or R."
#: ``label``: the answer is the stage name; ``evidence``: stage name + evidence sentence.
ANSWER_MODES: tuple[str, ...] = ("label", "evidence")
#: Between the stage name and the evidence sentence in ``evidence`` answers.
ANSWER_SEPARATOR = ". "
#: Image fields of the shard contract, in order of preference.
IMAGE_FIELDS: tuple[str, ...] = ("png", "jpg", "npy")

#: Batch keys of :class:`ChatCollator` that are not model inputs.
NON_MODEL_KEYS: tuple[str, ...] = ("labels", "answer_mask", "cls", "sample_weight")


def channel_phrase(channels: Sequence[dict[str, Any]]) -> str:
    """Describe the image rows: ``"Channels from top to bottom: EEG C4-M1, EOG E1-M2."``."""
    if not channels:
        return ""
    from engine.montage import role_phrase

    parts = [
        role_phrase(str(ch.get("role", "")).lower(), ch.get("name") or ch.get("label", ""))
        for ch in channels
    ]
    return "Channels from top to bottom: " + ", ".join(parts) + "."


def build_question(meta: dict[str, Any]) -> str:
    """The user's question for one epoch, naming its channels when the metadata lists them."""
    return " ".join(p for p in (channel_phrase(meta.get("channels", ())), QUESTION) if p)


def build_messages(
    meta: dict[str, Any], answer: str | None = None, question: str | None = None
) -> list[dict[str, Any]]:
    """Chat for one epoch: system, user (image + question), and the answer when given."""
    question = build_question(meta) if question is None else question
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _evidence_sentence() -> Callable[[dict, str], str]:
    try:
        from engine.features import evidence_sentence
    except ImportError as err:
        raise ShardError(
            "answer_mode 'evidence' needs engine.features.evidence_sentence, which is not "
            f"importable ({err}); train with answer_mode 'label'"
        ) from None
    return evidence_sentence


def build_answer(cls: int, meta: dict[str, Any], mode: str = "label") -> str:
    """Assistant answer for a sample of class ``cls``.

    Raises
    ------
    ShardError
        For an unknown mode, a class outside 0-4, or ``evidence`` mode without features.
    """
    if mode not in ANSWER_MODES:
        raise ShardError(f"answer mode {mode!r}: expected one of {ANSWER_MODES}")
    if not 0 <= cls < len(STAGE_NAMES):
        raise ShardError(f"class id {cls} is not a scored stage (0-4)")
    stage = STAGE_NAMES[cls]
    if mode == "label":
        return stage
    features = meta.get("features")
    if not isinstance(features, dict):
        raise ShardError(
            f"answer_mode 'evidence': sample {meta.get('recording')!r} epoch "
            f"{meta.get('epoch')!r} has no 'features' in its json; render with --features"
        )
    return stage + ANSWER_SEPARATOR + _evidence_sentence()(features, stage)


def expand_shards(spec: str | Path | Sequence[str], split: str | None = None) -> list[str]:
    """Shard paths from a directory (+ split), a glob, a brace pattern or a list.

    Raises
    ------
    ShardError
        When nothing matches or a listed file is missing.
    """
    import braceexpand

    if isinstance(spec, (list, tuple)):
        urls = [str(s) for s in spec]
    else:
        text = str(spec)
        if os.path.isdir(text):
            if split is None:
                raise ShardError(f"{text} is a directory: name a split (train/val/test)")
            text = os.path.join(text, f"{split}-*.tar")
        urls = sorted(u for pattern in braceexpand.braceexpand(text) for u in glob.glob(pattern))
        if not urls and "://" in text:
            urls = list(braceexpand.braceexpand(text))
    if not urls:
        raise ShardError(f"no shards match {spec!r}" + (f" for split {split!r}" if split else ""))
    missing = [u for u in urls if "://" not in u and not os.path.isfile(u)]
    if missing:
        raise ShardError(f"shard files not found: {missing[:3]}")
    return urls


def images_as_trained(pixels: np.ndarray, fmt: str = "png", quality: int = 90) -> list:
    """Rendered uint8 images -> RGB PIL images exactly as training decoded them from shards.

    JPEG shards are lossy, so the images take the same encode/decode round trip; PNG and
    npy are lossless and the rendered pixels are what training saw.
    """
    if fmt == "jpg":
        from engine.encode import encode_batch

        blobs = encode_batch(pixels, "jpg", quality=quality)
        return [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
    return [Image.fromarray(np.ascontiguousarray(p)).convert("RGB") for p in pixels]


def _decode_image(field: str, data: bytes) -> Image.Image:
    if field == "npy":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(
                f"npy image must be uint8 HxW or HxWxC, got {array.dtype} {array.shape}"
            )
        return Image.fromarray(array).convert("RGB")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _to_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """One raw tar sample (bytes per field) -> ``{"key", "image", "cls", "meta"}``.

    Raises
    ------
    ShardError
        Naming the sample and its shard, when a field is missing or cannot be decoded.
    """
    where = f"sample {raw.get('__key__')!r} in {raw.get('__url__')!r}"
    field = next((f for f in IMAGE_FIELDS if f in raw), None)
    if field is None:
        raise ShardError(f"{where}: no image field ({'/'.join(IMAGE_FIELDS)})")
    if "cls" not in raw or "json" not in raw:
        raise ShardError(f"{where}: missing 'cls' or 'json' field")
    try:
        image = _decode_image(field, raw[field])
        cls = int(raw["cls"])
        meta = json.loads(raw["json"])
    except Exception as err:  # any decoder failure (PIL raises OSError, SyntaxError...)
        raise ShardError(f"{where}: cannot decode it ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict):
        raise ShardError(f"{where}: 'json' is not an object")
    return {"key": raw["__key__"], "image": image, "cls": cls, "meta": meta}


class SkipCorrupt:
    """Webdataset ``handler=`` of training streams: warn about a bad sample, count it, go on.

    A damaged sample in the middle of a shard costs that sample, not the run. When bad
    samples outnumber good ones after ``limit`` of them, the shards are broken rather than
    damaged and the stream stops (a resampled stream would otherwise spin forever).

    Attributes
    ----------
    skipped, good : int
        Samples skipped and samples delivered by this stream (per dataloader worker).
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.skipped = 0
        self.good = 0

    def __call__(self, error: Exception) -> bool:
        self.skipped += 1
        logger.warning("skipped a corrupt sample (%d so far): %s", self.skipped, error)
        if self.skipped >= self.limit and self.skipped > self.good:
            raise ShardError(
                f"{self.skipped} corrupt samples against {self.good} good ones: the shards "
                f"are broken (last: {error})"
            ) from None
        return True

    def count(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Pipeline stage that counts the samples that decoded."""
        self.good += 1
        return sample


def _seeded_shuffle(bufsize: int, seed: int) -> Callable[[Iterator], Iterator]:
    import webdataset as wds

    def stage(src: Iterator) -> Iterator:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng_seed = wds.utils.make_seed(seed, rank, worker)
        yield from wds.shuffle(bufsize, initial=min(bufsize, 100), seed=rng_seed)(src)

    return stage


def make_dataset(
    urls: Sequence[str],
    *,
    training: bool,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    split_by_node: bool = True,
):
    """WebDataset pipeline yielding ``{"key", "image" (RGB PIL), "cls", "meta"}`` dicts.

    Parameters
    ----------
    urls : sequence of str
        Shard paths (see :func:`expand_shards`).
    training : bool
        Infinite resampled stream with shard + sample shuffling that skips corrupt samples
        (see module docstring), or one ordered pass that stops at the first corrupt one.
    seed : int
        Base seed of the shard draw and the shuffle buffer (the trainer adds the step).
    shuffle_buffer : int
        Samples held by the shuffle buffer.
    split_by_node : bool
        Evaluation streams only: give each distributed rank its own shards (default), or
        let every rank read all of them.

    Samples with ``cls < 0`` (unknown stage) are skipped.
    """
    import webdataset as wds

    if not urls:
        raise ShardError("no shards given")
    if training:
        skip = SkipCorrupt()
        stages = [
            wds.ResampledShards(list(urls), seed=seed, deterministic=True),
            wds.tarfile_to_samples(handler=skip),
            _seeded_shuffle(shuffle_buffer, seed),  # of the raw (compressed) samples
            wds.map(_to_sample, handler=skip),
            wds.map(skip.count),
        ]
    else:
        stages = [
            wds.SimpleShardList(list(urls)),
            *([wds.split_by_node] if split_by_node else []),
            wds.split_by_worker,
            wds.tarfile_to_samples(),
            wds.map(_to_sample),
        ]
    stages.append(wds.select(lambda s: s["cls"] >= 0))
    return wds.DataPipeline(*stages)


def count_classes(urls: Sequence[str]) -> np.ndarray:
    """Count scored samples per class by reading only the ``cls`` members of the shards."""
    counts = np.zeros(len(STAGE_NAMES), dtype=np.int64)
    for url in urls:
        try:
            with tarfile.open(url, "r:") as tar:
                for member in tar:
                    if member.name.endswith(".cls"):
                        cls = int(tar.extractfile(member).read())
                        if 0 <= cls < len(counts):
                            counts[cls] += 1
        except (OSError, tarfile.TarError, ValueError) as err:
            raise ShardError(f"{url}: cannot count classes ({err})") from None
    return counts


def balanced_class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights ``n / (k * n_c)`` (mean 1 over samples; 0 for absent classes)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ShardError("no scored samples to weight")
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def render_chat(processor, messages: list[dict[str, Any]], answer: str) -> tuple[str, str]:
    """Render ``messages`` + ``answer`` with the chat template; split into prompt and answer.

    The prompt ends with the generation prompt (``<|im_start|>assistant\\n`` for Qwen,
    ``ASSISTANT:`` for LLaVA). The answer part is whatever the template writes after it for
    the assistant turn, ending with the end-of-sequence token (appended when the template
    does not write one, as LLaVA's does not).

    Raises
    ------
    ShardError
        When the rendered conversation does not start with the rendered prompt.
    """
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(
        [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        tokenize=False,
        add_generation_prompt=False,
    )
    if not full.startswith(prompt):
        raise ShardError("chat template: the generation prompt is not a prefix of the chat")
    tail = full[len(prompt) :]
    eos = processor.tokenizer.eos_token
    if eos not in tail:
        tail = tail.rstrip() + eos
    return prompt, tail


def encode_chats(
    processor,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    answers: Sequence[str],
) -> dict[str, Any]:
    """Tokenise ``prompt + answer`` with the images; labels keep only the answer tokens.

    Returns the processor's tensors (``input_ids``, ``attention_mask``, ``pixel_values``,
    ``image_grid_thw``, ``mm_token_type_ids`` ... whatever the family needs) plus
    ``labels`` (-100 outside the answers) and ``answer_mask`` (bool, same positions).

    Raises
    ------
    ShardError
        When the prompt's tokens are not a prefix of the prompt+answer tokens.
    """
    import torch

    full = [p + a for p, a in zip(prompts, answers)]
    batch = processor(images=list(images), text=full, padding=True, return_tensors="pt")
    prompt_ids = processor(images=list(images), text=list(prompts), padding=False)["input_ids"]
    input_ids = batch["input_ids"]
    attention = batch["attention_mask"].bool()
    answer_mask = torch.zeros_like(attention)
    left = processor.tokenizer.padding_side == "left"
    width = input_ids.shape[1]
    for row, ids in enumerate(prompt_ids):
        length = int(attention[row].sum())
        start = width - length if left else 0
        n_prompt = len(ids)
        if n_prompt >= length or input_ids[row, start : start + n_prompt].tolist() != list(ids):
            raise ShardError(
                f"prompt tokens are not a prefix of prompt+answer tokens (answer {answers[row]!r});"
                " the chat template or tokenizer merges across the answer boundary"
            )
        answer_mask[row, start + n_prompt : start + length] = True
    labels = input_ids.masked_fill(~answer_mask, -100)
    out = dict(batch)
    out["labels"] = labels
    out["answer_mask"] = answer_mask
    return out


class ChatCollator:
    """Batch samples from :func:`make_dataset` into model inputs with masked labels.

    Parameters
    ----------
    processor
        The model's processor (tokenizer + image processor + chat template).
    answer_mode : {"label", "evidence"}
        What the assistant answers.
    class_weights : array of 5 floats, optional
        Per-class loss weights; the batch then carries ``sample_weight`` (one per sample),
        which :func:`vlm.trainer.sample_loss` uses to weight each sample's mean answer-token loss.
    """

    def __init__(
        self, processor, answer_mode: str = "label", class_weights: Sequence[float] | None = None
    ) -> None:
        if answer_mode not in ANSWER_MODES:
            raise ShardError(f"answer mode {answer_mode!r}: expected one of {ANSWER_MODES}")
        if answer_mode == "evidence":
            _evidence_sentence()
        if class_weights is not None and len(class_weights) != len(STAGE_NAMES):
            raise ShardError(f"class_weights needs {len(STAGE_NAMES)} values")
        self.processor = processor
        self.answer_mode = answer_mode
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        prompts, answers = [], []
        for sample in samples:
            answer = build_answer(sample["cls"], sample["meta"], self.answer_mode)
            prompt, tail = render_chat(self.processor, build_messages(sample["meta"]), answer)
            prompts.append(prompt)
            answers.append(tail)
        batch = encode_chats(self.processor, [s["image"] for s in samples], prompts, answers)
        batch["cls"] = torch.tensor([s["cls"] for s in samples])
        if self.class_weights is not None:
            batch["sample_weight"] = torch.tensor(
                [self.class_weights[s["cls"]] for s in samples], dtype=torch.float32
            )
        return batch


def read_samples(
    urls: Sequence[str], limit: int | None = None, split_by_node: bool = True
) -> list[dict[str, Any]]:
    """Read scored samples in order (no shuffling), at most ``limit``.

    ``split_by_node=False`` reads the same samples on every distributed rank (see
    :func:`make_dataset`).
    """
    samples = []
    for sample in make_dataset(urls, training=False, split_by_node=split_by_node):
        samples.append(sample)
        if limit is not None and len(samples) >= limit:
            break
    return samples

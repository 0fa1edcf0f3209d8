"""Label scoring: a model's stage probabilities for images, without free text.

A model's stage for an epoch is the candidate answer (W, N1, N2, N3, R) with the highest
sum of answer-token log-likelihoods; probabilities are the softmax over those sums. Whole
answers are scored because ``N1``/``N2``/``N3`` share their first token ``N`` in most
tokenizers. Zero-shot (no adapter) and fine-tuned models are scored the same way, during
training (evaluation on held-out shards) and at inference (:mod:`vlm.runtime`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.errors import ModelError
from engine.stages import STAGE_NAMES

__all__ = ["score_candidates", "predict", "evaluate_samples"]


def score_candidates(
    model,
    processor,
    images: Sequence,
    prompts: Sequence[str] | None = None,
    candidates: Sequence[str] = STAGE_NAMES,
    batch_size: int = 8,
) -> np.ndarray:
    """Probability of each candidate answer for each image.

    Each image + prompt goes through the model once: the run covers the prompt and the
    longest shared context of the candidates' tokens (``N`` for ``N1``/``N2``/``N3``), and
    every candidate's answer-token log-likelihoods are read from that run's last logits.
    Candidates whose contexts diverge (two multi-token answers with different first
    tokens) take one run per distinct context.

    Parameters
    ----------
    model, processor
        From :func:`vlm.model.load_model_and_processor` (with or without adapter).
    images : sequence of PIL images
        One rendered epoch each.
    prompts : sequence of str, optional
        The user's question per image (default: :data:`vlm.data.QUESTION`; use
        :func:`vlm.data.build_question` to name the channels as in training).
    candidates : sequence of str
        Candidate answers, scored as whole token sequences (up to the end of the candidate
        text; the end-of-turn token is not scored).
    batch_size : int
        Images per forward pass.

    Returns
    -------
    np.ndarray
        ``(len(images), len(candidates))`` probabilities; rows sum to 1.

    Raises
    ------
    ModelError
        On bad arguments, or when the tokenizer merges a candidate into the prompt.
    """
    import torch

    from .data import QUESTION

    if batch_size <= 0:
        raise ModelError(f"batch_size {batch_size}: must be positive")
    if not candidates:
        raise ModelError("no candidate answers")
    if prompts is None:
        prompts = [QUESTION] * len(images)
    if len(prompts) != len(images):
        raise ModelError(f"{len(prompts)} prompts for {len(images)} images")
    plans = {q: _scoring_plan(processor, q, candidates) for q in dict.fromkeys(prompts)}
    pad_id = processor.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    device = next(model.parameters()).device
    n_cand = len(candidates)
    scores = np.zeros((len(images), n_cand), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(images), batch_size):
            chunk = range(lo, min(lo + batch_size, len(images)))
            runs = [(i, k) for i in chunk for k in range(len(plans[prompts[i]][2]))]
            # Left padding puts every prompt's last token in the last column.
            batch = processor(
                images=[images[i] for i, _ in runs],
                text=[plans[prompts[i]][0] for i, _ in runs],
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
            if not bool(batch["attention_mask"][:, -1].all()):
                raise ModelError("the processor did not left-pad the prompts (padding_side)")
            contexts = [plans[prompts[i]][2][k] for i, k in runs]
            width = max(len(c) for c in contexts)
            inputs = _append_context(batch, contexts, width, pad_id)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            # (run, position, token, output cell) of every scored answer token
            run_ix, pos_ix, token_ix, cell_ix = [], [], [], []
            for r, (i, k) in enumerate(runs):
                _, answers, _, context_of = plans[prompts[i]]
                for c, ids in enumerate(answers):
                    if context_of[c] == k:
                        run_ix += [r] * len(ids)
                        pos_ix += range(len(ids))
                        token_ix += ids
                        cell_ix += [(i - lo) * n_cand + c] * len(ids)
            with torch.no_grad():
                # The last width + 1 positions predict the answer tokens: the prompt's last
                # token predicts the first, context token j the (j + 1)-th.
                logits = model(**inputs, use_cache=False, logits_to_keep=width + 1).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                token_logp = logp[run_ix, pos_ix, token_ix].double().cpu()
            seq = torch.zeros(len(chunk) * n_cand, dtype=torch.float64)
            seq.index_add_(0, torch.tensor(cell_ix), token_logp)
            scores[lo : lo + len(chunk)] = seq.view(len(chunk), n_cand).numpy()
    finally:
        model.train(was_training)
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=1, keepdims=True)


#: Per-token processor outputs besides ``input_ids``/``attention_mask``, with the value of
#: an appended text token.
_TEXT_TOKEN_FILL = {"mm_token_type_ids": 0, "token_type_ids": 0}


def _scoring_plan(
    processor, question: str, candidates: Sequence[str]
) -> tuple[str, list[list[int]], list[list[int]], list[int]]:
    """How to score ``candidates`` after ``question``.

    Returns the prompt text, each candidate's answer tokens (what ``prompt + answer`` adds
    to ``prompt``, as in training), the token contexts to run after the prompt and, per
    candidate, the index of the context whose run gives its logits.
    """
    from .data import build_messages, render_chat

    messages = build_messages({}, question=question)
    texts = []
    for cand in candidates:
        prompt, tail = render_chat(processor, messages, cand)
        texts.append(prompt + tail[: tail.index(cand) + len(cand)])
    tokenizer = processor.tokenizer
    prompt_ids = tokenizer(prompt)["input_ids"]
    answers: list[list[int]] = []
    for cand, text in zip(candidates, texts):
        ids = tokenizer(text)["input_ids"]
        if len(ids) <= len(prompt_ids) or ids[: len(prompt_ids)] != prompt_ids:
            raise ModelError(
                f"candidate {cand!r}: the prompt's tokens are not a prefix of prompt+answer "
                "tokens (the tokenizer merges across the answer boundary)"
            )
        answers.append(ids[len(prompt_ids) :])
    # Candidate c needs the logits after prompt + c[:j] for every j < len(c): one run of
    # prompt + c[:-1]. A context that is a prefix of another is covered by the longer one.
    needed = sorted({tuple(a[:-1]) for a in answers}, key=len, reverse=True)
    contexts: list[tuple[int, ...]] = []
    for context in needed:
        if not any(c[: len(context)] == context for c in contexts):
            contexts.append(context)
    context_of = [
        next(k for k, c in enumerate(contexts) if c[: len(a) - 1] == tuple(a[:-1])) for a in answers
    ]
    return prompt, answers, [list(c) for c in contexts], context_of


def _append_context(
    batch: dict[str, Any], contexts: Sequence[Sequence[int]], width: int, pad_id: int
) -> dict[str, Any]:
    """Append each row's context tokens after its (left-padded) prompt, right-padded to
    ``width`` with masked padding, so every row's prompt ends in the same column."""
    import torch

    input_ids = batch["input_ids"]
    rows = input_ids.shape[0]
    ids = torch.full((rows, width), pad_id, dtype=input_ids.dtype)
    mask = torch.zeros((rows, width), dtype=batch["attention_mask"].dtype)
    for row, context in enumerate(contexts):
        ids[row, : len(context)] = torch.tensor(list(context), dtype=input_ids.dtype)
        mask[row, : len(context)] = 1
    out = dict(batch)
    out["input_ids"] = torch.cat([input_ids, ids], dim=1)
    out["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
    for key, fill in _TEXT_TOKEN_FILL.items():
        if key in batch:
            extra = torch.full((rows, width), fill, dtype=batch[key].dtype)
            out[key] = torch.cat([batch[key], extra], dim=1)
    return out


def predict(
    model, processor, images: Sequence, prompts: Sequence[str] | None = None, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class ids (0-4) and the ``(N, 5)`` probabilities."""
    probs = score_candidates(model, processor, images, prompts, STAGE_NAMES, batch_size)
    return probs.argmax(axis=1), probs


def evaluate_samples(
    model, processor, samples: Sequence[dict[str, Any]], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for samples from :func:`vlm.data.make_dataset`; returns (y_true, probs)."""
    from .data import build_question

    images = [s["image"] for s in samples]
    prompts = [build_question(s["meta"]) for s in samples]
    probs = score_candidates(model, processor, images, prompts, STAGE_NAMES, batch_size)
    return np.array([s["cls"] for s in samples]), probs

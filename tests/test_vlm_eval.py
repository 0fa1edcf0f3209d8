"""Candidate scoring, metrics and the ``psgvlm eval`` report."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import PSGError
from engine.stages import STAGE_NAMES

torch = pytest.importorskip("torch")

from vlm import data as vdata  # noqa: E402
from vlm.commands.evaluate import write_report  # noqa: E402
from vlm.metrics import classification_metrics, group_metrics, metrics_markdown  # noqa: E402
from vlm.model import load_model_and_processor  # noqa: E402
from vlm.scoring import score_candidates  # noqa: E402
from vlm.tiny import build_tiny_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vlm_fixtures import write_shards  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, subjects={"test": ["s1", "s2"]}, epochs_per_subject=8)
    return out


@pytest.fixture(scope="module", params=["qwen2vl", "llava"])
def tiny(request, tmp_path_factory):
    path = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    model, processor, _ = load_model_and_processor(path)
    return path, model, processor


def test_metrics_by_hand():
    metrics = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert metrics["accuracy"] == 0.75
    assert metrics["kappa"] == pytest.approx(0.5)  # p_o 0.75, p_e 0.5
    assert metrics["per_class_f1"]["W"] == pytest.approx(2 / 3)
    assert metrics["per_class_f1"]["N1"] == pytest.approx(0.8)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # classes present only
    assert metrics["confusion"][0][:2] == [1, 1] and metrics["confusion"][1][:2] == [0, 2]
    assert metrics["support"] == {"W": 2, "N1": 2, "N2": 0, "N3": 0, "R": 0}
    groups = group_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b", "a", "b"])
    assert groups["a"]["accuracy"] == 1.0 and groups["b"]["accuracy"] == 0.5
    with pytest.raises(PSGError):
        classification_metrics([], [])


def test_write_report(tmp_path):
    metrics = classification_metrics([0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 2])
    metrics["per_subject"] = group_metrics([0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 2], list("aaabbb"))
    rows = [{"key": f"k{i}", "true": "W", "pred": "W"} for i in range(6)]
    markdown = metrics_markdown(metrics)
    out = write_report(tmp_path / "r", metrics, markdown, rows, {"model": metrics["confusion"]})
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(5 / 6)
    text = (out / "metrics.md").read_text()
    assert "| 6 | 0.833 |" in text and "| a | 3 | 1.000 |" in text
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 6


def test_scores_are_whole_answer_likelihoods(tiny, shards):
    _, model, processor = tiny
    samples = vdata.read_samples(vdata.expand_shards(shards, "test"), limit=3)
    images = [s["image"] for s in samples]
    prompts = [vdata.build_question(s["meta"]) for s in samples]
    prompts[1] = vdata.QUESTION  # shorter: the batch is padded
    probs = score_candidates(model, processor, images, prompts, batch_size=2)
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-9)
    # Left padding and batching do not change the scores, nor a right-padding tokenizer.
    single = score_candidates(model, processor, images, prompts, batch_size=1)
    np.testing.assert_allclose(single, probs, atol=1e-5)
    processor.tokenizer.padding_side = "right"
    try:
        right = score_candidates(model, processor, images, prompts, batch_size=2)
    finally:
        processor.tokenizer.padding_side = "left"
    np.testing.assert_allclose(right, probs, atol=1e-5)
    # Log-probability ratio N2 : W equals the difference of the full-sequence sums.
    sums = [_answer_logp(model, processor, images[0], prompts[0], cand) for cand in ("W", "N2")]
    assert np.log(probs[0, 2] / probs[0, 0]) == pytest.approx(sums[1] - sums[0], abs=1e-4)


def _answer_logp(model, processor, image, question, cand, expect_tokens=None) -> float:
    """Sum of the answer tokens' log-probabilities in one full prompt+answer forward pass."""
    prompt, tail = vdata.render_chat(processor, vdata.build_messages({}, question=question), cand)
    batch = vdata.encode_chats(processor, [image], [prompt], [tail[: tail.index(cand) + len(cand)]])
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "answer_mask")}
    with torch.no_grad():
        logp = torch.log_softmax(model(**inputs).logits[0, :-1].double(), -1)
    ids = batch["input_ids"][0, 1:]
    keep = batch["answer_mask"][0, 1:]
    if cand == "N2":
        assert keep.sum() == 2  # "N" + "2": scored as a sequence, not a first token
    return logp[keep].gather(1, ids[keep][:, None]).sum().item()


def test_candidates_with_different_contexts(tiny, shards):
    # "W2" and "N2 sleep" need runs after "W" and after "N2 sleep"[:-1] ("N1" is covered by
    # the latter, "R" by either): each score still equals its own full forward pass.
    _, model, processor = tiny
    samples = vdata.read_samples(vdata.expand_shards(shards, "test"), limit=3)
    images = [s["image"] for s in samples]
    candidates = ("W2", "N1", "N2 sleep", "R")
    probs = score_candidates(model, processor, images, None, candidates, batch_size=2)
    for row in (0, 2):
        sums = np.array(
            [_answer_logp(model, processor, images[row], vdata.QUESTION, c) for c in candidates]
        )
        np.testing.assert_allclose(np.log(probs[row]), sums - np.logaddexp.reduce(sums), atol=1e-4)


def test_eval_cli_zero_shot(tiny, shards, tmp_path):
    from psgvlm.cli import main

    path, _, _ = tiny
    out = tmp_path / "report"
    assert (
        main(
            [
                "eval",
                "--model",
                str(path),
                "--shards",
                str(shards),
                "--limit",
                "6",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and metrics["adapter"] is None
    assert set(metrics["per_subject"]) == {"s1"}
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 6 and {r["pred"] for r in rows} <= set(STAGE_NAMES)
    for row in rows:
        assert sum(float(row[f"p_{n}"]) for n in STAGE_NAMES) == pytest.approx(1, abs=1e-4)
    assert main(["eval", "--model", str(path), "--shards", str(tmp_path / "none-*.tar")]) == 2

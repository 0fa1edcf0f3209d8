"""The Hugging Face ``Trainer`` adapted to streamed PSG epochs (used by :mod:`vlm.train`).

:class:`StageTrainer` keeps everything ``transformers.Trainer`` does (AdamW, schedule,
accumulation, clipping, mixed precision, DDP / FSDP / DeepSpeed, checkpoints with optimizer,
scheduler and RNG state, ``save_total_limit``, ``report_to``, early stopping) and changes
three things:

- **loss**: each sample's mean cross-entropy over its answer tokens (the labels the
  collator left unmasked), times its class weight when the batch carries
  ``sample_weight``, averaged over the batch (:func:`sample_loss`);
- **data**: every process iterates its own resampled shard stream (:mod:`vlm.data`), so the
  train dataloader is a plain ``DataLoader`` that accelerate does not shard or dispatch;
- **evaluation**: label scoring (:func:`vlm.scoring.evaluate_samples`) of the evaluation
  samples, split over the processes, reported as ``eval_accuracy`` (usable as
  ``metric_for_best_model: accuracy`` and for early stopping).

Two callbacks write ``OUTPUT_DIR/log.jsonl`` (one JSON object per log, ``step`` first) and
``render.json`` (:class:`vlm.render_setup.RenderConfig`) into every checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from vlm.data import NON_MODEL_KEYS
from vlm.scoring import evaluate_samples

__all__ = ["sample_loss", "StageTrainer", "JsonlLog", "SaveRenderSetup"]

logger = logging.getLogger(__name__)


def sample_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Mean over the batch of each sample's mean answer-token cross-entropy.

    Parameters
    ----------
    model : torch.nn.Module
        Causal vision-language model (wrapped or not).
    batch : dict
        From :class:`vlm.data.ChatCollator`: model inputs plus ``labels`` (-100 outside the
        answers) and, with class weights, ``sample_weight``.

    Returns
    -------
    torch.Tensor
        Scalar loss; samples are weighted by ``sample_weight`` when present.
    """
    inputs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token_loss = F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")
    rows = torch.nonzero(mask)[:, 0]
    per_sample = torch.zeros(mask.shape[0], device=logits.device).index_add(0, rows, token_loss)
    per_sample = per_sample / mask.sum(1).clamp(min=1)
    weight = batch.get("sample_weight")
    return per_sample.mean() if weight is None else (per_sample * weight).mean()


class _Clock(TrainerCallback):
    """Step and time of the previous training log, for throughput figures."""

    def __init__(self) -> None:
        self.step, self.time = 0, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.step, self.time = state.global_step, time.perf_counter()

    def lap(self, step: int) -> tuple[int, float]:
        """Steps and seconds since the previous lap; starts the next one."""
        now = time.perf_counter()
        steps, seconds = step - self.step, now - self.time
        self.step, self.time = step, now
        return steps, seconds


class _GivenIntervals(TrainerCallback):
    """On resume, log / evaluate / save at the given steps, not at the checkpoint's.

    ``Trainer`` reloads them from the checkpoint's ``trainer_state.json`` (with a warning
    that they differ); the options of the resumed run are what its user asked for.
    """

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        state.compute_steps(args, state.max_steps)


class StageTrainer(Trainer):
    """``Trainer`` with the per-sample answer loss and label-scoring evaluation.

    Takes ``Trainer``'s arguments; ``train_dataset`` is an iterable stream (each process
    its own) and ``eval_dataset`` a list of samples from :func:`vlm.data.read_samples`,
    the same list on every process.
    """

    #: :func:`sample_loss` is a per-batch mean: Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = _Clock()
        self.add_callback(self._clock)
        self.add_callback(_GivenIntervals())

    def get_train_dataloader(self) -> DataLoader:
        """Per-process loader over the process's own resampled stream (no sharding)."""
        args = self.args
        workers = args.dataloader_num_workers
        return DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """:func:`sample_loss` (``num_items_in_batch`` is not needed: samples count equally)."""
        if return_outputs:
            raise NotImplementedError("StageTrainer evaluates by label scoring, not outputs")
        return sample_loss(model, inputs)

    def evaluate(
        self,
        eval_dataset: list[dict[str, Any]] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Label-scoring accuracy on the evaluation samples, logged and returned.

        Every process scores the same number of samples (the list is split round-robin
        and padded with repeats, which are not counted), so sharded models (FSDP) run
        their collective forward passes in step.
        """
        samples = self.eval_dataset if eval_dataset is None else eval_dataset
        rank, world = self.args.process_index, self.args.world_size
        indices = range(rank, -(-len(samples) // world) * world, world)
        logger.info("evaluating %d samples on %d process(es)", len(samples), world)
        started = time.perf_counter()
        y_true, probs = evaluate_samples(
            self.model,
            self.processing_class,
            [samples[i % len(samples)] for i in indices],
            batch_size=self.args.per_device_eval_batch_size,
        )
        counted = torch.tensor([i < len(samples) for i in indices])
        correct = (torch.from_numpy(probs.argmax(1) == y_true) & counted).sum()
        totals = self.accelerator.reduce(
            torch.stack([correct, counted.sum()]).to(self.args.device), "sum"
        ).tolist()
        metrics = {
            f"{metric_key_prefix}_accuracy": totals[0] / totals[1],
            f"{metric_key_prefix}_samples": totals[1],
            f"{metric_key_prefix}_runtime": round(time.perf_counter() - started, 3),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``samples_per_s`` and ``s_per_step`` (since the last log) to training logs."""
        if "loss" in logs:
            steps, seconds = self._clock.lap(self.state.global_step)
            if steps > 0:
                samples = steps * self.args.train_batch_size * self.args.world_size
                samples *= self.args.gradient_accumulation_steps
                logs["samples_per_s"] = samples / seconds
                logs["s_per_step"] = seconds / steps
        super().log(logs, start_time)


class JsonlLog(TrainerCallback):
    """Append every log (training, evaluation, summary) to ``OUTPUT_DIR/log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class SaveRenderSetup(TrainerCallback):
    """Write ``render.json`` into every checkpoint, beside its adapter."""

    def __init__(self, render_config: Any) -> None:
        self.render_config = render_config

    def on_save(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero and self.render_config is not None:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            self.render_config.save(folder)

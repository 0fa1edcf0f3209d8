"""``psgvlm explain``: where the model looked, for one epoch or over many.

Attribution methods and maps: :mod:`vlm.attribution`; channel importance and the pointing
game: :mod:`vlm.attribution_studies`. Command lines::

    psgvlm explain night.edf --epoch 120 --model M --adapter A [--out DIR]
        [--method occlusion,gradxinput] [--window 3] [--target N3]
    psgvlm explain night.edf|SHARDS --channel-importance --model M --adapter A --out DIR
    psgvlm explain synth-0100-PSG.edf --pointing-game --model M --adapter A --out DIR

One epoch writes ``epoch_NNNNN_<method>.png`` (heatmap over the image) and
``epoch_NNNNN.json``. ``--channel-importance`` occludes each whole strip of many epochs
(``--per-stage`` N per scored stage, ``--epochs START:STOP``) and writes
``channel_importance.{md,json,png}``; RECORDING may then also be shards (a directory, glob
or ``.tar``). ``--pointing-game`` uses planted events (``NAME-events.json`` beside
``NAME-PSG.edf``, or ``--events``), otherwise detected ones, and writes
``pointing_game.{md,json}``.

Recordings: EDF files (with ``--hypnogram``), ``prerau:DIR`` (the Prerau segment, one EEG
channel) and ``yasa:DIR`` (YASA's example snippets: a 15-s N2 excerpt, a 30-s N3 epoch and
859 s of REM EOG, joined one after the other). Channels the model reads but the recording
lacks are drawn as empty strips (NaN). Without ``--model``, a recording is explained with
the shipped default stager whose montage it fills (as ``psgvlm stage``); shards and
``yasa:DIR`` need ``--model``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError, PSGError
from engine.montage import row_name
from engine.stages import Stage, stage_name

from ..attribution import (
    METHODS,
    Attribution,
    agg_pyplot,
    explain_epoch,
    short_label,
    where_decision_rested,
)
from ..attribution_studies import (
    channel_importance,
    detected_events,
    importance_markdown,
    planted_events,
    planted_of,
    plot_importance,
    pointing_game,
    pointing_markdown,
    scored_positions,
)
from ..model_options import add_grid_argument, add_model_arguments, require_model, stager_from_args
from ..sources import YASA_PREFIX, open_source

__all__ = ["write_explanation", "add_arguments", "run"]


def write_explanation(
    out_dir: str | os.PathLike,
    index: int,
    pixels: np.ndarray,
    attributions: Sequence[Attribution],
    sentence: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``epoch_NNNNN_<method>.png`` (heatmap over the image) and ``epoch_NNNNN.json``.

    Returns
    -------
    dict
        ``method -> PNG path`` and ``"json" -> path``.
    """
    plt = agg_pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    paths: dict[str, Path] = {}
    for attr in attributions:
        height, width = attr.image_map.shape
        fig, ax = plt.subplots(figsize=(max(4.0, width / 60), max(3.0, height / 60)))
        extent = (float(attr.edges_s[0]), float(attr.edges_s[-1]), height, 0)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent, aspect="auto")
        limit = float(np.max(np.abs(attr.image_map))) or 1.0
        cmap, vmin = ("RdBu_r", -limit) if attr.method == "occlusion" else ("inferno_r", 0.0)
        norm = plt.Normalize(vmin, limit)
        colours = plt.get_cmap(cmap)(norm(attr.image_map))
        colours[..., 3] = 0.75 * np.clip(np.abs(attr.image_map) / limit, 0.0, 1.0)  # faint = weak
        ax.imshow(colours, extent=extent, aspect="auto")
        shown = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        from engine.raster.layout import strip_rows

        r0, r1 = strip_rows(height, len(attr.channels))
        ax.set_yticks((r0 + r1 + 1) / 2, [short_label(c) for c in attr.channels])
        ax.set_xlabel("seconds from the epoch start")
        what = "drop in p" if attr.method == "occlusion" else "|grad x input|"
        ax.set_title(f"epoch {index}: {attr.method} for {attr.target} (p = {attr.probability:.2f}"
                     f"; predicted {attr.predicted})", fontsize=9)  # fmt: skip
        fig.colorbar(shown, ax=ax, label=what, fraction=0.04)
        fig.tight_layout()
        path = out / f"epoch_{index:05d}_{attr.method}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths[attr.method] = path
    payload = {"epoch": int(index), "attributions": [a.to_dict() for a in attributions]}
    if sentence is not None:
        payload["where"] = sentence
    payload.update(extra or {})
    json_path = out / f"epoch_{index:05d}.json"
    json_path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    paths["json"] = json_path
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm explain``."""
    parser.add_argument("recording", help="EDF recording, prerau:DIR, yasa:DIR, or shards "
                        "(--channel-importance)")  # fmt: skip
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--epoch", help="explain this epoch (0-based; several: 12,40,97)")
    mode.add_argument(
        "--channel-importance",
        action="store_true",
        help="occlude whole strips over many epochs; table + plot per stage",
    )
    mode.add_argument(
        "--pointing-game",
        action="store_true",
        help="attribution on planted/detected events vs random boxes",
    )
    add_grid_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("explain"),
                        help="output directory (default: explain)")  # fmt: skip
    parser.add_argument(
        "--method",
        default="occlusion,gradxinput",
        help=f"comma-separated attribution methods: {', '.join(METHODS)}",
    )
    parser.add_argument("--window", type=float, default=3.0, help="occlusion window (s)")
    parser.add_argument("--target", help="stage to explain (default: the predicted one)")
    parser.add_argument("--epochs", metavar="START:STOP", help="epochs for the aggregate modes")
    parser.add_argument("--per-stage", type=int, help="at most N epochs per scored stage "
                        "(aggregate modes; drawn with --seed)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="at most N shard samples (--channel-importance)")
    parser.add_argument("--events", type=Path, help="planted events JSON (psgvlm synth)")
    parser.add_argument("--seed", type=int, default=0, help="seed of epoch draws and chance boxes")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (default: 8)")  # fmt: skip
    add_model_arguments(parser, default="default, with no --adapter: the shipped stager whose "
                        "montage the recording fills (vlm/default_models); shards and yasa:DIR "
                        "need --model")  # fmt: skip


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ModelError(f"--method {text!r}: expected some of {', '.join(METHODS)}")
    return methods


def _is_shards(text: str) -> bool:
    path = Path(text)
    return text.endswith(".tar") or "*" in text or "{" in text or (
        path.is_dir() and any(path.glob("*-*.tar")))  # fmt: skip


def _epoch_list(text: str, count: int) -> list[int]:
    try:
        epochs = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise PSGError(f"--epoch {text!r}: expected epoch numbers such as 12 or 12,40") from None
    bad = [e for e in epochs if not 0 <= e < count]
    if bad or not epochs:
        raise PSGError(f"--epoch {text!r}: the recording has epochs 0..{count - 1}")
    return epochs


def _run_epoch(args, stager, source, extra) -> int:
    epochs = _epoch_list(args.epoch, len(source))
    methods = _methods(args.method)
    for index in epochs:
        pixels, attributions = explain_epoch(stager, source, index, methods, window_s=args.window,
                                             target=args.target, batch_size=args.batch_size)  # fmt: skip
        events = detected_events(source, index, extra)
        lead = attributions[0]
        sentence = where_decision_rested(lead.grid, events, lead.channels, lead.edges_s)
        scored = int(source.hypnogram.stages[index])
        paths = write_explanation(args.out, index, pixels, attributions, sentence,
                                  {"recording": str(args.recording), "scored": stage_name(scored),
                                   "events": events})  # fmt: skip
        told = "unscored" if scored == int(Stage.UNK) else f"scored {stage_name(scored)}"
        print(f"epoch {index} ({told}): {lead.predicted} (p = "
              f"{lead.probabilities[lead.predicted]:.2f}). {sentence}")  # fmt: skip
        for path in paths.values():
            print(path)
    return 0


def _shard_items(args, config) -> tuple[list[tuple[np.ndarray, int]], list[str]]:
    from ..data import expand_shards, read_samples

    samples = read_samples(expand_shards(args.recording, "test"), limit=args.limit)
    if not samples:
        raise PSGError(f"{args.recording}: no scored samples")
    spec = config.spec()
    items = []
    for s in samples:
        pixels = np.asarray(s["image"], dtype=np.uint8)
        if pixels.shape[:2] != (spec.height, spec.width):
            raise PSGError(f"{s['key']}: image {pixels.shape[:2]} is not the render config's "
                           f"{spec.height}x{spec.width}")  # fmt: skip
        items.append((pixels, int(s["cls"])))
    return items, [
        row_name(str(c["role"]).lower(), c.get("label") or c["name"]) for c in config.channels
    ]


def _run_importance(args, stager, source) -> int:
    if source is None:
        items, labels = _shard_items(args, stager.setup)
    else:
        positions = scored_positions(source, args.epochs, args.per_stage, args.seed)
        scored = np.asarray(source.hypnogram.stages)[positions] != int(Stage.UNK)
        if scored.any():
            positions = positions[scored]
        items = ((stager.pixels(source, [p])[0], int(source.hypnogram.stages[p]))
                 for p in positions)  # fmt: skip
        labels = [c.row_name for c in source.channels]
    result = channel_importance(stager, items, channels=labels, batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "channel_importance.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    markdown = importance_markdown(result)
    (out / "channel_importance.md").write_text(markdown)
    plot_importance(result, out / "channel_importance.png")
    print(markdown, end="")
    print(out / "channel_importance.png")
    return 0


def _run_pointing(args, stager, source, extra) -> int:
    events_path = args.events
    if events_path is None and str(args.recording).endswith("-PSG.edf"):
        candidate = Path(str(args.recording)[: -len("-PSG.edf")] + "-events.json")
        events_path = candidate if candidate.is_file() else None
    if events_path is not None:
        events, stages = planted_events(events_path)
        if args.hypnogram is None:
            from engine.io.hypnogram import Hypnogram

            grid = Hypnogram.from_stages(stages, 30.0)
            source = stager.open(args.recording, grid, partial=True)
        events_of = planted_of(events, np.asarray(source.hypnogram.onsets), source.epoch_length)
        kind = f"planted events ({events_path.name})"
    else:

        def events_of(position: int) -> list[dict]:
            return detected_events(source, position, extra)

        kind = "events detected by engine.features"
    if not (np.asarray(source.hypnogram.stages) != int(Stage.UNK)).any():
        raise PSGError(f"{args.recording}: the pointing game needs scored epochs (--hypnogram)")
    positions = scored_positions(source, args.epochs, args.per_stage, args.seed)
    result = pointing_game(stager, source, events_of, positions,
                           methods=_methods(args.method), window_s=args.window,
                           batch_size=args.batch_size, seed=args.seed)  # fmt: skip
    result["events"] = kind
    result["recording"] = str(args.recording)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pointing_game.json").write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    markdown = pointing_markdown(result, f"{args.recording}: {kind}")
    (out / "pointing_game.md").write_text(markdown)
    print(markdown, end="")
    return 0


def run(args: argparse.Namespace) -> int:
    """``psgvlm explain``: one epoch, channel importance or the pointing game."""
    import torch

    if args.window <= 0:
        raise ModelError(f"--window must be positive, got {args.window}")
    if args.per_stage is not None and args.per_stage < 1:
        raise ModelError(f"--per-stage must be at least 1, got {args.per_stage}")
    _methods(args.method)
    if torch.get_num_threads() > 1 and not torch.cuda.is_available():
        torch.set_num_threads(1)
    text = str(args.recording)
    if args.channel_importance and _is_shards(text):
        require_model(args, "a shard input")
        if args.adapter is None and args.render_config is None:
            args.render_config = Path(text)  # zero-shot: the shards say how they were drawn
        return _run_importance(args, stager_from_args(args), None)
    if text.startswith(YASA_PREFIX) and not os.path.exists(text):
        require_model(args, "yasa:DIR")
    stager = stager_from_args(args, text)
    source, extra = open_source(text, stager.setup, args.hypnogram, args.montage, partial=True)
    if args.channel_importance:
        return _run_importance(args, stager, source)
    if args.pointing_game:
        return _run_pointing(args, stager, source, extra)
    _epoch_list(args.epoch, len(source))
    return _run_epoch(args, stager, source, extra)

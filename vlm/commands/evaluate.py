"""``psgvlm eval``: a model's agreement with a scorer, on shards or on recordings.

On shards (``--shards``) every scored sample's image is scored as in training. On
recordings (``RECORDING...``: EDF files, folders, globs, dataset specs such as
``sleep-edf:DIR``, ``prerau:DIR``) every scored epoch is drawn exactly as the model's
training images were and compared on the **scorer's own epoch grid**
(:mod:`vlm.sources`), with peers (YASA, :mod:`vlm.peers`) on the same epochs and, with
``--smooth hmm``, the model's stages after HMM smoothing (:mod:`vlm.smoothing`) beside the
raw per-epoch figures.

Montage-specific models: ``--adapter A --adapters B C`` stages each recording with the
model whose montage it fills with the most channels (:func:`vlm.defaults.pick_stager`: an
EEG-only recording goes to the EEG-only model, a full PSG to the EEG+EOG+EMG model).
Ensembles are spelled as in ``stage``, ``ask`` and ``chat``: ``--adapter A --ensemble B C``
averages the three models' stage probabilities. Without ``--model`` (and adapters), each
recording is staged by the shipped default stager its channels fill best
(:func:`vlm.defaults.default_stagers`); shards need ``--model``.

Command lines::

    psgvlm eval --model Qwen/Qwen2-VL-2B-Instruct --adapter runs/qwen/adapter \\
        --shards 'shards/test-*.tar' --out reports/qwen
    psgvlm eval prerau:../shared/data/prerau --model tiny:qwen2vl --adapter ADAPTER \\
        --peers yasa --out reports/prerau

write ``metrics.json``, ``metrics.md``, ``predictions.csv`` and ``confusion*.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DatasetError, ModelError, PSGError
from engine.perturb import parse_perturb_spec
from engine.stages import STAGE_NAMES, Stage

from ..defaults import pick_stager
from ..metrics import classification_metrics, group_metrics, metrics_markdown, plot_confusion
from ..model_options import add_model_arguments, require_model, stagers_from_args
from ..peers import PEERS, peer_available, yasa_stage
from ..robustness import evaluate_perturbed, plot_robustness, robustness_markdown
from ..runtime import Stager
from ..smoothing import SMOOTHERS, smooth_runs, synthetic_stage_hmm, training_class_prior
from ..sources import Recording, find_recordings, select_epochs

__all__ = ["comparison_markdown", "write_report", "add_arguments", "run"]

logger = logging.getLogger(__name__)


def write_report(
    out_dir: str | Path,
    results: dict[str, Any],
    markdown: str,
    rows: Sequence[dict[str, Any]],
    confusions: Mapping[str, Sequence[Sequence[int]]],
) -> Path:
    """Write ``metrics.json``, ``metrics.md``, ``predictions.csv`` and a confusion plot per
    entry of ``confusions`` (``"model"`` → ``confusion.png``, others ``confusion-NAME.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    (out / "metrics.md").write_text(markdown)
    if rows:
        with open(out / "predictions.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for name, confusion in confusions.items():
        file = "confusion.png" if name == "model" else f"confusion-{name.replace('+', '-')}.png"
        plot_confusion(confusion, out / file, name)
    return out


def _fmt(value: float) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.3f}"
    )


def comparison_markdown(results: Mapping[str, Any], title: str = "Recordings") -> str:
    """Markdown: side-by-side metrics of the model and its peers, then per recording."""
    smoothed = results.get("smoothed", {})
    columns = ["model", *smoothed, *results.get("peers", {})]
    metric_sets = [results["model"], *smoothed.values(), *results.get("peers", {}).values()]
    lines = [f"# {title}", ""]
    lines += [
        f"Compared on the same {results['model']['n']} scorer epochs "
        f"({', '.join(results['epoch_lengths'])}-s grid).",
        "",
    ]
    if smoothed:
        lines += [
            f"`model+hmm`: the model's per-epoch probabilities decoded by Viterbi with "
            f"a stage HMM from {results['smoothing']['hmm']} (no real labels).",
            "",
        ]
    lines += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = [("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("Cohen's κ", "kappa")]
    for label, key in rows:
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt(m.get(key)) if "refused" not in m else "refused" for m in metric_sets)
            + " |"
        )
    for name in STAGE_NAMES:
        support = results["model"]["support"][name]
        lines.append(
            f"| F1 {name} (n={support}) | "
            + " | ".join(
                _fmt(m["per_class_f1"][name]) if "refused" not in m else "—" for m in metric_sets
            )
            + " |"
        )
    for peer, metrics in results.get("peers", {}).items():
        if "refused" in metrics:
            lines += ["", f"{peer} did not run: {metrics['refused']}"]
        elif "model_same_epochs" in metrics:
            same = metrics["model_same_epochs"]
            lines += [
                "",
                f"{peer} staged {metrics['n']} of the {results['model']['n']} epochs; on those "
                f"epochs: model accuracy {_fmt(same['accuracy'])}, κ {_fmt(same['kappa'])}, "
                f"macro-F1 {_fmt(same['macro_f1'])}; {peer} accuracy "
                f"{_fmt(metrics['accuracy'])}, κ {_fmt(metrics['kappa'])}, macro-F1 "
                f"{_fmt(metrics['macro_f1'])}.",
            ]
            if metrics.get("skipped"):
                lines.append(f"{peer} skipped: " + "; ".join(metrics["skipped"]) + ".")
    lines += [
        "",
        "| recording | model | n | " + " | ".join(f"{c} acc" for c in columns) + " |",
        "|---" * (3 + len(columns)) + "|",
    ]
    for rec in results["recordings"]:
        accs = [
            _fmt(rec["metrics"][c]["accuracy"]) if "accuracy" in rec["metrics"].get(c, {}) else "—"
            for c in columns
        ]
        lines.append(
            f"| {rec['dataset']}/{rec['recording']} | {rec['model']} | {rec['n']} | "
            + " | ".join(accs)
            + " |"
        )
    if results.get("failed"):
        lines += ["", "Not evaluated:"]
        lines += [f"- {f['recording']}: {f['error']}" for f in results["failed"]]
    return "\n".join(lines) + "\n"


# -- shards ----------------------------------------------------------------------------------
def run_shards(args: argparse.Namespace) -> int:
    """``psgvlm eval --shards``: score every scored sample of the shards."""
    from tqdm import tqdm

    from ..data import build_question, expand_shards, read_samples

    require_model(args, "--shards")
    urls = expand_shards(args.shards, args.split)
    try:  # shards hold drawn images: the setup only sizes a tiny: model
        stager = Stager.from_adapter(
            args.model, args.adapter, args.ensemble,
            args.render_config or (None if args.adapter else urls[0]),
            args.device, args.quantization,
        )  # fmt: skip
    except ModelError as err:
        if args.render_config or args.ensemble:
            raise
        logger.info("no render setup (%s); scoring the shards' images as they are", err)
        stager = Stager(args.model, [args.adapter], None, args.device, args.quantization)
    logger.info("reading %d shard(s)", len(urls))
    samples = read_samples(urls, limit=args.limit)
    if not samples:
        raise PSGError(f"no scored epochs in {args.shards}")
    stager.load()
    probs = np.zeros((len(samples), len(STAGE_NAMES)))
    with tqdm(total=len(samples), desc="eval", unit="epoch", disable=args.no_progress) as bar:
        for lo in range(0, len(samples), 64):
            chunk = samples[lo : lo + 64]
            prompts = [build_question(s["meta"]) for s in chunk]
            probs[lo : lo + len(chunk)] = stager.score(
                [s["image"] for s in chunk], args.batch_size, prompts
            )
            bar.update(len(chunk))
    y_true = np.array([s["cls"] for s in samples])
    y_pred = probs.argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred)
    subjects = [str(s["meta"].get("subject", "")) for s in samples]
    metrics["per_subject"] = group_metrics(y_true, y_pred, subjects)
    metrics.update(
        model=str(args.model),
        adapter=str(args.adapter) if args.adapter else None,
        shards=[str(u) for u in urls],
    )
    print(
        f"n={metrics['n']} accuracy={metrics['accuracy']:.3f} "
        f"macro_f1={metrics['macro_f1']:.3f} kappa={metrics['kappa']:.3f}"
    )
    if args.out is not None:
        rows = [
            {
                "key": s["key"],
                "subject": subj,
                "recording": s["meta"].get("recording", ""),
                "epoch": s["meta"].get("epoch", ""),
                "true": STAGE_NAMES[t],
                "pred": STAGE_NAMES[p],
                **{f"p_{n}": f"{q:.5f}" for n, q in zip(STAGE_NAMES, pr)},
            }
            for s, subj, t, p, pr in zip(samples, subjects, y_true, y_pred, probs)
        ]
        markdown = metrics_markdown(metrics, f"{args.model} on {args.shards}")
        write_report(args.out, metrics, markdown, rows, {"model": metrics["confusion"]})
        print(args.out)
    return 0


# -- recordings ------------------------------------------------------------------------------
def _stagers(args: argparse.Namespace) -> list[Stager]:
    """One stager per montage-specific adapter, one ensemble stager, or (no ``--model``)
    the shipped default stagers."""
    if args.ensemble and args.adapters:
        raise ModelError(
            "--ensemble and --adapters do not mix: --adapters picks one model per recording "
            "by montage, --ensemble averages models of one montage"
        )
    if args.adapters and args.render_config:
        raise ModelError("--render-config applies to one adapter; each of --adapters has its own")
    stagers = stagers_from_args(args)
    for adapter in args.adapters:
        stagers.append(
            Stager.from_adapter(
                args.model, adapter, (), None, args.device, args.quantization, args.montage
            )  # fmt: skip
        )
    names = [s.name for s in stagers]
    for i, stager in enumerate(stagers):
        if names.count(stager.name) > 1:
            stager.name = f"{stager.name}-{i}"
    return stagers


def _usable_recordings(
    args: argparse.Namespace, inputs: list[str], stagers: list[Stager]
) -> tuple[list[tuple[Recording, Stager]], list[dict[str, str]]]:
    """Every input's recordings with the stager that reads them, checked before any model
    loads; what cannot be read is a failure (fatal unless ``--keep-going``)."""
    if args.hypnogram is not None and len(inputs) != 1:
        raise DatasetError("--hypnogram pairs with exactly one EDF file input")
    usable, failed = [], []
    for spec in inputs:
        try:
            found = find_recordings([spec], args.hypnogram, args.scorer)
        except PSGError as err:
            failed.append({"recording": spec, "error": str(err)})
            found = []
        for rec in found:
            try:
                usable.append((rec, pick_stager(stagers, rec.labels, str(rec), rec.rates)))
            except PSGError as err:
                failed.append({"recording": str(rec), "error": str(err)})
    if failed and not args.keep_going:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise PSGError(f"{failed[0]['error']}{more}; --keep-going evaluates the others")
    if not usable:
        raise DatasetError("none of the recordings can be evaluated")
    return usable, failed


def run_recordings(args: argparse.Namespace) -> int:
    """``psgvlm eval RECORDING...``: stage recordings, compare with the scorer and peers."""
    inputs = [*args.recordings, *args.recordings_opt]
    stagers = _stagers(args)
    peers = [p for p in PEERS if peer_available(p)] if args.peers is None else list(args.peers)
    usable, failed = _usable_recordings(args, inputs, stagers)
    hmm = synthetic_stage_hmm() if args.smooth == "hmm" else None
    y_true, y_model, y_smooth = [], [], []
    peer_runs: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {p: [] for p in peers}
    skipped: dict[str, list[str]] = {p: [] for p in peers}
    rows: list[dict[str, Any]] = []
    per_recording = []
    lengths = set()
    for rec, stager in usable:
        try:
            source = stager.open(rec)
            scored = np.flatnonzero(source.hypnogram.stages != int(Stage.UNK))
            if scored.size == 0:
                raise DatasetError(f"{rec}: no scored epochs")
        except PSGError as err:
            if not args.keep_going:
                raise
            failed.append({"recording": str(rec), "error": str(err)})
            continue
        index = len(y_true)
        hyp = source.hypnogram
        positions = scored[select_epochs(args.epochs, scored.size)]
        lengths.add(f"{hyp.epoch_length:g}")
        logger.info("%s/%s: %d epochs with model %s", rec.dataset, rec.name, positions.size,
                    stager.name)  # fmt: skip
        probs = stager.probabilities(source, positions, args.batch_size,
                                     progress=not args.no_progress)  # fmt: skip
        truth = hyp.stages[positions].astype(np.int64)
        pred = probs.argmax(axis=1)
        rec_metrics = {"model": classification_metrics(truth, pred)}
        smoothed = None
        if hmm is not None:
            prior = np.mean([training_class_prior(a, hmm) for a in stager.adapters], axis=0)
            smoothed = smooth_runs(probs, positions, hmm, prior)
            rec_metrics["model+hmm"] = classification_metrics(truth, smoothed)
            y_smooth.append(smoothed)
        eeg = next((c.label for c in source.channels if c.role == "eeg"), None)
        peer_stages = {}
        for peer in peers:
            if eeg is None:
                why = "the model's montage has no EEG channel"
            else:
                result = yasa_stage(*rec.raw(eeg), hyp, positions)
                why = result.refused
            if why is not None:
                skipped[peer].append(f"{rec.dataset}/{rec.name} ({why})")
                logger.warning("%s on %s: %s", peer, rec, why)
                continue
            covered = result.stages >= 0
            if not covered.all():
                logger.warning("%s: %d epochs lie outside %s's epochs; not compared to it",
                               rec, int((~covered).sum()), peer)  # fmt: skip
            peer_stages[peer] = result.stages
            peer_runs[peer].append((index, covered, result.stages))
            rec_metrics[peer] = classification_metrics(truth[covered], result.stages[covered])
        per_recording.append(
            {"dataset": rec.dataset, "recording": rec.name, "model": stager.name,
             "n": int(positions.size), "epoch_length": hyp.epoch_length, "metrics": rec_metrics}
        )  # fmt: skip
        y_true.append(truth)
        y_model.append(pred)
        for j, position in enumerate(positions.tolist()):
            row = {
                "dataset": rec.dataset, "recording": rec.name, "epoch": position,
                "onset": f"{hyp.onsets[position]:.3f}",
                "duration": f"{hyp.durations[position]:g}",
                "true": STAGE_NAMES[truth[j]], "model": STAGE_NAMES[pred[j]],
            }  # fmt: skip
            if smoothed is not None:
                row["model_hmm"] = STAGE_NAMES[smoothed[j]]
            row |= {p: STAGE_NAMES[s[j]] if s[j] >= 0 else "" for p, s in peer_stages.items()}
            row |= {f"p_{n}": f"{q:.5f}" for n, q in zip(STAGE_NAMES, probs[j])}
            rows.append(row)
    results: dict[str, Any] = {
        "model": classification_metrics(np.concatenate(y_true), np.concatenate(y_model)),
        "peers": {},
        "recordings": per_recording,
        "epoch_lengths": sorted(lengths),
        "models": [
            {"name": s.name, "base": s.model_id, "adapters": [str(a) for a in s.adapters],
             "montage": s.montage_spec, "render_config": s.setup.source,
             "window_seconds": s.setup.window_seconds}
            for s in stagers
        ],
        "inputs": inputs,
        "epochs": args.epochs,
        "failed": failed,
    }  # fmt: skip
    confusions = {"model": results["model"]["confusion"]}
    if hmm is not None:
        smoothed_metrics = classification_metrics(np.concatenate(y_true), np.concatenate(y_smooth))
        results["smoothed"] = {"model+hmm": smoothed_metrics}
        results["smoothing"] = {"hmm": hmm.source,
                                "transition": np.round(hmm.transition, 5).tolist()}  # fmt: skip
        confusions["model+hmm"] = smoothed_metrics["confusion"]
    for peer in peers:
        results["peers"][peer] = _peer_metrics(peer_runs[peer], skipped[peer], y_true, y_model)
        if "confusion" in results["peers"][peer]:
            confusions[peer] = results["peers"][peer]["confusion"]
    print(_summary_line(results))
    if args.out is not None:
        write_report(args.out, results, comparison_markdown(results), rows, confusions)
        print(args.out)
    for failure in failed:
        print(f"psgvlm eval: failed: {failure['recording']}: {failure['error']}", file=sys.stderr)
    return 1 if failed else 0


def _peer_metrics(
    runs: list[tuple[int, np.ndarray, np.ndarray]],
    skipped: list[str],
    y_true: list[np.ndarray],
    y_model: list[np.ndarray],
) -> dict[str, Any]:
    """A peer's pooled metrics on the epochs it staged, with the model's on the same epochs
    (``model_same_epochs``) and the recordings it skipped, when it did not stage them all."""
    if not runs:
        return {"refused": "; ".join(skipped) or "did not run"}
    truth = np.concatenate([y_true[i][covered] for i, covered, _ in runs])
    metrics = classification_metrics(truth, np.concatenate([s[c] for _, c, s in runs]))
    if skipped or any(not covered.all() for _, covered, _ in runs):
        model = np.concatenate([y_model[i][covered] for i, covered, _ in runs])
        metrics["model_same_epochs"] = classification_metrics(truth, model)
        metrics["skipped"] = skipped
    return metrics


def _summary_line(results: dict[str, Any]) -> str:
    columns = [("model", results["model"]), *results.get("smoothed", {}).items(),
               *results["peers"].items()]  # fmt: skip
    line = " ".join(
        f"{name}: acc={m['accuracy']:.3f} macro_f1={m['macro_f1']:.3f} kappa={m['kappa']:.3f}"
        for name, m in columns
        if "accuracy" in m
    )
    return f"n={results['model']['n']} {line}"


# -- recordings under perturbations ---------------------------------------------------------
def add_perturb_arguments(parser: argparse.ArgumentParser) -> None:
    """``--perturb SPEC`` and ``--perturb-seed`` (recordings only)."""
    group = parser.add_argument_group("robustness (re-render recordings under perturbations)")
    group.add_argument(
        "--perturb", metavar="SPEC",
        help="perturbations and levels, e.g. 'noise:snr=20,10,5;gain:0.5,2;line:50;wander;"
        "pops;drop:eog,emg;size:448x448' (grammar: engine.perturb)",
    )  # fmt: skip
    group.add_argument("--perturb-seed", type=int, default=0,
                       help="seed of the perturbations (recording i uses seed + i)")  # fmt: skip


def run_perturbed(args: argparse.Namespace) -> int:
    """``psgvlm eval RECORDING... --perturb SPEC``: metrics per perturbation level."""
    inputs = [*args.recordings, *args.recordings_opt]
    if not inputs:
        raise PSGError("--perturb re-renders signals: give RECORDING inputs, not --shards")
    if args.adapters:
        raise ModelError("--perturb evaluates one model: give --adapter only")
    perturbations = parse_perturb_spec(args.perturb)
    stagers = stagers_from_args(args)
    peers = (
        tuple(p for p in PEERS if peer_available(p)) if args.peers is None else tuple(args.peers)
    )
    recordings = find_recordings(inputs, args.hypnogram, args.scorer)
    stager = _one_stager(stagers, recordings)
    name = Path(args.adapter).resolve().parent.name if args.adapter else stager.name
    positions = []
    for recording in recordings:
        grid = stager.open(recording).hypnogram  # the epochs inside the signal
        scored = np.flatnonzero(grid.stages != int(Stage.UNK))
        if scored.size == 0:
            raise DatasetError(f"{recording}: no scored epochs")
        positions.append(scored[select_epochs(args.epochs, scored.size)])
    results = evaluate_perturbed(recordings, stager, perturbations, positions,
                                 batch_size=args.batch_size, seed=args.perturb_seed,
                                 peers=peers)  # fmt: skip
    markdown = robustness_markdown(results, f"Robustness of {name} on {', '.join(inputs)}")
    print(markdown, end="")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"inputs": inputs, "model": stager.model_id,
                   "adapter": str(stager.adapters[0]) if stager.adapters[0] else None,
                   "perturb": args.perturb, "seed": args.perturb_seed,
                   "stages": list(STAGE_NAMES), "results": results}  # fmt: skip
        (out / "robustness.json").write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
        (out / "robustness.md").write_text(markdown)
        print(plot_robustness(results, out / "robustness.png"))
    return 0


def _one_stager(stagers: list[Stager], recordings: list[Recording]) -> Stager:
    """The one stager every recording is perturbed under: the only one, or the shipped
    default that each recording's channels pick.

    Raises
    ------
    ModelError
        When the recordings pick different default models.
    """
    picked = {
        id(s): s for s in (pick_stager(stagers, r.labels, str(r), r.rates) for r in recordings)
    }
    if len(picked) > 1:
        names = ", ".join(s.name for s in picked.values())
        raise ModelError(f"--perturb evaluates one model, but these recordings fill different "
                         f"default models ({names}): evaluate them apart, or pass --model")  # fmt: skip
    return next(iter(picked.values()))


# -- command line ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm eval``."""
    parser.add_argument(
        "recordings", nargs="*", metavar="RECORDING", default=[],
        help="EDF files, folders, globs, dataset specs (sleep-edf:DIR...) or prerau:DIR "
        "(or give --shards)",
    )  # fmt: skip
    parser.add_argument("--recordings", dest="recordings_opt", nargs="+", metavar="RECORDING",
                        default=[], help="same as the positional RECORDING inputs")  # fmt: skip
    parser.add_argument("--shards", help="shard glob / brace pattern, or a directory (its "
                        "--split); instead of RECORDING inputs")  # fmt: skip
    parser.add_argument("--split", default="test",
                        help="split when --shards is a directory (default: test)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="report directory (default: print only)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="epochs per forward pass (default: 8)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="at most this many shard epochs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_arguments(
        parser,
        default="default, with no --adapter, --adapters or --ensemble: each recording is "
        "staged by the shipped stager whose montage it fills with the most channels "
        "(vlm/default_models); --shards need --model",
    )
    group = parser.add_argument_group("recordings")
    group.add_argument("--hypnogram", type=Path, help="hypnogram file of a single EDF recording")
    group.add_argument("--keep-going", action="store_true",
                       help="evaluate the recordings that can be read and list the others "
                       "(the exit status is still 1); default: stop at the first failure, "
                       "before any model loads")  # fmt: skip
    group.add_argument("--scorer", type=int, default=1,
                       help="hypnogram scorer where a dataset has several (default: 1)")  # fmt: skip
    group.add_argument(
        "--adapters", nargs="+", default=[], metavar="DIR",
        help="more montage-specific adapters; each recording is staged by the one whose "
        "montage it fills with the most channels",
    )  # fmt: skip
    group.add_argument(
        "--peers", nargs="*", default=None, choices=PEERS,
        help="peers to run beside the model on the same epochs (default: yasa when installed; "
        "--peers with no name for none)",
    )  # fmt: skip
    group.add_argument("--epochs", metavar="START:STOP",
                       help="compare only these scored epochs of each recording (peers still "
                       "see the whole recording; default: all)")  # fmt: skip
    group.add_argument(
        "--smooth", choices=SMOOTHERS, default="none",
        help="also report the stages after HMM smoothing of each night's probabilities "
        "(hmm: transitions counted on synthetic hypnograms; default: none)",
    )  # fmt: skip
    add_perturb_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate on shards, on recordings, or on recordings under perturbations."""
    if args.batch_size < 1:
        raise ModelError(f"--batch-size must be at least 1, got {args.batch_size}")
    has_recordings = bool(args.recordings or args.recordings_opt)
    if has_recordings and args.shards:
        raise PSGError("give --shards or RECORDING inputs, not both")
    if args.perturb:
        return run_perturbed(args)
    if has_recordings:
        return run_recordings(args)
    if not args.shards:
        raise PSGError("give --shards or RECORDING inputs")
    return run_shards(args)

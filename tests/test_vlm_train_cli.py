"""``psgvlm train`` / ``accelerate launch vlm/train.py`` as a user types them, at tiny size.

The run-directory policy (refused without ``--resume`` / ``--overwrite``), no option
abbreviations, help text with defaults, one-line errors under ``accelerate launch``,
evaluation shards (``auto`` finds the val split; missing ones are an error before the model
loads) and a corrupt sample in the middle of a training shard.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from psgvlm.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_vlm_train import _corrupt_member  # noqa: E402
from vlm_fixtures import write_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "vlm" / "configs" / "tiny_cpu.yaml")
#: Small and quick: two samples a step read in order (no shuffling), four evaluation samples.
QUICK = ["--per_device_train_batch_size", "2", "--shuffle_buffer", "1", "--eval_limit", "4",
         "--logging_steps", "1", "--save_steps", "1", "--eval_steps", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """One training shard (a corrupt PNG as its third sample) and a val split beside it."""
    out = tmp_path_factory.mktemp("shards")
    written = write_shards(
        out, subjects={"train": ["a", "b"], "val": ["c"]}, epochs_per_subject=12, per_shard=24
    )
    assert len(written["train"]) == 1
    _corrupt_member(written["train"][0], 2)
    return out


def _train(shards: Path, *options: str) -> int:
    return main(
        ["train", "--config", TINY, "--train_shards", str(shards / "train-*.tar"), *options]
    )


def _rows(run: Path, key: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if key in r]


@pytest.mark.slow
def test_run_directory_needs_resume_or_overwrite(shards, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    caplog.set_level("INFO")
    assert _train(shards, "--output_dir", str(run), "--max_steps", "2", *QUICK) == 0
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"eval_shards auto: the 1 val shard(s) in {shards}" in messages
    assert "skipped a corrupt sample (1 so far)" in messages
    assert "loading " in messages and "evaluating 4 samples" in messages  # slow steps say so
    assert [r["step"] for r in _rows(run, "eval_accuracy")] == [2]
    adapter = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    log = (run / "log.jsonl").read_text()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    with pytest.raises(SystemExit) as exit_:  # a typo is not taken for --max_steps
        _train(shards, "--output_dir", str(run), "--max_step", "5")
    assert exit_.value.code == 2
    assert "unrecognized arguments: --max_step 5" in capsys.readouterr().err
    # the same run directory again: refused before anything is written
    assert _train(shards, "--output_dir", str(run), "--max_steps", "5") == 2
    err = capsys.readouterr().err
    assert f"psgvlm train: error: {run} already holds a training run" in err
    assert "--resume auto" in err and "--overwrite" in err
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    assert (run / "log.jsonl").read_text() == log

    # --overwrite: the old run's checkpoints, adapter and log are gone
    options = [*QUICK, "--eval_strategy", "no"]
    assert (
        _train(shards, "--output_dir", str(run), "--overwrite", "--max_steps", "1", *options) == 0
    )
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]
    assert [r["step"] for r in _rows(run, "loss")] == [1] and not _rows(run, "eval_accuracy")
    # --resume auto continues it at step 1; its log goes on without a second history
    assert _train(shards, "--output_dir", str(run), "--resume", "auto", "--max_steps", "2",
                  *options) == 0  # fmt: skip
    assert [r["step"] for r in _rows(run, "loss")] == [1, 2]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_missing_eval_shards_fail_before_the_model_loads(shards, tmp_path, capsys):
    run = tmp_path / "run"
    missing = tmp_path / "nowhere" / "val-*.tar"
    assert _train(shards, "--output_dir", str(run), "--eval_shards", str(missing)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"psgvlm train: error: eval_shards: no shards match '{missing}' for split 'val'"]
    assert not run.exists()


def test_every_option_has_help_with_its_default(capsys):
    from vlm.train import build_parser

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--max_steps MAX_STEPS", "optimizer steps to train (default: 300)",
                     "--resume", "--overwrite", "--report_to", "--save_total_limit",
                     "--eval_shards", "(default: auto)", "--launch", "LoRA rank (default: 16)"):  # fmt: skip
        assert expected in text
    for action in build_parser()._actions:
        if action.dest != "help" and not (action.nargs == 0 and action.const is False):
            assert action.help and "(default: " in action.help, action.option_strings


@pytest.mark.slow
@pytest.mark.parametrize(
    "options,message",
    [
        (["--max_step", "5"], "unrecognized arguments: --max_step 5 (did you mean --max_steps?)"),
        (
            ["--eval_shards", "nowhere/val-*.tar"],
            "eval_shards: no shards match 'nowhere/val-*.tar'",
        ),
    ],
    ids=["abbreviation", "missing-eval-shards"],
)
def test_accelerate_launch_errors_in_one_line(shards, tmp_path, options, message):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "vlm" / "train.py"), "--config", TINY,
           "--train_shards", str(shards / "train-*.tar"), "--output_dir", str(tmp_path / "run"),
           *options]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"psgvlm train: error: {message}")
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr

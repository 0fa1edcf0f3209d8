"""The scripts behind bench/RESULTS.md, run in their smoke mode as a user runs them.

Each ``scripts/*.sh`` has a toy-size mode (``SMOKE=1``: 10-minute synthetic nights, three
training steps, tiny images, ten evaluation epochs). Here each is run with ``bash
scripts/X.sh`` and ``SMOKE=1``, its outputs pointed into a temporary folder (``RUN``,
``ROOT``, ``WORK``/``OUT``), and must exit 0 without a traceback and write what its header
says. The real recordings are pointed at a missing folder, as on a machine without
``../shared/data``, so every script takes its synthetic stand-in and says so.

The runs are independent processes, mostly one thread each, so they start together at
module setup (the ensemble after the single run, whose member it reuses) and each test
waits for its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
NAME = "pytest-smoke"  # the default stager's name: nothing may land under it in the repo

pytestmark = pytest.mark.slow

#: Test (by name) -> the chain of runs it waits for.
CHAINS = {
    "test_train_synth_eval_real_smoke": "synth",
    "test_train_synth_ensemble_smoke": "synth",
    "test_explain_report_smoke": "explain",
    "test_train_default_stager_smoke": "default",
    "test_dev_eval_smoke_via_default_stager": "default",
    "test_smoke_runs_write_nothing_into_the_repository": "default",
    "test_eval_each_smoke_on_the_default_stager": "default",
}


def _env(tmp: Path, chain: str, **extra: str) -> dict[str, str]:
    missing = str(tmp / "no-shared-data")
    return {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Each chain builds its tiny models in its own cache: concurrent runs would race to
        # build the same one.
        "PSGVLM_CACHE_DIR": str(tmp / f"cache-{chain}"),
        "SMOKE": "1",
        "DATA": missing,
        "PRERAU": missing + "/prerau",
        **extra,
    }


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


class Smoke:
    """The smoke runs this session's selected tests need, started at once."""

    def __init__(self, tmp: Path, chains: set[str]) -> None:
        self.tmp = tmp
        self.ens = tmp / "ensemble"
        self.explain = tmp / "explain"
        self.default = tmp / "default"
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(chains)))
        self.futures: dict[str, Future] = {}
        jobs = {"synth": self._synth, "explain": self._explain, "default": self._default}
        for chain in sorted(chains):
            self.futures[chain] = self.pool.submit(jobs[chain])

    def _synth(self) -> dict[str, subprocess.CompletedProcess]:
        # The single run is the ensemble's first member (seed 0), which the ensemble keeps.
        single = _run(
            "train_synth_eval_real.sh", _env(self.tmp, "synth", RUN=str(self.ens / "seed0"))
        )
        if single.returncode != 0:
            return {"single": single}
        ensemble = _run("train_synth_ensemble.sh", _env(self.tmp, "synth", ROOT=str(self.ens)))
        return {"single": single, "ensemble": ensemble}

    def _explain(self) -> subprocess.CompletedProcess:
        env = _env(
            self.tmp, "explain", WORK=str(self.explain / "work"), OUT=str(self.explain / "out")
        )
        return _run("explain_report.sh", env)

    def _default(self) -> subprocess.CompletedProcess:
        return _run(
            "train_default_stager.sh",
            _env(self.tmp, "default", RUN=str(self.default), NAME=NAME, SHORT_EPOCHS="0.5"),
        )

    def result(self, chain: str):
        return self.futures[chain].result()


@pytest.fixture(scope="module")
def smoke(request, tmp_path_factory):
    here = {
        item.name
        for item in request.session.items
        if getattr(item, "module", None) is sys.modules[__name__]  # doctest items have none
    }
    runs = Smoke(tmp_path_factory.mktemp("smoke"), {CHAINS[n] for n in here if n in CHAINS})
    yield runs
    runs.pool.shutdown(wait=True)


def _ok(done: subprocess.CompletedProcess) -> str:
    """Assert a clean exit; return stderr."""
    where = f"{done.args}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
    assert done.returncode == 0, where
    assert "Traceback" not in done.stderr, where
    return done.stderr


def _steps(timings: Path) -> list[str]:
    return [line.split("\t")[0] for line in timings.read_text().splitlines()]


def _in_order(steps: list[str], expected: list[str]) -> bool:
    """Whether ``expected`` occur in ``steps`` in this order (other steps may come between)."""
    rest = iter(steps)
    return all(name in rest for name in expected)


def _metrics(folder: Path, n: int = 10) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model"]["n"] == n and 0.0 <= metrics["model"]["accuracy"] <= 1.0
    assert "yasa" in metrics["peers"]
    assert (folder / "metrics.md").is_file() and (folder / "predictions.csv").is_file()
    return metrics


#: Scripts whose smoke mode another test file runs.
ELSEWHERE = {"gpu_check.sh": "test_gpu_check.py"}


def test_every_script_has_a_smoke_test():
    scripts = sorted(p.name for p in SCRIPTS.glob("*.sh"))
    here = {"train_synth_eval_real.sh", "train_synth_ensemble.sh", "explain_report.sh",
            "train_default_stager.sh", "dev_eval.sh", "eval_each.sh"}  # fmt: skip
    assert set(scripts) == here | set(ELSEWHERE), "a new script needs SMOKE=1 and a test"
    for name in scripts:
        text = (SCRIPTS / name).read_text()
        assert "SMOKE=1" in text and "SMOKE=${SMOKE:-0}" in text, name
        assert subprocess.run(["bash", "-n", str(SCRIPTS / name)]).returncode == 0, name
    for name, test in ELSEWHERE.items():
        assert f"scripts/{name}" in (ROOT / "tests" / test).read_text(), name


def test_a_failed_step_stops_the_script(tmp_path):
    """``step`` exits with the command's status, also after ``||`` (where set -e is off)."""
    script = (
        f"set -euo pipefail; TIMINGS={tmp_path}/t.tsv; . {SCRIPTS}/lib/timing.sh; "
        "step ok true; [ -f /no/such/file ] || step broken false; echo after"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 1 and "after" not in done.stdout
    assert "step broken failed (exit status 1)" in done.stderr
    assert _steps(tmp_path / "t.tsv") == ["ok"]
    assert _in_order(["a", "b", "c"], ["a", "c"]) and not _in_order(["a", "b"], ["b", "a"])


def test_dev_eval_needs_an_adapter_and_a_name():
    done = subprocess.run(["bash", str(SCRIPTS / "dev_eval.sh")], capture_output=True, text=True)
    assert done.returncode != 0 and "usage: scripts/dev_eval.sh ADAPTER NAME" in done.stderr


def test_train_synth_eval_real_smoke(smoke):
    err = _ok(smoke.result("synth")["single"])
    run = smoke.ens / "seed0"
    assert "smoke: no Prerau data" in err
    adapter = run / "train" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "render.json").is_file()
    assert (run / "train" / "checkpoint-3" / "trainer_state.json").is_file()
    assert "model+hmm" in _metrics(run / "eval")["smoothed"]  # --smooth hmm
    assert _in_order(_steps(run / "timings.tsv"), ["synth", "render", "train", "synth-heldout",
                                                   "eval"])  # fmt: skip


def test_train_synth_ensemble_smoke(smoke):
    runs = smoke.result("synth")
    _ok(runs["single"])
    err = _ok(runs["ensemble"])
    assert "smoke: no Prerau data" in err
    for seed in (0, 100):
        assert (smoke.ens / f"seed{seed}" / "train" / "adapter" / "adapter_config.json").is_file()
        assert (smoke.ens / f"seed{seed}.log").is_file()
    # The finished seed-0 run is kept: the ensemble did not train it again.
    assert _steps(smoke.ens / "seed0" / "timings.tsv").count("train") == 1
    assert "train" in _steps(smoke.ens / "seed100" / "timings.tsv")
    _metrics(smoke.ens / "eval")


def test_explain_report_smoke(smoke):
    err = _ok(smoke.result("explain"))
    out = smoke.explain / "out"
    assert "skipping pointing-yasa" in err and "skipping pointing-prerau" in err
    assert (smoke.explain / "work" / "run" / "adapter" / "adapter_config.json").is_file()
    _metrics(out / "eval", n=20)
    explained = sorted(out.glob("epoch_*.json"))
    assert explained and sorted(out.glob("epoch_*_occlusion.png"))
    methods = {a["method"] for a in json.loads(explained[0].read_text())["attributions"]}
    assert methods == {"occlusion", "gradxinput"}
    assert any((out / "pointing_synth").iterdir())
    assert (out / "importance" / "channel_importance.png").is_file()
    assert (out / "robustness" / "robustness.png").is_file()
    assert _in_order(_steps(out / "timings.tsv"), ["synth", "synth-heldout", "render", "train",
                                                   "eval", "explain", "pointing-synth",
                                                   "importance", "robustness"])  # fmt: skip


def test_train_default_stager_smoke(smoke):
    _ok(smoke.result("default"))
    run = smoke.default
    for name in ("model.safetensors", "config.json"):
        assert (run / "package" / "base" / name).is_file(), name
    for name in ("adapter_config.json", "adapter_model.safetensors", "render.json",
                 "calibration.json", "training_config.yaml"):  # fmt: skip
        assert (run / "package" / "adapter" / name).is_file(), name
    render = json.loads((run / "package" / "adapter" / "render.json").read_text())
    assert render["render"]["short_epochs"] == 0.5  # SHORT_EPOCHS reached psgvlm render
    for name in ("calibration.json", "calibration_fit.json", "metrics.json", "metrics.md"):
        assert (run / "results" / name).is_file(), name
    assert _in_order(_steps(run / "timings.tsv"), ["synth", "render", "train", "synth-cal",
                                                   "calibrate", "dev-eval"])  # fmt: skip


def test_dev_eval_smoke_via_default_stager(smoke):
    """scripts/dev_eval.sh in smoke mode, as train_default_stager.sh runs it."""
    err = _ok(smoke.result("default"))
    assert "smoke: no development recordings" in err
    _metrics(smoke.default / "dev-eval")
    assert (smoke.default / "results" / "metrics.md").read_text() == (
        smoke.default / "dev-eval" / "metrics.md"
    ).read_text()


def test_eval_each_smoke_on_the_default_stager(smoke, tmp_path):
    """scripts/eval_each.sh in smoke mode on the smoke run's packaged stager: each recording
    evaluated with the montage its pattern names, the predictions pooled into one table."""
    _ok(smoke.result("default"))
    package = smoke.default / "package"
    env = _env(smoke.tmp, "default", MODEL=str(package / "base"), OUT=str(tmp_path / "each"))
    done = _run("eval_each.sh", env, str(package / "adapter"), NAME, "eeg=%s")
    assert "smoke: no development recordings" in _ok(done)
    table = (tmp_path / "each" / "results" / "metrics.md").read_text()
    assert table == done.stdout
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"edf/synth-0100-PSG", "pooled"}
    assert rows["pooled"].split("|")[2].strip() == "10"
    predictions = tmp_path / "each" / "synth-0100-PSG.edf" / "predictions.csv"
    assert predictions.is_file() and len(predictions.read_text().splitlines()) == 11
    usage = _run("eval_each.sh", env, str(package / "adapter"), NAME)
    assert usage.returncode != 0 and "usage: scripts/eval_each.sh" in usage.stderr


def test_smoke_runs_write_nothing_into_the_repository(smoke):
    _ok(smoke.result("default"))
    assert not (ROOT / "vlm" / "default_models" / NAME).exists()
    assert not (ROOT / "bench" / "results" / "dev" / NAME).exists()
    assert not (ROOT / "out" / "dev" / "eval" / NAME).exists()

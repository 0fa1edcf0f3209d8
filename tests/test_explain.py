"""Attribution: occlusion geometry, patch mapping, words, pointing game, CLI and chat hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from engine.raster import RenderSpec, render
from engine.raster.layout import layout_for, strip_rows

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from psgvlm.cli import main as cli  # noqa: E402
from vlm import attribution, attribution_studies  # noqa: E402
from vlm.render_setup import RenderConfig  # noqa: E402
from vlm.tiny import build_tiny_model  # noqa: E402

SIZE = 112
CHANNELS = ("EEG C4-M1", "EOG E1-M2", "EMG chin")


def _spec(**kwargs) -> RenderSpec:
    return RenderSpec.for_roles(["eeg", "eog", "emg"], width=kwargs.pop("width", 120),
                                height=kwargs.pop("height", 90), **kwargs)  # fmt: skip


def _pixels(spec: RenderSpec, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signals = rng.normal(0, 40, size=(1, spec.channels, 3000)).astype(np.float32)
    return render(signals, spec)[0]


@pytest.mark.parametrize(
    "color,labels,grid", [(False, None, False), (True, ("C4", "E1", "chin"), True)]
)
def test_occlusion_changes_only_that_strip_region(color, labels, grid):
    spec = _spec(color=color, labels=labels, grid=grid)
    pixels = _pixels(spec)
    r0, r1 = strip_rows(spec.height, spec.channels)
    out = attribution.occlude(pixels, spec, 1, 30, 70)
    changed = np.any(out != pixels, axis=-1) if color else out != pixels
    rows, cols = np.nonzero(changed)
    assert rows.size > 0
    assert rows.min() >= r0[1] and rows.max() <= r1[1]
    assert cols.min() >= 30 and cols.max() < 70
    template = layout_for(spec).template
    region = out[r0[1] : r1[1] + 1, 30:70]
    expected = template[r0[1] : r1[1] + 1, 30:70]
    np.testing.assert_array_equal(region, expected if color else expected[..., 0])
    with pytest.raises(ModelError):
        attribution.occlude(pixels, spec, 3, 0, 10)
    with pytest.raises(ModelError):
        attribution.occlude(pixels[:10], spec, 0, 0, 10)


def test_grid_geometry_and_fill():
    spec = _spec(width=300, height=90, context=1)
    grid = attribution.image_grid(spec, 3.0)
    assert grid.shape == (3, 30)
    assert grid.edges_s[0] == -30.0 and grid.edges_s[-1] == 60.0
    values = np.arange(90.0).reshape(3, 30)
    image_map = grid.fill(values)
    assert image_map.shape == (spec.height, spec.width)
    np.testing.assert_allclose(grid.cell_means(image_map), values)
    assert grid.columns_of(0.0, 3.0) == (100, 110)


def test_patches_to_image_inverts_the_qwen2vl_processor():
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=SIZE * SIZE, max_pixels=SIZE * SIZE)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    out = processor(images=[image], return_tensors="pt")
    frames = attribution.patches_to_image(
        out["pixel_values"].numpy(), out["image_grid_thw"][0].tolist()
    )
    mean = np.array(processor.image_mean)[:, None, None]
    std = np.array(processor.image_std)[:, None, None]
    np.testing.assert_allclose(frames[0] * std + mean, image.transpose(2, 0, 1) / 255.0, atol=1e-5)


def test_where_decision_rested_joins_peak_and_events():
    grid = np.zeros((3, 10))
    grid[0, 4:6] = [0.3, 0.2]
    grid[2, 0] = 0.05
    events = [
        {"kind": "spindle", "channel": "EEG C4-M1", "start": 12.9, "end": 13.8},
        {"kind": "rapid_eye_movement", "channel": "EOG E1-M2", "start": 1, "end": 2},
    ]
    text = attribution.where_decision_rested(grid, events, CHANNELS)
    assert text.startswith("The decision rested mostly on C4-M1 between 12 and 18 s (91%")
    assert "a sleep spindle was detected (12.9-13.8 s)" in text
    assert "no sleep event" in attribution.where_decision_rested(grid, [], CHANNELS)
    assert "did not rest" in attribution.where_decision_rested(-grid, events, CHANNELS)
    with pytest.raises(ModelError):
        attribution.where_decision_rested(grid[:2], events, CHANNELS)


def test_energy_in_boxes_and_chance():
    spec = _spec(width=300, height=90)
    grid = attribution.image_grid(spec, 3.0)
    boxes = attribution_studies.event_boxes(
        [{"kind": "spindle", "channel": "EEG C4-M1", "start": 12.0, "end": 15.0},
         {"kind": "spindle", "channel": "EEG F4-M1", "start": 1.0, "end": 2.0}],
        CHANNELS, grid, ["spindle"],
    )  # fmt: skip
    assert boxes == [(0, 120, 150)]
    image_map = np.zeros((90, 300))
    image_map[0:30, 120:150] = 1.0
    assert attribution_studies.energy_in_boxes(image_map, boxes, grid) == pytest.approx(1.0)
    energy, hit = attribution_studies.chance_energy(
        image_map, boxes, grid, np.random.default_rng(0)
    )
    assert energy < 0.3 and hit < 0.5
    energy_any, _ = attribution_studies.chance_energy(image_map, boxes, grid, np.random.default_rng(0),
                                          same_strip=False)  # fmt: skip
    assert energy_any < energy + 0.05


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny random Qwen2-VL, a render.json and a 4-epoch synthetic night."""
    from engine.synth import synth_night, write_night

    root = tmp_path_factory.mktemp("explain")
    model_dir = build_tiny_model("qwen2vl", root / "tiny", image_size=(SIZE, SIZE), hidden_size=64)
    spec = RenderSpec.for_roles(["eeg", "eog", "emg"], width=SIZE, height=SIZE)
    channels = [
        {"role": r, "name": n} for r, n in (("eeg", "C4-M1"), ("eog", "E1-M2"), ("emg", "chin"))
    ]
    config = RenderConfig(channels=channels, render=spec.to_dict())
    config.save(root)
    night = synth_night(5, fs=100.0, channels=CHANNELS, stages=[0, 2, 2, 3], randomize=False)
    psg, hyp = write_night(night, root / "night")
    return {"root": root, "model": model_dir, "config": config, "psg": psg, "hyp": hyp,
            "render_json": root / "render.json"}  # fmt: skip


def test_explain_command_writes_png_and_json(setup, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    code = cli(["explain", str(setup["psg"]), "--epoch", "1", "--model", str(setup["model"]),
                "--render-config", str(setup["render_json"]), "--hypnogram", str(setup["hyp"]),
                "--out", str(out), "--window", "10", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert (out / "epoch_00001_occlusion.png").stat().st_size > 1000
    assert (out / "epoch_00001_gradxinput.png").stat().st_size > 1000
    data = json.loads((out / "epoch_00001.json").read_text())
    methods = {a["method"]: a for a in data["attributions"]}
    assert set(methods) == {"occlusion", "gradxinput"}
    for attr in methods.values():
        assert attr["image_shape"] == [SIZE, SIZE]
        assert np.array(attr["grid"]).shape == (3, 3)
        assert attr["window_edges_s"] == [0.0, 10.0, 20.0, 30.0]
        assert sum(attr["probabilities"].values()) == pytest.approx(1.0)
        assert attr["target"] == attr["predicted"]
    assert data["where"].startswith(("The decision rested", "No part of the image"))
    assert "epoch 1 (scored N2): " in capsys.readouterr().out


def test_attribution_maps_have_the_image_geometry(setup):
    from vlm.runtime import Stager

    torch.set_num_threads(1)
    stager = Stager(str(setup["model"]), [None], setup["config"])
    source = stager.open(setup["psg"], setup["hyp"])
    pixels, attributions = attribution.explain_epoch(stager, source, 2, window_s=15.0,
                                                     target="N3")  # fmt: skip
    assert pixels.shape == (SIZE, SIZE)
    for attr in attributions:
        assert attr.image_map.shape == (SIZE, SIZE)
        assert attr.target == "N3" and attr.grid.shape == (3, 2)
    grad = attributions[1].image_map
    assert np.isfinite(grad).all() and grad.sum() > 0

    def events_of(position: int) -> list[dict]:
        return [{"kind": "slow_wave", "channel": "EEG C4-M1", "start": 5.0, "end": 9.0}]

    result = attribution_studies.pointing_game(stager, source, events_of, [3],
                                               methods=("gradxinput",), window_s=15.0)  # fmt: skip
    row = result["per_stage"]["gradxinput"]["N3"]
    assert row["n"] == 1 and 0.0 <= row["energy"] <= 1.0 and 0.0 <= row["chance_any"] <= 1.0

    from vlm.answers import EpochChat

    chat = EpochChat(source, stager, setup["root"] / "chat", epoch=1)
    answer = chat.ask("where did you look?")
    assert answer.intent == "where"
    assert "decision" in answer.text


def test_real_snippets_render_what_is_there(setup):
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data / "yasa").is_dir():
        pytest.skip("../shared/data is absent")
    from vlm.sources import open_source

    source, extra = open_source(f"yasa:{data / 'yasa'}", setup["config"], partial=True)
    assert [int(s) for s in source.hypnogram.stages[:3]] == [2, 3, 4]
    first = source.epoch(0).signals[0]
    assert np.isfinite(first[0, :1400]).all() and np.isnan(first[0, 1600:]).all()
    assert np.isnan(first[1:]).all()  # no EOG/EMG in the N2 excerpt: empty strips
    kinds = {e["kind"] for e in attribution_studies.detected_events(source, 0, extra)}
    assert "spindle" in kinds
    assert any(e["kind"] == "rapid_eye_movement" for p in range(2, 8)
               for e in attribution_studies.detected_events(source, p, extra))  # fmt: skip

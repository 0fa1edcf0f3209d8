"""engine.raster: spec validation, layout, and what the CPU kernel draws."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import RenderError
from engine.raster import ROLE_SCALES, RenderSpec, render
from engine.raster.glyphs import glyph_atlas, label_bitmap
from engine.raster.kernels import column_edges
from engine.raster.layout import BAND_GREY, MAJOR_GRID_GREY, layout_for, strip_rows

W, H = 64, 48


def spec_of(channels: int = 2, **kwargs) -> RenderSpec:
    kwargs.setdefault("width", W)
    kwargs.setdefault("height", H)
    return RenderSpec(scales_uv=(100.0,) * channels, **kwargs)


def inked_rows(image: np.ndarray, column: int) -> np.ndarray:
    return np.flatnonzero(image[:, column] < 255)


# ---------------------------------------------------------------- RenderSpec


def test_for_roles_uses_role_scales_and_defaults():
    spec = RenderSpec.for_roles(["eeg", "EOG", "emg", "ecg"], labels=("a", "b", "c", "d"))
    assert spec.scales_uv == (75.0, 150.0, 50.0, 1000.0)
    assert (spec.width, spec.height, spec.channels) == (448, 224, 4)
    assert ROLE_SCALES["eeg"] == 75.0
    assert json.loads(json.dumps(spec.to_dict()))["scales_uv"] == [75.0, 150.0, 50.0, 1000.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scales_uv": ()},
        {"scales_uv": (75.0, -1.0)},
        {"scales_uv": (75.0,), "width": 31},
        {"scales_uv": (75.0,), "height": 10_000},
        {"scales_uv": (75.0,), "line_width": 0},
        {"scales_uv": (75.0,), "ink_levels": 0},
        {"scales_uv": (75.0,), "context": -1},
        {"scales_uv": (75.0,), "labels": ("a", "b")},
        {"scales_uv": (75.0,), "labels": "a"},
        {"scales_uv": (75.0,), "antialias": "yes"},
        {"scales_uv": (1.0,) * 40, "height": 32},
    ],
    ids=lambda kw: ",".join(kw),
)
def test_spec_rejects_bad_values(kwargs):
    with pytest.raises(RenderError):
        RenderSpec(**kwargs)


def test_for_roles_rejects_unknown_role():
    with pytest.raises(RenderError, match="resp"):
        RenderSpec.for_roles(["eeg", "resp"])


def test_spec_is_frozen_and_hashable():
    spec = spec_of()
    with pytest.raises(AttributeError):
        spec.width = 10  # type: ignore[misc]
    assert layout_for(spec) is layout_for(spec_of())


# ---------------------------------------------------------------- layout


def test_strips_tile_the_image():
    first, last = strip_rows(224, 6)
    assert first[0] == 0 and last[-1] == 223
    assert np.all(first[1:] == last[:-1] + 1)


def test_column_edges_partition_samples():
    first, frac = column_edges(3000, 448)
    assert first[0] == 0 and first[-1] == 3000
    assert np.all(np.diff(first) >= 6)
    # Sample i sits at (i + 0.5) W / S, inside column floor of that.
    i = np.arange(3000)
    assert np.array_equal(np.searchsorted(first, i, side="right") - 1, (2 * i + 1) * 448 // 6000)
    assert frac[0] == -1 and frac[-1] == -1 and np.all(frac[1:-1] > 0)


# ---------------------------------------------------------------- drawing


def test_output_shape_dtype_and_white_background():
    spec = spec_of(3)
    signals = np.full((4, 3, 100), np.nan, np.float32)
    images = render(signals, spec)
    assert images.shape == (4, H, W) and images.dtype == np.uint8
    assert np.all(images == 255)
    colour = render(signals, spec_of(3, color=True))
    assert colour.shape == (4, H, W, 3)


@pytest.mark.parametrize("value, where", [(0.0, "middle"), (100.0, "top"), (-100.0, "bottom")])
def test_constant_signal_lands_on_its_row(value, where):
    spec = spec_of(2, height=50)  # strips of 25 rows: 0-24 and 25-49
    signals = np.full((1, 2, 300), value, np.float32)
    image = render(signals, spec)[0]
    expected = {"middle": (12, 37), "top": (0, 25), "bottom": (24, 49)}[where]
    for column in range(2, W - 2):
        assert inked_rows(image, column).tolist() == list(expected)
    assert np.all(image[list(expected), 2:-2] == 0)


def test_scale_is_fixed_not_autoscaled():
    spec = spec_of(1)
    t = np.linspace(0, 4 * np.pi, 600)
    small = (20 * np.sin(t))[None, None].astype(np.float32)
    large = (60 * np.sin(t))[None, None].astype(np.float32)
    rows_small = np.flatnonzero((render(small, spec)[0] < 255).any(axis=1))
    rows_large = np.flatnonzero((render(large, spec)[0] < 255).any(axis=1))
    assert rows_large.max() - rows_large.min() > 2 * (rows_small.max() - rows_small.min())


def test_one_sample_spike_is_visible_in_dense_signal():
    spec = spec_of(1)
    signals = np.zeros((1, 1, 6000), np.float32)
    signals[0, 0, 3001] = 100.0
    image = render(signals, spec)[0]
    column = (2 * 3001 + 1) * W // (2 * 6000)
    assert image[0, column] == 0
    assert (image[0] < 255).sum() <= 2


def test_steep_segments_join_between_sparse_samples():
    spec = spec_of(1)
    signals = np.array([[[-100.0, 100.0, -100.0, 100.0]]], np.float32)
    image = render(signals, spec)[0]
    # Between the first and last sample every column is inked (no holes).
    assert all(inked_rows(image, c).size for c in range(8, 56))


def test_nan_breaks_the_line():
    spec = spec_of(1)
    signals = np.zeros((1, 1, 640), np.float32)
    signals[0, 0, 200:400] = np.nan
    image = render(signals, spec)[0]
    inked = (image < 255).any(axis=0)
    assert inked[:19].all() and inked[41:].all()
    assert not inked[21:39].any()


def test_infinities_are_drawn_off_scale_not_crashing():
    spec = spec_of(2)
    signals = np.zeros((1, 2, 100), np.float32)
    signals[0, 0, 50] = np.inf
    signals[0, 1, 50] = -np.inf
    image = render(signals, spec)[0]
    assert image[0, 32] < 255 and image[H - 1, 32] < 255


def test_traces_stay_in_strip_unless_overlap():
    signals = np.zeros((1, 2, 200), np.float32)
    signals[0, 1] = 150.0  # 1.5 x scale: channel 1 runs into channel 0's strip
    clipped = render(signals, spec_of(2))[0]
    free = render(signals, spec_of(2, overlap=True))[0]
    centre_1 = (24 + 47 + 1) / 2 - 1.5 * (47 - 24) / 2  # continuous row of +150 µV
    row = int(centre_1)
    assert row < 24
    assert np.all(clipped[row, 3:-3] == 255) and np.all(free[row, 3:-3] < 255)
    assert np.array_equal(clipped[24:], np.full_like(clipped[24:], 255))


def test_antialias_grey_levels_follow_ink_levels():
    t = np.linspace(0, 6 * np.pi, 900)
    signals = (70 * np.sin(t))[None, None].astype(np.float32)
    for levels in (3, 5, 15):
        values = np.unique(render(signals, spec_of(1, ink_levels=levels))[0])
        assert np.all((255 - values) % (255 // levels) == 0)
        assert 2 < values.size <= levels + 1
    aliased = np.unique(render(signals, spec_of(1, antialias=False))[0])
    assert aliased.tolist() == [0, 255]


def test_line_width_thickens_flat_line():
    signals = np.full((1, 1, 200), 10.0, np.float32)
    thin = (render(signals, spec_of(1))[0] < 255).sum(axis=0)[10]
    thick = (render(signals, spec_of(1, line_width=4.0))[0] < 255).sum(axis=0)[10]
    assert thick >= thin + 3


def test_epochs_render_independently_and_out_buffer_is_used():
    rng = np.random.default_rng(1)
    signals = (30 * rng.standard_normal((5, 2, 700))).astype(np.float32)
    spec = spec_of(2)
    batch = render(signals, spec)
    out = np.empty((5, H, W, 1), np.uint8)
    again = render(signals, spec, out=out)
    assert np.shares_memory(again, out) and np.array_equal(again, batch)
    assert np.array_equal(render(signals[3:4], spec)[0], batch[3])
    with pytest.raises(RenderError):
        render(signals, spec, out=np.empty((5, H, W), np.uint8))


@pytest.mark.parametrize("color", [False, True])
def test_one_thread_draws_the_same_pixels_as_several(color):
    """A process on one numba thread (a --workers N worker) draws with the kernel's plain
    loop instead of prange: the same bytes, anti-aliased grey or colour, NaN gaps included."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: numba has no second thread to draw with")
    rng = np.random.default_rng(7)
    signals = (40 * rng.standard_normal((9, 3, 900))).astype(np.float32)
    signals[2, 1, 100:180] = np.nan
    spec = spec_of(3, color=color, line_width=1.5)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = render(signals, spec).copy()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        several = render(signals, spec)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(one, several)
    assert (one < 255).any()


def test_colour_traces_use_one_colour_per_channel():
    signals = np.zeros((1, 2, 200), np.float32)
    image = render(signals, spec_of(2, color=True))[0]
    top = image[12, 10]
    bottom = image[36, 10]
    assert not np.array_equal(top, bottom) and top.max() < 200 and bottom.max() < 200


def test_grid_context_band_and_labels():
    spec = spec_of(2, width=180, grid=True, context=1, labels=("C4", "E1"))
    image = render(np.full((1, 2, 900), np.nan, np.float32), spec)[0]
    # The target epoch (middle third) is shaded, the context is not.
    assert image[H // 2, 93] == BAND_GREY and image[H // 2, 33] == 255
    assert (image[:, 60] < BAND_GREY).all() and (image[:, 120] < BAND_GREY).all()
    # Major grid every 5 s: 90 s over 180 px -> every 10 px.
    assert image[H // 2, 10] == MAJOR_GRID_GREY
    # Labels are drawn at the top left of each strip.
    assert (image[1:12, 2:20] < 128).any() and (image[25:36, 2:20] < 128).any()


def test_glyph_atlas_is_built_once_and_labels_have_ink():
    atlas = glyph_atlas()
    assert atlas is glyph_atlas()
    assert atlas.coverage.shape[0] == 95 and 6 <= atlas.height <= 14
    bitmap = label_bitmap("EEG C4-M1")
    assert bitmap.max() == 255 and bitmap.shape[1] > 30
    assert np.all(bitmap % 17 == 0)


@pytest.mark.parametrize(
    "signals, match",
    [
        (np.zeros((2, 100), np.float32), "epochs, channels, samples"),
        (np.zeros((1, 3, 100), np.float32), "3 channels"),
        (np.zeros((1, 2, 0), np.float32), "no samples"),
        (np.zeros((1, 2, 5), "U1"), "real numbers"),
        ([[[0.0]]], "NumPy array"),
    ],
)
def test_render_rejects_bad_signals(signals, match):
    with pytest.raises(RenderError, match=match):
        render(signals, spec_of(2))

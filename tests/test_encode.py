"""engine.encode: PNG (1/2/4/8-bit), JPEG, npy round trips, batches and errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.encode import decode_image, encode_batch, encode_image, png_bit_depth
from engine.errors import RenderError


def ramp(step: int, shape=(40, 61)) -> np.ndarray:
    rng = np.random.default_rng(step)
    return (rng.integers(0, 256 // step + 1, shape) * step).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("step, depth", [(255, 1), (85, 2), (17, 4), (1, 8)])
def test_png_picks_smallest_depth_and_round_trips(step, depth):
    img = ramp(step)
    assert png_bit_depth(img) == depth
    data = encode_image(img, "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as decoded:  # any PNG reader must agree
        assert decoded.size == (61, 40)
    assert np.array_equal(decode_image(data, "png"), img)


def test_low_depth_png_is_smaller_than_8_bit():
    img = np.full((224, 448), 255, np.uint8)
    img[100:103, :] = 0
    img[103, :] = 170
    low = encode_image(img, "png")
    eight = encode_image(np.where(img == 170, 171, img).astype(np.uint8), "png")
    assert len(low) < len(eight)


def test_rgb_png_jpeg_and_npy():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_image(rgb, "png"), "png"), rgb)
    smooth = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))
    jpeg = encode_image(smooth, "jpeg", quality=95)
    assert jpeg[:2] == b"\xff\xd8"
    assert np.abs(decode_image(jpeg, "jpg").astype(int) - smooth).mean() < 3
    assert len(encode_image(smooth, "jpg", quality=20)) < len(jpeg)
    assert np.array_equal(decode_image(encode_image(rgb, "npy"), "npy"), rgb)


def test_batch_threads_match_serial():
    images = np.stack([ramp(17) for _ in range(6)])
    serial = encode_batch(images, "png")
    assert encode_batch(images, "png", threads=3) == serial
    assert encode_batch(list(images), "png", level=6)[0] != b""
    assert [np.array_equal(decode_image(b), i) for b, i in zip(serial, images)] == [True] * 6


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_image(np.zeros((4, 4), np.float32)),
        lambda: encode_image(np.zeros((4, 4, 2), np.uint8)),
        lambda: encode_image(np.zeros((4, 4), np.uint8), "gif"),
        lambda: encode_image(np.zeros((4, 4), np.uint8), "jpg", quality=0),
        lambda: encode_image(np.zeros((4, 4), np.uint8), "png", level=10),
        lambda: encode_batch(np.zeros((2, 4, 4), np.uint8), "png", threads=0),
        lambda: encode_batch(np.zeros((4, 4), np.uint8), "png"),
        lambda: decode_image(b"not a png", "png"),
    ],
)
def test_bad_input_raises_render_error(call):
    with pytest.raises(RenderError):
        call()

"""Image encoders: PNG (lossless), JPEG and raw ``.npy`` bytes for shards.

PNG of grey images whose values all lie on a 2-, 4- or 16-level grey ramp (multiples of
255, 85 or 17, which the rasterizer keeps to by default) is written at 1, 2 or 4 bits
per pixel: the rows are packed by a small numba kernel and deflated with zlib-ng
(``imagecodecs``), which is several times faster and smaller than 8-bit PNG. Other
images go through ``imagecodecs.png_encode`` (libpng), or Pillow when imagecodecs lacks
PNG. JPEG uses libjpeg-turbo through imagecodecs (Pillow as fallback).
:func:`encode_batch` can spread a batch over threads: the codecs release the GIL.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .errors import RenderError

try:
    import imagecodecs
except ImportError:  # optional: Pillow is the fallback
    imagecodecs = None

__all__ = [
    "FORMATS",
    "encode_image",
    "encode_batch",
    "decode_image",
    "encode_jpeg_cuda",
    "png_bit_depth",
]

#: Formats understood by :func:`encode_image` (also the shard field names).
FORMATS: tuple[str, ...] = ("png", "jpg", "npy")
_ALIASES = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "npy": "npy"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _has(codec: str) -> bool:
    return imagecodecs is not None and getattr(imagecodecs, codec).available


def _format(fmt: str) -> str:
    try:
        return _ALIASES[str(fmt).lower()]
    except KeyError:
        raise RenderError(f"unknown image format {fmt!r}; expected one of {FORMATS}") from None


def _check_image(img: object) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise RenderError(
            f"images must be uint8 NumPy arrays, got {type(img).__name__} "
            f"{getattr(img, 'dtype', '')}"
        )
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise RenderError(f"an image must be (H, W) grey or (H, W, 3) RGB, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return np.ascontiguousarray(img)


def _depth_table() -> np.ndarray:
    values = np.arange(256)
    table = np.full(256, 8, np.uint8)
    table[values % 17 == 0] = 4
    table[values % 85 == 0] = 2
    table[values % 255 == 0] = 1
    return table


#: Smallest grey bit depth that holds each 8-bit value exactly.
_DEPTH_OF_VALUE = _depth_table()


@numba.njit(nogil=True, cache=True)
def _bit_depth(flat, table):
    depth = 1
    for i in range(flat.size):
        needed = table[flat[i]]
        if needed > depth:
            if needed == 8:
                return 8
            depth = needed
    return depth


def png_bit_depth(img: np.ndarray) -> int:
    """Smallest PNG grey bit depth (1, 2, 4 or 8) that holds a uint8 grey image exactly."""
    return int(_bit_depth(np.ascontiguousarray(img).reshape(-1), _DEPTH_OF_VALUE))


def _code_table() -> np.ndarray:
    codes = np.zeros((5, 256), np.uint8)
    for depth in (1, 2, 4):
        codes[depth] = np.arange(256) // (255 // ((1 << depth) - 1))
    return codes


#: 8-bit value -> sample code at 1, 2 and 4 bits (row index = depth).
_CODES = _code_table()


@numba.njit(nogil=True, cache=True)
def _pack_rows(img, depth, codes, out):
    """PNG scanlines of ``img`` at ``depth`` bits into ``out`` (``H, 1 + row bytes``).

    ``codes`` maps 8-bit values to ``depth``-bit samples. Filter "Up" (byte minus the
    byte above), which suits mostly-blank line drawings.
    """
    height, width = img.shape
    per_byte = 8 // depth
    n_bytes = out.shape[1] - 1
    padded = np.zeros(n_bytes * per_byte, np.uint8)
    previous = np.zeros(n_bytes, np.uint8)
    for r in range(height):
        for x in range(width):
            padded[x] = codes[img[r, x]]
        out[r, 0] = 2  # PNG filter type Up
        for b in range(n_bytes):
            packed = 0
            base = b * per_byte
            for k in range(per_byte):
                packed = (packed << depth) | padded[base + k]
            out[r, b + 1] = np.uint8(packed - previous[b])
            previous[b] = packed


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _deflate(data: np.ndarray, level: int) -> bytes:
    if _has("ZLIBNG"):
        return imagecodecs.zlibng_encode(data, level=level)
    if _has("ZLIB"):
        return imagecodecs.zlib_encode(data, level=level)
    return zlib.compress(data.tobytes(), level)


def _low_depth_png(img: np.ndarray, depth: int, level: int) -> bytes:
    height, width = img.shape
    rows = np.empty((height, 1 + (width * depth + 7) // 8), np.uint8)
    _pack_rows(img, depth, _CODES[depth], rows)
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(rows, level)),
            _chunk(b"IEND", b""),
        )
    )


def _encode_png(img: np.ndarray, level: int) -> bytes:
    if img.ndim == 2:
        depth = png_bit_depth(img)
        if depth < 8:
            return _low_depth_png(img, depth, level)
    if _has("PNG"):
        return imagecodecs.png_encode(img, level=level)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    if _has("JPEG8"):
        return imagecodecs.jpeg8_encode(img, level=quality)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _check_options(quality: int, level: int) -> None:
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise RenderError(f"JPEG quality must be an integer 1-100, got {quality!r}")
    if not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise RenderError(f"PNG compression level must be an integer 0-9, got {level!r}")


def encode_image(img: np.ndarray, fmt: str = "png", *, quality: int = 90, level: int = 1) -> bytes:
    """Encode one image.

    Parameters
    ----------
    img : numpy.ndarray
        uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB.
    fmt : {"png", "jpg", "npy"}
        ``"jpeg"`` is accepted for ``"jpg"``.
    quality : int
        JPEG quality (1-100).
    level : int
        PNG deflate level (0-9); 1 is fast and near the size of higher levels on line
        drawings.

    Returns
    -------
    bytes

    Raises
    ------
    RenderError
        For an unknown format, a non-uint8 image or options out of range.
    """
    fmt = _format(fmt)
    _check_options(quality, level)
    img = _check_image(img)
    if fmt == "png":
        return _encode_png(img, int(level))
    if fmt == "jpg":
        return _encode_jpeg(img, int(quality))
    buffer = io.BytesIO()
    np.save(buffer, img, allow_pickle=False)
    return buffer.getvalue()


def encode_batch(
    images: np.ndarray | Sequence[np.ndarray],
    fmt: str = "png",
    *,
    quality: int = 90,
    level: int = 1,
    threads: int = 1,
) -> list[bytes]:
    """Encode a batch of images, optionally on a pool of ``threads`` threads.

    Parameters
    ----------
    images : numpy.ndarray or sequence of numpy.ndarray
        ``(N, H, W)`` / ``(N, H, W, 3)`` uint8, or a list of single images.
    fmt, quality, level
        As for :func:`encode_image`.
    threads : int
        Worker threads (the codecs release the GIL); 1 encodes in the calling thread.

    Returns
    -------
    list of bytes
        One encoded image per input, in order.
    """
    fmt = _format(fmt)
    _check_options(quality, level)
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise RenderError(f"threads must be a positive integer, got {threads!r}")
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise RenderError(f"a batch must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")

    def one(img: np.ndarray) -> bytes:
        return encode_image(img, fmt, quality=quality, level=level)

    if threads == 1 or len(images) < 2:
        return [one(img) for img in images]
    with ThreadPoolExecutor(max_workers=int(threads)) as pool:
        return list(pool.map(one, images))


def decode_image(data: bytes, fmt: str = "png") -> np.ndarray:
    """Decode bytes made by :func:`encode_image` back to a uint8 array.

    Low-bit-depth grey PNGs come back on the 0-255 scale (a 4-bit value ``k`` as ``17 k``).
    """
    fmt = _format(fmt)
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("L", "RGB"):
                image = image.convert("L" if image.mode in ("1", "I", "I;16", "P") else "RGB")
            return np.asarray(image).copy()
    except OSError as err:
        raise RenderError(f"cannot decode {fmt} image: {err}") from None


def encode_jpeg_cuda(images_device: object, quality: int = 90) -> list[bytes]:
    """JPEG-encode images that live on a CUDA device (nvJPEG through torchvision).

    Parameters
    ----------
    images_device : device array
        uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` exposing ``__cuda_array_interface__`` or
        DLPack (CuPy, numba, torch CUDA tensors), e.g. the output of
        :func:`engine.raster.render_cuda`.
    quality : int
        JPEG quality (1-100).

    Raises
    ------
    RenderError
        When torch/torchvision or a CUDA device is missing, or for a bad array.
    """
    _check_options(quality, 1)
    try:  # torch is imported here only: the engine never imports it at module level.
        import torch
        from torchvision.io import encode_jpeg
    except ImportError as err:
        raise RenderError(f"encode_jpeg_cuda needs torch and torchvision: {err}") from None
    if not torch.cuda.is_available():
        raise RenderError("encode_jpeg_cuda needs a CUDA device; none is available")
    try:
        tensor = torch.as_tensor(images_device, device="cuda")
    except (TypeError, RuntimeError, ValueError) as err:
        raise RenderError(
            f"encode_jpeg_cuda cannot use {type(images_device).__name__}: {err}"
        ) from None
    if tensor.dtype != torch.uint8 or tensor.ndim not in (3, 4):
        raise RenderError(
            f"encode_jpeg_cuda needs uint8 (N, H, W[, 3]) images, got {tuple(tensor.shape)} "
            f"{tensor.dtype}"
        )
    # torchvision wants (C, H, W) tensors.
    chw = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    encoded = encode_jpeg([img.contiguous() for img in chw], quality=int(quality))
    return [bytes(e.cpu().numpy()) for e in encoded]

"""Image encoders: PNG (lossless), JPEG and raw ``.npy`` bytes for shards.

PNG of grey images whose values all lie on a 2-, 4- or 16-level grey ramp (multiples of
255, 85 or 17, which the rasterizer keeps to by default) is written at 1, 2 or 4 bits
per pixel: the rows are packed by small numba kernels (table-free and specialised per
depth) and deflated with zlib-ng
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


#: Inverse modulo 256 of the grey step (``255 // (2**depth - 1)``: 255, 85, 17) of each low
#: PNG bit depth: ``value * inverse % 256`` is the ``depth``-bit sample code of a value on
#: that depth's ramp (``value // step``), and at least ``2**depth`` for any other value.
_STEP_INVERSE = {1: 255, 2: 253, 4: 241}


@numba.njit(nogil=True, cache=True)
def _grey_depth(image):
    # Smallest grey bit depth (1, 2, 4 or 8) that holds every value of a 2-D uint8 image:
    # the largest code at each depth, in one pass of uint8 arithmetic that vectorises.
    flat = image.ravel()
    worst1 = worst2 = worst4 = np.uint8(0)
    for i in range(flat.size):
        value = flat[i]
        worst1 = max(worst1, np.uint8(value * np.uint8(255)))
        worst2 = max(worst2, np.uint8(value * np.uint8(253)))
        worst4 = max(worst4, np.uint8(value * np.uint8(241)))
    if worst1 <= 1:
        return 1
    if worst2 <= 3:
        return 2
    return 4 if worst4 <= 15 else 8


def png_bit_depth(img: np.ndarray) -> int:
    """Smallest PNG grey bit depth (1, 2, 4 or 8) that holds a uint8 grey image exactly."""
    return int(_grey_depth(np.ascontiguousarray(img)))


def _row_packer(depth: int):
    """A numba kernel writing the PNG scanlines of a grey image at ``depth`` bits.

    ``pack(image, rows)`` fills ``rows`` (``H, 1 + ceil(W * depth / 8)``) with filter byte
    2 ("Up": each byte minus the byte above, which suits mostly blank line drawings) and
    the filtered packed samples. ``depth`` is a constant of the kernel, so the samples of a
    byte are packed by straight-line code.
    """
    per_byte = 8 // depth
    inverse = _STEP_INVERSE[depth]

    @numba.njit(nogil=True, cache=True)
    def pack(image, rows):
        height, width = image.shape
        whole = width // per_byte
        for r in range(height):
            pixels = image[r]
            out = rows[r]
            out[0] = 2  # PNG filter type Up
            for b in range(whole):
                packed = 0
                for k in range(per_byte):
                    packed = (packed << depth) | ((pixels[b * per_byte + k] * inverse) & 255)
                out[b + 1] = packed
            if whole < rows.shape[1] - 1:  # last byte, padded with zero samples
                packed = 0
                for k in range(per_byte):
                    x = whole * per_byte + k
                    packed = (packed << depth) | (((pixels[x] * inverse) & 255) if x < width else 0)
                out[whole + 1] = packed
        for r in range(height - 1, 0, -1):  # Up filter, bottom row first
            out = rows[r]
            above = rows[r - 1]
            for b in range(1, rows.shape[1]):
                out[b] = out[b] - above[b]

    return pack


_PACK_1, _PACK_2, _PACK_4 = (_row_packer(depth) for depth in (1, 2, 4))


def _row_bytes(width: int, depth: int) -> int:
    return 1 + (width * depth + 7) // 8


@numba.njit(nogil=True, cache=True)
def _pack_batch(images, rows, row_bytes):
    # Bit depth of each grey image (N, H, W) and, below 8 bits, its filtered scanlines at
    # the start of rows[n] (row_bytes[depth] bytes a row). Returns the depths.
    count, height, _ = images.shape
    depths = np.empty(count, np.int64)
    for n in range(count):
        image = images[n]
        depth = _grey_depth(image)
        depths[n] = depth
        if depth < 8:
            scanlines = rows[n, : height * row_bytes[depth]].reshape((height, row_bytes[depth]))
            if depth == 1:
                _PACK_1(image, scanlines)
            elif depth == 2:
                _PACK_2(image, scanlines)
            else:
                _PACK_4(image, scanlines)
    return depths


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _deflate(data: np.ndarray, level: int) -> bytes:
    if _has("ZLIBNG"):
        return imagecodecs.zlibng_encode(data, level=level)
    if _has("ZLIB"):
        return imagecodecs.zlib_encode(data, level=level)
    return zlib.compress(data.tobytes(), level)


def _low_depth_png(scanlines: np.ndarray, width: int, height: int, depth: int, level: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate(scanlines, level)),
            _chunk(b"IEND", b""),
        )
    )


def _library_png(img: np.ndarray, level: int) -> bytes:
    if _has("PNG"):
        return imagecodecs.png_encode(img, level=level)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _grey_pngs(images: np.ndarray, level: int, threads: int) -> list[bytes]:
    """PNGs of a C-contiguous uint8 grey batch ``(N, H, W)``: every image is measured and
    packed in one numba call; deflate runs per image, on ``threads`` threads."""
    _, height, width = images.shape
    row_bytes = np.array([_row_bytes(width, depth) for depth in range(9)], np.int64)
    rows = np.empty((len(images), height * row_bytes[4]), np.uint8)
    depths = _pack_batch(images, rows, row_bytes)

    def one(n: int) -> bytes:
        depth = int(depths[n])
        if depth == 8:
            return _library_png(images[n], level)
        scanlines = rows[n, : height * row_bytes[depth]]
        return _low_depth_png(scanlines, width, height, depth, level)

    if threads == 1 or len(images) < 2:
        return [one(n) for n in range(len(images))]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(len(images))))


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
        if img.ndim == 2:
            return _grey_pngs(img[None], int(level), 1)[0]
        return _library_png(img, int(level))
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

    A grey uint8 array batch goes to PNG in one pass: every image's bit depth and
    scanlines come from one numba call, then each is deflated.

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
    if (
        fmt == "png"
        and isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and (images.ndim == 3 or images.shape[3] == 1)
    ):
        return _grey_pngs(
            np.ascontiguousarray(images.reshape(images.shape[:3])), int(level), int(threads)
        )

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

    nvJPEG encodes 3-channel images only: a grey page is encoded as three equal channels,
    so it decodes to ``(H, W, 3)`` (on the CPU, :func:`encode_image` writes grey JPEGs).

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
    # torchvision wants (3, H, W) tensors on CUDA.
    chw = (
        tensor.unsqueeze(1).expand(-1, 3, -1, -1)
        if tensor.ndim == 3
        else tensor.permute(0, 3, 1, 2)
    )
    encoded = encode_jpeg([img.contiguous() for img in chw], quality=int(quality))
    # One device-to-host copy for the batch (a copy per image would wait on each in turn).
    ends = np.cumsum([e.numel() for e in encoded])
    data = torch.cat(encoded).cpu().numpy()
    return [data[end - e.numel() : end].tobytes() for e, end in zip(encoded, ends.tolist())]

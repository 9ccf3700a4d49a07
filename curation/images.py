"""Image helpers shared by the stages, the exports and the lab: open untrusted bytes with limits, EXIF
orientation, RGB conversion, pHash, model-ready pixels, and images resized for an export.

Untrusted bytes: PIL's decompression-bomb guard is enforced with our own limit, every decoding error
becomes a reject reason, and only the web's raster formats are opened (never EPS, which PIL hands to
Ghostscript, nor the dozens of exotic plugins). Animated images give their first frame; 16-bit and float
images are scaled to 8 bits rather than clipped; a broken EXIF block is ignored, not a rejection. JPEGs
are decoded at reduced scale (draft mode) when the model input is smaller than the image, and resized
once (short side to the model size, centre crop), as open_clip's own preprocessing does.

Truncation: PIL raises on an image whose data runs out (ImageFile.LOAD_TRUNCATED_IMAGES stays False, and
draft mode changes nothing here), but libjpeg does not when the data stops at a marker: a JPEG cut short
and closed with its end-of-image marker, or a header that claims a size its data never had (9000x9000
with a 16x16 picture in 633 bytes), decodes with the missing part filled with grey, at the header's size.
`jpeg_too_short` catches that from the header alone: a Huffman-coded JPEG spends at least one bit per
8x8 block (two in a sequential scan: a DC and an AC code), so fewer bytes after its first scan header
than its blocks need is a truncated_image, whatever the decoder makes of it. The bound is sound (no
complete image is under it: a flat white one needs about twice as much) and catches a header that lies
by far; a file that lost part of its scan but not most of it, and was closed with an end marker, still
decodes padded (the decoder's warning is not exposed; the device path refuses no more than this).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.schema import RejectReason

EXIF_ORIENTATION = 0x0112
# The formats decoded (multi-picture JPEGs open as JPEG); anything else is not_an_image.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
# Signatures of those formats: bytes that start like an image but do not open are undecodable_image.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    phash: int
    pixels: bytes  # size x size x 3, uint8 RGB


PHASH_SIZE = 32  # imagehash's pHash: a 32x32 greyscale thumbnail, its 8x8 lowest DCT frequencies
PHASH_LOW = 8


def phash64(image: Image.Image) -> int:
    """imagehash's 8x8 pHash packed big-endian into 64 bits (bit i set: frequency i above the median).

    Same algorithm as `imagehash.phash`, but the thumbnail is made with a reducing gap (a box
    reduction first, then Lanczos): 3x faster on photographs, and the same bits on almost every image
    (rarely one or two of the 64 differ, far inside the near-duplicate radius).
    """
    grey = image.convert("L").resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return phash_bits(np.asarray(grey, dtype=np.float64))


def dct_matrix(n: int = PHASH_SIZE, rows: int = PHASH_LOW) -> np.ndarray:
    """The first `rows` rows of scipy's unnormalised DCT-II as a matrix: dct(x) = M @ x."""
    k, i = np.arange(rows)[:, None], np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = dct_matrix()


def phash_bits(thumbnail: np.ndarray) -> int:
    """The pHash of a 32x32 greyscale thumbnail: DCT-II along both axes, low 8x8 against their median."""
    return phash_from_low_frequencies(_DCT @ thumbnail @ _DCT.T)


def phash_from_low_frequencies(low: np.ndarray) -> int:
    bits = (low > np.median(low)).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


class _QuietWarnings:
    """Warnings silenced while any thread is inside (hostile files warn about EXIF, palettes, bombs: the
    reject reasons say it). `warnings.catch_warnings` swaps the process-wide filter list on entry and puts
    back what it saw on exit, so threads entering and leaving it at once (an actor decoding two shards)
    would scramble it: here the first thread in silences them, and the last one out restores them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._saved: warnings.catch_warnings | None = None

    def __enter__(self) -> None:
        with self._lock:
            if not self._inside:
                self._saved = warnings.catch_warnings()
                self._saved.__enter__()
                warnings.simplefilter("ignore")
            self._inside += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._inside -= 1
            if not self._inside:
                self._saved.__exit__(None, None, None)
                self._saved = None


quiet_warnings = _QuietWarnings()


def decode_image(data: bytes, *, size: int, max_pixels: int) -> DecodedImage | RejectReason:
    """Decode untrusted bytes into model-ready pixels, or the reason they cannot be used."""
    with quiet_warnings:
        return decode_quietly(data, size=size, max_pixels=max_pixels)


def decode_quietly(data: bytes, *, size: int, max_pixels: int) -> DecodedImage | RejectReason:
    """decode_image, for callers already inside `quiet_warnings`."""
    if data is None:
        return RejectReason.MISSING_IMAGE
    if not data:
        return RejectReason.EMPTY_IMAGE
    opened = _open(data, size=size, max_pixels=max_pixels)
    if isinstance(opened, RejectReason):
        return opened
    image, width, height = opened
    try:
        if orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        image = to_rgb(upright(image))
        phash = phash64(image)
        fitted = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(fitted, dtype=np.uint8).tobytes()
    except Exception:  # noqa: BLE001
        return RejectReason.UNDECODABLE_IMAGE
    return DecodedImage(width=width, height=height, phash=phash, pixels=pixels)


def _open(data: bytes, *, size: int, max_pixels: int) -> tuple[Image.Image, int, int] | RejectReason:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            return RejectReason.DECOMPRESSION_BOMB
        if jpeg_too_short(data):
            return RejectReason.TRUNCATED_IMAGE
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image.load()
    except Image.DecompressionBombError:
        return RejectReason.DECOMPRESSION_BOMB
    except UnidentifiedImageError:
        return RejectReason.UNDECODABLE_IMAGE if data.startswith(_MAGIC) else RejectReason.NOT_AN_IMAGE
    except OSError as exc:
        message = str(exc).lower()
        truncated = "truncated" in message or "broken data stream" in message
        return RejectReason.TRUNCATED_IMAGE if truncated else RejectReason.UNDECODABLE_IMAGE
    except Exception:  # noqa: BLE001 - hostile bytes can raise anything from a codec
        return RejectReason.UNDECODABLE_IMAGE
    return image, width, height


# Huffman-coded frames (baseline, extended sequential, progressive) and the fewest bits each 8x8 block of
# a complete image costs in them (see the module doc). Lossless, hierarchical and arithmetic-coded frames
# are not judged here.
_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # markers without a length: TEM, RST0-7


def jpeg_too_short(data: bytes) -> bool:
    """Whether a JPEG holds fewer bytes after its first scan header than its frame's blocks need: then
    it is truncated (the decoder would pad it), whatever its end-of-image marker says."""
    if not data.startswith(b"\xff\xd8"):
        return False
    frame, pos = None, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: PIL judges it
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF and frame is None:
            frame = (marker, data[pos + 4 : pos + 2 + length])
        if marker == 0xDA:
            break
        pos += 2 + length
    else:
        return False  # no scan at all: PIL judges it
    if frame is None or frame[0] not in _MIN_BITS_PER_BLOCK:
        return False
    marker, header = frame
    if len(header) < 6:
        return False
    height, width, count = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big"), header[5]
    factors = [(header[7 + 3 * i] >> 4, header[7 + 3 * i] & 15) for i in range(count) if 8 + 3 * i <= len(header)]
    if not width or not height or not factors or min(min(f) for f in factors) < 1:
        return False
    h_max, v_max = max(h for h, _ in factors), max(v for _, v in factors)
    blocks = sum(_ceil(_ceil(width * h, h_max), 8) * _ceil(_ceil(height * v, v_max), 8) for h, v in factors)
    return (len(data) - pos) * 8 < blocks * _MIN_BITS_PER_BLOCK[marker]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to drop the image
        return 1


def upright(image: Image.Image) -> Image.Image:
    if orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit, 32-bit int and float greyscale
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        top = float(values.max()) if values.size else 0.0
        if image.mode.startswith("I;16") or (image.mode == "I" and top > 255):
            values = values / 257.0
        elif image.mode == "F" and top <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


# ---- exports: images as a trainer reads them ---------------------------------------------------------

EXPORT_EXTENSIONS = ("jpg", "png", "webp")  # what open_clip's and img2dataset's loaders take
_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ExportedImage:
    data: bytes
    ext: str  # jpg | png | webp
    size: tuple[int, int] | None  # (width, height) when the pixels changed; None: the original bytes


def image_extension(data: bytes) -> str | None:
    """jpg, png or webp for bytes with that format's signature, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def export_image(
    data: bytes,
    *,
    mode: str | None = None,
    size: int = 0,
    fmt: str = "jpg",
    quality: int = 95,
    only_if_bigger: bool = False,
) -> ExportedImage:
    """An image for an export. Without `mode`, JPEG, PNG and WebP bytes are passed through untouched and
    other formats (GIF, BMP, TIFF, AVIF) become PNG, losslessly. With `mode`, img2dataset's resizing:
    keep_ratio (the short side to `size`), center_crop (the short side to `size`, then the centre square)
    or border (the long side to `size`, then white borders to a square); upright (EXIF), transparency
    flattened on white, encoded as `fmt`. Deterministic: the same bytes and settings give the same bytes."""
    ext = image_extension(data)
    if mode is None and ext is not None:
        return ExportedImage(data=data, ext=ext, size=None)
    with quiet_warnings:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        image.load()
        image = _flattened(upright(image))
        if mode is not None:
            image = _resized(image, mode, size, only_if_bigger)
        else:
            fmt = "png"
        out = io.BytesIO()
        options = {"quality": quality} if fmt in ("jpg", "webp") else {}
        image.save(out, _PIL_FORMATS[fmt], **options)
    return ExportedImage(data=out.getvalue(), ext=fmt, size=image.size)


def _flattened(image: Image.Image) -> Image.Image:
    """RGB; an image with transparency is put on white first (as img2dataset does)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return to_rgb(image)


def _resized(image: Image.Image, mode: str, size: int, only_if_bigger: bool) -> Image.Image:
    width, height = image.size
    side = max(width, height) if mode == "border" else min(width, height)
    if only_if_bigger and side <= size:
        return image
    scale = size / side
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if mode == "border":  # exactly `size` along the long side
        target = (size, target[1]) if width >= height else (target[0], size)
    else:  # exactly `size` along the short side
        target = (size, target[1]) if width <= height else (target[0], size)
    if target != image.size:
        image = image.resize(target, Image.Resampling.LANCZOS)
    if mode == "center_crop":
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif mode == "border":
        canvas = Image.new("RGB", (size, size), _WHITE)
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = canvas
    return image

"""Decode and validate image bytes: sha256, perceptual hash, size, and the model-sized pixels.

Untrusted bytes: PIL's decompression-bomb guard is enforced with our own limit, every decoding error
becomes a reject reason. JPEGs are decoded at reduced scale (draft mode) when the model input is
smaller than the image, and resized once (short side to the model size, centre crop), as open_clip's
own preprocessing does.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import ClassVar

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.schema import RejectReason, Stage, Status
from curation.stages.base import BatchStage, apply_rejections, set_column

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    phash: int
    pixels: bytes  # size x size x 3, uint8 RGB


def phash64(image: Image.Image) -> int:
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def decode_image(data: bytes, *, size: int, max_pixels: int) -> DecodedImage | RejectReason:
    """Decode untrusted bytes into model-ready pixels, or the reason they cannot be used."""
    if not data:
        return RejectReason.EMPTY_IMAGE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                return RejectReason.DECOMPRESSION_BOMB
            if image.format == "JPEG":
                image.draft("RGB", (size, size))
            image.load()
    except Image.DecompressionBombError:
        return RejectReason.DECOMPRESSION_BOMB
    except UnidentifiedImageError:
        return RejectReason.NOT_AN_IMAGE
    except OSError as exc:
        message = str(exc).lower()
        truncated = "truncated" in message or "broken data stream" in message
        return RejectReason.TRUNCATED_IMAGE if truncated else RejectReason.UNDECODABLE_IMAGE
    except Exception:  # noqa: BLE001 - hostile bytes can raise anything from a codec
        return RejectReason.UNDECODABLE_IMAGE
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width
        image = ImageOps.exif_transpose(image).convert("RGB")
        phash = phash64(image)
        fitted = ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(fitted, dtype=np.uint8).tobytes()
    except Exception:  # noqa: BLE001
        return RejectReason.UNDECODABLE_IMAGE
    return DecodedImage(width=width, height=height, phash=phash, pixels=pixels)


@dataclass(kw_only=True)
class DecodeStage(BatchStage):
    name: ClassVar[Stage] = Stage.DECODE
    image_size: int
    max_pixels: int = 89_478_485

    def process_batch(self, table: pa.Table) -> pa.Table:
        images = table.column("image").to_pylist()
        status = table.column("status").to_pylist()
        n = table.num_rows
        sha, width, height, phash, pixels = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        reasons: list[RejectReason | None] = [None] * n
        for i, data in enumerate(images):
            if data is not None:
                sha[i] = hashlib.sha256(data).hexdigest()
            if status[i] != Status.KEPT.value:
                continue
            result = decode_image(data, size=self.image_size, max_pixels=self.max_pixels)
            if isinstance(result, RejectReason):
                reasons[i] = result
                continue
            width[i], height[i], phash[i], pixels[i] = result.width, result.height, result.phash, result.pixels
        table = set_column(table, "sha256", sha, pa.string())
        table = set_column(table, "width", width, pa.int32())
        table = set_column(table, "height", height, pa.int32())
        table = set_column(table, "phash", phash, pa.uint64())
        table = set_column(table, "pixels", pixels, pa.binary())
        return apply_rejections(table, reasons, self.name)

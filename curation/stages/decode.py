"""The decode stage: sha256, perceptual hash, size and the model-sized pixels of each row's image
(the decoding itself, with its limits on untrusted bytes, is `curation.images`)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from curation.images import (  # noqa: F401 - re-exported: the stage's public helpers
    FORMATS,
    PHASH_SIZE,
    DecodedImage,
    dct_matrix,
    decode_image,
    decode_quietly,
    phash64,
    phash_from_low_frequencies,
    quiet_warnings,
)
from curation.schema import RejectReason, Stage, Status
from curation.stages.base import BatchStage, apply_rejections, set_column


@dataclass(kw_only=True)
class DecodeStage(BatchStage):
    name: ClassVar[Stage] = Stage.DECODE
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (
        RejectReason.MISSING_IMAGE,
        RejectReason.EMPTY_IMAGE,
        RejectReason.NOT_AN_IMAGE,
        RejectReason.TRUNCATED_IMAGE,
        RejectReason.DECOMPRESSION_BOMB,
        RejectReason.UNDECODABLE_IMAGE,
    )
    image_size: int
    max_pixels: int = 89_478_485
    # Pillow releases the GIL while it decodes and resizes, so threads decode images side by side
    # (the runner gives decode inside the embedding actor the actor's threads, idle until it embeds).
    threads: int = 1

    def process_batch(self, table: pa.Table) -> pa.Table:
        images = table.column("image").to_pylist()
        kept = [s == Status.KEPT.value for s in table.column("status").to_pylist()]
        results = self.decode_all([data if keep else None for data, keep in zip(images, kept)], kept)
        return decoded_columns(table, images, results, self.name)

    def decode_all(self, images: list[bytes | None], kept: list[bool]) -> list[DecodedImage | RejectReason | None]:
        """One result per row, in row order: decoded, a reason, or None for rows already rejected."""

        def decode(data: bytes | None, keep: bool) -> DecodedImage | RejectReason | None:
            return decode_quietly(data, size=self.image_size, max_pixels=self.max_pixels) if keep else None

        with quiet_warnings:  # once, here, for the decoding threads
            if self.threads <= 1 or sum(kept) < 2:
                return [decode(data, keep) for data, keep in zip(images, kept)]
            with ThreadPoolExecutor(self.threads) as pool:
                return list(pool.map(decode, images, kept))


def decoded_columns(
    table: pa.Table, images: list[bytes | None], results: list[DecodedImage | RejectReason | None], stage: Stage
) -> pa.Table:
    """Fill sha256 (every row with bytes), width, height, phash and pixels, and reject with the reasons."""
    n = table.num_rows
    sha = [hashlib.sha256(data).hexdigest() if data is not None else None for data in images]
    width, height, phash, pixels = [None] * n, [None] * n, [None] * n, [None] * n
    reasons: list[RejectReason | None] = [None] * n
    for i, result in enumerate(results):
        if isinstance(result, RejectReason):
            reasons[i] = result
        elif result is not None:
            width[i], height[i], phash[i], pixels[i] = result.width, result.height, result.phash, result.pixels
    table = set_column(table, "sha256", sha, pa.string())
    table = set_column(table, "width", width, pa.int32())
    table = set_column(table, "height", height, pa.int32())
    table = set_column(table, "phash", phash, pa.uint64())
    table = set_column(table, "pixels", pixels, pa.binary())
    return apply_rejections(table, reasons, stage)

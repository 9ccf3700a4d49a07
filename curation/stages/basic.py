"""DataComp's "basic" filter: caption length and words, image short side and aspect ratio, and
LAION's minimum image file size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import RejectReason, Stage
from curation.stages.base import Filter


@dataclass(kw_only=True)
class BasicFilter(Filter):
    name: ClassVar[Stage] = Stage.BASIC
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (
        RejectReason.CAPTION_TOO_SHORT,
        RejectReason.CAPTION_TOO_FEW_WORDS,
        RejectReason.IMAGE_TOO_SMALL,
        RejectReason.EXTREME_ASPECT_RATIO,
        RejectReason.IMAGE_TOO_FEW_BYTES,
    )
    min_caption_chars: int = 6
    min_caption_words: int = 3
    min_short_side: int = 32
    max_aspect: float = 3.0
    min_image_bytes: int = 0

    def verdicts(self, kept: pa.Table) -> list[RejectReason | None]:
        captions = kept.column("caption").to_pylist()
        widths = kept.column("width").to_pylist()
        heights = kept.column("height").to_pylist()
        sizes = [None] * kept.num_rows
        if self.min_image_bytes:
            sizes = pc.fill_null(pc.binary_length(kept.column("image")), 0).to_pylist()
        return [self._verdict(*row) for row in zip(captions, widths, heights, sizes)]

    def _verdict(self, caption: str, width: int, height: int, size: int | None) -> RejectReason | None:
        if size is not None and size < self.min_image_bytes:
            return RejectReason.IMAGE_TOO_FEW_BYTES
        text = caption.strip()
        if len(text) < self.min_caption_chars:
            return RejectReason.CAPTION_TOO_SHORT
        if len(text.split()) < self.min_caption_words:
            return RejectReason.CAPTION_TOO_FEW_WORDS
        short, long = min(width, height), max(width, height)
        if short < self.min_short_side:
            return RejectReason.IMAGE_TOO_SMALL
        if long / short > self.max_aspect:
            return RejectReason.EXTREME_ASPECT_RATIO
        return None

"""Reject pairs whose image and caption do not match: clip_score below a threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from curation.schema import RejectReason, Stage
from curation.stages.base import Filter


@dataclass(kw_only=True)
class ClipScoreFilter(Filter):
    name: ClassVar[Stage] = Stage.CLIP
    min_score: float | None = None

    def verdicts(self, kept: pa.Table) -> list[RejectReason | None]:
        scores = kept.column("clip_score").to_pylist()
        if self.min_score is None:
            return [None] * len(scores)
        return [RejectReason.LOW_CLIP_SCORE if s is None or s < self.min_score else None for s in scores]

"""Reject pairs whose image and caption do not match: clip_score below a threshold.

Two ways to set the threshold: `clip.min_score` (absolute, applied per shard by this filter) or
`clip.keep_fraction` (DataComp-style top-k%), which needs every shard's scores first:
`threshold_for_keep_fraction` turns the job's scores into the absolute threshold that this same
filter then applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curation.schema import RejectReason, Stage
from curation.stages.base import Filter


@dataclass(kw_only=True)
class ClipScoreFilter(Filter):
    name: ClassVar[Stage] = Stage.CLIP
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (RejectReason.LOW_CLIP_SCORE,)
    min_score: float | None = None

    def verdicts(self, kept: pa.Table) -> list[RejectReason | None]:
        scores = kept.column("clip_score").to_pylist()
        if self.min_score is None:
            return [None] * len(scores)
        return [RejectReason.LOW_CLIP_SCORE if s is None or s < self.min_score else None for s in scores]


def threshold_for_keep_fraction(scores: np.ndarray, fraction: float) -> float:
    """The clip_score threshold that keeps the top `fraction` of `scores` (rows with score >= it are kept).

    `scores` are the clip_scores of the rows still kept after scoring (NaN = not scored, ignored).
    Keeps ceil(fraction * n) rows, more only on ties at the threshold (fraction 1 gives the lowest score:
    all kept); -inf when there are no scores. Deterministic: a pure function of the multiset of scores.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("-inf")
    keep = max(1, math.ceil(fraction * values.size - 1e-9))
    return float(np.sort(values)[::-1][keep - 1])

"""Reject rows by the classifier heads' scores (unsafe, watermark, aesthetic, ...).

The scores come from the embedding pass (`EmbedStage` runs every head on the same forward pass); this
filter only compares them with each head's threshold. The first head whose threshold a row crosses
names its reject reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from curation.config import HeadConfig
from curation.schema import Stage, reason_name
from curation.stages.base import Filter


@dataclass(frozen=True, kw_only=True)
class HeadRule:
    column: str
    threshold: float
    reject_above: bool
    reason: str

    @classmethod
    def of(cls, head: HeadConfig) -> "HeadRule":
        return cls(
            column=head.score_column,
            threshold=head.threshold,
            reject_above=head.reject == "above",
            reason=reason_name(head.reject_reason),
        )

    def rejects(self, score: float | None) -> bool:
        if score is None:
            return False
        return score > self.threshold if self.reject_above else score < self.threshold


@dataclass(kw_only=True)
class HeadsFilter(Filter):
    name: ClassVar[Stage] = Stage.HEADS
    rules: tuple[HeadRule, ...] = ()

    def emits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(rule.reason for rule in self.rules))

    @classmethod
    def from_config(cls, heads: tuple[HeadConfig, ...]) -> "HeadsFilter":
        return cls(rules=tuple(HeadRule.of(h) for h in heads if h.threshold is not None))

    def verdicts(self, kept: pa.Table) -> list[str | None]:
        columns = {
            rule.column: kept.column(rule.column).to_pylist() for rule in self.rules if rule.column in kept.column_names
        }
        verdicts: list[str | None] = [None] * kept.num_rows
        for i in range(kept.num_rows):
            for rule in self.rules:
                if rule.column in columns and rule.rejects(columns[rule.column][i]):
                    verdicts[i] = rule.reason
                    break
        return verdicts

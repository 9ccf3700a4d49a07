"""Exact duplicates: rows whose source image bytes have the same sha256."""

from __future__ import annotations

import pyarrow as pa

from curation.dedup.decisions import group_decisions
from curation.schema import DupKind


def exact_group_decisions(group: pa.Table, quality: str = "clip_score") -> pa.Table:
    """For `groupby("sha256").map_groups(...)`: one group of equal hashes in, its decisions out."""
    return group_decisions(group.column("key").to_pylist(), group.column(quality).to_pylist(), DupKind.EXACT)

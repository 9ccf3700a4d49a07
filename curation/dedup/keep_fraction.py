"""`clip.keep_fraction` at any scale: the exact threshold from mergeable per-shard histograms.

A float32 clip_score maps to a 32-bit key that sorts as the floats do (`ordered_keys`). Each scored
shard carries a histogram of its kept rows' keys by their top 16 bits (at most 65,536 counts, stored
sparse in the shard's Parquet metadata when it is committed). The histograms add up in any order (a
tree on the cluster); walking the sum from the top finds the bucket that holds the row at the
boundary, and a second histogram, of the low 16 bits of the keys in that bucket only, finds the
boundary value itself: exactly the value `threshold_for_keep_fraction` finds by sorting every score.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import Status

HISTOGRAM_METADATA = b"curation.clip_score_histogram"  # key of the scored shard's Parquet metadata
SIGN = np.uint32(0x8000_0000)


def ordered_keys(scores: np.ndarray) -> np.ndarray:
    """float32 scores (no NaN) as uint32 keys in the same order: flip the sign bit of positives, every
    bit of negatives."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
    return np.where(bits & SIGN, ~bits, bits | SIGN).astype(np.uint32)


def from_key(key: int) -> float:
    bits = np.uint32(key)
    bits = bits & ~SIGN if bits & SIGN else ~bits
    return float(np.array([bits], np.uint32).view(np.float32)[0])


def kept_keys(table: pa.Table) -> np.ndarray:
    """The ordered keys of the clip_scores of the rows still kept (NaN or null: not scored, left out)."""
    kept = table.filter(pc.equal(table.column("status"), Status.KEPT.value))
    scores = kept.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float32)
    return ordered_keys(scores[~np.isnan(scores)])


def histogram(keys: np.ndarray, shift: int = 16) -> dict[int, int]:
    """Sparse counts of `keys >> shift` (the top bits), or of the low 16 bits when shift is 0."""
    buckets, counts = np.unique(keys >> shift if shift else keys & 0xFFFF, return_counts=True)
    return {int(b): int(c) for b, c in zip(buckets, counts)}


def histogram_metadata(table: pa.Table) -> dict[bytes, bytes]:
    """The scored shard's histogram, as Parquet key-value metadata."""
    return {HISTOGRAM_METADATA: json.dumps(histogram(kept_keys(table))).encode()}


def without_histogram(table: pa.Table) -> pa.Table:
    """A scored table without its histogram metadata (the final files do not carry it)."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != HISTOGRAM_METADATA}
    return table.replace_schema_metadata(metadata or None)


def read_histogram(metadata: dict[bytes, bytes] | None) -> dict[int, int] | None:
    raw = (metadata or {}).get(HISTOGRAM_METADATA)
    return None if raw is None else {int(k): v for k, v in json.loads(raw).items()}


def rows_to_keep(total: int, fraction: float) -> int:
    """Rows the top `fraction` of `total` scored rows keeps (as threshold_for_keep_fraction counts)."""
    return max(1, math.ceil(fraction * total - 1e-9))


def boundary(counts: dict[int, int], rank: int) -> tuple[int, int]:
    """The bucket holding the `rank`-th largest key (1 = the largest), and its rank inside the bucket."""
    above = 0
    for bucket in sorted(counts, reverse=True):
        if above + counts[bucket] >= rank:
            return bucket, rank - above
        above += counts[bucket]
    raise ValueError(f"rank {rank} is past the {above} counted keys")


def keys_in_bucket(table: pa.Table, bucket: int) -> np.ndarray:
    keys = kept_keys(table)
    return keys[(keys >> 16) == bucket]

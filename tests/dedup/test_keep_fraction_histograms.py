"""keep_fraction's threshold from summed histograms equals the exact sort over every score."""

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup import keep_fraction as kf
from curation.stages.clip_filter import threshold_for_keep_fraction


def _shards(seed: int) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    shards = []
    for _ in range(rng.integers(1, 6)):
        n = int(rng.integers(0, 300))
        scores = rng.normal(0.25, 0.05 if seed % 2 else 0.5, n).astype(np.float32)
        scores[rng.random(n) < 0.1] = np.nan  # not scored
        scores[rng.random(n) < 0.2] = np.float32(0.25)  # ties at the boundary
        scores[rng.random(n) < 0.05] = -0.0
        status = rng.choice(["kept", "rejected"], n, p=[0.8, 0.2])
        shards.append(pa.table({"clip_score": pa.array(scores, pa.float32()), "status": status}))
    return shards


def _threshold(shards: list[pa.Table], fraction: float) -> float:
    """What the job does: per-shard histograms summed, the boundary bucket, then its low bits."""
    counts: dict[int, int] = {}
    for shard in shards:
        for bucket, count in kf.read_histogram(kf.histogram_metadata(shard)).items():
            counts[bucket] = counts.get(bucket, 0) + count
    if not counts:
        return float("-inf")
    bucket, rank = kf.boundary(counts, kf.rows_to_keep(sum(counts.values()), fraction))
    low: dict[int, int] = {}
    for shard in shards:
        for b, count in kf.histogram(kf.keys_in_bucket(shard, bucket), shift=0).items():
            low[b] = low.get(b, 0) + count
    return kf.from_key((bucket << 16) | kf.boundary(low, rank)[0])


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.999, 1.0])
def test_threshold_from_histograms_equals_the_sort(seed, fraction):
    shards = _shards(seed)
    kept = [s.filter(pa.compute.equal(s.column("status"), "kept")) for s in shards]
    scores = np.concatenate([s.column("clip_score").to_numpy(zero_copy_only=False) for s in kept] or [np.zeros(0)])
    assert _threshold(shards, fraction) == threshold_for_keep_fraction(scores.astype(np.float64), fraction)


def test_ordered_keys_sort_as_the_floats():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 7.0, np.inf], np.float32)
    keys = kf.ordered_keys(values)
    assert (np.diff(keys.astype(np.int64)) > 0).all()
    assert [kf.from_key(int(k)) for k in keys] == values.tolist()

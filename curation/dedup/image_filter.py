"""DataComp's image-based filter, run in the dedup phase: keep the pool rows near a reference image set.

DataComp clusters the pool's image embeddings with k-means and keeps a sample only when its cluster is
the nearest cluster of some ImageNet training image. Here the reference set is configured
(`image_filter.reference`: folders of images or img2dataset output, embedded on the driver with the job's
own decode and model, like `dedup.eval_sets`) and `image_filter.nearest` clusters count per reference
image. Rows outside become decisions of kind `outside_reference_clusters` (no dup_of), so they are
rejected like duplicates, and are left out of dedup, so no kept row is ever a duplicate of them.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.decisions import DECISION_SCHEMA
from curation.dedup.prepare import embeddings
from curation.dedup.semantic import assign_clusters, normalize

OUTSIDE_REFERENCE = "outside_reference_clusters"  # the decision kind (and reject reason)


def reference_clusters(reference: np.ndarray, centroids: np.ndarray, *, nearest: int = 1) -> np.ndarray:
    """Sorted ids of the clusters that are among the `nearest` nearest centroids (cosine) of some
    reference embedding."""
    if not len(reference):
        return np.zeros(0, np.int64)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(normalize(centroids))
    _, found = index.search(normalize(reference), min(nearest, len(centroids)))
    return np.unique(found[found >= 0]).astype(np.int64)


def inside_mask(batch: pa.Table, *, centroids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Whether each row's image falls in one of the `allowed` clusters."""
    if not batch.num_rows:
        return np.zeros(0, bool)
    return np.isin(assign_clusters(embeddings(batch), centroids), allowed)


def inside_rows(batch: pa.Table, *, centroids: np.ndarray, allowed: np.ndarray) -> pa.Table:
    """The rows the filter keeps: they go on to dedup."""
    return batch.filter(pa.array(inside_mask(batch, centroids=centroids, allowed=allowed), pa.bool_()))


def outside_decisions(batch: pa.Table, *, centroids: np.ndarray, allowed: np.ndarray) -> pa.Table:
    """Decisions (key, dup_of null, dup_kind `outside_reference_clusters`) for the rows the filter rejects."""
    outside = ~inside_mask(batch, centroids=centroids, allowed=allowed)
    keys = (
        pc.filter(batch.column("key"), pa.array(outside, pa.bool_())) if batch.num_rows else pa.array([], pa.string())
    )
    n = len(keys)
    return pa.table(
        {
            "key": keys.cast(pa.string()),
            "dup_of": pa.nulls(n, pa.string()),
            "dup_kind": pa.array([OUTSIDE_REFERENCE] * n, pa.string()),
        },
        schema=DECISION_SCHEMA,
    )

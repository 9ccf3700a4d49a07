"""Batch functions that shape the dedup phase's input: kept rows, a deterministic sample, clusters."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import Status


def embeddings(table: pa.Table, column: str = "img_emb", dtype=np.float32) -> np.ndarray:
    """An embedding column (`img_emb`, or `txt_emb`) as a (rows, dim) array of `dtype` (None: as stored,
    float16 in the records, which halves what a large fit sample costs)."""
    column = table.column(column).combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return values if dtype is None else values.astype(dtype)


def text_embeddings(table: pa.Table) -> np.ndarray | None:
    """The caption embeddings (`txt_emb`) as float32, or None where the table has none for some row
    (rows kept by a refresh from before text embeddings were kept, eval images)."""
    if "txt_emb" not in table.column_names or table.column("txt_emb").null_count:
        return None
    return embeddings(table, "txt_emb")


def phashes(table: pa.Table) -> np.ndarray:
    return table.column("phash").to_numpy(zero_copy_only=False).astype(np.uint64)


def kept_rows(batch: pa.Table, *, min_clip_score: float | None = None) -> pa.Table:
    """Rows still kept after scoring, with a hash (and above the job-wide clip_score threshold, when
    there is one): the only ones dedup looks at, so a row about to be dropped never survives a group."""
    mask = pc.and_(pc.equal(batch.column("status"), Status.KEPT.value), pc.is_valid(batch.column("sha256")))
    if min_clip_score is not None:
        mask = pc.and_(mask, pc.fill_null(pc.greater_equal(batch.column("clip_score"), min_clip_score), False))
    return batch.filter(mask)


def key_fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a key: samples that do not depend on order."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def sample_rows(batch: pa.Table, *, rate: float) -> pa.Table:
    keep = [key_fraction(k) < rate for k in batch.column("key").to_pylist()]
    return batch.filter(pa.array(keep, pa.bool_())).select(["key", "img_emb"])


SECOND = "second_cluster"  # a row's second-nearest cluster where it is that close to it, else -1
GUEST = "guest"  # a row in its second cluster: compared with its rows, decided in its own cluster


def with_clusters(
    batch: pa.Table, *, centroids: np.ndarray | None, ivf_min_clusters: int | None = None, margin: float = 0.0
) -> pa.Table:
    """The rows, each with its k-means cluster (searched exactly below `ivf_min_clusters`
    centroids: dedup/centroids.py); without centroids (no embedding, model: none) every row is in cluster
    0: one group, compared all against all by pHash. With a `margin`, also SECOND (see with_guests)."""
    from curation.dedup.centroids import IVF_MIN_CLUSTERS
    from curation.dedup.semantic import assign_clusters, with_second_clusters

    ivf_min_clusters = ivf_min_clusters or IVF_MIN_CLUSTERS
    second = np.full(batch.num_rows, -1, np.int64)
    if centroids is None or not batch.num_rows:
        clusters = np.zeros(batch.num_rows, np.int64)
    elif margin > 0:
        clusters, second = with_second_clusters(
            embeddings(batch), centroids, margin=margin, ivf_min_clusters=ivf_min_clusters
        )
    else:
        clusters = assign_clusters(embeddings(batch), centroids, ivf_min_clusters=ivf_min_clusters)
    batch = batch.append_column("cluster", pa.array(np.asarray(clusters, dtype=np.int64)))
    return batch.append_column(SECOND, pa.array(second, pa.int64())) if margin > 0 else batch


def with_guests(batch: pa.Table) -> pa.Table:
    """The rows (GUEST false), and again as guests in their SECOND cluster those that have one and are no
    exact copy riding along with their survivor (exact.EXACT_OF)."""
    from curation.dedup.exact import EXACT_OF

    if SECOND not in batch.column_names:
        return batch
    guests = batch.filter(pc.and_(pc.greater_equal(batch.column(SECOND), 0), pc.is_null(batch.column(EXACT_OF))))
    guests = guests.set_column(guests.column_names.index("cluster"), "cluster", guests.column(SECOND))
    own = batch.drop_columns([SECOND]).append_column(GUEST, pa.array(np.zeros(batch.num_rows, bool)))
    guests = guests.drop_columns([SECOND]).append_column(GUEST, pa.array(np.ones(guests.num_rows, bool)))
    return pa.concat_tables([own, guests])


POINTS_PER_CENTROID = 40  # sample rows a centroid is fitted on, at least (FAISS warns below 39)


def default_clusters(total_rows: int, *, rows_per_cluster: int = 2_000, max_clusters: int = 50_000) -> int:
    """k-means clusters for `total_rows` rows: `rows_per_cluster` rows each, at most `max_clusters` (the fit
    sample, POINTS_PER_CENTROID rows a centroid, is read on the driver: docs/sizing.md)."""
    return int(max(1, min(total_rows // rows_per_cluster, max_clusters)))


def sample_rate(total_rows: int, *, clusters: int, sample_size: int) -> float:
    """The fraction of rows sampled to fit `clusters` centroids: `sample_size` rows, or POINTS_PER_CENTROID
    a centroid where that is more."""
    return min(1.0, max(sample_size, POINTS_PER_CENTROID * clusters) / max(1, total_rows))

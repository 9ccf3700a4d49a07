"""Semantic duplicates (SemDeDup): k-means on image embeddings, then cosine pairs inside each cluster.

The three steps map onto Ray Data as the runner uses them: `fit_centroids` once on a sample,
`assign_clusters` in `map_batches`, `cluster_decisions` in `groupby("cluster").map_groups`.
`semantic_dedup` runs the same three in one process (benchmarks, tests).

Embeddings are L2-normalised (`img_emb`, float16 in the records); cosine is the inner product. Rows whose
cosine is >= 1 - eps are joined into one group (transitively); each group keeps its best-quality row.
With a `text_eps`, a pair of image-text rows is a duplicate only when their captions' embeddings
(`txt_emb`) are also at cosine >= 1 - text_eps: two look-alike pictures of different things, described
as different things, are both kept (dedup.semantic_text_eps; off by default, as in SemDeDup).
Memory stays bounded: embeddings are converted to float32 block by block, and the in-cluster similarity
matrix is computed in row blocks of at most `PAIR_BLOCK_ENTRIES` entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import pyarrow as pa

from curation.dedup.centroids import IVF_MIN_CLUSTERS, CentroidIndex, centroid_index
from curation.dedup.decisions import empty_decisions
from curation.dedup.groups import key_strings, nearest_old_decisions, pair_decisions, quality_array
from curation.schema import DupKind

ASSIGN_BLOCK = 65_536  # rows converted to float32 and searched at once
PAIR_BLOCK_ENTRIES = 1 << 24  # similarity entries computed at once (64 MiB of float32)
COSINE_SLACK = 1e-5  # float32 rounding: an exact copy's cosine may come out as 0.99999994


def cosine_threshold(eps: float) -> float:
    """The smallest cosine that makes a duplicate: 1 - eps, less float32 rounding slack."""
    return 1.0 - eps - COSINE_SLACK


def normalize(emb: np.ndarray) -> np.ndarray:
    """Rows as float32 unit vectors (all-zero rows stay zero), in one new array: no temporaries of the
    whole block (squares, quotients), which cost as much as the float16 conversion itself."""
    x = np.array(emb, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def fit_centroids(sample: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """Spherical k-means centroids (float32 (k, d), unit rows) of an embedding sample, seeded.

    FAISS itself subsamples to 256 points per centroid (with the same seed), so a sample larger than
    that only costs reading it.
    """
    x = normalize(sample)
    k = max(1, min(int(k), len(x)))
    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    kmeans.train(x)
    return normalize(kmeans.centroids)


def assign_clusters(emb: np.ndarray, centroids: np.ndarray, *, ivf_min_clusters: int = IVF_MIN_CLUSTERS) -> np.ndarray:
    """Index (int64) of each row's nearest centroid by cosine: exact below IVF_MIN_CLUSTERS centroids, through
    an inverted file over them beyond (dedup/centroids.py). A row's length scales all its inner products
    alike, so the rows are searched as they are (float32), not normalised first."""
    index = centroid_index(normalize(centroids), ivf_min_clusters=ivf_min_clusters)
    labels = np.empty(len(emb), dtype=np.int64)
    for start in range(0, len(emb), ASSIGN_BLOCK):
        found = index.search(np.ascontiguousarray(emb[start : start + ASSIGN_BLOCK], dtype=np.float32))
        labels[start : start + len(found)] = found
    if (labels < 0).any():  # a row whose probed lists were all empty: search every centroid
        lost = np.flatnonzero(labels < 0)
        exact = CentroidIndex(index.centroids)
        labels[lost] = exact.search(np.ascontiguousarray(emb[lost], dtype=np.float32))
    return labels


def with_second_clusters(
    emb: np.ndarray, centroids: np.ndarray, *, margin: float, ivf_min_clusters: int = IVF_MIN_CLUSTERS
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid, and its second-nearest where that is within `margin` (cosine) of the
    nearest, else -1: a row that close to the boundary is also compared with the rows of that cluster."""
    from curation.dedup.centroids import two_nearest

    index = centroid_index(normalize(centroids), ivf_min_clusters=ivf_min_clusters)
    first = np.empty(len(emb), np.int64)
    second = np.empty(len(emb), np.int64)
    for start in range(0, len(emb), ASSIGN_BLOCK):
        rows = emb[start : start + ASSIGN_BLOCK]
        norms = np.linalg.norm(rows, axis=1)
        a, b, gap = two_nearest(index, np.ascontiguousarray(rows, dtype=np.float32))
        near = (b >= 0) & (gap <= margin * np.where(norms > 0, norms, 1))  # the gap scales with the row's length
        first[start : start + len(rows)] = a
        second[start : start + len(rows)] = np.where(near, b, -1)
    if (first < 0).any():  # probed lists all empty: the exact search, no second cluster
        lost = np.flatnonzero(first < 0)
        first[lost] = CentroidIndex(index.centroids).search(np.ascontiguousarray(emb[lost], dtype=np.float32))
        second[lost] = -1
    return first, second


def similar_pairs(emb: np.ndarray, *, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of rows with cosine >= min_cosine, by blockwise matrix products."""
    x = normalize(emb)
    n = len(x)
    block = max(1, min(n, PAIR_BLOCK_ENTRIES // max(n, 1)))
    left, right = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x[start:].T  # only columns j >= start: each pair once
        rows, cols = np.nonzero(sims >= min_cosine)
        cols += start
        rows += start
        upper = rows < cols
        left.append(rows[upper])
        right.append(cols[upper])
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(left).astype(np.int64), np.concatenate(right).astype(np.int64)


def captions_agree(
    left_text: np.ndarray | None,
    right_text: np.ndarray | None,
    left: np.ndarray,
    right: np.ndarray,
    text_eps: float | None,
) -> np.ndarray:
    """Which pairs (left[i], right[i]) have caption embeddings at cosine >= 1 - text_eps: all of them
    without a text_eps or without caption embeddings on either side."""
    if text_eps is None or left_text is None or right_text is None:
        return np.ones(len(left), bool)
    cosine = np.einsum("ij,ij->i", normalize(left_text[left]), normalize(right_text[right]))
    return cosine >= cosine_threshold(text_eps)


def cluster_decisions(
    keys: Sequence[str] | pa.Array,
    emb: np.ndarray,
    quality: Sequence[float | None] | np.ndarray,
    *,
    eps: float,
    text_emb: np.ndarray | None = None,
    text_eps: float | None = None,
) -> pa.Table:
    """Decisions (kind semantic) for ONE cluster: rows with cosine >= 1 - eps (and, with a text_eps,
    captions that agree) form groups; each group keeps its best-quality row (ties: smallest key)."""
    if len(keys) < 2:
        return empty_decisions()
    left, right = similar_pairs(emb, min_cosine=cosine_threshold(eps))
    agree = captions_agree(text_emb, text_emb, left, right, text_eps)
    return pair_decisions(keys, quality, left[agree], right[agree], DupKind.SEMANTIC)


def against_index_decisions(
    new_keys: Sequence[str] | pa.Array,
    new_emb: np.ndarray,
    old_keys: Sequence[str] | pa.Array,
    old_emb: np.ndarray,
    *,
    eps: float,
    kind: DupKind | str = DupKind.PREVIOUS_REFRESH,
    new_text: np.ndarray | None = None,
    old_text: np.ndarray | None = None,
    text_eps: float | None = None,
) -> pa.Table:
    """Each new row with an old row (kept by an earlier refresh, or an eval image) at cosine >= 1 - eps
    (and captions that agree, where both sides have caption embeddings and a text_eps is given) is a
    duplicate of its most similar such old row (ties: smallest old key). Old rows are never rejected."""
    if not len(new_keys) or not len(old_keys):
        return empty_decisions()
    index = faiss.IndexFlatIP(old_emb.shape[1])
    index.add(normalize(old_emb))
    radius = cosine_threshold(eps)  # FAISS keeps inner products strictly above it
    queries, hits, sims = [], [], []
    for start in range(0, len(new_emb), ASSIGN_BLOCK):
        lims, found_sims, found = index.range_search(normalize(new_emb[start : start + ASSIGN_BLOCK]), radius)
        counts = np.diff(lims).astype(np.int64)
        queries.append(np.repeat(np.arange(start, start + len(counts), dtype=np.int64), counts))
        hits.append(found.astype(np.int64))
        sims.append(found_sims.astype(np.float64))
    queries, hits, sims = np.concatenate(queries), np.concatenate(hits), np.concatenate(sims)
    agree = captions_agree(new_text, old_text, queries, hits, text_eps)
    return nearest_old_decisions(
        key_strings(new_keys), key_strings(old_keys), queries[agree], hits[agree], -sims[agree], kind
    )


def semantic_dedup(
    keys: Sequence[str] | pa.Array,
    emb: np.ndarray,
    quality: Sequence[float | None] | np.ndarray,
    *,
    k: int,
    eps: float,
    seed: int = 0,
    sample_size: int = 100_000,
    niter: int = 20,
    timings: dict[str, float] | None = None,
    text_emb: np.ndarray | None = None,
    text_eps: float | None = None,
) -> pa.Table:
    """SemDeDup in one process: fit `k` centroids on a seeded sample, assign every row, and decide
    duplicates cluster by cluster. Rows sorted by key. `timings`, when given, receives the seconds of
    each step (fit, assign, clusters), the figures docs/sizing.md derives from."""
    n = len(emb)
    if n < 2:
        return empty_decisions()
    clock = _StepClock(timings)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, sample_size), replace=False))
    centroids = fit_centroids(emb[sample], k=k, seed=seed, niter=niter)
    clock.lap("fit_s")
    labels = assign_clusters(emb, centroids)
    clock.lap("assign_s")
    keys = key_strings(keys)
    quality = quality_array(quality)
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=len(centroids)))])
    found = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop - start < 2:
            continue
        rows = order[start:stop]
        decided = cluster_decisions(
            keys.take(pa.array(rows)),
            emb[rows],
            quality[rows],
            eps=eps,
            text_emb=None if text_emb is None else text_emb[rows],
            text_eps=text_eps,
        )
        if decided.num_rows:
            found.append(decided)
    clock.lap("clusters_s")
    return pa.concat_tables(found).sort_by("key") if found else empty_decisions()


class _StepClock:
    """Writes the wall-clock seconds since the previous lap into `timings` (or nowhere)."""

    def __init__(self, timings: dict[str, float] | None):
        import time

        self._time = time.perf_counter
        self._timings = timings
        self._last = self._time()

    def lap(self, name: str) -> None:
        now = self._time()
        if self._timings is not None:
            self._timings[name] = now - self._last
        self._last = now

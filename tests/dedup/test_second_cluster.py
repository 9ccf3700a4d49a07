"""Copies split by a k-means boundary: a row close to its second-nearest centroid is also compared with
that cluster's rows (as a guest), and decided only in its own cluster."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import prepare
from curation.dedup.centroids import CentroidIndex, centroid_index, two_nearest
from curation.dedup.cluster import ClusterDedup, dedup_cluster
from curation.dedup.exact import EXACT_OF, decide_with_copies
from curation.dedup.semantic import normalize


def _rows(emb: np.ndarray, quality: list[float]) -> pa.Table:
    n = len(emb)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "source": ["s"] * n,
            "sha256": [f"h{i}" for i in range(n)],
            "phash": pa.array(np.arange(n, dtype=np.uint64) * np.uint64(0x0F0F0F0F0F0F0F0F)),
            "img_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float16).reshape(-1)), emb.shape[1]),
            "clip_score": pa.array(quality, pa.float32()),
            EXACT_OF: pa.nulls(n, pa.string()),
        }
    )


def _decide(rows: pa.Table) -> dict[str, str]:
    settings = ClusterDedup(near=False, semantic=True, semantic_eps=0.02)
    rows = prepare.with_guests(rows)
    found = {}
    for cluster in set(rows.column("cluster").to_pylist()):
        group = rows.filter(pc.equal(rows.column("cluster"), cluster))
        for d in decide_with_copies(group, decide=dedup_cluster, settings=settings).to_pylist():
            assert d["key"] not in found  # each row is decided in one cluster only
            found[d["key"]] = d["dup_of"]
    return found


def test_a_copy_across_a_boundary_is_found_only_with_a_margin():
    centroids = np.eye(4, dtype=np.float32)[:2]  # two clusters; their boundary: equal first two coordinates
    original = normalize(np.array([[1.0, 0.97, 0.3, 0.0]], np.float32))
    copy = normalize(np.array([[0.97, 1.0, 0.3, 0.05]], np.float32))  # cosine > 0.99, the other side
    far = normalize(np.array([[0.0, 1.0, 0.0, 1.0]], np.float32))
    rows = _rows(np.concatenate([original, copy, far]), [0.3, 0.2, 0.25])
    cosine = float((original @ copy.T)[0, 0])
    assert cosine > 0.98
    plain = prepare.with_clusters(rows, centroids=centroids)
    assert plain.column("cluster").to_pylist()[:2] == [0, 1]
    assert _decide(plain) == {}  # split by the boundary: never compared
    guests = prepare.with_clusters(rows, centroids=centroids, margin=0.05)
    assert _decide(guests) == {"s/1": "s/0"}  # the lower-quality copy, decided in its own cluster


def test_two_nearest_through_the_inverted_file_keeps_the_nearest_of_the_plain_assignment():
    """The nearest centroid is the one assign_clusters gives (a margin changes no row's own cluster); the
    second is a true runner-up among the lists searched, with its true gap (the inverted file's second
    is approximate: docs/dedup.md)."""
    from curation.dedup.semantic import assign_clusters

    rng = np.random.default_rng(0)
    centroids = normalize(rng.standard_normal((3000, 32)).astype(np.float32))
    x = centroids[rng.integers(0, 3000, 4000)] + 0.15 * rng.standard_normal((4000, 32)).astype(np.float32)
    first, second, gap = two_nearest(centroid_index(centroids, ivf_min_clusters=1000), x)
    assert (first == assign_clusters(x, centroids, ivf_min_clusters=1000)).all()
    assert (first != second).all() and (gap >= 0).all()
    sims = np.einsum("ij,ij->i", x, centroids[first]) - np.einsum("ij,ij->i", x, centroids[second])
    assert np.allclose(sims, gap, atol=1e-4)
    exact_first, exact_second, exact_gap = two_nearest(CentroidIndex(centroids), x)
    assert (exact_gap <= np.einsum("ij,ij->i", x, centroids[exact_first]) + 1e-6).all()
    assert (exact_first == assign_clusters(x, centroids)).all()

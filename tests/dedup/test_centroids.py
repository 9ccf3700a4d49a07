"""The cluster count grows with the rows, and many centroids are searched through an IVF index."""

import numpy as np

from curation.dedup.centroids import IVF_MIN_CLUSTERS, centroid_index
from curation.dedup.prepare import POINTS_PER_CENTROID, default_clusters, sample_rate
from curation.dedup.semantic import assign_clusters, fit_centroids, normalize
from curation.lab.bench.assign import run_assign_bench
from curation.lab.bench.dedup import make_planted_embeddings


def test_clusters_grow_with_the_rows_up_to_the_cap_and_the_sample_with_them():
    assert default_clusters(1_500) == 1
    assert default_clusters(3_000_000) == 1_500  # 2,000 rows a cluster
    assert default_clusters(5_000_000_000) == 50_000  # the cap: 100,000 rows a cluster
    assert default_clusters(10_000, rows_per_cluster=500, max_clusters=8) == 8
    # Up to 2,500 clusters the 100,000-row sample is enough, as before; beyond, 40 rows a centroid.
    assert sample_rate(3_000, clusters=1, sample_size=100_000) == 1.0
    assert sample_rate(3_000_000, clusters=1_500, sample_size=100_000) == 100_000 / 3_000_000
    rows = 5_000_000_000
    k = default_clusters(rows)
    assert round(sample_rate(rows, clusters=k, sample_size=100_000) * rows) == POINTS_PER_CENTROID * k == 2_000_000


def test_few_centroids_are_searched_exactly():
    data = make_planted_embeddings(n=4_000, dim=32, seed=3)
    centroids = fit_centroids(data.emb, k=200, seed=0, niter=5)
    assert centroid_index(centroids).exact and 200 < IVF_MIN_CLUSTERS
    exact = np.argmax(normalize(data.emb) @ centroids.T, axis=1)
    assert np.array_equal(assign_clusters(data.emb, centroids), exact)


def test_the_ivf_index_misses_under_one_percent_of_nearest_centroids():
    figures = run_assign_bench(20_000, 2_000, 64, seed=1, ivf_min_clusters=1_000)
    assert figures["k"] == 2_000
    assert figures["miss_rate"] <= 0.01, figures
    assert figures["pairs_split_by_index"] <= 0.01, figures
    # Deterministic: the same index (built once per process and centroids) gives the same labels.
    data = make_planted_embeddings(n=2_000, dim=64, seed=1)
    centroids = fit_centroids(data.emb, k=1_500, seed=0, niter=3)
    first = assign_clusters(data.emb, centroids, ivf_min_clusters=1_000)
    assert not centroid_index(normalize(centroids), ivf_min_clusters=1_000).exact
    assert np.array_equal(first, assign_clusters(data.emb.copy(), centroids.copy(), ivf_min_clusters=1_000))

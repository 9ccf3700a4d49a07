"""Centroid assignment benchmark: the IVF index over many centroids against an exact flat search.

The rows are the dedup benchmark's planted embeddings (`make_planted_embeddings`); the centroids are a
seeded k-means on them (`fit_centroids`, 10 iterations). Every row is assigned once with a flat index (exact)
and once with `assign_clusters` (IVF at k >= IVF_MIN_CLUSTERS). A miss is a row whose IVF centroid is not
its exact nearest one; a split pair is a planted duplicate pair (original and copy) that the flat search
puts in one cluster and the IVF search in two: the misses that can cost a duplicate. Both searches run on
one thread, so that the ratio is per core. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import time

import click
import faiss
import numpy as np

from curation.dedup.semantic import assign_clusters, fit_centroids, normalize
from curation.lab.bench.dedup import ROWS_PER_COMPONENT, make_planted_embeddings


def planted_pairs(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (first row of a planted group, each other row of it)."""
    rows = np.flatnonzero(group >= 0)
    rows = rows[np.argsort(group[rows], kind="stable")]
    first = np.searchsorted(group[rows], group[rows])  # position of each group's first row
    leader = rows[first]
    other = rows != leader
    return leader[other], rows[other]


def run_assign_bench(
    n: int, k: int, dim: int, seed: int = 0, *, rows_per_component: int = ROWS_PER_COMPONENT, ivf_min_clusters=None
) -> dict:
    """Assign `n` planted rows to `k` centroids, flat and through `assign_clusters`; misses and seconds.
    `ivf_min_clusters` (default: the pipeline's) lets a small k use the IVF index too."""
    data = make_planted_embeddings(n=n, dim=dim, seed=seed, rows_per_component=rows_per_component)
    options = {} if ivf_min_clusters is None else {"ivf_min_clusters": ivf_min_clusters}
    emb = data.emb.astype(np.float32)
    centroids = fit_centroids(data.emb, k=k, seed=seed, niter=10)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(dim)
        flat.add(normalize(centroids))
        exact = flat.search(emb, 1)[1][:, 0]
        flat_s = time.perf_counter() - start
        start = time.perf_counter()
        found = assign_clusters(emb, centroids, **options)
        index_s = time.perf_counter() - start
    finally:
        faiss.omp_set_num_threads(threads)
    left, right = planted_pairs(data.group)
    together = exact[left] == exact[right]
    split = together & (found[left] != found[right])
    return {
        "bench": "assign",
        "n": n,
        "k": len(centroids),
        "dim": dim,
        "rows_per_component": rows_per_component,
        "flat_s": round(flat_s, 3),
        "index_s": round(index_s, 3),
        "miss_rate": round(float(np.mean(found != exact)), 6),
        "pairs_together_flat": round(float(np.mean(together)), 6),
        "pairs_split_by_index": round(float(split.sum() / max(1, together.sum())), 6),
        "ratio": round(flat_s / index_s, 3) if index_s else None,
    }


@click.command("assign")
@click.option("--n", default=100_000, show_default=True, type=click.IntRange(min=100), help="Rows.")
@click.option("--k", default=20_000, show_default=True, type=click.IntRange(min=1), help="Centroids.")
@click.option("--dim", default=128, show_default=True, type=click.IntRange(min=2), help="Embedding width.")
@click.option(
    "--rows-per-component",
    default=ROWS_PER_COMPONENT,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per mixture component of the data; >= n: one blob, the hardest case for the index.",
)
@click.option("--seed", default=0, show_default=True, type=int)
def assign_command(n: int, k: int, dim: int, rows_per_component: int, seed: int) -> None:
    """Nearest-centroid assignment: the IVF index over the centroids against a flat search (misses, speed)."""
    figures = run_assign_bench(n, k, dim, seed, rows_per_component=rows_per_component)
    click.echo(
        f"n={figures['n']:,} k={figures['k']:,} dim={dim}: flat {figures['flat_s']:.2f} s, index "
        f"{figures['index_s']:.2f} s (x{figures['ratio']}), misses {figures['miss_rate']:.4%}, planted pairs "
        f"split by the index {figures['pairs_split_by_index']:.4%}"
    )
    click.echo(json.dumps(figures))

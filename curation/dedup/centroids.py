"""Nearest-centroid search: exact (a flat index) for up to `IVF_MIN_CLUSTERS` centroids, and an inverted-file
index over the centroids beyond, where a flat search would cost every row k inner products.

The IVF index groups the centroids into about 2·√k lists (a k-means over the centroids themselves, seeded)
and searches `IVF_PROBE` lists per row: about 2·√k + 16·√k inner products a row instead of k. A row whose
nearest centroid lies in an unsearched list goes to the nearest one found, a centroid almost as close:
docs/dedup.md gives the measured miss rates. The index is built once per process and set of centroids
(keyed by their bytes' digest), so the batches of a task share it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import faiss
import numpy as np

IVF_MIN_CLUSTERS = 16_384  # below this the flat search is exact and cheap: small runs keep their decisions
IVF_LISTS_PER_ROOT = 2  # lists = 2·√k
IVF_PROBE = 32  # lists searched per row
IVF_SEED = 0
_CACHE: OrderedDict[bytes, faiss.Index] = OrderedDict()
_CACHE_SIZE = 2


def centroid_index(centroids: np.ndarray, *, ivf_min_clusters: int = IVF_MIN_CLUSTERS) -> faiss.Index:
    """An inner-product index over unit-length float32 `centroids`: flat below `ivf_min_clusters`, IVF above
    (cached by content, so a task's batches build it once)."""
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    digest = hashlib.blake2b(memoryview(centroids).cast("B"), digest_size=16).digest()
    key = digest + centroids.shape[0].to_bytes(8, "big") + ivf_min_clusters.to_bytes(8, "big")
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    index = _build(centroids, ivf_min_clusters)
    _CACHE[key] = index
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return index


def _build(centroids: np.ndarray, ivf_min_clusters: int) -> faiss.Index:
    k, dim = centroids.shape
    if k < ivf_min_clusters:
        index = faiss.IndexFlatIP(dim)
        index.add(centroids)
        return index
    lists = max(1, round(IVF_LISTS_PER_ROOT * math.sqrt(k)))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = IVF_SEED
    index.cp.niter = 10
    index.cp.spherical = True
    index.cp.min_points_per_centroid = 1
    index.train(centroids)
    index.add(centroids)
    index.nprobe = min(IVF_PROBE, lists)
    return index

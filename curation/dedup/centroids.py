"""Nearest-centroid search: exact (a flat index) below `IVF_MIN_CLUSTERS` centroids, and through an inverted
file over the centroids beyond, where a flat search would cost every row k inner products.

The inverted file groups the k centroids into L = 2·√k lists (a seeded spherical k-means over the
centroids themselves, each centroid in the list of its nearest list centre). A row is compared with the L
list centres and then with the centroids of its `IVF_PROBE` nearest lists: about 2·√k + 4·√k inner
products instead of k. The rows of a block are grouped by list, so that every comparison is one matrix
product (a plain IVF scan row by row ran slower than the flat search's BLAS at k = 20,000). A row whose
nearest centroid lies in a list it does not probe goes to the nearest one it finds, a centroid almost as
close: docs/dedup.md gives the measured misses. The index is built once per process and set of centroids
(keyed by their bytes' digest), so the batches of a task share it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import faiss
import numpy as np

IVF_MIN_CLUSTERS = 16_384  # below this the flat search is exact and cheap: small runs keep their decisions
IVF_LISTS_PER_ROOT = 2  # lists = 2·√k
IVF_PROBE = 8  # lists searched per row
IVF_SEED = 0
_CACHE: OrderedDict[bytes, CentroidIndex] = OrderedDict()
_CACHE_SIZE = 2


@dataclass(frozen=True)
class CentroidIndex:
    """Unit-length float32 `centroids`; with `lists`, an inverted file: `lists` (a flat index over the list
    centres), `members` (centroid ids, grouped by list) and `bounds` (list l holds members[bounds[l]:bounds[l+1]])."""

    centroids: np.ndarray
    lists: faiss.Index | None = None
    members: np.ndarray | None = None
    bounds: np.ndarray | None = None

    @property
    def exact(self) -> bool:
        return self.lists is None

    def search(self, x: np.ndarray) -> np.ndarray:
        """The (int64) index of each float32 row's nearest centroid by inner product."""
        if self.lists is None:
            flat = faiss.IndexFlatIP(self.centroids.shape[1])
            flat.add(self.centroids)
            return flat.search(x, 1)[1][:, 0]
        best = np.full(len(x), -np.inf, np.float32)
        label = np.full(len(x), -1, np.int64)
        for ids, rows in self.probed(x):
            sims = x[rows] @ self.centroids[ids].T
            found = np.argmax(sims, axis=1)
            value = sims[np.arange(len(rows)), found]
            better = (value > best[rows]) | ((value == best[rows]) & (ids[found] < label[rows]))
            best[rows[better]] = value[better]
            label[rows[better]] = ids[found[better]]
        return label

    def probed(self, x: np.ndarray):
        """Per inverted list searched by some row: (its centroid ids, the rows that search it)."""
        probe = min(IVF_PROBE, self.lists.ntotal)
        probed = self.lists.search(x, probe)[1].ravel()  # row r's lists at r*probe ... r*probe+probe-1
        by_list = np.argsort(probed, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(probed, minlength=self.lists.ntotal))])
        for lst in range(self.lists.ntotal):
            ids = self.members[self.bounds[lst] : self.bounds[lst + 1]]
            rows = by_list[starts[lst] : starts[lst + 1]] // probe
            if len(ids) and len(rows):
                yield ids, rows


def two_nearest(index: CentroidIndex, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each float32 row's nearest and second-nearest centroid (int64, -1 where there is none) and the
    inner products' difference (how close the row is to the boundary between the two)."""
    if index.lists is None:
        flat = faiss.IndexFlatIP(index.centroids.shape[1])
        flat.add(index.centroids)
        sims, found = flat.search(x, min(2, len(index.centroids)))
        if found.shape[1] < 2:
            return found[:, 0], np.full(len(x), -1, np.int64), np.full(len(x), np.inf, np.float32)
        return found[:, 0], found[:, 1], sims[:, 0] - sims[:, 1]
    best = np.full((len(x), 2), -np.inf, np.float32)
    label = np.full((len(x), 2), -1, np.int64)
    for ids, rows in index.probed(x):
        sims = x[rows] @ index.centroids[ids].T
        merged = np.concatenate([best[rows], sims], axis=1)  # the two best so far, then this list's
        ids_merged = np.concatenate([label[rows], np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argsort(-merged, axis=1, kind="stable")[:, :2]
        best[rows] = np.take_along_axis(merged, top, axis=1)
        label[rows] = np.take_along_axis(ids_merged, top, axis=1)
    return label[:, 0], label[:, 1], best[:, 0] - best[:, 1]


def centroid_index(centroids: np.ndarray, *, ivf_min_clusters: int = IVF_MIN_CLUSTERS) -> CentroidIndex:
    """The search over unit-length float32 `centroids`: exact below `ivf_min_clusters`, an inverted file
    above (cached by content, so a task's batches build it once)."""
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if len(centroids) < ivf_min_clusters:
        return CentroidIndex(centroids)
    digest = hashlib.blake2b(memoryview(centroids).cast("B"), digest_size=16).digest()
    key = digest + len(centroids).to_bytes(8, "big")
    if key not in _CACHE:
        _CACHE[key] = _inverted_file(centroids)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def _inverted_file(centroids: np.ndarray) -> CentroidIndex:
    k, dim = centroids.shape
    n_lists = max(1, round(IVF_LISTS_PER_ROOT * math.sqrt(k)))
    kmeans = faiss.Kmeans(dim, n_lists, niter=10, seed=IVF_SEED, spherical=True, min_points_per_centroid=1)
    kmeans.train(centroids)
    lists = faiss.IndexFlatIP(dim)
    lists.add(kmeans.centroids)
    owner = lists.search(centroids, 1)[1][:, 0]
    members = np.argsort(owner, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_lists))])
    return CentroidIndex(centroids, lists=lists, members=members, bounds=bounds)

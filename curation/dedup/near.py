"""Near duplicates by perceptual hash: rows whose 64-bit pHashes are within a Hamming radius.

pHashes are `uint64` (imagehash's 8x8 pHash bits packed big-endian, see `stages.decode.phash64`).
Call this per partition: the runner calls it per k-means cluster (a few thousand rows), where an exact
FAISS flat scan (`IndexBinaryFlat`, AVX-512 popcount) is the fastest search. FAISS's multi-index hash
(`IndexBinaryMultiHash`, 4 x 16-bit tables, nflip = radius // 4 so still exact) was measured slower than
the flat scan at every size tried on the 2-core box (20k rows: 1.4 s vs 0.28 s; 100k rows: 31 s vs
5.8 s), because a radius of 10-12 of 64 bits is a wide ball: it is not used. Queries go in blocks, so memory
stays bounded by the pairs found.

DEFAULT_RADIUS = 12 is measured on real photographs (scikit-image's sample images, JPEG q90, pHash of
the decoded image; tests/dedup/test_near.py keeps the claim):
- resize (0.5x, 0.75x) and recompression at quality 30: 0-4 bits on all 19 photos tried;
- crops: 3 % off every side 4-12 bits on natural photos (a brick texture: 24), 6 % off one side 4-12
  (right) or 4-16 (top); 4-6 % off every side 8-24, which overlaps distinct images;
- distinct photos: >= 20 bits apart (171 pairs, median 32); natural photos and their variants >= 22;
- hard negatives: 200 LFW thumbnails (faces and non-faces, 19,900 pairs) have 0 pairs <= 8 bits,
  3 <= 10, 12 <= 12, 112 <= 16; 346 non-overlapping 128 px tiles of the photos (59,685 pairs) have 10
  (blank tiles) <= 10, 15 <= 12, 34 <= 16.
So 12 is the smallest radius that covers resizes, recompression and 3 %-per-side crops, with 8 bits to
the closest distinct photos; larger crops are left to semantic dedup, which runs in the same cluster.
pHash distances are even here (the hash thresholds 64 DCT terms at their median, so every hash has 32 set bits):
radius 12 and 13 are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

HASH_BITS = 64
DEFAULT_RADIUS = 12
QUERY_BLOCK = 65_536  # rows queried at once: bounds the memory of one range-search result


def phash_codes(phash: np.ndarray | Sequence[int]) -> np.ndarray:
    """uint64 pHashes as the contiguous uint8 (n, 8) big-endian codes FAISS binary indexes take."""
    values = np.ascontiguousarray(np.asarray(phash, dtype=np.uint64))
    return np.ascontiguousarray(values.astype(">u8").view(np.uint8).reshape(-1, HASH_BITS // 8))


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Hamming distance between uint64 pHashes (broadcasting)."""
    x = np.ascontiguousarray(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def range_pairs(queries: np.ndarray, base: np.ndarray, *, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query row, base row, distance) with Hamming distance <= radius; codes are uint8 (n, 8)."""
    if not len(queries) or not len(base):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty.astype(np.int32)
    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(base)
    found_q, found_b, found_d = [], [], []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = queries[start : start + QUERY_BLOCK]
        # FAISS binary range search keeps distances strictly below its radius.
        lims, distances, labels = index.range_search(block, radius + 1)
        counts = np.diff(lims).astype(np.int64)
        found_q.append(np.repeat(np.arange(start, start + len(block), dtype=np.int64), counts))
        found_b.append(labels.astype(np.int64))
        found_d.append(distances.astype(np.int32))
    return np.concatenate(found_q), np.concatenate(found_b), np.concatenate(found_d)


def near_pairs(phash: np.ndarray, *, radius: int = DEFAULT_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of rows whose pHashes are within `radius` bits of each other."""
    codes = phash_codes(phash)
    left, right, _ = range_pairs(codes, codes, radius=radius)
    upper = left < right
    return left[upper], right[upper]

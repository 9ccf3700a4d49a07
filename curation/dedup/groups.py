"""Duplicate groups: connected components over pairs, and the decisions one labelling gives.

Every pairwise dedup kind (near, semantic) finds pairs of rows that are "the same", joins them into
groups transitively (connected components) and keeps one member per group. Everything here is
vectorised numpy/Arrow: no Python loop runs per row or per pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.decisions import DECISION_SCHEMA, empty_decisions
from curation.schema import DupKind


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component label of each of `n` nodes, given edges `left[i] -- right[i]`.

    A node's label is the smallest node index in its component, so labels do not depend on the order
    of the edges. Hook-and-compress (parallel union-find): each round hooks every root to the smallest
    root it shares an edge with, then compresses paths with pointer jumping; the number of unfinished
    roots at least halves per round, so there are O(log n) vectorised rounds.
    """
    parent = np.arange(n, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while left.size:
        a, b = parent[left], parent[right]
        differ = a != b
        if not differ.any():
            break
        a, b = a[differ], b[differ]
        left, right = left[differ], right[differ]  # edges already inside one component are done
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        parent = _compress(parent)
    return parent


def _compress(parent: np.ndarray) -> np.ndarray:
    """Point every node straight at its root."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def quality_array(quality: Sequence[float | None] | np.ndarray | pa.Array) -> np.ndarray:
    """Quality scores as float64, missing values (None, NaN) ranked lowest (-inf)."""
    if isinstance(quality, (pa.Array, pa.ChunkedArray)):
        quality = quality.to_numpy(zero_copy_only=False)
    if not isinstance(quality, np.ndarray):
        quality = [np.nan if q is None else q for q in quality]
    values = np.asarray(quality, dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def kind_value(kind: DupKind | str) -> str:
    return kind.value if isinstance(kind, DupKind) else str(kind)


def key_strings(keys: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Keys as one Arrow string array."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(keys, pa.Array):
        return keys.cast(pa.string())
    return pa.array(list(keys), pa.string())


def decisions_from_components(
    keys: Sequence[str] | pa.Array,
    quality: Sequence[float | None] | np.ndarray,
    labels: np.ndarray,
    kind: DupKind | str,
) -> pa.Table:
    """Decisions for rows grouped by `labels`: in each group of two or more, the survivor is the member
    with the highest quality (ties: smallest key), as `pick_survivor` does; every other member gets
    `dup_of` = the survivor's key. Rows sorted by key; singletons give no row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if n < 2:
        return empty_decisions()
    sizes = np.bincount(labels - labels.min())[labels - labels.min()]
    grouped = np.flatnonzero(sizes > 1)
    if grouped.size == 0:
        return empty_decisions()
    key_array = key_strings(keys)
    rows = pa.table(
        {
            "label": pa.array(labels[grouped]),
            "quality": pa.array(quality_array(quality)[grouped]),
            "key": key_array.take(pa.array(grouped)),
        }
    )
    order = pc.sort_indices(
        rows, sort_keys=[("label", "ascending"), ("quality", "descending"), ("key", "ascending")]
    ).to_numpy()
    sorted_labels = labels[grouped][order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    survivor_pos = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    sorted_keys = rows.column("key").take(pa.array(order))
    dups = np.flatnonzero(~first)
    table = pa.table(
        {
            "key": sorted_keys.take(pa.array(dups)),
            "dup_of": sorted_keys.take(pa.array(survivor_pos[dups])),
            "dup_kind": pa.repeat(pa.scalar(kind_value(kind), pa.string()), dups.size),
        },
        schema=DECISION_SCHEMA,
    )
    return table.sort_by("key")


def pair_decisions(
    keys: Sequence[str] | pa.Array,
    quality: Sequence[float | None] | np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    kind: DupKind | str,
) -> pa.Table:
    """Decisions for rows joined by pairs (`left[i]`, `right[i]` are row indices): components, then survivors."""
    labels = connected_components(len(keys), left, right)
    return decisions_from_components(keys, quality, labels, kind)


def nearest_old_decisions(
    new_keys: pa.Array, old_keys: pa.Array, queries: np.ndarray, hits: np.ndarray, cost: np.ndarray, kind: DupKind | str
) -> pa.Table:
    """From candidate matches (new row `queries[i]` ~ old row `hits[i]`, lower `cost` is closer), one
    decision per new row: dup_of the closest old row, ties broken by the smallest old key."""
    if not queries.size:
        return empty_decisions()
    old_rank = pc.rank(old_keys, sort_keys="ascending", tiebreaker="first").to_numpy()
    order = np.lexsort((old_rank[hits], cost, queries))
    queries, hits = queries[order], hits[order]
    first = np.ones(queries.size, dtype=bool)
    first[1:] = queries[1:] != queries[:-1]
    queries, hits = queries[first], hits[first]
    table = pa.table(
        {
            "key": new_keys.take(pa.array(queries)),
            "dup_of": old_keys.take(pa.array(hits)),
            "dup_kind": pa.repeat(pa.scalar(kind_value(kind), pa.string()), queries.size),
        },
        schema=DECISION_SCHEMA,
    )
    return table.sort_by("key")

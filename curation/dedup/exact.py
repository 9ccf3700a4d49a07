"""Exact duplicates: rows whose source image bytes have the same sha256.

`exact_groups` takes whole groups of equal hashes at once (a block of a shuffle by sha256) and finds
each group's survivor with one sort: the highest quality, ties broken by the smallest key (as
`decisions.pick_survivor`). Its copies either become decisions at once, or, when clusters follow, ride
along with their survivor into the survivor's cluster (`exact_of`), so that a chain through the
survivor (a copy of a row the cluster then finds to be a near copy, say) resolves inside one task.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.decisions import SOURCED_DECISION_SCHEMA, group_decisions, resolve_chains, with_sources
from curation.schema import DupKind
from curation.stages.base import set_column

EXACT_OF = "exact_of"  # the survivor's key, on a copy that rides along to the survivor's cluster


def exact_group_decisions(group: pa.Table, quality: str = "clip_score") -> pa.Table:
    """One group of equal hashes in, its decisions out."""
    return group_decisions(group.column("key").to_pylist(), group.column(quality).to_pylist(), DupKind.EXACT)


def exact_groups(rows: pa.Table, *, quality: str, ride_along: bool) -> pa.Table:
    """Rows holding whole sha256 groups in. Out: with `ride_along`, every row, with `exact_of` (null on
    survivors) and, on copies, the survivor's cluster; else the copies' decisions, with their sources."""
    if not rows.num_rows:
        return _empty(rows, ride_along)
    score = rows.column(quality).to_numpy(zero_copy_only=False).astype(np.float64)
    order = pa.table(
        {"sha256": rows.column("sha256"), "q": np.where(np.isnan(score), -np.inf, score), "key": rows.column("key")}
    )
    rows = rows.take(pc.sort_indices(order, [("sha256", "ascending"), ("q", "descending"), ("key", "ascending")]))
    n = rows.num_rows
    sha = rows.column("sha256").combine_chunks()
    starts = np.ones(n, bool)
    starts[1:] = pc.not_equal(sha.slice(1), sha.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    survivor = pa.array(np.maximum.accumulate(np.where(starts, np.arange(n), 0)))
    survivor_key = pc.take(rows.column("key"), survivor)
    if ride_along:
        rows = set_column(rows, "cluster", pc.take(rows.column("cluster"), survivor))
        exact_of = pc.if_else(pa.array(starts), pa.scalar(None, pa.string()), survivor_key.cast(pa.string()))
        return rows.append_column(EXACT_OF, exact_of)
    copy = pa.array(~starts)
    copies = rows.filter(copy).append_column(EXACT_OF, survivor_key.filter(copy).cast(pa.string()))
    return copy_decisions(copies)


def _empty(rows: pa.Table, ride_along: bool) -> pa.Table:
    if ride_along:
        return rows.append_column(EXACT_OF, pa.array([], pa.string()))
    return SOURCED_DECISION_SCHEMA.empty_table()


def copy_decisions(copies: pa.Table) -> pa.Table:
    """Decisions for rows that rode along with their survivor (exact_of set)."""
    return pa.table(
        {
            "key": copies.column("key"),
            "dup_of": copies.column(EXACT_OF),
            "dup_kind": pa.array([DupKind.EXACT.value] * copies.num_rows, pa.string()),
            "source": copies.column("source"),
        }
    ).cast(SOURCED_DECISION_SCHEMA)


def decide_with_copies(group: pa.Table, *, decide, **settings) -> pa.Table:
    """For one cluster (`map_groups`): `decide(rows, **settings)` on the rows that are no exact copy, the
    copies that rode along with their survivors (`exact_of`) added, and every chain resolved: all of
    a chain's rows are in this cluster. Decisions with their rows' sources."""
    from curation.dedup.prepare import GUEST

    copies = group.filter(pc.is_valid(group.column(EXACT_OF)))
    rows = group.filter(pc.is_null(group.column(EXACT_OF))).drop_columns([EXACT_OF])
    decided = [copy_decisions(copies)]
    if rows.num_rows:
        found = with_sources(decide(rows, **settings), rows).cast(SOURCED_DECISION_SCHEMA)
        if GUEST in rows.column_names:  # guests are decided in their own cluster: only compared with here
            guests = rows.filter(rows.column(GUEST)).column("key")
            found = found.filter(pc.invert(pc.is_in(found.column("key"), value_set=guests)))
        decided.append(found)
    return resolve_chains(pa.concat_tables(decided))

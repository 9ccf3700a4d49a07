"""The decisions table shared by every dedup kind, and applying it to scored rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import DupKind, RejectReason, Stage, Status
from curation.stages.base import set_column

DECISION_SCHEMA = pa.schema([("key", pa.string()), ("dup_of", pa.string()), ("dup_kind", pa.string())])
# What the dedup phase writes: each decision with its row's source shard (decisions/<source>.parquet).
SOURCED_DECISION_SCHEMA = DECISION_SCHEMA.append(pa.field("source", pa.string()))

REASON_FOR_KIND = {
    DupKind.EXACT.value: RejectReason.EXACT_DUPLICATE,
    DupKind.NEAR.value: RejectReason.NEAR_DUPLICATE,
    DupKind.SEMANTIC.value: RejectReason.SEMANTIC_DUPLICATE,
    DupKind.PREVIOUS_REFRESH.value: RejectReason.DUPLICATE_OF_PREVIOUS_REFRESH,
    DupKind.EVAL.value: RejectReason.EVAL_CONTAMINATION,
}
# Decisions of the dedup phase that filter rather than deduplicate: no dup_of, no dup_kind on the row.
FILTER_KINDS = {RejectReason.OUTSIDE_REFERENCE_CLUSTERS.value: Stage.IMAGE_FILTER}


def with_sources(decisions: pa.Table, rows: pa.Table) -> pa.Table:
    """`decisions` with the source shard of each decided row, taken from `rows` (the rows they decide
    about), so that each write task reads only its own shard's decisions; never parsed out of keys."""
    at = pc.index_in(decisions.column("key"), value_set=rows.column("key"))
    return (
        decisions.select(DECISION_SCHEMA.names)
        .cast(DECISION_SCHEMA)
        .append_column("source", pc.take(rows.column("source"), at).cast(pa.string()))
    )


def decide_with_sources(rows: pa.Table, *, decide, **settings) -> pa.Table:
    """For `map_groups` / `map_batches`: `decide(rows, **settings)`, its decisions with their sources."""
    return with_sources(decide(rows, **settings), rows)


def empty_decisions() -> pa.Table:
    return DECISION_SCHEMA.empty_table()


def pick_survivor(keys: list[str], quality: list[float | None]) -> int:
    """Index of the member kept in a duplicate group: highest quality, ties broken by smallest key."""
    scored = [(-(q if q is not None and q == q else -np.inf), k, i) for i, (k, q) in enumerate(zip(keys, quality))]
    return min(scored)[2]


def group_decisions(keys: list[str], quality: list[float | None], kind: DupKind) -> pa.Table:
    """Decisions for one duplicate group: every member but the survivor is a duplicate of it."""
    if len(keys) < 2:
        return empty_decisions()
    survivor = pick_survivor(keys, quality)
    dups = [k for i, k in enumerate(keys) if i != survivor]
    return pa.table(
        {"key": dups, "dup_of": [keys[survivor]] * len(dups), "dup_kind": [kind.value] * len(dups)},
        schema=DECISION_SCHEMA,
    )


def apply_decisions(table: pa.Table, decisions: dict[str, tuple[str, str]]) -> pa.Table:
    """Mark rows named in `decisions` (key -> (dup_of, dup_kind)) as rejected duplicates."""
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist()
    reasons = table.column("reject_reason").to_pylist()
    stages = table.column("reject_stage").to_pylist()
    dup_of = [None] * len(keys)
    dup_kind = [None] * len(keys)
    for i, key in enumerate(keys):
        decision = decisions.get(key)
        if decision is None or status[i] != Status.KEPT.value:
            continue
        if decision[1] in FILTER_KINDS:
            status[i], reasons[i], stages[i] = Status.REJECTED.value, decision[1], FILTER_KINDS[decision[1]].value
            continue
        dup_of[i], dup_kind[i] = decision
        status[i] = Status.REJECTED.value
        reasons[i] = REASON_FOR_KIND[decision[1]].value
        stages[i] = Stage.DEDUP.value
    table = set_column(table, "dup_of", dup_of, pa.string())
    table = set_column(table, "dup_kind", dup_kind, pa.string())
    table = set_column(table, "status", status, pa.string())
    table = set_column(table, "reject_reason", reasons, pa.string())
    return set_column(table, "reject_stage", stages, pa.string())


def resolve_chains(decisions: pa.Table) -> pa.Table:
    """Point every duplicate at a row that survives; a copy of a previous-refresh duplicate is one too.

    Exact dedup runs first, so an exact copy may point at a row that the cluster step then found in an
    earlier refresh: follow such chains to their end and take the previous-refresh kind when met. A
    previous-refresh decision ends a chain: its dup_of names a row of the earlier output.
    """
    previous = DupKind.PREVIOUS_REFRESH.value
    keys = decisions.column("key").to_pylist()
    sources = decisions.column("source") if "source" in decisions.column_names else None
    target = dict(zip(keys, zip(decisions.column("dup_of").to_pylist(), decisions.column("dup_kind").to_pylist())))
    dup_of, kinds = [], []
    for key in keys:
        current, kind = target[key]
        seen = {key}
        while kind != previous and current in target and current not in seen:
            seen.add(current)
            current, next_kind = target[current]
            if next_kind == previous:
                kind = previous
        dup_of.append(current)
        kinds.append(kind)
    resolved = pa.table({"key": keys, "dup_of": dup_of, "dup_kind": kinds}, schema=DECISION_SCHEMA)
    return resolved.append_column("source", sources) if sources is not None else resolved


# Chains across clusters: one round of pointer jumping over all decisions, by a shuffle on `node` --
# each decision is asked about once (node = its dup_of) and answers once (node = its key).
CHAIN_SCHEMA = SOURCED_DECISION_SCHEMA.append(pa.field("node", pa.string())).append(pa.field("answer", pa.bool_()))


def as_chain_rows(decisions: pa.Table) -> pa.Table:
    """Each decision twice: as a question about its dup_of, and as the answer about its own key."""
    decisions = decisions.select(SOURCED_DECISION_SCHEMA.names).cast(SOURCED_DECISION_SCHEMA)
    n = decisions.num_rows
    asks = decisions.append_column("node", decisions.column("dup_of")).append_column("answer", pa.array([False] * n))
    answers = decisions.append_column("node", decisions.column("key")).append_column("answer", pa.array([True] * n))
    return pa.concat_tables([asks, answers]).cast(CHAIN_SCHEMA)


def follow_chains(block: pa.Table) -> pa.Table:
    """For a block holding, for each row a decision names as dup_of, that row's own decision too (a
    shuffle on `node`): every decision whose dup_of was itself decided points at where that one points
    (a previous-refresh end makes it a previous-refresh duplicate). Returns the decisions, with `moved`
    on those that changed; rounds halve every chain, and none is circular (a dup_of always ranks higher)."""
    asks = block.filter(pc.invert(block.column("answer")))
    answers = block.filter(block.column("answer"))
    at = pc.index_in(asks.column("node"), value_set=answers.column("node"))
    moved = pc.is_valid(at)
    target = pc.take(answers.column("dup_of"), at)
    target_kind = pc.take(answers.column("dup_kind"), at)
    previous = pc.fill_null(pc.equal(target_kind, DupKind.PREVIOUS_REFRESH.value), False)
    out = asks.select(SOURCED_DECISION_SCHEMA.names)
    out = set_column(out, "dup_of", pc.if_else(moved, target, asks.column("dup_of")))
    out = set_column(out, "dup_kind", pc.if_else(previous, target_kind, asks.column("dup_kind")))
    return out.append_column("moved", moved)

"""Per-cluster dedup, for `groupby("cluster").map_groups(...)`: near, semantic and previous-refresh.

Input: one k-means cluster of rows that survived exact dedup (key, sha256, phash, img_emb, quality;
txt_emb too with a semantic_text_eps).
Rows are first compared with the rows kept by earlier refreshes in the same cluster (exact, near,
semantic: `duplicate_of_previous_refresh`), then with each other (near by pHash, then semantic by
cosine). The cluster's survivors are written as this run's state for the next refresh (dedup/state.py:
only this run's rows; the earlier ones stay in the outputs of the chain). Returns the decisions (key,
dup_of, dup_kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.decisions import DECISION_SCHEMA, empty_decisions
from curation.dedup.groups import key_strings, nearest_old_decisions, pair_decisions
from curation.dedup.near import near_pairs, phash_codes, range_pairs
from curation.dedup.prepare import GUEST, embeddings, phashes, text_embeddings
from curation.dedup.semantic import against_index_decisions, cluster_decisions
from curation.dedup.state import cluster_file, read_cluster_state, state_rows
from curation.io.commit import Location, parquet_bytes
from curation.schema import DupKind


@dataclass(frozen=True, kw_only=True)
class ClusterDedup:
    quality: str = "clip_score"
    near: bool = True
    near_radius: int = 12
    near_min_cosine: float = 0.9
    semantic: bool = True
    semantic_eps: float = 0.02
    semantic_text_eps: float | None = None  # captions must agree too (see dedup/semantic.py)
    eval_eps: float | None = None  # eval images (no captions to agree): this eps, else semantic_eps
    against: list[str] = field(default_factory=list)  # the state chain: outputs whose _state/kept/ rows count
    state_url: str | None = None  # where this run's state goes (the output URL)
    eval_rows: pa.Table | None = None  # eval images (key, sha256, phash, img_emb, cluster)


def dedup_cluster(group: pa.Table, *, settings: ClusterDedup) -> pa.Table:
    group = group.sort_by("key")
    cluster = int(group.column("cluster")[0].as_py())
    decided: list[pa.Table] = []
    alive = group

    if settings.eval_rows is not None:
        evals = settings.eval_rows.filter(pc.equal(settings.eval_rows.column("cluster"), cluster))
        if evals.num_rows:
            found = _against(alive, evals, settings, DupKind.EVAL)
            decided.append(found)
            alive = _without(alive, found)
    previous = read_cluster_state(settings.against, cluster) if settings.against else None
    if previous is not None and previous.num_rows:
        found = _against(alive, previous, settings, DupKind.PREVIOUS_REFRESH)
        decided.append(found)
        alive = _without(alive, found)
    if settings.near and alive.num_rows > 1:
        found = _near_decisions(alive, settings)
        decided.append(found)
        alive = _without(alive, found)
    if settings.semantic and alive.num_rows > 1:
        found = cluster_decisions(
            alive.column("key").to_pylist(),
            embeddings(alive),
            alive.column(settings.quality).to_pylist(),
            eps=settings.semantic_eps,
            text_emb=text_embeddings(alive),
            text_eps=settings.semantic_text_eps,
        )
        decided.append(found)
        alive = _without(alive, found)

    if GUEST in alive.column_names:  # a guest's own cluster keeps it in the state
        alive = alive.filter(pc.invert(alive.column(GUEST)))
    if settings.state_url and alive.num_rows:
        state = state_rows(alive)
        Location.of(settings.state_url).write_bytes(parquet_bytes(state), cluster_file(cluster))
    tables = [t.select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA) for t in decided if t.num_rows]
    return pa.concat_tables(tables) if tables else empty_decisions()


def _near_decisions(rows: pa.Table, settings: ClusterDedup) -> pa.Table:
    """pHash pairs within the radius whose images also embed alike (a shared pHash alone is weak evidence
    on flat, synthetic or low-texture images)."""
    left, right = near_pairs(phashes(rows), radius=settings.near_radius)
    if settings.near_min_cosine > -1.0 and left.size:
        emb = embeddings(rows)
        similar = np.einsum("ij,ij->i", emb[left], emb[right]) >= settings.near_min_cosine
        left, right = left[similar], right[similar]
    return pair_decisions(
        rows.column("key").to_pylist(), rows.column(settings.quality).to_pylist(), left, right, DupKind.NEAR
    )


def _near_old(new: pa.Table, old: pa.Table, settings: ClusterDedup, kind: DupKind) -> pa.Table:
    """New rows within the pHash radius of an old row that also embed alike: the closest wins."""
    queries, hits, distances = range_pairs(
        phash_codes(phashes(new)), phash_codes(phashes(old)), radius=settings.near_radius
    )
    if settings.near_min_cosine > -1.0 and queries.size:
        similar = np.einsum("ij,ij->i", embeddings(new)[queries], embeddings(old)[hits]) >= settings.near_min_cosine
        queries, hits, distances = queries[similar], hits[similar], distances[similar]
    return nearest_old_decisions(
        key_strings(new.column("key")),
        key_strings(old.column("key")),
        queries,
        hits,
        distances.astype(np.float64),
        kind,
    )


def _against(new: pa.Table, old: pa.Table, settings: ClusterDedup, kind: DupKind) -> pa.Table:
    """New rows that duplicate old ones (kept by an earlier refresh, or eval images): exact, near, semantic."""
    old_keys = old.column("key").to_pylist()
    by_sha = dict(zip(old.column("sha256").to_pylist(), old_keys))
    new_keys = new.column("key").to_pylist()
    exact = [(k, by_sha[s]) for k, s in zip(new_keys, new.column("sha256").to_pylist()) if s in by_sha]
    found = [
        pa.table(
            {"key": [k for k, _ in exact], "dup_of": [d for _, d in exact], "dup_kind": [kind.value] * len(exact)},
            schema=DECISION_SCHEMA,
        )
    ]
    rest = _without(new, found[0])
    if settings.near and rest.num_rows:
        found.append(_near_old(rest, old, settings, kind))
        rest = _without(rest, found[-1])
    if settings.semantic and rest.num_rows:
        eps = settings.eval_eps if kind is DupKind.EVAL and settings.eval_eps is not None else settings.semantic_eps
        found.append(
            against_index_decisions(
                rest.column("key").to_pylist(),
                embeddings(rest),
                old_keys,
                embeddings(old),
                eps=eps,
                kind=kind,
                new_text=text_embeddings(rest),
                old_text=text_embeddings(old),
                text_eps=settings.semantic_text_eps,
            )
        )
    return pa.concat_tables([t.cast(DECISION_SCHEMA) for t in found])


def _without(table: pa.Table, decisions: pa.Table) -> pa.Table:
    if not decisions.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("key"), value_set=decisions.column("key"))))

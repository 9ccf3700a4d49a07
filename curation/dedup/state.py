"""The dedup state a run leaves for the next refresh, under `<out>/_state/`: append-only along a refresh chain.

  centroids.parquet                 the k-means centroids every refresh in the chain assigns with
  chain.json                        {"chain": [<earlier output URL>, ...]}: the earlier outputs whose
                                    _state/kept/ files, with this run's, hold every row kept so far (oldest
                                    first); empty (or absent, in outputs of older versions): a base
  kept/cluster=<c>.parquet          key, sha256, phash, img_emb of the rows THIS run kept, by cluster (and
                                    txt_emb, from runs with dedup.semantic_text_eps); in a base, of every
                                    row kept so far

A refresh run with `dedup.against: [<earlier output>]` reuses the earlier centroids, compares its new rows
only with the rows the chain kept in the same cluster, and writes only its own survivors: its chain is the
earlier output's chain plus that output. Once the chain would be longer than `dedup.state_compact_after`
(or by `curate compact-state OUTPUT`), the chain's files are folded into one base per cluster, after which
the earlier outputs may be deleted (docs/dedup.md).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import UserError
from curation.io.commit import Location, parquet_bytes, read_parquet

STATE_DIR = "_state"
CENTROIDS = f"{STATE_DIR}/centroids.parquet"
CHAIN = f"{STATE_DIR}/chain.json"
STATE_COLUMNS = ["key", "sha256", "phash", "img_emb"]
TEXT_COLUMN = "txt_emb"  # kept where the run compared captions too


def cluster_file(cluster: int) -> str:
    return f"{STATE_DIR}/kept/cluster={cluster:06d}.parquet"


def write_centroids(out: Location, centroids: np.ndarray) -> None:
    dim = centroids.shape[1]
    values = pa.array(centroids.astype(np.float32).reshape(-1))
    table = pa.table({"centroid": pa.FixedSizeListArray.from_arrays(values, dim)})
    out.write_bytes(parquet_bytes(table), CENTROIDS)


def read_centroids(location: Location) -> np.ndarray:
    table = read_parquet(location, CENTROIDS)
    column = table.column("centroid").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)


def previous_centroids(against: list[str]) -> np.ndarray | None:
    """The centroids shared by the earlier outputs, or None when there are none."""
    found = None
    for url in against:
        location = Location.of(url)
        if not location.exists("_SUCCESS") or not location.exists(CENTROIDS):
            raise UserError(f"dedup.against {url} is not a complete output with a dedup state (_state/): run it first")
        centroids = read_centroids(location)
        if found is not None and not np.array_equal(found, centroids):
            raise UserError(
                "dedup.against outputs use different centroids: give only the latest output of one refresh chain"
            )
        found = centroids
    return found


def write_chain(out: Location, chain: list[str]) -> None:
    out.write_bytes(json.dumps({"chain": chain}, indent=1).encode(), CHAIN)


def read_chain(location: Location) -> list[str]:
    """The earlier outputs `location`'s state builds on, oldest first ([] for a base)."""
    return list(json.loads(location.read_bytes(CHAIN))["chain"]) if location.exists(CHAIN) else []


def state_chain(against: list[str]) -> list[str]:
    """The outputs whose _state/kept/ files hold every row the `against` outputs kept: each one's chain, then
    itself, without repeats. Each must still be there (a finished output) or the kept rows are incomplete."""
    chain: list[str] = []
    for url in against:
        if not Location.of(url).exists("_SUCCESS"):
            raise UserError(f"dedup.against {url} is not a complete output with a dedup state (_state/): run it first")
        for entry in [*read_chain(Location.of(url)), url]:
            if entry in chain:
                continue
            if entry != url and not Location.of(entry).exists("_SUCCESS"):
                raise UserError(
                    f"the dedup state of {url} builds on the earlier output {entry}, which is missing: restore it "
                    f"(run `curate compact-state {url}` before deleting the outputs it builds on)"
                )
            chain.append(entry)
    return chain


def read_cluster_state(chain: list[str], cluster: int) -> pa.Table | None:
    """The rows the `chain` of outputs kept in `cluster`; txt_emb is null for rows of a state without it."""
    tables = []
    for url in chain:
        location = Location.of(url)
        if location.exists(cluster_file(cluster)):
            table = read_parquet(location, cluster_file(cluster))
            tables.append(table.select([c for c in (*STATE_COLUMNS, TEXT_COLUMN) if c in table.column_names]))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def state_rows(alive: pa.Table) -> pa.Table:
    """This run's state for a cluster: its survivors, by key."""
    columns = [*STATE_COLUMNS, *([TEXT_COLUMN] if TEXT_COLUMN in alive.column_names else [])]
    return alive.select(columns).sort_by("key")


def compact_clusters(batch: pa.Table, *, output_url: str, chain: list[str]) -> pa.Table:
    """Fold the chain's rows of each cluster in `batch["id"]` into `output_url`'s own file: one base per
    cluster. Idempotent: a (key, sha256) already folded in by an interrupted compaction is kept once."""
    out = Location.of(output_url)
    written = []
    for cluster in batch.column("id").to_pylist():
        rows = read_cluster_state([*chain, output_url], cluster)
        if rows is None:
            written.append(0)
            continue
        rows = _unique(rows.sort_by([("key", "ascending"), ("sha256", "ascending")]))
        out.write_bytes(parquet_bytes(rows), cluster_file(cluster))
        written.append(rows.num_rows)
    return pa.table({"cluster": batch.column("id"), "rows": pa.array(written, pa.int64())})


def _unique(rows: pa.Table) -> pa.Table:
    """Rows sorted by (key, sha256) without repeats of a pair."""
    if rows.num_rows < 2:
        return rows
    keys, shas = rows.column("key").combine_chunks(), rows.column("sha256").combine_chunks()
    same = pc.and_(pc.equal(keys[1:], keys[:-1]), pc.equal(shas[1:], shas[:-1]))
    return rows.filter(pa.concat_arrays([pa.array([True]), pc.invert(same)]))

"""The dedup state a run leaves for the next refresh, under `<out>/_state/`.

  centroids.parquet                 the k-means centroids every refresh in the chain assigns with
  kept/cluster=<c>.parquet          key, sha256, phash, img_emb of every row kept so far, by cluster
                                    (and txt_emb, from runs with dedup.semantic_text_eps)

A refresh run with `dedup.against: [<earlier output>]` reuses the earlier centroids, compares its new
rows only with the earlier kept rows of the same cluster, and writes a state holding both.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.errors import UserError
from curation.io.commit import Location, parquet_bytes, read_parquet

STATE_DIR = "_state"
CENTROIDS = f"{STATE_DIR}/centroids.parquet"
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


def read_cluster_state(against: list[str], cluster: int) -> pa.Table | None:
    """The rows earlier refreshes kept in `cluster`; txt_emb is null for rows of a state without it."""
    tables = []
    for url in against:
        location = Location.of(url)
        if location.exists(cluster_file(cluster)):
            table = read_parquet(location, cluster_file(cluster))
            tables.append(table.select([c for c in (*STATE_COLUMNS, TEXT_COLUMN) if c in table.column_names]))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def state_rows(alive: pa.Table, previous: pa.Table | None) -> pa.Table:
    """This run's state for a cluster: the earlier kept rows and this run's survivors, by key."""
    columns = [*STATE_COLUMNS, *([TEXT_COLUMN] if TEXT_COLUMN in alive.column_names else [])]
    state = alive.select(columns)
    if previous is None:
        return state
    if TEXT_COLUMN in columns and TEXT_COLUMN not in previous.column_names:
        previous = previous.append_column(
            TEXT_COLUMN, pa.nulls(previous.num_rows, state.schema.field(TEXT_COLUMN).type)
        )
    return pa.concat_tables([previous.select(columns).cast(state.schema), state]).sort_by("key")

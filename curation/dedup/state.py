"""The dedup state a run leaves for the next refresh, under `<out>/_state/`.

  centroids.parquet                 the k-means centroids every refresh in the chain assigns with
  kept/cluster=<c>.parquet          key, sha256, phash, img_emb of every row kept so far, by cluster

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
                f"dedup.against outputs use different centroids: give only the latest output of one refresh chain"
            )
        found = centroids
    return found


def read_cluster_state(against: list[str], cluster: int) -> pa.Table | None:
    tables = []
    for url in against:
        location = Location.of(url)
        if location.exists(cluster_file(cluster)):
            tables.append(read_parquet(location, cluster_file(cluster), columns=STATE_COLUMNS))
    return pa.concat_tables(tables) if tables else None

"""The rejected_images export: rejected/ with the image bytes a job leaves out of it (`output.rejected_images`
false, the default), read back from the job's input.

A rejected row without bytes still names them: `source` (the input shard; the manifest's `inputs` give its
URL), `key` (`<source>/<member or row>`, as the input format's reader names the sample), `url` and
`sha256` (of the bytes the job read; null when it read none: a row the reader rejected before its image,
a URL-list row whose download failed). This export reads each input shard again with the job's reader,
takes the bytes of each rejected row by its key, checks them against its `sha256` and writes

<dir>/part-<shard>.parquet   the rows of rejected/part-<shard>.parquet, in order, with their image bytes

in rejected/'s schema (Hugging Face features included), so the files read like rejected/ of a run with
`output.rejected_images: true`. An input shard that no longer holds a row's bytes (moved: give the
input's new URL; changed: restore it) is a one-line error. Rows whose bytes the input does not hold
(downloaded from a URL list) keep none: their `url` names them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import UserError
from curation.io import huggingface
from curation.io.commit import Location, parquet_buffer, read_parquet
from curation.io.readers import image_values, read_shard
from curation.io.sinks import ExportSettings, MapInOrder
from curation.io.sources import Shard
from curation.io.urls import strip_credentials

DIRECTORY = "rejected_images"
_OWN = re.compile(r"^part-[^/]+\.parquet$")


@dataclass(frozen=True)
class RejectedFile:
    """A rejected/ file of a finished output and the input shard its rows came from."""

    name: str  # rejected/part-<shard>.parquet
    shard: Shard
    max_shard_bytes: int  # the run's input.max_shard_bytes: the reader brings the same rows' bytes
    compression: str = "zstd"  # the run's output.compression and row_group_size
    row_group_size: int = 1024


def owns(path: str) -> bool:
    return bool(_OWN.match(path))


def export(
    source: Location, files: list[RejectedFile], dest: Location, settings: ExportSettings, map_in_order: MapInOrder
) -> dict:
    results = list(map_in_order(functools.partial(write_file, source, dest), files))
    return {
        "files": len(results),
        "rows": sum(r["rows"] for r in results),
        "read_back": sum(r["read_back"] for r in results),
        "stored": sum(r["stored"] for r in results),
        "without_bytes": sum(r["without_bytes"] for r in results),
    }


def describe(summary: dict) -> str:
    rest = f"; {summary['without_bytes']} rows have none (their url names them)" if summary["without_bytes"] else ""
    return (
        f"rejected_images: {summary['rows']} rejected rows in {summary['files']} files, {summary['read_back']} "
        f"images read back from the input{rest}: {summary['url']}"
    )


def write_file(source: Location, dest: Location, item: RejectedFile) -> dict:
    """One rejected/ file with its rows' image bytes filled in from the input shard."""
    table = read_parquet(source, item.name)
    images = image_values(table.column("image")).combine_chunks()
    hashes = table.column("sha256")
    missing = pc.and_(pc.is_null(images), pc.is_valid(hashes)).to_numpy(zero_copy_only=False)
    if item.shard.format == "urls":  # downloaded: the input holds URLs, not bytes
        missing[:] = False
    rows = np.flatnonzero(missing)
    stored = len(images) - images.null_count
    if len(rows):
        found = _from_input(item, table.column("key").take(rows).to_pylist(), hashes.take(rows).to_pylist())
        positions = np.full(table.num_rows, -1, np.int64)
        positions[rows] = np.arange(len(rows))
        placed = found.take(pa.array(positions, mask=positions < 0))
        images = pc.if_else(pa.array(missing), placed, images)
        at = table.column_names.index("image")
        field = table.schema.field("image")
        table = table.set_column(at, field, huggingface.image_struct(images))
    name = item.name.rsplit("/", 1)[-1]
    dest.write_bytes(parquet_buffer(table, compression=item.compression, row_group_size=item.row_group_size), name)
    return {
        "rows": table.num_rows,
        "read_back": len(rows),
        "stored": stored,
        "without_bytes": table.num_rows - len(rows) - stored,
    }


def _from_input(item: RejectedFile, keys: list[str], hashes: list[str]) -> pa.Array:
    """The bytes of the rows `keys` as the input shard holds them now, each checked against its sha256."""
    shard = item.shard
    raw = read_shard(shard, {}, item.max_shard_bytes)
    index = {key: i for i, key in enumerate(raw.column("key").to_pylist())}
    at = [index.get(key, -1) for key in keys]
    found = raw.column("image").take(pa.array(at, pa.int64(), mask=np.asarray(at) < 0)).combine_chunks()
    for key, expected, value in zip(keys, hashes, found.to_pylist()):
        if value is None or hashlib.sha256(value).hexdigest() != expected:
            raise UserError(
                f"input shard {strip_credentials(shard.url)} no longer holds the image of {key} (sha256 "
                f"{expected[:12]}...): restore the input the job read, or give its new location with --input"
            )
    return found

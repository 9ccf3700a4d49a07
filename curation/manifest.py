"""The job's manifest: `<out>/_manifest.json` keeps totals (the funnel, shard counts), the config, model
id, versions and timings; its per-shard entries are rows of `<out>/_manifest_shards.parquet` beside it,
one a shard, sorted by shard id: its input URL and format, its rows, and its kept/ and rejected/ files'
row counts and sha256, with its rows per reject reason (a JSON object). The JSON names that file and
holds its sha256; readers check it. The JSON also holds a digest of the input URLs, which is how a
re-run of the same job on the same inputs knows its output is complete without a list of inputs.

So the JSON stays a few kilobytes at any number of shards, and the shard file reads with DuckDB, pyarrow
or pandas like the rest of the output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pyarrow as pa

from curation.errors import UserError
from curation.io.commit import Location, parquet_buffer
from curation.io.sources import Shard
from curation.io.urls import strip_credentials

MANIFEST_FILE = "_manifest.json"
SHARDS_FILE = "_manifest_shards.parquet"
SHARDS_SCHEMA = pa.schema(
    [
        ("shard_id", pa.string()),
        ("url", pa.string()),  # without credentials (io/urls.py)
        ("format", pa.string()),
        ("rows", pa.int64()),  # the input shard's rows: kept + rejected
        ("kept", pa.int64()),
        ("rejected", pa.int64()),
        ("kept_sha256", pa.string()),
        ("rejected_sha256", pa.string()),
        ("reasons", pa.string()),  # JSON object: reject reason -> rows
    ]
)


def inputs_digest(urls: Iterable[str]) -> str:
    """sha256 of the input URLs (without credentials), one a line, in shard order."""
    digest = hashlib.sha256()
    for url in urls:
        digest.update(strip_credentials(url).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def shards_table(shards: list[Shard], results: list[dict]) -> pa.Table:
    """One row per shard from the write phase's per-shard results (job.write_final_shard)."""
    by_id = {r["shard_id"]: r for r in results}
    ordered = sorted(shards, key=lambda s: s.shard_id)
    columns = {
        "shard_id": [s.shard_id for s in ordered],
        "url": [strip_credentials(s.url) for s in ordered],
        "format": [s.format for s in ordered],
    }
    for name in ("rows", "kept", "rejected", "kept_sha256", "rejected_sha256"):
        columns[name] = [by_id[s.shard_id][name] for s in ordered]
    columns["reasons"] = [json.dumps(by_id[s.shard_id]["reasons"], sort_keys=True) for s in ordered]
    return pa.table(columns, schema=SHARDS_SCHEMA)


def write_shards(out: Location, table: pa.Table) -> dict:
    """Commit the shard file; returns what the manifest says of it (name, sha256, rows)."""
    data = parquet_buffer(table.cast(SHARDS_SCHEMA), compression="zstd", row_group_size=65536)
    return {"name": SHARDS_FILE, "sha256": out.write_bytes(data, SHARDS_FILE), "rows": table.num_rows}


def read_shards(out: Location, manifest: dict, columns: list[str] | None = None) -> pa.Table:
    """The manifest's shard file, checked against its sha256; a UserError when it is missing or changed."""
    import pyarrow.parquet as pq

    entry = manifest.get("shards_file")
    where = out.path(SHARDS_FILE)
    if not isinstance(entry, dict) or entry.get("name") != SHARDS_FILE:
        raise UserError(
            f"{out.path(MANIFEST_FILE)} names no {SHARDS_FILE} (not this version's output): run the job again to "
            "rewrite it"
        )
    try:
        data = out.read_bytes(SHARDS_FILE)
    except FileNotFoundError:
        raise UserError(f"{where} is missing: run the job again to rewrite the output's manifest") from None
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise UserError(f"{where} does not match the sha256 in {MANIFEST_FILE}: run the job again to rewrite it")
    return pq.read_table(pa.BufferReader(data), columns=columns)
